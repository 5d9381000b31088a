//! keepalived's checker semantics, driven through the pure core with paused time: probes
//! "take" simulated time and answer what the test's server says at that moment.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use keeplb_check::{Action, Health, Outcome, Probe, Reason, ScriptEvent};
use tokio::time::Instant;

/// What a simulated real server answers: how long the probe takes, and its outcome.
type Answer = (Duration, Outcome);

/// Runs the core against simulated servers; records every action with its time.
struct Sim {
    health: Health,
    t0: Instant,
    /// (completion time, probe, outcome) of probes in flight.
    in_flight: Vec<(Instant, Probe, Outcome)>,
    actions: Vec<(Duration, Action)>,
}

impl Sim {
    fn start(text: &str) -> Sim {
        Sim::starting(Health::new(&common::load(text)))
    }

    /// A reload at the current (paused) time: `text`'s checks take over this
    /// simulation's state; the new simulation counts time from now.
    fn reload(&self, text: &str) -> Sim {
        let mut health = Health::new(&common::load(text));
        health.inherit(&self.health);
        Sim::starting(health)
    }

    fn starting(mut health: Health) -> Sim {
        let t0 = Instant::now();
        let actions = health
            .start(t0, |_| Duration::ZERO)
            .into_iter()
            .map(|a| (Duration::ZERO, a))
            .collect();
        Sim {
            health,
            t0,
            in_flight: Vec::new(),
            actions,
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// Advances paused time to `until` (seconds from start), answering probes with
    /// `server(probe, start time in seconds)`.
    async fn run_until(&mut self, until: f64, mut server: impl FnMut(Probe, f64) -> Answer) {
        let end = self.at(until);
        for _ in 0..100_000 {
            let next_completion = self.in_flight.iter().map(|(t, _, _)| *t).min();
            let next = match (self.health.next_due(), next_completion) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            tokio::time::advance(next.saturating_duration_since(Instant::now())).await;
            let now = Instant::now();
            assert_eq!(now, next, "paused clock lands exactly on the event");
            // Results first, then new probes (a probe finishing and one starting at the
            // same instant: the finished one is scheduled before).
            let mut done = Vec::new();
            self.in_flight.retain(|(t, p, o)| {
                if *t <= now {
                    done.push((*p, o.clone()));
                    false
                } else {
                    true
                }
            });
            for (probe, outcome) in done {
                let acts = self.health.on_outcome(now, probe, outcome);
                let elapsed = now - self.t0;
                self.actions.extend(acts.into_iter().map(|a| (elapsed, a)));
            }
            for probe in self.health.take_due(now) {
                let (takes, outcome) = server(probe, (now - self.t0).as_secs_f64());
                self.in_flight.push((now + takes, probe, outcome));
            }
        }
        tokio::time::advance(end.saturating_duration_since(Instant::now())).await;
    }

    /// Pool changes with their time in milliseconds.
    fn pool_changes(&self) -> Vec<(u128, Action)> {
        self.actions
            .iter()
            .filter(|(_, a)| a.is_pool_change())
            .map(|(t, a)| (t.as_millis(), a.clone()))
            .collect()
    }

    fn logs(&self) -> Vec<(u128, String)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Log { message, .. } => Some((t.as_millis(), message.clone())),
                _ => None,
            })
            .collect()
    }

    fn scripts(&self) -> Vec<(u128, String, ScriptEvent, Option<Duration>)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::RunScript {
                    script,
                    event,
                    timeout,
                } => Some((
                    t.as_millis(),
                    script.script.clone(),
                    event.clone(),
                    *timeout,
                )),
                _ => None,
            })
            .collect()
    }

    /// The notify FIFO lines with their time in milliseconds.
    /// The checks' verdicts on real servers: when, which, alive or not.
    fn verdicts(&self) -> Vec<(u128, SocketAddr, bool)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::RealServerAlive { dest, alive, .. } => Some((t.as_millis(), *dest, *alive)),
                _ => None,
            })
            .collect()
    }

    fn fifo_lines(&self) -> Vec<(u128, String)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::NotifyFifo { line } => Some((t.as_millis(), line.clone())),
                _ => None,
            })
            .collect()
    }

    /// When `message` was logged, in milliseconds.
    fn logged(&self, message: &str) -> Vec<u128> {
        self.logs()
            .into_iter()
            .filter(|(_, m)| m == message)
            .map(|(t, _)| t)
            .collect()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

const UP: Answer = (Duration::ZERO, Outcome::Up);

fn timeout(connect_timeout: f64) -> Answer {
    (
        Duration::from_secs_f64(connect_timeout),
        Outcome::Down(Reason::ConnectTimeout),
    )
}

const TCP_ONE: &str = r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 10
    real_server 192.168.0.1 80 {
        weight 3
        TCP_CHECK {
            connect_timeout 3
            retry 2
            delay_before_retry 2
            warmup 0
        }
    }
}
"#;

