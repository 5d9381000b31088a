//! Script lines split as keepalived's tokenizer does, and scripts run with their exit
//! status, signals and time limit (the whole process group is killed).

use std::time::Duration;

use keeplb_script::{RunOutcome, ScriptCommand, run_command, split_command};

fn cmd(line: &str) -> ScriptCommand {
    ScriptCommand::parse(line).expect("script line")
}

#[test]
fn script_lines_split_like_keepalived() {
    assert_eq!(
        split_command("sh -c 'exit 1'").expect("ok"),
        ["sh", "-c", "exit 1"]
    );
    assert_eq!(
        split_command(r#"/usr/bin/check "a b"  c\ d"#).expect("ok"),
        ["/usr/bin/check", "a b", "c d"]
    );
    assert_eq!(split_command("x ''").expect("ok"), ["x", ""]);
    assert!(split_command("  ").is_err());
    assert!(split_command("sh -c 'oops").is_err());
}

#[tokio::test(start_paused = true)]
async fn exit_status_decides() {
    let t = Duration::from_secs(5);
    assert_eq!(
        run_command(&cmd("sh -c 'exit 0'"), t).await.expect("run"),
        RunOutcome::Exited(0)
    );
    assert_eq!(
        run_command(&cmd("sh -c 'exit 3'"), t).await.expect("run"),
        RunOutcome::Exited(3)
    );
    assert_eq!(
        run_command(&cmd("sh -c 'kill -TERM $$'"), t)
            .await
            .expect("run"),
        RunOutcome::Signalled(15)
    );
    assert!(
        run_command(&cmd("/nonexistent/keeplb-check"), t)
            .await
            .is_err()
    );
}

/// Real time: the timeout must fire while the script still runs.
#[tokio::test]
async fn timeout_kills_the_process_group() {
    let dir = std::env::temp_dir().join(format!("keeplb-track-timeout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pidfile = dir.join("grandchild");
    // A background grandchild in the script's process group records its pid and would
    // outlive the script unless the whole group is killed.
    let line = format!(
        "sh -c 'sleep 30 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait'",
        p = pidfile.display()
    );
    let started = std::time::Instant::now();
    let outcome = run_command(&cmd(&line), Duration::from_millis(500))
        .await
        .expect("run");
    assert_eq!(outcome, RunOutcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid = std::fs::read_to_string(&pidfile)
        .expect("grandchild pid written")
        .trim()
        .to_owned();
    // Poll until the grandchild is gone (or a zombie waiting for its reaper).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_owned)
            });
        if matches!(state.as_deref(), None | Some("Z" | "X")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "grandchild {pid} survived the timeout"
        );
        tokio::task::yield_now().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn commands_are_quoted_as_keepalived_logs_them() {
    // keepalived 2.2.7: "Disabling misc script '/tmp/x/ww/misc.sh' due to insecure".
    let misc = ScriptCommand::parse("/tmp/x/ww/misc.sh").expect("parse");
    assert_eq!(misc.keepalived_quoted(), "'/tmp/x/ww/misc.sh'");
    let with_args = ScriptCommand::parse("/bin/check \"a b\" c").expect("parse");
    assert_eq!(with_args.keepalived_quoted(), "'/bin/check' 'a b' 'c'");
    // A redirection-only test keeps its first word bare.
    let redirect = ScriptCommand::parse("</etc/ready").expect("parse");
    assert_eq!(redirect.keepalived_quoted(), "</etc/ready");
}
