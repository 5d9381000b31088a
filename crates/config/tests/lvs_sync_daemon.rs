//! global_defs `lvs_sync_daemon`: every option, keepalived 2.2.7's defaults, and its reports
//! located at `file:line:column` (keepalived's words are in the messages).

use std::net::IpAddr;
use std::path::Path;

use keeplb_config::env::FakeEnvironment;
use keeplb_config::model::LvsSyncDaemon;
use keeplb_config::{LoadOptions, Loaded, MemoryLoader, Severity, load_with};

const FILE: &str = "/etc/keepalived/sync.conf";

/// `global_defs` holding `line` (line 2), then instance VI_1 (VRID 51) on eth0.
fn check(line: &str) -> Loaded {
    check_with_instance(line, "")
}

/// As [`check`], with `extra` as the first line of VI_1 (line 5).
fn check_with_instance(line: &str, extra: &str) -> Loaded {
    let text = format!(
        "global_defs {{\n    {line}\n}}\nvrrp_instance VI_1 {{\n    {extra}\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {{\n        10.0.0.100/24\n    }}\n}}\n"
    );
    let machine = FakeEnvironment {
        interfaces: ["eth0", "eth1"].map(String::from).into(),
        ..Default::default()
    };
    let options = LoadOptions {
        config_id: "node1".to_owned(),
    };
    load_with(
        &MemoryLoader::new().with(FILE, text),
        &machine,
        Path::new(FILE),
        &options,
    )
    .expect("the file is in memory")
}

fn daemon(loaded: &Loaded) -> Option<LvsSyncDaemon> {
    loaded.config.global_defs.lvs_sync_daemon.clone()
}

