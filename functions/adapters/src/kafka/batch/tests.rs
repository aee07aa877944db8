//! Round trips of the batch codec and its refusal to panic on garbage.

use super::*;
use proptest::prelude::*;

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
        if let Ok(batches) = split_batches(Bytes::from(data)) {
            for b in &batches { let _ = records(b); }
        }
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
