//! The configuration commands as a user runs them: exit codes, diagnostics and JSON.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const KEEPLB: &str = env!("CARGO_BIN_EXE_keeplb");

/// A config file in a directory of its own, removed when dropped.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "keeplb-cli-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, text).expect("write config");
        ConfigFile { dir, path }
    }

    fn with_file(self, name: &str, text: &str) -> Self {
        std::fs::write(self.dir.join(name), text).expect("write include");
        self
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn keeplb(args: &[&str]) -> Output {
    Command::new(KEEPLB)
        .args(args)
        .output()
        .expect("run keeplb")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No interface is named, so the verdict does not depend on this machine's interfaces.
const VALID: &str = "virtual_server 10.0.0.100 80 {\n  lb_algo wrr\n  lb_kind DR\n  protocol TCP\n  persistence_timeout\n  real_server 10.0.1.1 80 {\n    weight 3\n    TCP_CHECK {\n      connect_timeout 3\n    }\n  }\n}\n";

#[test]
fn valid_config_exits_zero() {
    let config = ConfigFile::new(VALID);
    let out = keeplb(&["check-config", "-f", config.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("configuration is valid"));
}

#[test]
fn error_exits_non_zero_with_file_line_column_and_snippet() {
    let config = ConfigFile::new(&VALID.replace("weight 3", "weight -3"));
    let path = config.path.to_str().unwrap();
    let out = keeplb(&["check-config", path]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains(&format!("{path}:7:12")), "{text}");
    assert!(
        text.contains("weight -3"),
        "the snippet shows the line: {text}"
    );
    assert!(text.contains("^^"), "the snippet marks the value: {text}");
}

#[test]
fn warnings_pass_unless_strict() {
    let config = ConfigFile::new(&VALID.replace("lb_kind DR\n", ""));
    let path = config.path.to_str().unwrap();
    let out = keeplb(&["check-config", path]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("warning[default-lb-kind]"));
    let strict = keeplb(&["check-config", "--strict", path]);
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn errors_in_an_included_file_name_that_file() {
    let config = ConfigFile::new("include rs.conf\n")
        .with_file("rs.conf", "\nvirtual_server 10.0.0.1 99999 {\n}\n");
    let out = keeplb(&["check-config", config.path.to_str().unwrap()]);
    assert!(!out.status.success());
    let included = config.dir.join("rs.conf");
    assert!(
        stderr(&out).contains(&format!("{}:2:25", included.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dump_config_prints_keepalived_keywords_as_json() {
    let config = ConfigFile::new(VALID);
    let out = keeplb(&["dump-config", "-f", config.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let vs = &json["virtual_server"][0];
    assert_eq!(vs["lb_algo"], "wrr");
    assert_eq!(vs["lb_kind"], "DR");
    assert_eq!(vs["persistence_timeout"], 360);
    assert_eq!(vs["delay_loop"], 60.0);
    let rs = &vs["real_server"][0];
    assert_eq!(rs["weight"], 3);
    assert_eq!(rs["checkers"][0]["type"], "TCP_CHECK");
    assert_eq!(rs["checkers"][0]["connect_timeout"], 3.0);
    assert_eq!(rs["checkers"][0]["retry"], 1);
}

#[test]
fn config_id_selects_lines() {
    let config =
        ConfigFile::new(&VALID.replace("weight 3", "@alpha weight 5\n    @^alpha weight 7"));
    let weight = |id: &str| {
        let out = keeplb(&["dump-config", "-i", id, "-f", config.path.to_str().unwrap()]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        json["virtual_server"][0]["real_server"][0]["weight"].clone()
    };
    assert_eq!(weight("alpha"), 5);
    assert_eq!(weight("beta"), 7);
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = keeplb(&["check-config", "/nonexistent/keepalived.conf"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot read configuration file /nonexistent/keepalived.conf"));
}

#[test]
fn run_refuses_to_start_on_an_invalid_config() {
    let broken = ConfigFile::new("vrrp_instance {\n");
    let out = keeplb(&["run", "-f", broken.path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not starting"));
}
