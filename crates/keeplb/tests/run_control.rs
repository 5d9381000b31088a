//! Who may manage a running `keeplb run`: a second daemon on the same control socket
//! refuses to start and leaves the first alone; the HTTP API changes nothing without a
//! bearer token, and its status codes say how a request went.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use keeplb_testlab::{Host, Lab, Process, Signal};

const VIP: &str = "10.67.0.10";
const HTTP: &str = "127.0.0.1:9900";

/// A director holding `VIP` through a VRRP master, serving a virtual server on it.
fn director(lab: &Lab) -> (Host, std::path::PathBuf) {
    let lan = lab.switch("lan").expect("switch");
    let host = lab.host("director").expect("host");
    host.attach(&lan, "eth0", &["10.67.0.1/24"]).expect("link");
    let conf = lab.dir().join("keepalived.conf");
    write_config(
        &conf,
        &format!(
            "vrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 67\n    priority 150\n    advert_int 1\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n\
             virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n    real_server 10.67.0.21 80 {{\n        weight 1\n    }}\n}}\n"
        ),
    );
    (host, conf)
}

/// `keeplb run` on `host` with `extra` arguments, NO_COLOR unset (the logs must be plain
/// because they go to a file, not because of the environment).
fn run(host: &Host, conf: &Path, control: &Path, extra: &[&str]) -> Process {
    let mut cmd = host.cmd(KEEPLB);
    cmd.args(["run", "-f", path(conf), "--control", path(control)])
        .args(extra)
        .env_remove("NO_COLOR");
    host.spawn_command(cmd).expect("spawn keeplb run")
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `keeplb status --json` over `control`, when the daemon answers.
fn status(control: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new(KEEPLB)
        .args(["status", "--json", "--control", path(control)])
        .output()
        .expect("keeplb status");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("JSON status"))
}

fn service_count(control: &Path) -> usize {
    status(control)
        .and_then(|s| s["services"].as_array().map(Vec::len))
        .expect("the daemon answers")
}

