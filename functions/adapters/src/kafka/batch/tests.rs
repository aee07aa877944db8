//! Round trips of the batch codec and its refusal to panic on garbage.

use super::*;
use proptest::prelude::*;

mod hostile;

use hostile::read_all_within_bounds;

fn tail(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&[u8], Option<&[u8]>)]) -> Bytes {
    let mut b = BytesMut::new();
    let put = |b: &mut BytesMut, v: Option<&[u8]>| match v {
        None => write_varint(b, -1),
        Some(v) => {
            write_varint(b, v.len() as i32);
            b.put_slice(v);
        }
    };
    put(&mut b, key);
    put(&mut b, value);
    write_varint(&mut b, headers.len() as i32);
    for (k, v) in headers {
        write_varint(&mut b, k.len() as i32);
        b.put_slice(k);
        put(&mut b, *v);
    }
    b.freeze()
}

const STAMP: ProducerStamp = ProducerStamp {
    producer_id: 7,
    producer_epoch: 0,
    base_sequence: 0,
};

#[test]
fn duplicate_and_null_headers_survive_byte_for_byte() {
    let t = tail(None, Some(b"v"), &[(b"z", Some(b"1")), (b"a", None), (b"z", Some(b"2"))]);
    let recs = vec![SourceRecord {
        offset: 10,
        timestamp: 1_000,
        attributes: 0,
        tail: t.clone(),
    }];
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = build_batch(&recs, codec, STAMP).expect("build");
        let batches = split_batches(bytes).expect("split");
        assert_eq!(batches.len(), 1);
        let back = records(&batches[0]).expect("records");
        assert_eq!(back[0].tail, t, "{codec:?}");
        assert_eq!(back[0].timestamp, 1_000);
        assert_eq!(back[0].offset, 0, "offsets are renumbered from the batch base");
    }
}

/// A source batch restamped keeps its compressed records byte for byte and
/// every record as it was; only the producer fields, the base offset and
/// the transactional flag change, and the CRC matches again.
#[test]
fn a_restamped_batch_keeps_its_records_byte_for_byte() {
    let recs: Vec<SourceRecord> = (0..5)
        .map(|i| SourceRecord {
            offset: 100 + i,
            timestamp: 1_000 + i,
            attributes: 0,
            tail: tail(
                Some(b"k"),
                Some(format!("value {i}").as_bytes()),
                &[(b"h", Some(b"1")), (b"h", None)],
            ),
        })
        .collect();
    for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let source_stamp = ProducerStamp {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 900,
        };
        let mut bytes = BytesMut::from(&build_batch(&recs, codec, source_stamp).expect("build")[..]);
        // As fetched: at offset 100, transactional, from another producer.
        bytes[0..8].copy_from_slice(&100i64.to_be_bytes());
        let attrs = i16::from_be_bytes([bytes[21], bytes[22]]) | ATTR_TRANSACTIONAL;
        bytes[21..23].copy_from_slice(&attrs.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let source = split_batches(bytes.freeze()).expect("split").remove(0);
        assert!(source.header.is_transactional());
        assert!(passes_through(&source, codec, 100), "{codec:?}");
        assert!(!passes_through(&source, codec, 101), "starts before the cursor");
        let other = if codec == Compression::None {
            Compression::Zstd
        } else {
            Compression::None
        };
        assert!(!passes_through(&source, other, 100), "another codec");

        let out = split_batches(restamp(&source, STAMP))
            .expect("restamped batch splits, CRC valid")
            .remove(0);
        assert_eq!(out.records, source.records, "{codec:?}: records section untouched");
        assert_eq!(
            (
                out.header.producer_id,
                out.header.producer_epoch,
                out.header.base_sequence,
                out.header.base_offset
            ),
            (7, 0, 0, 0)
        );
        assert!(!out.header.is_transactional());
        assert_eq!(out.header.codec(), Ok(codec));
        assert_eq!(
            (out.header.base_timestamp, out.header.max_timestamp, out.header.records_count),
            (source.header.base_timestamp, source.header.max_timestamp, 5)
        );
        let back = records(&out).expect("records");
        assert_eq!(
            back.iter().map(|r| &r.tail).collect::<Vec<_>>(),
            recs.iter().map(|r| &r.tail).collect::<Vec<_>>()
        );
        assert_eq!(
            back.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            (1_000..1_005).collect::<Vec<_>>()
        );
    }
}

