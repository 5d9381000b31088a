//! keepalived's script security (`lib/notify.c`, `check_script_secure` and
//! `check_security`, 2.2.7): the one rule deciding whether a script may run. The VRRP
//! side, the health-check side and `check-config` all ask [`check_script_security`] (or
//! [`check_program`]), so they cannot disagree.
//!
//! The rule, as keepalived applies it:
//! - a bare name is searched along `PATH` (the first regular file the script's user may
//!   execute); the path is then resolved (`realpath`: `.`, `..`, symbolic links). When
//!   the resolved file has another name (a link `x` to `y`), the link's name in the
//!   resolved directory is kept if it is the same file, and both paths are checked;
//! - the file must be executable by the script's uid/gid (owner, group, or other bits;
//!   any bit for root);
//! - only a script that runs as root (uid or gid 0) or is set-uid/set-gid root needs
//!   protecting: then every component of the path, from `/` down, is looked at without
//!   following symbolic links. Each but the last must be a directory, the last a regular
//!   file or a symbolic link (else "wrong file type", always refused). Each must be
//!   owned by root; and a regular file, or a directory without the sticky bit, must be
//!   writable neither by everyone nor by a group other than root's. A sticky directory
//!   owned by root (`/tmp`, `/var/tmp`) is fine: nobody else can replace what is in it.
//!
//! keepalived looks the path up as the script's user (seteuid); keeplb looks as itself
//! (root), which only differs for paths the script's user could not read anyway (the
//! script then fails to start).

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ScriptCommand;

const SET_UID: u32 = 0o4000;
const SET_GID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
const OWNER_EXEC: u32 = 0o100;
const GROUP_WRITE: u32 = 0o020;
const GROUP_EXEC: u32 = 0o010;
const OTHER_WRITE: u32 = 0o002;
const OTHER_EXEC: u32 = 0o001;
const ANY_EXEC: u32 = OWNER_EXEC | GROUP_EXEC | OTHER_EXEC;

/// `confstr(_CS_PATH)` of glibc: the search path when `PATH` is unset.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Why a script may not run. [`ScriptSecurityError::disables`] tells whether keepalived
/// disables it; [`ScriptSecurityError::keepalived_log`] is keepalived's log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptSecurityError {
    /// Not found along `PATH`, or a component of its path is missing or unreadable.
    #[error("script `{script}`: cannot find `{program}`: {reason}")]
    NotFound {
        script: String,
        program: String,
        reason: String,
    },
    /// Found only as files its user may not execute (a bare name searched along `PATH`).
    #[error("script `{script}`: `{program}` is in PATH but not executable by its user")]
    PathPermission { script: String, program: String },
    /// The file is not executable by the uid/gid it runs as.
    #[error("script `{script}`: {} is not executable for uid:gid {uid}:{gid}", path.display())]
    NotExecutable {
        script: String,
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    /// A component of the path is not a directory, or the script is not a file.
    #[error("script `{script}`: wrong file type in its path: {} is not a {expected}", path.display())]
    WrongType {
        script: String,
        /// The resolved path that was walked.
        script_path: PathBuf,
        /// The component of the wrong type.
        path: PathBuf,
        expected: &'static str,
    },
    /// A non-root user could change what runs as root.
    #[error(
        "script `{script}` is insecure with enable_script_security: {} is {reason}, so a non-root user could change what runs as root; make it owned by root and not group/world-writable (chown root:root, chmod go-w)",
        path.display()
    )]
    Insecure {
        script: String,
        /// The resolved path that was walked.
        script_path: PathBuf,
        /// The file or directory at fault.
        path: PathBuf,
        reason: String,
    },
}

impl ScriptSecurityError {
    /// Whether keepalived disables the script: always, except an insecure one without
    /// `enable_script_security` (it then only logs, and runs it).
    pub fn disables(&self, script_security: bool) -> bool {
        script_security || !matches!(self, ScriptSecurityError::Insecure { .. })
    }

    /// Whether the script was found and runnable but a non-root user could modify it.
    pub fn is_insecure(&self) -> bool {
        matches!(self, ScriptSecurityError::Insecure { .. })
    }