#[tokio::test(start_paused = true)]
async fn a_dead_server_leaves_after_retry_plus_one_timeouts() {
    let mut sim = Sim::start(TCP_ONE);
    // Up until 30 s, then every probe times out.
    sim.run_until(100.0, |_, t| if t < 30.0 { UP } else { timeout(3.0) })
        .await;
    // Probes at 1, 11, 21 pass; the one at 31 times out at 34, retries start at 36 and
    // 41 and time out at 39 and 44: down at 31 + 3×3 + 2×2 = 44.
    assert_eq!(
        sim.pool_changes(),
        vec![
            (
                0,
                Action::AddDest {
                    vs: 0,
                    dest: addr("192.168.0.1:80"),
                    weight: 3
                }
            ),
            (
                44000,
                Action::RemoveDest {
                    vs: 0,
                    dest: addr("192.168.0.1:80")
                }
            ),
        ]
    );
    assert_eq!(
        sim.logged("TCP_CHECK on service [192.168.0.1]:tcp:80 failed after 2 retries."),
        vec![44000]
    );
    assert_eq!(
        sim.logged("Removing service [192.168.0.1]:tcp:80 from VS [10.0.0.1]:tcp:80"),
        vec![44000]
    );
    // Quorum 1 is lost with the only server.
    assert_eq!(
        sim.logged("Lost quorum 1-0=1 > 0 for VS [10.0.0.1]:tcp:80"),
        vec![44000]
    );
    // Down, it is probed every delay_loop (from each probe's end), not every retry delay.
    assert!(!sim.health.real_servers(0)[0].alive);
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_recovers_within_the_retries_changes_nothing() {
    let mut sim = Sim::start(TCP_ONE);
    // One timeout at 31 (ends 34), the retry at 36 passes.
    sim.run_until(100.0, |_, t| {
        if (30.0..35.0).contains(&t) {
            timeout(3.0)
        } else {
            UP
        }
    })
    .await;
    assert_eq!(sim.pool_changes().len(), 1, "{:?}", sim.pool_changes());
    assert!(sim.health.real_servers(0)[0].alive);
}

#[tokio::test(start_paused = true)]
async fn the_first_failure_takes_a_server_down_at_once_and_recovery_needs_one_success() {
    let mut sim = Sim::start(TCP_ONE);
    // Refused from the start, answering again from 50 s.
    sim.run_until(100.0, |_, t| {
        if t < 50.0 {
            (Duration::from_millis(1), Outcome::Down(Reason::Refused))
        } else {
            UP
        }
    })
    .await;
    let changes: Vec<(u128, bool)> = sim
        .pool_changes()
        .into_iter()
        .map(|(t, a)| (t, matches!(a, Action::AddDest { weight: 3, .. })))
        .collect();
    // Down at the first probe's result (1.001 s: no retries at startup), back at the
    // first probe from 50 s (probes every 10 s after each 1 ms refusal: 51.005).
    assert_eq!(changes, vec![(0, true), (1001, false), (51005, true)]);
    assert_eq!(
        sim.logged("TCP_CHECK on service [192.168.0.1]:tcp:80 failed."),
        vec![1001]
    );
    assert_eq!(
        sim.logged("TCP connection to [192.168.0.1]:tcp:80 success."),
        vec![51005]
    );
}

#[tokio::test(start_paused = true)]
async fn alpha_starts_down_and_adds_at_the_first_success() {
    let mut sim = Sim::start(
        r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 5
    alpha
    real_server 192.168.0.1 80 {
        notify_down /bin/down
        TCP_CHECK {
            warmup 0
        }
    }
    real_server 192.168.0.2 80 {
        notify_down /bin/down2
        TCP_CHECK {
            warmup 0
        }
    }
}
"#,
    );
    assert!(sim.pool_changes().is_empty(), "{:?}", sim.pool_changes());
    sim.run_until(20.0, |p, _| {
        if p.id.rs == 0 {
            UP
        } else {
            (
                Duration::from_secs(5),
                Outcome::Down(Reason::ConnectTimeout),
            )
        }
    })
    .await;
    assert_eq!(
        sim.pool_changes(),
        vec![(
            1000,
            Action::AddDest {
                vs: 0,
                dest: addr("192.168.0.1:80"),
                weight: 1
            }
        )]
    );
    // The failing alpha server was already down: notify_down runs once, at its first
    // result, and no pool change happens.
    assert_eq!(
        sim.scripts(),
        vec![(
            6000,
            "/bin/down2".to_owned(),
            ScriptEvent::RealServerDown {
                vs: 0,
                dest: addr("192.168.0.2:80")
            },
            None
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn inhibit_on_failure_keeps_the_server_at_weight_zero() {
    let mut sim = Sim::start(
        r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 5
    inhibit_on_failure
    real_server 192.168.0.1 80 {
        weight 7
        TCP_CHECK {
            retry 0
            warmup 0
        }
    }
}
"#,
    );
    sim.run_until(30.0, |_, t| {
        if (10.0..20.0).contains(&t) {
            (Duration::ZERO, Outcome::Down(Reason::Refused))
        } else {
            (Duration::ZERO, Outcome::Up)
        }
    })
    .await;
    let dest = addr("192.168.0.1:80");
    assert_eq!(
        sim.pool_changes(),
        vec![
            (
                0,
                Action::AddDest {
                    vs: 0,
                    dest,
                    weight: 7
                }
            ),
            (
                11000,
                Action::SetWeight {
                    vs: 0,
                    dest,
                    weight: 0
                }
            ),
            (
                21000,
                Action::SetWeight {
                    vs: 0,
                    dest,
                    weight: 7
                }
            ),
        ]
    );
    assert_eq!(
        sim.logged("Disabling service [192.168.0.1]:tcp:80 of VS [10.0.0.1]:tcp:80"),
        vec![11000]
    );
    assert_eq!(
        sim.logged("Enabling service [192.168.0.1]:tcp:80 of VS [10.0.0.1]:tcp:80"),
        vec![21000]
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_with_several_checkers_is_up_only_when_all_are() {
    let mut sim = Sim::start(
        r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 5
    real_server 192.168.0.1 80 {
        TCP_CHECK {
            retry 0
            warmup 0
        }
        TCP_CHECK {
            connect_port 8080
            retry 0
            warmup 0
        }
    }
}
"#,
    );
    // Checker 0 fails 10–20 s, checker 1 fails 15–30 s.
    sim.run_until(40.0, |p, t| {
        let failing = match p.id.checker {
            0 => (10.0..20.0).contains(&t),
            _ => (15.0..30.0).contains(&t),
        };
        if failing {
            (Duration::ZERO, Outcome::Down(Reason::Refused))
        } else {
            (Duration::ZERO, Outcome::Up)
        }
    })
    .await;
    let times: Vec<(u128, bool)> = sim
        .pool_changes()
        .into_iter()
        .map(|(t, a)| (t, matches!(a, Action::AddDest { .. })))
        .collect();
    assert_eq!(times, vec![(0, true), (11000, false), (31000, true)]);
}

const QUORUM: &str = r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 5
    quorum 3
    hysteresis 1
    quorum_up /bin/qup
    quorum_down /bin/qdown
    sorry_server 192.168.9.9 8080
    real_server 192.168.0.1 80 {
        TCP_CHECK {
            retry 0
            warmup 0
        }
    }
    real_server 192.168.0.2 80 {
        TCP_CHECK {
            retry 0
            warmup 0
        }
    }
    real_server 192.168.0.3 80 {
        TCP_CHECK {
            retry 0
            warmup 0
        }
    }
    real_server 192.168.0.4 80 {
        TCP_CHECK {
            retry 0
            warmup 0
        }
    }
}
"#;

#[tokio::test(start_paused = true)]
async fn quorum_with_hysteresis_switches_to_the_sorry_server_and_back() {
    let mut sim = Sim::start(QUORUM);
    // Servers fail one by one (rs i fails from 10 + 10 i), all come back in turn from
    // 100 (rs i back from 100 + 10 i).
    sim.run_until(200.0, |p, t| {
        let i = p.id.rs as f64;
        if t >= 10.0 + 10.0 * i && t < 100.0 + 10.0 * i {
            (Duration::ZERO, Outcome::Down(Reason::Refused))
        } else {
            (Duration::ZERO, Outcome::Up)
        }
    })
    .await;
    // Gained at start with 4 >= 3+1; kept with 3 and 2 (>= 3-1); lost at 1 < 2.
    assert_eq!(
        sim.logged("Gained quorum 3+1=4 <= 4 for VS [10.0.0.1]:tcp:80"),
        vec![0, 131000]
    );
    assert_eq!(
        sim.logged("Lost quorum 3-1=2 > 1 for VS [10.0.0.1]:tcp:80"),
        vec![31000]
    );
    assert_eq!(
        sim.logged("Adding sorry server [192.168.9.9]:tcp:8080 to VS [10.0.0.1]:tcp:80"),
        vec![31000]
    );
    assert_eq!(
        sim.logged("Removing sorry server [192.168.9.9]:tcp:8080 from VS [10.0.0.1]:tcp:80"),
        vec![131000]
    );
    let sorry = addr("192.168.9.9:8080");
    let at = |t: u128| -> Vec<Action> {
        sim.pool_changes()
            .into_iter()
            .filter(|(when, _)| *when == t)
            .map(|(_, a)| a)
            .collect()
    };
    // Losing quorum: the third server leaves, the last live one is pulled, the sorry
    // server goes in.
    assert_eq!(
        at(31000),
        vec![
            Action::RemoveDest {
                vs: 0,
                dest: addr("192.168.0.3:80")
            },
            Action::RemoveDest {
                vs: 0,
                dest: addr("192.168.0.4:80")
            },
            Action::AddDest {
                vs: 0,
                dest: sorry,
                weight: 1
            },
        ]
    );
    // The verdicts follow the checks, not the pool: rs4, pulled at 31 for the sorry
    // server, stays alive until its own check fails at 41, and those coming back are
    // alive while still out of the pool.
    let verdicts: Vec<(u128, SocketAddr, bool)> = sim
        .verdicts()
        .into_iter()
        .filter(|(t, _, _)| *t > 0)
        .collect();
    let rs = |i: u8| addr(&format!("192.168.0.{i}:80"));
    assert_eq!(
        verdicts,
        [
            (11000, rs(1), false),
            (21000, rs(2), false),
            (31000, rs(3), false),
            (41000, rs(4), false),
            (101000, rs(1), true),
            (111000, rs(2), true),
            (121000, rs(3), true),
            (131000, rs(4), true),
        ]
    );
    // Servers coming back under the sorry server stay out of the pool (101, 111, 121:
    // weight 2 and 3 < 3+1) until quorum is regained at 131.
    assert!(at(101000).is_empty() && at(111000).is_empty() && at(121000).is_empty());
    assert_eq!(
        at(131000),
        vec![
            Action::RemoveDest { vs: 0, dest: sorry },
            Action::AddDest {
                vs: 0,
                dest: addr("192.168.0.1:80"),
                weight: 1
            },
            Action::AddDest {
                vs: 0,
                dest: addr("192.168.0.2:80"),
                weight: 1
            },
            Action::AddDest {
                vs: 0,
                dest: addr("192.168.0.3:80"),
                weight: 1
            },
            Action::AddDest {
                vs: 0,
                dest: addr("192.168.0.4:80"),
                weight: 1
            },
        ]
    );
    // The FIFO hears each server and the virtual server, as keepalived writes them.
    let fifo = sim.fifo_lines();
    assert!(fifo.contains(&(
        11000,
        "RS [192.168.0.1]:tcp:80 [10.0.0.1]:tcp:80 DOWN\n".to_owned()
    )));
    assert!(fifo.contains(&(31000, "VS [10.0.0.1]:tcp:80 DOWN\n".to_owned())));
    assert!(fifo.contains(&(131000, "VS [10.0.0.1]:tcp:80 UP\n".to_owned())));
    let quorum_scripts: Vec<(u128, String)> = sim
        .scripts()
        .into_iter()
        .map(|(t, s, _, _)| (t, s))
        .collect();
    assert_eq!(
        quorum_scripts,
        vec![
            (0, "/bin/qup".to_owned()),
            (31000, "/bin/qdown".to_owned()),
            (131000, "/bin/qup".to_owned()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn sorry_server_inhibit_waits_at_weight_zero_and_omega_runs_quorum_down_at_stop() {
    let mut sim = Sim::start(
        r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 5
    omega
    quorum_down /bin/qdown
    sorry_server 192.168.9.9 8080
    sorry_server_inhibit
    real_server 192.168.0.1 80 {
        notify_down /bin/rsdown
        TCP_CHECK {
            retry 0
            warmup 0
        }
    }
}
"#,
    );
    let sorry = addr("192.168.9.9:8080");
    let rs = addr("192.168.0.1:80");
    sim.run_until(20.0, |_, t| {
        if t < 10.0 {
            (Duration::ZERO, Outcome::Up)
        } else {
            (Duration::ZERO, Outcome::Down(Reason::HttpStatus(503)))
        }
    })
    .await;
    let changes: Vec<Action> = sim.pool_changes().into_iter().map(|(_, a)| a).collect();
    assert_eq!(
        changes,
        vec![
            Action::AddDest {
                vs: 0,
                dest: rs,
                weight: 1
            },
            Action::AddDest {
                vs: 0,
                dest: sorry,
                weight: 0
            },
            Action::RemoveDest { vs: 0, dest: rs },
            Action::SetWeight {
                vs: 0,
                dest: sorry,
                weight: 1
            },
        ]
    );
    let stop = sim.health.stop();
    assert_eq!(
        stop.iter()
            .filter(|a| a.is_pool_change())
            .cloned()
            .collect::<Vec<_>>(),
        vec![Action::RemoveDest { vs: 0, dest: sorry }]
    );
    let scripts: Vec<(String, Option<Duration>)> = stop
        .iter()
        .filter_map(|a| match a {
            Action::RunScript {
                script, timeout, ..
            } => Some((script.script.clone(), *timeout)),
            _ => None,
        })
        .collect();
    // The real server was already down: only quorum_down, with a one-second limit.
    assert_eq!(
        scripts,
        vec![("/bin/qdown".to_owned(), Some(Duration::from_secs(1)))]
    );
    assert_eq!(sim.health.next_due(), None);
}

const MISC_DYNAMIC: &str = r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 5
    real_server 192.168.0.1 80 {
        weight 10
        MISC_CHECK {
            misc_path "/bin/weigh"
            misc_dynamic
            warmup 0
        }
    }
}
"#;

#[tokio::test(start_paused = true)]
async fn misc_dynamic_turns_exit_codes_into_weights() {
    let mut sim = Sim::start(MISC_DYNAMIC);
    // Exit 0 (weight unchanged), then 7 (weight 5), then 2 (weight 0, still alive),
    // then 1 (down), then 12 (up with weight 10).
    let script = [0, 7, 2, 1, 12];
    sim.run_until(30.0, |_, t| {
        let round = ((t - 1.0) / 5.0).round() as usize;
        (
            Duration::from_millis(100),
            Outcome::Exited(script[round.min(script.len() - 1)]),
        )
    })
    .await;
    let dest = addr("192.168.0.1:80");
    let changes: Vec<(u128, Action)> = sim.pool_changes();
    assert_eq!(
        changes,
        vec![
            (
                0,
                Action::AddDest {
                    vs: 0,
                    dest,
                    weight: 10
                }
            ),
            (
                6100,
                Action::SetWeight {
                    vs: 0,
                    dest,
                    weight: 5
                }
            ),
            (
                11100,
                Action::SetWeight {
                    vs: 0,
                    dest,
                    weight: 0
                }
            ),
            (16100, Action::RemoveDest { vs: 0, dest }),
            (
                21100,
                Action::AddDest {
                    vs: 0,
                    dest,
                    weight: 10
                }
            ),
        ]
    );
    // MISC_CHECK counts its delay from the script's start: rounds stay 5 s apart.
    assert_eq!(
        sim.logged(
            "Misc check for [[192.168.0.1]:tcp:80 VS [10.0.0.1]:tcp:80] by [/bin/weigh] failed with retry disabled (exited with status 1)."
        ),
        vec![16100]
    );
    assert_eq!(
        sim.logged("Changing weight from 10 to 5 for active service [192.168.0.1]:tcp:80 of VS [10.0.0.1]:tcp:80"),
        vec![6100]
    );
    // Weight 0 counts nothing towards quorum 1.
    assert_eq!(
        sim.logged("Lost quorum 1-0=1 > 0 for VS [10.0.0.1]:tcp:80"),
        vec![11100]
    );
}

#[tokio::test(start_paused = true)]
async fn http_recovery_needs_the_failed_url_and_then_every_url() {
    let mut sim = Sim::start(
        r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 10
    real_server 192.168.0.1 80 {
        HTTP_GET {
            url {
                path /a
            }
            url {
                path /b
                digest 0123456789abcdef0123456789abcdef
            }
            retry 1
            delay_before_retry 2
            warmup 0
        }
    }
}
"#,
    );
    // /b fails between 30 and 60 s.
    let mut fetched = Vec::new();
    sim.run_until(120.0, |p, t| {
        fetched.push(((t * 1000.0).round() as u64, p.url));
        if p.url == 1 && (30.0..60.0).contains(&t) {
            (
                Duration::ZERO,
                Outcome::Down(Reason::DigestMismatch {
                    got: "ffffffffffffffffffffffffffffffff".into(),
                }),
            )
        } else {
            (Duration::ZERO, Outcome::Up)
        }
    })
    .await;
    // One url per delay_loop: /a at 1, /b at 11 (up), /a 21, /b 31 fails, retried at 33
    // (fails: down, after 1 retry), then /b every 10 s (max(delay_before_retry,
    // delay_loop)): 43, 53 fail, 63 passes, then /a 73 and /b 83: back up at 83.
    assert_eq!(
        &fetched[..10],
        &[
            (1000, 0),
            (11000, 1),
            (21000, 0),
            (31000, 1),
            (33000, 1),
            (43000, 1),
            (53000, 1),
            (63000, 1),
            (73000, 0),
            (83000, 1)
        ]
    );
    assert_eq!(
        sim.logged("HTTP_CHECK on service [192.168.0.1]:tcp:80 failed after 1 retries."),
        vec![33000]
    );
    assert_eq!(
        sim.logged("MD5 digest success to [192.168.0.1]:tcp:80 url(/b)"),
        vec![63000, 83000]
    );
    assert_eq!(
        // keepalived also says so for the first full round at startup.
        sim.logged("Remote Web server [192.168.0.1]:tcp:80 succeed on service."),
        vec![11000, 83000]
    );
    let changes: Vec<u128> = sim.pool_changes().into_iter().map(|(t, _)| t).collect();
    assert_eq!(changes, vec![0, 33000, 83000]);
}

#[tokio::test(start_paused = true)]
async fn warmup_spreads_first_probes_and_defaults_to_delay_loop() {
    let config = common::load(
        r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 8
    real_server 192.168.0.1 80 {
        TCP_CHECK {
        }
        TCP_CHECK {
            warmup 2
        }
    }
}
"#,
    );
    let mut health = Health::new(&config);
    let t0 = Instant::now();
    let mut asked = BTreeMap::new();
    let mut n = 0;
    health.start(t0, |w| {
        n += 1;
        asked.insert(n, w);
        w / 2
    });
    assert_eq!(asked[&1], Duration::from_secs(8));
    assert_eq!(asked[&2], Duration::from_secs(2));
    let id = |checker| keeplb_check::CheckerId {
        vs: 0,
        rs: 0,
        checker,
    };
    assert_eq!(health.due(id(0)), Some(t0 + Duration::from_secs(5)));
    assert_eq!(health.due(id(1)), Some(t0 + Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn file_check_weights_and_faults_follow_the_file() {
    let config = common::load(
        r#"
track_file ready {
    file /run/keeplb-test-ready
    weight 0
}
track_file load {
    file /run/keeplb-test-load
}
virtual_server 10.0.0.1 80 {
    protocol TCP
    real_server 192.168.0.1 80 {
        weight 10
        FILE_CHECK {
            track_file load
            weight -2
        }
    }
    real_server 192.168.0.2 80 {
        FILE_CHECK {
            track_file ready
        }
    }
}
"#,
    );
    let mut health = Health::new(&config);
    let weighted = keeplb_check::CheckerId {
        vs: 0,
        rs: 0,
        checker: 0,
    };
    let fault_only = keeplb_check::CheckerId {
        vs: 0,
        rs: 1,
        checker: 0,
    };
    // The files read before start: load 1 (10 − 2 = 8), ready 1 (non-zero: fault).
    health.set_initial_file_value(weighted, 1);
    health.set_initial_file_value(fault_only, 1);
    let start: Vec<Action> = health
        .start(Instant::now(), |_| Duration::ZERO)
        .into_iter()
        .filter(Action::is_pool_change)
        .collect();
    let (rs1, rs2) = (addr("192.168.0.1:80"), addr("192.168.0.2:80"));
    assert_eq!(
        start,
        vec![Action::AddDest {
            vs: 0,
            dest: rs1,
            weight: 8
        }]
    );
    assert_eq!(health.next_due(), None, "files are not probed");
    let set_weight = |weight| Action::SetWeight {
        vs: 0,
        dest: rs1,
        weight,
    };
    let steps = [
        (weighted, 3, set_weight(4)),
        // Far below zero is weight 0, not a fault: the server stays, unweighted.
        (weighted, 100, set_weight(0)),
        (
            fault_only,
            0,
            Action::AddDest {
                vs: 0,
                dest: rs2,
                weight: 1,
            },
        ),
        (fault_only, 7, Action::RemoveDest { vs: 0, dest: rs2 }),
    ];
    for (id, value, expected) in steps {
        let changes: Vec<Action> = health
            .on_file_value(id, value)
            .into_iter()
            .filter(Action::is_pool_change)
            .collect();
        assert_eq!(changes, vec![expected], "value {value}");
    }
    assert!(health.real_servers(0)[0].alive);
}

#[tokio::test(start_paused = true)]
async fn ha_suspend_holds_checks_until_the_address_is_here() {
    let mut sim = Sim::start(
        r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 5
    ha_suspend
    real_server 192.168.0.1 80 {
        TCP_CHECK {
            retry 0
            warmup 0
        }
    }
}
"#,
    );
    assert_eq!(
        sim.logged(
            "Deactivating healthchecker for service [192.168.0.1]:tcp:80 for VS [10.0.0.1]:tcp:80"
        ),
        vec![0]
    );
    let mut probed = Vec::new();
    sim.run_until(20.0, |_, t| {
        probed.push(t);
        (Duration::ZERO, Outcome::Down(Reason::Refused))
    })
    .await;
    assert!(probed.is_empty(), "suspended checks ran at {probed:?}");
    assert!(sim.health.real_servers(0)[0].in_pool);
    let resumed = sim.health.set_address_present(0, true);
    assert_eq!(
        resumed,
        vec![Action::Log {
            message:
                "Activating healthchecker for service [192.168.0.1]:tcp:80 for VS [10.0.0.1]:tcp:80"
                    .into(),
            reason: None
        }]
    );
    sim.run_until(30.0, |_, t| {
        probed.push(t);
        (Duration::ZERO, Outcome::Down(Reason::Refused))
    })
    .await;
    // The next round after resuming (every 5 s from 1 s: 21 s) probes and removes.
    assert_eq!(probed, vec![21.0, 26.0]);
    assert!(!sim.health.real_servers(0)[0].in_pool);
}

/// Reload: the new checks carry over the old ones' state. A live server is neither
/// removed nor re-added (a changed weight is edited), a dead one stays out, a new one
/// is added, and quorum is not "gained" again.
#[tokio::test(start_paused = true)]
async fn a_reload_carries_over_the_previous_state() {
    let head = "virtual_server 10.0.0.100 80 {\n  delay_loop 5\n  lb_algo rr\n  protocol TCP\n  quorum 2\n";
    let rs = |ip: &str, weight: u32| {
        format!(
            "  real_server {ip} 80 {{\n    weight {weight}\n    TCP_CHECK {{\n      retry 2\n    }}\n  }}\n"
        )
    };
    let old_text = format!("{head}{}{}}}\n", rs("10.0.0.1", 2), rs("10.0.0.2", 1));
    let mut old = Sim::start(&old_text);
    let dead: SocketAddr = "10.0.0.2:80".parse().unwrap();
    old.run_until(60.0, |probe, _| {
        if probe.id.rs == 1 {
            (Duration::ZERO, Outcome::Down(Reason::Refused))
        } else {
            UP
        }
    })
    .await;
    assert!(
        old.pool_changes()
            .iter()
            .any(|(_, a)| *a == Action::RemoveDest { vs: 0, dest: dead }),
        "the dead server left the pool"
    );

    let new_text = format!(
        "{head}{}{}{}}}\n",
        rs("10.0.0.1", 3),
        rs("10.0.0.2", 1),
        rs("10.0.0.3", 1)
    );
    let mut health = Health::new(&common::load(&new_text));
    health.inherit(&old.health);
    let actions = health.start(Instant::now(), |_| Duration::ZERO);
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let pool_changes: Vec<&Action> = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::AddDest { .. } | Action::RemoveDest { .. } | Action::SetWeight { .. }
            )
        })
        .collect();
    assert_eq!(
        pool_changes,
        [
            &Action::SetWeight {
                vs: 0,
                dest: addr("10.0.0.1:80"),
                weight: 3
            },
            &Action::AddDest {
                vs: 0,
                dest: addr("10.0.0.3:80"),
                weight: 1
            },
        ]
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Log { message, .. } if message.contains("quorum"))),
        "quorum carried over: {actions:?}"
    );
}

