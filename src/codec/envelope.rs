//! Format version 2: the checksummed, chunked envelope (layout in the module
//! doc of `codec`).

use std::cell::RefCell;

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};
use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe;

use super::bytes::{f32_to_le, le_to_f32, split4, split4_mut, Shuffle};
use super::{cell_count, FORMAT_VERSION, MAX_COLS, MAX_ROWS};
use crate::error::{Error, Result};

/// The envelope's first 8 bytes. Same idea as PNG's signature: a high-bit
/// byte (caught by 7-bit transports), CR LF and LF (caught by line-ending
/// conversion), ^Z. `0x89` cannot start a zlib stream (its low nibble is not
/// 8) nor a zstd frame, so an envelope is never mistaken for either.
pub const MAGIC: [u8; 8] = *b"\x89SMC\r\n\x1a\n";

/// Length of the fixed part of the header, up to the chunk table.
pub const FIXED_HEADER_LEN: usize = 48;
/// One chunk-table entry: stored length u32, xxh3-64 of the stored bytes,
/// xxh3-64 of the raw bytes.
pub const CHUNK_ENTRY_LEN: usize = 20;

/// zstd level used by [`encode`](super::encode). Measured on a 100,000 x 50
/// generator-like matrix with [`Filter::ExponentShuffle4`]
/// (`SMC_CODEC_SWEEP=1 cargo bench --bench codec`): levels 1 and 2 give 0.787
/// of raw, level 3 0.792, 4 0.792, 6 0.793, and level 3 already takes twice
/// as long as level 1. Almost all the gain is the literal Huffman coding of
/// the planes; higher levels find short matches in the 4- and 5-bit planes
/// that cost more than the literals they replace. Negative levels turn
/// literal compression off (ratio 1.0).
pub const DEFAULT_LEVEL: i32 = 1;

/// Raw bytes per chunk that `encode` aims for. The ratio hardly depends on it
/// (0.7874 at 256 KiB, 0.7871 from 1 MiB up, as zstd blocks follow the
/// planes); 1 MiB gives a 20 MB matrix 20 chunks, which keep 2 cores evenly
/// busy, and keeps one chunk's scratch buffers in cache: one 20 MB chunk
/// takes 1.7 times as long to encode even on a single thread. A matrix of at
/// most this size is one chunk, encoded and decoded on the calling thread with
/// no rayon hand-off.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

const LAYOUT_ROW_MAJOR_F32_LE: u8 = 1;

/// Flags bit 0: a column map of `num_buckets` bytes follows the chunk table.
const FLAG_COLUMN_MAP: u8 = 1;

/// Values per slice in the shuffling loops of encode and decode: 8 KiB of raw
/// bytes, which stay in L1 cache from the shuffle through the hash to the copy,
/// instead of a chunk-sized buffer making three trips through L2.
const SLICE: usize = 2048;

/// How each chunk's (filtered) bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkCodec {
    /// Stored as they are.
    None = 0,
    /// One zstd frame per chunk, with its content size in the frame header.
    Zstd = 1,
}

/// The reversible transform applied to each chunk's raw bytes before the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    None = 0,
    /// Byte k (0 = least significant) of every f32 of the chunk goes to plane
    /// k; the chunk is stored as plane 0, 1, 2, 3.
    Shuffle4 = 1,
    /// Each f32's bits are first permuted so that the exponent shares the top
    /// byte with the top mantissa bits and the sign and the exponent's top two
    /// bits (offset so that they are 0 for magnitudes in [2^-32, 2^32)) sit
    /// in the bottom byte, then byte-shuffled as `Shuffle4`. Exactly:
    /// `w = rotl(rotl(bits, 1) + (0xA1 << 24), 2)` (wrapping), byte k of `w`
    /// to plane k. What `encode` uses: see `bytes::exp_forward` for why.
    ExponentShuffle4 = 2,
}

impl ChunkCodec {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::None),
            1 => Some(Self::Zstd),
            _ => None,
        }
    }
}

impl Filter {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::None),
            1 => Some(Self::Shuffle4),
            2 => Some(Self::ExponentShuffle4),
            _ => None,
        }
    }

    fn shuffle(self) -> Option<Shuffle> {
        match self {
            Self::None => None,
            Self::Shuffle4 => Some(Shuffle::Plain),
            Self::ExponentShuffle4 => Some(Shuffle::Exponent),
        }
    }
}

