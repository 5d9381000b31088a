//! One checker's retry machine, as keepalived's checkers run it (check_tcp.c, check_udp.c,
//! check_ping.c, check_dns.c, check_smtp.c, check_http.c, check_misc.c in 2.2.7).
//!
//! Shared by all: a checker starts up (or down with `alpha`) with its retry counter
//! already spent, so the very first failure takes it down at once. Once it has been up, a
//! failure is retried `retry` times, `delay_before_retry` apart, and the checker goes down
//! at the failure after those (retry + 1 failed attempts in a row). A down checker is probed
//! every `delay_loop` and comes up at its first success.
//!
//! HTTP_GET/SSL_GET fetch one url per round (`delay_loop` apart) and are up when every url
//! passed in a row; a server that went down must pass the url that failed and then all the
//! urls again. With `fast_recovery` the next url follows at once while the checker has not
//! run yet, or is down and its failed url passed. MISC_CHECK measures its delays from the
//! script's start and turns exit statuses 2–255 into weights under `misc_dynamic`.

use std::time::Duration;

use crate::action::Action;
use crate::outcome::{Outcome, Reason};

/// What kind of checker, with the state only that kind has.
#[derive(Debug, Clone)]
pub(crate) enum Flavor {
    /// TCP_CHECK, UDP_CHECK, PING_CHECK, DNS_CHECK, SMTP_CHECK.
    Simple(SimpleKind),
    Http(HttpState),
    Misc(MiscState),
    File(FileState),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SimpleKind {
    Tcp,
    Udp,
    Ping,
    Dns,
    Smtp,
}

#[derive(Debug, Clone)]
pub(crate) struct HttpState {
    pub ssl: bool,
    pub urls: Vec<UrlInfo>,
    /// The url the next probe fetches.
    pub url_it: usize,
    /// The url that took the server down, until it passes again.
    pub failed_url: Option<usize>,
    /// `fast_recovery`: the next url at once while the checker has not run yet, or is
    /// down with no url known to fail (keepalived 2.2's epilog).
    pub fast_recovery: bool,
}

/// What the machine needs to know about a url to log as keepalived does.
#[derive(Debug, Clone)]
pub(crate) struct UrlInfo {
    pub path: String,
    /// "HTTP status code", "MD5 digest" or "Regex match": the last test the url has.
    pub passed_test: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct MiscState {
    pub dynamic: bool,
    /// The script as logged (its first word).
    pub script: String,
    /// The real server's configured weight.
    pub initial_weight: i64,
    /// This checker's share of the real server's effective weight (status − 2 − weight).
    pub cur_weight: i64,
    pub last_exit_code: i32,
}

/// FILE_CHECK: a tracked file's number, times the weight (keepalived's track_file.c).
#[derive(Debug, Clone)]
pub(crate) struct FileState {
    /// 0: any non-zero value takes the server down (zero does, with `reverse`).
    pub weight: i64,
    pub reverse: bool,
    /// The status the last value gave: [`FILE_FAULT`] or a weight share.
    pub status: i64,
}

/// keepalived's IPVS_WEIGHT_FAULT: the status that takes a real server down.
pub(crate) const FILE_FAULT: i64 = i32::MIN as i64;

impl FileState {
    /// keepalived's status of a file value.
    pub fn status_of(&self, value: i64) -> i64 {
        if self.weight == 0 {
            if (value != 0) != self.reverse {
                FILE_FAULT
            } else {
                0
            }
        } else {
            let sign = if self.reverse { -1 } else { 1 };
            value
                .saturating_mul(self.weight)
                .saturating_mul(sign)
                .clamp(FILE_FAULT, i64::from(i32::MAX))
        }
    }
}

/// How a MISC_CHECK result changes the real server's effective weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightChange {
    None,
    /// `misc_dynamic`: replace this checker's share (`update_svr_wgt`, quorum updated).
    Dynamic {
        old: i64,
        new: i64,
    },
    /// Replace this checker's share silently (no pool change, no quorum update): a
    /// failing MISC_CHECK takes its share out, a FILE_CHECK leaving fault puts it in.
    Silent {
        old: i64,
        new: i64,
    },
}

/// What one probe result means for the checker.
#[derive(Debug)]
pub(crate) struct Step {
    /// keepalived's `update_svr_checker_state(alive)`, when it is called.
    pub transition: Option<bool>,
    /// Set `has_run` once the transition is applied.
    pub has_run_after: bool,
    /// Time to the next probe.
    pub delay: Duration,
    /// The delay counts from the probe's start (MISC_CHECK), not its end.
    pub from_start: bool,
    pub weight: WeightChange,
    pub logs: Vec<Action>,
}

/// One checker of one real server.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub flavor: Flavor,
    pub is_up: bool,
    pub has_run: bool,
    pub alpha: bool,
    pub retry: u32,
    pub retry_it: u32,
    pub delay_loop: Duration,
    pub delay_before_retry: Duration,
    pub warmup: Duration,
    pub log_all_failures: bool,
    /// `[10.0.0.1]:tcp:80`, keepalived's name of the real server.
    pub rs_name: String,
    /// keepalived's name of the virtual server.
    pub vs_name: String,
}

