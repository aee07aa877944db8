//! Record batches (magic v2) as bytes.
//!
//! Ferry never decodes a record into a key/value/headers type: neither
//! rskafka's nor kafka-protocol's record type keeps duplicate header keys,
//! header order and null header values all at once. Instead a batch is
//! split into records by their length framing, and each record is kept as
//! the bytes after its offset delta (key, value and headers exactly as the
//! producer wrote them). A target batch is those bytes with a new header,
//! new offset deltas, and, where needed, another compression codec.

use std::io::{Read, Write};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferry_core::config::Compression;

mod codec;
mod committed;

pub use committed::{read_committed, ReadBatch};
#[cfg(test)]
use committed::{BatchKind, Transactions};

use codec::*;

/// Size of the v2 batch header, up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;
const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// The smallest a record can be in a records section, uncompressed: a
/// one-byte length, then attributes, timestamp delta, offset delta, key
/// length (-1, null), value length (-1) and header count, one byte each.
/// A batch claiming more records than its (decompressed) bytes hold at this
/// size lies, and is refused before anything is sized by its count.
pub const MIN_RECORD_LEN: usize = 7;

/// The floor of [`decompressed_cap`]: 64 MiB.
///
/// A broker keeps a compressed batch whole, bounded on the wire by the
/// topic's `max.message.bytes` (1 MiB by default), but nothing bounds what
/// it decompresses to: a gzip batch of 1 MiB can hold 1 GiB of zeros, and
/// zstd goes further still. 64 MiB is far above what producers batch by
/// default (the Java producer's `batch.size` is 16 KiB, its
/// `max.request.size` 1 MiB) even for very compressible data, and well
/// within the Replicate function's memory, which holds this next to the
/// compressed fetch and the batches being built.
pub const MIN_DECOMPRESSED_CAP: usize = 64 << 20;

/// The compression ratio [`decompressed_cap`] allows a batch of more than
/// 1 MiB compressed (below that, the floor is the larger). Real payloads
/// (JSON, logs, Avro) compress 2x to 20x; 64x leaves room for the very
/// repetitive, while a topic configured for large batches still gets a cap
/// that grows with them (a 16 MiB batch may decompress to 1 GiB).
pub const MAX_COMPRESSION_RATIO: usize = 64;

/// The most bytes Ferry decompresses a records section of `compressed_len`
/// bytes to: the larger of [`MIN_DECOMPRESSED_CAP`] and
/// [`MAX_COMPRESSION_RATIO`] times its size. [`records`] refuses a batch
/// that decompresses to more ([`BatchError::DecompressedTooLarge`]) having
/// held no more than that: a decompression bomb costs a bounded amount of
/// memory, and a partition that holds one stops with an error naming it.
pub fn decompressed_cap(compressed_len: usize) -> usize {
    compressed_len.saturating_mul(MAX_COMPRESSION_RATIO).max(MIN_DECOMPRESSED_CAP)
}

/// The log2 of the largest window a zstd frame may ask for: 128 MiB, what
/// libzstd (and so Kafka's Java consumer, through zstd-jni) allows by
/// default. zstd allocates its window itself, outside the cap on the
/// output; this is what bounds it. Producers write such windows only at
/// level 22, which Kafka 3.8 and later let them set.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// No snappy block decompresses to more than this many times its size: its
/// densest element is a 3-byte copy of 64 bytes. A block whose length
/// header claims more is corrupt, and is refused before the claim sizes a
/// buffer.
const SNAPPY_MAX_EXPANSION: usize = 22;

/// A malformed or unsupported batch. Never a panic, whatever the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The bytes do not frame as Kafka says they must.
    #[error("malformed record batch at offset {base_offset}: {what}")]
    Malformed {
        /// Base offset of the batch (or -1 if unknown).
        base_offset: i64,
        /// What is wrong.
        what: String,
    },
    /// A message-format v0/v1 batch (Kafka before 0.11 wrote these).
    #[error("record batch at offset {base_offset} uses message format v{magic}; Ferry reads format v2 (Kafka 0.11 and later) only")]
    UnsupportedMagic {
        /// Base offset.
        base_offset: i64,
        /// The magic byte found.
        magic: i8,
    },
    /// Compression codec id Ferry does not know.
    #[error("record batch at offset {base_offset} uses unknown compression codec {codec}")]
    UnknownCodec {
        /// Base offset.
        base_offset: i64,
        /// The codec id.
        codec: i16,
    },
    /// A codec failed to compress or decompress.
    #[error("{codec:?} codec error in batch at offset {base_offset}: {what}")]
    Codec {
        /// Base offset.
        base_offset: i64,
        /// Codec.
        codec: Compression,
        /// Detail.
        what: String,
    },
    /// The records section decompresses to more than the cap (see
    /// [`decompressed_cap`]): a decompression bomb, or a batch far more
    /// compressible than any Ferry expects. Decompression stopped at the cap.
    #[error(
        "record batch at offset {base_offset}: its {compressed_len} bytes of {codec:?} records decompress to more than \
         {cap} bytes, the most Ferry holds for one batch; refused as a decompression bomb"
    )]
    DecompressedTooLarge {
        /// Base offset.
        base_offset: i64,
        /// Codec.
        codec: Compression,
        /// Size of the compressed records section.
        compressed_len: usize,
        /// The cap that was reached.
        cap: usize,
    },
}