    /// The line keepalived's `check_script_secure` logs for this (2.2.7, lib/notify.c).
    pub fn keepalived_log(&self, script_security: bool) -> String {
        match self {
            ScriptSecurityError::NotFound { program, .. } if !program.contains('/') => {
                format!("Cannot find script {program} in path - disabling")
            }
            ScriptSecurityError::NotFound { program, .. } => {
                format!("check_script_secure could not find script '{program}' - disabling")
            }
            ScriptSecurityError::PathPermission { program, .. } => {
                format!("Permissions failure for script {program} in path - disabling")
            }
            ScriptSecurityError::NotExecutable { path, uid, gid, .. } => format!(
                "WARNING - script '{}' is not executable for uid:gid {uid}:{gid} - disabling.",
                path.display()
            ),
            ScriptSecurityError::WrongType { script_path, .. } => format!(
                "Wrong file type found in script path '{}'.",
                script_path.display()
            ),
            ScriptSecurityError::Insecure { script_path, .. } => format!(
                "Unsafe permissions found for script '{}'{}.",
                script_path.display(),
                if script_security { " - disabling" } else { "" }
            ),
        }
    }
}

/// keepalived's verdict on a configured script at start (`check_script_secure` as its
/// VRRP and checker processes use it): Err when the script must not run, which is
/// always when it is missing or not runnable, and when it is insecure only with
/// `enable_script_security` (`script_security`). Any problem is logged in keepalived's
/// words, so an insecure script that still runs is reported too.
pub fn vet_script(cmd: &ScriptCommand, script_security: bool) -> Result<(), ScriptSecurityError> {
    let Err(refusal) = check_script_security(cmd) else {
        return Ok(());
    };
    tracing::warn!(reason = %refusal, "{}", refusal.keepalived_log(script_security));
    if refusal.disables(script_security) {
        Err(refusal)
    } else {
        Ok(())
    }
}

/// keepalived's `check_script_secure` for `cmd`, run as its uid/gid (keeplb's own
/// effective ids when it has none): Ok when it may run.
pub fn check_script_security(cmd: &ScriptCommand) -> Result<(), ScriptSecurityError> {
    let uid = cmd.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let gid = cmd.gid.unwrap_or_else(|| nix::unistd::getegid().as_raw());
    check_program(&cmd.to_string(), cmd.program(), uid, gid).map(drop)
}

/// [`check_script_security`] for the program of a script line (`script` names it in
/// errors) run as `uid`:`gid`; Ok with the program's path (found along `PATH` when it is
/// a bare name) when it may run.
pub fn check_program(
    script: &str,
    program: &str,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, ScriptSecurityError> {
    let not_found = |reason: String| ScriptSecurityError::NotFound {
        script: script.to_owned(),
        program: program.to_owned(),
        reason,
    };
    let given = if program.contains('/') {
        PathBuf::from(program)
    } else {
        search_path(program, uid, gid).map_err(|denied| {
            if denied {
                ScriptSecurityError::PathPermission {
                    script: script.to_owned(),
                    program: program.to_owned(),
                }
            } else {
                not_found("not in PATH".to_owned())
            }
        })?
    };
    let real = given
        .canonicalize()
        .map_err(|e| not_found(format!("{}: {e}", given.display())))?;
    let (path, real_too) = keep_file_name(&given, real);
    let file = std::fs::metadata(real_too.as_deref().unwrap_or(&path))
        .map_err(|e| not_found(format!("{}: {e}", path.display())))?;
    if !is_executable(&file, uid, gid) {
        return Err(ScriptSecurityError::NotExecutable {
            script: script.to_owned(),
            path,
            uid,
            gid,
        });
    }
    let mode = file.mode();
    let runs_as_root = uid == 0
        || gid == 0
        || (file.uid() == 0 && mode & OWNER_EXEC != 0 && mode & SET_UID != 0)
        || (file.gid() == 0 && mode & GROUP_EXEC != 0 && mode & SET_GID != 0);
    if runs_as_root {
        for walked in std::iter::once(&path).chain(real_too.as_ref()) {
            walk_path(script, walked)?;
        }
    }
    Ok(path)
}

/// The first regular file named `program` along `PATH` that `uid`:`gid` may execute;
/// Err(true) when only files it may not execute were found (keepalived's EACCES).
fn search_path(program: &str, uid: u32, gid: u32) -> Result<PathBuf, bool> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut denied = false;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && is_executable(&meta, uid, gid) {
                return Ok(candidate);
            }
            denied = true;
        }
    }
    Err(denied)
}