/// Set by the log cleaner (KIP-534): the base timestamp is a delete horizon.
const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Batches whose records must be rewritten never pass through.
#[test]
fn gapped_control_and_log_append_time_batches_do_not_pass_through() {
    let recs: Vec<SourceRecord> = [0, 1, 2]
        .iter()
        .map(|&o| SourceRecord {
            offset: o,
            timestamp: 5,
            attributes: 0,
            tail: tail(None, Some(b"v"), &[]),
        })
        .collect();
    let plain = split_batches(build_batch(&recs, Compression::None, STAMP).expect("build"))
        .expect("split")
        .remove(0);
    assert!(passes_through(&plain, Compression::None, 0));
    let with = |f: &dyn Fn(&mut BatchHeader)| {
        let mut b = plain.clone();
        f(&mut b.header);
        b
    };
    assert!(!passes_through(&with(&|h| h.last_offset_delta = 5), Compression::None, 0), "a gap");
    assert!(!passes_through(&with(&|h| h.attributes |= ATTR_CONTROL), Compression::None, 0));
    assert!(!passes_through(
        &with(&|h| h.attributes |= ATTR_LOG_APPEND_TIME),
        Compression::None,
        0
    ));
    assert!(!passes_through(
        &with(&|h| h.attributes |= ATTR_DELETE_HORIZON),
        Compression::None,
        0
    ));
    assert!(
        !passes_through(&with(&|h| h.attributes |= 0x100), Compression::None, 0),
        "an attribute Ferry does not know"
    );
}

#[test]
fn partial_trailing_batch_is_ignored() {
    let recs = vec![SourceRecord {
        offset: 0,
        timestamp: 1,
        attributes: 0,
        tail: tail(Some(b"k"), Some(b"v"), &[]),
    }];
    let one = build_batch(&recs, Compression::None, STAMP).expect("build");
    let mut two = BytesMut::from(&one[..]);
    two.put_slice(&one[..one.len() - 3]);
    assert_eq!(split_batches(two.freeze()).expect("split").len(), 1);
}

#[test]
fn the_partition_leader_epoch_is_read_outside_the_crc() {
    let recs = vec![SourceRecord {
        offset: 0,
        timestamp: 1,
        attributes: 0,
        tail: tail(Some(b"k"), Some(b"v"), &[]),
    }];
    let built = build_batch(&recs, Compression::None, STAMP).expect("build");
    assert_eq!(split_batches(built.clone()).expect("split")[0].header.partition_leader_epoch, -1);
    // The broker stamps its epoch at bytes 12..16, which the CRC does not cover.
    let mut b = BytesMut::from(&built[..]);
    b[12..16].copy_from_slice(&7i32.to_be_bytes());
    let batches = split_batches(b.freeze()).expect("split");
    assert_eq!(batches[0].header.partition_leader_epoch, 7);
}

#[test]
fn corrupt_crc_is_an_error() {
    let recs = vec![SourceRecord {
        offset: 0,
        timestamp: 1,
        attributes: 0,
        tail: tail(Some(b"k"), Some(b"v"), &[]),
    }];
    let mut b = BytesMut::from(&build_batch(&recs, Compression::None, STAMP).expect("build")[..]);
    let last = b.len() - 1;
    b[last] ^= 0xff;
    assert!(matches!(split_batches(b.freeze()), Err(BatchError::Malformed { .. })));
}

#[test]
fn sequence_wraps_like_kafka() {
    assert_eq!(next_sequence(5, 3), 8);
    assert_eq!(next_sequence(i32::MAX, 1), 0);
    assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
}

