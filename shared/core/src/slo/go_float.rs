//! Floating-point text the way Go's lighthouse reads and writes it: criteria
//! and total-score targets go through `strconv.ParseFloat`, messages print
//! scores with `%v`. Rust's own parser and formatter disagree with both at the
//! edges (underscores, hex floats, `1e+06`), and those edges end up in
//! user-visible messages and pass/fail decisions.

/// Formats like Go's `fmt.Sprintf("%v", f)` for a `float64`: the shortest
/// digits that read back as `f`, in exponent form when the decimal exponent is
/// below -4 or at least 6 (`75.3`, `74`, `66.66666666666667`, `1e+06`,
/// `1e-05`, `+Inf`, `NaN`).
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Go's
    // shortest formatting; only the layout differs.
    let sci = format!("{:e}", f.abs());
    let Some((mantissa, exponent)) = sci.split_once('e') else {
        return format!("{sign}{sci}");
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let Ok(exp) = exponent.parse::<i32>() else {
        return format!("{sign}{sci}");
    };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.abs());
    }
    // Decimal point position relative to the digits (Go's `dp`).
    let dp = exp + 1;
    let nd = digits.len() as i32;
    if dp <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-dp) as usize))
    } else if dp >= nd {
        format!("{sign}{digits}{}", "0".repeat((dp - nd) as usize))
    } else {
        let (int, frac) = digits.split_at(dp as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// Go's `strconv.ParseFloat(s, 64)`; `None` where Go returns an error,
/// including out-of-range values (Go's `ErrRange`). Accepts what Go accepts:
/// an optional sign, decimal or `0x` hexadecimal mantissas (hex needs a `p`
/// exponent), `_` between digits, `inf`/`infinity`/`nan` in any case.
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    if let Some(special) = special(s) {
        return Some(special);
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut neg = false;
    match b.first() {
        Some(b'+') => i += 1,
        Some(b'-') => {
            neg = true;
            i += 1;
        }
        _ => {}
    }
    let hex = i + 2 < b.len() && b[i] == b'0' && (b[i + 1] | 0x20) == b'x';
    if hex {
        i += 2;
    }
    let mantissa_start = i;
    let mut saw_digits = false;
    let mut saw_dot = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'_' => {}
            b'.' if !saw_dot => saw_dot = true,
            b'0'..=b'9' => saw_digits = true,
            _ if hex && c.is_ascii_hexdigit() => saw_digits = true,
            _ => break,
        }
        i += 1;
    }
    if !saw_digits {
        return None;
    }
    let mantissa_end = i;
    let exp_char = if hex { b'p' } else { b'e' };
    let mut exponent: i64 = 0;
    let mut exponent_text = None;
    if i < b.len() && (b[i] | 0x20) == exp_char {
        let exp_start = i;
        i += 1;
        let mut esign = 1;
        match b.get(i) {
            Some(b'+') => i += 1,
            Some(b'-') => {
                esign = -1;
                i += 1;
            }
            _ => {}
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            if b[i] != b'_' && exponent < 100_000 {
                exponent = exponent * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        exponent *= esign;
        exponent_text = Some(&s[exp_start..i]);
    } else if hex {
        return None;
    }
    if i != b.len() || (s.contains('_') && !underscores_ok(s)) {
        return None;
    }
    let mantissa = &s[mantissa_start..mantissa_end];
    let value = if hex {
        hex_to_f64(mantissa, exponent, neg)?
    } else {
        let mut clean: String = s[..mantissa_end].chars().filter(|c| *c != '_').collect();
        if let Some(e) = exponent_text {
            clean.extend(e.chars().filter(|c| *c != '_'));
        }
        clean.parse::<f64>().ok()?
    };
    // Go reports overflow as an error; Rust rounds it to infinity.
    value.is_finite().then_some(value)
}

/// Go's `special`: `[+-]inf`, `[+-]infinity`, `nan` (no sign), any case.
fn special(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let (neg, rest) = match lower.as_bytes().first() {
        Some(b'+') => (false, &lower[1..]),
        Some(b'-') => (true, &lower[1..]),
        _ => {
            if lower == "nan" {
                return Some(f64::NAN);
            }
            (false, lower.as_str())
        }
    };
    if rest == "inf" || rest == "infinity" {
        return Some(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    None
}

/// Go's rule for `_` in number literals: only between digits, or between a
/// base prefix and a digit.
fn underscores_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    // `^` start, `0` digit or prefix, `_` underscore, `!` anything else.
    let mut saw = b'^';
    let mut hex = false;
    if b.len() >= i + 2 && b[i] == b'0' && matches!(b[i + 1] | 0x20, b'b' | b'o' | b'x') {
        hex = (b[i + 1] | 0x20) == b'x';
        saw = b'0';
        i += 2;
    }
    for &c in &b[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// A validated hex mantissa (`1f.8`, with `_`) times `2^exponent`, correctly
/// rounded to nearest-even; `None` on overflow.
fn hex_to_f64(mantissa: &str, exponent: i64, neg: bool) -> Option<f64> {
    let mut m: u64 = 0;
    let mut scale: i64 = 0;
    let mut sticky = false;
    let mut significant = 0;
    let mut after_dot = false;
    for c in mantissa.chars() {
        if c == '.' {
            after_dot = true;
            continue;
        }
        let Some(d) = c.to_digit(16) else {
            continue;
        };
        if significant == 0 && d == 0 {
            if after_dot {
                scale -= 4;
            }
            continue;
        }
        if significant < 16 {
            m = (m << 4) | u64::from(d);
            significant += 1;
            if after_dot {
                scale -= 4;
            }
        } else {
            sticky |= d != 0;
            if !after_dot {
                scale += 4;
            }
        }
    }
    let signed = |v: f64| if neg { -v } else { v };
    if m == 0 {
        return Some(signed(0.0));
    }
    // value = m * 2^e with m's top bit moved to bit 127 of a u128.
    let lz = i64::from(m.leading_zeros());
    let wide = u128::from(m) << (lz + 64);
    let e = exponent.saturating_add(scale) - lz - 64;
    let top = e + 127;
    // Exponent of the last bit kept: 53 significant bits, fewer when subnormal.
    let lsb = (top - 52).max(-1074);
    let shift = lsb - e;
    let (mut kept, rem, half) = if shift > 128 {
        (0u128, 0u128, 1u128)
    } else if shift == 128 {
        (0, wide, 1u128 << 127)
    } else {
        let kept = wide >> shift;
        (kept, wide - (kept << shift), 1u128 << (shift - 1))
    };
    if shift <= 128 && (rem > half || (rem == half && (sticky || kept & 1 == 1))) {
        kept += 1;
    }
    // kept <= 2^53: exact as f64; the product is exact unless it overflows.
    let value = (kept as f64) * pow2(lsb);
    value.is_finite().then(|| signed(value))
}

/// 2^k as an f64 (0 below the subnormal range, infinity above the range).
fn pow2(k: i64) -> f64 {
    if k > 1023 {
        f64::INFINITY
    } else if k >= -1022 {
        f64::from_bits(((k + 1023) as u64) << 52)
    } else if k >= -1074 {
        f64::from_bits(1u64 << (k + 1074))
    } else {
        0.0
    }
}