fn malformed(base_offset: i64, what: impl Into<String>) -> BatchError {
    BatchError::Malformed {
        base_offset,
        what: what.into(),
    }
}

/// The fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// The leader epoch of the broker that appended the batch (the source
    /// log's history: an unclean leader election starts a new epoch at a
    /// shorter log). Set by the broker, outside the CRC.
    pub partition_leader_epoch: i32,
    /// Attributes (codec, timestamp type, transactional, control).
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// Timestamp the record deltas are relative to.
    pub base_timestamp: i64,
    /// Largest timestamp (the append time under LogAppendTime).
    pub max_timestamp: i64,
    /// Producer id (-1 when not idempotent).
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// One past the last offset this batch covers.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta) + 1
    }
    /// A control batch (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    /// Part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    /// Timestamps are the broker's append time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
    fn codec(&self) -> Result<Compression, BatchError> {
        codec_from_bits(self.attributes & ATTR_COMPRESSION_MASK, self.base_offset)
    }
}

fn codec_from_bits(bits: i16, base_offset: i64) -> Result<Compression, BatchError> {
    Ok(match bits {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        codec => return Err(BatchError::UnknownCodec { base_offset, codec }),
    })
}

/// One whole batch as fetched.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// Its header.
    pub header: BatchHeader,
    /// The records section, still compressed.
    pub records: Bytes,
    /// Total size of the batch in bytes.
    pub size: usize,
}

/// Split fetched bytes into whole batches. A trailing partial batch (the
/// broker cuts a response at the size limit) is ignored: the next fetch
/// starts at it. A header whose counts its bytes cannot bear (more records
/// than offset deltas, or than the records section, decompressed to at
/// most [`decompressed_cap`], could hold; offsets past `i64::MAX`) is an
/// error.
pub fn split_batches(mut data: Bytes) -> Result<Vec<RawBatch>, BatchError> {
    let mut out = Vec::new();
    while data.len() >= 17 {
        let base_offset = (&data[0..8]).get_i64();
        let batch_len = (&data[8..12]).get_i32();
        if batch_len < 0 {
            return Err(malformed(base_offset, format!("negative batch length {batch_len}")));
        }
        let total = 12 + batch_len as usize;
        if data.len() < total {
            break;
        }
        let magic = data[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic { base_offset, magic });
        }
        if total < BATCH_HEADER_LEN {
            return Err(malformed(base_offset, format!("batch of {total} bytes is shorter than its header")));
        }
        let batch = data.split_to(total);
        let stored_crc = (&batch[17..21]).get_u32();
        let crc = crc32c::crc32c(&batch[21..]);
        if crc != stored_crc {
            return Err(malformed(
                base_offset,
                format!("CRC mismatch (stored {stored_crc:#x}, computed {crc:#x})"),
            ));
        }
        let mut h = &batch[21..BATCH_HEADER_LEN];
        let header = BatchHeader {
            base_offset,
            partition_leader_epoch: (&batch[12..16]).get_i32(),
            attributes: h.get_i16(),
            last_offset_delta: h.get_i32(),
            base_timestamp: h.get_i64(),
            max_timestamp: h.get_i64(),
            producer_id: h.get_i64(),
            producer_epoch: h.get_i16(),
            base_sequence: h.get_i32(),
            records_count: h.get_i32(),
        };
        let records_len = batch.len() - BATCH_HEADER_LEN;
        check_header(&header, records_len, decompressed_cap(records_len))?;
        out.push(RawBatch {
            header,
            records: batch.slice(BATCH_HEADER_LEN..),
            size: total,
        });
    }
    Ok(out)
}

