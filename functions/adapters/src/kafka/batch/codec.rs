//! Compression: every codec Kafka writes, decompressed under a cap (a
//! batch cannot make Ferry allocate more than its ratio allows), and
//! compressed for the target.

use super::*;

pub(super) fn codec_err(codec: Compression, base_offset: i64, e: impl std::fmt::Display) -> BatchError {
    BatchError::Codec {
        base_offset,
        codec,
        what: e.to_string(),
    }
}

/// Why [`read_capped`] stopped short.
pub(super) enum CapError {
    /// The decoder failed.
    Codec(String),
    /// There is more than the cap.
    OverCap,
}

impl From<std::io::Error> for CapError {
    fn from(e: std::io::Error) -> Self {
        CapError::Codec(e.to_string())
    }
}

impl From<snap::Error> for CapError {
    fn from(e: snap::Error) -> Self {
        CapError::Codec(e.to_string())
    }
}

/// The records section `data`, decompressed with `codec` to at most `cap`
/// bytes. Past the cap it stops and says so, having held no more than the
/// cap: every decoder is read incrementally into a buffer that never grows
/// past it (and snappy's own length claims are checked before they size
/// anything).
pub(super) fn decompress(codec: Compression, data: &Bytes, base_offset: i64, cap: usize) -> Result<Bytes, BatchError> {
    let result = match codec {
        Compression::None => return Ok(data.clone()),
        // Multi-member: several gzip members one after the other are one
        // stream (RFC 1952); Kafka's Java producer writes one, but other
        // clients and tools concatenate.
        Compression::Gzip => read_capped(GzipMembers::new(&data[..]), cap),
        Compression::Snappy => snappy_decompress(data, cap),
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(&data[..]), cap),
        Compression::Zstd => zstd::stream::read::Decoder::new(&data[..])
            .and_then(|mut d| d.window_log_max(ZSTD_WINDOW_LOG_MAX).map(|()| d))
            .map_err(CapError::from)
            .and_then(|d| read_capped(d, cap)),
    };
    match result {
        Ok(out) => Ok(Bytes::from(out)),
        Err(CapError::Codec(what)) => Err(codec_err(codec, base_offset, what)),
        Err(CapError::OverCap) => Err(BatchError::DecompressedTooLarge {
            base_offset,
            codec,
            compressed_len: data.len(),
            cap,
        }),
    }
}

/// Gzip members one after another, read as Kafka's own consumer reads
/// them (Java's `GZIPInputStream`): another member starts where the gzip
/// magic does, and whatever else follows a member is ignored, not an
/// error, so a batch the broker's consumers read is read here too.
pub(super) struct GzipMembers<'a> {
    pub(super) current: Option<flate2::bufread::GzDecoder<&'a [u8]>>,
}

impl<'a> GzipMembers<'a> {
    pub(super) const MAGIC: [u8; 2] = [0x1f, 0x8b];

    pub(super) fn new(data: &'a [u8]) -> Self {
        Self {
            current: Some(flate2::bufread::GzDecoder::new(data)),
        }
    }
}

impl Read for GzipMembers<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(member) = self.current.as_mut() else { return Ok(0) };
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This member ended; the bufread decoder consumed exactly its bytes.
            let rest: &[u8] = match self.current.take() {
                Some(m) => m.into_inner(),
                None => &[],
            };
            if rest.starts_with(&Self::MAGIC) {
                self.current = Some(flate2::bufread::GzDecoder::new(rest));
            }
        }
    }
}

/// The first buffer [`read_capped`] reads into: most batches fit.
pub(super) const FIRST_READ: usize = 64 * 1024;

/// Everything `r` yields, if that is at most `cap` bytes. The buffer
/// doubles as it fills (each step reserved exactly, so its capacity never
/// passes the cap either), and one byte more is asked for at the cap to
/// tell a stream that ends there from one that goes on.
pub(super) fn read_capped(mut r: impl Read, cap: usize) -> Result<Vec<u8>, CapError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled == cap {
                let mut probe = [0u8; 1];
                return match read_retrying(&mut r, &mut probe)? {
                    0 => Ok(buf),
                    _ => Err(CapError::OverCap),
                };
            }
            let next = filled.saturating_mul(2).clamp(FIRST_READ.min(cap), cap);
            buf.reserve_exact(next - buf.len());
            buf.resize(next, 0);
        }
        match read_retrying(&mut r, &mut buf[filled..])? {
            0 => {
                buf.truncate(filled);
                return Ok(buf);
            }
            n => filled += n,
        }
    }
}

pub(super) fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Snappy as Kafka producers write it: xerial framing (Kafka's Java
/// client) or one raw block (some other clients), at most `cap` bytes.
pub(super) fn snappy_decompress(data: &[u8], cap: usize) -> Result<Vec<u8>, CapError> {
    let mut out = Vec::new();
    if !data.starts_with(XERIAL_MAGIC) {
        snappy_block(data, &mut out, cap)?;
        return Ok(out);
    }
    // xerial framing: 8-byte magic, two i32 versions, then (len, block)*.
    let mut rest = data.get(16..).ok_or_else(|| CapError::Codec("truncated xerial header".into()))?;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(CapError::Codec("truncated xerial block length".into()));
        }
        let n = rest.get_i32();
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= rest.len())
            .ok_or_else(|| CapError::Codec(format!("xerial block of {n} bytes past the end")))?;
        snappy_block(&rest[..n], &mut out, cap)?;
        rest.advance(n);
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, keeping `out` within `cap`.
pub(super) fn snappy_block(block: &[u8], out: &mut Vec<u8>, cap: usize) -> Result<(), CapError> {
    let n = snap::raw::decompress_len(block)?;
    if n > block.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
        return Err(CapError::Codec(format!(
            "a snappy block of {} bytes claims {n} bytes decompressed, more than snappy can encode in it",
            block.len()
        )));
    }
    let start = out.len();
    let end = start.checked_add(n).filter(|&end| end <= cap).ok_or(CapError::OverCap)?;
    if end > out.capacity() {
        // Doubling, not growing by each block (which copies quadratically),
        // and never past the cap.
        let target = end.max(out.capacity().saturating_mul(2)).min(cap);
        out.reserve_exact(target - start);
    }
    out.resize(end, 0);
    let written = snap::raw::Decoder::new().decompress(block, &mut out[start..])?;
    if written != n {
        return Err(CapError::Codec(format!(
            "snappy block decompressed to {written} bytes, not the {n} it claims"
        )));
    }
    Ok(())
}

pub(super) fn compress(codec: Compression, data: &[u8]) -> Result<Bytes, BatchError> {
    let err = |e: &dyn std::fmt::Display| codec_err(codec, -1, e);
    let out = match codec {
        Compression::None => return Ok(Bytes::copy_from_slice(data)),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).map_err(|e| err(&e))?;
            enc.finish().map_err(|e| err(&e))?
        }
        Compression::Snappy => {
            // xerial framing, as Kafka's Java client writes it.
            let mut out = Vec::with_capacity(data.len() / 2 + 16);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(32 * 1024) {
                let block = enc.compress_vec(chunk).map_err(|e| err(&e))?;
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(data).map_err(|e| err(&e))?;
            enc.finish().map_err(|e| err(&e))?
        }
        Compression::Zstd => zstd::bulk::compress(data, 3).map_err(|e| err(&e))?,
    };
    Ok(Bytes::from(out))
}
