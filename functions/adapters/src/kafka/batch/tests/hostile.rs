//! Hostile batches: counts, lengths and decompressed sizes that the bytes
//! do not bear out are refused before they size anything.

use super::*;

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// Memory a decoder allocates for itself, whatever the cap on its output:
/// lz4 frames may ask for 4 MiB blocks, which linked, lz4_flex holds twice
/// over next to the block read (12 MiB and change); gzip and zstd keep a
/// window and a read buffer well under 1 MiB on the Rust side (zstd's
/// window is allocated by libzstd, which these counts do not see, and is
/// bounded by `ZSTD_WINDOW_LOG_MAX`).
fn working_memory(codec: Compression) -> u64 {
    match codec {
        Compression::Lz4 => 13 << 20,
        _ => 1 << 20,
    }
}

/// The most `records_with_cap(_, cap)` may allocate at once: the output
/// buffer (the test allocator counts a reallocation as a new buffer beside
/// the old one, so doubling to the cap shows as one and a half caps), the
/// decoder's own memory, and one `SourceRecord` per `MIN_RECORD_LEN` bytes.
fn allocation_bound(codec: Compression, cap: usize) -> u64 {
    (2 * cap + cap / MIN_RECORD_LEN * std::mem::size_of::<SourceRecord>()) as u64 + working_memory(codec)
}

fn sample_records(n: usize) -> Vec<SourceRecord> {
    (0..n)
        .map(|i| SourceRecord {
            offset: i as i64,
            timestamp: 1_000 + i as i64,
            attributes: 0,
            tail: tail(
                Some(format!("key {i}").as_bytes()),
                Some(format!("value {i}").as_bytes()),
                &[(b"h", Some(b"1")), (b"h", None)],
            ),
        })
        .collect()
}

fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// `batch` (as built) with `body` for its records section, its length and
/// CRC made right again: what a hostile or unusual producer could have had
/// a broker store.
fn reframe_raw(batch: &[u8], body: &[u8]) -> Bytes {
    let mut out = BytesMut::from(&batch[..BATCH_HEADER_LEN]);
    out.put_slice(body);
    let len = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    fix_crc(&mut out);
    out.freeze()
}

/// [`reframe_raw`], with `codec` in the attributes.
fn reframe(batch: &[u8], codec: Compression, body: &[u8]) -> Bytes {
    let mut b = BytesMut::from(&batch[..BATCH_HEADER_LEN]);
    let attrs = (i16::from_be_bytes([b[21], b[22]]) & !ATTR_COMPRESSION_MASK) | codec.attribute_bits();
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    reframe_raw(&b, body)
}

/// A gzip member of `len` zeros, written as it is compressed: the test
/// never holds the zeros, only the compressed member (about 1 MiB per GiB).
fn gzip_of_zeros(len: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).expect("compress");
        left -= n;
    }
    enc.finish().expect("compress")
}

/// Runs `f`, returning what it returned and the most it allocated at once.
fn measured<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let mut out = None;
    let info = allocation_counter::measure(|| out = Some(f()));
    (out.expect("ran"), info.bytes_max)
}