/// keepalived's migrate_misc_check: the weight a `misc_dynamic` script gave survives a
/// reload; the same exit status after it changes nothing.
#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_weight_misc_dynamic_gave() {
    let mut old = Sim::start(MISC_DYNAMIC);
    let weigh = |_: Probe, _: f64| (Duration::from_millis(100), Outcome::Exited(7));
    old.run_until(20.0, weigh).await;
    let dest = addr("192.168.0.1:80");
    assert_eq!(
        old.pool_changes().last(),
        Some(&(
            1100,
            Action::SetWeight {
                vs: 0,
                dest,
                weight: 5
            }
        ))
    );
    let mut new = old.reload(MISC_DYNAMIC);
    new.run_until(30.0, weigh).await;
    assert_eq!(new.pool_changes(), vec![], "{:?}", new.logs());
    assert_eq!(new.health.real_servers(0)[0].weight, 5);
    // A new configured weight moves the effective weight by as much.
    let heavier = MISC_DYNAMIC.replace("weight 10", "weight 12");
    let mut heavier = new.reload(&heavier);
    heavier.run_until(30.0, weigh).await;
    assert_eq!(heavier.health.real_servers(0)[0].weight, 5);
    assert_eq!(heavier.pool_changes(), vec![]);
}

/// keepalived's clear_service_rs and clear_service_vs on reload: a live real server the
/// new configuration dropped gets its notify_down and FIFO line; a dropped virtual server
/// with quorum its quorum_down.
#[tokio::test(start_paused = true)]
async fn a_reload_notifies_the_servers_it_drops() {
    let vs = |vip: &str, servers: &[&str]| {
        let mut text = format!(
            "virtual_server {vip} 80 {{\n  protocol TCP\n  delay_loop 5\n  quorum_down \"/bin/qdown {vip}\"\n"
        );
        for ip in servers {
            text.push_str(&format!(
                "  real_server {ip} 80 {{\n    notify_down \"/bin/down {ip}\"\n    TCP_CHECK {{\n      warmup 0\n    }}\n  }}\n"
            ));
        }
        text + "}\n"
    };
    let old_text =
        vs("10.0.0.1", &["192.168.0.1", "192.168.0.2"]) + &vs("10.0.0.2", &["192.168.0.3"]);
    let mut old = Sim::start(&old_text);
    old.run_until(10.0, |_, _| UP).await;
    assert!(old.scripts().is_empty());
    let new = old.reload(&vs("10.0.0.1", &["192.168.0.1"]));
    let scripts: Vec<(String, ScriptEvent)> = new
        .scripts()
        .into_iter()
        .map(|(_, script, event, _)| (script, event))
        .collect();
    assert_eq!(
        scripts,
        vec![
            (
                "/bin/down 192.168.0.2".to_owned(),
                ScriptEvent::RealServerDown {
                    vs: 0,
                    dest: addr("192.168.0.2:80")
                }
            ),
            (
                "/bin/down 192.168.0.3".to_owned(),
                ScriptEvent::RealServerDown {
                    vs: 1,
                    dest: addr("192.168.0.3:80")
                }
            ),
            (
                "/bin/qdown 10.0.0.2".to_owned(),
                ScriptEvent::QuorumDown { vs: 1 }
            ),
        ]
    );
    assert_eq!(
        new.fifo_lines(),
        vec![
            (
                0,
                "RS [192.168.0.2]:tcp:80 [10.0.0.1]:tcp:80 DOWN\n".to_owned()
            ),
            (
                0,
                "RS [192.168.0.3]:tcp:80 [10.0.0.2]:tcp:80 DOWN\n".to_owned()
            ),
            (0, "VS [10.0.0.2]:tcp:80 DOWN\n".to_owned()),
        ]
    );
    assert_eq!(
        new.logged("service [192.168.0.2]:tcp:80 no longer exist"),
        vec![0]
    );
    assert_eq!(
        new.logged("Removing service [192.168.0.2]:tcp:80 from VS [10.0.0.1]:tcp:80"),
        vec![0]
    );
    assert_eq!(
        new.logged("Removing Virtual Server [10.0.0.2]:tcp:80"),
        vec![0]
    );
    // The pools are the caller's: no change for the kept server.
    assert_eq!(new.pool_changes(), vec![]);
}

