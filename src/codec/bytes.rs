//! Moving f32 values to and from little-endian bytes, and the 4-plane byte
//! shuffle filter.
//!
//! Everything is safe code. The loops are written over fixed-size blocks so
//! that LLVM removes the bounds checks and vectorises them; on a little-endian
//! machine the f32 <-> byte conversions compile to plain vector copies.

/// Values per block in the shuffle loops: 16 values = 64 bytes, one cache line.
const BLOCK: usize = 16;

/// Writes `src` as little-endian bytes into `dst` (`dst.len() == 4 * src.len()`).
pub(crate) fn f32_to_le(src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), src.len() * 4);
    for (d, v) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// Reads little-endian bytes `src` into `dst` (`src.len() == 4 * dst.len()`).
pub(crate) fn le_to_f32(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len() * 4);
    for (v, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *v = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// Splits `planes` (length `4 n`) into its four planes of length `n`.
fn split4(planes: &[u8]) -> (&[u8], &[u8], &[u8], &[u8]) {
    let n = planes.len() / 4;
    let (p0, rest) = planes.split_at(n);
    let (p1, rest) = rest.split_at(n);
    let (p2, p3) = rest.split_at(n);
    (p0, p1, p2, p3)
}

fn split4_mut(planes: &mut [u8]) -> (&mut [u8], &mut [u8], &mut [u8], &mut [u8]) {
    let n = planes.len() / 4;
    let (p0, rest) = planes.split_at_mut(n);
    let (p1, rest) = rest.split_at_mut(n);
    let (p2, p3) = rest.split_at_mut(n);
    (p0, p1, p2, p3)
}

/// Byte-shuffle: byte k of value i goes to `planes[k * n + i]`.
///
/// Grouping the low mantissa bytes, the high mantissa bytes and the
/// sign/exponent bytes of all values gives zstd four streams, each with its
/// own byte statistics, instead of one stream that mixes them every 4 bytes.
pub(crate) fn shuffle4(raw: &[u8], planes: &mut [u8]) {
    debug_assert_eq!(raw.len() % 4, 0);
    debug_assert_eq!(raw.len(), planes.len());
    let n = raw.len() / 4;
    let (p0, p1, p2, p3) = split4_mut(planes);
    let blocks = n / BLOCK;
    for b in 0..blocks {
        let src: &[u8; 4 * BLOCK] = raw[b * 4 * BLOCK..(b + 1) * 4 * BLOCK]
            .try_into()
            .expect("block length");
        let o = b * BLOCK;
        let d0: &mut [u8; BLOCK] = (&mut p0[o..o + BLOCK]).try_into().expect("block");
        let d1: &mut [u8; BLOCK] = (&mut p1[o..o + BLOCK]).try_into().expect("block");
        let d2: &mut [u8; BLOCK] = (&mut p2[o..o + BLOCK]).try_into().expect("block");
        let d3: &mut [u8; BLOCK] = (&mut p3[o..o + BLOCK]).try_into().expect("block");
        for i in 0..BLOCK {
            d0[i] = src[4 * i];
            d1[i] = src[4 * i + 1];
            d2[i] = src[4 * i + 2];
            d3[i] = src[4 * i + 3];
        }
    }
    for i in blocks * BLOCK..n {
        p0[i] = raw[4 * i];
        p1[i] = raw[4 * i + 1];
        p2[i] = raw[4 * i + 2];
        p3[i] = raw[4 * i + 3];
    }
}

/// Inverse of [`shuffle4`].
pub(crate) fn unshuffle4(planes: &[u8], raw: &mut [u8]) {
    debug_assert_eq!(raw.len() % 4, 0);
    debug_assert_eq!(raw.len(), planes.len());
    let n = raw.len() / 4;
    let (p0, p1, p2, p3) = split4(planes);
    let blocks = n / BLOCK;
    for b in 0..blocks {
        let dst: &mut [u8; 4 * BLOCK] = (&mut raw[b * 4 * BLOCK..(b + 1) * 4 * BLOCK])
            .try_into()
            .expect("block length");
        let o = b * BLOCK;
        let s0: &[u8; BLOCK] = p0[o..o + BLOCK].try_into().expect("block");
        let s1: &[u8; BLOCK] = p1[o..o + BLOCK].try_into().expect("block");
        let s2: &[u8; BLOCK] = p2[o..o + BLOCK].try_into().expect("block");
        let s3: &[u8; BLOCK] = p3[o..o + BLOCK].try_into().expect("block");
        for i in 0..BLOCK {
            dst[4 * i] = s0[i];
            dst[4 * i + 1] = s1[i];
            dst[4 * i + 2] = s2[i];
            dst[4 * i + 3] = s3[i];
        }
    }
    for i in blocks * BLOCK..n {
        raw[4 * i] = p0[i];
        raw[4 * i + 1] = p1[i];
        raw[4 * i + 2] = p2[i];
        raw[4 * i + 3] = p3[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_round_trips_every_length() {
        for n in 0..100usize {
            let raw: Vec<u8> = (0..4 * n).map(|i| (i * 7 + 3) as u8).collect();
            let mut planes = vec![0u8; raw.len()];
            shuffle4(&raw, &mut planes);
            for i in 0..n {
                for k in 0..4 {
                    assert_eq!(planes[k * n + i], raw[4 * i + k]);
                }
            }
            let mut back = vec![0u8; raw.len()];
            unshuffle4(&planes, &mut back);
            assert_eq!(back, raw);
        }
    }

    #[test]
    fn le_conversion_round_trips_bit_patterns() {
        let vals = [
            0.0f32,
            -0.0,
            1.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x7fc0_0001),
            f32::from_bits(0xffff_ffff),
            f32::from_bits(1),
        ];
        let mut bytes = vec![0u8; vals.len() * 4];
        f32_to_le(&vals, &mut bytes);
        assert_eq!(&bytes[8..12], &1.5f32.to_le_bytes());
        let mut back = vec![0f32; vals.len()];
        le_to_f32(&bytes, &mut back);
        for (a, b) in vals.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
