//! The container runtime boundary. [`Runtime`] is what the supervisor needs from runc;
//! [`Runc`] drives the real `runc` CLI, and tests substitute a fake.

mod console;
mod execfifo;
mod exit;
mod fastexec;
mod layer;
mod layer_helper;
mod nested;
mod output;
mod reaper;
mod runc;
mod runc_exec;
mod userns;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

pub use console::ConsoleSocket;
pub use exit::{wait_exit, ExitWaitError, ProcessHandle};
pub use layer::{Change, Kind as ChangeKind, LayerError, Layers};
pub use layer_helper::{layer_main, LAYER_ARG};
pub use nested::{lock_in as lock_nested_userns, lock_main, LockError, LOCK_ARG};
pub use output::{recover_stored_output, Output};
pub use reaper::reap_orphans;
pub use runc::{Runc, RUNC_TIMEOUT};
pub use userns::{parent_userns_inode, IntermediateUserns, UsernsError};

/// runc's view of one container (`runc state` / `runc list`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    pub pid: u32,
    pub bundle: String,
}

impl ContainerState {
    pub fn is_alive(&self) -> bool {
        matches!(self.status.as_str(), "created" | "running" | "paused") && self.pid != 0
    }
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The process could not be started in the sandbox (missing program, working
    /// directory…); nothing was wrong with the sandbox.
    #[error("{program}: {why}")]
    NotRun { program: String, why: NotRun },
    /// runc ran and failed; the message is runc's own.
    #[error("runc {op} {id}: {message}")]
    Failed {
        op: &'static str,
        id: String,
        message: String,
    },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("runc {op} {id} did not finish within {secs} s")]
    Timeout {
        op: &'static str,
        id: String,
        secs: u64,
    },
    #[error("runc {op}: unexpected output")]
    Output {
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("closing nested user namespaces in {id}")]
    Lock {
        id: String,
        #[source]
        source: LockError,
    },
    #[error("sandbox output for {id}")]
    Stdio {
        id: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a process could not be run in a sandbox: the caller's input, not the machine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NotRun {
    #[error("command not found")]
    NotFound,
    #[error("not executable: {0}")]
    NotExecutable(String),
    #[error("working directory {dir}: {why}")]
    Cwd { dir: String, why: String },
    #[error("{0}")]
    Other(String),
}

impl NotRun {
    /// From the step pid 1 failed at and its errno.
    pub fn from_errno(stage: crate::init::channel::Stage, errno: i32, cwd: Option<&str>) -> Self {
        use crate::init::channel::Stage;
        let e = nix::Error::from_raw(errno);
        match (stage, e) {
            (Stage::Cwd, e) => Self::Cwd {
                dir: cwd.unwrap_or_default().to_string(),
                why: e.desc().to_lowercase(),
            },
            (Stage::Exec, nix::Error::ENOENT | nix::Error::ENOTDIR) => Self::NotFound,
            (
                Stage::Exec,
                nix::Error::EACCES | nix::Error::ENOEXEC | nix::Error::EPERM | nix::Error::EISDIR,
            ) => Self::NotExecutable(e.desc().to_lowercase()),
            (_, e) => Self::Other(e.desc().to_string()),
        }
    }

    /// The exit status a shell would give: 127 not found, 126 not executable.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::NotFound => 127,
            Self::NotExecutable(_) => 126,
            Self::Cwd { .. } | Self::Other(_) => 1,
        }
    }
}

/// A process to run inside a running container (`runc exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub cwd: Option<String>,
    /// `NAME=value` entries added to the container's environment.
    pub env: Vec<String>,
}

/// Where an exec'd process's stdio comes from.
#[derive(Debug)]
pub enum ExecStdio {
    /// These three fds become its stdin, stdout and stderr.
    Fds([OwnedFd; 3]),
    /// A new pty allocated inside the container; its master is returned.
    Terminal,
}

/// A started exec: the host pid, and the pty master for [`ExecStdio::Terminal`].
#[derive(Debug)]
pub struct Started {
    pub pid: u32,
    pub pty: Option<OwnedFd>,
    /// How it was started, for the log.
    pub via: ExecPath,
}

/// The two ways into a running sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecPath {
    /// Forked by the sandbox's pid 1 on request over its exec channel.
    Channel,
    /// `runc exec`, for sandboxes without a channel.
    Runc,
}

impl ExecPath {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Channel => "init channel",
            Self::Runc => "runc exec",
        }
    }
}

/// What the supervisor asks of a container runtime. Every call is bounded in time.
pub trait Runtime: Send + Sync + 'static {
    /// `runc create`: sets the container up, stopped before its process runs; returns the
    /// host pid of its init. The container's stdout and stderr go to `output`. A leftover
    /// container of the same id is removed first. With `systemd_cgroup` the container
    /// gets a scope from the user's systemd manager (the spec's `cgroupsPath` names it).
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        output: Output,
        systemd_cgroup: bool,
    ) -> impl Future<Output = Result<u32, RuntimeError>> + Send;
    /// Sets the created container's limit of nested user namespaces to 0 (the lock that
    /// holds even without its seccomp filter); `pid` is its init.
    fn lock_nested(
        &self,
        id: &str,
        pid: u32,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `runc start`: lets the created container's process run.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `runc state`: `None` when runc does not know the id.
    fn state(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ContainerState>, RuntimeError>> + Send;
    /// `runc list`: every container under this daemon's runc root.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerState>, RuntimeError>> + Send;
    /// `runc kill`: sends `signal` to the container's init.
    fn kill(&self, id: &str, signal: i32) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `runc delete --force`: removes runc's state (killing what is left).
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `runc exec --detach`: starts `req` in container `id`.
    fn exec(
        &self,
        id: &str,
        req: &ExecRequest,
        stdio: ExecStdio,
    ) -> impl Future<Output = Result<Started, RuntimeError>> + Send;
    /// Resolves when host process `pid` has exited; its wait status when this process
    /// could collect it (it is our child), else `None`.
    fn wait(&self, pid: u32) -> impl Future<Output = Option<i32>> + Send;
}
