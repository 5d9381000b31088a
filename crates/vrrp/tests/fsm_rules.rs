//! One test per state-machine rule, on a single instance with a virtual clock: timers are
//! deadlines in the returned actions, and the test decides when they expire.

use std::net::IpAddr;
use std::time::Duration;

use keeplb_vrrp::packet::{MULTICAST_V4, PRIORITY_OWNER};
use keeplb_vrrp::{
    Action, AddressCheck, AdverInterval, Advertisement, Auth, AuthPassword, Cause, ChecksumForm,
    DropReason, EncodeContext, Event, InitialState, Instance, InstanceConfig, MasterInfo, Received,
    State, TimerKind, Transport, UnicastPeer, Version,
};
use tokio::time::Instant;

const OURS: &str = "10.0.0.1";
const VIP: &str = "10.0.0.100";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn group() -> IpAddr {
    IpAddr::V4(MULTICAST_V4)
}

/// VRRPv2, VRID 51, priority `priority`, one VIP, source 10.0.0.1.
fn cfg(priority: u8) -> InstanceConfig {
    let mut c = InstanceConfig::new("VI_1", 51, Version::V2, vec![ip(VIP)]);
    c.priority = priority;
    c.src_addr = Some(ip(OURS));
    c
}

fn v3_cfg(priority: u8, centis: u16) -> InstanceConfig {
    let mut c = cfg(priority);
    c.version = Version::V3;
    c.adver_int = AdverInterval::from_centis(centis);
    c
}

struct Rig {
    inst: Instance,
    t0: Instant,
}

impl Rig {
    fn new(config: InstanceConfig) -> Self {
        Rig {
            inst: Instance::new(config).expect("valid config"),
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn handle(&mut self, event: Event, secs: f64) -> Vec<Action> {
        let now = self.at(secs);
        self.inst.handle(event, now)
    }

    fn start(&mut self) -> Vec<Action> {
        self.handle(Event::Startup, 0.0)
    }

    /// Fires the armed timer of `kind` at its deadline.
    fn fire(&mut self, kind: TimerKind) -> Vec<Action> {
        let at = self.inst.timer(kind).expect("timer armed");
        self.inst.handle(Event::TimerExpired(kind), at)
    }

    /// Starts a non-owner and lets its Master_Down timer make it Master.
    fn master(config: InstanceConfig) -> Self {
        let mut rig = Rig::new(config);
        rig.start();
        rig.fire(TimerKind::MasterDown);
        assert_eq!(rig.inst.state(), State::Master);
        rig
    }

    /// An advertisement like ours (same version, VRID, interval, auth, addresses) from
    /// `src` with `priority`, to the multicast group, TTL 255.
    fn advert(&self, priority: u8) -> Advertisement {
        let c = self.inst.config();
        Advertisement {
            version: c.version,
            vrid: c.vrid,
            priority,
            adver_int: c.adver_int,
            auth: c.auth,
            addresses: c.vips.clone(),
        }
    }

    fn receive(&mut self, src: &str, priority: u8, secs: f64) -> Vec<Action> {
        let advert = self.advert(priority);
        self.receive_advert(&advert, src, secs)
    }

    fn receive_advert(&mut self, advert: &Advertisement, src: &str, secs: f64) -> Vec<Action> {
        let rx = received(advert, ip(src), group(), Some(255));
        self.handle(Event::AdvertReceived(rx), secs)
    }
}

fn received(advert: &Advertisement, src: IpAddr, dst: IpAddr, ttl: Option<u8>) -> Received {
    let payload = advert
        .encode(&EncodeContext {
            src,
            dst,
            checksum_form: ChecksumForm::PseudoHeader,
        })
        .expect("encode");
    Received {
        src,
        dst,
        ttl,
        payload,
    }
}

fn sent(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendAdvert(out) => Some(out.priority()),
            _ => None,
        })
        .collect()
}

fn armed(actions: &[Action], kind: TimerKind) -> Option<Instant> {
    actions.iter().rev().find_map(|a| match a {
        Action::ArmTimer { kind: k, at } if *k == kind => Some(*at),
        _ => None,
    })
}

fn drops(actions: &[Action]) -> Vec<DropReason> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CountDrop(r) => Some(*r),
            _ => None,
        })
        .collect()
}

fn transition(actions: &[Action]) -> Option<(State, State, Cause)> {
    actions.iter().find_map(|a| match a {
        Action::StateChanged { from, to, cause } => Some((*from, *to, *cause)),
        _ => None,
    })
}

fn micros(us: u64) -> Duration {
    Duration::from_micros(us)
}

// ===== startup =====

