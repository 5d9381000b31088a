//! Lab lifecycle: teardown (also after panics), processes, garbage collection, in_netns.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use keeplb_testlab::{Lab, LabError, Signal, wait_until};

const WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

fn new_lab(test: &str) -> Lab {
    Lab::new(test).unwrap_or_else(|e| panic!("cannot create the test lab: {e}"))
}

/// Namespaces shown by `ip netns list` (this only reads, it changes nothing).
fn listed_namespaces() -> Vec<String> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    assert!(output.status.success(), "ip netns list failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Whether `pid` is gone (or a zombie waiting for a reaper that is not us).
fn process_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // Format: `pid (comm) state ...`; comm may contain spaces, state follows `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn assert_all_gone(namespaces: &[String]) {
    assert!(!namespaces.is_empty());
    let listed = listed_namespaces();
    for ns in namespaces {
        assert!(!listed.contains(ns), "{ns} survived teardown");
        assert!(!Path::new("/run/netns").join(ns).exists(), "{ns} survived");
    }
}

#[test]
fn dropping_the_lab_removes_namespaces_and_processes() {
    let lab = new_lab("teardown");
    let lan = lab.switch("lan").unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    a.attach(&lan, "eth0", &["10.0.0.1/24"]).unwrap();
    a.link_to("xover", &b, "xover").unwrap();
    let namespaces = lab.namespaces();
    assert_eq!(namespaces.len(), 3);
    let listed = listed_namespaces();
    for ns in &namespaces {
        assert!(ns.starts_with(lab.id()), "{ns}");
        assert!(listed.contains(ns), "{ns} not in ip netns list");
    }

    // One process the lab knows, one that left its process group, one started with
    // a plain Command: all must die with the lab.
    let daemon = a.spawn(&["sleep", "1000"]).unwrap();
    let escaped = a
        .run(&[
            "sh",
            "-c",
            "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
        ])
        .unwrap();
    let escaped: u32 = String::from_utf8_lossy(&escaped.stdout)
        .trim()
        .parse()
        .unwrap();
    let mut plain = b.cmd("sleep").arg("1000").spawn().unwrap();
    // `ip netns exec` enters the namespace, then becomes `sleep`: only from then on is
    // the process the namespace's to kill.
    let in_namespace = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", b.netns()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|pid| pid == plain.id().to_string())
    };
    assert!(
        wait_until(WAIT, POLL, in_namespace).is_ok(),
        "plain command never started"
    );
    let dir = lab.dir().to_owned();
    assert!(dir.is_dir());

    drop(lab);

    assert_all_gone(&namespaces);
    assert!(!daemon.is_running().unwrap(), "spawned process survived");
    assert!(
        wait_until(WAIT, POLL, || process_dead(escaped)).is_ok(),
        "escaped process {escaped} survived"
    );
    // Killed by the teardown; its exit is reaped asynchronously, so wait for it.
    assert!(
        wait_until(WAIT, POLL, || plain.try_wait().unwrap().is_some()).is_ok(),
        "plain command survived"
    );
    assert!(!dir.exists(), "lab dir not removed");
    // The lab is gone: handles now fail instead of touching anything else.
    assert!(a.spawn(&["true"]).is_err());
    assert!(a.run(&["true"]).is_err());
    assert!(matches!(lab_host_after_close(), Err(LabError::Closed(_))));
}

/// Creating a namespace in a closed lab is refused (the handle outlives the lab).
fn lab_host_after_close() -> keeplb_testlab::Result<()> {
    let lab = new_lab("closed");
    let a = lab.host("a")?;
    drop(lab);
    a.spawn(&["true"]).map(drop)
}

