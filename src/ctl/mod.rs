//! sandboxctl: a thin client of the daemon's D-Bus API, with output for people and JSON for
//! scripts. Exit status: 0 ok, 1 failure reported by the daemon, 2 usage, 3 daemon not
//! reachable.

mod complete;
mod desktop_entry;
mod doctor;
mod logs;
pub mod proxy;
mod rootfs;
mod session;
mod terminal;
mod throwaway;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::profile::ProfileStore;
use proxy::{ManagerProxy, SandboxProxy};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

/// What to do when the daemon does not answer.
const UNREACHABLE_FIX: &str = "start it with `systemctl --user start sandboxd` (installed by `make install`); `sandboxctl doctor` checks the rest";

/// Manage sandboxd sandboxes.
#[derive(Parser)]
#[command(
    name = "sandboxctl",
    version,
    about,
    after_help = "Exit status: 0 ok, 1 failure reported by the daemon, 2 usage, 3 daemon not reachable; exec and shell: the command's, 127 not found, 126 not executable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// List sandboxes: name, state, leader pid.
    List {
        #[arg(long)]
        json: bool,
    },
    /// List profiles, one line each: the description, or why it is invalid.
    Profiles {
        #[arg(long)]
        json: bool,
    },
    /// Start a sandbox from its profile.
    Start {
        #[arg(add = complete::profiles())]
        name: String,
    },
    /// Stop a sandbox (SIGTERM, then SIGKILL after its stop_timeout), or dismiss an ended one.
    Stop {
        #[arg(add = complete::sandboxes())]
        name: String,
    },
    /// Stop and start a sandbox.
    Restart {
        #[arg(add = complete::sandboxes())]
        name: String,
    },
    /// Show one sandbox's properties.
    Status {
        #[arg(add = complete::sandboxes_and_profiles())]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-read every profile (reporting broken ones) and apply running sandboxes' changed
    /// network policies to them without a restart.
    Reload,
    /// Show a sandbox's log: its output and the daemon's lines about it (start, exit,
    /// errors), kept on disk after it ended.
    Logs {
        #[arg(add = complete::sandboxes_and_profiles())]
        name: String,
        /// Keep printing new lines until the sandbox ends
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines
        #[arg(long = "lines", short = 'n', value_name = "N")]
        lines: Option<u32>,
        /// Only lines from this age on (30s, 10m, 2h, 1d) or @SECONDS since the epoch
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Prefix each line with its time (UTC)
        #[arg(long, short)]
        timestamps: bool,
        /// One JSON object per line: seq, time (µs), stream, text
        #[arg(long)]
        json: bool,
    },
    /// List what a sandbox with rootfs.overlay added, changed and deleted in its root.
    Diff {
        #[arg(add = complete::sandboxes())]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Show what a sandbox's proxy refused (destination, port, reason), oldest first.
    Netlog {
        #[arg(add = complete::sandboxes())]
        name: String,
        /// Keep running and print refusals as they happen
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Open a shell (or run COMMAND) on a new terminal inside a running sandbox.
    Shell {
        #[arg(add = complete::sandboxes())]
        name: String,
        /// User inside [default: the profile's process.user, else root]
        #[arg(long)]
        user: Option<String>,
        /// Working directory inside [default: the profile's process.cwd, else the home]
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// The command and its arguments (with or without a `--` before them)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a command inside a running sandbox; exits with its status. With a terminal on
    /// both stdin and stdout it gets a pty, otherwise its stdio streams (works in pipes).
    Exec {
        #[arg(add = complete::sandboxes_and_profiles())]
        name: String,
        /// User inside [default: the profile's process.user, else root]
        #[arg(long)]
        user: Option<String>,
        /// Start the sandbox first unless it runs
        #[arg(long)]
        start: bool,
        /// Add NAME=VALUE to the command's environment (repeatable)
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Working directory inside [default: the profile's process.cwd, else the home]
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// The command and its arguments (with or without a `--` before them)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Run COMMAND in a new throwaway sandbox, in the current folder (bound read-write),
    /// on a copy-on-write root; the sandbox is removed when COMMAND ends. Exits with its
    /// status.
    Run(throwaway::RunArgs),
    /// Write a desktop entry (app menu launcher) that runs COMMAND in the sandbox.
    DesktopEntry {
        #[arg(add = complete::sandboxes_and_profiles())]
        name: String,
        /// The launcher's title [default: "PROGRAM (NAME)"]
        #[arg(long)]
        title: Option<String>,
        /// Icon name or path
        #[arg(long)]
        icon: Option<String>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Check this machine and session for what sandboxd needs, and say what to fix.
    Doctor,
    /// Root file systems under $XDG_DATA_HOME/sandboxd/rootfs.
    Rootfs {
        #[command(subcommand)]
        action: RootfsCmd,
    },
    /// Validate a profile file or a profile by name, without the daemon.
    Check {
        #[arg(add = complete::profiles())]
        profile: String,
    },
    /// Print the script that makes SHELL complete commands, options and the names of
    /// profiles, sandboxes and roots (`make install` installs it for bash, zsh and fish).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
pub enum RootfsCmd {
    /// Unpack a tar archive (e.g. `docker export`, optionally compressed) or a directory,
    /// keeping its owners as the sandbox will see them.
    Import {
        name: String,
        source: PathBuf,
        /// Unpack for profiles whose process.user is USER (a name in the archive's
        /// /etc/passwd, or a uid): that user will be you ("keep-id")
        #[arg(long)]
        user: Option<String>,
    },
    /// List imported root file systems.
    List,
    /// Remove a root file system (its files may belong to your subordinate ids).
    Remove {
        #[arg(add = complete::roots())]
        name: String,
    },
}

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
        Cmd::Rootfs { action } => {
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
        } => {
            let since = match since {
                Some(s) => {
                    logs::parse_since(&s, crate::supervisor::now_us()).map_err(|message| {
                        Failure {
                            code: EXIT_USAGE,
                            message,
                        }
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
            logs::show(&manager, &name, &opts).await.map_err(from_bus)?;
            Ok(0)
        }
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
            command,
        } => {
            let file = desktop_entry::write(&name, &command, title.as_deref(), icon.as_deref())
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
            let (_conn, manager) = connect().await?;
            if start {
                match manager.start_sandbox(&name).await {
                    Err(zbus::Error::MethodError(e, _, _))
                        if e.as_str().ends_with(".AlreadyRunning") => {}
                    other => {
                        other.map_err(from_bus)?;
                    }
                }
            }
            let target = session::Target {
                name: &name,
                user: user.as_deref(),
                cwd: cwd.as_deref(),
                env: &env,
            };
            let status = if terminal::is_tty(0) && terminal::is_tty(1) {
                session::shell(&manager, &target, &command).await
            } else {
                session::exec(&manager, &target, &command).await
            };
            Ok(inner_status(status.map_err(from_session)?))
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
                    println!(
                        "{n:<24} {s:<10} {:>8}",
                        if p == 0 {
                            "-".to_string()
                        } else {
                            p.to_string()
                        }
                    );
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
        Cmd::Netlog { name, follow, json } => {
            // Subscribe before reading the history, so nothing falls between the two.
            let mut live = if follow {
                Some(
                    manager
                        .receive_connection_denied_with_args(&[(0, name.as_str())])
                        .await?,
                )
            } else {
                None
            };
            let show = |at: u64, dest: &str, port: u16, reason: &str| {
                if json {
                    println!(
                        "{}",
                        json!({"time": at, "sandbox": name, "destination": dest, "port": port, "reason": reason})
                    );
                } else {
                    let target = if port == crate::proxy::denials::LOOKUP {
                        format!("{dest} (name lookup)")
                    } else if dest.contains(':') {
                        format!("[{dest}]:{port}")
                    } else {
                        format!("{dest}:{port}")
                    };
                    println!("{:<10} {target:<40} {reason}", since_text(at));
                }
            };
            let history = manager.connection_log(&name).await?;
            if history.is_empty() && !json {
                eprintln!("no refusals");
            }
            for (at, dest, port, reason) in history {
                show(at, &dest, port, &reason);
            }
            if let Some(live) = live.as_mut() {
                use futures_util::StreamExt;
                while let Some(sig) = live.next().await {
                    let Ok(a) = sig.args() else { continue };
                    show(
                        crate::supervisor::now_us(),
                        a.destination(),
                        *a.port(),
                        a.reason(),
                    );
                }
            }
        }
        Cmd::Status { name, json } => {
            let path = manager.get_sandbox(&name).await?;
            let sb = SandboxProxy::builder(conn).path(path)?.build().await?;
            let (state, leader, since, profile, restarts, exit) = (
                sb.state().await?,
                sb.leader().await?,
                sb.since().await?,
                sb.profile().await?,
                sb.restarts().await?,
                sb.exit_status().await?,
            );
            let (active, sent, received, denied) = (
                sb.connections_active().await?,
                sb.bytes_sent().await?,
                sb.bytes_received().await?,
                sb.connections_denied().await?,
            );
            let hits = sb.name_hits().await?;
            let security = sb.security().await?;
            let (fds, share) = (sb.descriptors().await?, sb.descriptor_share().await?);
            if json {
                println!(
                    "{}",
                    json!({"name": name, "state": state, "leader": leader, "since": since, "profile": profile, "restarts": restarts, "exit_status": exit, "security": security, "descriptors": fds, "descriptor_share": share,
                           "connections_active": active, "bytes_sent": sent, "bytes_received": received, "connections_denied": denied,
                           "name_hits": hits})
                );
            } else {
                println!("{name}: {state}");
                println!(
                    "  leader pid:  {}",
                    if leader == 0 {
                        "-".into()
                    } else {
                        leader.to_string()
                    }
                );
                println!("  since:       {}", since_text(since));
                println!(
                    "  profile:     {}",
                    if profile.is_empty() {
                        "(built-in)"
                    } else {
                        &profile
                    }
                );
                println!("  restarts:    {restarts}");
                if !security.is_empty() {
                    println!("  security:    {security}");
                }
                if exit >= 0 {
                    println!("  exit status: {exit}");
                }
                if state == "failed" {
                    let escape = terminal::is_tty(1);
                    let tail = logs::tail(manager, &name, 8).await;
                    if !tail.is_empty() {
                        println!("  last lines (sandboxctl logs {name}):");
                    }
                    for r in &tail {
                        println!("    {}", logs::line(r, false, escape));
                    }
                }
                println!("  network:     {active} open, {sent} bytes sent, {received} received, {denied} denied");
                if share > 0 {
                    println!("  descriptors: {fds} of a {share} share of the daemon's budget");
                }
                let mut hits: Vec<_> = hits.into_iter().collect();
                hits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                for (n, count) in hits.iter().take(10) {
                    println!("    {count:>8}  {n}");
                }
            }
        }
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
            eprintln!("sandboxctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