/// keepalived's migrate_checkers sets alpha checkers down only on a real server that
/// has failed (or never ran): an alpha checker a reload adds to a live server starts up,
/// and its first failure takes the server out.
#[tokio::test(start_paused = true)]
async fn an_alpha_checker_added_by_a_reload_to_a_live_server_starts_up() {
    let head = "virtual_server 10.0.0.1 80 {\n  protocol TCP\n  delay_loop 5\n  real_server 192.168.0.1 80 {\n    TCP_CHECK {\n      warmup 0\n    }\n";
    let mut old = Sim::start(&format!("{head}  }}\n}}\n"));
    old.run_until(10.0, |_, _| UP).await;
    let with_alpha = format!(
        "{head}    MISC_CHECK {{\n      misc_path /bin/check\n      alpha\n      warmup 0\n    }}\n  }}\n}}\n"
    );
    let mut new = old.reload(&with_alpha);
    assert!(new.health.real_servers(0)[0].alive);
    assert_eq!(new.health.real_servers(0)[0].failed_checkers, 0);
    new.run_until(10.0, |probe, _| {
        if probe.id.checker == 1 {
            (Duration::ZERO, Outcome::Exited(1))
        } else {
            UP
        }
    })
    .await;
    let dest = addr("192.168.0.1:80");
    assert_eq!(
        new.pool_changes(),
        vec![(1000, Action::RemoveDest { vs: 0, dest })]
    );
}

