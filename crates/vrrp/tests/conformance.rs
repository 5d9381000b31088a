//! Conformance scenarios: multi-router runs on the in-memory LAN (tests/lan), described by
//! the files in tests/conformance/*.scn and compared with the outcome written in them.
//!
//! # Scenario format
//!
//! Line-based; `#` starts a comment. In order:
//!
//! - `defaults KEY=VALUE... FLAG...`: settings for the routers declared after it.
//! - `router NAME addr=IP KEY=VALUE... FLAG...`: a router on the LAN, with its interface
//!   address (also its advertisement source). Keys: `version` (2|3), `vrid`, `priority`,
//!   `interval` (seconds, decimal), `vips`, `excluded` (comma-separated), `auth` (v2
//!   password), `state` (master|backup), `preempt_delay` (s), `unicast` (peer list),
//!   `garp_delay` (s), `garp_repeat`, `garp_refresh` (s), `garp_lower_prio_repeat`,
//!   `checksum` (pseudo|message|legacy), `address_check` (drop|skip|log). Flags:
//!   `nopreempt`, `lower_prio_no_advert`, `higher_prio_send_advert`.
//! - `at TIME COMMAND...`: run the LAN until TIME (seconds), then: `start R...`,
//!   `shutdown R...`, `crash R...` (dies silently), `priority R N` (configured + tracking),
//!   `fault R` / `clear-fault R` (tracking), `link-down R` / `link-up R`, `cut A B` (no
//!   traffic between them), `heal`; or check: `expect state R=STATE...` (MASTER, BACKUP,
//!   FAULT, INIT, or DOWN when not running), `expect vips R...` (exactly these hold the
//!   addresses; `-` for nobody).
//! - `end TIME`: run until TIME before the final checks (default: the last `at`).
//! - `log FROM TO` followed by indented lines: the LAN log between the two times,
//!   inclusive, exactly (`TIME ROUTER WHAT`, see tests/lan). Checked after the run.
//! - `transitions` followed by indented lines: every state change of the whole run,
//!   exactly, as `TIME ROUTER state FROM->TO CAUSE`.
//!
//! `VRRP_SCENARIO_DUMP=1` prints the full log of each run (for writing new scenarios;
//! work the expected lines out from the rules, do not paste them unchecked).

mod lan;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use keeplb_vrrp::{
    AddressCheck, AdverInterval, Auth, AuthPassword, ChecksumForm, Event, InitialState,
    InstanceConfig, State, Transport, UnicastPeer, Version,
};
use lan::{Lan, LogLine, fmt_time, parse_time};

/// A router declaration: settings on top of the defaults.
#[derive(Clone, Default)]
struct Settings(Vec<(String, Option<String>)>);

