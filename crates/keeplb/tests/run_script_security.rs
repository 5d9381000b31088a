//! `enable_script_security` on the health-check side of `keeplb run`: scripts a non-root
//! user could modify are not run as root, as keepalived's checker disables them
//! (check_misc.c `check_misc_script_security`, check_data.c `check_check_script_security`),
//! while root-owned scripts under the sticky `/tmp` run.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const DIRECTOR: &str = "10.65.0.1";
const VIP: &str = "10.65.0.10";
const CLIENT: &str = "10.65.0.100";
const REAL_SERVERS: [(&str, &str); 3] = [
    ("rs1", "10.65.0.11"),
    ("rs2", "10.65.0.12"),
    ("rs3", "10.65.0.13"),
];

/// A real server whose only checker is a MISC_CHECK; `alpha` starts it down, so its
/// first successful check brings it up and runs its `notify_up`.
fn real_server(ip: &str, notify_up: &str, misc_path: &str) -> String {
    format!(
        "    real_server {ip} 80 {{\n        weight 1\n        notify_up \"{notify_up}\"\n        MISC_CHECK {{\n            misc_path \"{misc_path}\"\n            misc_timeout 2\n            alpha\n            warmup 0\n        }}\n    }}\n"
    )
}

fn make_dir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_owned()
}

#[test]
fn insecure_checker_scripts_are_not_run_as_root() {
    let site = Site::new("script-security", CLIENT, &[DIRECTOR, VIP], &REAL_SERVERS);
    let dir = site.lab.dir().to_owned();
    let runs = dir.join("runs");
    let log_run = |what: &str| format!("echo \"{what}\" >> {}\nexit 0", runs.display());

    // Root-owned scripts in a root-owned directory under /tmp (sticky): secure.
    let safe = make_dir(&dir.join("safe"), 0o755);
    let ok = safe.join("ok.sh");
    write_script(&ok, &log_run("$1"));
    let up = safe.join("up.sh");
    write_script(&up, &log_run("up $1"));

    // The same, in a directory anyone may write to: whoever can write there decides
    // what root runs.
    let world = make_dir(&dir.join("ww"), 0o777);
    let insecure_misc = world.join("misc.sh");
    write_script(&insecure_misc, &log_run("insecure misc"));
    let insecure_up = world.join("up.sh");
    write_script(&insecure_up, &log_run("insecure up $1"));

    let conf = format!(
        "global_defs {{\n    enable_script_security\n    script_user root\n}}\nvirtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo rr\n    protocol TCP\n{}{}{}}}\n",
        real_server(
            REAL_SERVERS[0].1,
            &format!("{} rs1", up.display()),
            &insecure_misc.display().to_string()
        ),
        real_server(
            REAL_SERVERS[1].1,
            &format!("{} rs2", insecure_up.display()),
            &format!("{} misc-rs2", ok.display())
        ),
        real_server(
            REAL_SERVERS[2].1,
            &format!("{} rs3", up.display()),
            &format!("{} misc-rs3", ok.display())
        ),
    );
    let keeplb = site.run(&conf);

    // keepalived's log lines, naming the scripts.
    let disabled_misc = format!(
        "Disabling misc script '{}' due to insecure",
        insecure_misc.display()
    );
    let disabled_up = format!(
        "Unsafe permissions found for script '{}' - disabling.",
        insecure_up.display()
    );
    wait_for("the insecure scripts are disabled", &keeplb, || {
        let log = keeplb.output_so_far().stderr;
        log.contains(&disabled_misc) && log.contains(&disabled_up)
    });

    // rs2 and rs3 came up through their (secure) checks; rs3's secure notify_up ran.
    // rs2's insecure notify_up was due at the same transition: give it two more check
    // rounds to show up, had it run.
    let lines = || {
        read(&runs)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    wait_for("rs3's notify_up and rs2's checks", &keeplb, || {
        let lines = lines();
        lines.iter().any(|l| l == "up rs3") && lines.iter().any(|l| l == "misc-rs2")
    });
    let rs2_checks = lines().iter().filter(|l| *l == "misc-rs2").count();
    wait_for("two more rounds of rs2's check", &keeplb, || {
        lines().iter().filter(|l| *l == "misc-rs2").count() >= rs2_checks + 2
    });
    let ran = lines();
    assert!(
        !ran.iter().any(|l| l.starts_with("insecure")),
        "an insecure script ran as root: {ran:?}\n{}",
        keeplb.output_so_far()
    );
    stop(&keeplb);
}

/// Without `enable_script_security` keepalived still disables a VRRP script it cannot
/// find, with its words, and the instance runs without it (rather than failing the
/// script at every check).
#[test]
fn a_missing_vrrp_script_is_disabled_even_without_script_security() {
    let lab =
        keeplb_testlab::Lab::new("run-missing-script").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let host = lab.host("dir").expect("host");
    host.attach(&lan, "eth0", &["10.65.1.1/24"]).expect("link");
    let missing = lab.dir().join("no-such-check.sh");
    let conf = lab.dir().join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "vrrp_script chk {{\n    script \"{}\"\n    interval 1\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 65\n    \
             priority 100\n    advert_int 1\n    track_script {{\n        chk\n    }}\n    \
             virtual_ipaddress {{\n        10.65.1.100/24\n    }}\n}}\n",
            missing.display()
        ),
    )
    .expect("write config");
    let keeplb = start(&host, &conf);
    let said = format!(
        "check_script_secure could not find script '{}' - disabling",
        missing.display()
    );
    wait_for("keepalived's words", &keeplb, || {
        keeplb.output_so_far().stderr.contains(&said)
    });
    wait_for("the instance becomes master without it", &keeplb, || {
        holds(&host, "10.65.1.100")
    });
    stop(&keeplb);
}
