//! `keeplb genhash`: keepalived's `genhash` (`keepalived --genhash`), the MD5 digest of a
//! URL to paste into an HTTP_GET/SSL_GET `digest`.
//!
//! Same options, parsed the way its `getopt_long` does (short options grouped or with
//! attached values, long options with `=` or the next word, unique long prefixes, words
//! that are not options left for "Unexpected argument(s)"), same messages and exit
//! codes: the digest and a newline on standard output, exit 0, also when the fetch
//! fails (keepalived's genhash then prints why, e.g. `Connection failed`, and still
//! exits 0; `no data received from remote webserver` goes to standard error); a bad
//! command line prints its complaint and the usage on standard error
//! and exits 1. `-v` adds the response time line but not keepalived's hex dumps.

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use keeplb_check::http::HttpProtocol;
use keeplb_check::{GenhashError, GenhashRequest, Reason, genhash};

const USAGE: &str = "Usage: keeplb genhash COMMAND [OPTIONS]
Commands:
   -s server-address -p port -u url
   -S -s server-address -p port -u url
   -h

Options:
Either long or short options are allowed.
   --use-ssl         -S       Use SSL connection to remote server.
   --use-sni         -I       Use SNI during SSL handshake (uses virtualhost setting; see -V).
   --server          -s       Use the specified remote server address.
   --port            -p       Use the specified remote server port.
   --url             -u       Use the specified remote server url.
   --use-virtualhost -V       Use the specified virtualhost in GET query.
   --verbose         -v       Use verbose mode output.
   --help            -h       Display this short inlined help screen.
   --fwmark          -m       Use the specified FW mark.
   --protocol        -P       Use the specified HTTP protocol - '1.0', 1.0c', '1.1'.
                                1.0c means 1.0 with 'Connection: close'
   --timeout         -t       Timeout in seconds
";

/// genhash's options: (long name, short letter, takes a value).
const OPTIONS: &[(&str, char, bool)] = &[
    ("help", 'h', false),
    ("verbose", 'v', false),
    ("use-ssl", 'S', false),
    ("use-sni", 'I', false),
    ("server", 's', true),
    ("use-virtualhost", 'V', true),
    ("port", 'p', true),
    ("url", 'u', true),
    ("fwmark", 'm', true),
    ("protocol", 'P', true),
    ("timeout", 't', true),
];

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genhash {
    request: GenhashRequest,
    verbose: bool,
}

/// Why the command line was refused: what to print before the usage (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCommandLine(String);

#[derive(Default)]
struct Parsed {
    server: Option<IpAddr>,
    port: Option<u16>,
    url: Option<String>,
    verbose: bool,
    ssl: bool,
    sni: bool,
    virtualhost: Option<String>,
    protocol: HttpProtocol,
    timeout: Option<Duration>,
    fwmark: Option<u32>,
    bad_option: bool,
    complaints: String,
}

/// keepalived's unsigned reading of `-m`/`-t`: leading blanks skipped, digits only,
/// no sign.
fn unsigned(value: &str) -> Option<u32> {
    let trimmed = value.trim_start_matches([' ', '\t']);
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // strtoul wraps to unsigned; values beyond u32 are refused here instead
    trimmed.parse().ok()
}

