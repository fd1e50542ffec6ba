//! Deterministic elementary functions for the generator.
//!
//! Owns every transcendental the output bits depend on: `ln` and `exp` in f32
//! for the per-cell math, the quadrant sine/cosine used by Box-Muller, and an
//! f64 `ln` for the per-bucket constants.
//!
//! Why not `f32::ln` & co.: those call the platform libm, whose last bits differ
//! between glibc, musl, macOS and MSVC, so the same key would give different
//! matrices on different machines. Everything here uses only IEEE-754 basic
//! operations (+ - * /, conversions, bit manipulation), which are correctly
//! rounded everywhere. Rust never contracts `a * b + c` into an FMA on its own,
//! so the written order of operations is the executed one on every target.
//!
//! The polynomials are truncated Taylor/atanh series on small, range-reduced
//! arguments. They are not minimax-optimal, but their truncation error is far
//! below f32 (or f64) rounding on the reduced ranges (bounds next to each one),
//! and they are short, branch-free, and auto-vectorise.

/// Natural log of 2, split so that `n * LN2_HI_F32` is exact for |n| <= 2^15.
const LN2_HI_F32: f32 = 355.0 / 512.0; // 0.693359375, exact
const LN2_LO_F32: f32 = -2.121_944_4e-4; // ln 2 - LN2_HI_F32

/// Bits of sqrt(1/2) in f32 and f64: range reduction puts mantissas in
/// [sqrt(1/2), sqrt(2)) so that |ln m| <= ln(2)/2.
const SQRT_HALF_BITS_F32: i32 = 0x3f35_04f3;
const SQRT_HALF_BITS_F64: i64 = 0x3fe6_a09e_667f_3bcd;

/// ln(x) for positive, finite, normal x (the generator only feeds it values in
/// [2^-31, 1]). Max relative error about 2 ulp (measured in the unit tests).
///
/// x = 2^e m with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s) with
/// s = (m - 1) / (m + 1), |s| <= 0.1716, s^2 <= 0.0295. The series
/// 2s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9) leaves out 2 s^11 / 11, a relative
/// error below 2e-9, well under f32's 6e-8.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits() as i32;
    let t = bits.wrapping_sub(SQRT_HALF_BITS_F32);
    let e = t >> 23; // arithmetic shift: exponent after moving the boundary to sqrt(1/2)
    let m = f32::from_bits(((t & 0x007f_ffff) + SQRT_HALF_BITS_F32) as u32);
    let f = m - 1.0; // exact (Sterbenz)
    let s = f / (2.0 + f);
    let z = s * s;
    let two_s = s + s;
    // Estrin's scheme (pairs of terms, then z^2) rather than Horner: a
    // shorter dependency chain, which is what bounds this loop's speed.
    let z2 = z * z;
    let poly = (1.0 / 3.0 + z * (1.0 / 5.0)) + z2 * (1.0 / 7.0 + z * (1.0 / 9.0));
    let tail = two_s * z * poly;
    let ef = e as f32;
    ef * LN2_HI_F32 + ((two_s + tail) + ef * LN2_LO_F32)
}

/// Below this, `exp_f32` returns 0. Chosen so that every non-zero result is a
/// normal float: subnormal arithmetic is slow on x86, and hosts that set
/// flush-to-zero would round it differently.
pub const EXP_F32_MIN_ARG: f32 = -86.5;
/// Above this, `exp_f32` returns f32::MAX (saturates; never infinity).
pub const EXP_F32_MAX_ARG: f32 = 88.0;

