//! `sandboxctl shell` and `exec`: run a process inside a sandbox through the daemon and
//! relay the terminal or the stdio streams until it ends, then report its exit status.
//! A host terminal is never handed to the daemon: a pty inside the sandbox is relayed, and
//! terminal stdio of a non-interactive exec goes through pipes.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use zbus::zvariant::{Fd, Value};

use super::proxy::ManagerProxy;
use super::terminal::{copy_window_size, dup, is_tty, relay, RawMode};

/// How long output may keep draining after the process has ended (a background process
/// can hold the pty or a pipe open forever).
const DRAIN: Duration = Duration::from_millis(500);

/// Why a session ended without an exit status from the daemon.
#[derive(Debug)]
pub enum SessionError {
    Bus(zbus::Error),
    Io(std::io::Error),
    /// The daemon went away before it reported the end of the process.
    Lost,
}

impl From<zbus::Error> for SessionError {
    fn from(e: zbus::Error) -> Self {
        Self::Bus(e)
    }
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

fn wait_threads(threads: Vec<JoinHandle<()>>, limit: Duration) {
    let t0 = Instant::now();
    while threads.iter().any(|t| !t.is_finished()) && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `ProcessExited(name, id)`; the stream was opened before the process started,
/// so the signal cannot be missed. SIGINT, SIGTERM and SIGHUP sent to this process are
/// passed on to the one inside, which decides what they mean.
async fn exit_status(
    manager: &ManagerProxy<'_>,
    exits: &mut super::proxy::ProcessExitedStream,
    name: &str,
    id: u32,
    mut on_winch: impl FnMut(),
) -> Result<i32, SessionError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        let passed = tokio::select! {
            _ = winch.recv() => { on_winch(); continue }
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
            _ = hup.recv() => libc::SIGHUP,
            sig = exits.next() => {
                let sig = sig.ok_or(SessionError::Lost)?;
                let args = sig.args()?;
                if args.name == name && args.id == id {
                    return Ok(args.status);
                }
                continue
            }
        };
        // It may have ended just now; its exit is what counts then.
        let _ = manager.signal_process(name, id, passed).await;
    }
}

/// Where and as whom a process runs.
pub struct Target<'a> {
    pub name: &'a str,
    /// None: the profile's `process.user`, else root.
    pub user: Option<&'a str>,
    /// None: the profile's `process.cwd`, else the user's home.
    pub cwd: Option<&'a str>,
    pub env: &'a [String],
}

impl Target<'_> {
    /// The `a{sv}` options of `Exec` and `OpenTerminal`.
    fn options(&self, env: &[String]) -> HashMap<&str, Value<'_>> {
        let mut options: HashMap<&str, Value<'_>> = HashMap::new();
        if let Some(u) = self.user {
            options.insert("user", Value::from(u));
        }
        if let Some(c) = self.cwd {
            options.insert("cwd", Value::from(c));
        }
        if !env.is_empty() {
            options.insert("env", Value::from(env.to_vec()));
        }
        options
    }
}

/// Runs `argv` (empty: the login shell) on a new pty inside the sandbox, relaying the
/// host terminal in raw mode; returns the process's exit status.
pub async fn shell(
    manager: &ManagerProxy<'_>,
    target: &Target<'_>,
    argv: &[String],
) -> Result<i32, SessionError> {
    let name = target.name;
    let mut exits = manager.receive_process_exited().await?;
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let mut env = vec![format!("TERM={term}")];
    env.extend(target.env.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (master, id) = manager
        .open_terminal(name, &argv, target.options(&env))
        .await?;
    let master: OwnedFd = master.into();
    let stdin = std::io::stdin();
    let interactive = is_tty(stdin.as_raw_fd());
    if interactive {
        copy_window_size(stdin.as_raw_fd(), master.as_raw_fd());
    }
    // Restored when this function returns, whatever happened inside.
    let raw = if interactive {
        RawMode::enter(stdin.as_fd()).ok()
    } else {
        None
    };
    let _input = relay(dup(&stdin)?, dup(&master)?);
    let output = relay(dup(&master)?, dup(std::io::stdout())?);
    let status = exit_status(manager, &mut exits, name, id, || {
        copy_window_size(0, master.as_raw_fd());
    })
    .await;
    wait_threads(vec![output], DRAIN);
    drop(raw);
    status
}

/// Runs `argv` in the sandbox with this process's stdio (terminal ends go through
/// pipes); returns its exit status.
pub async fn exec(
    manager: &ManagerProxy<'_>,
    target: &Target<'_>,
    argv: &[String],
) -> Result<i32, SessionError> {
    let name = target.name;
    let mut exits = manager.receive_process_exited().await?;
    let mut outputs = Vec::new();
    let mut passed: Vec<OwnedFd> = Vec::new();
    for fd in 0..3 {
        // SAFETY: 0, 1 and 2 are open for the life of the process.
        let own = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if !is_tty(fd) {
            passed.push(dup(own)?);
            continue;
        }
        let (read, write) = std::io::pipe()?;
        if fd == 0 {
            relay(dup(own)?, write.into());
            passed.push(read.into());
        } else {
            outputs.push(relay(read.into(), dup(own)?));
            passed.push(write.into());
        }
    }
    let options = target.options(target.env);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let id = manager
        .exec(
            name,
            &argv,
            options,
            Fd::from(passed[0].as_fd()),
            Fd::from(passed[1].as_fd()),
            Fd::from(passed[2].as_fd()),
        )
        .await?;
    // Our copies must go, or the relays would never see end of file.
    drop(passed);
    let status = exit_status(manager, &mut exits, name, id, || {}).await;
    wait_threads(outputs, DRAIN);
    status
}
