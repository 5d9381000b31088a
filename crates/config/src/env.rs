//! What `check-config` asks of the machine it runs on, as `keepalived -t` does: whether
//! interfaces exist, whether scripts exist and are safe to run, whether users exist.
//!
//! Behind a trait so the parser stays pure: tests and the fuzzer use [`AssumeValid`] or
//! [`FakeEnvironment`]; the binary uses [`SystemEnvironment`].

use std::collections::BTreeSet;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceState {
    /// Not checked (no environment).
    Unknown,
    Missing,
    Loopback,
    Present,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptState {
    Unknown,
    Missing,
    /// Found at `path`; `insecure` names the file or directory a non-root user could modify.
    Found {
        path: PathBuf,
        insecure: Option<PathBuf>,
    },
}

pub trait Environment {
    fn interface(&self, name: &str) -> InterfaceState;
    /// The program of a script command line (its first word), resolved like keepalived does.
    fn script(&self, program: &str) -> ScriptState;
    fn user_exists(&self, name: &str) -> Option<bool>;
}

/// Checks nothing: every interface, script and user is taken as fine.
#[derive(Debug, Default, Clone, Copy)]
pub struct AssumeValid;

impl Environment for AssumeValid {
    fn interface(&self, _: &str) -> InterfaceState {
        InterfaceState::Unknown
    }
    fn script(&self, _: &str) -> ScriptState {
        ScriptState::Unknown
    }
    fn user_exists(&self, _: &str) -> Option<bool> {
        None
    }
}

/// A made-up machine for tests.
#[derive(Debug, Default, Clone)]
pub struct FakeEnvironment {
    pub interfaces: BTreeSet<String>,
    pub secure_scripts: BTreeSet<String>,
    pub users: BTreeSet<String>,
}

impl Environment for FakeEnvironment {
    fn interface(&self, name: &str) -> InterfaceState {
        match name {
            "lo" => InterfaceState::Loopback,
            _ if self.interfaces.contains(name) => InterfaceState::Present,
            _ => InterfaceState::Missing,
        }
    }
    fn script(&self, program: &str) -> ScriptState {
        if self.secure_scripts.contains(program) {
            ScriptState::Found {
                path: PathBuf::from(program),
                insecure: None,
            }
        } else {
            ScriptState::Missing
        }
    }
    fn user_exists(&self, name: &str) -> Option<bool> {
        Some(name == "root" || self.users.contains(name))
    }
}

/// The machine keeplb runs on.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEnvironment;

impl Environment for SystemEnvironment {
    /// Asks the kernel of the current network namespace (as keepalived does over netlink);
    /// /sys/class/net would describe whichever namespace sysfs was mounted in.
    fn interface(&self, name: &str) -> InterfaceState {
        let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
            return InterfaceState::Unknown;
        };
        let mut found = InterfaceState::Missing;
        for entry in interfaces.filter(|i| i.interface_name == name) {
            if entry
                .flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
            {
                return InterfaceState::Loopback;
            }
            found = InterfaceState::Present;
        }
        found
    }

    /// keepalived's rule (`keeplb_script::check_program`, which `keeplb run` applies
    /// too), for a script run as root: keeplb's default without `script_user`, and the
    /// case the rule protects.
    fn script(&self, program: &str) -> ScriptState {
        use keeplb_script::ScriptSecurityError as Refused;
        match keeplb_script::check_program(program, program, 0, 0) {
            Ok(path) => ScriptState::Found {
                path,
                insecure: None,
            },
            // Not a file (a directory…) is "not found", as before this rule was shared.
            Err(
                Refused::NotFound { .. }
                | Refused::PathPermission { .. }
                | Refused::WrongType { .. },
            ) => ScriptState::Missing,
            Err(Refused::Insecure {
                script_path, path, ..
            }) => ScriptState::Found {
                path: script_path,
                insecure: Some(path),
            },
            Err(Refused::NotExecutable { path, .. }) => ScriptState::Found {
                path,
                insecure: None,
            },
        }
    }

    fn user_exists(&self, name: &str) -> Option<bool> {
        Some(matches!(nix::unistd::User::from_name(name), Ok(Some(_))))
    }
}
