//! Shell completion that knows names: profile names from the profile directories, sandbox
//! names from the running daemon, imported roots from the rootfs directory.
//!
//! clap_complete's dynamic completion (the `COMPLETE=SHELL sandboxctl -- WORDS…` protocol)
//! asks this binary at every Tab, so the names are current; the registration scripts for
//! bash, zsh and fish are small and never go stale. Its feature is marked unstable: the
//! scripts and the binary must come from the same build, which `make install` ensures by
//! writing them with the binary it installs.

use std::ffi::OsStr;
use std::time::Duration;

use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use crate::profile::{ProfileStore, DEFAULT_PROFILE};

/// The environment variable of the completion protocol.
pub const VAR: &str = "COMPLETE";

/// How long a Tab waits for the daemon's list of sandboxes.
const DAEMON_WAIT: Duration = Duration::from_millis(800);

/// Answers a completion request and exits, when this process was started for one.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(<super::Cli as clap::CommandFactory>::command)
        .var(VAR)
        .complete();
}

/// `sandboxctl completions SHELL`: the script that registers dynamic completion, calling
/// this very binary (by absolute path, so completion works before PATH has it).
pub fn write_registration(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let completer = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "sandboxctl".into());
    let shell: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        _ => &Powershell,
    };
    shell.write_registration(VAR, "sandboxctl", "sandboxctl", &completer, out)
}

/// Completes profile names.
pub fn profiles() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| matching(current, profile_names()))
}

/// Completes names of sandboxes the daemon knows.
pub fn sandboxes() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| matching(current, sandbox_names()))
}

/// Completes names that have a sandbox or a profile (`logs`, `status`: ended ones too).
pub fn sandboxes_and_profiles() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let mut names = sandbox_names();
        names.extend(profile_names());
        matching(current, names)
    })
}

/// Completes imported root file systems.
pub fn roots() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        matching(
            current,
            super::rootfs::list().into_iter().map(|r| r.0).collect(),
        )
    })
}

fn matching(current: &OsStr, mut names: Vec<String>) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| n.starts_with(prefix.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// Every profile name on the search path (file names only: nothing is parsed, so a Tab
/// stays instant), and the built-in default.
fn profile_names() -> Vec<String> {
    let store = ProfileStore::from_env();
    let mut names = vec![DEFAULT_PROFILE.to_string()];
    for dir in &store.dirs {
        let Ok(read) = std::fs::read_dir(dir) else {
            continue;
        };
        names.extend(read.flatten().filter_map(|e| {
            let path = e.path();
            let stem = path.file_stem()?.to_str()?;
            (path.extension()? == "toml" && crate::profile::validate_name(stem).is_ok())
                .then(|| stem.to_string())
        }));
    }
    names
}

/// The sandboxes of a daemon that runs now; none when it does not (a Tab never starts the
/// daemon through D-Bus activation) or does not answer in time.
fn sandbox_names() -> Vec<String> {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(async {
        let ask = async {
            let conn = zbus::Connection::session().await.ok()?;
            let bus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
            let name = zbus::names::BusName::try_from(super::proxy::SERVICE).ok()?;
            if !bus.name_has_owner(name).await.ok()? {
                return None;
            }
            let manager = super::proxy::ManagerProxy::new(&conn).await.ok()?;
            manager.list_sandboxes().await.ok()
        };
        tokio::time::timeout(DAEMON_WAIT, ask)
            .await
            .ok()
            .flatten()
            .map(|list| list.into_iter().map(|s| s.0).collect())
            .unwrap_or_default()
    })
}
