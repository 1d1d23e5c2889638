//! `org.sandboxd.Sandboxd1.Manager` at `/org/sandboxd/Sandboxd1`: a thin adapter from D-Bus
//! calls to the supervisor.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use zbus::interface;
use zbus::object_server::SignalEmitter;

use zbus::zvariant::{ObjectPath, OwnedFd, OwnedObjectPath, OwnedValue};

use super::error::BusError;
use super::path::sandbox_path;
use crate::runtime::{ExecStdio, Runtime};
use crate::supervisor::{ExecOptions, RunOptions, Supervisor};

pub struct Manager<R> {
    pub sup: Supervisor<R>,
}

#[interface(name = "org.sandboxd.Sandboxd1.Manager")]
impl<R: Runtime> Manager<R> {
    /// Every profile on the search path: name, file ("" for the built-in), and "" or the
    /// validation error.
    async fn list_profiles(&self) -> Vec<(String, String, String)> {
        let store = self.sup.store().clone();
        tokio::task::spawn_blocking(move || store.list())
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.file, e.error))
            .collect()
    }

    /// As `ListProfiles`, with each profile's `description` as a fourth field ("" when it
    /// has none or is invalid).
    async fn describe_profiles(&self) -> Vec<(String, String, String, String)> {
        let store = self.sup.store().clone();
        tokio::task::spawn_blocking(move || store.list())
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.file, e.error, e.description))
            .collect()
    }

    /// Every known sandbox: name, state, leader pid (0 if none), object path.
    async fn list_sandboxes(&self) -> Vec<(String, String, u32, OwnedObjectPath)> {
        self.sup
            .list()
            .into_iter()
            .map(|i| {
                let path = sandbox_path(&i.name);
                (i.name, i.state.as_str().to_string(), i.leader, path)
            })
            .collect()
    }

    async fn start_sandbox(&self, name: &str) -> Result<OwnedObjectPath, BusError> {
        let info = self.sup.start(name).await?;
        Ok(sandbox_path(&info.name))
    }

    async fn stop_sandbox(&self, name: &str) -> Result<(), BusError> {
        Ok(self.sup.stop(name).await?)
    }

    async fn restart_sandbox(&self, name: &str) -> Result<OwnedObjectPath, BusError> {
        let info = self.sup.restart(name).await?;
        Ok(sandbox_path(&info.name))
    }

    async fn kill_sandbox(&self, name: &str, signal: i32) -> Result<(), BusError> {
        Ok(self.sup.kill(name, signal).await?)
    }

    async fn get_sandbox(&self, name: &str) -> Result<OwnedObjectPath, BusError> {
        Ok(sandbox_path(&self.sup.get(name)?.name))
    }

    /// Profiles are read afresh at every start; this re-checks them all now and logs
    /// each one that would fail, so a user learns of a broken edit before the next start,
    /// and applies each running sandbox's current network policy to it (new connections
    /// follow it; the sandbox keeps running).
    async fn reload_profiles(&self) {
        for p in self.list_profiles().await {
            if !p.2.is_empty() {
                tracing::warn!(PROFILE = p.0.as_str(), "invalid profile: {}", p.2);
            }
        }
        self.sup.reload_network().await;
    }

    /// The latest connections, flows and names the proxy refused for sandbox `name`,
    /// oldest first: (µs since the epoch, destination, port, reason).
    async fn connection_log(
        &self,
        name: &str,
    ) -> Result<Vec<(u64, String, u16, String)>, BusError> {
        Ok(self
            .sup
            .denials(name)?
            .into_iter()
            .map(|d| (d.at, d.destination, d.port, d.reason))
            .collect())
    }

    /// What sandbox `name` changed in its root, by path: ("added" | "changed" | "deleted",
    /// path inside). Only sandboxes with `rootfs.overlay` have a layer to read.
    async fn diff(&self, name: &str) -> Result<Vec<(String, String)>, BusError> {
        Ok(self
            .sup
            .diff(name)
            .await?
            .into_iter()
            .map(|c| (c.kind.as_str().to_string(), c.path))
            .collect())
    }

    /// Sandbox `name`'s log, oldest first: (sequence number, µs since the epoch, stream
    /// "out", "err" or "sandboxd", text), only records numbered above `after` and from
    /// `since` (µs) on, the last `max` of them (0: all). Readable after the sandbox ended;
    /// follow a log by passing the last number seen as `after`.
    async fn read_log(
        &self,
        name: &str,
        after: u64,
        since: u64,
        max: u32,
    ) -> Result<Vec<(u64, u64, String, String)>, BusError> {
        let sup = self.sup.clone();
        let name = name.to_string();
        let records =
            tokio::task::spawn_blocking(move || sup.log(&name, after, since, max as usize))
                .await
                .map_err(|e| BusError::RuntimeFailed(e.to_string()))??;
        Ok(records
            .into_iter()
            .map(|r| (r.seq, r.usec, r.stream, r.text))
            .collect())
    }

    /// Runs `argv` in a running sandbox with the caller's stdin, stdout and stderr; returns
    /// an id that `ProcessExited` reports. Options: `user` (s), `cwd` (s), `env` (as). Terminals
    /// are refused: a host tty must never reach a sandbox (use `OpenShell`).
    async fn exec(
        &self,
        name: &str,
        argv: Vec<String>,
        options: HashMap<String, OwnedValue>,
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<u32, BusError> {
        if argv.is_empty() {
            return Err(BusError::InvalidArgs("argv is empty".into()));
        }
        let fds: [std::os::fd::OwnedFd; 3] = [stdin.into(), stdout.into(), stderr.into()];
        for fd in &fds {
            crate::fds::set_cloexec(fd.as_raw_fd());
        }
        let opts = exec_options(argv, options)?;
        if fds
            .iter()
            .any(|fd| nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false))
        {
            return Err(BusError::InvalidArgs(
                "a terminal was passed: terminals stay on the host; use OpenShell for a pty inside"
                    .into(),
            ));
        }
        let (id, _) = self.sup.exec(name, opts, ExecStdio::Fds(fds)).await?;
        Ok(id)
    }

    /// Runs `argv` (empty: the user's login shell) on a new pty allocated inside the
    /// sandbox; returns the pty's master and the process id for `ProcessExited`. `user` ""
    /// means the profile's `process.user`.
    async fn open_shell(
        &self,
        name: &str,
        user: &str,
        argv: Vec<String>,
        env: Vec<String>,
    ) -> Result<(OwnedFd, u32), BusError> {
        let mut env = env;
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm-256color".into());
        }
        let opts = ExecOptions {
            argv,
            user: Some(user.to_string()),
            cwd: None,
            env,
        };
        let (id, pty) = self.sup.exec(name, opts, ExecStdio::Terminal).await?;
        let pty = pty.ok_or_else(|| BusError::RuntimeFailed("runc returned no terminal".into()))?;
        Ok((OwnedFd::from(pty), id))
    }

    /// Runs `argv` (empty: the user's login shell) on a new pty allocated inside the
    /// sandbox, with `Exec`'s options (`user`, `cwd`, `env`); returns the pty's master and
    /// the process id for `ProcessExited`.
    async fn open_terminal(
        &self,
        name: &str,
        argv: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(OwnedFd, u32), BusError> {
        let mut opts = exec_options(argv, options)?;
        if !opts.env.iter().any(|e| e.starts_with("TERM=")) {
            opts.env.push("TERM=xterm-256color".into());
        }
        let (id, pty) = self.sup.exec(name, opts, ExecStdio::Terminal).await?;
        let pty = pty.ok_or_else(|| BusError::RuntimeFailed("runc returned no terminal".into()))?;
        Ok((OwnedFd::from(pty), id))
    }

    /// Starts a throwaway sandbox from `profile` ("" : `default`) for one command, which
    /// the caller then starts with `Exec` or `OpenTerminal`; returns its name and object.
    /// Options: `name` (s; default `run-` and 8 hex digits), `cwd` (s: a host folder, bound
    /// read-write at the same path and worked in), `overlay` (b, default true: a
    /// copy-on-write root), `keep` (b). Unless `keep`, the sandbox is stopped and removed
    /// when the caller leaves the bus (its `sandboxctl` ended or was killed).
    async fn run(
        &self,
        profile: &str,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(String, OwnedObjectPath), BusError> {
        let (opts, keep) = run_options(options)?;
        let profile = if profile.is_empty() {
            "default"
        } else {
            profile
        };
        let info = self.sup.run(profile, opts).await?;
        if !keep {
            if let Some(owner) = header.sender() {
                self.sup.record_owner(&info.name, owner.as_str());
                super::owner::stop_when_gone(
                    self.sup.clone(),
                    conn.clone(),
                    owner.to_owned().into(),
                    info.clone(),
                );
            }
        }
        let path = sandbox_path(&info.name);
        Ok((info.name, path))
    }

    /// Sends `signal` to process `id` (from `Exec` or `OpenTerminal`) of sandbox `name`.
    async fn signal_process(&self, name: &str, id: u32, signal: i32) -> Result<(), BusError> {
        Ok(self.sup.signal_process(name, id, signal)?)
    }

    #[zbus(signal)]
    pub async fn process_exited(
        emitter: &SignalEmitter<'_>,
        name: &str,
        id: u32,
        status: i32,
    ) -> zbus::Result<()>;

    /// The proxy refused a connection, flow or name of `sandbox` (at most 50 a second per
    /// sandbox are announced; `ConnectionLog` and the counters have them all).
    #[zbus(signal)]
    pub async fn connection_denied(
        emitter: &SignalEmitter<'_>,
        sandbox: &str,
        destination: &str,
        port: u16,
        reason: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn sandbox_new(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn sandbox_removed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
        result: &str,
    ) -> zbus::Result<()>;
}

/// `Exec`'s and `OpenTerminal`'s options: `user` (s), `cwd` (s), `env` (as).
fn run_options(options: HashMap<String, OwnedValue>) -> Result<(RunOptions, bool), BusError> {
    let mut opts = RunOptions {
        overlay: true,
        ..Default::default()
    };
    let mut keep = false;
    for (key, value) in options {
        let wrong = || BusError::InvalidArgs(format!("option {key:?} has the wrong type"));
        match key.as_str() {
            "name" => opts.name = Some(String::try_from(value).map_err(|_| wrong())?),
            "cwd" => {
                opts.cwd = Some(String::try_from(value).map_err(|_| wrong())?.into());
            }
            "overlay" => opts.overlay = bool::try_from(value).map_err(|_| wrong())?,
            "keep" => keep = bool::try_from(value).map_err(|_| wrong())?,
            _ => {
                return Err(BusError::InvalidArgs(format!(
                    "unknown option {:?} (known: name, cwd, overlay, keep)",
                    key.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    Ok((opts, keep))
}

fn exec_options(
    argv: Vec<String>,
    options: HashMap<String, OwnedValue>,
) -> Result<ExecOptions, BusError> {
    let mut opts = ExecOptions {
        argv,
        ..Default::default()
    };
    for (key, value) in options {
        let wrong = || BusError::InvalidArgs(format!("option {key:?} has the wrong type"));
        match key.as_str() {
            "user" => opts.user = Some(String::try_from(value).map_err(|_| wrong())?),
            "cwd" => opts.cwd = Some(String::try_from(value).map_err(|_| wrong())?),
            "env" => opts.env = Vec::<String>::try_from(value).map_err(|_| wrong())?,
            _ => {
                return Err(BusError::InvalidArgs(format!(
                    "unknown option {:?} (known: user, cwd, env)",
                    key.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    Ok(opts)
}
