//! What the tests share: a configuration from text.

use std::path::Path;

use keeplb_config::model::Config;
use keeplb_config::{LoadOptions, MemoryLoader, env::AssumeValid};

/// Parses keepalived.conf `text` (no machine checks), which must have no errors.
pub fn load(text: &str) -> Config {
    let loader = MemoryLoader::new().with("/etc/keepalived/keepalived.conf", text);
    let loaded = keeplb_config::load_with(
        &loader,
        &AssumeValid,
        Path::new("/etc/keepalived/keepalived.conf"),
        &LoadOptions {
            config_id: "test".into(),
        },
    )
    .expect("in memory");
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    loaded.config
}
