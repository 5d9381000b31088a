//! Every keepalived.conf from the seed documents parses, and its model and diagnostics match
//! a reviewed golden file. Regenerate with `KEEPLB_BLESS=1 cargo test -p keeplb-config --test golden`
//! and review the diff.

use std::path::{Path, PathBuf};

use keeplb_config::env::FakeEnvironment;
use keeplb_config::{DiskLoader, LoadOptions, load_with};
use serde::Serialize;

/// What a golden file records, in this order.
#[derive(Serialize)]
struct Golden<'a> {
    valid: bool,
    diagnostics: Vec<String>,
    config: &'a keeplb_config::model::Config,
}

fn seed_environment() -> FakeEnvironment {
    FakeEnvironment {
        interfaces: ["ens33", "eno16777736"].map(String::from).into(),
        ..Default::default()
    }
}

fn render(config: &Path) -> String {
    let loaded = load_with(
        &DiskLoader,
        &seed_environment(),
        config,
        &LoadOptions {
            config_id: "node1".to_owned(),
        },
    )
    .expect("fixture is readable");
    let diagnostics: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| d.one_line(&loaded.sources))
        .collect();
    // The model travels through the control API: it must read back what it writes.
    let json = serde_json::to_string(&loaded.config).expect("model serialises");
    let back: keeplb_config::model::Config =
        serde_json::from_str(&json).expect("model deserialises");
    assert_eq!(
        back,
        loaded.config,
        "{} does not round-trip",
        config.display()
    );
    let document = Golden {
        valid: loaded.is_valid(),
        diagnostics,
        config: &loaded.config,
    };
    serde_json::to_string_pretty(&document).expect("model serialises") + "\n"
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut confs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    confs.sort();
    confs
}

#[test]
fn seed_configs_match_their_golden_files() {
    let bless = std::env::var_os("KEEPLB_BLESS").is_some();
    let confs = fixtures("tests/seeds");
    assert!(confs.len() >= 8, "seed fixtures missing: {confs:?}");
    let mut mismatches = Vec::new();
    for conf in confs {
        let actual = render(&conf);
        let golden = conf.with_extension("json");
        if bless {
            std::fs::write(&golden, &actual).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!("{}:\n{actual}", golden.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatch (KEEPLB_BLESS=1 to regenerate):\n{}",
        mismatches.join("\n")
    );
}
