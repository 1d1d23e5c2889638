//! sandboxctl: a thin client of the daemon's D-Bus API, with output for people and JSON for
//! scripts. Exit status: 0 ok, 1 failure reported by the daemon, 2 usage, 3 daemon not
//! reachable.

mod args;
mod complete;
mod desktop_entry;
mod desktop_file;
mod doctor;
mod inspect;
mod logs;
pub mod proxy;
mod pull;
mod rootfs;
mod session;
mod terminal;
mod throwaway;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

use crate::profile::ProfileStore;
pub use args::{Cli, Cmd, RootfsCmd};
use proxy::ManagerProxy;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

/// What to do when the daemon does not answer.
const UNREACHABLE_FIX: &str = "start it with `systemctl --user start sandboxd` (installed by `make install`); `sandboxctl doctor` checks the rest";

/// A failed command: what to print and which exit status to use.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn from_bus(e: zbus::Error) -> Failure {
    match &e {
        zbus::Error::MethodError(name, msg, _) => {
            let name = name.as_str();
            let unreachable = [
                "ServiceUnknown",
                "NameHasNoOwner",
                "NoReply",
                "Spawn",
                "TimedOut",
                "Disconnected",
            ]
            .iter()
            .any(|s| name.starts_with("org.freedesktop.DBus.Error.") && name.contains(s));
            let text = msg.clone().unwrap_or_else(|| name.to_string());
            if unreachable {
                Failure {
                    code: EXIT_UNREACHABLE,
                    message: format!("sandboxd is not reachable: {text}\n{UNREACHABLE_FIX}"),
                }
            } else {
                let short = name.rsplit('.').next().unwrap_or(name);
                // A shell's statuses for a command that is missing or not executable.
                match short {
                    "CommandNotFound" => Failure {
                        code: 127,
                        message: text,
                    },
                    "CommandNotExecutable" => Failure {
                        code: 126,
                        message: text,
                    },
                    _ => Failure {
                        code: EXIT_FAILURE,
                        message: format!("{text} ({short})"),
                    },
                }
            }
        }
        _ => Failure {
            code: EXIT_UNREACHABLE,
            message: format!("sandboxd is not reachable: {e}\n{UNREACHABLE_FIX}"),
        },
    }
}

/// One line of `sandboxctl profiles`: the name, then the description, or why the profile
/// is invalid with the command that shows where.
fn profile_line(name: &str, error: &str, description: &str, width: usize) -> String {
    let what = if !error.is_empty() {
        format!("invalid: {error} (see `sandboxctl check {name}`)")
    } else if description.is_empty() {
        "-".into()
    } else {
        description.to_string()
    };
    let what = logs::escape_controls(&what.replace('\n', " "));
    format!("{name:<width$}  {what}")
}

/// A host pid as shown, `-` for none.
fn pid_text(pid: u32) -> String {
    if pid == 0 {
        "-".into()
    } else {
        pid.to_string()
    }
}

fn since_text(us: u64) -> String {
    if us == 0 {
        return "-".into();
    }
    let now = crate::supervisor::now_us();
    let secs = now.saturating_sub(us) / 1_000_000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}min ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// Maps an inner exit status (-1: unknown) to sandboxctl's own.
fn inner_status(status: i32) -> u8 {
    u8::try_from(status).unwrap_or(EXIT_FAILURE)
}

fn from_session(e: session::SessionError) -> Failure {
    match e {
        session::SessionError::Bus(e) => from_bus(e),
        session::SessionError::Io(e) => Failure {
            code: EXIT_FAILURE,
            message: e.to_string(),
        },
        session::SessionError::Lost => Failure {
            code: EXIT_UNREACHABLE,
            message: "the daemon went away before the process ended".into(),
        },
    }
}

