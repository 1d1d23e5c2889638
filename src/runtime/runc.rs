//! The `runc` CLI driver (runc(8)). Every invocation goes through [`Runc::command`], the
//! one place that decides how runc is run (binary, `--root`, and a wrapper prefix so that
//! runc can later run inside an intermediate user namespace without the supervisor knowing).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::fastexec::{Channel, FastExecError};

use super::{
    wait_exit, ContainerState, ExecRequest, ExecStdio, Output, Runtime, RuntimeError, Started,
};

/// Upper bound for one runc invocation; runc itself never needs nearly this long.
pub const RUNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The exec channels of this daemon's containers, by container id.
type Channels = Arc<std::sync::Mutex<HashMap<String, Arc<Channel>>>>;

#[derive(Clone)]
pub struct Runc {
    /// The runc binary.
    pub program: PathBuf,
    /// runc's state directory (`runc --root`), private to this daemon.
    pub root: PathBuf,
    /// Programs and arguments run in front of runc (empty: none).
    pub wrapper: Vec<String>,
    /// The user namespace the wrapper runs runc in (its nsfs inode), when there is one.
    pub userns: Option<u64>,
    /// The `sandboxd` binary, run in its `userns-lock` mode (see [`Runtime::lock_nested`]).
    pub helper: PathBuf,
    /// Each created container's exec channel to its pid 1 (none for adopted ones).
    channels: Channels,
}

impl Runc {
    pub fn new(program: PathBuf, root: PathBuf) -> Self {
        Self {
            program,
            root,
            wrapper: Vec::new(),
            userns: None,
            helper: PathBuf::from("/proc/self/exe"),
            channels: Channels::default(),
        }
    }

    /// The single place a runc process is built.
    pub(super) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.arg("--root").arg(&self.root).args(args);
        // runc passes a NOTIFY_SOCKET it inherits into the container: that would hand the
        // sandbox the service manager's notification socket. Keep it, and any other
        // socket-activation variables, to ourselves.
        for var in [
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
        ] {
            cmd.env_remove(var);
        }
        // runc's umask becomes the sandbox's, and runc copies the mode of the mount points
        // it creates onto the tmpfs it mounts there: the daemon's own 0077 would leave
        // /dev unreadable to every user but root inside.
        // SAFETY: umask(2) is async-signal-safe and cannot fail.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Awaits a runc process (or its output) for at most [`RUNC_TIMEOUT`].
    pub(super) async fn bounded<T>(
        &self,
        op: &'static str,
        id: &str,
        wait: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> Result<T, RuntimeError> {
        tokio::time::timeout(RUNC_TIMEOUT, wait)
            .await
            .map_err(|_| RuntimeError::Timeout {
                op,
                id: id.to_string(),
                secs: RUNC_TIMEOUT.as_secs(),
            })?
            .map_err(|source| RuntimeError::Spawn {
                program: self.program.display().to_string(),
                source,
            })
    }

    /// `runc run` of a throwaway container in the foreground: its stdout, once it ended
    /// (with status 0). For probes such as `sandboxctl doctor`.
    pub async fn run_once(&self, id: &str, bundle: &Path) -> Result<Vec<u8>, RuntimeError> {
        let bundle = bundle.to_string_lossy();
        let out = self.run("run", id, &["run", "--bundle", &bundle, id]).await;
        let _ = self.run("delete", id, &["delete", "--force", id]).await;
        out
    }

    /// Runs runc to completion with its output captured; a non-zero exit becomes
    /// [`RuntimeError::Failed`] carrying runc's own message.
    async fn run(
        &self,
        op: &'static str,
        id: &str,
        args: &[&str],
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let out = self.bounded(op, id, child.wait_with_output()).await?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RuntimeError::Failed {
                op,
                id: id.to_string(),
                message: with_signal(&out.status, runc_message(&out.stderr, &out.stdout)),
            })
        }
    }
}

/// `message`, and the signal that ended runc when one did (the runc log then says nothing
/// useful: runc was stopped midway).
fn with_signal(status: &std::process::ExitStatus, message: String) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) if message == NO_MESSAGE => format!("killed by signal {sig}"),
        Some(sig) => format!("{message} (killed by signal {sig})"),
        None => message,
    }
}

