//! `runc exec --detach`: the way into a sandbox that has no exec channel (one adopted
//! from an earlier daemon, or whose pid 1 closed it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use super::console::ConsoleSocket;
use super::runc::{log_message, Runc, RUNC_TIMEOUT};
use super::{ExecRequest, ExecStdio, NotRun, Runtime, RuntimeError, Started};

/// Temporary files of one exec, removed when dropped.
struct ExecFiles {
    pid: PathBuf,
    log: PathBuf,
    console: PathBuf,
}

impl ExecFiles {
    fn new(root: &Path) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            pid: root.join(format!(".exec-{n}.pid")),
            log: root.join(format!(".exec-{n}.log")),
            console: root.join(format!(".exec-{n}.sock")),
        }
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        for f in [&self.pid, &self.log, &self.console] {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Runc {
    /// `runc exec --detach`: the path for sandboxes without an exec channel.
    pub(super) async fn runc_exec(
        &self,
        id: &str,
        req: &ExecRequest,
        stdio: ExecStdio,
    ) -> Result<Started, RuntimeError> {
        let files = ExecFiles::new(&self.root);
        self.check_enterable(id).await?;
        let stdio_err = |source| RuntimeError::Stdio {
            id: id.to_string(),
            source,
        };
        let console = match &stdio {
            ExecStdio::Terminal => Some(ConsoleSocket::bind(&files.console).map_err(stdio_err)?),
            ExecStdio::Fds(_) => None,
        };
        let args = exec_args(id, req, &files, console.is_some());
        let mut cmd = self.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        match stdio {
            // Detached without a terminal, runc hands its own stdio to the process.
            ExecStdio::Fds([i, o, e]) => {
                cmd.stdin(Stdio::from(i))
                    .stdout(Stdio::from(o))
                    .stderr(Stdio::from(e));
            }
            ExecStdio::Terminal => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().map_err(|source| self.spawn_error(source))?;
        let pty = self
            .await_exec(id, req, &files, child, console.as_ref())
            .await?;
        let pid = std::fs::read_to_string(&files.pid)
            .unwrap_or_default()
            .trim()
            .parse()
            .map_err(|_| RuntimeError::Failed {
                op: "exec",
                id: id.to_string(),
                message: "runc wrote no pid file".into(),
            })?;
        Ok(Started {
            pid,
            pty,
            via: super::ExecPath::Runc,
        })
    }

    /// Only runc inside the namespace a container was created from may enter it. One
    /// created under an earlier daemon whose namespace is gone cannot be entered.
    async fn check_enterable(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(ours) = self.userns else {
            return Ok(());
        };
        if let Some(state) = self.state(id).await? {
            if super::parent_userns_inode(state.pid).is_ok_and(|parent| parent != ours) {
                return Err(RuntimeError::Failed {
                    op: "exec",
                    id: id.to_string(),
                    message: "it runs in a user namespace of an earlier daemon that is gone, so no process can join it; restart the sandbox".into(),
                });
            }
        }
        Ok(())
    }

    fn spawn_error(&self, source: std::io::Error) -> RuntimeError {
        RuntimeError::Spawn {
            program: self.program.display().to_string(),
            source,
        }
    }

    /// Waits for `runc exec` to end, and with a console for the pty master it sends.
    async fn await_exec(
        &self,
        id: &str,
        req: &ExecRequest,
        files: &ExecFiles,
        mut child: tokio::process::Child,
        console: Option<&ConsoleSocket>,
    ) -> Result<Option<std::os::fd::OwnedFd>, RuntimeError> {
        let stdio_err = |source| RuntimeError::Stdio {
            id: id.to_string(),
            source,
        };
        let failed = || {
            let message = log_message(&files.log);
            match not_run(&message, req) {
                Some(why) => RuntimeError::NotRun {
                    program: req.argv.first().cloned().unwrap_or_default(),
                    why,
                },
                None => RuntimeError::Failed {
                    op: "exec",
                    id: id.to_string(),
                    message,
                },
            }
        };
        let Some(console) = console else {
            let status = self.bounded("exec", id, child.wait()).await?;
            return if status.success() {
                Ok(None)
            } else {
                Err(failed())
            };
        };
        // runc sends the master before it exits; if it fails first, nothing comes.
        let run = async {
            let receive = console.receive();
            tokio::pin!(receive);
            tokio::select! {
                fd = &mut receive => {
                    let status = child.wait().await.map_err(|e| self.spawn_error(e))?;
                    if !status.success() {
                        return Err(failed());
                    }
                    fd.map_err(stdio_err)
                }
                status = child.wait() => {
                    if !status.map_err(|e| self.spawn_error(e))?.success() {
                        return Err(failed());
                    }
                    (&mut receive).await.map_err(stdio_err)
                }
            }
        };
        let fd = tokio::time::timeout(RUNC_TIMEOUT, run)
            .await
            .map_err(|_| RuntimeError::Timeout {
                op: "exec",
                id: id.to_string(),
                secs: RUNC_TIMEOUT.as_secs(),
            })??;
        Ok(Some(fd))
    }
}

/// runc's arguments for an exec of `req` through sandbox-init's exec shim.
fn exec_args(id: &str, req: &ExecRequest, files: &ExecFiles, terminal: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--log",
        &files.log.to_string_lossy(),
        "--log-format",
        "json",
        "exec",
        "--detach",
        "--pid-file",
        &files.pid.to_string_lossy(),
        "--user",
        &format!("{}:{}", req.uid, req.gid),
        // The shim changes directory itself: runc's own errors would reach the caller's
        // stderr twice.
        "--cwd",
        "/",
    ]
    .map(String::from)
    .into();
    for e in &req.env {
        args.extend(["--env".to_string(), e.clone()]);
    }
    if terminal {
        args.extend(["--tty".into(), "--console-socket".into()]);
        args.push(files.console.to_string_lossy().into_owned());
    }
    args.extend([id, crate::spec::INIT_PATH, crate::init::EXEC_ARG].map(String::from));
    if let Some(cwd) = &req.cwd {
        args.extend(["--cwd".to_string(), cwd.clone()]);
    }
    args.push("--".into());
    args.extend(req.argv.iter().cloned());
    args
}

/// runc's words for a program or working directory it could not use (runc 1.1
/// libcontainer: `exec: "X": executable file not found in $PATH`, `stat X: no such file or
/// directory`, `permission denied`, `chdir to cwd ("X") set in config.json failed`).
fn not_run(message: &str, req: &ExecRequest) -> Option<NotRun> {
    if message.contains("chdir to cwd") {
        let why = message.rsplit(": ").next().unwrap_or("failed").to_string();
        return Some(NotRun::Cwd {
            dir: req.cwd.clone().unwrap_or_default(),
            why,
        });
    }
    let exec = message.contains("exec: ") || message.contains("exec failed");
    if exec
        && (message.contains("executable file not found")
            || message.contains("no such file or directory"))
    {
        return Some(NotRun::NotFound);
    }
    if exec && message.contains("permission denied") {
        return Some(NotRun::NotExecutable("permission denied".into()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runcs_messages_become_reasons() {
        let req = ExecRequest {
            argv: vec!["x".into()],
            uid: 0,
            gid: 0,
            cwd: Some("/nope".into()),
            env: vec![],
        };
        let m = |s| not_run(s, &req);
        assert_eq!(m("exec failed: unable to start container process: exec: \"nosuch\": executable file not found in $PATH"), Some(NotRun::NotFound));
        assert_eq!(m("exec failed: unable to start container process: exec: \"/a\": stat /a: no such file or directory"), Some(NotRun::NotFound));
        assert_eq!(m("exec failed: unable to start container process: exec: \"/etc/passwd\": permission denied"), Some(NotRun::NotExecutable("permission denied".into())));
        assert!(matches!(m("exec failed: unable to start container process: chdir to cwd (\"/nope\") set in config.json failed: no such file or directory"), Some(NotRun::Cwd { .. })));
        assert_eq!(m("container does not exist"), None);
    }
}