#[test]
fn owner_becomes_master_at_once_in_keepalived_order() {
    let mut c = cfg(PRIORITY_OWNER);
    c.initial_state = InitialState::Master;
    c.excluded_vips = vec![ip("10.0.0.200")];
    let mut rig = Rig::new(c);
    let actions = rig.start();
    let t0 = rig.t0;
    let Some(Action::SendAdvert(out)) = actions.first() else {
        panic!("advertise first: {actions:?}");
    };
    assert_eq!(out.priority(), 255);
    assert_eq!(out.destinations, vec![group()]);
    assert_eq!(out.ttl, 255);
    assert_eq!(out.src, ip(OURS));
    assert_eq!(
        actions[1..],
        [
            Action::ArmTimer {
                kind: TimerKind::Advert,
                at: t0 + Duration::from_secs(1)
            },
            Action::AddVips,
            Action::SendGratuitous {
                addresses: vec![ip(VIP), ip("10.0.0.200")],
                repeat: 5
            },
            Action::ArmTimer {
                kind: TimerKind::GarpDelayed,
                at: t0 + Duration::from_secs(5)
            },
            Action::StateChanged {
                from: State::Initialize,
                to: State::Master,
                cause: Cause::Startup
            },
        ]
    );
    assert_eq!(rig.inst.stats().became_master, 1);
}

#[test]
fn backup_waits_master_down_interval() {
    let mut rig = Rig::new(cfg(100));
    let actions = rig.start();
    // 3 s + (256 - 100)/256 s.
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.t0 + micros(3_609_375))
    );
    assert_eq!(
        transition(&actions),
        Some((State::Initialize, State::Backup, Cause::Startup))
    );
    assert!(sent(&actions).is_empty());
    let actions = rig.fire(TimerKind::MasterDown);
    assert_eq!(sent(&actions), [100]);
    assert!(actions.contains(&Action::AddVips));
    assert_eq!(
        transition(&actions),
        Some((State::Backup, State::Master, Cause::MasterDown))
    );
}

#[test]
fn state_master_without_ownership_waits_one_interval_and_minimum_skew() {
    let mut c = cfg(100);
    c.initial_state = InitialState::Master;
    let mut rig = Rig::new(c);
    let actions = rig.start();
    assert_eq!(rig.inst.state(), State::Backup);
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.t0 + micros(1_003_906))
    );
}

#[test]
fn owner_with_state_backup_waits_like_any_backup() {
    let mut c = cfg(PRIORITY_OWNER);
    c.initial_state = InitialState::Backup;
    let mut rig = Rig::new(c);
    let actions = rig.start();
    assert_eq!(rig.inst.state(), State::Backup);
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.t0 + micros(3_003_906))
    );
}

#[test]
fn v3_master_down_uses_centiseconds() {
    let mut rig = Rig::new(v3_cfg(200, 50));
    let actions = rig.start();
    // 3 * 0.5 s + (56 * 50 cs)/256 = 1.5 + 0.109375.
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.t0 + micros(1_609_375))
    );
}

#[test]
fn down_timer_adverts_scales_master_down() {
    let mut c = cfg(100);
    c.down_timer_adverts = 5;
    let mut rig = Rig::new(c);
    let actions = rig.start();
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.t0 + micros(5_609_375))
    );
}

#[test]
fn startup_twice_is_ignored() {
    let mut rig = Rig::new(cfg(100));
    rig.start();
    assert!(rig.handle(Event::Startup, 1.0).is_empty());
}

#[test]
fn without_source_address_the_instance_is_faulty_until_the_interface_has_one() {
    let mut c = cfg(100);
    c.src_addr = None;
    let mut rig = Rig::new(c);
    let actions = rig.start();
    assert_eq!(
        transition(&actions),
        Some((State::Initialize, State::Fault, Cause::NoSourceAddress))
    );
    let actions = rig.handle(
        Event::InterfaceUp {
            primary: Some(ip("10.0.0.9")),
        },
        1.0,
    );
    assert_eq!(
        transition(&actions),
        Some((State::Fault, State::Backup, Cause::InterfaceUp))
    );
    assert_eq!(rig.inst.source_address(), Some(ip("10.0.0.9")));
    rig.fire(TimerKind::MasterDown);
    let actions = rig.fire(TimerKind::Advert);
    let Some(Action::SendAdvert(out)) = actions.first() else {
        panic!("{actions:?}");
    };
    assert_eq!(out.src, ip("10.0.0.9"));
}

// ===== backup receiving =====

#[test]
fn backup_resets_timer_on_higher_or_equal_priority() {
    let mut rig = Rig::new(cfg(100));
    rig.start();
    for (prio, at) in [(150, 1.0), (100, 2.0)] {
        let actions = rig.receive("10.0.0.2", prio, at);
        assert_eq!(
            armed(&actions, TimerKind::MasterDown),
            Some(rig.at(at) + micros(3_609_375)),
            "priority {prio}"
        );
    }
    assert_eq!(
        rig.inst.master(),
        Some(MasterInfo {
            addr: ip("10.0.0.2"),
            priority: 100
        })
    );
    assert_eq!(rig.inst.stats().adverts_received, 2);
}

#[test]
fn preempting_backup_discards_lower_priority() {
    let mut rig = Rig::new(cfg(100));
    rig.start();
    let deadline = rig.inst.timer(TimerKind::MasterDown);
    let actions = rig.receive("10.0.0.2", 50, 1.0);
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(rig.inst.timer(TimerKind::MasterDown), deadline);
}

#[test]
fn nopreempt_backup_accepts_lower_priority() {
    let mut c = cfg(100);
    c.preempt = false;
    let mut rig = Rig::new(c);
    rig.start();
    let actions = rig.receive("10.0.0.2", 50, 1.0);
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.at(1.0) + micros(3_609_375))
    );
}

