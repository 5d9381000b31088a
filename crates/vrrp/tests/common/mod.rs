//! Reads the golden fixtures under tests/fixtures/.
//!
//! Format: `#` starts a comment line; other non-empty lines are `key: value`. Hex values
//! may contain spaces.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

pub struct Fixture {
    pub name: String,
    fields: BTreeMap<String, String>,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.txt"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{name}: not `key: value`: {line}"));
            let old = fields.insert(key.trim().to_owned(), value.trim().to_owned());
            assert!(old.is_none(), "{name}: duplicate key {key}");
        }
        Fixture {
            name: name.to_owned(),
            fields,
        }
    }

    pub fn str(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("{}: no `{key}`", self.name))
    }

    pub fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    pub fn ip(&self, key: &str) -> IpAddr {
        self.str(key)
            .parse()
            .unwrap_or_else(|e| panic!("{}: `{key}`: {e}", self.name))
    }

    pub fn u8(&self, key: &str) -> u8 {
        self.str(key)
            .parse()
            .unwrap_or_else(|e| panic!("{}: `{key}`: {e}", self.name))
    }

    pub fn hex(&self, key: &str) -> Vec<u8> {
        hex(self.str(key))
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    let digits: String = s.split_whitespace().collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits: {s}"
    );
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}
