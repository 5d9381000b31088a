//! One test per grammar feature of keepalived.conf, read from memory with a made-up machine
//! (interfaces eth0 and eth1), so nothing here touches the network or the disk.

use std::path::Path;

use keeplb_config::env::FakeEnvironment;
use keeplb_config::model::{
    CheckKind, InitialState, LbKind, PersistenceEngine, Protocol, SchedulerKind, Tunnel,
    TunnelChecksum, TunnelType, VirtualServerKey,
};
use keeplb_config::{LoadOptions, Loaded, MemoryLoader, Severity, load_with};

const MAIN: &str = "/etc/keepalived/keepalived.conf";

fn machine() -> FakeEnvironment {
    FakeEnvironment {
        interfaces: ["eth0", "eth1"].map(String::from).into(),
        ..Default::default()
    }
}

fn load_files(files: &[(&str, &str)], config_id: &str) -> Loaded {
    let loader = files
        .iter()
        .fold(MemoryLoader::new(), |l, (path, text)| l.with(*path, *text));
    load_with(
        &loader,
        &machine(),
        Path::new(files[0].0),
        &LoadOptions {
            config_id: config_id.to_owned(),
        },
    )
    .expect("main file exists")
}

fn load(text: &str) -> Loaded {
    load_files(&[(MAIN, text)], "node1")
}

/// `code@file:line:column` of every warning and error, for compact assertions.
fn problems(loaded: &Loaded) -> Vec<String> {
    located(loaded, |severity| severity != Severity::Note)
}

/// `code@file:line:column` of every diagnostic whose severity `keep` accepts.
fn located(loaded: &Loaded, keep: impl Fn(Severity) -> bool) -> Vec<String> {
    loaded
        .diagnostics
        .iter()
        .filter(|d| keep(d.severity))
        .map(|d| {
            let at = d
                .primary
                .as_ref()
                .map(|p| loaded.sources.location(p.span))
                .unwrap_or_default();
            format!("{}@{at}", d.code)
        })
        .collect()
}

const INSTANCE: &str = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  virtual_ipaddress {\n    10.0.0.100/24\n  }\n}\n";

const SERVICE_HEAD: &str =
    "virtual_server 10.0.0.100 80 {\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n";

#[test]
fn minimal_instance_gets_keepalived_defaults() {
    let loaded = load(INSTANCE);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    let i = &loaded.config.vrrp_instance[0];
    assert_eq!(i.state, InitialState::Backup);
    assert_eq!(i.priority, 100);
    assert_eq!(i.advert_int, 1.0);
    assert_eq!(i.version, 2);
    assert_eq!(i.virtual_ipaddress[0].prefix, 24);
    assert_eq!(i.garp_master_delay, 5);
    assert!(!i.nopreempt);
}

#[test]
fn master_without_priority_is_the_address_owner() {
    let loaded = load(&INSTANCE.replace("interface eth0", "interface eth0\n  state MASTER"));
    assert_eq!(loaded.config.vrrp_instance[0].priority, 255);
    let loaded = load(&INSTANCE.replace("interface eth0", "interface eth0\n  priority 255"));
    assert_eq!(loaded.config.vrrp_instance[0].state, InitialState::Master);
}

