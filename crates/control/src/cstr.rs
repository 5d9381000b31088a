//! The C library's number and address parsers as ipvsadm relies on them (`strtol`, `atoi`,
//! `inet_aton`), so that keeplb accepts and refuses exactly the same arguments.

use std::net::Ipv4Addr;

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Leading whitespace, an optional sign and decimal digits, as `strtol(s, &end, 10)` reads
/// them: the value (None on overflow) and how many bytes were used (0 = no number).
fn strtol_prefix(s: &str) -> (Option<i64>, usize) {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() && is_c_space(bytes[i]) {
        i += 1;
    }
    let negative = match bytes.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits_start = i;
    let mut value: Option<i64> = Some(0);
    while let Some(&c) = bytes.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        let digit = i64::from(c - b'0');
        value = value.and_then(|v| v.checked_mul(10)).and_then(|v| {
            if negative {
                v.checked_sub(digit)
            } else {
                v.checked_add(digit)
            }
        });
        i += 1;
    }
    if i == digits_start {
        return (Some(0), 0);
    }
    (value, i)
}

/// ipvsadm's `string_to_number`: the whole string must be a decimal number in `min..=max`.
pub fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    match strtol_prefix(s) {
        (Some(value), used) if used > 0 && used == s.len() && (min..=max).contains(&value) => {
            Some(value)
        }
        _ => None,
    }
}

/// `atoi`: the leading number, 0 when there is none (saturating where C is undefined).
pub fn atoi(s: &str) -> i64 {
    match strtol_prefix(s) {
        (Some(value), _) => value,
        (None, _) if s.trim_start().starts_with('-') => i64::MIN,
        (None, _) => i64::MAX,
    }
}

/// True when every character is an ASCII digit (also for the empty string), as ipvsadm's
/// `str_is_digit`.
pub fn is_all_digits(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_digit())
}

/// glibc's `inet_aton`: one to four parts in decimal, octal (`0…`) or hex (`0x…`), the last
/// filling the remaining bytes; anything after a whitespace character is ignored.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let bytes = s.as_bytes();
    let mut parts: Vec<u64> = Vec::with_capacity(4);
    let mut i = 0;
    let last = loop {
        let mut c = *bytes.get(i)?;
        if !c.is_ascii_digit() {
            return None;
        }
        let mut value: u64 = 0;
        let mut base = 10;
        let mut saw_digit = false;
        if c == b'0' {
            i += 1;
            c = bytes.get(i).copied().unwrap_or(0);
            if c == b'x' || c == b'X' {
                base = 16;
                i += 1;
                c = bytes.get(i).copied().unwrap_or(0);
            } else {
                base = 8;
                saw_digit = true;
            }
        }
        loop {
            let digit = match c {
                b'0'..=b'9' if base == 8 && c >= b'8' => return None,
                b'0'..=b'9' => u64::from(c - b'0'),
                b'a'..=b'f' if base == 16 => u64::from(c - b'a' + 10),
                b'A'..=b'F' if base == 16 => u64::from(c - b'A' + 10),
                _ => break,
            };
            value = value.checked_mul(base)?.checked_add(digit)?;
            if value > u64::from(u32::MAX) {
                return None;
            }
            saw_digit = true;
            i += 1;
            c = bytes.get(i).copied().unwrap_or(0);
        }
        if c == b'.' {
            if parts.len() > 2 || value > 0xff {
                return None;
            }
            parts.push(value);
            i += 1;
            continue;
        }
        if c != 0 && !is_c_space(c) {
            return None;
        }
        if !saw_digit {
            return None;
        }
        break value;
    };
    let limit = match parts.len() {
        0 => u64::from(u32::MAX),
        1 => 0xff_ffff,
        2 => 0xffff,
        _ => 0xff,
    };
    if last > limit {
        return None;
    }
    let mut addr = last;
    for (n, part) in parts.iter().enumerate() {
        addr |= part << (24 - 8 * n);
    }
    let addr = u32::try_from(addr).ok()?;
    Some(Ipv4Addr::from(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_number_is_strtol_with_full_match() {
        assert_eq!(string_to_number("65535", 0, 65535), Some(65535));
        assert_eq!(string_to_number("65536", 0, 65535), None);
        assert_eq!(string_to_number("+5", 0, 10), Some(5));
        assert_eq!(string_to_number(" 5", 0, 10), Some(5));
        assert_eq!(string_to_number("5 ", 0, 10), None);
        assert_eq!(string_to_number("-0", 0, 10), Some(0));
        assert_eq!(string_to_number("0x10", 0, 100), None);
        assert_eq!(string_to_number("", 0, 10), None);
        assert_eq!(string_to_number("-", 0, 10), None);
        assert_eq!(string_to_number("99999999999999999999", 0, i64::MAX), None);
    }

    #[test]
    fn atoi_takes_the_leading_number() {
        assert_eq!(atoi("64"), 64);
        assert_eq!(atoi("64abc"), 64);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi(" -3"), -3);
    }

    #[test]
    fn inet_aton_accepts_the_classic_forms() {
        let ok =
            |s: &str, want: [u8; 4]| assert_eq!(inet_aton(s), Some(Ipv4Addr::from(want)), "{s}");
        ok("1.2.3.4", [1, 2, 3, 4]);
        ok("10.1", [10, 0, 0, 1]);
        ok("10.1.2", [10, 1, 0, 2]);
        ok("0x7f.1", [127, 0, 0, 1]);
        ok("24", [0, 0, 0, 24]);
        ok("010.0.0.1", [8, 0, 0, 1]);
        ok("4294967295", [255, 255, 255, 255]);
        ok("1.2.3.4 trailing", [1, 2, 3, 4]);
        ok("255.255.255.0", [255, 255, 255, 0]);
        for bad in [
            "",
            "300.1.1.1",
            "1.2.3.4.5",
            "08.1.1.1",
            "0x",
            "a.b.c.d",
            "1.2.3.4x",
            "1..2",
            "4294967296",
        ] {
            assert_eq!(inet_aton(bad), None, "{bad}");
        }
    }
}