/// A checker whose probe changed is a new checker for keepalived: a server it kept out
/// comes back at the reload (nothing failed yet) until the new check's first failure; a
/// new real server's checkers get their retries (one failure is enough only at the
/// daemon's start).
#[tokio::test(start_paused = true)]
async fn a_reload_starts_changed_checkers_and_new_servers_afresh() {
    let config = |port: u16, servers: &[&str]| {
        let mut text = "virtual_server 10.0.0.1 80 {\n  protocol TCP\n  delay_loop 10\n".to_owned();
        for ip in servers {
            text.push_str(&format!(
                "  real_server {ip} 80 {{\n    TCP_CHECK {{\n      connect_port {port}\n      retry 2\n      delay_before_retry 1\n      warmup 0\n    }}\n  }}\n"
            ));
        }
        text + "}\n"
    };
    let mut old = Sim::start(&config(8080, &["192.168.0.1"]));
    old.run_until(5.0, |_, _| (Duration::ZERO, Outcome::Down(Reason::Refused)))
        .await;
    let first = addr("192.168.0.1:80");
    assert!(!old.health.real_servers(0)[0].alive);
    let mut new = old.reload(&config(8081, &["192.168.0.1", "192.168.0.2"]));
    new.run_until(30.0, |_, _| {
        (Duration::ZERO, Outcome::Down(Reason::Refused))
    })
    .await;
    let second = addr("192.168.0.2:80");
    assert_eq!(
        new.pool_changes(),
        vec![
            (
                0,
                Action::AddDest {
                    vs: 0,
                    dest: first,
                    weight: 1
                }
            ),
            (
                0,
                Action::AddDest {
                    vs: 0,
                    dest: second,
                    weight: 1
                }
            ),
            // Out of the pool before, with no checker that ran: one failure is enough.
            (1000, Action::RemoveDest { vs: 0, dest: first }),
            // New: probes at 1, 2, 3 s, down at the third failure.
            (
                3000,
                Action::RemoveDest {
                    vs: 0,
                    dest: second
                }
            ),
        ]
    );
    assert_eq!(
        new.logged("Adding service [192.168.0.1]:tcp:80 to VS [10.0.0.1]:tcp:80"),
        vec![0]
    );
}

