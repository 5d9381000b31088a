//! What a probe reports, and why a check failed.

use std::fmt;

/// Why one probe failed. The text (`Display`) is what logs show after keepalived's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No connection within `connect_timeout`.
    ConnectTimeout,
    /// The real server answered the connection attempt with a reset (or ICMP port
    /// unreachable for UDP).
    Refused,
    /// Any other connection error (unreachable network, no route…).
    ConnectError(String),
    /// The configured source (`bindto`/`bind_port`) cannot be used.
    Bind(String),
    /// Connected, but a read or write waited longer than `connect_timeout`.
    IoTimeout,
    /// Connected, but reading or writing failed.
    Io(String),
    /// The server closed the connection before sending a response header.
    NoData,
    /// An HTTP status outside the url's `status_code` ranges.
    HttpStatus(u16),
    /// The body's MD5 differs from the url's `digest`.
    DigestMismatch { got: String },
    /// The body does (with `regex_no_match`: does not) match the url's `regex`.
    RegexMismatch,
    /// The TLS handshake failed.
    Tls(String),
    /// A MISC_CHECK script exited with a failing status.
    ExitStatus(i32),
    /// A MISC_CHECK script was killed by a signal it did not get from us.
    Signal(i32),
    /// A MISC_CHECK script outlived `misc_timeout` and was killed.
    ScriptTimeout,
    /// A MISC_CHECK script could not be started.
    Spawn(String),
    /// The server spoke, but not as expected (SMTP code, DNS rcode, UDP reply…).
    Protocol(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConnectTimeout => f.write_str("connection timeout"),
            Reason::Refused => f.write_str("connection refused"),
            Reason::ConnectError(e) => write!(f, "connection error: {e}"),
            Reason::Bind(e) => write!(f, "cannot bind the source address: {e}"),
            Reason::IoTimeout => f.write_str("read/write timeout"),
            Reason::Io(e) => write!(f, "read/write error: {e}"),
            Reason::NoData => f.write_str("no data received"),
            Reason::HttpStatus(code) => write!(f, "status {code}"),
            Reason::DigestMismatch { got } => write!(f, "digest mismatch (got {got})"),
            Reason::RegexMismatch => f.write_str("regex mismatch"),
            Reason::Tls(e) => write!(f, "TLS error: {e}"),
            Reason::ExitStatus(c) => write!(f, "exit status {c}"),
            Reason::Signal(s) => write!(f, "killed by signal {s}"),
            Reason::ScriptTimeout => f.write_str("script timeout"),
            Reason::Spawn(e) => write!(f, "cannot run the script: {e}"),
            Reason::Protocol(e) => f.write_str(e),
        }
    }
}

impl Reason {
    /// The words keepalived's HTTP checker logs before "server X." for this failure.
    pub(crate) fn http_message(&self) -> &'static str {
        match self {
            Reason::ConnectTimeout => "Timeout connecting",
            Reason::Refused | Reason::ConnectError(_) | Reason::Bind(_) => "Error connecting",
            Reason::IoTimeout => "Timeout HTTP read",
            Reason::Io(_) => "Read error with",
            Reason::NoData => "Read, no data received from",
            Reason::HttpStatus(_) => "HTTP status code error to",
            Reason::DigestMismatch { .. } => "MD5 digest error to",
            Reason::RegexMismatch => "Regex match failed",
            Reason::Tls(_) => "SSL handshake failed with",
            _ => "Error with",
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The probe passed.
    Up,
    /// The probe failed.
    Down(Reason),
    /// A MISC_CHECK script exited with this status; the core interprets it (0 up, 1 down,
    /// 2–255 up with weight status−2 under `misc_dynamic`).
    Exited(i32),
}

impl Outcome {
    /// Shorthand for a failed probe.
    pub fn down(reason: Reason) -> Self {
        Outcome::Down(reason)
    }
}