#[test]
fn comments_quotes_and_escapes() {
    let text = "! header\nglobal_defs { # trailing\n  router_id \"a # b\" ! c\n  notification_email_from x\\#y\n}\n";
    let loaded = load(text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    assert_eq!(
        loaded.config.global_defs.router_id.as_deref(),
        Some("a # b")
    );
    assert_eq!(
        loaded.config.global_defs.notification_email_from.as_deref(),
        Some("x#y")
    );
}

#[test]
fn braces_split_words_and_blocks_may_open_on_the_next_line() {
    let text = "vrrp_instance VI_1\n{\n  interface eth0\n  virtual_router_id 51\n  authentication{\n    auth_type PASS\n    auth_pass secret\n  }virtual_ipaddress\n  {\n    10.0.0.100\n  }\n}\n";
    let loaded = load(text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    let i = &loaded.config.vrrp_instance[0];
    assert_eq!(
        i.authentication.as_ref().map(|a| a.auth_pass.as_str()),
        Some("secret")
    );
    assert_eq!(i.virtual_ipaddress.len(), 1);
}

#[test]
fn include_globs_relative_to_the_including_file_with_errors_located_there() {
    let loaded = load_files(
        &[
            (MAIN, "include conf.d/*.conf\n"),
            ("/etc/keepalived/conf.d/a.conf", INSTANCE),
            (
                "/etc/keepalived/conf.d/b.conf",
                "vrrp_instance VI_2 {\n  interface eth0\n  virtual_router_id 52\n  priority 300\n  virtual_ipaddress {\n    10.0.0.101\n  }\n}\n",
            ),
        ],
        "node1",
    );
    assert_eq!(loaded.config.vrrp_instance.len(), 2);
    assert_eq!(
        problems(&loaded),
        ["out-of-range@/etc/keepalived/conf.d/b.conf:4:12"]
    );
}

#[test]
fn parameters_single_and_multi_line() {
    let text = "$VIP=10.0.0.100\n$RS=real_server 10.0.1.1 80 { \\\n  weight 3 \\\n}\n".to_owned()
        + SERVICE_HEAD
        + "  sorry_server ${VIP} 8080\n  $RS\n}\n";
    let loaded = load(&text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    let vs = &loaded.config.virtual_server[0];
    assert_eq!(vs.real_server[0].weight, 3);
    assert_eq!(
        vs.sorry_server.as_ref().map(|s| s.ip.to_string()),
        Some("10.0.0.100".to_owned())
    );
}

#[test]
fn conditional_lines_select_by_config_id() {
    let text = INSTANCE.replace(
        "interface eth0",
        "interface eth0\n  @node1 priority 150\n  @^node1 priority 50",
    );
    assert_eq!(
        load_files(&[(MAIN, &text)], "node1").config.vrrp_instance[0].priority,
        150
    );
    assert_eq!(
        load_files(&[(MAIN, &text)], "node2").config.vrrp_instance[0].priority,
        50
    );
}

#[test]
fn generators_replicate_lines() {
    let text = SERVICE_HEAD.to_owned()
        + "  ~SEQ(n, 1, 3) real_server 10.0.1.$n 80\n}\n~LST(id, 61, 62) vrrp_instance VI_$id { \n";
    // The ~LST line above opens blocks it cannot close on one line: only ~SEQ is checked here.
    let loaded = load(&text[..text.find("~LST").unwrap_or(text.len())]);
    let addresses: Vec<String> = loaded.config.virtual_server[0]
        .real_server
        .iter()
        .map(|r| r.ip.to_string())
        .collect();
    assert_eq!(addresses, ["10.0.1.1", "10.0.1.2", "10.0.1.3"]);
}

#[test]
fn virtual_server_defaults_are_keepalived_s_not_ipvsadm_s() {
    let text = "virtual_server 10.0.0.100 80 {\n  persistence_timeout\n  real_server 10.0.1.1 80 {\n    TCP_CHECK {\n    }\n  }\n}\n";
    let loaded = load(text);
    let vs = &loaded.config.virtual_server[0];
    assert_eq!(vs.lb_algo, SchedulerKind::Wlc);
    assert_eq!(vs.lb_kind, LbKind::Nat);
    assert_eq!(vs.persistence_timeout, Some(360));
    assert_eq!(vs.delay_loop, 60.0);
    assert_eq!(vs.protocol, Protocol::Udp, "keepalived 2.2 defaults to UDP");
    let check = &vs.real_server[0].checkers[0].common;
    assert_eq!(
        (
            check.connect_timeout,
            check.retry,
            check.delay_before_retry,
            check.delay_loop
        ),
        (5.0, 1, 1.0, 60.0)
    );
    // keepalived reports each default it applies; so do we, as warnings.
    assert_eq!(
        problems(&loaded),
        [
            "default-protocol@/etc/keepalived/keepalived.conf:1:1",
            "default-lb-algo@/etc/keepalived/keepalived.conf:1:1",
            "default-lb-kind@/etc/keepalived/keepalived.conf:1:1"
        ]
    );
}

#[test]
fn checker_options_inherit_from_virtual_and_real_server() {
    let text = SERVICE_HEAD.to_owned()
        + "  connect_timeout 7\n  delay_loop 4\n  real_server 10.0.1.1 80 {\n    retry 4\n    HTTP_GET {\n      url {\n        path /health\n        status_code 200-299 301\n      }\n    }\n    TCP_CHECK {\n      connect_timeout 2\n      nb_get_retry 9\n    }\n  }\n}\n";
    let loaded = load(&text);
    let checkers = &loaded.config.virtual_server[0].real_server[0].checkers;
    let http = &checkers[0];
    assert_eq!(
        (
            http.common.connect_timeout,
            http.common.retry,
            http.common.delay_before_retry,
            http.common.delay_loop
        ),
        (7.0, 4, 3.0, 4.0)
    );
    let CheckKind::Http(h) = &http.kind else {
        panic!("HTTP_GET expected")
    };
    assert_eq!(h.url[0].status_code, [(200, 299), (301, 301)]);
    let tcp = &checkers[1];
    assert_eq!(
        (
            tcp.common.connect_timeout,
            tcp.common.retry,
            tcp.common.delay_before_retry
        ),
        (2.0, 9, 1.0)
    );
    assert_eq!(
        problems(&loaded),
        ["deprecated-keyword@/etc/keepalived/keepalived.conf:17:7"]
    );
}

#[test]
fn every_checker_parses() {
    // keepalived resolves FILE_CHECK's track_file where it reads it: define it first.
    let text = "track_file tf {\n  file /run/x\n}\n".to_owned()
        + SERVICE_HEAD
        + "  real_server 10.0.1.1 80 {\n    SSL_GET {\n      url {\n        path /\n        digest 9b3a0c85a887a256d6939da88aabd8cd\n      }\n    }\n    MISC_CHECK {\n      misc_path \"/bin/check arg\"\n      misc_dynamic\n    }\n    SMTP_CHECK {\n      helo_name lb\n    }\n    DNS_CHECK {\n      type A\n      name example.org\n    }\n    UDP_CHECK {\n      payload 70696e67\n    }\n    PING_CHECK {\n    }\n    FILE_CHECK {\n      track_file tf\n    }\n  }\n}\n";
    let loaded = load(&text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    let kinds: Vec<&str> = loaded.config.virtual_server[0].real_server[0]
        .checkers
        .iter()
        .map(|c| c.kind.keyword())
        .collect();
    assert_eq!(
        kinds,
        [
            "SSL_GET",
            "MISC_CHECK",
            "SMTP_CHECK",
            "DNS_CHECK",
            "UDP_CHECK",
            "PING_CHECK",
            "FILE_CHECK"
        ]
    );
}

#[test]
fn fwmark_and_group_virtual_servers() {
    let text = "virtual_server_group G {\n  10.0.0.1-10 80\n  fwmark 7\n}\nvirtual_server group G {\n  lb_algo sh\n  lb_kind DR\n  protocol TCP\n  sh-port\n  real_server 10.0.1.1 80 {\n  }\n}\nvirtual_server fwmark 7 {\n  lb_algo mh\n  lb_kind DR\n  real_server 10.0.1.1 {\n  }\n}\n";
    let loaded = load(text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    let c = &loaded.config;
    assert_eq!(
        c.virtual_server[0].key,
        VirtualServerKey::Group { group: "G".into() }
    );
    assert_eq!(c.virtual_server[0].lb_flags, ["sh-port"]);
    assert_eq!(
        c.virtual_server[1].key,
        VirtualServerKey::Fwmark { fwmark: 7 }
    );
    assert_eq!(c.virtual_server_group[0].entries.len(), 2);
}

#[test]
fn errors_name_file_line_and_column() {
    let text = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 256\n}\nvrrp_instance VI_2 {\n  interface eth0\n  virtual_router_id 9\n  priority abc\n  track_script {\n    nosuch\n  }\n  virtual_ipaddress {\n    10.0.0.1\n    fd00::1\n    10.0.0.300\n  }\n}\nvirtual_server 10.0.0.1 80 {\n  lb_algo bogus\n  lb_kind XX\n  protocol TCP\n  real_server 10.0.1.1 80 {\n  }\n}\n";
    let loaded = load(text);
    assert!(!loaded.is_valid());
    assert_eq!(
        problems(&loaded),
        [
            "missing-keyword@/etc/keepalived/keepalived.conf:1:1",
            "out-of-range@/etc/keepalived/keepalived.conf:3:21",
            "invalid-number@/etc/keepalived/keepalived.conf:8:12",
            "undefined-reference@/etc/keepalived/keepalived.conf:10:5",
            "mixed-families@/etc/keepalived/keepalived.conf:14:5",
            "invalid-address@/etc/keepalived/keepalived.conf:15:5",
            "invalid-value@/etc/keepalived/keepalived.conf:19:11",
            "invalid-value@/etc/keepalived/keepalived.conf:20:11",
        ]
    );
}

#[test]
fn unbalanced_braces_point_at_the_open_brace() {
    let loaded = load("global_defs {\n  router_id x\nvrrp_instance VI_1 {\n}\n");
    assert_eq!(
        problems(&loaded)[0],
        "unbalanced-braces@/etc/keepalived/keepalived.conf:1:13"
    );
    let loaded = load("global_defs {\n}\n}\n");
    assert_eq!(
        problems(&loaded),
        ["unbalanced-braces@/etc/keepalived/keepalived.conf:3:1"]
    );
}

#[test]
fn duplicate_vrid_on_one_interface_but_not_across_interfaces_or_families() {
    let second = INSTANCE
        .replace("VI_1", "VI_2")
        .replace("10.0.0.100/24", "10.0.0.101");
    let loaded = load(&(INSTANCE.to_owned() + &second));
    assert_eq!(
        problems(&loaded),
        ["duplicate-vrid@/etc/keepalived/keepalived.conf:10:3"]
    );
    let other_if = second.replace("eth0", "eth1");
    assert!(load(&(INSTANCE.to_owned() + &other_if)).is_valid());
    let v6 = second.replace("10.0.0.101", "fe80::1");
    assert!(problems(&load(&(INSTANCE.to_owned() + &v6))).is_empty());
}

#[test]
fn warnings_where_keepalived_corrects_the_config() {
    let text = "vrrp_instance VI_1 {\n  state MASTER\n  nopreempt\n  priority 100\n  interface eth0\n  virtual_router_id 51\n  authentication {\n    auth_type PASS\n    auth_pass 0123456789\n  }\n  virtual_ipaddress {\n    10.0.0.100\n  }\n  bogus_keyword 1\n}\n";
    let mut loaded = load(text);
    assert!(loaded.is_valid(), "warnings only");
    let i = &loaded.config.vrrp_instance[0];
    assert!(!i.nopreempt, "keepalived clears nopreempt for a MASTER");
    assert_eq!(
        i.authentication.as_ref().map(|a| a.auth_pass.as_str()),
        Some("01234567")
    );
    assert_eq!(
        problems(&loaded),
        [
            "nopreempt-master@/etc/keepalived/keepalived.conf:3:3",
            "auth-pass-truncated@/etc/keepalived/keepalived.conf:9:15",
            "unknown-keyword@/etc/keepalived/keepalived.conf:14:3",
        ]
    );
    loaded.diagnostics.escalate_warnings();
    assert!(
        loaded.diagnostics.has_errors(),
        "--strict makes them errors, as keepalived -t"
    );
}

#[test]
fn slash_comments_are_dropped_and_reported_by_what_keepalived_would_do() {
    let text = INSTANCE
        .replace("virtual_router_id 51", "virtual_router_id 51 // the id")
        .replace("10.0.0.100/24", "10.0.0.100/24 // the VIP");
    let loaded = load(&text);
    assert!(loaded.is_valid());
    let found: Vec<(Severity, String)> = loaded
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.severity,
                loaded.sources.location(d.primary.as_ref().unwrap().span),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                Severity::Note,
                "/etc/keepalived/keepalived.conf:3:24".to_owned()
            ),
            (
                Severity::Warning,
                "/etc/keepalived/keepalived.conf:5:19".to_owned()
            ),
        ]
    );
    assert_eq!(loaded.config.vrrp_instance[0].virtual_ipaddress.len(), 1);
}

#[test]
fn missing_interface_is_a_warning_and_loopback_an_error() {
    let loaded = load(&INSTANCE.replace("eth0", "ens99"));
    assert_eq!(
        problems(&loaded),
        ["missing-interface@/etc/keepalived/keepalived.conf:1:1"]
    );
    assert!(loaded.is_valid());
    assert!(!load(&INSTANCE.replace("eth0", "lo")).is_valid());
}

#[test]
fn sync_group_members_must_exist_once() {
    let text = INSTANCE.to_owned()
        + "vrrp_sync_group G1 {\n  group {\n    VI_1 VI_9\n  }\n}\nvrrp_sync_group G2 {\n  group {\n    VI_1\n  }\n}\n";
    let found = problems(&load(&text));
    assert!(
        found.contains(&"undefined-reference@/etc/keepalived/keepalived.conf:10:10".to_owned()),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("duplicate-sync-group-member@")),
        "{found:?}"
    );
}

