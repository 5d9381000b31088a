//! keepalived's tracking semantics, without processes: rise/fall counting, weights,
//! reverse, weight-0 FAULT, track_file products, clamping and the address owner.

use keeplb_vrrp::Event;
use keeplb_vrrp::track::{ScriptState, ScriptStatus, TrackInput, Tracker, TrackingUpdate, Weight};

fn script(name: &str, status: ScriptStatus) -> TrackInput {
    TrackInput::Script {
        name: name.to_owned(),
        status,
    }
}

#[test]
fn first_result_decides_from_unknown() {
    let mut s = ScriptState::new(3, 3, false);
    assert_eq!(s.status(), ScriptStatus::Unknown);
    assert_eq!(s.record(true), Some(ScriptStatus::Ok));
    let mut s = ScriptState::new(3, 3, false);
    assert_eq!(s.record(false), Some(ScriptStatus::Failed));
}

#[test]
fn fall_then_rise_consecutive() {
    let mut s = ScriptState::new(2, 3, false);
    assert_eq!(s.record(true), Some(ScriptStatus::Ok));
    assert_eq!(s.record(false), None);
    assert_eq!(s.record(false), None);
    // A success in between resets the failure count.
    assert_eq!(s.record(true), None);
    assert_eq!(s.record(false), None);
    assert_eq!(s.record(false), None);
    assert_eq!(s.record(false), Some(ScriptStatus::Failed));
    // rise 2: one success is not enough, a failure resets.
    assert_eq!(s.record(true), None);
    assert_eq!(s.record(false), None);
    assert_eq!(s.record(true), None);
    assert_eq!(s.record(true), Some(ScriptStatus::Ok));
    assert_eq!(s.status(), ScriptStatus::Ok);
}

#[test]
fn init_fail_starts_failed_and_needs_rise() {
    let mut s = ScriptState::new(2, 1, true);
    assert_eq!(s.status(), ScriptStatus::Failed);
    assert_eq!(s.record(true), None);
    assert_eq!(s.record(true), Some(ScriptStatus::Ok));
    assert_eq!(s.record(false), Some(ScriptStatus::Failed));
}

#[test]
fn positive_weight_adds_while_ok() {
    let mut t = Tracker::new(100);
    t.track_script("chk", Weight::new(20, false), ScriptStatus::Unknown);
    assert_eq!(
        t.current(),
        TrackingUpdate {
            effective_priority: 100,
            fault: false
        }
    );
    assert_eq!(
        t.apply(&script("chk", ScriptStatus::Ok)),
        Some(TrackingUpdate {
            effective_priority: 120,
            fault: false
        })
    );
    assert_eq!(
        t.apply(&script("chk", ScriptStatus::Failed)),
        Some(TrackingUpdate {
            effective_priority: 100,
            fault: false
        })
    );
    assert_eq!(t.apply(&script("chk", ScriptStatus::Failed)), None);
}

#[test]
fn negative_weight_subtracts_while_failing_and_reverse_flips() {
    let mut t = Tracker::new(100);
    t.track_script("neg", Weight::new(-30, false), ScriptStatus::Failed);
    t.track_script("rev", Weight::new(10, true), ScriptStatus::Unknown);
    assert_eq!(t.effective_priority(), 70);
    t.apply(&script("neg", ScriptStatus::Ok));
    assert_eq!(t.effective_priority(), 100);
    // weight 10 reverse: subtract 10 while the script succeeds.
    t.apply(&script("rev", ScriptStatus::Ok));
    assert_eq!(t.effective_priority(), 90);
    t.apply(&script("rev", ScriptStatus::Failed));
    assert_eq!(t.effective_priority(), 100);

    let mut t = Tracker::new(100);
    // weight -10 reverse: add 10 while failing.
    t.track_script("r", Weight::new(-10, true), ScriptStatus::Failed);
    assert_eq!(t.effective_priority(), 110);
}