#[test]
fn priority_zero_shortens_the_wait_to_skew_time() {
    let mut rig = Rig::new(cfg(100));
    rig.start();
    let actions = rig.receive("10.0.0.2", 0, 1.0);
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.at(1.0) + micros(609_375))
    );
    assert_eq!(rig.inst.stats().priority_zero_received, 1);
    // Even with nopreempt.
    let mut c = cfg(100);
    c.preempt = false;
    let mut rig = Rig::new(c);
    rig.start();
    let actions = rig.receive("10.0.0.2", 0, 1.0);
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.at(1.0) + micros(609_375))
    );
}

#[test]
fn preempt_delay_accepts_lower_priority_until_it_ends() {
    let mut c = cfg(200);
    c.preempt_delay = Duration::from_secs(10);
    let mut rig = Rig::new(c);
    rig.start();
    // The first lower-priority advert starts the delay and is accepted.
    let a = rig.receive("10.0.0.2", 100, 1.0);
    assert!(armed(&a, TimerKind::MasterDown).is_some());
    let a = rig.receive("10.0.0.2", 100, 10.5);
    assert!(armed(&a, TimerKind::MasterDown).is_some());
    // At the end of the delay (1 + 10 s) they are discarded.
    let a = rig.receive("10.0.0.2", 100, 11.0);
    assert!(a.is_empty(), "{a:?}");
    // A higher-priority master stops the delay; the next lower one starts a new one.
    rig.receive("10.0.0.3", 250, 12.0);
    let a = rig.receive("10.0.0.2", 100, 13.0);
    assert!(armed(&a, TimerKind::MasterDown).is_some());
}

#[test]
fn v3_backup_adopts_the_masters_interval() {
    let mut rig = Rig::new(v3_cfg(100, 200));
    rig.start();
    let mut advert = rig.advert(200);
    advert.adver_int = AdverInterval::from_centis(50);
    let actions = rig.receive_advert(&advert, "10.0.0.2", 1.0);
    assert!(drops(&actions).is_empty(), "VRRPv3 must not drop");
    assert_eq!(rig.inst.master_adver_int(), AdverInterval::from_centis(50));
    // 3 * 0.5 + (156 * 50 cs)/256 = 1.804687 (µs rounded down as keepalived).
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.at(1.0) + micros(1_804_687))
    );
    // As master it advertises its own interval again.
    rig.fire(TimerKind::MasterDown);
    assert_eq!(rig.inst.master_adver_int(), AdverInterval::from_centis(200));
    let actions = rig.fire(TimerKind::Advert);
    let Some(Action::SendAdvert(out)) = actions.first() else {
        panic!("{actions:?}");
    };
    assert_eq!(out.advert.adver_int, AdverInterval::from_centis(200));
}

#[test]
fn v2_interval_mismatch_is_dropped() {
    let mut rig = Rig::new(cfg(100));
    rig.start();
    let mut advert = rig.advert(200);
    advert.adver_int = AdverInterval::from_secs(2);
    let actions = rig.receive_advert(&advert, "10.0.0.2", 1.0);
    assert_eq!(drops(&actions), [DropReason::IntervalMismatch]);
    assert_eq!(rig.inst.master(), None);
}

// ===== master receiving =====

#[test]
fn master_yields_to_higher_priority() {
    let mut rig = Rig::master(v3_cfg(100, 100));
    let mut advert = rig.advert(150);
    advert.adver_int = AdverInterval::from_centis(300);
    let actions = rig.receive_advert(&advert, "10.0.0.2", 10.0);
    assert!(sent(&actions).is_empty());
    assert!(actions.contains(&Action::RemoveVips));
    assert!(actions.contains(&Action::CancelTimer(TimerKind::Advert)));
    assert_eq!(
        transition(&actions),
        Some((State::Master, State::Backup, Cause::HigherPriority))
    );
    // Master_Down with the adopted 3 s interval: 9 + (156 * 300 cs)/256 = 9 + 1.828125.
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.at(10.0) + micros(10_828_125))
    );
    assert_eq!(rig.inst.stats().released_master, 1);
}

#[test]
fn master_yields_to_equal_priority_from_greater_address_only() {
    let mut rig = Rig::master(cfg(100));
    let actions = rig.receive("10.0.0.2", 100, 10.0);
    assert_eq!(
        transition(&actions),
        Some((
            State::Master,
            State::Backup,
            Cause::EqualPriorityGreaterAddress
        ))
    );

    let mut rig = Rig::master(cfg(100));
    let actions = rig.receive("9.0.0.1", 100, 10.0);
    assert_eq!(rig.inst.state(), State::Master);
    assert_eq!(sent(&actions), [100]);
}