#[test]
fn absurd_nesting_is_refused_not_overflowed() {
    let loaded = load(&"a{\n".repeat(10_000));
    assert!(problems(&loaded).iter().any(|p| p.starts_with("too-deep@")));
}

#[test]
fn addresses_lose_suffixes_as_keepalived_reads_them() {
    let text = INSTANCE.replace(
        "interface eth0",
        "interface eth0\n  unicast_src_ip 10.0.0.1/24\n  unicast_peer {\n    10.0.0.2/24\n  }",
    );
    let loaded = load(&text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    let i = &loaded.config.vrrp_instance[0];
    assert_eq!(
        i.unicast_src_ip.map(|a| a.to_string()),
        Some("10.0.0.1".to_owned())
    );
    assert_eq!(i.unicast_peer[0].address.to_string(), "10.0.0.2");
}

#[test]
fn auth_pass_without_auth_type_authenticates_nothing() {
    let text = INSTANCE.replace(
        "interface eth0",
        "interface eth0\n  authentication {\n    auth_pass secret\n  }",
    );
    let loaded = load(&text);
    assert!(loaded.is_valid());
    assert_eq!(loaded.config.vrrp_instance[0].authentication, None);
}

#[test]
fn accept_mode_is_decided_last() {
    let strict = |body: &str| {
        let text = format!(
            "global_defs {{\n  vrrp_strict\n}}\n{}",
            INSTANCE.replace("interface eth0", &format!("interface eth0\n{body}"))
        );
        load(&text).config.vrrp_instance[0].accept
    };
    assert!(!strict(""), "strict mode turns accept off");
    assert!(
        strict("  priority 255\n  state MASTER"),
        "the owner always accepts"
    );
    assert!(
        load(INSTANCE).config.vrrp_instance[0].accept,
        "accept by default without strict mode"
    );
}

#[test]
fn weighted_tracking_is_dropped_for_owners_and_sync_groups() {
    let script = "global_defs {\n  enable_script_security\n}\nvrrp_script chk {\n  script /bin/true\n  weight 20\n}\n";
    let owner = INSTANCE.replace(
        "interface eth0",
        "interface eth0\n  priority 255\n  track_script {\n    chk\n  }",
    );
    let loaded = load(&(script.to_owned() + &owner));
    assert!(loaded.config.vrrp_instance[0].track_script.is_empty());
    assert!(
        problems(&loaded)
            .iter()
            .any(|p| p.starts_with("weighted-tracking-ignored@"))
    );
    let plain = INSTANCE.replace(
        "interface eth0",
        "interface eth0\n  track_script {\n    chk\n  }",
    );
    assert_eq!(
        load(&(script.to_owned() + &plain)).config.vrrp_instance[0]
            .track_script
            .len(),
        1
    );
}

#[test]
fn slash_comment_ends_at_a_brace() {
    let text =
        SERVICE_HEAD.to_owned() + "  real_server 10.0.1.1 80 // web1 {\n    weight 2\n  }\n}\n";
    let loaded = load(&text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    assert_eq!(loaded.config.virtual_server[0].real_server[0].weight, 2);
}

#[test]
fn substituted_text_is_read_again() {
    let text = format!(
        "$OWNER=@node1\n$C=${{_HASH}} a comment\n{}",
        INSTANCE.replace(
            "interface eth0",
            "interface eth0\n  $OWNER priority 200\n  ${C}"
        )
    );
    let loaded = load(&text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    assert_eq!(loaded.config.vrrp_instance[0].priority, 200);
}

#[test]
fn multi_variable_lst_binds_each_variable() {
    let text = SERVICE_HEAD.to_owned()
        + "  ~LST({H,W}, {10.0.1.1,3}, {10.0.1.2,1}) real_server $H 80 { weight $W }\n}\n";
    let loaded = load(&text);
    let servers: Vec<(String, u32)> = loaded.config.virtual_server[0]
        .real_server
        .iter()
        .map(|r| (r.ip.to_string(), r.weight))
        .collect();
    assert_eq!(
        servers,
        [("10.0.1.1".to_owned(), 3), ("10.0.1.2".to_owned(), 1)]
    );
}

#[test]
fn virtual_server_group_forms() {
    let text = "virtual_server_group G {\n  10.0.0.1 80\n  10.0.0.2-4 80\n  10.0.1.1-10.0.1.9 80\n  10.0.2.0/30 443\n  10.0.3.1\n}\n";
    let loaded = load(text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    let group = &loaded.config.virtual_server_group[0];
    let rendered = serde_json::to_string(&group.entries).unwrap();
    assert!(
        rendered.contains(r#"{"ip":"10.0.2.0","last":"10.0.2.3","port":443}"#),
        "{rendered}"
    );
    assert!(
        rendered.contains(r#"{"ip":"10.0.3.1","last":"10.0.3.1","port":0}"#),
        "{rendered}"
    );
    assert!(!load("virtual_server_group G {\n  10.0.0.5-5 80\n}\n").is_valid());
}

#[test]
fn routes_and_rules_are_checked_like_keepalived() {
    let routes = INSTANCE.replace("interface eth0", "interface eth0\n  virtual_routes {\n    10.1.0.0/16 via 10.0.0.254 dev eth0\n    10.2.0.0/16 gw 10.0.0.254 dev eth0\n    10.3.0.0/16 via 10.0.0.254\n  }\n  virtual_rules {\n    from 10.0.0.100 table 100 priority 100\n    from 10.0.0.100 table 100\n  }");
    let found = problems(&load(&routes));
    assert_eq!(
        found,
        [
            "deprecated-keyword@/etc/keepalived/keepalived.conf:5:17",
            "route-without-dev@/etc/keepalived/keepalived.conf:6:5",
            "rule-without-priority@/etc/keepalived/keepalived.conf:10:5",
        ]
    );
}

#[test]
fn proxy_protocol_is_a_keeplb_extension_that_keepalived_would_reject() {
    let loaded = load(&format!(
        "{SERVICE_HEAD}  proxy_protocol v2\n  real_server 10.0.0.1 80 {{\n  }}\n}}\n"
    ));
    assert_eq!(loaded.config.virtual_server[0].proxy_protocol, Some(2));
    assert_eq!(
        problems(&loaded),
        ["keeplb-extension@/etc/keepalived/keepalived.conf:5:3"]
    );
    let loaded = load(&format!(
        "{SERVICE_HEAD}  proxy_protocol v3\n  real_server 10.0.0.1 80 {{\n  }}\n}}\n"
    ));
    assert_eq!(loaded.config.virtual_server[0].proxy_protocol, None);
    assert_eq!(
        problems(&loaded),
        ["invalid-value@/etc/keepalived/keepalived.conf:5:18"]
    );
}

#[test]
fn a_udp_service_takes_proxy_protocol_v2_only() {
    let udp = |version: &str| {
        load(&format!(
            "{}  proxy_protocol {version}\n  real_server 10.0.0.1 53 {{\n  }}\n}}\n",
            SERVICE_HEAD.replace("TCP", "UDP")
        ))
    };
    let v2 = udp("v2");
    assert_eq!(v2.config.virtual_server[0].proxy_protocol, Some(2));
    let v1 = udp("v1");
    assert_eq!(v1.config.virtual_server[0].proxy_protocol, None);
    assert_eq!(
        problems(&v1),
        [
            "keeplb-extension@/etc/keepalived/keepalived.conf:5:3",
            "proxy-protocol-v1-udp@/etc/keepalived/keepalived.conf:5:18"
        ]
    );
}

#[test]
fn tun_options_go_to_the_real_servers_unless_their_own_lvs_method_says_otherwise() {
    let text = "virtual_server 10.0.0.100 80 {\n  lb_algo rr\n  lb_kind TUN type gue port 6080 csum\n  protocol TCP\n  real_server 10.0.1.1 80 {\n  }\n  real_server 10.0.1.2 80 {\n    lvs_method TUN type gre\n  }\n  real_server 10.0.1.3 80 {\n    lvs_method TUN\n  }\n  real_server 10.0.1.4 80 {\n    lvs_method DR\n  }\n}\n";
    let loaded = load(text);
    assert_eq!(problems(&loaded), Vec::<String>::new());
    let vs = &loaded.config.virtual_server[0];
    let gue = Tunnel {
        kind: TunnelType::Gue,
        port: 6080,
        checksum: TunnelChecksum::Csum,
    };
    assert_eq!((vs.lb_kind, vs.tunnel), (LbKind::Tun, Some(gue)));
    let real_servers: Vec<_> = vs
        .real_server
        .iter()
        .map(|rs| (rs.lb_kind, rs.tunnel))
        .collect();
    let gre = Tunnel {
        kind: TunnelType::Gre,
        ..Tunnel::default()
    };
    assert_eq!(
        real_servers,
        [
            (LbKind::Tun, Some(gue)),
            (LbKind::Tun, Some(gre)),
            // a method of its own starts from keepalived's defaults: ipip
            (LbKind::Tun, Some(Tunnel::default())),
            (LbKind::Dr, None),
        ]
    );
    let json = serde_json::to_value(vs).expect("serialises");
    assert_eq!(
        json["tunnel"],
        serde_json::json!({"type": "gue", "port": 6080, "checksum": "csum"})
    );
    assert!(
        json["real_server"][3].get("tunnel").is_none(),
        "DR has none"
    );
}

#[test]
fn tun_options_keepalived_refuses_are_reported_and_not_applied() {
    for (options, code) in [
        (
            "type gue",
            "invalid-value@/etc/keepalived/keepalived.conf:3:3",
        ),
        (
            "type ipip port 6080",
            "invalid-value@/etc/keepalived/keepalived.conf:3:3",
        ),
        ("csum", "invalid-value@/etc/keepalived/keepalived.conf:3:3"),
        (
            "type gre remcsum",
            "invalid-value@/etc/keepalived/keepalived.conf:3:3",
        ),
        (
            "type gue port 0",
            "invalid-value@/etc/keepalived/keepalived.conf:3:24",
        ),
        (
            "type vxlan",
            "invalid-value@/etc/keepalived/keepalived.conf:3:15",
        ),
    ] {
        let text = format!(
            "virtual_server 10.0.0.100 80 {{\n  lb_algo rr\n  lb_kind TUN {options}\n  protocol TCP\n  real_server 10.0.1.1 80 {{\n  }}\n}}\n"
        );
        let loaded = load(&text);
        assert_eq!(problems(&loaded), [code], "{options}");
        let vs = &loaded.config.virtual_server[0];
        assert_eq!(
            (vs.lb_kind, vs.tunnel, vs.real_server[0].tunnel),
            (
                LbKind::Tun,
                Some(Tunnel::default()),
                Some(Tunnel::default())
            ),
            "{options}: keepalived keeps ipip"
        );
    }
}

#[test]
fn sorry_server_takes_its_own_method_or_the_one_keepalived_copies() {
    let gue = Tunnel {
        kind: TunnelType::Gue,
        port: 6080,
        checksum: TunnelChecksum::NoCsum,
    };
    for (lines, expected) in [
        // lb_kind before the sorry server is copied at its line
        ("lb_kind DR\n  sorry_server 10.0.1.9 80", (LbKind::Dr, None)),
        // no lb_kind yet: the block's final one
        ("sorry_server 10.0.1.9 80\n  lb_kind DR", (LbKind::Dr, None)),
        // keepalived copied NAT at the line; a later lb_kind does not reach it
        (
            "lb_kind NAT\n  sorry_server 10.0.1.9 80\n  lb_kind DR",
            (LbKind::Nat, None),
        ),
        (
            "lb_kind NAT\n  sorry_server 10.0.1.9 80\n  sorry_server_lvs_method TUN type gue port 6080",
            (LbKind::Tun, Some(gue)),
        ),
        (
            "lb_kind TUN type gue port 6080\n  sorry_server 10.0.1.9 80",
            (LbKind::Tun, Some(gue)),
        ),
    ] {
        let text = format!(
            "virtual_server 10.0.0.100 80 {{\n  lb_algo rr\n  protocol TCP\n  {lines}\n  real_server 10.0.1.1 80 {{\n  }}\n}}\n"
        );
        let loaded = load(&text);
        assert_eq!(problems(&loaded), Vec::<String>::new(), "{lines}");
        let sorry = loaded.config.virtual_server[0]
            .sorry_server
            .clone()
            .expect("a sorry server");
        assert_eq!((sorry.lb_kind, sorry.tunnel), expected, "{lines}");
    }
}

#[test]
fn only_a_tunnelled_sorry_server_may_be_of_the_other_family() {
    let block = |method: &str| {
        format!(
            "virtual_server 10.0.0.100 80 {{\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n  sorry_server 2001:db8::9 80\n{method}  real_server 10.0.1.1 80 {{\n  }}\n}}\n"
        )
    };
    let tunnelled = load(&block("  sorry_server_lvs_method TUN\n"));
    assert_eq!(problems(&tunnelled), Vec::<String>::new());
    let sorry = tunnelled.config.virtual_server[0].sorry_server.clone();
    assert_eq!(
        sorry.map(|s| (s.ip.to_string(), s.lb_kind)),
        Some(("2001:db8::9".to_owned(), LbKind::Tun))
    );

    let natted = load(&block(""));
    assert_eq!(
        problems(&natted),
        ["mixed-families@/etc/keepalived/keepalived.conf:5:3"]
    );
    assert_eq!(natted.config.virtual_server[0].sorry_server, None);

    // The sorry server took NAT at its line: a later lb_kind TUN does not reach it (the
    // oracle fixture keyword_sorry_server_other_family_tun_after covers a block whose
    // only lb_kind comes after the sorry server).
    let late = load(&block("  lb_kind TUN\n"));
    assert_eq!(
        problems(&late),
        ["mixed-families@/etc/keepalived/keepalived.conf:5:3"]
    );
    assert_eq!(late.config.virtual_server[0].sorry_server, None);
}

#[test]
fn persistence_engine_sip_is_modelled_and_misuse_reported() {
    let block = |protocol: &str, lines: &str| {
        load(&format!(
            "virtual_server 10.0.0.100 5060 {{\n  lb_algo rr\n  lb_kind NAT\n  protocol {protocol}\n{lines}  real_server 10.0.0.1 5060 {{\n  }}\n}}\n"
        ))
    };
    let sip = block(
        "UDP",
        "  persistence_timeout 60\n  persistence_engine sip\n",
    );
    assert_eq!(problems(&sip), Vec::<String>::new());
    assert_eq!(
        sip.config.virtual_server[0].persistence_engine,
        Some(PersistenceEngine::Sip)
    );
    // keepalived -t accepts all of these: keeplb explains them in notes.
    let notes = |loaded: &Loaded| located(loaded, |severity| severity == Severity::Note);
    for (protocol, lines, expected) in [
        (
            "TCP",
            "  persistence_timeout 60\n  persistence_engine sip\n",
            "sip-engine-needs-udp@/etc/keepalived/keepalived.conf:6:22",
        ),
        (
            "UDP",
            "  persistence_engine sip\n",
            "sip-engine-needs-persistence@/etc/keepalived/keepalived.conf:5:22",
        ),
        (
            "UDP",
            "  persistence_timeout 60\n  persistence_engine rtsp\n",
            "unknown-persistence-engine@/etc/keepalived/keepalived.conf:6:22",
        ),
    ] {
        let loaded = block(protocol, lines);
        assert_eq!(
            problems(&loaded),
            Vec::<String>::new(),
            "{protocol} {lines}"
        );
        assert_eq!(notes(&loaded), [expected], "{protocol} {lines}");
    }
}

#[test]
fn a_bad_address_in_a_list_is_named_once() {
    let loaded = load(
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 9\n  unicast_peer {\n    10.0.0.300\n  }\n  virtual_ipaddress {\n    10.0.0.1\n  }\n}\n",
    );
    let messages: Vec<&str> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.code == "invalid-address")
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(messages, ["`10.0.0.300` is not a valid IP address"]);
}

#[test]
fn require_reply_keeps_every_word_as_keepalived_joins_them() {
    let text = SERVICE_HEAD.to_owned()
        + "  real_server 10.0.1.1 80 {\n    UDP_CHECK {\n      require_reply 70 6f xx 67\n    }\n  }\n}\n";
    let loaded = load(&text);
    let CheckKind::Udp(udp) = &loaded.config.virtual_server[0].real_server[0].checkers[0].kind
    else {
        panic!("a UDP_CHECK");
    };
    assert_eq!(udp.require_reply.as_deref(), Some("70 6f xx 67"));
}
