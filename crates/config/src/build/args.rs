//! Reading typed values from a keyword's arguments, with keepalived's syntax and a diagnostic
//! that points at the offending word.

use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::env::{Environment, ScriptState};
use crate::model::Script;
use crate::syntax::{Node, Token};

/// Collects diagnostics while a block is turned into model values.
pub struct Cx<'d> {
    pub diagnostics: &'d mut Diagnostics,
    pub env: &'d dyn Environment,
    /// `enable_script_security` from global_defs.
    pub script_security: bool,
    /// The first script that exists on this machine, for keepalived's "scripts run without
    /// script security" verdict.
    pub first_existing_script: Option<crate::source::Span>,
    /// `track_file` blocks defined so far: keepalived resolves FILE_CHECK's reference at
    /// the point it is read.
    pub track_files: Vec<String>,
    /// virtual_server_groups holding only fwmarks: their services need no protocol.
    pub fwmark_groups: Vec<String>,
    /// vrrp_script commands (name, command, span), checked after the whole file is read.
    pub pending_track_scripts: Vec<(String, String, crate::source::Span)>,
    /// The first script configured at all (keepalived then needs its script user).
    pub first_configured_script: Option<crate::source::Span>,
    /// `lvs_sync_daemon` as written, tied to its VRRP instance once all are read.
    pub lvs_sync_daemon: Option<super::sync_daemon::PendingSyncDaemon>,
}

/// What a script is for: keepalived treats a missing track script (it disables tracking)
/// differently from a missing notify script (silently skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptRole {
    Track,
    Notify,
    /// MISC_CHECK: missing is skipped like a notify script.
    Check,
}