#[test]
fn weight_zero_faults_while_failing() {
    let mut t = Tracker::new(100);
    t.track_script("z", Weight::new(0, false), ScriptStatus::Unknown);
    assert!(t.is_initialising());
    assert!(!t.fault());
    assert_eq!(
        t.apply(&script("z", ScriptStatus::Failed)),
        Some(TrackingUpdate {
            effective_priority: 100,
            fault: true
        })
    );
    assert!(!t.is_initialising());
    assert_eq!(
        t.apply(&script("z", ScriptStatus::Ok)),
        Some(TrackingUpdate {
            effective_priority: 100,
            fault: false
        })
    );
}

#[test]
fn clamped_and_owner_unaffected() {
    let mut t = Tracker::new(250);
    t.track_script("up", Weight::new(50, false), ScriptStatus::Ok);
    assert_eq!(t.effective_priority(), 254);
    let mut t = Tracker::new(10);
    t.track_script("down", Weight::new(-50, false), ScriptStatus::Failed);
    assert_eq!(t.effective_priority(), 1);
    let mut owner = Tracker::new(255);
    owner.track_script("down", Weight::new(-50, false), ScriptStatus::Failed);
    owner.track_script("z", Weight::new(0, false), ScriptStatus::Ok);
    assert_eq!(owner.effective_priority(), 255);
    // Weight-0 faults still apply to the owner.
    assert_eq!(
        owner.apply(&script("z", ScriptStatus::Failed)),
        Some(TrackingUpdate {
            effective_priority: 255,
            fault: true
        })
    );
}

#[test]
fn interfaces_follow_script_semantics() {
    let mut t = Tracker::new(100);
    t.track_interface("eth1", Weight::new(-20, false));
    t.track_interface("eth2", Weight::new(0, false));
    assert_eq!(
        t.current(),
        TrackingUpdate {
            effective_priority: 100,
            fault: false
        }
    );
    let down = |n: &str, up| TrackInput::Interface {
        name: n.to_owned(),
        up,
    };
    assert_eq!(
        t.apply(&down("eth1", false)).map(|u| u.effective_priority),
        Some(80)
    );
    assert_eq!(t.apply(&down("eth2", false)).map(|u| u.fault), Some(true));
    assert_eq!(
        t.apply(&down("eth9", false)),
        None,
        "untracked interface ignored"
    );
    t.apply(&down("eth1", true));
    t.apply(&down("eth2", true));
    assert_eq!(
        t.current(),
        TrackingUpdate {
            effective_priority: 100,
            fault: false
        }
    );
}

#[test]
fn track_file_value_times_weight() {
    let file = |n: &str, value| TrackInput::File {
        name: n.to_owned(),
        value,
    };
    let mut t = Tracker::new(100);
    t.track_file("f", Weight::new(1, false), 0);
    t.track_file("g", Weight::new(-2, false), 0);
    t.track_file("h", Weight::new(0, false), 0);
    assert_eq!(
        t.apply(&file("f", 7)).map(|u| u.effective_priority),
        Some(107)
    );
    assert_eq!(
        t.apply(&file("g", 5)).map(|u| u.effective_priority),
        Some(97)
    );
    assert_eq!(t.apply(&file("h", 3)).map(|u| u.fault), Some(true));
    t.apply(&file("h", 0));
    assert!(!t.fault());
    // Below -253: FAULT.
    assert_eq!(t.apply(&file("g", 127)).map(|u| u.fault), Some(true));
    let mut r = Tracker::new(100);
    r.track_file("f", Weight::new(3, true), 2);
    assert_eq!(r.effective_priority(), 94);
}

#[test]
fn events_since_previous_update() {
    let a = TrackingUpdate {
        effective_priority: 100,
        fault: false,
    };
    assert_eq!(a.events_since(None), vec![Event::PriorityChanged(100)]);
    assert_eq!(a.events_since(Some(&a)), vec![]);
    let b = TrackingUpdate {
        effective_priority: 80,
        fault: true,
    };
    assert_eq!(
        b.events_since(Some(&a)),
        vec![Event::ForceFault, Event::PriorityChanged(80)]
    );
    assert_eq!(
        a.events_since(Some(&b)),
        vec![Event::PriorityChanged(100), Event::ClearFault]
    );
    let c = TrackingUpdate {
        effective_priority: 100,
        fault: true,
    };
    assert_eq!(
        c.events_since(None),
        vec![Event::ForceFault, Event::PriorityChanged(100)]
    );
}