#[test]
fn master_answers_lower_priority_at_once() {
    let mut rig = Rig::master(cfg(200));
    let actions = rig.receive("10.0.0.2", 100, 10.2);
    assert_eq!(sent(&actions), [200]);
    // The advertisement timer restarts from the answer.
    assert_eq!(
        armed(&actions, TimerKind::Advert),
        Some(rig.at(10.2) + Duration::from_secs(1))
    );
    assert!(actions.contains(&Action::SendGratuitous {
        addresses: vec![ip(VIP)],
        repeat: 5
    }));
    assert_eq!(
        armed(&actions, TimerKind::GarpLowerPrio),
        Some(rig.at(10.2) + Duration::from_secs(5))
    );
    assert!(actions.contains(&Action::MasterReceivedLowerPriority {
        from: ip("10.0.0.2"),
        priority: 100
    }));
    assert_eq!(rig.inst.state(), State::Master);
    let actions = rig.fire(TimerKind::GarpLowerPrio);
    assert_eq!(
        actions,
        [Action::SendGratuitous {
            addresses: vec![ip(VIP)],
            repeat: 5
        }]
    );
}

#[test]
fn lower_prio_no_advert_stays_silent() {
    let mut c = cfg(200);
    c.lower_prio_no_advert = true;
    c.garp.lower_prio_repeat = 0;
    let mut rig = Rig::master(c);
    let actions = rig.receive("10.0.0.2", 100, 10.2);
    assert_eq!(
        actions,
        [Action::MasterReceivedLowerPriority {
            from: ip("10.0.0.2"),
            priority: 100
        }]
    );
}

#[test]
fn master_answers_priority_zero() {
    let mut c = cfg(200);
    c.lower_prio_no_advert = true;
    let mut rig = Rig::master(c);
    let actions = rig.receive("10.0.0.2", 0, 10.2);
    assert_eq!(sent(&actions), [200]);
    assert_eq!(rig.inst.state(), State::Master);
}

#[test]
fn higher_prio_send_advert_sends_before_yielding() {
    let mut c = cfg(100);
    c.higher_prio_send_advert = true;
    let mut rig = Rig::master(c);
    let actions = rig.receive("10.0.0.2", 150, 10.0);
    assert_eq!(sent(&actions), [100]);
    assert_eq!(rig.inst.state(), State::Backup);
}

#[test]
fn two_owners_the_one_that_hears_the_other_lowers_itself() {
    let mut c = cfg(PRIORITY_OWNER);
    c.initial_state = InitialState::Master;
    let mut rig = Rig::new(c);
    rig.start();
    let actions = rig.receive("10.0.0.2", 255, 1.0);
    assert_eq!(rig.inst.effective_priority(), 254);
    assert!(!rig.inst.is_owner());
    assert_eq!(
        transition(&actions),
        Some((State::Master, State::Backup, Cause::HigherPriority))
    );
}

// ===== shutdown and faults =====

#[test]
fn master_shutdown_resigns_with_priority_zero() {
    let mut rig = Rig::master(cfg(100));
    let actions = rig.handle(Event::Shutdown, 20.0);
    assert_eq!(sent(&actions), [0]);
    assert!(actions.contains(&Action::RemoveVips));
    for kind in [TimerKind::Advert, TimerKind::GarpDelayed] {
        assert!(actions.contains(&Action::CancelTimer(kind)), "{kind:?}");
    }
    assert_eq!(
        transition(&actions),
        Some((State::Master, State::Initialize, Cause::Shutdown))
    );
    assert_eq!(rig.inst.stats().priority_zero_sent, 1);
    // Stopped: adverts are ignored, timers never come back.
    let actions = rig.receive("10.0.0.2", 100, 21.0);
    assert_eq!(drops(&actions), [DropReason::Inactive]);
}

#[test]
fn backup_shutdown_sends_nothing() {
    let mut rig = Rig::new(cfg(100));
    rig.start();
    let actions = rig.handle(Event::Shutdown, 1.0);
    assert!(sent(&actions).is_empty());
    assert!(!actions.contains(&Action::RemoveVips));
    assert_eq!(actions[0], Action::CancelTimer(TimerKind::MasterDown));
}

#[test]
fn tracking_fault_resigns_and_recovers_to_backup() {
    let mut rig = Rig::master(cfg(100));
    let actions = rig.handle(Event::ForceFault, 20.0);
    assert_eq!(sent(&actions), [0]);
    assert!(actions.contains(&Action::RemoveVips));
    assert_eq!(
        transition(&actions),
        Some((State::Master, State::Fault, Cause::TrackingFault))
    );
    assert_eq!(
        drops(&rig.receive("10.0.0.2", 50, 20.5)),
        [DropReason::Inactive]
    );
    let actions = rig.handle(Event::ClearFault, 21.0);
    assert_eq!(
        transition(&actions),
        Some((State::Fault, State::Backup, Cause::TrackingRecovered))
    );
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.at(21.0) + micros(3_609_375))
    );
}

#[test]
fn sync_backup_takes_a_master_to_backup_and_nothing_else() {
    let mut rig = Rig::master(cfg(100));
    let actions = rig.handle(Event::SyncBackup, 20.0);
    assert!(sent(&actions).is_empty());
    assert!(actions.contains(&Action::RemoveVips));
    assert_eq!(
        transition(&actions),
        Some((State::Master, State::Backup, Cause::SyncGroup))
    );
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.at(20.0) + micros(3_609_375))
    );
    // Already BACKUP: nothing to do.
    assert!(rig.handle(Event::SyncBackup, 21.0).is_empty());
    assert_eq!(rig.inst.state(), State::Backup);
    // FAULT stays FAULT.
    rig.handle(Event::ForceFault, 22.0);
    assert!(rig.handle(Event::SyncBackup, 23.0).is_empty());
    assert_eq!(rig.inst.state(), State::Fault);
}

