//! `keeplb adm ARGS…`: one ipvsadm invocation from command line to output and exit status,
//! against any table that implements [`AdmBackend`] (the daemon over the control socket, or
//! a test double).

use std::io::Read;

use crate::command::{AdmCommand, ListTarget};
use crate::error::{KernelError, Operation};
use crate::format;
use crate::names::Names;
use crate::parse::{ParseFailure, parse_args, try_help};
use crate::restore::restore_lines;
use crate::snapshot::Snapshot;
use crate::usage::{VERSION_LINE, usage};

/// The IPVS table a command acts on.
pub trait AdmBackend {
    /// Applies a command that changes the table (see [`AdmCommand::modifies_table`]).
    fn apply(&mut self, command: &AdmCommand) -> Result<(), KernelError>;
    /// The current table, for listings and `-S`.
    fn snapshot(&mut self) -> Result<Snapshot, KernelError>;
}

/// What ipvsadm would have written and returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit status.
    pub exit_code: i32,
}

/// How one command line ended: ipvsadm either goes on (its `process_options` result, 0 or
/// -1, which inside `-R` does not stop the next line) or exits at once.
enum Flow {
    Continue { failed: bool },
    Exit(i32),
}

struct Session<'a> {
    program: &'a str,
    backend: &'a mut dyn AdmBackend,
    names: &'a dyn Names,
    stdin: &'a mut dyn Read,
    out: AdmOutput,
}

impl Session<'_> {
    fn line(&mut self, args: &[String], reading_stdin: bool) -> Flow {
        let command = match parse_args(self.program, args, self.names) {
            Ok(command) => command,
            Err(ParseFailure::Exit { code, stderr }) => {
                self.out.stderr.push_str(&stderr);
                return Flow::Exit(code);
            }
            Err(ParseFailure::Rejected { stderr }) => {
                self.out.stderr.push_str(&stderr);
                return Flow::Continue { failed: true };
            }
        };
        self.command(&command, reading_stdin)
    }

    fn command(&mut self, command: &AdmCommand, reading_stdin: bool) -> Flow {
        match command {
            AdmCommand::Help => {
                self.out.stdout.push_str(&usage(self.program));
                Flow::Exit(0)
            }
            AdmCommand::Version => {
                self.out.stdout.push_str(VERSION_LINE);
                Flow::Exit(0)
            }
            AdmCommand::Restore => self.restore(reading_stdin),
            AdmCommand::List { .. } | AdmCommand::Save { .. } => self.list(command),
            _ => match self.backend.apply(command) {
                Ok(()) => Flow::Continue { failed: false },
                Err(error) => {
                    let operation = command.operation().unwrap_or(Operation::Flush);
                    self.out.stderr.push_str(&error.message(operation));
                    self.out.stderr.push('\n');
                    Flow::Continue { failed: true }
                }
            },
        }
    }

    fn restore(&mut self, reading_stdin: bool) -> Flow {
        if reading_stdin {
            // ipvsadm refuses -R inside -R rather than read its input twice
            return self.exit(try_help(self.program));
        }
        let mut input = Vec::new();
        if self.stdin.read_to_end(&mut input).is_err() {
            return Flow::Continue { failed: true };
        }
        let mut failed = false;
        for words in restore_lines(&String::from_utf8_lossy(&input)) {
            if words.is_empty() {
                continue;
            }
            match self.line(&words, true) {
                Flow::Continue {
                    failed: line_failed,
                } => failed = line_failed,
                exit @ Flow::Exit(_) => return exit,
            }
        }
        Flow::Continue { failed }
    }

    fn exit(&mut self, failure: ParseFailure) -> Flow {
        match failure {
            ParseFailure::Exit { code, stderr } => {
                self.out.stderr.push_str(&stderr);
                Flow::Exit(code)
            }
            ParseFailure::Rejected { stderr } => {
                self.out.stderr.push_str(&stderr);
                Flow::Continue { failed: true }
            }
        }
    }

    fn list(&mut self, command: &AdmCommand) -> Flow {
        let operation = command.operation().unwrap_or(Operation::GetServices);
        let snapshot = match self.backend.snapshot() {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // ipvsadm exits silently when timeouts or daemons cannot be read
                if !matches!(operation, Operation::GetTimeout | Operation::GetDaemon) {
                    self.out.stderr.push_str(&error.message(operation));
                    self.out.stderr.push('\n');
                }
                return Flow::Exit(1);
            }
        };
        let names = self.names;
        let text = match command {
            AdmCommand::Save { numeric } => format::save(&snapshot, *numeric, names),
            AdmCommand::List { target, format } => match target {
                ListTarget::All => format::list_all(&snapshot, *format, names),
                ListTarget::Connections => {
                    format::list_connections(&snapshot.connections, *format, names)
                }
                ListTarget::Timeouts => format::list_timeouts(&snapshot.timeouts),
                ListTarget::Daemons => format::list_daemons(&snapshot.daemons),
                ListTarget::Service { service } => {
                    match format::list_service(&snapshot, service, *format, names) {
                        Ok(text) => text,
                        Err(error) => {
                            self.out
                                .stderr
                                .push_str(&error.message(Operation::GetService));
                            self.out.stderr.push('\n');
                            return Flow::Exit(1);
                        }
                    }
                }
            },
            _ => String::new(),
        };
        self.out.stdout.push_str(&text);
        Flow::Continue { failed: false }
    }
}

/// Runs one ipvsadm command line. `program` is the name used in messages (ipvsadm's
/// `argv[0]`, e.g. `ipvsadm`), `args` the words after it, `stdin` what `-R` reads.
/// With no words at all, ipvsadm lists the table (with names).
pub fn run(
    program: &str,
    args: &[String],
    stdin: &mut dyn Read,
    backend: &mut dyn AdmBackend,
    names: &dyn Names,
) -> AdmOutput {
    let mut session = Session {
        program,
        backend,
        names,
        stdin,
        out: AdmOutput::default(),
    };
    let flow = if args.is_empty() {
        let list = AdmCommand::List {
            target: ListTarget::All,
            format: crate::command::ListFormat::default(),
        };
        session.list(&list)
    } else {
        session.line(args, false)
    };
    session.out.exit_code = match flow {
        Flow::Continue { failed: false } => 0,
        // ipvsadm returns -1 from main
        Flow::Continue { failed: true } => 255,
        Flow::Exit(code) => code,
    };
    session.out
}
