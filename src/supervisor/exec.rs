//! Running more processes in a running sandbox (`Exec`, `OpenShell`): who they run as,
//! where their stdio goes, and the `ProcessExited` report when they end.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use super::{exit_code, shown, Error, Event, State, Supervisor};
use crate::profile::{RootfsSource, User};
use crate::runtime::{ExecRequest, ExecStdio, Runtime, RuntimeError};
use crate::spec;

/// What to run and as whom. An empty `argv` means the user's login shell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub argv: Vec<String>,
    /// A name or uid inside; `None` or "": the profile's `process.user`, else root.
    pub user: Option<String>,
    pub cwd: Option<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
}

impl<R: Runtime> Supervisor<R> {
    /// Starts a process in running sandbox `name`; returns its id (for `ProcessExited`)
    /// and, for [`ExecStdio::Terminal`], the master of its new pty.
    pub async fn exec(
        &self,
        name: &str,
        opts: ExecOptions,
        stdio: ExecStdio,
    ) -> Result<(u32, Option<OwnedFd>), Error> {
        let bad = |m: String| Error::InvalidArgument(m);
        if opts.argv.iter().any(|a| a.contains('\0')) {
            return Err(bad("arguments must not contain NUL".into()));
        }
        if let Some(e) = opts
            .env
            .iter()
            .find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
        {
            return Err(bad(format!(
                "environment entry {:?} is not NAME=value",
                shown(e)
            )));
        }
        if let Some(cwd) = opts.cwd.as_deref().filter(|c| !c.starts_with('/')) {
            return Err(bad(format!(
                "working directory {:?} is not absolute",
                shown(cwd)
            )));
        }
        if self.get(name)?.state != State::Running {
            return Err(Error::NotRunning(name.into()));
        }
        let profile = self.inner.store.load(name)?;
        let user = match opts.user.as_deref().filter(|u| !u.is_empty()) {
            Some(u) => Some(
                u.parse::<u32>()
                    .map(User::Id)
                    .unwrap_or_else(|_| User::Name(u.to_string())),
            ),
            None => profile.process.user.clone(),
        };
        let passwd = match &profile.rootfs.source {
            RootfsSource::Path(p) => p.join("etc/passwd"),
            RootfsSource::Host => self.inner.host.etc.join("passwd"),
        };
        let account = match &user {
            None => spec::Account::root(),
            Some(u) => spec::resolve(&passwd, u).map_err(Error::InvalidArgument)?,
        };
        let argv = if opts.argv.is_empty() {
            vec![account.shell.clone()]
        } else {
            opts.argv
        };
        let mut env = vec![format!("HOME={}", account.home)];
        env.extend(opts.env);
        let req = ExecRequest {
            argv,
            uid: account.uid,
            gid: account.gid,
            // The profile's working directory, as for its main command, then the home.
            cwd: opts
                .cwd
                .or_else(|| profile.process.cwd.clone())
                .or_else(|| Some(spec::default_cwd(&profile, &self.inner.host, &account))),
            env,
        };
        let started = self
            .inner
            .runtime
            .exec(name, &req, stdio)
            .await
            .map_err(|e| match e {
                RuntimeError::NotRun { program, why } => Error::CannotRun {
                    name: name.into(),
                    program,
                    why,
                },
                e => Error::RuntimeFailed {
                    name: name.into(),
                    message: crate::error_chain(&e),
                },
            })?;
        let id = self.inner.next_process.fetch_add(1, Ordering::Relaxed);
        tracing::info!(SANDBOX = name, id, pid = started.pid, argv = ?req.argv, uid = req.uid, via = started.via.as_str(), "process started");
        self.processes().insert(id, (name.to_string(), started.pid));
        let sup = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let status = exit_code(sup.inner.runtime.wait(started.pid).await);
            sup.processes().remove(&id);
            tracing::info!(SANDBOX = name.as_str(), id, status, "process exited");
            sup.emit(Event::ProcessExited { name, id, status });
        });
        Ok((id, started.pty))
    }

    fn processes(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u32, (String, u32)>> {
        self.inner
            .processes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `signal` to process `id` of sandbox `name` (one [`Supervisor::exec`] started
    /// and that still runs): how `sandboxctl` passes on Ctrl-C, SIGTERM and SIGHUP.
    pub fn signal_process(&self, name: &str, id: u32, signal: i32) -> Result<(), Error> {
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("{signal} is not a signal")))?;
        let pid = match self.processes().get(&id) {
            Some((owner, pid)) if owner == name => *pid,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "sandbox {:?} runs no process {id}",
                    shown(name)
                )))
            }
        };
        // The daemon owns the sandbox's user namespace, so it may signal any of its users.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).map_err(|e| {
            Error::RuntimeFailed {
                name: name.into(),
                message: format!("signal {signal} to process {id}: {e}"),
            }
        })
    }
}
