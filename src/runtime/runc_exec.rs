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
        // Only runc inside the namespace a container was created from may enter it. One
        // created under an earlier daemon whose namespace is gone cannot be entered.
        if let Some(ours) = self.userns {
            if let Some(state) = self.state(id).await? {
                if super::parent_userns_inode(state.pid).is_ok_and(|parent| parent != ours) {
                    return Err(RuntimeError::Failed {
                        op: "exec",
                        id: id.to_string(),
                        message: "it runs in a user namespace of an earlier daemon that is gone, so no process can join it; restart the sandbox".into(),
                    });
                }
            }
        }
        let (pid_s, log_s, console_s) = (
            files.pid.to_string_lossy(),
            files.log.to_string_lossy(),
            files.console.to_string_lossy(),
        );
        let user = format!("{}:{}", req.uid, req.gid);
        let mut args: Vec<&str> = vec![
            "--log",
            &log_s,
            "--log-format",
            "json",
            "exec",
            "--detach",
            "--pid-file",
            &pid_s,
            "--user",
            &user,
        ];
        // The shim changes directory itself: runc's own errors would reach the caller's
        // stderr twice.
        args.extend(["--cwd", "/"]);
        for e in &req.env {
            args.extend(["--env", e]);
        }
        let spawn_err = |source| RuntimeError::Spawn {
            program: self.program.display().to_string(),
            source,
        };
        let stdio_err = |source| RuntimeError::Stdio {
            id: id.to_string(),
            source,
        };
        let console = match &stdio {
            ExecStdio::Terminal => {
                args.extend(["--tty", "--console-socket", &console_s]);
                Some(ConsoleSocket::bind(&files.console).map_err(stdio_err)?)
            }
            ExecStdio::Fds(_) => None,
        };
        args.push(id);
        args.extend([crate::spec::INIT_PATH, crate::init::EXEC_ARG]);
        if let Some(cwd) = &req.cwd {
            args.extend(["--cwd", cwd]);
        }
        args.push("--");
        args.extend(req.argv.iter().map(String::as_str));
        let mut cmd = self.command(&args);
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
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let timeout = || RuntimeError::Timeout {
            op: "exec",
            id: id.to_string(),
            secs: RUNC_TIMEOUT.as_secs(),
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
        let pty = match &console {
            None => {
                let status = self.bounded("exec", id, child.wait()).await?;
                if !status.success() {
                    return Err(failed());
                }
                None
            }
            Some(console) => {
                // runc sends the master before it exits; if it fails first, nothing comes.
                let run = async {
                    let receive = console.receive();
                    tokio::pin!(receive);
                    tokio::select! {
                        fd = &mut receive => {
                            let status = child.wait().await.map_err(spawn_err)?;
                            if !status.success() {
                                return Err(failed());
                            }
                            fd.map_err(stdio_err)
                        }
                        status = child.wait() => {
                            if !status.map_err(spawn_err)?.success() {
                                return Err(failed());
                            }
                            (&mut receive).await.map_err(stdio_err)
                        }
                    }
                };
                Some(
                    tokio::time::timeout(RUNC_TIMEOUT, run)
                        .await
                        .map_err(|_| timeout())??,
                )
            }
        };
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