const NO_MESSAGE: &str = "failed without a message";

/// The useful part of runc's error output: the last `msg` of a JSON log line, or the
/// last non-empty line of plain text.
fn runc_message(stderr: &[u8], stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
    let mut msg = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        msg = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| line.trim().to_string());
    }
    if msg.is_empty() {
        NO_MESSAGE.into()
    } else {
        msg
    }
}

/// runc's own error from its JSON `--log` file: the last error-level message, preceded
/// by the first fatal one (runc's init stages log the root cause as "fatal" and the
/// parent only reports that the child went away).
pub(super) fn log_message(log_file: &Path) -> String {
    let log = String::from_utf8_lossy(&std::fs::read(log_file).unwrap_or_default()).into_owned();
    let msg_of = |level: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("level").and_then(|x| x.as_str()) == Some(level))
            .filter_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
            .collect()
    };
    let last_error = msg_of("error")
        .pop()
        .unwrap_or_else(|| runc_message(log.as_bytes(), &[]));
    match msg_of("fatal").into_iter().next() {
        Some(fatal) => format!("{last_error} ({fatal})"),
        None => last_error,
    }
}

/// The user the container's pid 1 runs as, from its bundle's `config.json`.
fn init_user(bundle: &Path) -> (u32, u32) {
    let spec: Option<serde_json::Value> = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let id = |k: &str| {
        spec.as_ref()
            .and_then(|s| s["process"]["user"][k].as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(u32::MAX)
    };
    (id("uid"), id("gid"))
}

/// The exec channel's two ends, close-on-exec (the child's end is dup'ed to fd 3).
fn channel_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

impl Runtime for Runc {
    async fn lock_nested(&self, id: &str, pid: u32) -> Result<(), RuntimeError> {
        super::nested::lock(&self.helper, pid)
            .await
            .map_err(|source| RuntimeError::Lock {
                id: id.to_string(),
                source,
            })
    }

    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        output: Output,
        systemd_cgroup: bool,
    ) -> Result<u32, RuntimeError> {
        // A container of this name can only be a leftover (runc keeps its state in
        // ROOT/ID): clear it first. Checking the folder spares a runc call on every start.
        if self.root.join(id).exists() {
            self.delete(id).await?;
        }
        let pid_file = bundle.join("init.pid");
        let log_file = bundle.join("runc.log");
        let (pid_s, log_s, bundle_s) = (
            pid_file.to_string_lossy(),
            log_file.to_string_lossy(),
            bundle.to_string_lossy(),
        );
        // Detached, non-terminal: runc hands its own stdio to the container, so the
        // sandbox's stdout/stderr are runc's. runc's messages go to a JSON log instead.
        // runc records the cgroup manager in its state: only create needs the flag.
        let manager: &[&str] = if systemd_cgroup {
            &["--systemd-cgroup"]
        } else {
            &[]
        };
        let mut cmd = self.command(
            &[
                manager,
                &[
                    "--log",
                    &log_s,
                    "--log-format",
                    "json",
                    "create",
                    "--bundle",
                    &bundle_s,
                    "--pid-file",
                    &pid_s,
                    // The exec channel: fd 3 of the container's pid 1.
                    "--preserve-fds",
                    "1",
                    id,
                ],
            ]
            .concat(),
        );
        cmd.stdout(Stdio::from(output.stdout))
            .stderr(Stdio::from(output.stderr));
        let spawn_err = |source| RuntimeError::Spawn {
            program: self.program.display().to_string(),
            source,
        };
        let (ours, theirs) = channel_pair().map_err(spawn_err)?;
        let theirs_raw = theirs.as_raw_fd();
        // SAFETY: dup2(2) and close_range(2) only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(theirs_raw, crate::init::channel::CHANNEL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                crate::fds::cloexec_above(crate::init::channel::CHANNEL_FD)
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        drop(theirs);
        let status = match self.bounded("create", id, child.wait()).await {
            Ok(status) => status,
            Err(e) => {
                drop(child);
                super::reaper::kill_half_made(&self.root, id).await;
                return Err(e);
            }
        };
        if !status.success() {
            super::reaper::kill_half_made(&self.root, id).await;
            return Err(RuntimeError::Failed {
                op: "create",
                id: id.to_string(),
                message: with_signal(&status, log_message(&log_file)),
            });
        }
        let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
        let pid = pid.trim().parse().map_err(|_| RuntimeError::Failed {
            op: "create",
            id: id.to_string(),
            message: format!("no pid in {}", pid_file.display()),
        })?;
        match Channel::new(ours, id, init_user(bundle)) {
            Ok(ch) => {
                self.channels().insert(id.to_string(), ch);
            }
            Err(e) => tracing::warn!(SANDBOX = id, "no exec channel ({e}); exec uses runc exec"),
        }
        Ok(pid)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        use super::execfifo::{start, Outcome, INIT_WAIT};
        match start(&self.root.join(id), INIT_WAIT, RUNC_TIMEOUT).await {
            Outcome::Started => Ok(()),
            Outcome::AlreadyRunning => Err(RuntimeError::Failed {
                op: "start",
                id: id.to_string(),
                message: "cannot start an already running container".into(),
            }),
            Outcome::Fallback => self.run("start", id, &["start", id]).await.map(drop),
        }
    }

    async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        match self.run("state", id, &["state", id]).await {
            Ok(out) => {
                serde_json::from_slice(&out)
                    .map(Some)
                    .map_err(|source| RuntimeError::Output {
                        op: "state",
                        source,
                    })
            }
            Err(RuntimeError::Failed { message, .. }) if message.contains("does not exist") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn list(&self) -> Result<Vec<ContainerState>, RuntimeError> {
        let out = self.run("list", "", &["list", "--format", "json"]).await?;
        let text = String::from_utf8_lossy(&out);
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(&text).map_err(|source| RuntimeError::Output { op: "list", source })
    }

    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.run("kill", id, &["kill", id, &signal.to_string()])
            .await
            .map(drop)
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.channels().remove(id);
        match self.run("delete", id, &["delete", "--force", id]).await {
            Err(RuntimeError::Failed { message, .. }) if message.contains("does not exist") => {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    async fn exec(
        &self,
        id: &str,
        req: &ExecRequest,
        stdio: ExecStdio,
    ) -> Result<Started, RuntimeError> {
        let channel = self.channels().get(id).cloned();
        let Some(channel) = channel.filter(|c| c.fits(req)) else {
            tracing::info!(
                SANDBOX = id,
                "no exec channel to this sandbox's init for this request (adopted from an earlier daemon, closed, or too large): using runc exec"
            );
            return self.runc_exec(id, req, stdio).await;
        };
        match channel.exec(req, stdio).await {
            Ok(started) => Ok(started),
            Err(FastExecError::Unavailable(why)) => {
                // The descriptors went to the channel: a fallback cannot have them.
                Err(RuntimeError::Failed {
                    op: "exec",
                    id: id.to_string(),
                    message: why,
                })
            }
            Err(FastExecError::NotRun { program, why }) => {
                Err(RuntimeError::NotRun { program, why })
            }
        }
    }

    async fn wait(&self, pid: u32) -> Option<i32> {
        let channel = self.channels().values().find(|c| c.owns(pid)).cloned();
        if let Some(c) = channel {
            return c.wait(pid).await;
        }
        match wait_exit(pid).await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(pid, error = %crate::error_chain(&e), "cannot watch sandbox init; assuming it has exited");
                None
            }
        }
    }
}

impl Runc {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Channel>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when an exec into `id` takes the fast path (its init's channel is open).
    pub fn has_channel(&self, id: &str) -> bool {
        self.channels().get(id).is_some_and(|c| c.is_open())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let json = br#"{"level":"error","msg":"container_linux.go:380: starting container process caused: exec: \"nope\": executable file not found","time":"x"}"#;
        assert!(runc_message(json, b"").contains("executable file not found"));
        assert_eq!(runc_message(b"\nplain failure\n\n", b""), "plain failure");
        assert_eq!(runc_message(b"", b""), "failed without a message");
        use std::os::unix::process::ExitStatusExt;
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(
            with_signal(&killed, NO_MESSAGE.into()),
            "killed by signal 9"
        );
        assert_eq!(
            with_signal(&killed, "boom".into()),
            "boom (killed by signal 9)"
        );
        let exited = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(with_signal(&exited, "boom".into()), "boom");
    }
}