#[test]
fn interface_down_master_cannot_resign_but_drops_addresses() {
    let mut rig = Rig::master(cfg(100));
    let actions = rig.handle(Event::InterfaceDown, 20.0);
    assert!(sent(&actions).is_empty());
    assert!(actions.contains(&Action::RemoveVips));
    assert_eq!(rig.inst.state(), State::Fault);
    // Tracking clears, but the link is still down.
    rig.handle(Event::ForceFault, 21.0);
    assert!(rig.handle(Event::ClearFault, 22.0).is_empty());
    assert_eq!(rig.inst.state(), State::Fault);
    let actions = rig.handle(Event::InterfaceUp { primary: None }, 23.0);
    assert_eq!(
        transition(&actions),
        Some((State::Fault, State::Backup, Cause::InterfaceUp))
    );
}

#[test]
fn faults_before_startup_hold_the_instance_in_fault() {
    let mut rig = Rig::new(cfg(100));
    assert!(rig.handle(Event::ForceFault, 0.0).is_empty());
    let actions = rig.start();
    assert_eq!(
        transition(&actions),
        Some((State::Initialize, State::Fault, Cause::TrackingFault))
    );
}

#[test]
fn owner_leaving_fault_is_master_at_once() {
    let mut c = cfg(PRIORITY_OWNER);
    c.initial_state = InitialState::Master;
    let mut rig = Rig::new(c);
    rig.start();
    rig.handle(Event::InterfaceDown, 1.0);
    let actions = rig.handle(Event::InterfaceUp { primary: None }, 2.0);
    assert_eq!(
        transition(&actions),
        Some((State::Fault, State::Master, Cause::InterfaceUp))
    );
}

// ===== priority =====

#[test]
fn effective_priority_is_clamped_and_moves_the_backup_deadline() {
    let mut rig = Rig::new(cfg(100));
    rig.start();
    let before = rig.inst.timer(TimerKind::MasterDown).expect("armed");
    // 100 -> 200: Skew_Time shrinks from 156/256 to 56/256 s.
    let actions = rig.handle(Event::PriorityChanged(200), 1.0);
    assert_eq!(rig.inst.effective_priority(), 200);
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(before - micros(390_625))
    );
    rig.handle(Event::PriorityChanged(300), 1.0);
    assert_eq!(rig.inst.effective_priority(), 254);
    rig.handle(Event::PriorityChanged(-40), 1.0);
    assert_eq!(rig.inst.effective_priority(), 1);
    assert!(rig.handle(Event::PriorityChanged(-41), 1.0).is_empty());
}

#[test]
fn owner_ignores_tracking() {
    let mut c = cfg(PRIORITY_OWNER);
    c.initial_state = InitialState::Master;
    let mut rig = Rig::new(c);
    rig.start();
    assert!(rig.handle(Event::PriorityChanged(100), 1.0).is_empty());
    assert_eq!(rig.inst.effective_priority(), 255);
}

#[test]
fn master_advertises_its_new_priority() {
    let mut rig = Rig::master(cfg(100));
    rig.handle(Event::PriorityChanged(80), 5.0);
    let actions = rig.fire(TimerKind::Advert);
    assert_eq!(sent(&actions), [80]);
}

// ===== timers =====

#[test]
fn stale_and_early_timers_are_ignored() {
    let mut rig = Rig::new(cfg(100));
    rig.start();
    // Nothing armed for Advert in Backup.
    assert!(
        rig.handle(Event::TimerExpired(TimerKind::Advert), 1.0)
            .is_empty()
    );
    // Master_Down is due at 3.609375, not yet.
    assert!(
        rig.handle(Event::TimerExpired(TimerKind::MasterDown), 3.0)
            .is_empty()
    );
    assert_eq!(rig.inst.state(), State::Backup);
    // Re-armed by an advert: the old deadline is stale.
    rig.receive("10.0.0.2", 150, 1.0);
    assert!(
        rig.handle(Event::TimerExpired(TimerKind::MasterDown), 3.7)
            .is_empty()
    );
    assert_eq!(rig.inst.state(), State::Backup);
}

#[test]
fn adverts_every_interval_and_garp_plan() {
    let mut c = cfg(100);
    c.garp.master_refresh = Duration::from_secs(30);
    c.garp.master_refresh_repeat = 2;
    let mut rig = Rig::new(c);
    rig.start();
    let actions = rig.fire(TimerKind::MasterDown);
    let t = rig.inst.timer(TimerKind::Advert).expect("advert armed");
    assert_eq!(
        armed(&actions, TimerKind::GarpRefresh),
        Some(t - Duration::from_secs(1) + Duration::from_secs(30))
    );
    let actions = rig.fire(TimerKind::Advert);
    assert_eq!(sent(&actions), [100]);
    assert_eq!(
        armed(&actions, TimerKind::Advert),
        Some(t + Duration::from_secs(1))
    );
    let actions = rig.fire(TimerKind::GarpDelayed);
    assert_eq!(
        actions,
        [Action::SendGratuitous {
            addresses: vec![ip(VIP)],
            repeat: 5
        }]
    );
    let actions = rig.fire(TimerKind::GarpRefresh);
    assert!(actions.contains(&Action::SendGratuitous {
        addresses: vec![ip(VIP)],
        repeat: 2
    }));
    assert!(armed(&actions, TimerKind::GarpRefresh).is_some());
}

