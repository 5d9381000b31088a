//! `track_file`s: a number in a file that scripts or operators write and keepalived
//! reads (VRRP weights, FILE_CHECK).

use std::io;
use std::path::Path;

/// Reads a track_file's value as keepalived does: the leading integer of the content
/// (after blanks), 0 when there is none.
pub fn parse_track_file(content: &str) -> i64 {
    let s = content.trim_start();
    let (sign, digits) = match s.as_bytes().first() {
        Some(b'-') => (-1i64, &s[1..]),
        Some(b'+') => (1, &s[1..]),
        _ => (1, s),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end]
        .parse::<i64>()
        .map(|v| v.saturating_mul(sign))
        .unwrap_or(if end > 0 {
            // More digits than an i64 holds: saturate like strtol.
            if sign < 0 { i64::MIN } else { i64::MAX }
        } else {
            0
        })
}

/// Reads a track_file from disk; 0 when it is missing or unreadable.
pub fn read_track_file(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .map(|c| parse_track_file(&c))
        .unwrap_or(0)
}

/// `init_file [VALUE] [overwrite]`: writes `value` when the file is missing, or always
/// with `overwrite`.
pub fn init_track_file(path: &Path, value: i64, overwrite: bool) -> io::Result<()> {
    if overwrite || !path.exists() {
        std::fs::write(path, format!("{value}\n"))?;
    }
    Ok(())
}