/// exp(x) in f32, saturating: 0 below `EXP_F32_MIN_ARG`, `f32::MAX` above
/// `EXP_F32_MAX_ARG` (and for +inf), never NaN for non-NaN input.
/// Max relative error about 2 ulp.
///
/// x = n ln2 + r with n = round(x / ln2), |r| <= 0.3466 (Cody-Waite: n * ln2_hi
/// is exact); exp(r) by its degree-7 Taylor polynomial, whose remainder
/// r^8 / 8! < 5.6e-9 relative; 2^n is built in the exponent field.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // Rounding by adding 1.5 * 2^23: exact round-to-nearest-even for |v| < 2^22,
    // with no float->int conversion rounding-mode questions.
    const ROUND: f32 = 12_582_912.0;
    let under = x < EXP_F32_MIN_ARG;
    let over = x > EXP_F32_MAX_ARG;
    // Plain compares and selects (not f32::max/min, whose NaN rules cost extra
    // instructions in vector code).
    let xc = if under {
        EXP_F32_MIN_ARG
    } else if over {
        EXP_F32_MAX_ARG
    } else {
        x
    };
    let t = xc * core::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // t's ulp is 1, so its low bits hold n: read the integer from the bits
    // (an `as i32` would add a saturating, NaN-checking scalar conversion
    // per lane).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (xc - n * LN2_HI_F32) - n * LN2_LO_F32;
    // Estrin's scheme: four independent pairs combined with r^2 and r^4
    // (dependency depth 8 instead of Horner's 14).
    let r2 = r * r;
    let r4 = r2 * r2;
    let p23 = 0.5 + r * (1.0 / 6.0);
    let p45 = 1.0 / 24.0 + r * (1.0 / 120.0);
    let p67 = 1.0 / 720.0 + r * (1.0 / 5040.0);
    // The small terms are summed first and 1 is added last, which keeps the
    // error near 1 ulp.
    let p = 1.0 + (r + (r2 * p23 + r4 * (p45 + r2 * p67)));
    // n is in [-125, 127] after the clamp, so the biased exponent is in [2, 254].
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    let y = p * scale;
    if under {
        0.0
    } else if over {
        f32::MAX
    } else {
        y
    }
}

/// (cos a, sin a) for a in [-pi/4, pi/4]. Taylor series; the first omitted
/// terms, (pi/4)^11 / 11! = 7e-10 and (pi/4)^12 / 12! = 1.1e-10, are below
/// f32 rounding.
#[inline(always)]
pub fn cos_sin_small_f32(a: f32) -> (f32, f32) {
    let z = a * a;
    let s =
        a + a * z * (-1.0 / 6.0 + z * (1.0 / 120.0 + z * (-1.0 / 5040.0 + z * (1.0 / 362_880.0))));
    let c = 1.0
        + z * (-0.5
            + z * (1.0 / 24.0
                + z * (-1.0 / 720.0 + z * (1.0 / 40_320.0 + z * (-1.0 / 3_628_800.0)))));
    (c, s)
}

/// (cos t, sin t) for an angle t that is uniform over the circle (in 2^26
/// equal steps) when w is a uniformly random 32-bit word: the angle for
/// Box-Muller.
///
/// The top two bits pick a quadrant q, the next 24 an angle
/// a in (-pi/4, pi/4) at the middle of one of 2^24 equal steps, and
/// t = q pi/2 + a, so (cos t, sin t) is (cos a, sin a) rotated by q quarter
/// turns: a swap and sign flips, done with bit masks so the loop stays
/// branch-free and vectorises.
#[inline(always)]
pub fn cos_sin_turn_f32(w: u32) -> (f32, f32) {
    let q = w >> 30;
    let frac = ((w >> 6) & 0x00ff_ffff) as i32 as f32; // exact integer < 2^24
                                                       // frac * 2^-24 - 0.5 is exact; adding 2^-25 is exact too (at most 24
                                                       // significant bits): the step midpoint, so the angles are symmetric.
    let a =
        ((frac * (1.0 / 16_777_216.0) - 0.5) + 1.0 / 33_554_432.0) * core::f32::consts::FRAC_PI_2;
    let (c, s) = cos_sin_small_f32(a);
    // q = 0: (c, s); 1: (-s, c); 2: (-c, -s); 3: (s, -c).
    let swap = 0u32.wrapping_sub(q & 1);
    let (cb, sb) = (c.to_bits(), s.to_bits());
    let xb = (cb & !swap) | (sb & swap);
    let yb = (sb & !swap) | (cb & swap);
    let x_neg = ((q + 1) >> 1) & 1; // q = 1 or 2
    let y_neg = q >> 1; // q = 2 or 3
    (
        f32::from_bits(xb ^ (x_neg << 31)),
        f32::from_bits(yb ^ (y_neg << 31)),
    )
}

