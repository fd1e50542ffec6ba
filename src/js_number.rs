//! JavaScript's number semantics where the canonical key and the messages
//! about configs must match what the TypeScript code wrote: `Number`'s
//! string form and `Math.round`. Its own module so that the dependency runs
//! one way: the key uses the config, the config uses only this.

/// Formats a number as JavaScript's `JSON.stringify` does, which for finite
/// numbers is `Number.prototype.toString`: shortest round-trip digits, `-0`
/// as `0`, exponent form below 1e-6 and from 1e21. NaN and the infinities
/// become `null`, as `JSON.stringify` writes them (that is the only place a
/// non-finite number can appear: a rounded value that overflowed).
pub fn format_js_number(n: f64) -> String {
    let mut s = String::new();
    push_js_number(&mut s, n);
    s
}

pub(crate) fn push_js_number(out: &mut String, n: f64) {
    if !n.is_finite() {
        out.push_str("null");
        return;
    }
    // ryu-js follows ECMAScript Number::toString, and already prints -0 as
    // "0" (it tests the exponent and mantissa bits, not the sign).
    let mut buf = ryu_js::Buffer::new();
    out.push_str(buf.format_finite(n));
}

/// `Math.round(v * 100000) / 100000`, evaluated in f64 exactly as JavaScript
/// evaluates it (the product is rounded to f64 first; that rounding decides
/// which way near-halves go, so it must not be fused or done in decimal).
pub fn round5(v: f64) -> f64 {
    js_math_round(v * 100_000.0) / 100_000.0
}

/// JavaScript `Math.round`: the nearest integer, halves toward +infinity.
///
/// Written with `floor` rather than `(x + 0.5).floor()`: adding 0.5 is itself
/// rounded, which sends 0.49999999999999994 to 1 and breaks odd integers
/// above 2^52. `x - floor(x)` is exact for every finite f64, so the half test
/// is exact too. Results in (-0.5, 0] keep JavaScript's `-0`.
pub(crate) fn js_math_round(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let fl = x.floor();
    let r = if x - fl >= 0.5 { fl + 1.0 } else { fl };
    if r == 0.0 && x.is_sign_negative() {
        -0.0
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        // Expected strings are what `String(n)` gives in Node 20.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (100.0, "100"),
            (100000.0, "100000"),
            (123456789.0, "123456789"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1.5e21, "1.5e+21"),
            (-1e21, "-1e+21"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (0.0000015, "0.0000015"),
            (123e-20, "1.23e-18"),
            (5e-324, "5e-324"),
            (-5e-324, "-5e-324"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (9007199254740992.0, "9007199254740992"),
            (9007199254740993.0, "9007199254740992"),
            (4294967295.0, "4294967295"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0 / 3.0, "0.6666666666666666"),
            (3.30001, "3.30001"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
            (f64::NEG_INFINITY, "null"),
        ];
        for &(n, want) in cases {
            assert_eq!(format_js_number(n), want, "formatting {n:?}");
        }
    }

    #[test]
    fn math_round_matches_javascript() {
        let cases: &[(f64, f64)] = &[
            (0.5, 1.0),
            (1.5, 2.0),
            (2.5, 3.0),
            (-0.5, -0.0),
            (-1.5, -1.0),
            (-2.5, -2.0),
            (-2.6, -3.0),
            (0.49999999999999994, 0.0),
            (-0.49999999999999994, -0.0),
            (4503599627370495.5, 4503599627370496.0),
            (4503599627370497.0, 4503599627370497.0),
            (-4503599627370495.5, -4503599627370495.0),
            (1e300, 1e300),
            (0.3, 0.0),
            (-0.3, -0.0),
        ];
        for &(x, want) in cases {
            let got = js_math_round(x);
            assert_eq!(got, want, "Math.round({x:?})");
            assert_eq!(
                got.is_sign_negative(),
                want.is_sign_negative(),
                "sign of Math.round({x:?})"
            );
        }
        assert!(js_math_round(f64::INFINITY).is_infinite());
    }

    #[test]
    fn rounding_to_five_decimals_follows_the_f64_product() {
        // 0.000005 * 1e5 is 0.5 exactly after rounding the product: rounds up.
        assert_eq!(format_js_number(round5(0.000005)), "0.00001");
        // -0.000005 * 1e5 = -0.5: halves go toward +infinity, giving -0 -> "0".
        assert_eq!(format_js_number(round5(-0.000005)), "0");
        // 1.000005 is stored slightly above the half (1.00000500000000003),
        // and its product rounds to exactly 100000.5: rounds up.
        assert_eq!(format_js_number(round5(1.000005)), "1.00001");
        // 1.234565 is stored below the half (1.23456499999999991) and its
        // product stays below (123456.49999999999): rounds down.
        assert_eq!(format_js_number(round5(1.234565)), "1.23456");
        // Non-halves and already short values.
        assert_eq!(format_js_number(round5(3.3000049999)), "3.3");
        assert_eq!(format_js_number(round5(0.1 + 0.2)), "0.3");
        assert_eq!(format_js_number(round5(1e-7)), "0");
        assert_eq!(format_js_number(round5(12.5)), "12.5");
        assert_eq!(format_js_number(round5(100.0)), "100");
        // Big values: the product is an integer; division gives back a nearby
        // double; overflow of the product becomes `null` like JSON.stringify.
        assert_eq!(format_js_number(round5(1e300)), "1.0000000000000002e+300");
        assert_eq!(format_js_number(round5(1e304)), "null");
    }
}
