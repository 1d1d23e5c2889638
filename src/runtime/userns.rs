//! The daemon's intermediate user namespace (DESIGN §2): 0 → you, 1..=span → your
//! subordinate ids. runc runs inside it as "root", which lets a container map one of its
//! users to you ("keep-id") — plain rootless runc cannot (its exec fifo chown fails).
//!
//! A tiny holder process (`cat`, reading a pipe from the daemon) keeps the namespace (and a
//! mount namespace it owns) alive and exits when the daemon goes; runc joins both through
//! `nsenter`.

use std::process::{Child, Command, Stdio};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum UsernsError {
    #[error("cannot start the user namespace holder")]
    Spawn(#[source] std::io::Error),
    #[error("{tool} failed: {message}")]
    Map { tool: &'static str, message: String },
}

pub struct IntermediateUserns {
    holder: Child,
}

impl IntermediateUserns {
    /// Creates the namespace with `0 → uid/gid` and `1..=span → the subordinate ranges`
    /// (mapped with the setuid newuidmap/newgidmap, which check /etc/subuid themselves).
    pub fn create(
        uid: u32,
        gid: u32,
        subuid: (u32, u32),
        subgid: (u32, u32),
        span: u32,
    ) -> Result<Self, UsernsError> {
        let mut cmd = Command::new("cat");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: runs between fork and exec in the single-threaded child; unshare(2) is a
        // plain system call.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                use nix::sched::CloneFlags;
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                    .map_err(std::io::Error::from)
            });
        }
        // spawn() returns after exec, so the namespace already exists.
        let holder = cmd.spawn().map_err(UsernsError::Spawn)?;
        let ns = Self { holder };
        let pid = ns.pid().to_string();
        for (tool, id, (start, count)) in [("newuidmap", uid, subuid), ("newgidmap", gid, subgid)] {
            let size = count.min(span).to_string();
            let out = Command::new(tool)
                .args([
                    &pid,
                    "0",
                    &id.to_string(),
                    "1",
                    "1",
                    &start.to_string(),
                    &size,
                ])
                .output()
                .map_err(|e| UsernsError::Map {
                    tool,
                    message: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(UsernsError::Map {
                    tool,
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        Ok(ns)
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// The command prefix that runs a program inside the namespace as its root (you).
    /// The holder's mount namespace comes too: runc setns(2)es into its "host" mount
    /// namespace while preparing mounts, which needs CAP_SYS_ADMIN over that namespace's
    /// owner: true for the holder's, not for the real host's. It is a copy of the host's
    /// whose mounts receive later host mounts (copies made from a less privileged user
    /// namespace turn shared mounts into slaves, mount_namespaces(7)).
    pub fn wrapper(&self) -> Vec<String> {
        let pid = self.pid();
        vec![
            "nsenter".into(),
            format!("--user=/proc/{pid}/ns/user"),
            format!("--mount=/proc/{pid}/ns/mnt"),
            "--".into(),
        ]
    }
}

impl Drop for IntermediateUserns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