/// Knobs for [`super::encode_with`]; `EncodeOptions::default()` is what [`super::encode`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    pub chunk_codec: ChunkCodec,
    pub filter: Filter,
    /// zstd level (ignored with `ChunkCodec::None`).
    pub level: i32,
    /// Target raw bytes per chunk; chunks hold whole rows, at least one.
    pub chunk_bytes: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            chunk_codec: ChunkCodec::Zstd,
            filter: Filter::ExponentShuffle4,
            level: DEFAULT_LEVEL,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// What an envelope's header says, after every structural check has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    pub version: u32,
    pub num_scenarios: u32,
    pub num_buckets: u32,
    /// `num_scenarios * num_buckets * 4`.
    pub raw_len: u64,
    pub chunk_codec: ChunkCodec,
    pub filter: Filter,
    /// Rows in every chunk but the last, which holds the rest.
    pub rows_per_chunk: u32,
    pub chunk_count: u32,
    /// Fixed header + chunk table (+ column map); the frames start here.
    pub header_len: usize,
    /// Present when the envelope was handed to a caller whose bucket order
    /// differs from the stored one: output column j is stored column
    /// `column_map[j]`. Stored copies never carry one.
    pub column_map: Option<Vec<u8>>,
    /// The whole envelope, which is exactly the input's length.
    pub total_len: usize,
}

/// One chunk as the table describes it.
struct ChunkRef {
    /// Offset of its frame within the envelope.
    start: usize,
    len: usize,
    stored_hash: u64,
    raw_hash: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header checksum covers the fixed header except the checksum field
/// itself (bytes 0..40) and then the whole chunk table.
fn header_checksum(fixed: &[u8], table: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&fixed[..40]);
    h.update(table);
    h.digest()
}

/// Rows per chunk for a matrix: as many chunks as `chunk_bytes` asks for, then
/// the rows spread evenly over them so that no chunk is a small leftover.
fn rows_per_chunk(rows: u32, cols: u32, chunk_bytes: usize) -> u32 {
    let raw_len = u64::from(rows) * u64::from(cols) * 4;
    let chunks = raw_len
        .div_ceil(chunk_bytes.max(1) as u64)
        .clamp(1, u64::from(rows));
    u64::from(rows).div_ceil(chunks) as u32
}

