//! `keeplb check-config --strict` gives `keepalived -t`'s verdict on every oracle fixture,
//! with real keepalived run beside it on the same made-up machine.
//!
//! keepalived -t checks interfaces, so both run in a lab namespace that has `eth0` and
//! `eth1`, as the fixtures assume (see crates/config/tests/oracle/README.md).

use std::path::{Path, PathBuf};
use std::process::Output;

use keeplb_testlab::{Host, Lab};

const KEEPLB: &str = env!("CARGO_BIN_EXE_keeplb");

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/oracle")
}

struct Fixture {
    path: PathBuf,
    /// `valid/x.conf` or `invalid/x.conf`, as known-differences.txt names it.
    name: String,
    expect_valid: bool,
    /// Extra command-line arguments the fixture was judged with (`-i node1`).
    args: Vec<String>,
}

fn fixtures() -> Vec<Fixture> {
    let mut all = Vec::new();
    for (dir, expect_valid) in [("valid", true), ("invalid", false)] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(oracle_dir().join(dir))
            .expect("oracle fixtures")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("fixture");
            let args = text
                .lines()
                .find_map(|l| l.strip_prefix("# keepalived-args:"))
                .map(|a| a.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            let name = format!(
                "{dir}/{}",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
            );
            all.push(Fixture {
                path,
                name,
                expect_valid,
                args,
            });
        }
    }
    all
}

/// Fixtures known to disagree, with the reason (see known-differences.txt).
fn known_differences() -> Vec<(String, String)> {
    std::fs::read_to_string(oracle_dir().join("known-differences.txt"))
        .expect("known-differences.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('\t'))
        .map(|(f, why)| (f.to_owned(), why.to_owned()))
        .collect()
}

/// A host whose only interfaces besides `lo` are `eth0` and `eth1`.
fn checker_host(lab: &Lab) -> Host {
    let lan = lab.switch("lan").expect("switch");
    let host = lab.host("checker").expect("host");
    host.attach(&lan, "eth0", &["10.99.0.1/24"]).expect("eth0");
    host.attach(&lan, "eth1", &["10.99.1.1/24"]).expect("eth1");
    host
}

fn run(host: &Host, program: &str, args: &[&str]) -> Output {
    host.cmd(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (scripts/setup.sh installs it)"))
}

fn keepalived_binary() -> &'static str {
    if Path::new("/usr/sbin/keepalived").exists() {
        "/usr/sbin/keepalived"
    } else {
        "keepalived"
    }
}

#[test]
fn strict_check_config_agrees_with_keepalived_t() {
    let lab = Lab::new("oracle").expect("lab (needs root and iproute2)");
    let host = checker_host(&lab);
    let fixtures = fixtures();
    assert!(fixtures.len() >= 100, "oracle fixtures missing");
    let known = known_differences();
    let mut disagreements = Vec::new();
    for fixture in &fixtures {
        let file = fixture.path.to_str().expect("utf-8 path");
        let extra: Vec<&str> = fixture.args.iter().map(String::as_str).collect();

        let mut keepalived_args = vec!["-t", "-f", file];
        keepalived_args.extend(&extra);
        let keepalived = run(&host, keepalived_binary(), &keepalived_args);

        let mut keeplb_args = vec!["check-config", "--strict"];
        keeplb_args.extend(&extra);
        keeplb_args.push(file);
        let keeplb = run(&host, KEEPLB, &keeplb_args);

        let keepalived_valid = keepalived.status.success();
        let keeplb_valid = keeplb.status.success();
        if keepalived_valid != fixture.expect_valid {
            disagreements.push(format!(
                "{file}: the fixture is stale: keepalived -t now says {}\n{}",
                if keepalived_valid { "valid" } else { "invalid" },
                String::from_utf8_lossy(&keepalived.stderr)
            ));
        }
        let listed = known.iter().find(|(name, _)| *name == fixture.name);
        if let Some((_, why)) = listed {
            if keeplb_valid == keepalived_valid {
                disagreements.push(format!(
                    "{file}: now agrees with keepalived -t; delete its line from known-differences.txt ({why})"
                ));
            }
            continue;
        }
        if keeplb_valid != keepalived_valid {
            disagreements.push(format!(
                "{file}: keepalived -t says {}, keeplb check-config --strict says {}\n{}",
                if keepalived_valid { "valid" } else { "invalid" },
                if keeplb_valid { "valid" } else { "invalid" },
                String::from_utf8_lossy(&keeplb.stderr)
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// Without `--strict`, a config keepalived accepts is accepted, and one it rejects gets at
/// least a warning: nothing keepalived complains about passes in silence.
#[test]
fn default_mode_reports_everything_keepalived_rejects() {
    let lab = Lab::new("oracle-default").expect("lab (needs root and iproute2)");
    let host = checker_host(&lab);
    let known = known_differences();
    let mut problems = Vec::new();
    for fixture in fixtures() {
        if known.iter().any(|(name, _)| *name == fixture.name) {
            continue;
        }
        let file = fixture.path.to_str().expect("utf-8 path");
        let mut args = vec!["check-config"];
        args.extend(fixture.args.iter().map(String::as_str));
        args.push(file);
        let out = run(&host, KEEPLB, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reported = stderr.contains("error[") || stderr.contains("warning[");
        if fixture.expect_valid && !out.status.success() {
            problems.push(format!(
                "{file}: valid for keepalived, rejected by keeplb:\n{stderr}"
            ));
        }
        if !fixture.expect_valid && !reported {
            problems.push(format!(
                "{file}: rejected by keepalived, keeplb reports nothing:\n{stderr}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