/// The instance runs on tokio's clock, so the daemon can use paused time in its tests.
#[tokio::test(start_paused = true)]
async fn works_with_paused_tokio_time() {
    let mut inst = Instance::new(cfg(100)).expect("valid");
    let actions = inst.handle(Event::Startup, Instant::now());
    let deadline = armed(&actions, TimerKind::MasterDown).expect("armed");
    tokio::time::sleep_until(deadline).await;
    let actions = inst.handle(Event::TimerExpired(TimerKind::MasterDown), Instant::now());
    assert_eq!(inst.state(), State::Master);
    assert_eq!(sent(&actions), [100]);
}

// ===== receive checks =====

#[test]
fn receive_checks_each_have_their_reason() {
    let mut c = cfg(100);
    c.auth = Auth::Password(AuthPassword::new(b"secret"));
    let mut rig = Rig::new(c);
    rig.start();
    let good = rig.advert(150);
    let src = ip("10.0.0.2");
    let check = |rig: &mut Rig, rx: Received, want: DropReason| {
        let actions = rig.handle(Event::AdvertReceived(rx), 1.0);
        assert_eq!(drops(&actions), [want]);
        assert_eq!(rig.inst.state(), State::Backup);
        assert_eq!(rig.inst.master(), None, "{want:?} must not be processed");
    };

    // TTL must be 255 on multicast.
    check(
        &mut rig,
        received(&good, src, group(), Some(64)),
        DropReason::Ttl,
    );
    // Our own advertisement looped back.
    check(
        &mut rig,
        received(&good, ip(OURS), group(), Some(255)),
        DropReason::OwnAdvert,
    );
    // Codec errors.
    let mut rx = received(&good, src, group(), Some(255));
    rx.payload.truncate(4);
    check(&mut rig, rx, DropReason::TooShort);
    let mut rx = received(&good, src, group(), Some(255));
    rx.payload.push(0);
    check(&mut rig, rx, DropReason::BadLength);
    let mut rx = received(&good, src, group(), Some(255));
    rx.payload[2] ^= 1;
    check(&mut rig, rx, DropReason::BadChecksum);
    let mut rx = received(&good, src, group(), Some(255));
    rx.payload[0] = 0x22;
    check(&mut rig, rx, DropReason::BadType);
    // A valid VRRPv3 advertisement on a VRRPv2 instance.
    let mut v3 = good.clone();
    v3.version = Version::V3;
    v3.auth = Auth::None;
    check(
        &mut rig,
        received(&v3, src, group(), Some(255)),
        DropReason::VersionMismatch,
    );
    let mut other = good.clone();
    other.vrid = 52;
    check(
        &mut rig,
        received(&other, src, group(), Some(255)),
        DropReason::VridMismatch,
    );
    let mut none = good.clone();
    none.auth = Auth::None;
    check(
        &mut rig,
        received(&none, src, group(), Some(255)),
        DropReason::AuthTypeMismatch,
    );
    let mut wrong = good.clone();
    wrong.auth = Auth::Password(AuthPassword::new(b"Secret"));
    check(
        &mut rig,
        received(&wrong, src, group(), Some(255)),
        DropReason::AuthFailure,
    );
    let mut list = good.clone();
    list.addresses.push(ip("10.0.0.101"));
    check(
        &mut rig,
        received(&list, src, group(), Some(255)),
        DropReason::AddressListMismatch,
    );
    // Unicast to a multicast instance.
    check(
        &mut rig,
        received(&good, src, ip(OURS), Some(255)),
        DropReason::WrongDestination,
    );
    // IPv6 datagram on an IPv4 instance.
    let v6 = Received {
        src: ip("fe80::2"),
        dst: ip("ff02::12"),
        ttl: Some(255),
        payload: vec![0; 8],
    };
    check(&mut rig, v6, DropReason::FamilyMismatch);

    assert_eq!(rig.inst.stats().drops(DropReason::Ttl), 1);
    assert_eq!(rig.inst.stats().address_list_errors, 1);
    assert_eq!(rig.inst.stats().adverts_received, 0);
    // And the good one passes: unknown TTL is not checked (as keepalived).
    let actions = rig.handle(
        Event::AdvertReceived(received(&good, src, group(), None)),
        1.0,
    );
    assert!(drops(&actions).is_empty());
    assert_eq!(rig.inst.stats().adverts_received, 1);
}