fn log(message: String, reason: Option<&Reason>) -> Action {
    Action::Log {
        message,
        reason: reason.cloned(),
    }
}

impl Machine {
    /// Whether it runs probes (FILE_CHECK follows its file instead).
    pub fn is_probed(&self) -> bool {
        !matches!(self.flavor, Flavor::File(_))
    }

    /// The url the next probe of an HTTP checker fetches (0 for the others).
    pub fn next_url(&self) -> usize {
        match &self.flavor {
            Flavor::Http(h) => h.url_it,
            _ => 0,
        }
    }

    /// What keepalived logs when this checker's socket cannot take its source options
    /// (`bindto`, `bind_port`, `bind_if`, `fwmark`): TCP, HTTP, SSL, SMTP and DNS checks
    /// then try again after `delay_loop` without counting a failure (the address may
    /// not be on this director yet); UDP and PING checks count it as one (None).
    fn bind_failed_message(&self) -> Option<String> {
        match &self.flavor {
            Flavor::Simple(SimpleKind::Tcp) => Some("TCP socket bind failed. Rescheduling.".into()),
            Flavor::Simple(SimpleKind::Smtp) => {
                Some("SMTP_CHECK socket bind failed. Rescheduling.".into())
            }
            Flavor::Simple(SimpleKind::Dns) => Some(format!(
                "DNS_CHECK ({}) UDP socket bind failed. Rescheduling.",
                self.rs_name
            )),
            Flavor::Http(_) => Some("WEB socket bind failed. Rescheduling".into()),
            Flavor::Simple(SimpleKind::Udp | SimpleKind::Ping)
            | Flavor::Misc(_)
            | Flavor::File(_) => None,
        }
    }

    /// Digests one probe result (`url`: which url it fetched, for HTTP).
    pub fn step(&mut self, url: usize, outcome: Outcome) -> Step {
        if let Outcome::Down(reason @ Reason::Bind(_)) = &outcome
            && let Some(message) = self.bind_failed_message()
        {
            let mut step = self.new_step(self.delay_loop);
            step.has_run_after = false;
            step.logs.push(log(message, Some(reason)));
            return step;
        }
        match &self.flavor {
            Flavor::Simple(kind) => {
                let kind = *kind;
                self.simple(kind, outcome_result(outcome))
            }
            Flavor::Http(_) => self.http(url, outcome_result(outcome)),
            Flavor::Misc(_) => self.misc(outcome),
            // Files are not probed: see `file_value`.
            Flavor::File(_) => self.new_step(self.delay_loop),
        }
    }