async fn connect() -> Result<(zbus::Connection, ManagerProxy<'static>), Failure> {
    let conn = zbus::Connection::session().await.map_err(|e| Failure {
        code: EXIT_UNREACHABLE,
        message: format!("cannot connect to the session bus: {e}\nsandboxd runs in a desktop session (or `loginctl enable-linger $USER` and `export DBUS_SESSION_BUS_ADDRESS=unix:path=$XDG_RUNTIME_DIR/bus`); `sandboxctl doctor` checks it"),
    })?;
    let manager = ManagerProxy::new(&conn).await.map_err(from_bus)?;
    Ok((conn, manager))
}

/// Runs one command; prints results to stdout. Returns the exit status.
pub async fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Cmd::Completions { shell } => {
            complete::write_registration(shell, &mut std::io::stdout()).map_err(|e| Failure {
                code: EXIT_FAILURE,
                message: format!("writing the completion script: {e}"),
            })?;
            Ok(0)
        }
        Cmd::Check { profile } => check(&profile).map(|_| 0),
        Cmd::Rootfs { action } => rootfs_cmd(action).await,
        Cmd::Shell {
            name,
            user,
            cwd,
            command,
        } => {
            let (_conn, manager) = connect().await?;
            let target = session::Target {
                name: &name,
                user: user.as_deref(),
                cwd: cwd.as_deref(),
                env: &[],
            };
            let status = session::shell(&manager, &target, &command)
                .await
                .map_err(from_session)?;
            Ok(inner_status(status))
        }
        Cmd::Logs {
            name,
            follow,
            lines,
            since,
            timestamps,
            json,
        } => logs_cmd(&name, follow, lines, since.as_deref(), timestamps, json).await,
        Cmd::Doctor => {
            let findings = doctor::run().await;
            Ok(if doctor::report(&findings) {
                0
            } else {
                EXIT_FAILURE
            })
        }
        Cmd::DesktopEntry {
            name,
            title,
            icon,
            from,
            command,
        } => {
            let file = desktop_entry_cmd(&name, title.as_deref(), icon, from.as_deref(), &command)
                .map_err(|message| Failure {
                    code: EXIT_FAILURE,
                    message,
                })?;
            println!("wrote {}", file.display());
            Ok(0)
        }
        Cmd::Exec {
            name,
            user,
            start,
            env,
            cwd,
            command,
        } => {
            let target = session::Target {
                name: &name,
                user: user.as_deref(),
                cwd: cwd.as_deref(),
                env: &env,
            };
            exec(&target, start, &command).await
        }
        Cmd::Run(args) => {
            let (_conn, manager) = connect().await?;
            throwaway::run(args, &manager).await
        }
        cmd => {
            let (conn, manager) = connect().await?;
            remote(cmd, &conn, &manager)
                .await
                .map_err(from_bus)
                .map(|_| 0)
        }
    }
}

/// `logs`: what sandbox `name` wrote, from the daemon's logbook.
async fn logs_cmd(
    name: &str,
    follow: bool,
    lines: Option<u32>,
    since: Option<&str>,
    timestamps: bool,
    json: bool,
) -> Result<u8, Failure> {
    let since = match since {
        Some(s) => {
            logs::parse_since(s, crate::supervisor::now_us()).map_err(|message| Failure {
                code: EXIT_USAGE,
                message,
            })?
        }
        None => 0,
    };
    let opts = logs::Options {
        follow,
        lines,
        since,
        timestamps,
        json,
    };
    let (_conn, manager) = connect().await?;
    logs::show(&manager, name, &opts).await.map_err(from_bus)?;
    Ok(0)
}