/// The path to run and check, keeping the name the script was given when it resolves
/// to a file of another name (some programs behave by the name they are called), as
/// keepalived does; then the resolved path is checked too (second value).
fn keep_file_name(given: &Path, real: PathBuf) -> (PathBuf, Option<PathBuf>) {
    let (Some(given_name), Some(real_dir)) = (given.file_name(), real.parent()) else {
        return (real, None);
    };
    if real.file_name() == Some(given_name) {
        return (real, None);
    }
    let named = real_dir.join(given_name);
    let same_file = match (std::fs::metadata(&real), std::fs::metadata(&named)) {
        (Ok(r), Ok(n)) => r.dev() == n.dev() && r.ino() == n.ino(),
        (Ok(_), Err(_)) => false,
        // keepalived keeps the name when the resolved file cannot be looked at.
        (Err(_), _) => true,
    };
    if same_file {
        (named, Some(real))
    } else {
        (real, None)
    }
}

/// keepalived's `is_executable`: root needs any execute bit; the owner the owner's; a
/// member of the file's group (primary group only) the group's; others the others'.
fn is_executable(meta: &Metadata, uid: u32, gid: u32) -> bool {
    let mode = meta.permissions().mode();
    (uid == 0 && mode & ANY_EXEC != 0)
        || (uid == meta.uid() && mode & OWNER_EXEC != 0)
        || (uid != meta.uid()
            && ((gid == meta.gid() && mode & GROUP_EXEC != 0)
                || (gid != meta.gid() && mode & OTHER_EXEC != 0)))
}

/// keepalived's `check_security`: every component of `path`, from `/` down, without
/// following symbolic links.
fn walk_path(script: &str, path: &Path) -> Result<(), ScriptSecurityError> {
    let mut components: Vec<&Path> = path.ancestors().collect();
    components.reverse();
    let last = components.len().saturating_sub(1);
    for (index, component) in components.into_iter().enumerate() {
        let meta =
            std::fs::symlink_metadata(component).map_err(|e| ScriptSecurityError::NotFound {
                script: script.to_owned(),
                program: path.display().to_string(),
                reason: format!("{}: {e}", component.display()),
            })?;
        let file_type = meta.file_type();
        let expected = if index < last {
            (!file_type.is_dir()).then_some("directory")
        } else {
            (!file_type.is_file() && !file_type.is_symlink()).then_some("file")
        };
        if let Some(expected) = expected {
            return Err(ScriptSecurityError::WrongType {
                script: script.to_owned(),
                script_path: path.to_owned(),
                path: component.to_owned(),
                expected,
            });
        }
        if let Some(reason) = insecure_reason(&meta) {
            return Err(ScriptSecurityError::Insecure {
                script: script.to_owned(),
                script_path: path.to_owned(),
                path: component.to_owned(),
                reason,
            });
        }
    }
    Ok(())
}