impl Settings {
    fn parse(words: &[&str]) -> Self {
        Settings(
            words
                .iter()
                .map(|w| match w.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => ((*w).to_owned(), None),
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    fn flag(&self, key: &str) -> bool {
        self.0.iter().any(|(k, v)| k == key && v.is_none())
    }
}

fn ips(list: &str) -> Vec<IpAddr> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or_else(|e| panic!("address {s}: {e}")))
        .collect()
}

fn secs(s: &str) -> Duration {
    parse_time(s).unwrap_or_else(|| panic!("bad time {s}"))
}

fn config(name: &str, s: &Settings) -> InstanceConfig {
    let version = match s.get("version").unwrap_or("2") {
        "2" => Version::V2,
        "3" => Version::V3,
        v => panic!("{name}: version {v}"),
    };
    let vrid = s.get("vrid").map_or(51, |v| v.parse().expect("vrid"));
    let vips = ips(s.get("vips").unwrap_or("10.0.0.100"));
    let mut c = InstanceConfig::new(name, vrid, version, vips);
    if let Some(p) = s.get("priority") {
        c.priority = p.parse().expect("priority");
    }
    if let Some(i) = s.get("interval") {
        let d = secs(i);
        let centis = u16::try_from(d.as_millis() / 10).expect("interval");
        c.adver_int = AdverInterval::from_centis(centis);
    }
    c.excluded_vips = ips(s.get("excluded").unwrap_or(""));
    if let Some(p) = s.get("auth") {
        c.auth = Auth::Password(AuthPassword::new(p.as_bytes()));
    }
    c.initial_state = match s.get("state") {
        Some("master") => InitialState::Master,
        None | Some("backup") => InitialState::Backup,
        Some(v) => panic!("{name}: state {v}"),
    };
    c.preempt = !s.flag("nopreempt");
    if let Some(d) = s.get("preempt_delay") {
        c.preempt_delay = secs(d);
    }
    c.lower_prio_no_advert = s.flag("lower_prio_no_advert");
    c.higher_prio_send_advert = s.flag("higher_prio_send_advert");
    if let Some(peers) = s.get("unicast") {
        c.transport = Transport::Unicast {
            peers: ips(peers).into_iter().map(UnicastPeer::new).collect(),
            ttl: 255,
            check_src: false,
        };
    }
    if let Some(d) = s.get("garp_delay") {
        c.garp.master_delay = secs(d);
    }
    if let Some(n) = s.get("garp_repeat") {
        c.garp.master_repeat = n.parse().expect("garp_repeat");
    }
    if let Some(d) = s.get("garp_refresh") {
        c.garp.master_refresh = secs(d);
    }
    if let Some(n) = s.get("garp_lower_prio_repeat") {
        c.garp.lower_prio_repeat = n.parse().expect("garp_lower_prio_repeat");
    }
    c.checksum_form = match s.get("checksum") {
        None | Some("pseudo") => ChecksumForm::PseudoHeader,
        Some("message") => ChecksumForm::MessageOnly,
        Some("legacy") => ChecksumForm::LegacyUnicast,
        Some(v) => panic!("{name}: checksum {v}"),
    };
    c.address_check = match s.get("address_check") {
        None | Some("drop") => AddressCheck::Drop,
        Some("skip") => AddressCheck::SkipFromMaster,
        Some("log") => AddressCheck::LogOnly,
        Some(v) => panic!("{name}: address_check {v}"),
    };
    c
}

fn state_name(state: Option<State>) -> &'static str {
    state.map_or("DOWN", State::keepalived_name)
}

struct Block {
    /// `None` for `transitions`.
    window: Option<(Duration, Duration)>,
    lines: Vec<String>,
    line_no: usize,
}