/// What a header's counts must satisfy to be what a broker could have
/// sent, given `records_len` bytes of records after it that decompress to
/// at most `cap`: the caller sizes nothing by a count until this holds.
fn check_header(h: &BatchHeader, records_len: usize, cap: usize) -> Result<(), BatchError> {
    let base_offset = h.base_offset;
    if h.last_offset_delta < 0 || h.records_count < 0 {
        return Err(malformed(base_offset, "negative offset delta or record count"));
    }
    // Every offset the batch covers, and the one after, is an offset: the
    // cursor moves to `next_offset` and records add their delta to the base.
    if base_offset.checked_add(i64::from(h.last_offset_delta) + 1).is_none() {
        return Err(malformed(
            base_offset,
            format!("last offset delta {} runs past the largest offset", h.last_offset_delta),
        ));
    }
    // Each record has an offset delta of its own, none past the last: the
    // broker assigns them consecutively and compaction only removes some.
    if i64::from(h.records_count) > i64::from(h.last_offset_delta) + 1 {
        return Err(malformed(
            base_offset,
            format!(
                "{} records cannot have offset deltas of at most {}",
                h.records_count, h.last_offset_delta
            ),
        ));
    }
    // The count against the bytes: uncompressed, these; compressed, the
    // most they may decompress to (and, once decompressed, what they did:
    // see `records_with_cap`). The codec itself is checked only when the
    // records are read: a batch that is skipped need not be readable.
    if h.attributes & ATTR_COMPRESSION_MASK == 0 {
        check_count_fits(h, records_len, "bytes of records")?;
    } else {
        check_count_fits(h, cap, "bytes the records may decompress to")?;
    }
    Ok(())
}

/// The batch's record count, if `len` bytes (`what` they are) can hold that
/// many records of at least [`MIN_RECORD_LEN`] bytes.
fn check_count_fits(h: &BatchHeader, len: usize, what: &str) -> Result<usize, BatchError> {
    let count = usize::try_from(h.records_count).map_err(|_| malformed(h.base_offset, "negative record count"))?;
    if count > len / MIN_RECORD_LEN {
        return Err(malformed(
            h.base_offset,
            format!("{count} records cannot fit in {len} {what} (each takes at least {MIN_RECORD_LEN})"),
        ));
    }
    Ok(count)
}

/// One record, as the bytes that follow its offset delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Absolute source offset.
    pub offset: i64,
    /// Absolute timestamp (CreateTime, or the append time of a
    /// LogAppendTime batch, which is then written as CreateTime).
    pub timestamp: i64,
    /// The record's attributes byte (unused by Kafka today; kept).
    pub attributes: u8,
    /// Key length, key, value length, value, header count and headers,
    /// exactly as in the source.
    pub tail: Bytes,
}

impl SourceRecord {
    /// Bytes this record takes in a batch, roughly (for budgeting).
    pub fn approx_size(&self) -> usize {
        self.tail.len() + 12
    }
}

/// The records of a batch, decompressed and framed, decompressing to at
/// most [`decompressed_cap`] of its compressed size.
pub fn records(batch: &RawBatch) -> Result<Vec<SourceRecord>, BatchError> {
    records_with_cap(batch, decompressed_cap(batch.records.len()))
}