/// keepalived's `fast_recovery` (HTTP_GET/SSL_GET): at start, and once the url that took
/// a server down passes again, the other urls are fetched at once instead of one per
/// `delay_loop`.
#[tokio::test(start_paused = true)]
async fn fast_recovery_fetches_the_remaining_urls_at_once() {
    let config = |fast: &str| {
        format!(
            r#"
virtual_server 10.0.0.1 80 {{
    protocol TCP
    delay_loop 10
    real_server 192.168.0.1 80 {{
        HTTP_GET {{
            url {{
                path /a
            }}
            url {{
                path /b
            }}
            url {{
                path /c
            }}
            retry 0
            delay_before_retry 2
            warmup 0
            {fast}
        }}
    }}
}}
"#
        )
    };
    // /b fails between 40 and 60 s.
    let run = |text: String| async move {
        let mut sim = Sim::start(&text);
        let mut fetched = Vec::new();
        sim.run_until(100.0, |p, t| {
            fetched.push(((t * 1000.0).round() as u64, p.url));
            if p.url == 1 && (40.0..60.0).contains(&t) {
                (Duration::ZERO, Outcome::Down(Reason::HttpStatus(500)))
            } else {
                UP
            }
        })
        .await;
        let changes: Vec<u128> = sim.pool_changes().into_iter().map(|(t, _)| t).collect();
        (fetched, changes)
    };
    let (fetched, changes) = run(config("fast_recovery")).await;
    assert_eq!(
        &fetched[..12],
        &[
            // Start: all three at once, then one per delay_loop.
            (1000, 0),
            (1000, 1),
            (1000, 2),
            (11000, 0),
            (21000, 1),
            (31000, 2),
            (41000, 0),
            // Down at its failure; the failed url after delay_loop.
            (51000, 1),
            // It passes: all the urls at once, up again.
            (61000, 1),
            (61000, 0),
            (61000, 1),
            (61000, 2),
        ]
    );
    assert_eq!(changes, vec![0, 51000, 61000]);
    // Without it: one url per delay_loop all along.
    let (fetched, changes) = run(config("fast_recovery off")).await;
    let times: Vec<u64> = fetched.iter().map(|(t, _)| *t).take(10).collect();
    assert_eq!(
        times,
        vec![
            1000, 11000, 21000, 31000, 41000, 51000, 61000, 71000, 81000, 91000
        ]
    );
    assert_eq!(changes, vec![0, 41000, 91000]);
}