#[test]
fn a_gzip_bomb_is_refused_at_the_cap_having_held_no_more() {
    const GIB: usize = 1 << 30;
    let template = build_batch(&sample_records(1), Compression::None, STAMP).expect("build");
    let bomb = gzip_of_zeros(GIB);
    assert!(bomb.len() < 2 << 20, "the bomb itself is small: {} bytes", bomb.len());
    let b = split_batches(reframe(&template, Compression::Gzip, &bomb))
        .expect("split")
        .remove(0);
    let cap = decompressed_cap(bomb.len());
    assert_eq!(cap, MIN_DECOMPRESSED_CAP, "a small batch gets the floor");
    let (result, peak) = measured(|| records(&b));
    let err = result.expect_err("refused");
    assert_eq!(
        err,
        BatchError::DecompressedTooLarge {
            base_offset: 0,
            codec: Compression::Gzip,
            compressed_len: bomb.len(),
            cap,
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("offset 0") && msg.contains("Gzip") && msg.contains(&cap.to_string()),
        "{msg}"
    );
    assert!(
        peak <= allocation_bound(Compression::Gzip, cap),
        "peak {peak} bytes for a cap of {cap}"
    );
}

/// Each codec stops at the cap, and a stream ending exactly at it is whole.
#[test]
fn every_codec_stops_at_the_cap() {
    let plain = Bytes::from(vec![0u8; 1 << 20]);
    for codec in CODECS.into_iter().filter(|c| *c != Compression::None) {
        let body = compress(codec, &plain).expect("compress");
        let exact = decompress(codec, &body, 5, plain.len()).expect("exactly the cap");
        assert_eq!(exact, plain, "{codec:?}");
        let (result, peak) = measured(|| decompress(codec, &body, 5, plain.len() / 4));
        assert_eq!(
            result,
            Err(BatchError::DecompressedTooLarge {
                base_offset: 5,
                codec,
                compressed_len: body.len(),
                cap: plain.len() / 4,
            }),
            "{codec:?}"
        );
        let bound = (2 * plain.len() / 4) as u64 + working_memory(codec);
        assert!(peak <= bound, "{codec:?}: peak {peak} bytes for a cap of {}", plain.len() / 4);
        assert_eq!(
            decompress(codec, &body, 5, plain.len() - 1),
            Err(BatchError::DecompressedTooLarge {
                base_offset: 5,
                codec,
                compressed_len: body.len(),
                cap: plain.len() - 1,
            }),
            "{codec:?}: one byte over"
        );
    }
}

#[test]
fn an_endless_stream_is_read_to_the_cap_and_no_further() {
    let cap = 3 << 20;
    let (result, peak) = measured(|| read_capped(std::io::repeat(0), cap));
    assert!(matches!(result, Err(CapError::OverCap)));
    assert!(peak <= (2 * cap) as u64, "peak {peak}");
}

#[test]
fn a_snappy_length_claim_sizes_nothing_until_checked() {
    // A raw block claiming 4 GiB - 1 in five bytes, and one claiming more
    // than snappy could encode in its size.
    for body in [&[0xff, 0xff, 0xff, 0xff, 0x0f][..], &[0x80, 0x80, 0x01, 0x00][..]] {
        let (result, peak) = measured(|| decompress(Compression::Snappy, &Bytes::copy_from_slice(body), 0, 1 << 40));
        assert!(matches!(result, Err(BatchError::Codec { .. })), "{result:?}");
        assert!(peak < 4096, "peak {peak}");
    }
    // Xerial blocks are held to the cap as they add up.
    let plain = vec![0u8; 200 * 1024];
    let body = compress(Compression::Snappy, &plain).expect("compress");
    assert!(body.starts_with(XERIAL_MAGIC));
    assert!(matches!(
        decompress(Compression::Snappy, &body, 0, 100 * 1024),
        Err(BatchError::DecompressedTooLarge { .. })
    ));
    assert_eq!(decompress(Compression::Snappy, &body, 0, plain.len()).expect("fits"), plain);
}

#[test]
fn raw_snappy_reads_as_well_as_xerial() {
    let recs = sample_records(3);
    let template = build_batch(&recs, Compression::None, STAMP).expect("build");
    let raw = snap::raw::Encoder::new()
        .compress_vec(&template[BATCH_HEADER_LEN..])
        .expect("compress");
    let b = split_batches(reframe(&template, Compression::Snappy, &raw))
        .expect("split")
        .remove(0);
    let back = records(&b).expect("records");
    assert_eq!(
        back.iter().map(|r| &r.tail).collect::<Vec<_>>(),
        recs.iter().map(|r| &r.tail).collect::<Vec<_>>()
    );
}

#[test]
fn a_two_member_gzip_batch_decodes_all_records() {
    let recs = sample_records(10);
    let template = build_batch(&recs, Compression::None, STAMP).expect("build");
    let plain = &template[BATCH_HEADER_LEN..];
    // Split mid-record: the members are one stream, not one per record.
    let (a, b) = plain.split_at(plain.len() / 2 + 3);
    let mut body = compress(Compression::Gzip, a).expect("compress").to_vec();
    body.extend_from_slice(&compress(Compression::Gzip, b).expect("compress"));
    let batch = split_batches(reframe(&template, Compression::Gzip, &body))
        .expect("split")
        .remove(0);
    let back = records(&batch).expect("both members read");
    assert_eq!(back.len(), 10);
    assert_eq!(back, {
        let mut want = recs.clone();
        for (i, r) in want.iter_mut().enumerate() {
            r.offset = i as i64;
        }
        want
    });
}

/// Bytes after the last gzip member that start no other member are
/// ignored, as Kafka's Java consumer ignores them: the batch reads whole.
#[test]
fn bytes_after_the_last_gzip_member_are_ignored_as_kafka_does() {
    let recs = sample_records(4);
    let template = build_batch(&recs, Compression::None, STAMP).expect("build");
    let mut body = compress(Compression::Gzip, &template[BATCH_HEADER_LEN..])
        .expect("compress")
        .to_vec();
    body.extend_from_slice(b"\0\0trailing bytes");
    let batch = split_batches(reframe(&template, Compression::Gzip, &body))
        .expect("split")
        .remove(0);
    assert_eq!(records(&batch).expect("read despite the trailing bytes").len(), 4);
    // A second member that is broken is still an error.
    let mut broken = compress(Compression::Gzip, &template[BATCH_HEADER_LEN..])
        .expect("compress")
        .to_vec();
    broken.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    let batch = split_batches(reframe(&template, Compression::Gzip, &broken))
        .expect("split")
        .remove(0);
    assert!(records(&batch).is_err());
}

/// The count from the wire sizes nothing before the bytes bear it out: a
/// batch is refused as it is split, having allocated next to nothing.
#[test]
fn a_record_count_of_i32_max_in_a_tiny_batch_is_refused_without_allocating() {
    for codec in CODECS {
        let built = build_batch(&sample_records(1), codec, STAMP).expect("build");
        let mut b = BytesMut::from(&built[..]);
        // A last offset delta to match, so the count is what is wrong.
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        fix_crc(&mut b);
        let (result, peak) = measured(|| split_batches(b.freeze()));
        let err = result.expect_err("refused");
        assert!(err.to_string().contains("2147483647 records cannot fit"), "{codec:?}: {err}");
        assert!(peak < 64 << 10, "{codec:?}: peak {peak} bytes");
        // The same header made by hand, never split: `records` checks it too.
        let mut raw = split_batches(built).expect("split").remove(0);
        raw.header.last_offset_delta = i32::MAX - 1;
        raw.header.records_count = i32::MAX;
        let (result, peak) = measured(|| records(&raw));
        assert!(result.expect_err("refused").to_string().contains("2147483647 records cannot fit"));
        assert!(peak < 64 << 10, "{codec:?}: peak {peak} bytes");
    }
}

/// A compressed batch's count is held to what its records decompressed to,
/// before the count sizes the records.
#[test]
fn a_compressed_count_beyond_its_decompressed_bytes_is_refused() {
    for codec in CODECS {
        let mut b = BytesMut::from(&build_batch(&sample_records(2), codec, STAMP).expect("build")[..]);
        b[23..27].copy_from_slice(&99_999i32.to_be_bytes());
        b[57..61].copy_from_slice(&100_000i32.to_be_bytes());
        fix_crc(&mut b);
        let (result, peak) = measured(|| split_batches(b.freeze()).and_then(|bs| records(&bs[0])));
        let err = result.expect_err("refused");
        assert!(err.to_string().contains("100000 records cannot fit"), "{codec:?}: {err}");
        assert!(peak < 1 << 20, "{codec:?}: peak {peak} bytes");
    }
}

#[test]
fn counts_and_offsets_the_header_cannot_bear_are_refused() {
    let good = build_batch(&sample_records(3), Compression::None, STAMP).expect("build");
    let patched = |at: usize, bytes: &[u8]| {
        let mut b = BytesMut::from(&good[..]);
        b[at..at + bytes.len()].copy_from_slice(bytes);
        fix_crc(&mut b);
        split_batches(b.freeze())
    };
    // More records than offset deltas to give them.
    let e = patched(57, &4i32.to_be_bytes()).expect_err("refused");
    assert!(e.to_string().contains("4 records cannot have offset deltas of at most 2"), "{e}");
    // Fewer, as compaction leaves: fine.
    assert_eq!(patched(23, &9i32.to_be_bytes()).expect("split")[0].header.next_offset(), 10);
    // A last offset past i64::MAX.
    let e = patched(0, &(i64::MAX - 1).to_be_bytes()).expect_err("refused");
    assert!(e.to_string().contains("past the largest offset"), "{e}");
}

#[test]
fn a_tail_whose_lengths_do_not_frame_it_is_refused() {
    let bad_tails: [&[u8]; 5] = [
        &[0x02 * 50, b'k', b'e', b'y'],  // key of 50 bytes, 3 there
        &[0x01, 0x01, 0x02 * 3],         // header count 3 for no bytes
        &[0x01, 0x01, 0x00, 0xff],       // a byte after the last header
        &[0x01, 0x01, 0x01],             // header count -1
        &[0x01, 0x01, 0x02, 0x01, 0x01], // header key null
    ];
    for t in bad_tails {
        let recs = vec![SourceRecord {
            offset: 0,
            timestamp: 1,
            attributes: 0,
            tail: Bytes::copy_from_slice(t),
        }];
        let b = split_batches(build_batch(&recs, Compression::None, STAMP).expect("build")).expect("split");
        let e = records(&b[0]).expect_err("refused");
        assert!(matches!(e, BatchError::Malformed { .. }), "{t:?}: {e}");
    }
}

/// Kafka's reader takes any negative key, value or header-value length
/// for null: such a record is read, not refused.
#[test]
fn negative_lengths_below_minus_one_are_null_as_kafka_reads_them() {
    let tails: [&[u8]; 3] = [
        &[0x03, 0x01, 0x00],                   // key length -2
        &[0x01, 0x05, 0x00],                   // value length -3
        &[0x01, 0x01, 0x02, 0x02, b'h', 0x07], // header value length -4
    ];
    for t in tails {
        let recs = vec![SourceRecord {
            offset: 0,
            timestamp: 1,
            attributes: 0,
            tail: Bytes::copy_from_slice(t),
        }];
        let b = split_batches(build_batch(&recs, Compression::None, STAMP).expect("build")).expect("split");
        assert_eq!(records(&b[0]).expect("read").len(), 1, "{t:?}");
    }
}

fn any_codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

/// A small cap for the property tests: big enough for their valid batches,
/// small enough that a mutation inflating the output meets it.
pub(super) const FUZZ_CAP: usize = 256 * 1024;

/// Splits `bytes` and reads every batch with the fuzzing cap: Ok or a
/// `BatchError`, never a panic, and never more allocated than the bound.
pub(super) fn read_all_within_bounds(bytes: Bytes) -> Result<(), TestCaseError> {
    if let Ok(batches) = split_batches(bytes) {
        for b in &batches {
            let codec = b.header.codec().unwrap_or(Compression::None);
            let (result, peak) = measured(|| records_with_cap(b, FUZZ_CAP));
            if let Ok(recs) = &result {
                prop_assert!(recs.len() <= b.header.records_count as usize);
            }
            prop_assert!(
                peak <= allocation_bound(codec, FUZZ_CAP),
                "{codec:?}: peak {peak} bytes: {result:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    /// Any bytes changed, anywhere but the length and CRC (made right
    /// again, so the changes reach the decoders and the framing), and the
    /// records section maybe cut short: Ok or an error, within bounds.
    #[test]
    fn mutated_and_truncated_batches_stay_within_bounds(
        codec in any_codec(),
        n in 1usize..20,
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let built = build_batch(&sample_records(n), codec, STAMP).expect("build");
        let mut b = BytesMut::from(&built[..]);
        for (at, byte) in &mutations {
            let i = at.index(b.len());
            b[i] = *byte;
        }
        let mut body = b[BATCH_HEADER_LEN..].to_vec();
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len() + 1));
        }
        let mangled = reframe_raw(&b, &body);
        read_all_within_bounds(mangled)?;
    }

    /// Arbitrary bytes for the records section under a valid header with
    /// each codec and any counts: each decoder meets garbage.
    #[test]
    fn arbitrary_records_sections_stay_within_bounds(
        codec in any_codec(),
        body in proptest::collection::vec(any::<u8>(), 0..600),
        // Mostly counts a header check lets through, so the bytes reach
        // the decoder; sometimes any.
        count in prop_oneof![4 => 0i32..40, 1 => any::<i32>()],
        gap in prop_oneof![4 => 0i32..40, 1 => any::<i32>()],
    ) {
        let last_delta = count.saturating_sub(1).saturating_add(gap);
        let mut template = BytesMut::from(&build_batch(&sample_records(1), Compression::None, STAMP).expect("build")[..]);
        template[23..27].copy_from_slice(&last_delta.to_be_bytes());
        template[57..61].copy_from_slice(&count.to_be_bytes());
        read_all_within_bounds(reframe(&template, codec, &body))?;
    }

    /// Arbitrary bytes behind each codec's own magic, so the decoders get
    /// past their first check.
    #[test]
    fn arbitrary_bytes_after_a_codecs_magic_stay_within_bounds(
        codec in any_codec(),
        tail_bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let magic: &[u8] = match codec {
            Compression::Gzip => &[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff],
            Compression::Snappy => b"\x82SNAPPY\x00\0\0\0\x01\0\0\0\x01",
            Compression::Lz4 => &[0x04, 0x22, 0x4d, 0x18],
            Compression::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Compression::None => &[],
        };
        let mut body = magic.to_vec();
        body.extend_from_slice(&tail_bytes);
        let template = build_batch(&sample_records(1), Compression::None, STAMP).expect("build");
        read_all_within_bounds(reframe(&template, codec, &body))?;
    }

    /// Valid batches of every codec read back whole within the fuzzing cap.
    #[test]
    fn valid_batches_round_trip_within_the_cap(codec in any_codec(), n in 1usize..50) {
        let recs = sample_records(n);
        let b = split_batches(build_batch(&recs, codec, STAMP).expect("build")).expect("split").remove(0);
        let back = records_with_cap(&b, FUZZ_CAP).expect("records");
        prop_assert_eq!(back.iter().map(|r| &r.tail).collect::<Vec<_>>(), recs.iter().map(|r| &r.tail).collect::<Vec<_>>());
    }
}
