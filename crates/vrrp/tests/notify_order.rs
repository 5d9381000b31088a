//! Notifications: keepalived's arguments and FIFO lines, transition order under rapid
//! changes, and enable_script_security.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keeplb_vrrp::notify::{
    FifoWriter, Notifier, NotifyConfig, NotifyKind, NotifyScripts, ScriptSecurityError,
    check_script_security, fifo_line,
};
use keeplb_vrrp::track::ScriptCommand;
use keeplb_vrrp::{Action, Cause, State};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("keeplb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sh -c script sh`: appended arguments are the script's `$1`, `$2`...
fn shell(script: String) -> ScriptCommand {
    ScriptCommand {
        argv: vec!["sh".into(), "-c".into(), script, "sh".into()],
        uid: None,
        gid: None,
    }
}

/// A script line appending its tag, a random-ish delay first (so that scripts started
/// concurrently would finish out of order), and its arguments to `log`.
fn appender(log: &Path, tag: &str, delay: &str) -> ScriptCommand {
    shell(format!(
        "sleep {delay}; echo \"{tag} $*\" >> {}",
        log.display()
    ))
}

/// A script line that appends `{tag}-start`, takes `secs`, then appends `{tag}-end`.
fn slow_marker(log: &Path, tag: &str, secs: &str) -> ScriptCommand {
    let log = log.display();
    shell(format!(
        "echo {tag}-start >> {log}; sleep {secs}; echo {tag}-end >> {log}"
    ))
}

fn instance_notifier(
    name: &str,
    scripts: NotifyScripts,
    timeout: Duration,
    fifos: Vec<Arc<FifoWriter>>,
) -> Notifier {
    Notifier::spawn(NotifyConfig {
        kind: NotifyKind::Instance,
        name: name.into(),
        scripts,
        timeout,
        fifos,
    })
}

/// Waits until `path` has a line equal to `line`, polling for at most `limit`; returns
/// whether it appeared. Async, unlike `keeplb_testlab::wait_until`, whose thread sleep
/// would stop the notifier running on this test's single-threaded runtime.
async fn line_appears(path: &Path, line: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if lines(path).iter().any(|l| l == line) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn fifo_line_format() {
    assert_eq!(
        fifo_line(NotifyKind::Instance, "VI_1", "MASTER", 100),
        "INSTANCE \"VI_1\" MASTER 100\n"
    );
    assert_eq!(
        fifo_line(NotifyKind::Group, "G", "STOP", 0),
        "GROUP \"G\" STOP 0\n"
    );
}

#[tokio::test]
async fn arguments_order_and_fifo_lines_are_exact() {
    let dir = TempDir::new("notify-order");
    let log = dir.0.join("log");
    let fifo_path = dir.0.join("fifo");
    let fifo = Arc::new(FifoWriter::open(&fifo_path).expect("fifo created"));
    // A reader on the FIFO, collecting lines until the writer side says STOP.
    let reader_path = fifo_path.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let file = std::fs::File::open(&reader_path).expect("open fifo for reading");
        let mut out = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.expect("fifo line");
            let done = line.contains(" STOP ");
            out.push(line);
            if done {
                break;
            }
        }
        out
    });
    let scripts = NotifyScripts {
        master: Some(appender(&log, "master", "0.05")),
        backup: Some(appender(&log, "backup", "0")),
        fault: Some(appender(&log, "fault", "0.02")),
        stop: Some(appender(&log, "stop", "0")),
        notify: Some(appender(&log, "notify", "0.01")),
        master_rx_lower_pri: Some(appender(&log, "rx_lower", "0.03")),
    };
    let notifier = instance_notifier("VI_1", scripts, Duration::from_secs(10), vec![fifo]);
    let change = |from, to| Action::StateChanged {
        from,
        to,
        cause: Cause::Startup,
    };
    // Rapid transitions, queued without waiting.
    notifier.on_action(&change(State::Initialize, State::Backup), 100);
    notifier.on_action(&change(State::Backup, State::Master), 100);
    assert!(!notifier.on_action(&Action::AddVips, 100));
    // keepalived's notify_master_rx_lower_pri: the script as configured, no arguments.
    let lower = Action::MasterReceivedLowerPriority {
        from: "10.0.0.2".parse().expect("address"),
        priority: 90,
    };
    assert!(notifier.on_action(&lower, 100));
    notifier.on_action(&change(State::Master, State::Fault), 80);
    notifier.on_action(&change(State::Fault, State::Backup), 90);
    notifier.on_action(&change(State::Backup, State::Master), 120);
    notifier.on_action(&change(State::Master, State::Initialize), 120);
    notifier.close().await;
    assert_eq!(
        lines(&log),
        [
            "backup ",
            "notify INSTANCE VI_1 BACKUP 100",
            "master ",
            "notify INSTANCE VI_1 MASTER 100",
            "rx_lower ",
            "fault ",
            "notify INSTANCE VI_1 FAULT 80",
            "backup ",
            "notify INSTANCE VI_1 BACKUP 90",
            "master ",
            "notify INSTANCE VI_1 MASTER 120",
            "stop ",
            "notify INSTANCE VI_1 STOP 120",
        ]
    );
    assert_eq!(
        reader.join().expect("reader"),
        [
            "INSTANCE \"VI_1\" BACKUP 100",
            "INSTANCE \"VI_1\" MASTER 100",
            "INSTANCE \"VI_1\" MASTER_RX_LOWER_PRI 100",
            "INSTANCE \"VI_1\" FAULT 80",
            "INSTANCE \"VI_1\" BACKUP 90",
            "INSTANCE \"VI_1\" MASTER 120",
            "INSTANCE \"VI_1\" STOP 120",
        ]
    );
}

