//! Preprocessor + parser + model + validation + diagnostic rendering on arbitrary input.
//! Must never panic, hang or allocate without bound.
//!
//! Run from fuzz/: `cargo fuzz run -s none config corpus/config seeds/config -- -max_total_time=600`.

#![no_main]

use std::path::Path;

use keeplb_config::env::FakeEnvironment;
use keeplb_config::{LoadOptions, MemoryLoader, load_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A 0xFF byte separates the main file from a second file the main one may include
    // (0xFF never occurs in UTF-8 text).
    let mut parts = data.splitn(2, |&b| b == 0xff);
    let main = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let included = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let loader = MemoryLoader::new()
        .with("/k/keepalived.conf", main.into_owned())
        .with("/k/inc.conf", included.into_owned());
    let machine = FakeEnvironment {
        interfaces: ["eth0".to_owned()].into(),
        ..Default::default()
    };
    let Ok(loaded) = load_with(
        &loader,
        &machine,
        Path::new("/k/keepalived.conf"),
        &LoadOptions {
            config_id: "node1".to_owned(),
        },
    ) else {
        return;
    };
    for diagnostic in loaded.diagnostics.iter() {
        let _ = diagnostic.render(&loaded.sources);
        let _ = diagnostic.one_line(&loaded.sources);
    }
    let _ = serde_json::to_string(&loaded.config);
});
