//! `vrrp_sync_group` rules on a virtual clock: keepalived's `vrrp_sync_can_goto_master`
//! (a member becomes Master only when every member of its group can) in the state machine
//! and the group coordinator, and the directors-and-groups scenario where per-instance
//! elections alone would split a group across two directors.

mod lan;

use std::net::IpAddr;
use std::time::Duration;

use keeplb_vrrp::sync::{SyncCommand, SyncGroup};
use keeplb_vrrp::{
    Action, AdverInterval, Cause, Event, Instance, InstanceConfig, Received, State, TimerKind,
    Version,
};
use lan::Lan;
use tokio::time::Instant;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// VRRPv3, 1 s, `vrid`, `priority`, VIP 10.0.<vrid>.100.
fn config(name: &str, vrid: u8, priority: u8) -> InstanceConfig {
    let vip = ip(&format!("10.0.{vrid}.100"));
    let mut c = InstanceConfig::new(name, vrid, Version::V3, vec![vip]);
    c.priority = priority;
    c.adver_int = AdverInterval::from_centis(100);
    c
}

fn wants(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::WantsMaster(w) => Some(*w),
            _ => None,
        })
        .collect()
}

fn advert_from(src: &str, vrid: u8, priority: u8) -> Received {
    let mut peer = config("peer", vrid, priority);
    peer.src_addr = Some(ip(src));
    let mut peer = Instance::new(peer).expect("valid");
    peer.handle(Event::Startup, Instant::now());
    let at = peer.timer(TimerKind::MasterDown).expect("armed");
    let actions = peer.handle(Event::TimerExpired(TimerKind::MasterDown), at);
    let out = actions
        .iter()
        .find_map(|a| match a {
            Action::SendAdvert(out) => Some(out.clone()),
            _ => None,
        })
        .expect("the peer advertises");
    let dst = out.destinations[0];
    Received {
        src: out.src,
        dst,
        ttl: Some(255),
        payload: out.encode(dst).expect("encode"),
    }
}

/// VI_1 from 10.0.1.1 with `priority`, started at the returned instant; `change`
/// adjusts its configuration first. Also returns its Master_Down deadline.
fn started(priority: u8, change: impl FnOnce(&mut InstanceConfig)) -> (Instance, Instant, Instant) {
    let mut c = config("VI_1", 1, priority);
    c.src_addr = Some(ip("10.0.1.1"));
    change(&mut c);
    let mut inst = Instance::new(c).expect("valid");
    let t0 = Instant::now();
    inst.handle(Event::Startup, t0);
    let down = inst.timer(TimerKind::MasterDown).expect("armed");
    (inst, t0, down)
}

#[test]
fn a_member_waits_in_backup_until_its_group_lets_it_go() {
    let (mut inst, _, down) = started(150, |c| c.sync_group = true);

    // The Master_Down timer expires: no takeover, a wish, and another look later.
    let actions = inst.handle(Event::TimerExpired(TimerKind::MasterDown), down);
    assert_eq!(inst.state(), State::Backup);
    assert!(inst.wants_master());
    assert_eq!(wants(&actions), [true]);
    assert!(!actions.iter().any(|a| matches!(a, Action::AddVips)));
    assert_eq!(
        inst.timer(TimerKind::MasterDown),
        Some(down + inst.master_down_interval())
    );
    // Expiring again neither repeats the wish nor takes over.
    let again = inst.timer(TimerKind::MasterDown).expect("armed");
    let actions = inst.handle(Event::TimerExpired(TimerKind::MasterDown), again);
    assert!(wants(&actions).is_empty());
    assert_eq!(inst.state(), State::Backup);

    // A lower-priority master's advertisement is discarded (we preempt): still wanting.
    let actions = inst.handle(
        Event::AdvertReceived(advert_from("10.0.1.2", 1, 100)),
        again,
    );
    assert!(wants(&actions).is_empty());
    assert!(inst.wants_master());
    // One from a better master ends the wish.
    let actions = inst.handle(
        Event::AdvertReceived(advert_from("10.0.1.3", 1, 200)),
        again,
    );
    assert_eq!(wants(&actions), [false]);
    assert!(!inst.wants_master());

    // The group says go: Master, with the group as the cause.
    let actions = inst.handle(Event::SyncMaster, again);
    assert_eq!(inst.state(), State::Master);
    assert!(actions.contains(&Action::StateChanged {
        from: State::Backup,
        to: State::Master,
        cause: Cause::SyncGroup,
    }));
    // Already Master: ignored.
    assert!(inst.handle(Event::SyncMaster, again).is_empty());
}

#[test]
fn outside_a_group_the_timer_makes_a_master() {
    let (mut inst, _, down) = started(150, |_| {});
    let actions = inst.handle(Event::TimerExpired(TimerKind::MasterDown), down);
    assert_eq!(inst.state(), State::Master);
    assert!(wants(&actions).is_empty());
}