/// keepalived's `rs_init_notifies`: real servers put in the pool alive at start get their
/// notify_up (and FIFO line) at once; without it, only later changes notify.
#[tokio::test(start_paused = true)]
async fn rs_init_notifies_runs_notify_up_for_servers_added_at_start() {
    let servers = r#"
virtual_server 10.0.0.1 80 {
    protocol TCP
    real_server 192.168.0.1 80 {
        notify_up "/bin/up 1"
        TCP_CHECK {
        }
    }
    real_server 192.168.0.2 80 {
        notify_up "/bin/up 2"
        TCP_CHECK {
            alpha
        }
    }
}
"#;
    let with = Sim::start(&format!(
        "global_defs {{\n    rs_init_notifies\n}}\n{servers}"
    ));
    assert_eq!(
        with.scripts(),
        vec![(
            0,
            "/bin/up 1".to_owned(),
            ScriptEvent::RealServerUp {
                vs: 0,
                dest: addr("192.168.0.1:80")
            },
            None
        )]
    );
    assert_eq!(
        with.fifo_lines()[0],
        (
            0,
            "RS [192.168.0.1]:tcp:80 [10.0.0.1]:tcp:80 UP\n".to_owned()
        )
    );
    let without = Sim::start(servers);
    assert_eq!(without.scripts(), vec![]);
}