    /// A FILE_CHECK's file now holds `value` (keepalived's
    /// `process_update_checker_track_file_status`).
    pub fn file_value(&mut self, value: i64) -> Step {
        let mut step = self.new_step(Duration::ZERO);
        let Flavor::File(file) = &mut self.flavor else {
            return step;
        };
        let new = file.status_of(value);
        let previous = file.status;
        if new == previous {
            return step;
        }
        file.status = new;
        if new == FILE_FAULT {
            step.transition = Some(false);
            step.weight = WeightChange::Silent {
                old: previous,
                new: 0,
            };
        } else if previous == FILE_FAULT {
            step.weight = WeightChange::Silent { old: 0, new };
            step.transition = Some(true);
        } else {
            step.weight = WeightChange::Dynamic { old: previous, new };
        }
        step
    }

    fn new_step(&self, delay: Duration) -> Step {
        Step {
            transition: None,
            has_run_after: true,
            delay,
            from_start: false,
            weight: WeightChange::None,
            logs: Vec::new(),
        }
    }

    /// check_tcp.c / check_udp.c / check_ping.c `*_epilog`, dns_final, smtp_final.
    fn simple(&mut self, kind: SimpleKind, result: Result<(), Reason>) -> Step {
        let mut step = self.new_step(self.delay_loop);
        match result {
            Ok(()) => {
                if !self.is_up || !self.has_run {
                    if let Some(message) = self.simple_success(kind) {
                        step.logs.push(log(message, None));
                    }
                    step.transition = Some(true);
                }
                self.retry_it = 0;
            }
            Err(reason) => {
                if self.is_up && self.log_all_failures {
                    step.logs.push(log(
                        self.simple_attempt_failed(kind, &reason),
                        Some(&reason),
                    ));
                }
                if (self.is_up || !self.has_run) && self.retry_it >= self.retry {
                    self.retry_it = 0;
                    let after = (self.retry > 0 && self.has_run).then_some(self.retry);
                    step.logs
                        .push(log(self.simple_failed(kind, &reason, after), Some(&reason)));
                    step.transition = Some(false);
                } else if self.is_up {
                    step.delay = self.delay_before_retry;
                    self.retry_it += 1;
                }
            }
        }
        step
    }

    fn simple_success(&self, kind: SimpleKind) -> Option<String> {
        let rs = &self.rs_name;
        match kind {
            SimpleKind::Tcp => Some(format!("TCP connection to {rs} success.")),
            SimpleKind::Udp => Some(format!("UDP connection to {rs} success.")),
            SimpleKind::Ping => Some(format!("ICMP connection to {rs} success.")),
            SimpleKind::Smtp => Some(format!("Remote SMTP server {rs} succeed on service.")),
            // keepalived's DNS_CHECK says nothing of its own on success.
            SimpleKind::Dns => None,
        }
    }

    fn simple_attempt_failed(&self, kind: SimpleKind, reason: &Reason) -> String {
        let rs = &self.rs_name;
        match (kind, reason) {
            (SimpleKind::Tcp, Reason::ConnectTimeout) => format!("TCP connection to {rs} timeout."),
            (SimpleKind::Tcp, _) => format!("TCP connection to {rs} failed."),
            (SimpleKind::Udp, _) => format!("UDP connection to {rs} failed."),
            (SimpleKind::Ping, Reason::ConnectTimeout) => {
                format!("ICMP connection to address {rs} timeout.")
            }
            (SimpleKind::Ping, _) => {
                format!("ICMP connection to {rs} of {} failed.", self.vs_name)
            }
            (SimpleKind::Dns, _) => format!("DNS_CHECK ({rs}) {reason}."),
            (SimpleKind::Smtp, _) => format!("SMTP_CHECK {reason} from server {rs}."),
        }
    }