/// In a group with members that are not owners, an owner waits like `state MASTER`.
#[test]
fn an_owner_in_a_group_asks_its_group_too() {
    let (mut inst, t0, down) = started(255, |c| {
        c.initial_state = keeplb_vrrp::InitialState::Master;
        c.sync_group = true;
    });
    assert_eq!(inst.state(), State::Backup);
    // One interval and the smallest skew (1/256 of it), as keepalived's `state MASTER`.
    assert_eq!(down - t0, Duration::from_micros(1_003_906));
    inst.handle(Event::TimerExpired(TimerKind::MasterDown), down);
    assert_eq!(inst.state(), State::Backup);
    assert!(inst.wants_master());
}

/// keepalived starts a group whose members are all owners with `state MASTER` in
/// MASTER (vrrp_sync_set_group), and vrrp_init_state then makes each member Master at
/// once: no BACKUP first, no interval of waiting, no asking the group.
#[test]
fn a_group_of_owners_starts_master_at_once() {
    let mut c = config("VI_1", 1, 255);
    c.src_addr = Some(ip("10.0.1.1"));
    c.initial_state = keeplb_vrrp::InitialState::Master;
    c.sync_group = true;
    c.sync_group_owners = true;
    let mut inst = Instance::new(c).expect("valid");
    let t0 = Instant::now();
    let actions = inst.handle(Event::Startup, t0);
    assert_eq!(inst.state(), State::Master);
    let changes: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::StateChanged { .. }))
        .collect();
    assert_eq!(
        changes,
        [&Action::StateChanged {
            from: State::Initialize,
            to: State::Master,
            cause: Cause::Startup,
        }]
    );
    assert!(actions.contains(&Action::AddVips));
    assert!(wants(&actions).is_empty());
    assert_eq!(inst.timer(TimerKind::MasterDown), None);
    assert_eq!(
        inst.timer(TimerKind::Advert),
        Some(t0 + Duration::from_secs(1))
    );
}

/// The same on the LAN, with the coordinator: both owners are Master at time 0 and the
/// group MASTER with them; a group with one member that is not an owner still waits.
#[test]
fn on_the_lan_only_a_group_of_owners_skips_the_wait() {
    for (second, at_once) in [(255, true), (200, false)] {
        let mut lan = Lan::new();
        let a = ip("10.0.0.1");
        let mut owner = |name: &str, vrid: u8, priority: u8| {
            let mut c = config(name, vrid, priority);
            c.initial_state = keeplb_vrrp::InitialState::Master;
            lan.add(&format!("A/{name}"), a, c)
        };
        let a1 = owner("VI_1", 1, 255);
        let a2 = owner("VI_2", 2, second);
        lan.sync_group("A", &[a1, a2]);
        lan.start(a1);
        lan.start(a2);
        lan.run_until(Duration::ZERO);
        let text = log(&lan);
        if at_once {
            assert_eq!(lan.vip_holders(), ["A/VI_1", "A/VI_2"], "{text}");
            // keepalived's group starts MASTER: no BACKUP, and no group notification.
            assert_eq!(lan.group_state(0), State::Master, "{text}");
            assert!(!text.contains("BACKUP"), "{text}");
            assert!(!text.contains("group"), "{text}");
        } else {
            assert!(lan.vip_holders().is_empty(), "{text}");
            assert_eq!(lan.state(a1), Some(State::Backup), "{text}");
        }
        // Either way the group ends up MASTER.
        lan.run_until(secs(10));
        assert_eq!(lan.vip_holders(), ["A/VI_1", "A/VI_2"], "{}", log(&lan));
    }
}

/// keepalived 2.2.7 with two owners (`state MASTER`, priority 255) in a group: both
/// enter MASTER within 0.15 s of start, and the group's notify scripts first run at
/// shutdown (STOP), never for MASTER.
#[test]
fn a_group_of_owners_notifies_its_first_real_change_only() {
    let mut g = SyncGroup::new("G", ["VI_1", "VI_2"]).starting_master();
    assert_eq!(g.state(), State::Master);
    assert!(g.report(0, State::Master, false).is_empty());
    assert!(g.report(1, State::Master, false).is_empty());
    assert!(g.report(0, State::Initialize, false).is_empty());
    assert_eq!(
        g.report(1, State::Initialize, false),
        [SyncCommand::GroupState(State::Initialize)]
    );
}