/// keepalived's global `checker_log_all_failures` logs every failed attempt of every
/// checker, as `log_all_failures` does for one.
#[tokio::test(start_paused = true)]
async fn checker_log_all_failures_logs_every_failed_attempt() {
    let text = format!("global_defs {{\n    checker_log_all_failures\n}}\n{TCP_ONE}");
    let mut sim = Sim::start(&text);
    sim.run_until(40.0, |_, t| if t < 20.0 { UP } else { timeout(3.0) })
        .await;
    // Probes at 1, 11, 21 (fails), retried at 26 and 31: down after 2 retries at 34.
    assert_eq!(
        sim.logged("TCP connection to [192.168.0.1]:tcp:80 timeout."),
        vec![24000, 29000, 34000]
    );
    let quiet = Sim::start(TCP_ONE);
    let mut quiet = quiet;
    quiet
        .run_until(40.0, |_, t| if t < 20.0 { UP } else { timeout(3.0) })
        .await;
    assert_eq!(
        quiet.logged("TCP connection to [192.168.0.1]:tcp:80 timeout."),
        vec![]
    );
}

/// keepalived's TCP, HTTP, SSL, SMTP and DNS checkers reschedule after `delay_loop`
/// without counting a failure when their socket cannot be bound to its source (a
/// `bindto` address not on this director yet, as on a BACKUP): the servers stay as they
/// are. A real failure after it still gets its retries.
#[tokio::test(start_paused = true)]
async fn a_source_that_cannot_be_bound_changes_nothing() {
    let mut sim = Sim::start(TCP_ONE);
    let unbindable = (
        Duration::ZERO,
        Outcome::Down(Reason::Bind("Cannot assign requested address".into())),
    );
    sim.run_until(80.0, |_, t| match t {
        t if t < 10.0 => UP,
        t if t < 50.0 => unbindable.clone(),
        _ => timeout(3.0),
    })
    .await;
    assert_eq!(
        sim.logged("TCP socket bind failed. Rescheduling."),
        vec![11000, 21000, 31000, 41000]
    );
    // Still alive at 51: timeouts at 51, 56 and 61 (retry 2, delay_before_retry 2).
    let dest = addr("192.168.0.1:80");
    let (added, removed) = sim
        .pool_changes()
        .into_iter()
        .unzip::<_, _, Vec<_>, Vec<_>>();
    assert_eq!(added, vec![0, 64000]);
    assert!(matches!(
        removed[..],
        [Action::AddDest { weight: 3, .. }, Action::RemoveDest { vs: 0, dest: d }] if d == dest
    ));

    // alpha: the server stays out, and no notify_down runs for it.
    let mut alpha = Sim::start(
        &TCP_ONE
            .replace("weight 3", "weight 3\n        notify_down /bin/down")
            .replace("warmup 0", "warmup 0\n            alpha"),
    );
    alpha.run_until(30.0, |_, _| unbindable.clone()).await;
    assert_eq!(alpha.pool_changes(), vec![]);
    assert_eq!(alpha.scripts(), vec![]);
}