impl Cx<'_> {
    pub fn error(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// The single argument of `node`, or an error if there is none. Extra words are ignored
    /// with a warning, as keepalived ignores them.
    pub fn arg<'n>(&mut self, node: &'n Node) -> Option<&'n Token> {
        self.args(node, 1).map(|args| &args[0])
    }

    /// The first `n` arguments; error if fewer, warning if more.
    pub fn args<'n>(&mut self, node: &'n Node, n: usize) -> Option<&'n [Token]> {
        if node.args.len() < n {
            self.error(
                Diagnostic::error(
                    "missing-value",
                    format!(
                        "`{}` needs {}",
                        node.name(),
                        if n == 1 {
                            "a value".to_owned()
                        } else {
                            format!("{n} values")
                        }
                    ),
                )
                .at(node.keyword.span, "value missing after this keyword"),
            );
            return None;
        }
        self.no_extra_args(node, n);
        Some(&node.args[..n])
    }

    /// keepalived reads only the words it needs and ignores the rest without a word; so do
    /// we, with a note.
    pub fn no_extra_args(&mut self, node: &Node, used: usize) {
        if let Some(first_extra) = node.args.get(used) {
            let last = node.args.last().map_or(first_extra.span, |t| t.span);
            self.error(
                Diagnostic::note(
                    "extra-arguments",
                    format!(
                        "`{}` takes {used} argument{}; the rest is ignored",
                        node.name(),
                        if used == 1 { "" } else { "s" }
                    ),
                )
                .at(first_extra.span.to(last), "ignored"),
            );
        }
    }

    /// The first argument, when more may follow (the caller reads them).
    pub fn arg_allowing_more<'n>(&mut self, node: &'n Node) -> Option<&'n Token> {
        match node.args.first() {
            Some(t) => Some(t),
            None => self.arg(node),
        }
    }

    pub fn string(&mut self, node: &Node) -> Option<String> {
        self.arg(node).map(|t| t.text.clone())
    }

    /// A whole decimal number in `range` (keepalived: base 10, a leading `+` allowed).
    pub fn number<T>(&mut self, node: &Node, token: &Token, range: RangeInclusive<T>) -> Option<T>
    where
        T: TryFrom<i128> + Into<i128> + Display + Copy,
    {
        let Ok(value) = token.text.parse::<i128>() else {
            self.error(
                Diagnostic::error(
                    "invalid-number",
                    format!(
                        "`{}` is not a valid number for `{}`",
                        token.text,
                        node.name()
                    ),
                )
                .at(
                    token.span,
                    format!("expected an integer in {}..={}", range.start(), range.end()),
                ),
            );
            return None;
        };
        let (low, high): (i128, i128) = ((*range.start()).into(), (*range.end()).into());
        if !(low..=high).contains(&value) {
            self.error(
                Diagnostic::error(
                    "out-of-range",
                    format!("`{}` {} is out of range", node.name(), token.text),
                )
                .at(
                    token.span,
                    format!("must be between {} and {}", range.start(), range.end()),
                ),
            );
            return None;
        }
        T::try_from(value).ok()
    }

    /// `keyword N` with N in `range`.
    pub fn int<T>(&mut self, node: &Node, range: RangeInclusive<T>) -> Option<T>
    where
        T: TryFrom<i128> + Into<i128> + Display + Copy,
    {
        let token = self.arg(node)?;
        self.number(node, token, range)
    }

    /// A TIMER: seconds, fractions allowed (keepalived keeps microseconds).
    pub fn seconds_token(&mut self, node: &Node, token: &Token, max: f64) -> Option<f64> {
        // keepalived keeps microseconds and reports digits beyond them.
        if let Some((_, fraction)) = token.text.split_once('.')
            && fraction.len() > 6
        {
            self.error(
                Diagnostic::warning(
                    "too-many-decimals",
                    format!("`{}` has more than 6 decimal places", token.text),
                )
                .at(token.span, "rounded to microseconds"),
            );
        }
        // Plain decimals only: no sign, exponent, `inf` or `nan`.
        if !token.text.chars().all(|c| c.is_ascii_digit() || c == '.') {
            self.error(
                Diagnostic::error(
                    "invalid-number",
                    format!("`{}` is not a valid time for `{}`", token.text, node.name()),
                )
                .at(token.span, "expected seconds, e.g. `3` or `0.5`"),
            );
            return None;
        }
        match token.text.parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=max).contains(&v) => Some((v * 1e6).round() / 1e6),
            Ok(_) => {
                self.error(
                    Diagnostic::error(
                        "out-of-range",
                        format!("`{}` {} is out of range", node.name(), token.text),
                    )
                    .at(token.span, format!("must be between 0 and {max} seconds")),
                );
                None
            }
            Err(_) => {
                self.error(
                    Diagnostic::error(
                        "invalid-number",
                        format!("`{}` is not a valid time for `{}`", token.text, node.name()),
                    )
                    .at(token.span, "expected seconds, e.g. `3` or `0.5`"),
                );
                None
            }
        }
    }

    pub fn seconds(&mut self, node: &Node, max: f64) -> Option<f64> {
        let token = self.arg(node)?;
        self.seconds_token(node, token, max)
    }

    /// A TIMER that must lie in `min..=max`.
    pub fn seconds_in(&mut self, node: &Node, token: &Token, min: f64, max: f64) -> Option<f64> {
        let value = self.seconds_token(node, token, max)?;
        if value < min {
            self.error(
                Diagnostic::error(
                    "out-of-range",
                    format!("`{}` {} is out of range", node.name(), token.text),
                )
                .at(
                    token.span,
                    format!("must be between {min} and {max} seconds"),
                ),
            );
            return None;
        }
        Some(value)
    }

    /// A TIMER that must be positive (keepalived's smallest is one microsecond).
    pub fn positive_seconds(&mut self, node: &Node) -> Option<f64> {
        let token = self.arg(node)?;
        self.seconds_in(node, token, 0.000_001, f64::from(u32::MAX))
    }

    /// A flag keyword whose words keepalived ignores: present means on, whatever follows.
    pub fn flag_only(&mut self, node: &Node) -> bool {
        if let Some(token) = node.args.first() {
            let looks_off = matches!(token.text.as_str(), "off" | "false" | "no" | "0");
            self.error(
                Diagnostic::note(
                    "flag-argument-ignored",
                    format!(
                        "`{}` takes no value; `{}` is ignored",
                        node.name(),
                        token.text
                    ),
                )
                .at(
                    token.span,
                    if looks_off {
                        "this does NOT turn it off: the keyword alone turns it on"
                    } else {
                        "ignored"
                    },
                ),
            );
        }
        true
    }

    /// A flag keyword: bare means on; otherwise a BOOL (on|off|true|false|yes|no).
    pub fn flag(&mut self, node: &Node) -> Option<bool> {
        let Some(token) = node.args.first() else {
            return Some(true);
        };
        self.no_extra_args(node, 1);
        // Case-sensitive, as keepalived's check_true_false.
        match token.text.as_str() {
            "on" | "true" | "yes" => Some(true),
            "off" | "false" | "no" => Some(false),
            _ => {
                self.error(
                    Diagnostic::error(
                        "invalid-bool",
                        format!(
                            "`{}` is not a valid value for `{}`",
                            token.text,
                            node.name()
                        ),
                    )
                    .at(token.span, "expected on, off, true, false, yes or no"),
                );
                None
            }
        }
    }

    pub fn ip_token(&mut self, node: &Node, token: &Token) -> Option<IpAddr> {
        match token.text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                // A list entry (a `unicast_peer` line) is its own keyword.
                let message = if token.span == node.keyword.span {
                    format!("`{}` is not a valid IP address", token.text)
                } else {
                    format!(
                        "`{}` is not a valid IP address for `{}`",
                        token.text,
                        node.name()
                    )
                };
                self.error(
                    Diagnostic::error("invalid-address", message)
                        .at(token.span, "expected an IPv4 or IPv6 address"),
                );
                None
            }
        }
    }

    /// An address as keepalived's `inet_stosockaddr` reads it: anything from the first `/`
    /// or `-` on is dropped (with a note), so `10.0.0.1/24` is the host 10.0.0.1.
    pub fn host_ip_token(&mut self, node: &Node, token: &Token) -> Option<IpAddr> {
        let Some(cut) = token.text.find(['/', '-']) else {
            return self.ip_token(node, token);
        };
        let Ok(ip) = token.text[..cut].parse::<IpAddr>() else {
            return self.ip_token(node, token);
        };
        self.error(
            Diagnostic::note(
                "address-suffix-ignored",
                format!("`{}` is read as the address {ip}", token.text),
            )
            .at(
                token.span,
                format!(
                    "`{}` is ignored, as keepalived ignores it",
                    &token.text[cut..]
                ),
            ),
        );
        Some(ip)
    }

    pub fn ip(&mut self, node: &Node) -> Option<IpAddr> {
        let token = self.arg(node)?;
        self.ip_token(node, token)
    }

    pub fn port_token(&mut self, node: &Node, token: &Token) -> Option<u16> {
        self.number(node, token, 0..=65535u16)
    }

    /// Checks a script command line against the machine, as `keepalived -t` does.
    pub fn check_script(&mut self, command: &str, span: crate::source::Span, role: ScriptRole) {
        self.first_configured_script.get_or_insert(span);
        let program = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_matches(['"', '\'']);
        match self.env.script(program) {
            ScriptState::Unknown => {}
            ScriptState::Missing => {
                let diagnostic = match role {
                    ScriptRole::Track => Diagnostic::warning(
                        "script-not-found",
                        format!("script `{program}` not found"),
                    )
                    .at(
                        span,
                        "keepalived disables this check: the instance tracks nothing here",
                    ),
                    ScriptRole::Notify | ScriptRole::Check => Diagnostic::note(
                        "script-not-found",
                        format!("script `{program}` not found"),
                    )
                    .at(span, "keepalived skips a missing script here silently"),
                };
                self.error(diagnostic);
            }
            ScriptState::Found { path, insecure } => {
                self.first_existing_script.get_or_insert(span);
                if let (true, Some(insecure)) = (self.script_security, insecure) {
                    self.error(
                        Diagnostic::warning("insecure-script", format!("script `{}` can be modified by a non-root user", path.display()))
                            .at(span, format!("`{}` is writable by a user other than root", insecure.display()))
                            .with_note("with enable_script_security, keepalived refuses to run it; make it and every directory above it root-owned and not group/world writable"),
                    );
                }
            }
        }
    }

    /// keepalived refuses interfaces that do not exist on the machine (check-config runs
    /// there); keeplb warns, since the daemon waits for them.
    pub fn check_interface(&mut self, name: &str, span: crate::source::Span, what: &str) {
        if self.env.interface(name) == crate::env::InterfaceState::Missing {
            self.error(
                Diagnostic::warning(
                    "missing-interface",
                    format!("{what} `{name}` does not exist on this machine"),
                )
                .at(
                    span,
                    "keepalived refuses a configuration naming a missing interface",
                ),
            );
        }
    }

    /// A notify-style script that may be given once; keepalived keeps the first.
    pub fn script_once(&mut self, node: &Node, slot: &mut Option<Script>) {
        if slot.is_some() {
            self.error(
                Diagnostic::warning(
                    "duplicate-keyword",
                    format!("`{}` is already set", node.name()),
                )
                .at(node.keyword.span, "ignored: keepalived keeps the first"),
            );
            return;
        }
        *slot = self.script(node);
    }

    /// A GARP repeat count: keepalived turns 0 into 1.
    pub fn repeat_count(&mut self, node: &Node) -> Option<u32> {
        match self.int(node, 0..=u32::MAX)? {
            0 => {
                self.error(
                    Diagnostic::warning(
                        "out-of-range",
                        format!("`{}` must be greater than 0", node.name()),
                    )
                    .at(node.line_span(), "set to 1"),
                );
                Some(1)
            }
            n => Some(n),
        }
    }

    /// `keyword "script args" [user [group]]`.
    pub fn script(&mut self, node: &Node) -> Option<Script> {
        let script = self.arg_or_more(node)?;
        // An unquoted argument lands where the user name goes; keepalived then drops the
        // script (with only a log line) when no such user exists.
        if let Some(user) = node.args.get(1)
            && self.env.user_exists(&user.text) == Some(false)
        {
            self.error(
                Diagnostic::note(
                    "script-user-missing",
                    format!(
                        "`{}` is read as a user name, and there is no such user",
                        user.text
                    ),
                )
                .at(
                    user.span,
                    "keepalived ignores this script; quote the command and its arguments together",
                )
                .with_secondary(node.keyword.span, "this script is not run"),
            );
            return None;
        }
        if let Some(token) = node.args.first() {
            self.check_script(&script, token.span, ScriptRole::Notify);
        }
        Some(Script {
            script,
            user: node.args.get(1).map(|t| t.text.clone()),
            group: node.args.get(2).map(|t| t.text.clone()),
        })
    }

    fn arg_or_more(&mut self, node: &Node) -> Option<String> {
        match node.args.first() {
            Some(t) => {
                if node.args.len() > 3 {
                    self.no_extra_args(node, 3);
                }
                Some(t.text.clone())
            }
            None => self.args(node, 1).map(|_| String::new()),
        }
    }

    /// A keyword that must not open a block, given one anyway.
    pub fn no_block(&mut self, node: &Node) {
        if let Some(block) = &node.block {
            self.error(
                Diagnostic::error(
                    "unexpected-block",
                    format!("`{}` does not take a block", node.name()),
                )
                .at(block.open, "unexpected `{`"),
            );
        }
    }

    /// A keyword that needs a block but has none.
    pub fn needs_block(&mut self, node: &Node) -> bool {
        if node.block.is_none() {
            self.error(
                Diagnostic::error(
                    "missing-block",
                    format!("`{}` needs a `{{ … }}` block", node.name()),
                )
                .at(node.keyword.span, "expected `{` after this"),
            );
            return false;
        }
        true
    }

    pub fn unknown(&mut self, node: &Node, context: &str) {
        self.error(
            Diagnostic::warning(
                "unknown-keyword",
                format!("unknown keyword `{}` in {context}", node.name()),
            )
            .at(node.keyword.span, "ignored, as keepalived ignores it"),
        );
    }
}

/// Stores `value` in `slot` when parsing produced one, keeping the default otherwise.
pub fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// Like [`set`], for optional fields.
pub fn set_some<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}