/// `POST /api` with `body` from inside `host`: the status code and the body.
fn post(host: &Host, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /api HTTP/1.1\r\nHost: keeplb\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = host
        .in_netns(|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect(HTTP)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })
        .expect("netns")
        .expect("HTTP exchange");
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn adm(command: &str) -> String {
    format!(r#"{{"version":1,"request":"adm","command":{command}}}"#)
}

const FLUSH: &str = r#"{"command":"flush"}"#;
const STATUS: &str = r#"{"version":1,"request":"status"}"#;
const RELOAD: &str = r#"{"version":1,"request":"reload"}"#;

#[test]
fn a_second_daemon_refuses_to_start_and_leaves_the_first_alone() {
    let lab = Lab::new("ctl-twice").expect("lab (needs root and iproute2)");
    let (host, conf) = director(&lab);
    let control = lab.dir().join("control.sock");
    let first = run(&host, &conf, &control, &[]);
    wait_for("the first daemon becomes master", &first, || {
        holds(&host, VIP)
            && status(&control).is_some_and(|s| s["vrrp_instances"][0]["state"] == "MASTER")
    });

    let second = run(&host, &conf, &control, &[]);
    let exit = second
        .wait_timeout(TIMEOUT)
        .expect("wait")
        .unwrap_or_else(|| {
            panic!(
                "the second daemon keeps running\n{}",
                second.output_so_far()
            )
        });
    let output = second.output_so_far();
    assert!(!exit.success(), "{output}");
    assert!(
        output.stderr.contains("daemon is already running")
            && output.stderr.contains(path(&control)),
        "{output}"
    );
    // refused before anything else: no listener tried (its port is the first's), no VIP
    // cleaned up
    for touched in ["not served", "removing stale virtual address"] {
        assert!(!output.stderr.contains(touched), "{output}");
    }
    assert!(holds(&host, VIP), "the master's VIP stays\n{output}");
    let report = status(&control).expect("the first daemon still answers");
    assert_eq!(report["vrrp_instances"][0]["state"], "MASTER");
    assert_eq!(report["services"].as_array().map(Vec::len), Some(1));

    // A SIGKILLed daemon leaves a socket nobody answers on: the next one reclaims it.
    first.kill().expect("SIGKILL");
    assert!(control.exists(), "SIGKILL leaves the socket behind");
    let third = run(&host, &conf, &control, &[]);
    // (master again: by then it handles SIGTERM)
    wait_for("a new daemon reclaims the stale socket", &third, || {
        status(&control).is_some_and(|s| s["vrrp_instances"][0]["state"] == "MASTER")
    });
    stop(&third);
    assert!(!control.exists(), "a clean stop removes the socket");
}

#[test]
fn without_a_token_the_http_api_is_read_only() {
    let lab = Lab::new("ctl-ro").expect("lab (needs root and iproute2)");
    let (host, conf) = director(&lab);
    let control = lab.dir().join("control.sock");
    let daemon = run(&host, &conf, &control, &["--http", HTTP]);
    wait_for("the daemon answers", &daemon, || {
        status(&control).is_some_and(|s| s["vrrp_instances"][0]["state"] == "MASTER")
    });
    for write in [adm(FLUSH), RELOAD.to_owned()] {
        let (code, body) = post(&host, None, &write);
        assert_eq!(code, 403, "{write}: {body}");
        assert!(
            body.contains(r#""kind":"forbidden""#) && body.contains("--http-token-file"),
            "{body}"
        );
    }
    assert_eq!(service_count(&control), 1, "the flush was not applied");
    let (code, body) = post(&host, None, STATUS);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""response":"status""#), "{body}");

    // stderr is a file here: plain text, no colour codes
    daemon.signal(Signal::SIGTERM).expect("SIGTERM");
    daemon.wait_timeout(TIMEOUT).expect("wait").expect("exits");
    let logs = daemon.output_so_far().stderr;
    assert!(logs.contains("control socket"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape codes in the logs: {logs:?}"
    );
}

#[test]
fn with_a_token_the_http_api_changes_the_table_and_errors_have_error_statuses() {
    let lab = Lab::new("ctl-token").expect("lab (needs root and iproute2)");
    let (host, conf) = director(&lab);
    let control = lab.dir().join("control.sock");
    let token_file = lab.dir().join("token");
    std::fs::write(&token_file, "t0ken-67\n").expect("token file");
    let daemon = run(
        &host,
        &conf,
        &control,
        &["--http", HTTP, "--http-token-file", path(&token_file)],
    );
    wait_for("the daemon answers", &daemon, || {
        status(&control).is_some_and(|s| s["vrrp_instances"][0]["state"] == "MASTER")
    });
    let token = Some("t0ken-67");
    assert_eq!(post(&host, None, STATUS).0, 401);

    let missing = adm(
        r#"{"command":"delete_service","service":{"kind":"addr","protocol":"tcp","address":"10.67.0.99","port":80}}"#,
    );
    let (code, body) = post(&host, token, &missing);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("No such service"), "{body}");
    let again = adm(&format!(
        r#"{{"command":"add_service","service":{{"kind":"addr","protocol":"tcp","address":"{VIP}","port":80,"scheduler":"rr","netmask":"255.255.255.255"}}}}"#
    ));
    let (code, body) = post(&host, token, &again);
    assert_eq!(code, 409, "{body}");
    assert_eq!(post(&host, token, "not json").0, 400);

    let (code, body) = post(&host, token, &adm(FLUSH));
    assert_eq!(code, 200, "{body}");
    assert_eq!(service_count(&control), 0, "the flush was applied");

    // Reloads come last: a valid one answers before the director has reconciled (it does
    // once its checks wind down), which would race with the flush above. An invalid file
    // is rejected with its diagnostics, and the running configuration stays.
    let valid = std::fs::read_to_string(&conf).expect("config");
    write_config(&conf, "vrrp_instance {\n");
    let (code, body) = post(&host, token, RELOAD);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains(r#""kind":"config_rejected""#), "{body}");
    write_config(&conf, &valid);
    assert_eq!(
        post(&host, token, RELOAD),
        (
            200,
            "{\"version\":1,\"response\":\"reloaded\"}\n".to_owned()
        )
    );

    stop(&daemon);
}

/// A reload whose new virtual server cannot listen (its port is taken) applies the rest,
/// as keepalived does, and `keeplb reload` says what failed and exits 1.
#[test]
fn a_reload_applied_in_part_says_what_failed() {
    let lab = Lab::new("ctl-partial").expect("lab (needs root and iproute2)");
    let (host, conf) = director(&lab);
    let control = lab.dir().join("control.sock");
    let daemon = run(&host, &conf, &control, &[]);
    wait_for("the daemon answers", &daemon, || status(&control).is_some());
    let _taken = host
        .in_netns(|| std::net::TcpListener::bind("10.67.0.1:8080"))
        .expect("netns")
        .expect("a program of the director holds port 8080");
    let text = std::fs::read_to_string(&conf).expect("config");
    write_config(
        &conf,
        &format!(
            "{text}virtual_server 10.67.0.1 8080 {{\n    protocol TCP\n}}\n\
             virtual_server 10.67.0.1 8081 {{\n    protocol TCP\n}}\n"
        ),
    );
    let reload = std::process::Command::new(KEEPLB)
        .args(["reload", "--control", path(&control)])
        .output()
        .expect("keeplb reload");
    let said = String::from_utf8_lossy(&reload.stderr);
    assert_eq!(reload.status.code(), Some(1), "{said}");
    assert!(
        said.contains("applied in part")
            && said.contains("10.67.0.1:8080")
            && said.contains("not served"),
        "{said}"
    );
    assert_eq!(
        service_count(&control),
        2,
        "the rest is applied: 8081 is served"
    );
    stop(&daemon);
}

#[test]
fn a_sigterm_as_soon_as_the_control_socket_exists_stops_the_daemon_in_order() {
    use std::os::unix::process::ExitStatusExt;
    let lab = Lab::new("ctl-early-term").expect("lab (needs root and iproute2)");
    let (host, conf) = director(&lab);
    let control = lab.dir().join("control.sock");
    let daemon = run(&host, &conf, &control, &[]);
    // The moment a test or systemd could see the daemon: it is still starting (its
    // VRRP instance and virtual server come after), which is the point.
    let started = std::time::Instant::now();
    while !control.exists() {
        assert!(
            started.elapsed() < TIMEOUT,
            "no control socket\n{}",
            daemon.output_so_far()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    daemon.signal(Signal::SIGTERM).expect("SIGTERM");
    let exit = daemon
        .wait_timeout(TIMEOUT)
        .expect("wait")
        .unwrap_or_else(|| panic!("the daemon keeps running\n{}", daemon.output_so_far()));
    let output = daemon.output_so_far();
    assert_eq!(
        exit.signal(),
        None,
        "killed by the signal, no clean-up\n{output}"
    );
    assert!(exit.success(), "{output}");
    assert!(output.stderr.contains("SIGTERM"), "{output}");
    assert!(!control.exists(), "the control socket is removed\n{output}");
    assert!(!holds(&host, VIP), "no VIP is left behind\n{output}");
}