    fn simple_failed(&self, kind: SimpleKind, reason: &Reason, after: Option<u32>) -> String {
        let rs = &self.rs_name;
        match (kind, after) {
            (SimpleKind::Tcp, None) => format!("TCP_CHECK on service {rs} failed."),
            (SimpleKind::Tcp, Some(n)) => {
                format!("TCP_CHECK on service {rs} failed after {n} retries.")
            }
            (SimpleKind::Udp, None) => format!("UDP_CHECK on service {rs} failed."),
            (SimpleKind::Udp, Some(n)) => {
                format!("UDP_CHECK on service {rs} failed after {n} retries.")
            }
            (SimpleKind::Ping, None) => format!("ICMP CHECK on service {rs} failed."),
            (SimpleKind::Ping, Some(n)) => format!(
                "ICMP CHECK on service {rs} of {} failed after {n} retries.",
                self.vs_name
            ),
            (SimpleKind::Dns, None) => format!("DNS_CHECK ({rs}) {reason}."),
            (SimpleKind::Dns, Some(n)) => format!("DNS_CHECK ({rs}) {reason} after {n} retries."),
            (SimpleKind::Smtp, None) => format!("SMTP_CHECK {reason} from server {rs}."),
            (SimpleKind::Smtp, Some(n)) => {
                format!("SMTP_CHECK {reason} from server {rs} after {n} retries.")
            }
        }
    }

    /// check_http.c `http_handle_response`, `timeout_epilog` and `epilog`.
    fn http(&mut self, url: usize, result: Result<(), Reason>) -> Step {
        let mut step = self.new_step(self.delay_loop);
        step.has_run_after = false;
        let Flavor::Http(http) = &mut self.flavor else {
            return step;
        };
        let label = if http.ssl { "SSL" } else { "HTTP" };
        let rs = &self.rs_name;
        let url = url.min(http.urls.len().saturating_sub(1));
        match result {
            Ok(()) => {
                if !self.is_up
                    && let Some(info) = http.urls.get(url)
                {
                    step.logs.push(log(
                        format!("{} success to {rs} url({})", info.passed_test, info.path),
                        None,
                    ));
                }
                // REGISTER_CHECKER_NEW: on to the next url.
                http.url_it = url + 1;
                self.retry_it = 0;
                if http.url_it >= http.urls.len() && http.failed_url.is_none() {
                    if !self.is_up || !self.has_run {
                        step.logs.push(log(
                            format!("Remote Web server {rs} succeed on service."),
                            None,
                        ));
                        step.transition = Some(true);
                        step.has_run_after = true;
                    }
                    http.url_it = 0;
                } else if http.failed_url.is_some() {
                    // The failed url passes again: start over with all of them.
                    http.failed_url = None;
                    http.url_it = 0;
                }
                if !self.has_run && !step.has_run_after {
                    self.retry_it = self.retry;
                }
                step.delay = self.delay_loop;
                let has_run = self.has_run || step.has_run_after;
                let is_up = step.transition.unwrap_or(self.is_up);
                if http.fast_recovery && (!has_run || (!is_up && http.failed_url.is_none())) {
                    step.delay = Duration::ZERO;
                }
            }
            Err(reason) => {
                let retried = self.is_up || !self.has_run;
                if retried {
                    if self.log_all_failures {
                        step.logs.push(log(
                            format!("{} server {rs}.", reason.http_message()),
                            Some(&reason),
                        ));
                    }
                    self.has_run = true;
                    // REGISTER_CHECKER_RETRY
                    self.retry_it += 1;
                    if self.retry_it > self.retry {
                        if self.is_up {
                            let message = if self.retry > 0 {
                                format!(
                                    "{label}_CHECK on service {rs} failed after {} retries.",
                                    self.retry_it - 1
                                )
                            } else {
                                format!("{label}_CHECK on service {rs} failed.")
                            };
                            step.logs.push(log(message, Some(&reason)));
                            step.transition = Some(false);
                        }
                        http.failed_url = Some(url);
                    }
                }
                step.delay = if http.failed_url.is_some() {
                    self.delay_before_retry.max(self.delay_loop)
                } else {
                    self.delay_before_retry
                };
                // keepalived would also go on at once after a failure of a checker
                // already down whose failed url passed since: the same url again and
                // again without pause. That one waits delay_before_retry here.
                let is_up = step.transition.unwrap_or(self.is_up);
                if http.fast_recovery && retried && !is_up && http.failed_url.is_none() {
                    step.delay = Duration::ZERO;
                }
            }
        }
        step
    }