/// Why a non-root user could change this path component, if they could.
fn insecure_reason(meta: &Metadata) -> Option<String> {
    let mode = meta.mode();
    let shown = mode & 0o7777;
    if meta.uid() != 0 {
        return Some(format!("owned by uid {} (not root)", meta.uid()));
    }
    let file_type = meta.file_type();
    // A symbolic link's own bits mean nothing; in a sticky directory only a file's owner
    // (or root) may remove or rename it.
    let bits_matter = file_type.is_file() || (file_type.is_dir() && mode & STICKY == 0);
    if !bits_matter {
        None
    } else if mode & OTHER_WRITE != 0 {
        Some(format!("writable by everyone (mode {shown:o})"))
    } else if mode & GROUP_WRITE != 0 && meta.gid() != 0 {
        Some(format!("writable by group {} (mode {shown:o})", meta.gid()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, symlink};

    /// A directory of its own under `/tmp` (root-owned, sticky), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = PathBuf::from("/tmp").join(format!(
                "keeplb-script-security-{tag}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).expect("scratch dir");
            chmod(&dir, 0o755);
            Self(dir)
        }

        /// A scratch directory, or None (the test is skipped) when not root: the rule
        /// is about root-owned files.
        fn as_root(tag: &str) -> Option<Self> {
            if nix::unistd::geteuid().is_root() {
                Some(Self::new(tag))
            } else {
                eprintln!("skipped: needs root (files must be root-owned)");
                None
            }
        }

        /// An executable script, root-owned, mode 755, in a new directory of `mode`.
        fn script_in(&self, dir_name: &str, dir_mode: u32) -> PathBuf {
            let dir = self.0.join(dir_name);
            std::fs::create_dir(&dir).expect("dir");
            chmod(&dir, dir_mode);
            let script = dir.join("check.sh");
            std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
            chmod(&script, 0o755);
            script
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn as_root(path: &Path) -> Result<PathBuf, ScriptSecurityError> {
        let line = path.display().to_string();
        check_program(&line, &line, 0, 0)
    }

    fn culprit(result: Result<PathBuf, ScriptSecurityError>) -> (PathBuf, String) {
        match result {
            Err(ScriptSecurityError::Insecure { path, reason, .. }) => (path, reason),
            other => panic!("expected an insecure script, got {other:?}"),
        }
    }

    #[test]
    fn root_owned_script_under_the_sticky_tmp_is_accepted() {
        let Some(scratch) = Scratch::as_root("sticky") else {
            return;
        };
        let tmp = std::fs::metadata("/tmp").expect("/tmp");
        assert_ne!(tmp.mode() & STICKY, 0, "/tmp is expected sticky");
        assert_ne!(
            tmp.mode() & OTHER_WRITE,
            0,
            "/tmp is expected world-writable"
        );
        let script = scratch.script_in("safe", 0o755);
        assert_eq!(as_root(&script), Ok(script.clone()));
        // A sticky world-writable directory of its own is fine too…
        let sticky = scratch.script_in("sticky", 0o1777);
        assert_eq!(as_root(&sticky), Ok(sticky.clone()));
        // …but not when someone else owns it.
        chown(sticky.parent().expect("dir"), Some(1), None).expect("chown");
        let (at, reason) = culprit(as_root(&sticky));
        assert_eq!(at, sticky.parent().expect("dir"));
        assert!(reason.contains("owned by uid 1"), "{reason}");
    }

    #[test]
    fn world_writable_directory_is_refused() {
        let Some(scratch) = Scratch::as_root("world") else {
            return;
        };
        let script = scratch.script_in("ww", 0o777);
        let err = as_root(&script).expect_err("world-writable dir");
        assert!(err.disables(true) && !err.disables(false), "{err:?}");
        assert_eq!(
            err.keepalived_log(true),
            format!(
                "Unsafe permissions found for script '{}' - disabling.",
                script.display()
            )
        );
        let (at, reason) = culprit(Err(err));
        assert_eq!(at, script.parent().expect("dir"));
        assert_eq!(reason, "writable by everyone (mode 777)");
        // The script file itself, world-writable, in a safe directory.
        let file = scratch.script_in("safe", 0o755);
        chmod(&file, 0o757);
        assert_eq!(culprit(as_root(&file)).0, file);
    }

    #[test]
    fn group_writable_is_refused_unless_the_group_is_root() {
        let Some(scratch) = Scratch::as_root("group") else {
            return;
        };
        let script = scratch.script_in("gw", 0o775);
        let dir = script.parent().expect("dir").to_owned();
        // Group root: only root may write.
        assert_eq!(as_root(&script), Ok(script.clone()));
        chown(&dir, None, Some(1)).expect("chgrp");
        let (at, reason) = culprit(as_root(&script));
        assert_eq!(at, dir);
        assert_eq!(reason, "writable by group 1 (mode 775)");
        // The file, group-writable by a non-root group.
        chown(&dir, None, Some(0)).expect("chgrp");
        chmod(&script, 0o775);
        chown(&script, None, Some(1)).expect("chgrp");
        assert_eq!(culprit(as_root(&script)).0, script);
    }

    #[test]
    fn script_owned_by_another_user_is_refused_when_root_runs_it() {
        let Some(scratch) = Scratch::as_root("owner") else {
            return;
        };
        let script = scratch.script_in("safe", 0o755);
        chown(&script, Some(1), Some(1)).expect("chown");
        let (at, reason) = culprit(as_root(&script));
        assert_eq!(at, script);
        assert_eq!(reason, "owned by uid 1 (not root)");
        // Run as that user (not root), nothing needs protecting: keepalived allows it.
        let line = script.display().to_string();
        assert_eq!(check_program(&line, &line, 1, 1), Ok(script.clone()));
        // Unless the file is set-uid root.
        let setuid = scratch.script_in("setuid", 0o755);
        chmod(&setuid, 0o4755);
        chown(setuid.parent().expect("dir"), Some(1), None).expect("chown");
        let line = setuid.display().to_string();
        let (at, _) = culprit(check_program(&line, &line, 1, 1));
        assert_eq!(at, setuid.parent().expect("dir"));
    }

    #[test]
    fn symlinks_are_resolved_and_both_paths_are_checked() {
        let Some(scratch) = Scratch::as_root("symlink") else {
            return;
        };
        // A safe-looking link to a script in a world-writable directory.
        let target = scratch.script_in("ww", 0o777);
        let safe = scratch.0.join("safe");
        std::fs::create_dir(&safe).expect("dir");
        chmod(&safe, 0o755);
        let link = safe.join("check.sh");
        symlink(&target, &link).expect("symlink");
        assert_eq!(culprit(as_root(&link)).0, target.parent().expect("dir"));

        // A link of another name beside its target: the link's name is kept, and the
        // link itself (root-owned; its own mode bits do not count) and the target are
        // both checked.
        let target = scratch.script_in("named", 0o755);
        let alias = target.with_file_name("alias.sh");
        symlink("check.sh", &alias).expect("symlink");
        assert_eq!(as_root(&alias), Ok(alias.clone()));
        chmod(&target, 0o777);
        assert_eq!(culprit(as_root(&alias)).0, target);
        chmod(&target, 0o755);
        std::os::unix::fs::lchown(&alias, Some(1), None).expect("lchown");
        assert_eq!(culprit(as_root(&alias)).0, alias);
    }

    #[test]
    fn not_executable_missing_and_wrong_type_are_disabled_whatever_the_setting() {
        let scratch = Scratch::new("kinds");
        let script = scratch.script_in("safe", 0o755);
        chmod(&script, 0o644);
        let err = as_root(&script).expect_err("not executable");
        assert!(
            matches!(err, ScriptSecurityError::NotExecutable { .. }),
            "{err:?}"
        );
        assert!(err.disables(false));
        assert_eq!(
            err.keepalived_log(false),
            format!(
                "WARNING - script '{}' is not executable for uid:gid 0:0 - disabling.",
                script.display()
            )
        );
        let missing = scratch.0.join("missing.sh");
        let err = as_root(&missing).expect_err("missing");
        assert!(
            matches!(err, ScriptSecurityError::NotFound { .. }) && err.disables(false),
            "{err:?}"
        );
        let dir = scratch.0.join("safe");
        let err = as_root(&dir).expect_err("a directory is no script");
        assert!(
            matches!(&err, ScriptSecurityError::WrongType { path, .. } if *path == dir),
            "{err:?}"
        );
        assert_eq!(
            err.keepalived_log(true),
            format!("Wrong file type found in script path '{}'.", dir.display())
        );
    }

    #[test]
    fn bare_names_are_searched_along_path() {
        let found = check_program("sh -c true", "sh", 0, 0).expect("sh is in PATH and secure");
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        let err = check_program("no-such-keeplb-script", "no-such-keeplb-script", 0, 0)
            .expect_err("not in PATH");
        assert_eq!(
            err.keepalived_log(true),
            "Cannot find script no-such-keeplb-script in path - disabling"
        );
    }
}