#[test]
fn address_list_mismatch_policies() {
    let c = cfg(100);
    let mut rig = Rig::new(InstanceConfig {
        address_check: AddressCheck::LogOnly,
        ..c.clone()
    });
    rig.start();
    let mut advert = rig.advert(150);
    advert.addresses = vec![ip("10.0.0.200")];
    let actions = rig.receive_advert(&advert, "10.0.0.2", 1.0);
    assert!(drops(&actions).is_empty());
    assert!(armed(&actions, TimerKind::MasterDown).is_some());
    assert_eq!(rig.inst.stats().address_list_errors, 1);

    // skip_check_adv_addr: checked until accepted once, then skipped for that master.
    let mut rig = Rig::new(InstanceConfig {
        address_check: AddressCheck::SkipFromMaster,
        ..c
    });
    rig.start();
    let a = rig.receive_advert(&advert, "10.0.0.2", 1.0);
    assert_eq!(drops(&a), [DropReason::AddressListMismatch]);
    rig.receive("10.0.0.2", 150, 2.0);
    let a = rig.receive_advert(&advert, "10.0.0.2", 3.0);
    assert!(drops(&a).is_empty());
    let a = rig.receive_advert(&advert, "10.0.0.3", 3.0);
    assert_eq!(drops(&a), [DropReason::AddressListMismatch]);
}

fn unicast_cfg(check_src: bool) -> InstanceConfig {
    let mut c = v3_cfg(100, 100);
    c.transport = Transport::Unicast {
        peers: vec![UnicastPeer {
            addr: ip("10.0.0.2"),
            min_ttl: 250,
            max_ttl: 255,
        }],
        ttl: 64,
        check_src,
    };
    c
}

#[test]
fn unicast_skips_the_ttl_check_unless_peer_ranges_are_checked() {
    let mut rig = Rig::new(unicast_cfg(false));
    rig.start();
    let advert = rig.advert(150);
    let rx = received(&advert, ip("10.0.0.2"), ip(OURS), Some(64));
    assert!(drops(&rig.handle(Event::AdvertReceived(rx.clone()), 1.0)).is_empty());
    // Multicast to a unicast instance.
    let mc = received(&advert, ip("10.0.0.2"), group(), Some(255));
    assert_eq!(
        drops(&rig.handle(Event::AdvertReceived(mc), 1.0)),
        [DropReason::WrongDestination]
    );

    let mut rig = Rig::new(unicast_cfg(true));
    rig.start();
    assert_eq!(
        drops(&rig.handle(Event::AdvertReceived(rx), 1.0)),
        [DropReason::Ttl]
    );
    let stranger = received(&advert, ip("10.0.0.3"), ip(OURS), Some(255));
    assert_eq!(
        drops(&rig.handle(Event::AdvertReceived(stranger), 1.0)),
        [DropReason::UnknownUnicastPeer]
    );
    let ok = received(&advert, ip("10.0.0.2"), ip(OURS), Some(255));
    assert!(drops(&rig.handle(Event::AdvertReceived(ok), 1.0)).is_empty());
}