/// `rootfs pull|import|prune|list|remove`: local work (and a registry), no daemon.
async fn rootfs_cmd(action: RootfsCmd) -> Result<u8, Failure> {
    let fail = |message: String| Failure {
        code: EXIT_FAILURE,
        message,
    };
    match action {
        RootfsCmd::Import { name, source, user } => {
            let dest = rootfs::import(&name, &source, user.as_deref()).map_err(fail)?;
            println!("imported {name} into {}", dest.display());
            println!("use it with:  [rootfs]  path = \"{}\"", dest.display());
        }
        RootfsCmd::Pull {
            reference,
            name,
            platform,
            tls_verify,
            user,
            json,
        } => {
            let args = pull::Args {
                reference,
                name,
                platform,
                insecure: !tls_verify,
                user,
                json,
            };
            pull::pull(&args).await.map_err(fail)?;
        }
        RootfsCmd::Prune => pull::prune().map_err(fail)?,
        RootfsCmd::ApplyLayers { into, layers } => {
            rootfs::apply_layers(&into, &layers).map_err(fail)?;
        }
        RootfsCmd::List => {
            for (name, how, path) in rootfs::list() {
                println!("{name:<24} {how:<28} {}", path.display());
            }
        }
        RootfsCmd::Remove { name } => {
            rootfs::remove(&name).map_err(fail)?;
            println!("removed {name}");
        }
    }
    Ok(0)
}

/// `exec`: COMMAND in a running sandbox (started first with `--start`), on a pty of the
/// sandbox's own when this is a terminal.
async fn exec(
    target: &session::Target<'_>,
    start: bool,
    command: &[String],
) -> Result<u8, Failure> {
    let (_conn, manager) = connect().await?;
    if start {
        match manager.start_sandbox(target.name).await {
            Err(zbus::Error::MethodError(e, _, _)) if e.as_str().ends_with(".AlreadyRunning") => {}
            other => {
                other.map_err(from_bus)?;
            }
        }
    }
    let status = if terminal::is_tty(0) && terminal::is_tty(1) {
        session::shell(&manager, target, command).await
    } else {
        session::exec(&manager, target, command).await
    };
    Ok(inner_status(status.map_err(from_session)?))
}

