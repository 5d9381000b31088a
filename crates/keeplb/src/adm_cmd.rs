//! `keeplb adm [--control PATH] ARGS…`: ipvsadm's command line against the running
//! daemon. The words after `adm` are ipvsadm's, parsed and printed by
//! [`keeplb_control::run`] exactly as ipvsadm 1.31 does (messages name the program
//! `ipvsadm`, as scripts that parse them expect); the table is the daemon's, reached
//! over the control socket.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use keeplb_control::api::{ApiBackend, ApiError, Request, Response, Transport};
use keeplb_control::names::NameFiles;
use keeplb_control::socket::ControlClient;

/// Exit status when the daemon cannot be reached (ipvsadm's own codes are 0, 1 and 255;
/// 2 is what it uses for a missing kernel module).
pub const EXIT_UNREACHABLE: u8 = 2;

/// How long one answer of the daemon may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The control socket, connected at the first request: `-h`, `-v` and command lines
/// ipvsadm refuses never need the daemon.
pub struct LazyClient {
    path: PathBuf,
    client: Option<ControlClient>,
    /// Why the daemon could not be reached, once it could not.
    pub unreachable: Option<io::Error>,
}

impl LazyClient {
    /// A client of the daemon at `path`, not connected yet.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            client: None,
            unreachable: None,
        }
    }

    /// Explains [`LazyClient::unreachable`] for the user.
    pub fn unreachable_message(&self, error: &io::Error) -> String {
        format!(
            "keeplb: cannot reach the keeplb daemon at {}: {error} (is `keeplb run` running, with this --control path?)\n",
            self.path.display()
        )
    }
}

impl Transport for LazyClient {
    fn call(&mut self, request: &Request) -> Result<Response, ApiError> {
        let failed = |error: &io::Error| ApiError::BadRequest {
            message: error.to_string(),
        };
        if let Some(error) = &self.unreachable {
            return Err(failed(error));
        }
        let client = match &mut self.client {
            Some(client) => client,
            None => match ControlClient::connect(&self.path, ANSWER_TIMEOUT) {
                Ok(client) => self.client.insert(client),
                Err(error) => {
                    let answer = Err(failed(&error));
                    self.unreachable = Some(error);
                    return answer;
                }
            },
        };
        let answer = client.call(request);
        if let Err(ApiError::BadRequest { message }) = &answer {
            // the connection broke: the daemon went away mid-command
            self.unreachable = Some(io::Error::other(message.clone()));
        }
        answer
    }
}

/// Runs one ipvsadm command line against the daemon at `control`.
pub fn run(control: &Path, args: &[String]) -> anyhow::Result<ExitCode> {
    let mut backend = ApiBackend(LazyClient::new(control));
    let names = NameFiles::from_system();
    let output = keeplb_control::run(
        "ipvsadm",
        args,
        &mut io::stdin().lock(),
        &mut backend,
        &names,
    );
    let client = backend.0;
    if let Some(error) = &client.unreachable {
        eprint!("{}", client.unreachable_message(error));
        return Ok(ExitCode::from(EXIT_UNREACHABLE));
    }
    io::stdout().write_all(output.stdout.as_bytes())?;
    io::stdout().flush()?;
    io::stderr().write_all(output.stderr.as_bytes())?;
    // ipvsadm's exit status is a byte (its -1 is 255)
    Ok(ExitCode::from(output.exit_code as u8))
}