#[test]
fn unicast_adverts_go_to_every_peer_with_unicast_ttl() {
    let mut c = unicast_cfg(false);
    if let Transport::Unicast { peers, .. } = &mut c.transport {
        peers.push(UnicastPeer::new(ip("10.0.0.3")));
    }
    let mut rig = Rig::master(c);
    let actions = rig.fire(TimerKind::Advert);
    let Some(Action::SendAdvert(out)) = actions.first() else {
        panic!("{actions:?}");
    };
    assert_eq!(out.destinations, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
    assert_eq!(out.ttl, 64);
}

#[test]
fn unicast_v3_switches_to_the_old_checksum_when_a_peer_uses_it() {
    for (auto, expected) in [
        (true, ChecksumForm::LegacyUnicast),
        // `old_unicast_checksum never`.
        (false, ChecksumForm::PseudoHeader),
    ] {
        let mut rig = Rig::new(InstanceConfig {
            auto_legacy_checksum: auto,
            ..unicast_cfg(false)
        });
        rig.start();
        let payload = rig
            .advert(150)
            .encode(&EncodeContext {
                src: ip("10.0.0.2"),
                dst: ip(OURS),
                checksum_form: ChecksumForm::LegacyUnicast,
            })
            .expect("encode");
        let rx = Received {
            src: ip("10.0.0.2"),
            dst: ip(OURS),
            ttl: Some(255),
            payload,
        };
        assert!(drops(&rig.handle(Event::AdvertReceived(rx), 1.0)).is_empty());
        rig.fire(TimerKind::MasterDown);
        let actions = rig.fire(TimerKind::Advert);
        let Some(Action::SendAdvert(out)) = actions.first() else {
            panic!("{actions:?}");
        };
        assert_eq!(out.checksum_form, expected, "auto {auto}");
    }
}

// ===== addresses removed behind our back =====

#[test]
fn a_master_whose_address_is_removed_resigns_and_takes_over_again_after_its_skew() {
    let mut c = cfg(100);
    c.excluded_vips = vec![ip("10.0.0.200")];
    let mut rig = Rig::master(c);
    let actions = rig.handle(Event::AddressRemoved(ip("10.0.0.200")), 10.0);
    // keepalived's set_vrrp_backup: priority 0, the remaining addresses removed, BACKUP.
    assert_eq!(sent(&actions), [0]);
    assert!(actions.contains(&Action::RemoveVips));
    assert_eq!(
        transition(&actions),
        Some((State::Master, State::Backup, Cause::AddressRemoved))
    );
    assert_eq!(rig.inst.timer(TimerKind::Advert), None);
    // Master_Down set to Skew_Time, (256 - 100)/256 s, not Master_Down_Interval.
    let back_at = armed(&actions, TimerKind::MasterDown).expect("master down armed");
    assert_eq!(back_at, rig.at(10.0) + micros(609_375));
    // A backup with a lower priority, told by the priority 0 to wait its own skew, waits
    // longer: we advertise again before it takes over.
    let mut peer_config = cfg(90);
    peer_config.src_addr = Some(ip("10.0.0.2"));
    let mut peer = Rig::new(peer_config);
    peer.t0 = rig.t0;
    peer.start();
    let peer_actions = peer.receive(OURS, 0, 10.0);
    let peer_at = armed(&peer_actions, TimerKind::MasterDown).expect("peer master down");
    assert!(back_at < peer_at, "{back_at:?} vs {peer_at:?}");
    let actions = rig.fire(TimerKind::MasterDown);
    assert_eq!(sent(&actions), [100]);
    assert!(actions.contains(&Action::AddVips));
    assert_eq!(
        transition(&actions),
        Some((State::Backup, State::Master, Cause::MasterDown))
    );
    assert_eq!(rig.inst.stats().released_master, 1);
    assert_eq!(rig.inst.stats().became_master, 2);
}

#[test]
fn the_owner_also_gives_up_a_removed_address_and_takes_it_back_at_once() {
    let mut c = cfg(PRIORITY_OWNER);
    c.initial_state = InitialState::Master;
    let mut rig = Rig::new(c);
    rig.start();
    assert_eq!(rig.inst.state(), State::Master);
    let actions = rig.handle(Event::AddressRemoved(ip(VIP)), 2.0);
    assert_eq!(sent(&actions), [0]);
    assert_eq!(
        armed(&actions, TimerKind::MasterDown),
        Some(rig.at(2.0) + micros(3_906))
    );
    let actions = rig.fire(TimerKind::MasterDown);
    assert_eq!(sent(&actions), [255]);
    assert_eq!(rig.inst.state(), State::Master);
}

#[test]
fn an_address_removal_counts_only_for_a_master_and_its_own_addresses() {
    let mut rig = Rig::master(cfg(100));
    assert!(
        rig.handle(Event::AddressRemoved(ip("10.0.0.9")), 5.0)
            .is_empty()
    );
    assert_eq!(rig.inst.state(), State::Master);
    // Once Backup, the removal (its own, or anyone's) changes nothing.
    let mut backup = Rig::new(cfg(100));
    backup.start();
    let down = backup.inst.timer(TimerKind::MasterDown);
    assert!(
        backup
            .handle(Event::AddressRemoved(ip(VIP)), 1.0)
            .is_empty()
    );
    assert_eq!(backup.inst.state(), State::Backup);
    assert_eq!(backup.inst.timer(TimerKind::MasterDown), down);
}

// ===== a master restarted by a reload =====

#[test]
fn a_resumed_master_keeps_its_addresses_and_advertises_at_once() {
    let mut rig = Rig::new(cfg(170));
    let t0 = rig.t0;
    let actions = rig.handle(
        Event::ResumeMaster {
            held: vec![ip(VIP)],
        },
        0.0,
    );
    assert_eq!(sent(&actions), [170]);
    assert_eq!(
        actions[1..],
        [
            Action::ArmTimer {
                kind: TimerKind::Advert,
                at: t0 + Duration::from_secs(1)
            },
            // Adds what is missing; nothing is removed and nothing announced again.
            Action::AddVips,
            Action::StateChanged {
                from: State::Initialize,
                to: State::Master,
                cause: Cause::Reload
            },
        ]
    );
    assert_eq!(rig.inst.timer(TimerKind::MasterDown), None);
}

#[test]
fn a_resumed_master_with_a_new_address_announces_them_all() {
    let mut c = cfg(100);
    c.vips.push(ip("10.0.0.101"));
    let mut rig = Rig::new(c);
    let actions = rig.handle(
        Event::ResumeMaster {
            held: vec![ip(VIP)],
        },
        0.0,
    );
    assert!(actions.contains(&Action::SendGratuitous {
        addresses: vec![ip(VIP), ip("10.0.0.101")],
        repeat: 5
    }));
    assert_eq!(rig.inst.state(), State::Master);
}

#[test]
fn a_resumed_master_that_cannot_run_gives_up_its_addresses() {
    let mut rig = Rig::new(cfg(100));
    rig.handle(Event::InterfaceDown, 0.0);
    let actions = rig.handle(
        Event::ResumeMaster {
            held: vec![ip(VIP)],
        },
        0.0,
    );
    assert!(sent(&actions).is_empty());
    assert!(actions.contains(&Action::RemoveVips));
    assert_eq!(
        transition(&actions),
        Some((State::Initialize, State::Fault, Cause::InterfaceDown))
    );
}
