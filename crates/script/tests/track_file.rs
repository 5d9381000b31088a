//! `track_file`s: values read as keepalived's strtol reads them, and `init_file`.

use keeplb_script::{init_track_file, parse_track_file, read_track_file};

#[test]
fn track_file_parsing_like_strtol() {
    assert_eq!(parse_track_file("42\n"), 42);
    assert_eq!(parse_track_file("  -7 trailing"), -7);
    assert_eq!(parse_track_file("+3"), 3);
    assert_eq!(parse_track_file("abc"), 0);
    assert_eq!(parse_track_file(""), 0);
    assert_eq!(parse_track_file("99999999999999999999999"), i64::MAX);
}

#[test]
fn init_file_writes_a_missing_file_and_keeps_an_existing_one() {
    let dir = std::env::temp_dir().join(format!("keeplb-track-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("weight");
    let _ = std::fs::remove_file(&path);
    assert_eq!(read_track_file(&path), 0, "missing file");
    init_track_file(&path, 5, false).expect("init_file");
    assert_eq!(read_track_file(&path), 5);
    init_track_file(&path, 9, false).expect("init_file keeps it");
    assert_eq!(read_track_file(&path), 5);
    init_track_file(&path, 9, true).expect("init_file overwrite");
    assert_eq!(read_track_file(&path), 9);
    let _ = std::fs::remove_dir_all(&dir);
}
