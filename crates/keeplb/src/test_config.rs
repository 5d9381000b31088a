//! Configurations for the binary's unit tests, read from memory on a made-up machine.

use keeplb_config::env::FakeEnvironment;
use keeplb_config::model::Config;
use keeplb_config::{LoadOptions, MemoryLoader, load_with};

/// The configuration `text` says, which must be valid.
pub fn parse(text: &str) -> Config {
    let loaded = load_with(
        &MemoryLoader::new().with("/k.conf", text),
        &FakeEnvironment::default(),
        std::path::Path::new("/k.conf"),
        &LoadOptions {
            config_id: String::new(),
        },
    )
    .expect("loads");
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    loaded.config
}
