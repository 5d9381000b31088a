//! `keeplb status` and the Prometheus metrics of a running director: VRRP state and
//! virtual services at a glance, over the control socket and the HTTP listener.

mod common;
use common::*;

use keeplb_testlab::Lab;

const VIP: &str = "10.65.0.10";

#[test]
fn status_and_metrics_show_vrrp_and_services() {
    let lab = Lab::new("status").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let director = lab.host("director").expect("host");
    director
        .attach(&lan, "eth0", &["10.65.0.1/24"])
        .expect("link");
    let conf = lab.dir().join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "vrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 65\n    priority 150\n    advert_int 1\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n\
             virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo wrr\n    protocol TCP\n    real_server 10.65.0.21 80 {{\n        weight 3\n        inhibit_on_failure\n        TCP_CHECK {{\n            connect_timeout 1\n        }}\n    }}\n}}\n"
        ),
    )
    .expect("config");
    let socket = lab.dir().join("control.sock");
    let keeplb = director
        .spawn(&[
            KEEPLB,
            "run",
            "-f",
            conf.to_str().expect("utf-8"),
            "--control",
            socket.to_str().expect("utf-8"),
            "--http",
            "127.0.0.1:9115",
        ])
        .expect("spawn keeplb");
    wait_for("the instance becomes master", &keeplb, || {
        holds(&director, VIP)
    });

    let status = || {
        std::process::Command::new(KEEPLB)
            .args([
                "status",
                "--json",
                "--control",
                socket.to_str().expect("utf-8"),
            ])
            .output()
            .expect("keeplb status")
    };
    let mut report = serde_json::Value::Null;
    let mut last = String::new();
    let reported = keeplb_testlab::wait_until(TIMEOUT, POLL, || {
        let out = status();
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        report = serde_json::from_slice(&out.stdout).unwrap_or_default();
        report["vrrp_instances"][0]["state"] == "MASTER"
    });
    assert!(
        reported.is_ok(),
        "status never reported the master:\n{last}"
    );
    let instance = &report["vrrp_instances"][0];
    assert_eq!(instance["name"], "VI_1");
    assert_eq!(instance["priority"], 150);
    assert_eq!(instance["virtual_addresses"][0], format!("{VIP}/24"));
    assert_eq!(instance["last_transition"]["to"], "MASTER");
    let text = String::from_utf8_lossy(&status().stdout).into_owned();
    assert!(
        text.contains("10.65.0.21"),
        "the real server is listed: {text}"
    );

    let scrape = || scrape_metrics(&director, "127.0.0.1:9115").expect("scrape");
    // The real server does not exist: its TCP_CHECK fails (after a 1 s bootstrap).
    let mut metrics = String::new();
    wait_for("a check result is exported", &keeplb, || {
        metrics = scrape();
        metrics.contains("keeplb_check_results_total{")
    });
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("keeplb_vrrp_state{vrrp_instance=\"VI_1\",state=\"MASTER\"} 1"),
        "{metrics}"
    );
    let adverts_sent = metrics
        .lines()
        .find(|l| l.starts_with("keeplb_vrrp_adverts_sent_total{vrrp_instance=\"VI_1\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no advertisement counter:\n{metrics}"));
    assert!(adverts_sent >= 1, "the master advertises: {adverts_sent}");
    assert!(
        metrics.contains("real_server=\"10.65.0.21:80\""),
        "{metrics}"
    );
    // Its checks say it is down: 0 in the metrics, and the status lists it down with its
    // configured weight, at weight 0 in the table (inhibit_on_failure).
    let down = format!(
        "keeplb_real_server_up{{service=\"TCP {VIP}:80\",real_server=\"10.65.0.21:80\"}} 0"
    );
    wait_for("the real server is down in the metrics", &keeplb, || {
        scrape().lines().any(|l| l == down)
    });
    let report: serde_json::Value = serde_json::from_slice(&status().stdout).expect("status JSON");
    let rs = &report["services"][0]["real_servers"][0];
    assert_eq!(rs["address"], "10.65.0.21", "{report:#}");
    let shown = (
        rs["healthy"].as_bool(),
        rs["weight"].as_u64(),
        rs["effective_weight"].as_u64(),
        rs["in_table"].as_bool(),
    );
    assert_eq!(
        shown,
        (Some(false), Some(3), Some(0), Some(true)),
        "{report:#}"
    );
    stop(&keeplb);
}