/// The records of a batch, refusing one whose records section decompresses
/// to more than `cap` bytes ([`BatchError::DecompressedTooLarge`]) without
/// holding more than that. An uncompressed section is already in memory and
/// is not held to the cap.
///
/// Every length inside is checked against the bytes that remain before it
/// is used, and the record count against the bytes that could hold it, so
/// nothing is sized by a number from the wire that the bytes do not bear
/// out, whatever the input.
pub fn records_with_cap(batch: &RawBatch, cap: usize) -> Result<Vec<SourceRecord>, BatchError> {
    let h = &batch.header;
    // The fields are public: a header made or changed by hand is checked
    // as one from the wire is.
    check_header(h, batch.records.len(), cap)?;
    let mut buf = decompress(h.codec()?, &batch.records, h.base_offset, cap)?;
    let count = check_count_fits(h, buf.len(), "bytes of records decompressed")?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let len = read_varint(&mut buf).ok_or_else(|| malformed(h.base_offset, format!("record {i}: bad length")))?;
        if len < 0 || len as usize > buf.len() {
            return Err(malformed(h.base_offset, format!("record {i}: length {len} past the end")));
        }
        let mut rec = buf.split_to(len as usize);
        if rec.is_empty() {
            return Err(malformed(h.base_offset, format!("record {i}: empty")));
        }
        let attributes = rec.get_u8();
        let ts_delta = read_varlong(&mut rec).ok_or_else(|| malformed(h.base_offset, format!("record {i}: bad timestamp delta")))?;
        let off_delta = read_varint(&mut rec).ok_or_else(|| malformed(h.base_offset, format!("record {i}: bad offset delta")))?;
        if off_delta < 0 || off_delta > h.last_offset_delta {
            return Err(malformed(
                h.base_offset,
                format!("record {i}: offset delta {off_delta} outside the batch"),
            ));
        }
        // The tail goes to the target as it is: one whose lengths do not
        // frame it would be refused there as corrupt, far from its cause.
        check_tail(&rec).map_err(|what| malformed(h.base_offset, format!("record {i}: {what}")))?;
        let timestamp = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            h.base_timestamp.wrapping_add(ts_delta)
        };
        out.push(SourceRecord {
            // No overflow: `check_header` bounds base offset plus last delta.
            offset: h.base_offset + i64::from(off_delta),
            timestamp,
            attributes,
            tail: rec,
        });
    }
    Ok(out)
}

/// Whether a record's tail (key, value, headers) frames exactly: each
/// length within the bytes left, none negative but a null's -1, and nothing
/// after the last header, as Kafka's own record reader requires.
fn check_tail(tail: &Bytes) -> Result<(), String> {
    let mut t = tail.clone();
    fn skip(t: &mut Bytes, what: &str, nullable: bool) -> Result<(), String> {
        let len = read_varint(t).ok_or_else(|| format!("bad {what} length"))?;
        // Kafka's own reader takes any negative key, value or header-value
        // length for null (only a header key may not be null).
        if len < 0 && nullable {
            return Ok(());
        }
        let n = usize::try_from(len).map_err(|_| format!("{what} length {len}"))?;
        if n > t.len() {
            return Err(format!("{what} length {len} past the end of the record"));
        }
        t.advance(n);
        Ok(())
    }
    skip(&mut t, "key", true)?;
    skip(&mut t, "value", true)?;
    let headers = read_varint(&mut t).ok_or("bad header count")?;
    // A header takes at least two bytes (empty key, null value): the count
    // is checked against them before it drives the loop.
    if headers < 0 || headers as usize > t.len() / 2 {
        return Err(format!("header count {headers} for {} bytes", t.len()));
    }
    for _ in 0..headers {
        skip(&mut t, "header key", false)?;
        skip(&mut t, "header value", true)?;
    }
    if !t.is_empty() {
        return Err(format!("{} bytes after the last header", t.len()));
    }
    Ok(())
}

/// Who writes the target batch: the idempotent producer's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id from InitProducerId.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record of this batch.
    pub base_sequence: i32,
}

/// Build one v2 batch from `records` (at least one), compressed with
/// `codec`, stamped with the producer's id and sequence.
pub fn build_batch(records: &[SourceRecord], codec: Compression, stamp: ProducerStamp) -> Result<Bytes, BatchError> {
    let first = records.first().ok_or_else(|| malformed(-1, "no records to build a batch from"))?;
    let base_ts = first.timestamp;
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts);
    let mut plain = BytesMut::with_capacity(records.iter().map(SourceRecord::approx_size).sum());
    let mut scratch = BytesMut::with_capacity(24);
    for (i, r) in records.iter().enumerate() {
        scratch.clear();
        scratch.put_u8(r.attributes);
        write_varlong(&mut scratch, r.timestamp.wrapping_sub(base_ts));
        write_varint(&mut scratch, i as i32);
        write_varint(&mut plain, (scratch.len() + r.tail.len()) as i32);
        plain.put_slice(&scratch);
        plain.put_slice(&r.tail);
    }
    let body = match codec {
        Compression::None => plain.freeze(),
        _ => compress(codec, &plain)?,
    };
    let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + body.len());
    out.put_i64(0); // base offset: the broker assigns it
    out.put_i32((BATCH_HEADER_LEN - 12 + body.len()) as i32);
    out.put_i32(-1); // partition leader epoch: the broker sets it
    out.put_i8(2);
    out.put_u32(0); // CRC, filled below
    out.put_i16(codec.attribute_bits());
    out.put_i32(records.len() as i32 - 1);
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(stamp.producer_id);
    out.put_i16(stamp.producer_epoch);
    out.put_i32(stamp.base_sequence);
    out.put_i32(records.len() as i32);
    out.put_slice(&body);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