#[test]
fn the_group_goes_master_only_when_every_member_wants_it() {
    let mut g = SyncGroup::new("G", ["VI_1", "VI_2", "VI_3"]);
    assert!(g.report(0, State::Backup, false).is_empty());
    assert!(g.report(1, State::Backup, false).is_empty());
    assert_eq!(
        g.report(2, State::Backup, false),
        [SyncCommand::GroupState(State::Backup)]
    );
    assert!(g.report(0, State::Backup, true).is_empty());
    assert!(g.report(2, State::Backup, true).is_empty());
    // The last one: all waiting members go, each asked once.
    assert_eq!(
        g.report(1, State::Backup, true),
        [
            SyncCommand::Master { member: 0 },
            SyncCommand::Master { member: 1 },
            SyncCommand::Master { member: 2 },
        ]
    );
    assert!(g.report(1, State::Backup, true).is_empty());
    assert!(g.report(0, State::Master, false).is_empty());
    assert!(g.report(1, State::Master, false).is_empty());
    assert_eq!(
        g.report(2, State::Master, false),
        [SyncCommand::GroupState(State::Master)]
    );
    // A master beaten to Backup takes the others with it; the group is BACKUP at once.
    assert_eq!(
        g.report(1, State::Backup, false),
        [
            SyncCommand::Backup { member: 0 },
            SyncCommand::Backup { member: 2 },
            SyncCommand::GroupState(State::Backup),
        ]
    );
}

#[test]
fn a_member_in_fault_holds_the_group_and_releases_it() {
    let mut g = SyncGroup::new("G", ["VI_1", "VI_2"]);
    g.report(0, State::Backup, false);
    g.report(1, State::Backup, false);
    assert_eq!(
        g.report(0, State::Fault, false),
        [
            SyncCommand::ForceFault {
                member: 1,
                fault: true
            },
            SyncCommand::GroupState(State::Fault),
        ]
    );
    // The forced member in FAULT changes nothing; wishes do not count during a FAULT.
    assert!(g.report(1, State::Fault, false).is_empty());
    assert_eq!(
        g.report(0, State::Backup, false),
        [SyncCommand::ForceFault {
            member: 1,
            fault: false
        }]
    );
    // Until the released member confirms its state, the group stays in FAULT, and a
    // waiting member is not sent to Master.
    assert!(g.report(0, State::Backup, true).is_empty());
    assert_eq!(
        g.report(1, State::Backup, true),
        [
            SyncCommand::Master { member: 0 },
            SyncCommand::Master { member: 1 },
            SyncCommand::GroupState(State::Backup),
        ]
    );
}