pub(crate) fn is_envelope(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Checks everything but the frames' contents; allocates only the chunk
/// table, whose size is bounded by the input's length.
fn parse(bytes: &[u8]) -> Result<(Header, Vec<ChunkRef>)> {
    let corrupt = |msg: String| Err(Error::Corrupt(msg));
    let probe = &bytes[..bytes.len().min(MAGIC.len())];
    if probe != &MAGIC[..probe.len()] {
        return corrupt("not a matrix envelope (bad magic bytes)".into());
    }
    if bytes.len() < FIXED_HEADER_LEN {
        return corrupt(format!(
            "envelope truncated: {} bytes, the fixed header alone is {FIXED_HEADER_LEN}",
            bytes.len()
        ));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return corrupt(format!(
            "unsupported envelope format version {version} (this build reads {FORMAT_VERSION})"
        ));
    }
    // The chunk count is needed to find the table before the checksum can be
    // verified, so bound it first; nothing is allocated from it yet.
    let chunk_count = u32_at(bytes, 36);
    if chunk_count == 0 || chunk_count > MAX_ROWS {
        return corrupt(format!(
            "chunk count {chunk_count} is outside 1..={MAX_ROWS}"
        ));
    }
    // Likewise the column count, when a column map follows the table.
    let flags = bytes[15];
    if flags & !FLAG_COLUMN_MAP != 0 {
        return corrupt(format!("unknown flags {flags:#04x}"));
    }
    let map_len = if flags & FLAG_COLUMN_MAP != 0 {
        let cols = u32_at(bytes, 20);
        if !(1..=MAX_COLS).contains(&cols) {
            return corrupt(format!("column count {cols} is outside 1..={MAX_COLS}"));
        }
        cols as usize
    } else {
        0
    };
    let header_len = FIXED_HEADER_LEN + chunk_count as usize * CHUNK_ENTRY_LEN + map_len;
    if bytes.len() < header_len {
        return corrupt(format!(
            "envelope truncated: {} bytes, the header with its {chunk_count}-chunk table is {header_len}",
            bytes.len()
        ));
    }
    let (fixed, rest) = bytes.split_at(FIXED_HEADER_LEN);
    // The checksum covers the table and the column map together.
    let after_fixed = &rest[..header_len - FIXED_HEADER_LEN];
    let (table, map) = after_fixed.split_at(after_fixed.len() - map_len);
    let stored = u64_at(fixed, 40);
    let computed = header_checksum(fixed, after_fixed);
    if stored != computed {
        return corrupt(format!(
            "header checksum mismatch (stored {stored:016x}, computed {computed:016x})"
        ));
    }

    // From here on the header is what the encoder wrote; these checks reject
    // a well-formed header whose values are impossible or hostile.
    let Some(chunk_codec) = ChunkCodec::from_byte(fixed[12]) else {
        return corrupt(format!("unknown chunk codec {}", fixed[12]));
    };
    let Some(filter) = Filter::from_byte(fixed[13]) else {
        return corrupt(format!("unknown filter {}", fixed[13]));
    };
    if fixed[14] != LAYOUT_ROW_MAJOR_F32_LE {
        return corrupt(format!("unknown matrix layout {}", fixed[14]));
    }
    let num_scenarios = u32_at(fixed, 16);
    let num_buckets = u32_at(fixed, 20);
    let Some(cells) = cell_count(num_scenarios, num_buckets) else {
        return corrupt(format!(
            "dimensions {num_scenarios} x {num_buckets} are outside 1..={MAX_ROWS} x 1..={MAX_COLS}"
        ));
    };
    let raw_len = u64_at(fixed, 24);
    if raw_len != cells as u64 * 4 {
        return corrupt(format!(
            "raw length {raw_len} does not match {num_scenarios} x {num_buckets} f32 ({} bytes)",
            cells as u64 * 4
        ));
    }
    let column_map = if map_len > 0 {
        // A permutation of the columns, or it could duplicate or drop one.
        let mut seen = [false; MAX_COLS as usize];
        for &c in map {
            if usize::from(c) >= map_len || std::mem::replace(&mut seen[usize::from(c)], true) {
                return corrupt(format!(
                    "column map {map:?} is not a permutation of 0..{map_len}"
                ));
            }
        }
        Some(map.to_vec())
    } else {
        None
    };
    let rows_per_chunk = u32_at(fixed, 32);
    if rows_per_chunk == 0 || rows_per_chunk > num_scenarios {
        return corrupt(format!(
            "rows per chunk {rows_per_chunk} is outside 1..={num_scenarios}"
        ));
    }
    let expected_chunks = u64::from(num_scenarios).div_ceil(u64::from(rows_per_chunk));
    if expected_chunks != u64::from(chunk_count) {
        return corrupt(format!(
            "chunk count {chunk_count} does not match {num_scenarios} rows in chunks of {rows_per_chunk} ({expected_chunks} chunks)"
        ));
    }

    let row_bytes = num_buckets as usize * 4;
    let mut chunks = Vec::with_capacity(chunk_count as usize);
    let mut at = header_len;
    for (i, entry) in table.chunks_exact(CHUNK_ENTRY_LEN).enumerate() {
        let len = u32_at(entry, 0) as usize;
        let stored_hash = u64_at(entry, 4);
        let raw_hash = u64_at(entry, 12);
        let first_row = i as u32 * rows_per_chunk;
        let chunk_raw = (rows_per_chunk.min(num_scenarios - first_row)) as usize * row_bytes;
        if chunk_codec == ChunkCodec::None && len != chunk_raw {
            return corrupt(format!(
                "chunk {i} is stored uncompressed as {len} bytes, its rows are {chunk_raw} bytes"
            ));
        }
        if len > bytes.len() - at {
            return corrupt(format!(
                "envelope truncated: chunk {i} needs {len} bytes at offset {at}, {} remain",
                bytes.len() - at
            ));
        }
        chunks.push(ChunkRef {
            start: at,
            len,
            stored_hash,
            raw_hash,
        });
        at += len;
    }
    if at != bytes.len() {
        return corrupt(format!(
            "{} trailing bytes after the last chunk",
            bytes.len() - at
        ));
    }
    let header = Header {
        version,
        num_scenarios,
        num_buckets,
        raw_len,
        chunk_codec,
        filter,
        rows_per_chunk,
        chunk_count,
        header_len,
        total_len: bytes.len(),
        column_map,
    };
    Ok((header, chunks))
}

pub(crate) fn read_header(bytes: &[u8]) -> Result<Header> {
    parse(bytes).map(|(header, _)| header)
}

fn zstd_setup_error(e: std::io::Error) -> Error {
    Error::Internal(format!("zstd context: {e}"))
}

thread_local! {
    /// The encoder of each pool thread, kept from call to call like
    /// [`POOL_DECODER`]: made afresh per call, its zstd context and 1 MiB
    /// buffer came straight from the OS each time, in page faults.
    static POOL_ENCODER: RefCell<ChunkEncoder> = RefCell::default();
}

/// Per-thread state for encoding chunks: a zstd context (created on first
/// use, for one level) and a scratch buffer.
#[derive(Default)]
struct ChunkEncoder {
    zstd: Option<(i32, Compressor<'static>)>,
    /// The chunk's filtered bytes.
    filtered: Vec<u8>,
}

/// Room for the stored bytes of a chunk of `raw` bytes, whatever its codec:
/// zstd's one-shot bound plus a few header bytes for each part's flush (see
/// [`compress_parts`]; at most 4 parts).
fn slot_len(raw: usize) -> usize {
    zstd_safe::compress_bound(raw) + 16 * 4
}

impl ChunkEncoder {
    /// Writes the chunk's stored bytes at the start of `slot` (at least
    /// [`slot_len`] of its raw size) and returns its table entry.
    fn encode(
        &mut self,
        cells: &[f32],
        opts: &EncodeOptions,
        slot: &mut [u8],
    ) -> Result<EncodedChunk> {
        let n = cells.len();
        self.filtered.resize(4 * n, 0);
        let mut hasher = Xxh3::new();
        match opts.filter.shuffle() {
            None => {
                f32_to_le(cells, &mut self.filtered);
                hasher.update(&self.filtered);
            }
            Some(shuffle) => {
                let mut raw = [0u8; 4 * SLICE];
                let [p0, p1, p2, p3] = split4_mut(&mut self.filtered);
                for (i, values) in cells.chunks(SLICE).enumerate() {
                    let r = i * SLICE..i * SLICE + values.len();
                    let raw = &mut raw[..4 * values.len()];
                    f32_to_le(values, raw);
                    hasher.update(raw);
                    let planes = [
                        &mut p0[r.clone()],
                        &mut p1[r.clone()],
                        &mut p2[r.clone()],
                        &mut p3[r],
                    ];
                    shuffle.forward(raw, planes);
                }
            }
        }
        let raw_hash = hasher.digest();
        let filtered = &self.filtered;
        let len = match opts.chunk_codec {
            ChunkCodec::None => {
                slot[..filtered.len()].copy_from_slice(filtered);
                filtered.len()
            }
            ChunkCodec::Zstd => {
                if !matches!(&self.zstd, Some((level, _)) if *level == opts.level) {
                    let c = Compressor::new(opts.level).map_err(zstd_setup_error)?;
                    self.zstd = Some((opts.level, c));
                }
                let (_, c) = self.zstd.as_mut().expect("set above");
                let parts: Vec<&[u8]> = match opts.filter {
                    Filter::None => vec![filtered],
                    _ => filtered.chunks(filtered.len() / 4).collect(),
                };
                compress_parts(c, &parts, slot)?
            }
        };
        release_if_large(&mut self.filtered);
        Ok(EncodedChunk {
            len,
            stored_hash: xxh3_64(&slot[..len]),
            raw_hash,
        })
    }
}

/// Frees a per-thread buffer grown far past the default chunk size (by a
/// payload written with other options), rather than keep it on every thread.
fn release_if_large(buf: &mut Vec<u8>) {
    if buf.capacity() > 2 * DEFAULT_CHUNK_BYTES {
        *buf = Vec::new();
    }
}

/// A chunk's table entry: its stored bytes are the first `len` of its slot.
struct EncodedChunk {
    len: usize,
    stored_hash: u64,
    raw_hash: u64,
}

/// Compresses `parts` into `out` as one zstd frame that records its content
/// size, ending a zstd block at the end of each part; returns its length.
///
/// Why the flushes: zstd builds one literal Huffman table per block (up to
/// 128 KiB). A block that straddles two planes codes the mixture of their
/// byte statistics, which for a 5-bit plane next to a random one is nearly
/// incompressible: a 10,000 x 5 matrix (planes of 50 KB) compressed to 0.87
/// of raw in one shot and to 0.79 with a block boundary at each plane.
fn compress_parts(c: &mut Compressor<'static>, parts: &[&[u8]], out: &mut [u8]) -> Result<usize> {
    use zstd_safe::zstd_sys::ZSTD_EndDirective::{ZSTD_e_end, ZSTD_e_flush};
    use zstd_safe::{InBuffer, OutBuffer, ResetDirective};
    let fail = |e: zstd_safe::ErrorCode| {
        Error::Internal(format!(
            "zstd compression failed: {}",
            zstd_safe::get_error_name(e)
        ))
    };
    let cctx = c.context_mut();
    cctx.reset(ResetDirective::SessionOnly).map_err(fail)?;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    cctx.set_pledged_src_size(Some(total as u64))
        .map_err(fail)?;
    let room = out.len();
    let mut output = OutBuffer::around(out);
    for (k, part) in parts.iter().enumerate() {
        let directive = if k + 1 == parts.len() {
            ZSTD_e_end
        } else {
            ZSTD_e_flush
        };
        let mut input = InBuffer::around(part);
        loop {
            let pending = cctx
                .compress_stream2(&mut output, &mut input, directive)
                .map_err(fail)?;
            if pending == 0 && input.pos() == part.len() {
                break;
            }
            // Each flush may close a partial block: a few header bytes per
            // part on top of zstd's one-shot bound, which `slot_len` allows.
            if output.pos() == room {
                return Err(Error::Internal(format!(
                    "zstd frame outgrew its {room}-byte bound"
                )));
            }
        }
    }
    Ok(output.pos())
}

pub(crate) fn encode_with(
    matrix: &[f32],
    num_scenarios: u32,
    num_buckets: u32,
    opts: &EncodeOptions,
) -> Result<Vec<u8>> {
    let Some(cells) = cell_count(num_scenarios, num_buckets) else {
        return Err(Error::InvalidArgument(format!(
            "matrix dimensions {num_scenarios} x {num_buckets} are outside 1..={MAX_ROWS} x 1..={MAX_COLS}"
        )));
    };
    if matrix.len() != cells {
        return Err(Error::InvalidArgument(format!(
            "matrix has {} values, {num_scenarios} x {num_buckets} needs {cells}",
            matrix.len()
        )));
    }
    if opts.chunk_codec == ChunkCodec::Zstd
        && !zstd::compression_level_range().contains(&opts.level)
    {
        return Err(Error::InvalidArgument(format!(
            "zstd level {} is outside {:?}",
            opts.level,
            zstd::compression_level_range()
        )));
    }
    let rpc = rows_per_chunk(num_scenarios, num_buckets, opts.chunk_bytes);
    let chunk_cells = rpc as usize * num_buckets as usize;
    let chunk_count = num_scenarios.div_ceil(rpc);

    // The envelope is assembled where the chunks were encoded: one buffer
    // (in huge pages) with room for the header, then a slot per chunk; the
    // stored bytes are then moved down to follow one another. A buffer of
    // slots, then a copy into the envelope, held the stored bytes twice at
    // the peak of a miss (16 MB more at 100,000 x 50).
    let header_len = FIXED_HEADER_LEN + chunk_count as usize * CHUNK_ENTRY_LEN;
    let slot = slot_len(chunk_cells * 4);
    let mut out = crate::pages::zeroed_bytes(header_len + slot * chunk_count as usize);
    let frames: Vec<EncodedChunk> = if chunk_count == 1 {
        vec![ChunkEncoder::default().encode(matrix, opts, &mut out[header_len..])?]
    } else {
        out[header_len..]
            .par_chunks_mut(slot)
            .zip(matrix.par_chunks(chunk_cells))
            .map(|(dst, cells)| POOL_ENCODER.with_borrow_mut(|enc| enc.encode(cells, opts, dst)))
            .collect::<Result<_>>()?
    };
    // Chunk i starts its slot at header_len + i * slot; each moves down to
    // the end of the one before (never past its own start: len <= slot).
    let mut end = header_len;
    for (i, f) in frames.iter().enumerate() {
        let from = header_len + i * slot;
        out.copy_within(from..from + f.len, end);
        end += f.len;
    }
    out.truncate(end);
    // Gives the slots' unused tails back (glibc shrinks a mapping this large
    // in place, without a copy; the addon's allocator keeps it a whole number
    // of huge pages).
    out.shrink_to_fit();

    let mut header = Vec::with_capacity(header_len);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.push(opts.chunk_codec as u8);
    header.push(opts.filter as u8);
    header.push(LAYOUT_ROW_MAJOR_F32_LE);
    header.push(0); // flags
    header.extend_from_slice(&num_scenarios.to_le_bytes());
    header.extend_from_slice(&num_buckets.to_le_bytes());
    header.extend_from_slice(&(cells as u64 * 4).to_le_bytes());
    header.extend_from_slice(&rpc.to_le_bytes());
    header.extend_from_slice(&chunk_count.to_le_bytes());
    header.extend_from_slice(&[0; 8]); // header checksum, filled in below
    for f in &frames {
        let len =
            u32::try_from(f.len).map_err(|_| Error::Internal("chunk larger than 4 GiB".into()))?;
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(&f.stored_hash.to_le_bytes());
        header.extend_from_slice(&f.raw_hash.to_le_bytes());
    }
    let checksum = header_checksum(&header[..FIXED_HEADER_LEN], &header[FIXED_HEADER_LEN..]);
    header[40..48].copy_from_slice(&checksum.to_le_bytes());
    debug_assert_eq!(header.len(), header_len);
    out[..header_len].copy_from_slice(&header);
    Ok(out)
}

thread_local! {
    /// The decoder of each pool thread, kept from call to call. Made afresh
    /// (as `map_init` did, several times per call), its 1 MiB buffer came
    /// straight from the OS each time (the addon's mmap threshold) and was
    /// paid for in page faults: 3,900 of a 100,000 x 50 decode's 8,800.
    static POOL_DECODER: RefCell<ChunkDecoder> = RefCell::default();
}

/// Per-thread state for decoding chunks, like [`ChunkEncoder`].
#[derive(Default)]
struct ChunkDecoder {
    zstd: Option<Decompressor<'static>>,
    /// zstd output: the filtered bytes.
    filtered: Vec<u8>,
}

impl ChunkDecoder {
    /// Decodes chunk `index` (stored bytes `frame`) into `dst`, whose length
    /// the header fixed, verifying both of its checksums.
    fn decode(
        &mut self,
        index: usize,
        frame: &[u8],
        chunk: &ChunkRef,
        header: &Header,
        dst: &mut [f32],
    ) -> Result<()> {
        let raw_len = dst.len() * 4;
        // Checked first, so that zstd only ever sees the bytes the encoder
        // wrote: a damaged frame is reported as such and never decompressed.
        check_stored(index, frame, chunk)?;
        let filtered: &[u8] = match header.chunk_codec {
            ChunkCodec::None => frame,
            ChunkCodec::Zstd => {
                match zstd_safe::get_frame_content_size(frame) {
                    Ok(Some(n)) if n == raw_len as u64 => {}
                    Ok(Some(n)) => {
                        return Err(Error::Corrupt(format!(
                            "chunk {index}: zstd frame declares {n} bytes, the chunk is {raw_len}"
                        )))
                    }
                    _ => {
                        return Err(Error::Corrupt(format!(
                            "chunk {index}: not a zstd frame with a declared content size"
                        )))
                    }
                }
                match zstd_safe::find_frame_compressed_size(frame) {
                    Ok(n) if n == frame.len() => {}
                    _ => {
                        return Err(Error::Corrupt(format!(
                            "chunk {index}: stored bytes are not exactly one zstd frame"
                        )))
                    }
                }
                // Exactly raw_len bytes of room (the capacity is never
                // grown by zstd), so the frame cannot make us allocate more.
                self.filtered.clear();
                self.filtered.reserve_exact(raw_len);
                let d = match &mut self.zstd {
                    Some(d) => d,
                    none => none.insert(Decompressor::new().map_err(zstd_setup_error)?),
                };
                let written = d
                    .decompress_to_buffer(frame, &mut self.filtered)
                    .map_err(|e| Error::Corrupt(format!("chunk {index}: zstd: {e}")))?;
                if written != raw_len {
                    return Err(Error::Corrupt(format!(
                        "chunk {index}: zstd frame inflates to {written} bytes, the chunk is {raw_len}"
                    )));
                }
                &self.filtered
            }
        };
        // Unshuffle, hash and copy out slice by slice. `dst` is written before
        // the checksum is known; on a mismatch the caller drops it.
        let computed = match header.filter.shuffle() {
            None => {
                le_to_f32(filtered, dst);
                xxh3_64(filtered)
            }
            Some(shuffle) => {
                let [p0, p1, p2, p3] = split4(filtered);
                let mut raw = [0u8; 4 * SLICE];
                let mut hasher = Xxh3::new();
                for (i, values) in dst.chunks_mut(SLICE).enumerate() {
                    let r = i * SLICE..i * SLICE + values.len();
                    let raw = &mut raw[..4 * values.len()];
                    shuffle.inverse(
                        [&p0[r.clone()], &p1[r.clone()], &p2[r.clone()], &p3[r]],
                        raw,
                    );
                    hasher.update(raw);
                    le_to_f32(raw, values);
                }
                hasher.digest()
            }
        };
        release_if_large(&mut self.filtered);
        if computed != chunk.raw_hash {
            return Err(Error::Corrupt(format!(
                "chunk {index}: raw data checksum mismatch (stored {:016x}, computed {computed:016x})",
                chunk.raw_hash
            )));
        }
        if let Some(map) = &header.column_map {
            permute_rows(dst, map);
        }
        Ok(())
    }
}

/// Reorders the columns of every row in place: column j becomes the old
/// column `map[j]`.
fn permute_rows(cells: &mut [f32], map: &[u8]) {
    let mut row = [0f32; MAX_COLS as usize];
    let row = &mut row[..map.len()];
    for r in cells.chunks_exact_mut(map.len()) {
        row.copy_from_slice(r);
        for (dst, &src) in r.iter_mut().zip(map) {
            *dst = row[usize::from(src)];
        }
    }
}

/// A copy of envelope `bytes` (which must carry no column map) that decodes
/// with its columns reordered by `map`: output column j is stored column
/// `map[j]`. Only the header changes; the compressed chunks are copied as
/// they are, so one stored payload serves every caller's bucket order.
/// An identity `map` gives a plain copy.
pub(crate) fn with_column_map(bytes: &[u8], map: &[u8]) -> Result<Vec<u8>> {
    let header = read_header(bytes)?;
    if header.column_map.is_some() {
        return Err(Error::InvalidArgument(
            "the envelope already carries a column map".into(),
        ));
    }
    if map.len() != header.num_buckets as usize {
        return Err(Error::InvalidArgument(format!(
            "a column map for {} columns has {} entries",
            header.num_buckets,
            map.len()
        )));
    }
    if map.iter().enumerate().all(|(i, &c)| usize::from(c) == i) {
        return Ok(super::copy_large(bytes));
    }
    let table_end = header.header_len;
    let frames_at = table_end + map.len();
    // Zeroed memory this size comes untouched from the OS; the copies below
    // are its first touch.
    let mut out = crate::pages::zeroed_bytes(bytes.len() + map.len());
    out[..table_end].copy_from_slice(&bytes[..table_end]);
    out[table_end..frames_at].copy_from_slice(map);
    out[15] |= FLAG_COLUMN_MAP;
    let checksum = header_checksum(&out[..FIXED_HEADER_LEN], &out[FIXED_HEADER_LEN..frames_at]);
    out[40..48].copy_from_slice(&checksum.to_le_bytes());
    super::copy_into(&mut out[frames_at..], &bytes[table_end..]);
    // The new header must pass every check a decoder makes (a bad map is
    // refused here rather than by the caller's decoder).
    read_header(&out)?;
    Ok(out)
}

fn check_stored(index: usize, frame: &[u8], chunk: &ChunkRef) -> Result<()> {
    let computed = xxh3_64(frame);
    if computed != chunk.stored_hash {
        return Err(Error::Corrupt(format!(
            "chunk {index}: stored bytes checksum mismatch (stored {:016x}, computed {computed:016x})",
            chunk.stored_hash
        )));
    }
    Ok(())
}

/// The header, table and every chunk's stored-bytes checksum, without
/// decompressing: what a cache checks before serving a stored payload.
pub(crate) fn verify(bytes: &[u8]) -> Result<Header> {
    let (h, chunks) = parse(bytes)?;
    let check = |(i, c): (usize, &ChunkRef)| check_stored(i, &bytes[c.start..c.start + c.len], c);
    if chunks.len() == 1 {
        check((0, &chunks[0]))?;
    } else {
        let results: Vec<Result<()>> = chunks.par_iter().enumerate().map(check).collect();
        results.into_iter().collect::<Result<()>>()?;
    }
    Ok(h)
}

/// Whether `matrix` (row-major, in the envelope's stored column order) has,
/// for every chunk, the raw-data checksum the table records. Only the header
/// and the table must be intact; the chunks' bytes are not read, so this can
/// prove that a regenerated matrix is the one a damaged envelope held.
pub(crate) fn raw_checksums_match(bytes: &[u8], matrix: &[f32]) -> Result<bool> {
    let (h, chunks) = parse(bytes)?;
    let cells = h.num_scenarios as usize * h.num_buckets as usize;
    if h.column_map.is_some() || matrix.len() != cells {
        return Ok(false);
    }
    let chunk_cells = h.rows_per_chunk as usize * h.num_buckets as usize;
    Ok(matrix
        .par_chunks(chunk_cells)
        .zip(chunks.par_iter())
        .all(|(values, c)| {
            let mut raw = vec![0u8; values.len() * 4];
            f32_to_le(values, &mut raw);
            xxh3_64(&raw) == c.raw_hash
        }))
}

thread_local! {
    /// Each thread's buffer of decoded rows for [`decode_chunks_with`], kept
    /// from call to call like [`POOL_DECODER`]: one chunk (about 1 MiB).
    static POOL_ROWS: RefCell<Vec<f32>> = RefCell::default();
}

/// `f(first_row, cells)` for every chunk of `bytes` (called in parallel, in
/// any order; the results in chunk order), each chunk decoded and verified
/// into its thread's reused buffer: the matrix is never whole in memory. Reading a payload where it lies this way skips the
/// 20 MB a 100,000 x 50 decode writes into fresh pages (about 4,900 page
/// faults, as long as the decode itself). `f` never sees a chunk whose
/// checksums fail; the first failing chunk's error is returned.
pub(crate) fn decode_chunks_with<T: Send>(
    bytes: &[u8],
    f: impl Fn(usize, &[f32]) -> T + Sync,
) -> Result<Vec<T>> {
    let (h, chunks) = parse(bytes)?;
    let (rows, cols) = (h.num_scenarios as usize, h.num_buckets as usize);
    let rpc = h.rows_per_chunk as usize;
    let results: Vec<Result<T>> = chunks
        .par_iter()
        .enumerate()
        .map(|(i, c)| {
            let first = i * rpc;
            let cells = (rows - first).min(rpc) * cols;
            // Out of the cell while in use: should `f` wait on rayon, a task
            // stolen onto this thread would find the buffer borrowed.
            let mut buf = POOL_ROWS.take();
            buf.resize(cells, 0.0);
            let frame = &bytes[c.start..c.start + c.len];
            let out = POOL_DECODER
                .with_borrow_mut(|dec| dec.decode(i, frame, c, &h, &mut buf))
                .map(|()| f(first, &buf));
            // A chunk far above the default size (a payload written with
            // other options) is not kept for good on every thread.
            if buf.capacity() * 4 <= 2 * DEFAULT_CHUNK_BYTES {
                POOL_ROWS.set(buf);
            }
            out
        })
        .collect();
    results.into_iter().collect()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<f32>> {
    let (h, chunks) = parse(bytes)?;
    // Every size below was checked against the limits in `parse`: this is at
    // most MAX_ROWS * MAX_COLS values.
    let cells = h.num_scenarios as usize * h.num_buckets as usize;
    let chunk_cells = h.rows_per_chunk as usize * h.num_buckets as usize;
    let mut out = crate::pages::zeroed_f32(cells);
    let frame = |c: &ChunkRef| &bytes[c.start..c.start + c.len];
    if chunks.len() == 1 {
        let c = &chunks[0];
        ChunkDecoder::default().decode(0, frame(c), c, &h, &mut out)?;
    } else {
        let results: Vec<Result<()>> = out
            .par_chunks_mut(chunk_cells)
            .zip(chunks.par_iter())
            .enumerate()
            .map(|(i, (dst, c))| {
                POOL_DECODER.with_borrow_mut(|dec| dec.decode(i, frame(c), c, &h, dst))
            })
            .collect();
        // The first failing chunk, so the message does not depend on scheduling.
        results.into_iter().collect::<Result<()>>()?;
    }
    Ok(out)
}