impl Parsed {
    /// One option with its value; Err ends parsing at once (genhash returns -1).
    fn apply(&mut self, letter: char, value: &str) -> Result<(), String> {
        match letter {
            'h' => self.bad_option = true,
            'v' => self.verbose = true,
            'S' => self.ssl = true,
            'I' => self.sni = true,
            's' => {
                self.server = Some(
                    value
                        .parse()
                        .map_err(|_| format!("server should be an IP, not {value}\n"))?,
                );
            }
            'V' => self.virtualhost = Some(value.to_owned()),
            'p' => match value.parse::<u16>() {
                Ok(port) if port > 0 && !value.starts_with('+') => self.port = Some(port),
                _ => return Err(format!("invalid port number '{value}'\n")),
            },
            'u' => self.url = Some(value.to_owned()),
            'm' => {
                self.fwmark =
                    Some(unsigned(value).ok_or_else(|| format!("invalid fwmark '{value}'\n"))?);
            }
            'P' => {
                self.protocol = HttpProtocol::from_keyword(value)
                    .ok_or_else(|| format!("invalid HTTP protocol version '{value}'\n"))?;
            }
            't' => {
                let secs = unsigned(value).ok_or_else(|| format!("invalid timeout '{value}'\n"))?;
                self.timeout = Some(Duration::from_secs(secs.into()));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Reads genhash's command line (the words after `genhash`).
pub fn parse(args: &[String]) -> Result<Genhash, BadCommandLine> {
    // keepalived: "Trivial sanity check", fewer than two words is only the usage
    if args.len() < 2 {
        return Err(BadCommandLine(String::new()));
    }
    let mut parsed = Parsed::default();
    let mut operands = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let result = if word == "--" {
            operands.extend(words.by_ref().cloned());
            break;
        } else if let Some(long) = word.strip_prefix("--") {
            long_option(&mut parsed, long, &mut words)
        } else if word.len() > 1 && word.starts_with('-') {
            short_options(&mut parsed, &word[1..], &mut words)
        } else {
            operands.push(word.clone());
            Ok(())
        };
        result.map_err(BadCommandLine)?;
    }
    if parsed.bad_option {
        return Err(BadCommandLine(parsed.complaints));
    }
    if !operands.is_empty() {
        return Err(BadCommandLine(format!(
            "Unexpected argument(s): {}\n",
            operands.join(" ")
        )));
    }
    let (Some(server), Some(port), Some(url)) = (parsed.server, parsed.port, parsed.url) else {
        return Err(BadCommandLine(String::new()));
    };
    let mut request = GenhashRequest::new(server, port, url);
    request.ssl = parsed.ssl;
    request.sni = parsed.sni;
    request.virtualhost = parsed.virtualhost;
    request.protocol = parsed.protocol;
    request.fwmark = parsed.fwmark;
    if let Some(timeout) = parsed.timeout {
        request.timeout = timeout;
    }
    Ok(Genhash {
        request,
        verbose: parsed.verbose,
    })
}

fn long_option<'a>(
    parsed: &mut Parsed,
    word: &str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    let (name, attached) = match word.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (word, None),
    };
    let exact = OPTIONS.iter().find(|(long, _, _)| *long == name);
    let candidates: Vec<_> = OPTIONS
        .iter()
        .filter(|(long, _, _)| long.starts_with(name))
        .collect();
    let option = match (exact, candidates.as_slice()) {
        (Some(option), _) => option,
        (None, [option]) => *option,
        _ => {
            parsed.complaints += &format!("Unknown option --{word}\n");
            parsed.bad_option = true;
            return Ok(());
        }
    };
    let &(long, letter, takes_value) = option;
    let value = match (takes_value, attached) {
        (true, Some(value)) => value.to_owned(),
        (true, None) => match rest.next() {
            Some(value) => value.clone(),
            None => {
                parsed.complaints += &format!("Missing parameter for option --{long}\n");
                parsed.bad_option = true;
                return Ok(());
            }
        },
        (false, _) => String::new(),
    };
    parsed.apply(letter, &value)
}

fn short_options<'a>(
    parsed: &mut Parsed,
    cluster: &str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    for (at, letter) in cluster.char_indices() {
        let Some(&(_, _, takes_value)) = OPTIONS.iter().find(|(_, short, _)| *short == letter)
        else {
            parsed.complaints += &format!("Unknown option -{letter}\n");
            parsed.bad_option = true;
            continue;
        };
        if !takes_value {
            parsed.apply(letter, "")?;
            continue;
        }
        let attached = &cluster[at + letter.len_utf8()..];
        let value = if attached.is_empty() {
            match rest.next() {
                Some(value) => value.clone(),
                None => {
                    parsed.complaints += &format!("Missing parameter for option -{letter}\n");
                    parsed.bad_option = true;
                    return Ok(());
                }
            }
        } else {
            attached.to_owned()
        };
        return parsed.apply(letter, &value);
    }
    Ok(())
}

