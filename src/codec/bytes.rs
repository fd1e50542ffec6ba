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

/// Splits a buffer of `4 n` bytes into its four planes of `n` bytes.
pub(crate) fn split4(buf: &[u8]) -> [&[u8]; 4] {
    let n = buf.len() / 4;
    let (p0, rest) = buf.split_at(n);
    let (p1, rest) = rest.split_at(n);
    let (p2, p3) = rest.split_at(n);
    [p0, p1, p2, p3]
}

pub(crate) fn split4_mut(buf: &mut [u8]) -> [&mut [u8]; 4] {
    let n = buf.len() / 4;
    let (p0, rest) = buf.split_at_mut(n);
    let (p1, rest) = rest.split_at_mut(n);
    let (p2, p3) = rest.split_at_mut(n);
    [p0, p1, p2, p3]
}

/// The two byte shuffles: byte k of (a permutation of) each f32's bits goes
/// to plane k. Grouping the low mantissa bytes, the high mantissa bytes and
/// the exponent bytes of all values gives zstd streams that each have their
/// own byte statistics, instead of one stream that mixes them every 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shuffle {
    /// The f32 bytes as they are.
    Plain,
    /// The bits permuted by [`exp_forward`] first.
    Exponent,
}

impl Shuffle {
    /// Shuffles the little-endian words of `raw` into `planes`
    /// (each `raw.len() / 4` bytes).
    pub(crate) fn forward(self, raw: &[u8], planes: [&mut [u8]; 4]) {
        match self {
            Shuffle::Plain => shuffle4_map(raw, planes, |x| x),
            Shuffle::Exponent => shuffle4_map(raw, planes, exp_forward),
        }
    }

    /// Inverse of [`Shuffle::forward`].
    pub(crate) fn inverse(self, planes: [&[u8]; 4], raw: &mut [u8]) {
        match self {
            Shuffle::Plain => unshuffle4_map(planes, raw, |x| x),
            Shuffle::Exponent => unshuffle4_map(planes, raw, exp_inverse),
        }
    }
}

/// Added to the biased exponent (mod 256) by [`exp_forward`]: it maps the
/// exponents of |v| in [2^-32, 2^32) to 0..64, so their top two bits are 0.
const EXP_OFFSET: u32 = (32u32.wrapping_sub(127) & 0xff) << 24;

/// The bit permutation behind the exponent shuffle: a bijection on u32 that
/// moves the bits with low entropy into byte 0 and the exponent into byte 3
/// next to the top mantissa bits.
///
/// f32 bits `s e7..e0 m22..m0` become `e'5..e'0 m22 m21 | m20..m13 | m12..m5 |
/// m4..m0 s e'7 e'6`, where `e' = e - 127 + 32 (mod 256)`.
///
/// Why: with a plain byte shuffle, the top byte (sign + 7 exponent bits) of a
/// positive MOIC has about 1.4 bits of entropy, and zstd's literal Huffman
/// coding cannot spend less than 1 bit per byte, so that plane compresses to
/// 25 % instead of 17 %; the exponent's last bit is wasted in a plane that is
/// otherwise random. Here the top byte carries ~4 bits (6 exponent bits and 2
/// mantissa bits) and byte 0 has 3 bits that are constant for every value
/// in range (sign and the top of e'), both of which Huffman codes almost
/// exactly, and the two middle planes are plain random mantissa bits that zstd
/// stores raw at no cost. Values outside the range (and negatives, NaN) still
/// round-trip exactly; they only compress less well.
#[inline(always)]
fn exp_forward(bits: u32) -> u32 {
    bits.rotate_left(1).wrapping_add(EXP_OFFSET).rotate_left(2)
}

#[inline(always)]
fn exp_inverse(x: u32) -> u32 {
    x.rotate_right(2).wrapping_sub(EXP_OFFSET).rotate_right(1)
}

/// Reads each 4-byte little-endian word of `raw`, maps it with `f`, and
/// writes its byte k to plane k.
#[inline(always)]
fn shuffle4_map(raw: &[u8], planes: [&mut [u8]; 4], f: impl Fn(u32) -> u32) {
    let n = raw.len() / 4;
    debug_assert_eq!(raw.len() % 4, 0);
    debug_assert!(planes.iter().all(|p| p.len() == n));
    let [p0, p1, p2, p3] = planes;
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
            let w = f(u32::from_le_bytes([
                src[4 * i],
                src[4 * i + 1],
                src[4 * i + 2],
                src[4 * i + 3],
            ]))
            .to_le_bytes();
            d0[i] = w[0];
            d1[i] = w[1];
            d2[i] = w[2];
            d3[i] = w[3];
        }
    }
    for i in blocks * BLOCK..n {
        let w = f(u32::from_le_bytes([
            raw[4 * i],
            raw[4 * i + 1],
            raw[4 * i + 2],
            raw[4 * i + 3],
        ]))
        .to_le_bytes();
        p0[i] = w[0];
        p1[i] = w[1];
        p2[i] = w[2];
        p3[i] = w[3];
    }
}

/// Gathers byte k of each word from plane k, maps the word with `f`, and
/// writes it little-endian to `raw`.
#[inline(always)]
fn unshuffle4_map(planes: [&[u8]; 4], raw: &mut [u8], f: impl Fn(u32) -> u32) {
    let n = raw.len() / 4;
    debug_assert_eq!(raw.len() % 4, 0);
    debug_assert!(planes.iter().all(|p| p.len() == n));
    let [p0, p1, p2, p3] = planes;
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
            let w = f(u32::from_le_bytes([s0[i], s1[i], s2[i], s3[i]])).to_le_bytes();
            dst[4 * i..4 * i + 4].copy_from_slice(&w);
        }
    }
    for i in blocks * BLOCK..n {
        let w = f(u32::from_le_bytes([p0[i], p1[i], p2[i], p3[i]])).to_le_bytes();
        raw[4 * i..4 * i + 4].copy_from_slice(&w);
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
            Shuffle::Plain.forward(&raw, split4_mut(&mut planes));
            for i in 0..n {
                for k in 0..4 {
                    assert_eq!(planes[k * n + i], raw[4 * i + k]);
                }
            }
            let mut back = vec![0u8; raw.len()];
            Shuffle::Plain.inverse(split4(&planes), &mut back);
            assert_eq!(back, raw);
            Shuffle::Exponent.forward(&raw, split4_mut(&mut planes));
            Shuffle::Exponent.inverse(split4(&planes), &mut back);
            assert_eq!(back, raw);
        }
    }

    #[test]
    fn exponent_permutation_is_a_bijection_with_the_documented_layout() {
        let mut s = 1u64;
        for _ in 0..100_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = (s >> 32) as u32;
            assert_eq!(exp_inverse(exp_forward(b)), b);
        }
        // 1.5 = 0 01111111 100...: e' = 32 = 0b0010_0000, m22 = 1, m21 = 0.
        let x = exp_forward(1.5f32.to_bits());
        assert_eq!(x >> 24, 0b1000_0010);
        assert_eq!(x & 0xff, 0, "sign and top of e' are 0 for 1.5");
        // Every positive value in [2^-32, 2^32) has byte 0's low 3 bits clear.
        for v in [2f32.powi(-32), 1e-9, 0.3, 7.0, 1e9, 4.29e9] {
            assert_eq!(exp_forward(v.to_bits()) & 0b111, 0, "{v}");
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