/// Two directors, each with VI_1 (VRID 1) and VI_2 (VRID 2) in one sync group. B has
/// priority 120 for both; A has 150 for VI_1 but 100 for VI_2.
fn two_directors(grouped: bool) -> (Lan, [usize; 4]) {
    let mut lan = Lan::new();
    let a = ip("10.0.0.1");
    let b = ip("10.0.0.2");
    let a1 = lan.add("A/VI_1", a, config("VI_1", 1, 150));
    let a2 = lan.add("A/VI_2", a, config("VI_2", 2, 100));
    let b1 = lan.add("B/VI_1", b, config("VI_1", 1, 120));
    let b2 = lan.add("B/VI_2", b, config("VI_2", 2, 120));
    if grouped {
        lan.sync_group("A", &[a1, a2]);
        lan.sync_group("B", &[b1, b2]);
    }
    (lan, [a1, a2, b1, b2])
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn without_sync_groups_the_directors_split_the_instances() {
    let (mut lan, [a1, a2, b1, b2]) = two_directors(false);
    lan.start(b1);
    lan.start(b2);
    lan.run_until(secs(10));
    lan.start(a1);
    lan.start(a2);
    lan.run_until(secs(40));
    // A preempts VI_1 and B keeps VI_2: one director per VIP.
    assert_eq!(lan.vip_holders(), ["A/VI_1", "B/VI_2"]);
}

#[test]
fn a_member_that_could_preempt_waits_for_its_group() {
    let (mut lan, [a1, a2, b1, b2]) = two_directors(true);
    lan.start(b1);
    lan.start(b2);
    lan.run_until(secs(10));
    assert_eq!(lan.vip_holders(), ["B/VI_1", "B/VI_2"]);
    assert_eq!(lan.group_state(1), State::Master);

    lan.start(a1);
    lan.start(a2);
    lan.run_until(secs(40));
    // A's VI_1 would preempt, but A's VI_2 is held by a better master: A stays BACKUP
    // and B keeps both, from start to end.
    assert_eq!(lan.vip_holders(), ["B/VI_1", "B/VI_2"], "{}", log(&lan));
    assert_eq!(lan.state(a1), Some(State::Backup));
    assert_eq!(lan.group_state(0), State::Backup);
    let text = log(&lan);
    assert!(text.contains("A/VI_1 wants-master true"), "{text}");
    assert!(!text.contains("B/VI_1 state MASTER->BACKUP"), "{text}");

    // A's VI_2 gains priority (tracking): now every member of A's group can be MASTER,
    // so both go together, and B's group follows its beaten members to BACKUP.
    let at = lan.now();
    lan.event(a2, Event::PriorityChanged(130));
    lan.run_until(at + secs(20));
    assert_eq!(lan.vip_holders(), ["A/VI_1", "A/VI_2"], "{}", log(&lan));
    assert_eq!(lan.group_state(0), State::Master);
    assert_eq!(lan.group_state(1), State::Backup);
    assert_eq!(lan.state(b1), Some(State::Backup));
    assert_eq!(lan.state(b2), Some(State::Backup));
}

fn log(lan: &Lan) -> String {
    lan.log
        .iter()
        .filter(|l| !l.text.starts_with("advert"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// keepalived's vrrp_state_master_rx: a master member that receives a lower-priority
/// advertisement sends its lower-priority gratuitous ARP burst, and so does every other
/// member holding its addresses, each with its own repeat and delay (members that are
/// not master: `a_member_announces_for_its_group_only_as_master`).
#[test]
fn a_lower_priority_advert_makes_every_master_member_announce() {
    let mut lan = Lan::new();
    let a = ip("10.0.0.1");
    let a1 = lan.add("A/VI_1", a, config("VI_1", 1, 150));
    let mut c2 = config("VI_2", 2, 150);
    c2.garp.lower_prio_repeat = 2;
    c2.garp.lower_prio_delay = secs(3);
    let a2 = lan.add("A/VI_2", a, c2);
    lan.sync_group("A", &[a1, a2]);
    lan.start(a1);
    lan.start(a2);
    lan.run_until(secs(20));
    assert_eq!(lan.vip_holders(), ["A/VI_1", "A/VI_2"], "{}", log(&lan));
    let before = lan.log.len();

    let at = lan.now();
    lan.event(a1, Event::AdvertReceived(advert_from("10.0.0.9", 1, 100)));
    lan.run_until(at + secs(6));
    let garps: Vec<String> = lan.log[before..]
        .iter()
        .filter(|l| l.text.starts_with("garp") || l.text.starts_with("rx-lower"))
        .map(|l| format!("{l}"))
        .collect();
    let t = |d: Duration| lan::fmt_time(at + d);
    assert_eq!(
        garps,
        [
            format!("{} A/VI_1 garp x5", t(Duration::ZERO)),
            format!(
                "{} A/VI_1 rx-lower-prio from=10.0.0.9 prio=100",
                t(Duration::ZERO)
            ),
            format!("{} A/VI_2 garp x2", t(Duration::ZERO)),
            format!("{} A/VI_2 garp x2", t(secs(3))),
            format!("{} A/VI_1 garp x5", t(secs(5))),
        ],
        "{}",
        log(&lan)
    );
}

/// The member side: a master sends its burst and arms the delayed one; a backup, or a
/// master with `garp_lower_prio_repeat 0`, sends nothing.
#[test]
fn a_member_announces_for_its_group_only_as_master() {
    let (mut backup, t0, _) = started(150, |c| c.sync_group = true);
    assert!(backup.handle(Event::SyncLowerPriorityGarp, t0).is_empty());

    let (mut inst, _, down) = started(150, |c| c.sync_group = true);
    inst.handle(Event::TimerExpired(TimerKind::MasterDown), down);
    inst.handle(Event::SyncMaster, down);
    assert_eq!(inst.state(), State::Master);
    let at = down + secs(1);
    let actions = inst.handle(Event::SyncLowerPriorityGarp, at);
    assert_eq!(
        actions,
        [
            Action::SendGratuitous {
                addresses: vec![ip("10.0.1.100")],
                repeat: 5,
            },
            Action::ArmTimer {
                kind: TimerKind::GarpLowerPrio,
                at: at + secs(5),
            },
        ]
    );

    let (mut silent, _, down) = started(150, |c| {
        c.sync_group = true;
        c.garp.lower_prio_repeat = 0;
    });
    silent.handle(Event::TimerExpired(TimerKind::MasterDown), down);
    silent.handle(Event::SyncMaster, down);
    assert!(silent.handle(Event::SyncLowerPriorityGarp, down).is_empty());
}

/// The coordinator: every other member, whatever the group believes their state.
#[test]
fn the_group_passes_a_lower_priority_advert_to_the_other_members() {
    let g = SyncGroup::new("G", ["VI_1", "VI_2", "VI_3"]);
    assert_eq!(
        g.lower_priority_received(1),
        [
            SyncCommand::LowerPriorityGarp { member: 0 },
            SyncCommand::LowerPriorityGarp { member: 2 },
        ]
    );
    assert!(g.lower_priority_received(3).is_empty());
}