/// What keepalived's genhash prints when the fetch fails.
fn failure_message(reason: &Reason) -> String {
    match reason {
        Reason::Refused | Reason::ConnectError(_) | Reason::Bind(_) => {
            "Connection failed".to_owned()
        }
        Reason::ConnectTimeout | Reason::IoTimeout => "Connection timed out".to_owned(),
        other => GenhashError::Failed(other.clone()).to_string(),
    }
}

/// Runs `keeplb genhash ARGS…`.
pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let command = match parse(args) {
        Ok(command) => command,
        Err(BadCommandLine(complaint)) => {
            eprint!("{complaint}{USAGE}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let started = Instant::now();
    let result = runtime.block_on(genhash(&command.request));
    let mut out = std::io::stdout().lock();
    match result {
        Ok(response) => writeln!(out, "{}", response.digest)?,
        // keepalived's genhash says this one on standard error, the others on output
        Err(GenhashError::NoData) => eprintln!("{}", GenhashError::NoData),
        Err(GenhashError::Failed(reason)) => writeln!(out, "{}", failure_message(&reason))?,
    }
    if command.verbose {
        writeln!(
            out,
            "\nGlobal response time for [{}] = {} usecs",
            command.request.url,
            started.elapsed().as_micros()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn refused(line: &str) -> String {
        match parse(&args(line)) {
            Err(BadCommandLine(complaint)) => complaint,
            Ok(parsed) => panic!("{line} accepted: {parsed:?}"),
        }
    }

    #[test]
    fn reads_short_long_grouped_and_attached_options() {
        let parsed = parse(&args(
            "-vS -s 10.0.0.1 -p80 --url=/index.html --use-virtualhost www -P 1.1 --time 3 -m 7",
        ))
        .unwrap();
        let request = &parsed.request;
        assert!(parsed.verbose && request.ssl && !request.sni);
        assert_eq!(request.server, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((request.port, request.url.as_str()), (80, "/index.html"));
        assert_eq!(request.virtualhost.as_deref(), Some("www"));
        assert_eq!(request.protocol, HttpProtocol::Http11);
        assert_eq!(request.timeout, Duration::from_secs(3));
        assert_eq!(request.fwmark, Some(7));
        let plain = parse(&args("-s ::1 -p 8080 -u /")).unwrap();
        assert_eq!(
            plain.request,
            GenhashRequest::new("::1".parse().unwrap(), 8080, "/")
        );
    }

    #[test]
    fn refuses_as_keepalived_genhash_does() {
        assert_eq!(
            refused("-s bogus -p 1 -u /"),
            "server should be an IP, not bogus\n"
        );
        assert_eq!(
            refused("-s 10.0.0.1 -p 70000 -u /"),
            "invalid port number '70000'\n"
        );
        assert_eq!(
            refused("-s 10.0.0.1 -p 0 -u /"),
            "invalid port number '0'\n"
        );
        assert_eq!(
            refused("-s 10.0.0.1 -p 80 -u / -P 2.0"),
            "invalid HTTP protocol version '2.0'\n"
        );
        assert_eq!(
            refused("-s 10.0.0.1 -p 80 -u / -t -1"),
            "invalid timeout '-1'\n"
        );
        assert_eq!(refused("-s 10.0.0.1 -p 80 -u / -x"), "Unknown option -x\n");
        assert_eq!(
            refused("-s 10.0.0.1 -p 80 -u / --bogus"),
            "Unknown option --bogus\n"
        );
        assert_eq!(
            refused("-s 10.0.0.1 -p 80 -u"),
            "Missing parameter for option -u\n"
        );
        assert_eq!(
            refused("-s 10.0.0.1 -p 80 -u / extra words"),
            "Unexpected argument(s): extra words\n"
        );
        // missing mandatory options and -h: only the usage
        assert_eq!(refused("-s 10.0.0.1 -p 80"), "");
        assert_eq!(refused("-h -s 10.0.0.1 -p 80 -u /"), "");
        assert_eq!(refused("-h"), "");
    }
}