fn run(name: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(format!("{name}.scn"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lan = Lan::new();
    let mut defaults = Settings::default();
    let mut blocks: Vec<Block> = Vec::new();
    let mut end = Duration::ZERO;
    let mut failures: Vec<String> = Vec::new();

    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let here = format!("{name}.scn:{line_no}");
        let content = raw.split('#').next().unwrap_or("");
        if content.trim().is_empty() {
            continue;
        }
        if content.starts_with([' ', '\t']) {
            let block = blocks
                .last_mut()
                .unwrap_or_else(|| panic!("{here}: indented line outside a block"));
            block
                .lines
                .push(content.split_whitespace().collect::<Vec<_>>().join(" "));
            continue;
        }
        let words: Vec<&str> = content.split_whitespace().collect();
        match words.as_slice() {
            ["defaults", rest @ ..] => defaults.0.extend(Settings::parse(rest).0),
            ["router", rname, rest @ ..] => {
                let mut s = defaults.clone();
                s.0.extend(Settings::parse(rest).0);
                let addr: IpAddr = s
                    .get("addr")
                    .unwrap_or_else(|| panic!("{here}: router without addr"))
                    .parse()
                    .expect("addr");
                lan.add(rname, addr, config(rname, &s));
            }
            ["at", time, command @ ..] => {
                let at = secs(time);
                lan.run_until(at);
                end = end.max(at);
                if let Err(e) = command_at(&mut lan, command) {
                    failures.push(format!("{here}: at {}: {e}", fmt_time(at)));
                }
            }
            ["end", time] => end = end.max(secs(time)),
            ["log", from, to] => blocks.push(Block {
                window: Some((secs(from), secs(to))),
                lines: Vec::new(),
                line_no,
            }),
            ["transitions"] => blocks.push(Block {
                window: None,
                lines: Vec::new(),
                line_no,
            }),
            _ => panic!("{here}: cannot read `{content}`"),
        }
    }
    lan.run_until(end);

    if std::env::var_os("VRRP_SCENARIO_DUMP").is_some() {
        eprintln!("==== {name}");
        for line in &lan.log {
            eprintln!("{line}");
        }
    }

    for block in &blocks {
        let selected: Vec<&LogLine> = match block.window {
            Some((from, to)) => lan
                .log
                .iter()
                .filter(|l| l.at >= from && l.at <= to)
                .collect(),
            None => lan
                .log
                .iter()
                .filter(|l| l.text.starts_with("state "))
                .collect(),
        };
        let actual: Vec<String> = selected.iter().map(ToString::to_string).collect();
        if actual != block.lines {
            failures.push(format!(
                "{name}.scn:{}: expected\n  {}\nbut the run logged\n  {}",
                block.line_no,
                block.lines.join("\n  "),
                actual.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn command_at(lan: &mut Lan, words: &[&str]) -> Result<(), String> {
    let each = |lan: &mut Lan, names: &[&str], f: &dyn Fn(&mut Lan, usize)| {
        for n in names {
            let i = lan.index(n);
            f(lan, i);
        }
    };
    match words {
        ["start", names @ ..] => each(lan, names, &|lan, i| lan.start(i)),
        ["shutdown", names @ ..] => each(lan, names, &|lan, i| lan.event(i, Event::Shutdown)),
        ["crash", names @ ..] => each(lan, names, &|lan, i| lan.crash(i)),
        ["fault", names @ ..] => each(lan, names, &|lan, i| lan.event(i, Event::ForceFault)),
        ["clear-fault", names @ ..] => each(lan, names, &|lan, i| lan.event(i, Event::ClearFault)),
        ["link-down", names @ ..] => each(lan, names, &|lan, i| lan.event(i, Event::InterfaceDown)),
        ["link-up", names @ ..] => each(lan, names, &|lan, i| {
            let primary = Some(lan.routers[i].addr);
            lan.event(i, Event::InterfaceUp { primary });
        }),
        ["priority", n, p] => {
            let i = lan.index(n);
            let total: i32 = p.parse().map_err(|e| format!("priority {p}: {e}"))?;
            lan.event(i, Event::PriorityChanged(total));
        }
        ["cut", a, b] => {
            let (a, b) = (lan.index(a), lan.index(b));
            lan.cut(a, b);
        }
        ["heal"] => lan.heal(),
        ["expect", "state", pairs @ ..] => {
            let mut wrong = Vec::new();
            for pair in pairs {
                let (n, want) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("`{pair}` is not ROUTER=STATE"))?;
                let got = state_name(lan.state(lan.index(n)));
                if got != want {
                    wrong.push(format!("{n} is {got}, expected {want}"));
                }
            }
            if !wrong.is_empty() {
                return Err(wrong.join(", "));
            }
        }
        ["expect", "vips", names @ ..] => {
            let want: Vec<&str> = names.iter().copied().filter(|n| *n != "-").collect();
            let got = lan.vip_holders();
            if got != want {
                return Err(format!("VIPs held by {got:?}, expected {want:?}"));
            }
        }
        _ => return Err(format!("unknown command `{}`", words.join(" "))),
    }
    Ok(())
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        /// Every scenario file has a test above.
        #[test]
        fn every_scenario_file_is_listed() {
            let listed = [$(stringify!($name)),*];
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
            for entry in std::fs::read_dir(&dir).expect("conformance dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "scn") {
                    let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
                    assert!(listed.contains(&stem), "{stem}.scn is not in scenarios!{{}}");
                }
            }
        }
    };
}

scenarios!(
    election_by_priority,
    master_dies,
    recovery_preempts,
    nopreempt_keeps_master,
    preempt_delay,
    resignation_fast_takeover,
    equal_priority_tie_break,
    v3_interval_adoption,
    lower_priority_answered,
    three_routers,
    owner_startup,
    state_master_startup,
    tracking_priority_and_fault,
    unicast_peers,
    v3_ipv6,
    garp_plan,
);