#[tokio::test]
async fn group_priority_is_zero_and_missing_scripts_are_skipped() {
    let dir = TempDir::new("notify-group");
    let log = dir.0.join("log");
    let notifier = Notifier::spawn(NotifyConfig {
        kind: NotifyKind::Group,
        name: "G1".into(),
        scripts: NotifyScripts {
            notify: Some(appender(&log, "notify", "0")),
            ..NotifyScripts::default()
        },
        timeout: Duration::from_secs(10),
        fifos: vec![],
    });
    notifier.state_changed(State::Master, 150);
    notifier.close().await;
    assert_eq!(lines(&log), ["notify GROUP G1 MASTER 0"]);
}

#[tokio::test]
async fn a_hanging_script_is_killed_and_the_queue_moves_on() {
    let dir = TempDir::new("notify-timeout");
    let log = dir.0.join("log");
    let scripts = NotifyScripts {
        master: Some(appender(&log, "master", "30")),
        backup: Some(appender(&log, "backup", "0")),
        ..NotifyScripts::default()
    };
    let notifier = instance_notifier("VI_2", scripts, Duration::from_millis(300), vec![]);
    notifier.state_changed(State::Master, 100);
    notifier.state_changed(State::Backup, 100);
    notifier.close().await;
    assert_eq!(lines(&log), ["backup "]);
}