proptest! {
    #[test]
    fn build_then_read_is_identity(
        values in proptest::collection::vec((proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                                             proptest::collection::vec(any::<u8>(), 0..300),
                                             -5_000i64..5_000), 1..30),
        codec in prop_oneof![Just(Compression::None), Just(Compression::Gzip), Just(Compression::Snappy), Just(Compression::Lz4), Just(Compression::Zstd)],
    ) {
        let recs: Vec<SourceRecord> = values.iter().enumerate().map(|(i, (k, v, ts))| SourceRecord {
            offset: i as i64 * 3, timestamp: 1_700_000_000_000 + ts, attributes: 0,
            tail: tail(k.as_deref(), Some(v), &[(b"h", Some(b"x")), (b"h", None)]),
        }).collect();
        let bytes = build_batch(&recs, codec, STAMP).expect("build");
        let batches = split_batches(bytes).expect("split");
        let back = records(&batches[0]).expect("records");
        prop_assert_eq!(back.len(), recs.len());
        for (a, b) in recs.iter().zip(back.iter()) {
            prop_assert_eq!(&a.tail, &b.tail);
            prop_assert_eq!(a.timestamp, b.timestamp);
        }
        prop_assert_eq!(batches[0].header.max_timestamp, recs.iter().map(|r| r.timestamp).max().expect("non-empty"));
    }

    /// Hostile input: any bytes, split and read, end as Ok or Err, never a panic.
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        read_all_within_bounds(Bytes::from(data))?;
    }

    /// A valid batch with its body corrupted (CRC fixed up) never panics.
    #[test]
    fn corrupted_body_never_panics(flip in 61usize..200, byte in any::<u8>()) {
        let recs = vec![SourceRecord { offset: 0, timestamp: 1, attributes: 0, tail: tail(Some(b"key"), Some(&[9u8; 150]), &[(b"h", None)]) }];
        let mut b = BytesMut::from(&build_batch(&recs, Compression::None, STAMP).expect("build")[..]);
        if flip < b.len() {
            b[flip] = byte;
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        if let Ok(batches) = split_batches(b.freeze()) {
            for b in &batches { let _ = records(b); }
        }
    }
}

/// A producer's transactional batches are aborted from the first offset
/// the Fetch answer lists until its abort marker; its next transaction,
/// other producers and control batches are told apart.
#[test]
fn aborted_transactions_are_followed_batch_by_batch() {
    let at = |offset: i64, pid: i64, attributes: i16, key: Option<&[u8]>| {
        let rec = SourceRecord {
            offset: 0,
            timestamp: 5,
            attributes: 0,
            tail: tail(key, Some(b"v"), &[]),
        };
        let mut b = split_batches(build_batch(&[rec], Compression::None, STAMP).expect("build"))
            .expect("split")
            .remove(0);
        b.header.base_offset = offset;
        b.header.producer_id = pid;
        b.header.attributes |= attributes;
        b
    };
    let txn = |offset, pid| at(offset, pid, ATTR_TRANSACTIONAL, None);
    // Control record keys: version 0, type 0 (ABORT) or 1 (COMMIT).
    let marker = |offset, pid, kind: u8| at(offset, pid, ATTR_TRANSACTIONAL | ATTR_CONTROL, Some(&[0, 0, 0, kind]));
    let mut txns = Transactions::new(&[(9, 20), (7, 10)]);
    let kinds: Vec<BatchKind> = [
        txn(5, 7),          // before its aborted transaction begins
        txn(10, 7),         // aborted
        at(11, 8, 0, None), // another producer, not transactional
        txn(12, 7),         // aborted
        marker(13, 7, 0),   // its abort marker
        txn(14, 7),         // its next transaction, committed
        marker(15, 7, 1),
        txn(20, 9), // the other aborted transaction
        marker(21, 9, 0),
    ]
    .iter()
    .map(|b| txns.kind(b).expect("kind"))
    .collect();
    use BatchKind::*;
    assert_eq!(
        kinds,
        [Committed, Aborted, Committed, Aborted, Control, Committed, Control, Aborted, Control]
    );
}
