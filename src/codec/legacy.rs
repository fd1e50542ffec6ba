//! Format version 1: what the TypeScript implementation stored. A zlib stream
//! (2-byte header, deflate, Adler-32 trailer, as Node's `zlib.deflateSync`
//! writes it) of the raw little-endian f32 matrix, row-major, with no header of
//! its own: the dimensions come from the row's metadata. It was labelled
//! 'zstd' in PostgreSQL although it never was. The cache writes it too, in
//! the transition mode (`writeLegacyFormat`), for TypeScript instances to read.

use std::io::Write;

use flate2::{write::ZlibEncoder, Compression, Decompress, FlushDecompress, Status};

use crate::error::{Error, Result};

/// True when `bytes` starts with a plausible zlib header: compression method 8
/// (deflate), a window of at most 32 KiB, and the header check bits (RFC 1950).
pub(crate) fn looks_like_zlib(bytes: &[u8]) -> bool {
    match bytes {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// A zlib stream of `raw`, as Node's `zlib.inflateSync` reads it. Level 1:
/// float noise barely compresses, and higher levels cost several times the
/// time for a few percent.
pub(crate) fn deflate(raw: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::with_capacity(raw.len() + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(raw);
    z.finish().unwrap_or_default()
}

/// Inflates `bytes` into exactly `expected` bytes.
///
/// The output buffer holds `expected + 1` bytes and is never grown, so a
/// stream that inflates to more (a zlib bomb, or the wrong metadata) is caught
/// one byte past the expected size, however large it would have become.
pub(crate) fn inflate_exact(bytes: &[u8], expected: usize) -> Result<Vec<u8>> {
    if !looks_like_zlib(bytes) {
        return Err(Error::corrupt(format!(
            "legacy payload is not a zlib stream ({} bytes, starts with {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(2)]
        )));
    }
    let mut inflater = Decompress::new(true);
    let mut out = Vec::with_capacity(expected + 1);
    loop {
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let rest = &bytes[in_before as usize..];
        let status = inflater
            .decompress_vec(rest, &mut out, FlushDecompress::Finish)
            .map_err(|e| {
                Error::corrupt(format!(
                    "legacy zlib stream is invalid after {} input bytes: {e}",
                    inflater.total_in()
                ))
            })?;
        if out.len() > expected {
            return Err(Error::corrupt(format!(
                "legacy zlib stream inflates to more than the expected {expected} bytes"
            )));
        }
        if status == Status::StreamEnd {
            break;
        }
        let progressed = inflater.total_in() != in_before || inflater.total_out() != out_before;
        if !progressed {
            // The input ran out before the end of the stream.
            return Err(Error::corrupt(format!(
                "legacy zlib stream is truncated: inflated {} of the expected {expected} bytes",
                out.len()
            )));
        }
    }
    if out.len() != expected {
        return Err(Error::corrupt(format!(
            "legacy zlib stream inflates to {} bytes, expected {expected}",
            out.len()
        )));
    }
    let consumed = inflater.total_in() as usize;
    if consumed != bytes.len() {
        return Err(Error::corrupt(format!(
            "{} trailing bytes after the end of the legacy zlib stream",
            bytes.len() - consumed
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_size_inflates() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(inflate_exact(&deflate(&data), data.len()).unwrap(), data);
    }

    #[test]
    fn a_damaged_adler32_trailer_is_corrupt() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut z = deflate(&data);
        assert_eq!(inflate_exact(&z, data.len()).unwrap(), data);
        let last = z.len() - 1;
        z[last] ^= 1;
        let err = inflate_exact(&z, data.len()).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
    }

    #[test]
    fn wrong_sizes_are_corrupt() {
        let data = vec![7u8; 1000];
        let z = deflate(&data);
        for expected in [0, 1, 999, 1001, 100_000] {
            let err = inflate_exact(&z, expected).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{expected}: {err}");
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_corrupt() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 256) as u8).collect();
        let z = deflate(&data);
        for cut in 0..z.len() {
            assert!(inflate_exact(&z[..cut], data.len()).is_err(), "cut {cut}");
        }
        let mut longer = z.clone();
        longer.push(0);
        assert!(inflate_exact(&longer, data.len()).is_err());
    }
}