#[test]
fn insecure_script_is_refused_naming_the_culprit() {
    let dir = TempDir::new("notify-security");
    let script = dir.0.join("notify.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cmd = ScriptCommand::parse(&format!("{} arg", script.display())).expect("parse");
    // Root-owned, in a root-owned directory under the sticky /tmp: keepalived runs it.
    check_script_security(&cmd).expect("secure under the sticky /tmp");
    // In a directory anyone may write to, it is refused, naming the directory.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = check_script_security(&cmd).expect_err("a world-writable directory");
    match &err {
        ScriptSecurityError::Insecure { path, reason, .. } => {
            assert_eq!(path, &dir.0);
            assert!(reason.contains("writable by everyone"), "{reason}");
        }
        other => panic!("unexpected error {other}"),
    }
    let message = err.to_string();
    assert!(message.contains(&script.display().to_string()), "{message}");
    assert!(message.contains("enable_script_security"), "{message}");

    let scripts = NotifyScripts {
        fault: Some(cmd),
        ..NotifyScripts::default()
    };
    assert!(scripts.check_security().is_err());
}

#[test]
fn world_writable_file_is_refused_even_in_a_root_dir() {
    let dir = TempDir::new("notify-world-file");
    let script = dir.0.join("notify.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o757)).expect("chmod");
    let cmd = ScriptCommand::parse(&script.display().to_string()).expect("parse");
    match check_script_security(&cmd) {
        Err(ScriptSecurityError::Insecure { path, reason, .. }) => {
            assert_eq!(path, script);
            assert!(reason.contains("writable by everyone"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn system_scripts_pass_and_missing_ones_are_reported() {
    // /bin/sh and its directories belong to root and are not writable by others.
    check_script_security(&ScriptCommand::parse("sh -c true").expect("parse")).expect("secure");
    let missing =
        check_script_security(&ScriptCommand::parse("/nonexistent/notify.sh").expect("parse"));
    assert!(
        matches!(missing, Err(ScriptSecurityError::NotFound { .. })),
        "{missing:?}"
    );
}

/// A notifier for `VI_RX` whose FIFO is a regular file (appended to, one line per event).
fn rx_lower_notifier(dir: &TempDir, scripts: NotifyScripts) -> (Notifier, PathBuf) {
    let fifo_path = dir.0.join("fifo-lines");
    std::fs::write(&fifo_path, "").expect("fifo file");
    let fifo = Arc::new(FifoWriter::open(&fifo_path).expect("fifo file opened"));
    let notifier = instance_notifier("VI_RX", scripts, Duration::from_secs(30), vec![fifo]);
    (notifier, fifo_path)
}

/// The one-way partition: a cut-off backup keeps advertising at a lower priority while
/// `notify_master_rx_lower_pri` is slow. Adverts during a run queue one more run, not
/// one each, and a transition's script waits behind that one only; the FIFO still gets
/// a line per advert.
#[tokio::test]
async fn slow_rx_lower_pri_runs_are_coalesced_and_do_not_hold_back_transitions() {
    const ADVERTS: usize = 20;
    const SCRIPT_SECS: u64 = 1;
    let dir = TempDir::new("notify-rx-coalesce");
    let log = dir.0.join("log");
    let (notifier, fifo_path) = rx_lower_notifier(
        &dir,
        NotifyScripts {
            backup: Some(appender(&log, "backup", "0")),
            master_rx_lower_pri: Some(slow_marker(&log, "rx", &SCRIPT_SECS.to_string())),
            ..NotifyScripts::default()
        },
    );
    notifier.master_rx_lower_priority(100);
    assert!(
        line_appears(&log, "rx-start", Duration::from_secs(20)).await,
        "the first notify_master_rx_lower_pri run never started: {:?}",
        lines(&log)
    );
    for _ in 1..ADVERTS {
        notifier.master_rx_lower_priority(100);
    }
    notifier.state_changed(State::Backup, 100);
    // Two runs at most stand before notify_backup (the running one and one more); one
    // run per advert would hold it back for ADVERTS * SCRIPT_SECS.
    let limit = Duration::from_secs(SCRIPT_SECS * (ADVERTS as u64) * 3 / 4);
    assert!(
        line_appears(&log, "backup ", limit).await,
        "notify_backup still waiting after {limit:?}: {:?}",
        lines(&log)
    );
    notifier.close().await;
    assert_eq!(
        lines(&log),
        ["rx-start", "rx-end", "rx-start", "rx-end", "backup "]
    );
    let mut expected = vec!["INSTANCE \"VI_RX\" MASTER_RX_LOWER_PRI 100"; ADVERTS];
    expected.push("INSTANCE \"VI_RX\" BACKUP 100");
    assert_eq!(lines(&fifo_path), expected);
}

/// Coalescing never moves a run across a transition: adverts after a transition run the
/// script after the transition's scripts, even while a run from before it still waits.
#[tokio::test]
async fn rx_lower_pri_runs_stay_between_the_transitions_around_them() {
    let dir = TempDir::new("notify-rx-order");
    let log = dir.0.join("log");
    let (notifier, fifo_path) = rx_lower_notifier(
        &dir,
        NotifyScripts {
            master: Some(appender(&log, "master", "0")),
            backup: Some(appender(&log, "backup", "0")),
            master_rx_lower_pri: Some(appender(&log, "rx", "0")),
            ..NotifyScripts::default()
        },
    );
    // Queued before the worker gets to run (the test's runtime has one thread and the
    // worker only runs while this task awaits).
    for _ in 0..3 {
        notifier.master_rx_lower_priority(100);
    }
    notifier.state_changed(State::Backup, 90);
    notifier.state_changed(State::Master, 100);
    for _ in 0..3 {
        notifier.master_rx_lower_priority(100);
    }
    notifier.close().await;
    assert_eq!(lines(&log), ["rx ", "backup ", "master ", "rx "]);
    assert_eq!(lines(&fifo_path).len(), 8);
}