async fn remote(cmd: Cmd, conn: &zbus::Connection, manager: &ManagerProxy<'_>) -> zbus::Result<()> {
    match cmd {
        Cmd::List { json } => {
            let list = manager.list_sandboxes().await?;
            if json {
                let rows: Vec<_> = list.iter().map(|(n, s, p, o)| json!({"name": n, "state": s, "leader": p, "path": o.as_str()})).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if list.is_empty() {
                println!("no sandboxes");
            } else {
                println!("{:<24} {:<10} {:>8}", "NAME", "STATE", "PID");
                for (n, s, p, _) in list {
                    println!("{n:<24} {s:<10} {:>8}", pid_text(p));
                }
            }
        }
        Cmd::Profiles { json } => {
            let list = manager.describe_profiles().await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|(n, f, e, d)| json!({"name": n, "file": f, "error": e, "description": d}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                let width = list.iter().map(|p| p.0.len()).max().unwrap_or(0).max(8);
                for (name, _, error, description) in &list {
                    println!("{}", profile_line(name, error, description, width));
                }
            }
        }
        Cmd::Start { name } => {
            manager.start_sandbox(&name).await?;
            println!("started {name}");
        }
        Cmd::Stop { name } => {
            manager.stop_sandbox(&name).await?;
            println!("stopped {name}");
        }
        Cmd::Restart { name } => {
            manager.restart_sandbox(&name).await?;
            println!("restarted {name}");
        }
        Cmd::Reload => {
            manager.reload_profiles().await?;
            println!("reloaded");
        }
        Cmd::Diff { name, json } => {
            let changes = manager.diff(&name).await?;
            if json {
                let rows: Vec<_> = changes
                    .iter()
                    .map(|(kind, path)| json!({"kind": kind, "path": path}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                if changes.is_empty() {
                    eprintln!("no changes");
                }
                for (kind, path) in changes {
                    let mark = throwaway::kind_mark(&kind);
                    println!("{mark} {}", logs::escape_controls(&path));
                }
            }
        }
        Cmd::Netlog { name, follow, json } => inspect::netlog(manager, &name, follow, json).await?,
        Cmd::Status { name, json } => inspect::status(conn, manager, &name, json).await?,
        Cmd::Check { .. }
        | Cmd::Completions { .. }
        | Cmd::Shell { .. }
        | Cmd::Exec { .. }
        | Cmd::Run(_)
        | Cmd::Rootfs { .. }
        | Cmd::DesktopEntry { .. }
        | Cmd::Logs { .. }
        | Cmd::Doctor => {
            unreachable!("handled in run()")
        }
    }
    Ok(())
}

/// `desktop-entry`: a launcher for `command`, or for the app the entry `from` describes.
fn desktop_entry_cmd(
    name: &str,
    title: Option<&str>,
    icon: Option<String>,
    from: Option<&std::path::Path>,
    command: &[String],
) -> Result<std::path::PathBuf, String> {
    let (mut launcher, id) = match from {
        Some(file) => {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let app = desktop_file::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let id = file.file_stem().map(|s| s.to_string_lossy().into_owned());
            (desktop_entry::Launcher::for_app(name, app, title), id)
        }
        None => (
            desktop_entry::Launcher::for_command(name, command, title),
            None,
        ),
    };
    if icon.is_some() {
        launcher.icon = icon;
    }
    desktop_entry::write(&launcher, id.as_deref())
}

/// Validates a profile by file path (anything with a `/` or ending in `.toml`) or by name.
fn check(arg: &str) -> Result<(), Failure> {
    let store = ProfileStore::from_env();
    let loaded = if arg.contains('/') || arg.ends_with(".toml") {
        store.load_file(&PathBuf::from(arg))
    } else {
        store.load(arg)
    };
    let profile = loaded.map_err(|e| Failure {
        code: EXIT_FAILURE,
        message: crate::error_chain(&e),
    })?;
    let file = profile
        .file
        .as_ref()
        .map_or("(built-in)".to_string(), |f| f.display().to_string());
    // Every check `start` makes here, as the daemon would make it.
    let mut host =
        crate::spec::HostContext::current(PathBuf::from("/usr/lib/sandboxd/sandbox-init"));
    host.intermediate = host.subuid.is_some() && host.subgid.is_some();
    let session: crate::spec::SessionEnv = std::env::vars().collect();
    let warnings = crate::spec::preflight(&profile, &host, &session).map_err(|e| Failure {
        code: EXIT_FAILURE,
        message: format!(
            "{}: {}: start would refuse it: {}",
            profile.name,
            file,
            crate::error_chain(&e)
        ),
    })?;
    println!("{}: ok ({file})", profile.name);
    for w in warnings {
        println!("warning: {w}");
    }
    let unsupported = profile.unsupported_features();
    if !unsupported.is_empty() {
        println!(
            "note: this version of sandboxd refuses to start it until these are provided: {}",
            unsupported.join(", ")
        );
    }
    let limits = &profile.limits;
    if limits.memory.is_some() || limits.pids.is_some() {
        let uid = nix::unistd::getuid().as_raw();
        println!(
            "note: {}",
            crate::cgroups::Enforcement::detect(uid).describe()
        );
    }
    Ok(())
}

/// An error message for the terminal: its lines as they are, control characters inside
/// them shown as `\xNN`. Messages quote what others wrote (a registry's error text, a
/// layer's entry names, a sandbox's output), and escape sequences in those must not reach
/// the user's terminal.
pub fn terminal_safe(message: &str) -> String {
    message
        .split('\n')
        .map(logs::escape_controls)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Entry point used by the binary.
pub fn main() -> ExitCode {
    complete::answer_if_asked();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandboxctl: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("sandboxctl: {}", terminal_safe(&f.message));
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_keep_their_lines_and_lose_escape_sequences() {
        assert_eq!(
            terminal_safe("layer x: entry a\u{1b}[2Jb\nsecond\tline"),
            "layer x: entry a\\x1b[2Jb\nsecond\tline"
        );
    }
}