#[test]
fn panicking_test_still_tears_down() {
    let namespaces = Mutex::new(Vec::new());
    let pid = Mutex::new(None);
    let dir = Mutex::new(None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = new_lab("panics");
        let lan = lab.switch("lan").unwrap();
        let a = lab.host("a").unwrap();
        a.attach(&lan, "eth0", &["10.0.0.1/24"]).unwrap();
        let daemon = a.spawn(&["sleep", "1000"]).unwrap();
        *pid.lock().unwrap() = Some(daemon.pid());
        *namespaces.lock().unwrap() = lab.namespaces();
        *dir.lock().unwrap() = Some(lab.dir().to_owned());
        std::mem::forget(daemon); // Only the lab can clean it up now.
        panic!("deliberate panic inside a lab test");
    }));
    assert!(result.is_err());
    assert_all_gone(&namespaces.lock().unwrap());
    let pid = pid.lock().unwrap().unwrap();
    assert!(wait_until(WAIT, POLL, || process_dead(pid)).is_ok());
    // The logs are kept for inspection after a panic; this panic was deliberate.
    let dir = dir.lock().unwrap().take().unwrap();
    assert!(dir.is_dir(), "logs not kept after a panic");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn process_output_signals_and_kill() {
    let lab = new_lab("processes");
    let a = lab.host("a").unwrap();

    // Output is captured while the process runs; SIGTERM ends it.
    let p = a
        .spawn(&["sh", "-c", "echo out; echo err >&2; exec sleep 1000"])
        .unwrap();
    assert_eq!(p.label(), "sh");
    wait_until(WAIT, POLL, || {
        let o = p.output_so_far();
        o.stdout.contains("out") && o.stderr.contains("err")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.output_so_far()));
    assert!(p.output_so_far().to_string().contains("stderr"));
    assert!(p.is_running().unwrap());
    assert_eq!(p.wait_timeout(Duration::from_millis(50)).unwrap(), None);
    p.signal(Signal::SIGTERM).unwrap();
    let status = p.wait_timeout(WAIT).unwrap().expect("still running");
    assert!(!status.success());
    assert!(matches!(
        p.signal(Signal::SIGHUP),
        Err(LabError::ProcessExited { .. })
    ));

    // The process runs in the host's namespace.
    let p = a
        .spawn(&["sh", "-c", "readlink /proc/self/ns/net"])
        .unwrap();
    assert!(p.wait_timeout(WAIT).unwrap().unwrap().success());
    let inside = a
        .in_netns(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .unwrap();
    assert_eq!(
        p.output_so_far().stdout.trim(),
        inside.unwrap().to_string_lossy()
    );

    // Dropping a process kills its whole group, children included.
    let p = a
        .spawn(&["sh", "-c", "sleep 1000 & echo $!; wait"])
        .unwrap();
    let mut child = None;
    wait_until(WAIT, POLL, || {
        child = p.output_so_far().stdout.trim().parse::<u32>().ok();
        child.is_some()
    })
    .unwrap();
    let child = child.unwrap();
    assert!(!process_dead(child));
    drop(p);
    assert!(wait_until(WAIT, POLL, || process_dead(child)).is_ok());

    // kill() reports how it ended and is idempotent.
    let p = a.spawn(&["sleep", "1000"]).unwrap();
    let status = p.kill().unwrap();
    assert!(!status.success());
    assert_eq!(p.kill().unwrap(), status);
}

#[test]
fn in_netns_moves_only_a_helper_thread() {
    let lab = new_lab("in_netns");
    let a = lab.host("a").unwrap();
    let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let there = a
        .in_netns(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .unwrap()
        .unwrap();
    assert_ne!(here, there);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        here
    );

    // Borrowing from the caller works, panics propagate.
    let name = String::from("borrowed");
    assert_eq!(a.in_netns(|| name.len()).unwrap(), 8);
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        a.in_netns(|| panic!("inside")).unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        here
    );

    // Explicit teardown reports errors instead of printing them.
    let namespaces = lab.namespaces();
    lab.close().unwrap();
    assert_all_gone(&namespaces);
}

#[test]
fn names_are_validated_and_unique() {
    let lab = new_lab("names");
    lab.host("dup").unwrap();
    assert!(matches!(lab.host("dup"), Err(LabError::DuplicateName(_))));
    assert!(matches!(lab.switch("dup"), Err(LabError::DuplicateName(_))));
    assert!(matches!(
        lab.host("bad name"),
        Err(LabError::InvalidArgument { .. })
    ));
    assert!(matches!(
        lab.host("much_too_long_name"),
        Err(LabError::InvalidArgument { .. })
    ));

    // Hosts of different labs cannot be wired together.
    let other = new_lab("names_other");
    let x = lab.host("x").unwrap();
    let y = other.host("y").unwrap();
    assert!(matches!(
        x.link_to("eth0", &y, "eth0"),
        Err(LabError::ForeignLab(..))
    ));
}

#[test]
fn stale_namespaces_of_dead_processes_are_collected() {
    // A pid that is certainly dead: a child we ran and reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("klb-{dead}-0-stale-a");
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());

    // Its lab dirs: an old one goes, a recent one (maybe a panicked test's logs) stays.
    let old_dir = std::env::temp_dir().join(format!("klb-{dead}-1-stale"));
    let new_dir = std::env::temp_dir().join(format!("klb-{dead}-2-stale"));
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let status = Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&old_dir)
        .status()
        .unwrap();
    assert!(status.success());

    let _lab = new_lab("gc");
    let old_dir_survived = old_dir.exists();
    let new_dir_survived = new_dir.exists();
    let _ = std::fs::remove_dir_all(&old_dir);
    let _ = std::fs::remove_dir_all(&new_dir);
    assert!(
        !old_dir_survived,
        "old lab dir of a dead process not collected"
    );
    assert!(new_dir_survived, "recent lab dir collected");

    let listed = listed_namespaces();
    if listed.contains(&stale) {
        // The pid was reused in the meantime (extremely unlikely): clean up, then fail.
        let _ = Command::new("ip").args(["netns", "del", &stale]).status();
        panic!(
            "{stale} was not collected (pid alive: {})",
            !process_dead(dead)
        );
    }
}