/// A uniform in (0, 1] from the top 31 bits of a random word:
/// (k + 1) 2^-31, with k + 1 rounded to f32 (correct rounding, so exact
/// everywhere). Never 0, so its log is finite; the smallest value, 2^-31,
/// bounds the Pareto tail at 2^(31 / alpha) xMin.
#[inline(always)]
pub fn unit_open0_f32(w: u32) -> f32 {
    ((w >> 1) as i32 as f32 + 1.0) * (1.0 / 2_147_483_648.0)
}

/// Two independent N(0, 1) draws from two random words (Box-Muller):
/// radius sqrt(-2 ln u), u in (0, 1], from `w_radius`; angle from `w_angle`.
/// The radius is at most sqrt(62 ln 2) = 6.55, so the normal is truncated at
/// 6.55 sigma (a probability of 6e-11).
#[inline(always)]
pub fn box_muller_f32(w_radius: u32, w_angle: u32) -> (f32, f32) {
    let u = unit_open0_f32(w_radius);
    let r = (-2.0 * ln_f32(u)).sqrt(); // IEEE sqrt: correctly rounded everywhere
    let (c, s) = cos_sin_turn_f32(w_angle);
    (r * c, r * s)
}

/// ln(x) in f64 for the per-bucket constants: positive finite x, including
/// subnormals. Relative error about 1 ulp.
///
/// Same reduction as `ln_f32`; ln(1 + f) = f - s (f - R) with s = f / (2 + f)
/// and R = 2 s^2/3 + 2 s^4/5 + ... + 2 s^22/23 (the 2 atanh series, using
/// 2s = f - s f); the first omitted term is below 1e-18 relative.
pub fn ln_f64(x: f64) -> f64 {
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 32 significant bits (so e * LN2_HI is
    // exact for any exponent), LN2_LO the rest rounded to f64.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-01
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10
    debug_assert!(x > 0.0 && x.is_finite());
    let (x, e_adjust) = if x < f64::MIN_POSITIVE {
        (x * 18_014_398_509_481_984.0, -54i64) // * 2^54: subnormal -> normal
    } else {
        (x, 0)
    };
    let bits = x.to_bits() as i64;
    let t = bits.wrapping_sub(SQRT_HALF_BITS_F64);
    let e = (t >> 52) + e_adjust;
    let m = f64::from_bits(((t & 0x000f_ffff_ffff_ffff) + SQRT_HALF_BITS_F64) as u64);
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let mut r = 2.0 / 23.0;
    for k in (1..=10).rev() {
        r = 2.0 / (2 * k + 1) as f64 + z * r;
    }
    let r = z * r;
    let ln_m = f - s * (f - r);
    let ef = e as f64;
    ef * LN2_HI + (ln_m + ef * LN2_LO)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic sweep of positive floats: a geometric grid plus
    /// pseudo-random mantissas (and near-1 values, where ln is small).
    fn sweep_f32(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(2 * n);
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        let mut s = 0x1234_5678_9abc_def0u64;
        for i in 0..n {
            v.push((l + (h - l) * i as f64 / (n - 1) as f64).exp() as f32);
            s = crate::generator::rng::mix64(s.wrapping_add(0x9e37_79b9_7f4a_7c15));
            v.push((l + (h - l) * (s >> 11) as f64 / (1u64 << 53) as f64).exp() as f32);
        }
        v
    }

    fn rel(a: f64, b: f64) -> f64 {
        if a == b {
            0.0
        } else {
            ((a - b) / b).abs()
        }
    }

    #[test]
    fn ln_f32_matches_std() {
        // Relative error bound, except where ln x is near 0: there the absolute
        // error is what matters (the result is added to O(1) terms).
        let mut xs = sweep_f32(1e-37, 3e38, 200_000);
        xs.extend((1..=20_000).map(|i| 1.0 - i as f32 * 2.0f32.powi(-24)));
        xs.extend((1..=20_000).map(|i| 1.0 + i as f32 * 2.0f32.powi(-23)));
        xs.extend([2.0f32.powi(-31), 1.0, f32::MIN_POSITIVE, f32::MAX]);
        let mut worst = 0.0f64;
        for &x in &xs {
            let want = (x as f64).ln();
            let got = ln_f32(x) as f64;
            let err = if want.abs() < 1.0 {
                (got - want).abs() / want.abs().max(f32::EPSILON as f64)
            } else {
                rel(got, want)
            };
            worst = worst.max(err);
            assert!(err < 3e-7, "ln_f32({x:e}) = {got:e}, want {want:e}");
        }
        assert_eq!(ln_f32(1.0), 0.0);
        eprintln!("ln_f32 worst relative error {worst:e}");
    }

    #[test]
    fn exp_f32_matches_std_and_saturates() {
        let mut worst = 0.0f64;
        for i in 0..=2_000_000 {
            let x = EXP_F32_MIN_ARG + (EXP_F32_MAX_ARG - EXP_F32_MIN_ARG) * i as f32 / 2e6;
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            let err = rel(got, want);
            worst = worst.max(err);
            assert!(err < 3e-7, "exp_f32({x:e}) = {got:e}, want {want:e}");
            assert!(got >= f32::MIN_POSITIVE as f64, "subnormal at {x}");
        }
        eprintln!("exp_f32 worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-87.0), 0.0);
        assert_eq!(exp_f32(-1e30), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(89.0), f32::MAX);
        assert_eq!(exp_f32(f32::INFINITY), f32::MAX);
    }

    #[test]
    fn sin_cos_match_std_over_the_full_turn() {
        let mut worst = 0.0f64;
        for i in 0..=400_000u64 {
            let w = (i * ((1u64 << 32) - 1) / 400_000) as u32;
            let (c, s) = cos_sin_turn_f32(w);
            // The angle this word stands for (quadrant + step midpoint).
            let q = (w >> 30) as f64;
            let frac = ((w >> 6) & 0x00ff_ffff) as f64;
            let a = (frac / 16_777_216.0 - 0.5 + 0.5 / 16_777_216.0) * std::f64::consts::FRAC_PI_2;
            let t = q * std::f64::consts::FRAC_PI_2 + a;
            // Absolute error: (cos, sin) is a point on the unit circle.
            let err = ((c as f64 - t.cos()).abs()).max((s as f64 - t.sin()).abs());
            worst = worst.max(err);
            assert!(
                err < 2e-7,
                "w={w:#x}: ({c}, {s}) vs ({}, {})",
                t.cos(),
                t.sin()
            );
        }
        eprintln!("cos/sin worst absolute error {worst:e}");
        for i in 0..=100_000 {
            let a = -std::f32::consts::FRAC_PI_4 + std::f32::consts::FRAC_PI_2 * i as f32 / 1e5;
            let (c, s) = cos_sin_small_f32(a);
            assert!(rel(c as f64, (a as f64).cos()) < 2e-7);
            if a != 0.0 {
                assert!(rel(s as f64, (a as f64).sin()) < 2e-7, "sin({a})");
            }
        }
    }

    #[test]
    fn ln_f64_matches_std() {
        let mut s = 42u64;
        let mut worst = 0.0f64;
        let mut check = |x: f64| {
            let want = x.ln();
            let got = ln_f64(x);
            let err = if want.abs() < 1.0 {
                (got - want).abs() / want.abs().max(f64::EPSILON)
            } else {
                rel(got, want)
            };
            worst = worst.max(err);
            assert!(err < 1e-15, "ln_f64({x:e}) = {got:e}, want {want:e}");
        };
        for _ in 0..1_000_000 {
            s = crate::generator::rng::mix64(s);
            // Random bit patterns: every exponent, including subnormals.
            let x = f64::from_bits(s >> 1);
            if x > 0.0 && x.is_finite() {
                check(x);
            }
            check(1.0 + (s >> 11) as f64 / (1u64 << 53) as f64 * 4.0);
        }
        for x in [
            5.0,
            3.0,
            1.5,
            2.0,
            0.5,
            1.0 + f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
        ] {
            check(x);
        }
        assert_eq!(ln_f64(1.0), 0.0);
        eprintln!("ln_f64 worst relative error {worst:e}");
    }

    #[test]
    fn uniforms_stay_in_range() {
        assert_eq!(unit_open0_f32(u32::MAX), 1.0);
        assert_eq!(unit_open0_f32(0), 2.0f32.powi(-31));
        assert_eq!(unit_open0_f32(1), 2.0f32.powi(-31));
        let (a, b) = box_muller_f32(0, 0);
        assert!(a.is_finite() && b.is_finite() && a.abs() <= 6.6 && b.abs() <= 6.6);
    }
}