/// `severity code line:column message` of every diagnostic.
fn reports(loaded: &Loaded) -> Vec<String> {
    loaded
        .diagnostics
        .iter()
        .map(|d| {
            let at = d.primary.as_ref().map_or_else(String::new, |p| {
                let location = loaded.sources.location(p.span).to_string();
                location
                    .strip_prefix(&format!("{FILE}:"))
                    .unwrap_or(&location)
                    .to_owned()
            });
            format!("{} {} {at} {}", d.severity, d.code, d.message)
        })
        .collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

#[test]
fn bare_keyword_takes_the_instance_vrid_and_the_kernel_defaults() {
    let loaded = check("lvs_sync_daemon eth0 VI_1");
    assert_eq!(reports(&loaded), Vec::<String>::new());
    assert_eq!(
        daemon(&loaded),
        Some(LvsSyncDaemon {
            interface: "eth0".into(),
            vrrp_instance: Some("VI_1".into()),
            sync_id: 51,
            maxlen: None,
            port: 8848,
            ttl: 1,
            group: ip("224.0.0.81"),
        })
    );
}

#[test]
fn every_option_is_read() {
    let loaded =
        check("lvs_sync_daemon eth1 VI_1 id 7 maxlen 1400 port 9000 ttl 3 group 239.1.2.3");
    assert_eq!(reports(&loaded), Vec::<String>::new());
    assert_eq!(
        daemon(&loaded),
        Some(LvsSyncDaemon {
            interface: "eth1".into(),
            vrrp_instance: Some("VI_1".into()),
            sync_id: 7,
            maxlen: Some(1400),
            port: 9000,
            ttl: 3,
            group: ip("239.1.2.3"),
        })
    );
}

#[test]
fn range_limits_are_keepalived_s() {
    let low = daemon(&check(
        "lvs_sync_daemon eth0 VI_1 id 0 maxlen 1 port 1 ttl 1",
    ));
    let low = low.expect("accepted");
    assert_eq!(
        (low.sync_id, low.maxlen, low.port, low.ttl),
        (0, Some(1), 1, 1)
    );
    let high = check("lvs_sync_daemon eth0 VI_1 id 255 maxlen 65507 port 65535 ttl 255");
    assert_eq!(reports(&high), Vec::<String>::new());
    let high = daemon(&high).expect("accepted");
    assert_eq!(
        (high.sync_id, high.maxlen, high.port, high.ttl),
        (255, Some(65507), 65535, 255)
    );
}

#[test]
fn options_in_any_order_with_inst_instead_of_the_positional_name() {
    let loaded = check("lvs_sync_daemon eth0 group ff02::81 ttl 4 inst VI_1");
    assert_eq!(reports(&loaded), Vec::<String>::new());
    let d = daemon(&loaded).expect("accepted");
    assert_eq!(
        (d.vrrp_instance.as_deref(), d.sync_id, d.ttl, d.group),
        (Some("VI_1"), 51, 4, ip("ff02::81"))
    );
}

#[test]
fn without_an_instance_the_sync_id_is_zero() {
    let loaded = check("lvs_sync_daemon eth0");
    assert_eq!(reports(&loaded), Vec::<String>::new());
    let d = daemon(&loaded).expect("accepted");
    assert_eq!((d.vrrp_instance, d.sync_id), (None, 0));
}

#[test]
fn group_loses_a_mask_or_range_suffix() {
    let d = daemon(&check("lvs_sync_daemon eth0 VI_1 group 239.1.1.1/24")).expect("accepted");
    assert_eq!(d.group, ip("239.1.1.1"));
}

#[test]
fn positional_sync_id_is_taken_with_a_warning() {
    let loaded = check("lvs_sync_daemon eth0 VI_1 9");
    assert_eq!(
        reports(&loaded),
        ["warning deprecated-syntax 2:31 Please use keyword \"id\" before lvs_sync_daemon SYNCID"]
    );
    assert_eq!(daemon(&loaded).map(|d| d.sync_id), Some(9));
}

#[test]
fn invalid_values_are_ignored_and_located() {
    let loaded = check("lvs_sync_daemon eth0 VI_1 id 256 maxlen 0 port 70000 ttl x group 10.0.0.1");
    assert_eq!(
        reports(&loaded),
        [
            "error out-of-range 2:34 Invalid syncid (256)",
            "error out-of-range 2:45 Invalid lvs_sync_daemon maxlen (0)",
            "error out-of-range 2:52 Invalid lvs_sync_daemon port (70000)",
            "error invalid-number 2:62 Invalid lvs_sync_daemon ttl (x)",
            "error invalid-address 2:70 lvs_sync_daemon group address 10.0.0.1 is not multicast - ignoring",
        ]
    );
    assert!(!loaded.is_valid());
    // Every value falls back to its default.
    assert_eq!(daemon(&loaded), daemon(&check("lvs_sync_daemon eth0 VI_1")));
}

#[test]
fn negative_numbers_and_bad_groups_are_refused() {
    let loaded = check("lvs_sync_daemon eth0 VI_1 port -1 group bogus group fe80::1");
    assert_eq!(
        reports(&loaded),
        [
            "error invalid-number 2:36 Invalid lvs_sync_daemon port (-1)",
            "error invalid-address 2:45 Invalid lvs_sync_daemon group (bogus) - ignoring",
            "error invalid-address 2:57 lvs_sync_daemon group address fe80::1 is not multicast - ignoring",
        ]
    );
}

#[test]
fn a_later_invalid_group_forgets_an_earlier_valid_one() {
    let d = daemon(&check(
        "lvs_sync_daemon eth0 VI_1 group 239.1.1.1 group bogus",
    ));
    assert_eq!(d.map(|d| d.group), Some(ip("224.0.0.81")));
}

#[test]
fn missing_values_are_reported_at_the_option() {
    for (option, severity) in [
        ("id", "warning"),
        ("maxlen", "error"),
        ("port", "error"),
        ("ttl", "error"),
        ("group", "error"),
        ("inst", "error"),
    ] {
        let loaded = check(&format!("lvs_sync_daemon eth0 VI_1 {option}"));
        let all = reports(&loaded);
        assert_eq!(all.len(), 1, "{option}: {all:?}");
        assert!(
            all[0].starts_with(&format!("{severity} missing-value 2:31 ")),
            "{option}: {all:?}"
        );
        // The rest of the keyword still holds.
        assert_eq!(daemon(&loaded).map(|d| d.sync_id), Some(51), "{option}");
    }
}

#[test]
fn unknown_option_words_are_reported_and_skipped() {
    let loaded = check("lvs_sync_daemon eth0 VI_1 id 4 bogus ttl 2");
    assert_eq!(
        reports(&loaded),
        ["warning unknown-option 2:36 Unknown option bogus specified for lvs_sync_daemon"]
    );
    let d = daemon(&loaded).expect("accepted");
    assert_eq!((d.sync_id, d.ttl), (4, 2));
    // keepalived reads the third word as a positional sync id, the fourth as unknown.
    let loaded = check("lvs_sync_daemon eth0 VI_1 foo 1");
    assert_eq!(
        reports(&loaded),
        [
            "error invalid-number 2:31 Invalid syncid (foo)",
            "warning unknown-option 2:35 Unknown option 1 specified for lvs_sync_daemon",
        ]
    );
}

#[test]
fn interface_is_required_and_limited_to_fifteen_bytes() {
    let loaded = check("lvs_sync_daemon");
    assert_eq!(
        reports(&loaded),
        ["error missing-value 2:5 lvs_sync_daemon requires interface"]
    );
    assert_eq!(daemon(&loaded), None);
    let loaded = check("lvs_sync_daemon eth0123456789abc VI_1");
    assert_eq!(
        reports(&loaded),
        [
            "error invalid-value 2:21 lvs_sync_daemon interface name 'eth0123456789abc' too long - ignoring"
        ]
    );
    assert_eq!(daemon(&loaded), None);
    // 15 bytes fit (and the interface is missing here: a note only).
    let loaded = check("lvs_sync_daemon eth0123456789ab VI_1");
    assert_eq!(
        reports(&loaded),
        [
            "note missing-interface 2:21 lvs_sync_daemon interface `eth0123456789ab` does not exist on this machine"
        ]
    );
    assert!(loaded.is_valid());
    assert!(daemon(&loaded).is_some());
}

#[test]
fn an_unknown_instance_clears_the_sync_daemon_with_a_note() {
    let loaded = check("lvs_sync_daemon eth0 VI_9 id 3");
    assert_eq!(
        reports(&loaded),
        [
            "note undefined-reference 2:26 Unable to find vrrp instance VI_9 for lvs_syncd - clearing lvs_syncd config"
        ]
    );
    assert!(loaded.is_valid(), "keepalived -t accepts it");
    assert_eq!(daemon(&loaded), None);
}

#[test]
fn second_definitions_are_ignored() {
    let text = "lvs_sync_daemon eth0 VI_1 id 5\n    lvs_sync_daemon eth1 VI_1";
    let loaded = check(text);
    assert_eq!(
        reports(&loaded),
        ["warning duplicate-keyword 3:5 lvs_sync_daemon has already been specified"]
    );
    let d = daemon(&loaded).expect("the first one holds");
    assert_eq!((d.interface.as_str(), d.sync_id), ("eth0", 5));
    let loaded = check("lvs_sync_daemon eth0 VI_1 inst VI_2");
    assert_eq!(
        reports(&loaded),
        [
            "warning duplicate-keyword 2:36 lvs_sync_daemon vrrp instance has already been specified as VI_1"
        ]
    );
}

#[test]
fn deprecated_instance_keyword_sets_the_daemon_with_sync_id_zero() {
    let loaded = check_with_instance("router_id r1", "lvs_sync_daemon_interface eth1");
    let codes: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Warning)
        .map(|d| d.code)
        .collect();
    assert_eq!(codes, ["deprecated-keyword"]);
    let d = daemon(&loaded).expect("modelled");
    assert_eq!(
        (d.interface.as_str(), d.vrrp_instance.as_deref(), d.sync_id),
        ("eth1", Some("VI_1"), 0)
    );
    // The global keyword, read first, wins.
    let loaded = check_with_instance(
        "lvs_sync_daemon eth0 VI_1",
        "lvs_sync_daemon_interface eth1",
    );
    assert!(
        reports(&loaded)
            .iter()
            .any(|r| r
                .contains("(VI_1) lvs_sync_daemon_interface has already been specified as eth0")),
        "{:?}",
        reports(&loaded)
    );
    assert_eq!(
        daemon(&loaded).map(|d| d.interface),
        Some("eth0".to_owned())
    );
    // Without its interface keepalived stops ("missing a parameter").
    let loaded = check_with_instance("router_id r1", "lvs_sync_daemon_interface");
    assert!(
        reports(&loaded)
            .iter()
            .any(|r| r.starts_with("error missing-value 5:5 ")),
        "{:?}",
        reports(&loaded)
    );
    assert_eq!(daemon(&loaded), None);
}