    /// check_misc.c `misc_check_child_thread`.
    fn misc(&mut self, outcome: Outcome) -> Step {
        let mut step = self.new_step(self.delay_loop);
        step.from_start = true;
        let Flavor::Misc(misc) = &mut self.flavor else {
            return step;
        };
        let (retry, log_all_failures) = (self.retry, self.log_all_failures);
        let mut exit_type: Option<&str> = None;
        let mut success = false;
        let mut detail: Option<(&str, i32)> = None;
        let mut message_only = false;
        let mut failure: Option<Reason> = None;
        // A failure of a checker that is up (or has not run): retry, or give up. False when
        // the retry is silent.
        let mut count_failure = |retry_it: &mut u32, misc: &mut MiscState, step: &mut Step| {
            if *retry_it < retry {
                *retry_it += 1;
                message_only = log_all_failures;
                log_all_failures
            } else {
                *retry_it = 0;
                step.weight = WeightChange::Silent {
                    old: misc.cur_weight,
                    new: 0,
                };
                misc.cur_weight = 0;
                true
            }
        };
        match outcome {
            Outcome::Exited(status)
                if status == 0 || (misc.dynamic && (2..=255).contains(&status)) =>
            {
                if status != misc.last_exit_code {
                    let old = misc.cur_weight;
                    misc.cur_weight = if status == 0 {
                        0
                    } else {
                        i64::from(status) - 2 - misc.initial_weight
                    };
                    step.weight = WeightChange::Dynamic {
                        old,
                        new: misc.cur_weight,
                    };
                    misc.last_exit_code = status;
                }
                if !self.is_up || !self.has_run {
                    exit_type = Some("succeeded");
                    success = true;
                }
                self.retry_it = 0;
            }
            Outcome::Exited(status) if self.is_up || !self.has_run => {
                failure = Some(Reason::ExitStatus(status));
                detail = Some(("exited with status", status));
                if count_failure(&mut self.retry_it, misc, &mut step) {
                    exit_type = Some("failed");
                }
                if self.retry_it == 0 {
                    misc.last_exit_code = status;
                }
            }
            Outcome::Down(reason) if self.is_up || !self.has_run => {
                let words = match &reason {
                    Reason::ScriptTimeout => "timed out",
                    _ => "failed",
                };
                if let Reason::Signal(signal) = reason {
                    detail = Some(("due to signal", signal));
                }
                failure = Some(reason);
                if count_failure(&mut self.retry_it, misc, &mut step) {
                    exit_type = Some(words);
                }
            }
            // A failure of a checker already down, or a result of another kind.
            Outcome::Exited(_) | Outcome::Down(_) | Outcome::Up => {}
        }
        if let Some(exit_type) = exit_type {
            let retries = |n: u32| if n == 1 { "retry" } else { "retries" };
            let counted = if success {
                String::new()
            } else if self.retry == 0 {
                " with retry disabled".to_owned()
            } else if self.retry_it == 1 {
                format!(", will do {} {}", self.retry, retries(self.retry))
            } else if self.retry_it > 1 {
                format!(" on retry {}/{}", self.retry_it - 1, self.retry)
            } else {
                format!(" after {} {}", self.retry, retries(self.retry))
            };
            let tail = match (detail, &failure) {
                (Some((words, code)), _) => format!(" ({words} {code})"),
                (None, Some(Reason::Spawn(e))) => format!(" ({e})"),
                (None, _) => String::new(),
            };
            step.logs.push(log(
                format!(
                    "Misc check for [{} VS {}] by [{}] {exit_type}{counted}{tail}.",
                    self.rs_name, self.vs_name, misc.script
                ),
                failure.as_ref(),
            ));
            if !message_only {
                step.transition = Some(success);
            }
        }
        if self.retry_it > 0 {
            step.delay = self.delay_before_retry;
        }
        step
    }
}

/// A probe result as pass/fail (a script's exit status 0 passes).
fn outcome_result(outcome: Outcome) -> Result<(), Reason> {
    match outcome {
        Outcome::Up | Outcome::Exited(0) => Ok(()),
        Outcome::Down(reason) => Err(reason),
        Outcome::Exited(status) => Err(Reason::ExitStatus(status)),
    }
}