/// Whether `batch` can go to the target as it is, only its header
/// restamped ([`restamp`]): a data batch whose records all lie at or after
/// `from`, without gaps in their offsets (a compacted batch's offsets must
/// be renumbered), with no attribute but its codec and the transactional
/// flag (not a control batch; CreateTime, as a LogAppendTime batch's
/// records carry the producer's times and Ferry writes the append time; no
/// delete horizon, which only the log cleaner sets), and compressed with
/// `codec` already. Its records are then never decompressed, decoded or
/// re-encoded: they stay byte for byte the source's, compression included.
pub fn passes_through(batch: &RawBatch, codec: Compression, from: i64) -> bool {
    let h = &batch.header;
    h.attributes & !(ATTR_COMPRESSION_MASK | ATTR_TRANSACTIONAL) == 0
        && h.base_offset >= from
        && i64::from(h.last_offset_delta) + 1 == i64::from(h.records_count)
        && h.codec().is_ok_and(|c| c == codec)
}

/// `batch` as Ferry's idempotent producer writes it: the same attributes
/// (less the transactional flag: Ferry writes committed records only),
/// timestamps and records, with the broker's base offset and leader epoch
/// left to the broker, Ferry's producer id, epoch and sequence, and the
/// CRC computed again over the new header.
pub fn restamp(batch: &RawBatch, stamp: ProducerStamp) -> Bytes {
    let h = &batch.header;
    let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + batch.records.len());
    out.put_i64(0); // base offset: the broker assigns it
    out.put_i32((BATCH_HEADER_LEN - 12 + batch.records.len()) as i32);
    out.put_i32(-1); // partition leader epoch: the broker sets it
    out.put_i8(2);
    out.put_u32(0); // CRC, filled below
    out.put_i16(h.attributes & !ATTR_TRANSACTIONAL);
    out.put_i32(h.last_offset_delta);
    out.put_i64(h.base_timestamp);
    out.put_i64(h.max_timestamp);
    out.put_i64(stamp.producer_id);
    out.put_i16(stamp.producer_epoch);
    out.put_i32(stamp.base_sequence);
    out.put_i32(h.records_count);
    out.put_slice(&batch.records);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// The next sequence after `count` records from `seq`, wrapping as Kafka does.
pub fn next_sequence(seq: i32, count: i32) -> i32 {
    if seq > i32::MAX - count {
        count - (i32::MAX - seq) - 1
    } else {
        seq + count
    }
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// A record's key (None when null or unreadable) and whether it is a
/// tombstone (null value), from the bytes after its offset delta (a
/// [`SourceRecord`]'s `tail`).
pub fn key_and_tombstone(tail: &Bytes) -> (Option<Bytes>, bool) {
    let mut buf = tail.clone();
    let Some(key_len) = read_varlong(&mut buf) else {
        return (None, false);
    };
    let key = usize::try_from(key_len)
        .ok()
        .filter(|&n| n <= buf.remaining())
        .map(|n| buf.split_to(n));
    if key_len >= 0 && key.is_none() {
        return (None, false);
    }
    (key, read_varlong(&mut buf) == Some(-1))
}

fn read_varint(buf: &mut Bytes) -> Option<i32> {
    let v = read_varlong(buf)?;
    i32::try_from(v).ok()
}

fn read_varlong(buf: &mut Bytes) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        if !buf.has_remaining() || shift > 63 {
            return None;
        }
        let b = buf.get_u8();
        raw |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

fn write_varint(buf: &mut BytesMut, v: i32) {
    write_varlong(buf, i64::from(v));
}

fn write_varlong(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// Whether a control batch is an ABORT marker (control record key type 0).
pub fn is_abort_marker(batch: &RawBatch) -> Result<bool, BatchError> {
    let recs = records(batch)?;
    let rec = recs
        .first()
        .ok_or_else(|| malformed(batch.header.base_offset, "control batch without records"))?;
    let mut tail = rec.tail.clone();
    let key_len = read_varint(&mut tail).ok_or_else(|| malformed(batch.header.base_offset, "control record key"))?;
    if key_len < 4 || tail.len() < 4 {
        return Err(malformed(batch.header.base_offset, "control record key too short"));
    }
    let _version = tail.get_i16();
    Ok(tail.get_i16() == 0)
}

#[cfg(test)]
mod tests;
