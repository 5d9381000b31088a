//! The tracking runner with real short scripts. Paused tokio time: the clock only moves
//! when every task waits on a timer, and not while a script runs (its wait is on the
//! blocking pool), so intervals cost no wall-clock time and nothing sleeps to synchronise.

use std::time::Duration;

use keeplb_vrrp::track::{
    ScriptCommand, ScriptSpec, ScriptStatus, TrackInput, Tracker, TrackingUpdate, Weight,
    run_file_tracker, run_script_checker, run_tracker,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn cmd(line: &str) -> ScriptCommand {
    ScriptCommand::parse(line).expect("script line")
}

fn spec(name: &str, line: &str, rise: u32, fall: u32, init_fail: bool) -> ScriptSpec {
    ScriptSpec::from_keepalived(name, cmd(line), 2.0, 0.0, rise, fall, init_fail)
}

#[tokio::test(start_paused = true)]
async fn failing_script_lowers_priority_through_tracker() {
    let spec = spec("chk", "sh -c 'exit 1'", 1, 1, false);
    let mut tracker = Tracker::new(100);
    tracker.track_script("chk", Weight::new(-20, false), spec.initial_status());
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let checker = tokio::spawn(run_script_checker(spec, vec![in_tx]));
    let tracking = tokio::spawn(run_tracker(tracker, in_rx, out_tx));
    assert_eq!(
        out_rx.recv().await,
        Some(TrackingUpdate {
            effective_priority: 100,
            fault: false
        })
    );
    assert_eq!(
        out_rx.recv().await,
        Some(TrackingUpdate {
            effective_priority: 80,
            fault: false
        })
    );
    checker.abort();
    let _ = checker.await;
    assert_eq!(
        out_rx.recv().await,
        None,
        "tracker ends when its inputs are gone"
    );
    tracking.await.expect("tracker task");
}

#[tokio::test(start_paused = true)]
async fn rise_needs_consecutive_successes_at_interval() {
    // init_fail, rise 3, interval 2 s, weight 0: FAULT until the third success.
    let spec = spec("z", "sh -c 'exit 0'", 3, 1, true);
    let mut tracker = Tracker::new(100);
    tracker.track_script("z", Weight::new(0, false), spec.initial_status());
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let checker = tokio::spawn(run_script_checker(spec, vec![in_tx]));
    tokio::spawn(run_tracker(tracker, in_rx, out_tx));
    assert_eq!(out_rx.recv().await.map(|u| u.fault), Some(true));
    assert_eq!(out_rx.recv().await.map(|u| u.fault), Some(false));
    // Runs at 0, 2 and 4 s: the third success clears the fault.
    assert_eq!(start.elapsed().as_secs(), 4);
    checker.abort();
}

#[tokio::test(start_paused = true)]
async fn one_script_feeds_several_instances() {
    let spec = spec("chk", "sh -c 'exit 0'", 1, 1, false);
    let (a_tx, mut a_rx) = mpsc::unbounded_channel();
    let (b_tx, mut b_rx) = mpsc::unbounded_channel();
    let checker = tokio::spawn(run_script_checker(spec, vec![a_tx, b_tx]));
    let expect = TrackInput::Script {
        name: "chk".into(),
        status: ScriptStatus::Ok,
    };
    assert_eq!(a_rx.recv().await, Some(expect.clone()));
    assert_eq!(b_rx.recv().await, Some(expect));
    drop(a_rx);
    drop(b_rx);
    // With every subscriber gone the checker stops by itself.
    checker.await.expect("checker ends");
}

#[tokio::test(start_paused = true)]
async fn file_tracker_sends_changes() {
    let dir = std::env::temp_dir().join(format!("keeplb-track-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("weight");
    std::fs::write(&path, "5\n").expect("write");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run_file_tracker(
        "f".into(),
        path.clone(),
        Duration::from_secs(1),
        vec![tx],
    ));
    assert_eq!(
        rx.recv().await,
        Some(TrackInput::File {
            name: "f".into(),
            value: 5
        })
    );
    std::fs::write(&path, "-3\n").expect("write");
    assert_eq!(
        rx.recv().await,
        Some(TrackInput::File {
            name: "f".into(),
            value: -3
        })
    );
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(
        rx.recv().await,
        Some(TrackInput::File {
            name: "f".into(),
            value: 0
        })
    );
    drop(rx);
    task.await.expect("file tracker ends");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn interface_hook_feeds_the_same_tracker() {
    let mut tracker = Tracker::new(100);
    tracker.track_interface("eth1", Weight::new(0, false));
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    tokio::spawn(run_tracker(tracker, in_rx, out_tx));
    assert_eq!(out_rx.recv().await.map(|u| u.fault), Some(false));
    in_tx
        .send(TrackInput::Interface {
            name: "eth1".into(),
            up: false,
        })
        .expect("send");
    assert_eq!(out_rx.recv().await.map(|u| u.fault), Some(true));
}
