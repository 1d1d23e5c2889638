//! The daemon's intermediate user namespace (DESIGN §2): 0 → you, 1..=span → your
//! subordinate ids. runc runs inside it as "root", which lets a container map one of its
//! users to you ("keep-id") — plain rootless runc cannot (its exec fifo chown fails).
//!
//! A holder process (`sleep infinity`) keeps the namespace, and a mount namespace it owns,
//! alive; runc joins both through `nsenter`. A container's user namespace is a child of this
//! one, and only runc inside this same namespace may enter it later (`runc exec`), so the
//! daemon's holder outlives a crashed daemon: its pid is recorded and the next daemon reuses
//! it. An orderly daemon exit ends it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use thiserror::Error;

/// The holder's argv[0], as `ps` shows it.
pub const HOLDER_TITLE: &str = "sandboxd: userns holder";

#[derive(Debug, Error)]
pub enum UsernsError {
    #[error("cannot start the user namespace holder")]
    Spawn(#[source] std::io::Error),
    #[error("{tool} failed: {message}")]
    Map { tool: &'static str, message: String },
    #[error("cannot record the namespace holder in {}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct IntermediateUserns {
    pid: u32,
    /// Set when this process started the holder (so it can reap it).
    child: Option<Child>,
    /// Where the holder is recorded for the next daemon; `None`: a transient namespace.
    record: Option<PathBuf>,
}

/// The kernel's start time of `pid` (stat field 22): with the pid, it names one process.
fn start_time(pid: u32) -> Option<u64> {
    crate::procfs::Stat::of(pid).map(|s| s.start_time)
}

fn map_of(pid: u32, file: &str) -> Option<Vec<Vec<u64>>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    Some(
        text.lines()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .collect(),
    )
}

fn wanted_map(id: u32, (start, count): (u32, u32), span: u32) -> Vec<Vec<u64>> {
    vec![
        vec![0, id as u64, 1],
        vec![1, start as u64, count.min(span) as u64],
    ]
}

impl IntermediateUserns {
    /// Creates a namespace with `0 → uid/gid` and `1..=span → the subordinate ranges`
    /// (mapped with the setuid newuidmap/newgidmap, which check /etc/subuid themselves). It
    /// ends when the value is dropped, and with `die_with_parent` also when this process dies.
    pub fn create(
        uid: u32,
        gid: u32,
        subuid: (u32, u32),
        subgid: (u32, u32),
        span: u32,
        die_with_parent: bool,
    ) -> Result<Self, UsernsError> {
        let mut cmd = Command::new("sleep");
        // Named for what it is in `ps`, not as a stray `sleep`.
        std::os::unix::process::CommandExt::arg0(&mut cmd, HOLDER_TITLE);
        cmd.arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: runs between fork and exec in the single-threaded child; unshare(2) is a
        // plain system call.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                use nix::sched::CloneFlags;
                // A transient namespace must not outlive a client killed midway.
                if die_with_parent {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                }
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                    .map_err(std::io::Error::from)?;
                // Every mount a slave of the host's: what the host mounts or unmounts later
                // (a USB stick, an sshfs, an unlocked folder) reaches sandboxes started
                // afterwards, and nothing mounted here or in a sandbox reaches the host.
                // The kernel already demotes shared mounts copied into a less privileged
                // namespace; this says so and covers any that are not.
                // SAFETY: mount(2) with static arguments; no allocation after fork.
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // spawn() returns after exec, so the namespaces already exist.
        let child = cmd.spawn().map_err(UsernsError::Spawn)?;
        let ns = Self {
            pid: child.id(),
            child: Some(child),
            record: None,
        };
        let pid = ns.pid.to_string();
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

    /// The daemon's namespace: the one recorded in `record` by an earlier daemon when its
    /// holder still lives with the same maps, else a new one, recorded there.
    pub fn open_or_create(
        record: &Path,
        uid: u32,
        gid: u32,
        subuid: (u32, u32),
        subgid: (u32, u32),
        span: u32,
    ) -> Result<Self, UsernsError> {
        let recorded = std::fs::read_to_string(record).ok().and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u64>().ok());
            Some((it.next()?? as u32, it.next()??))
        });
        if let Some((pid, started)) = recorded {
            let same = start_time(pid) == Some(started)
                && map_of(pid, "uid_map") == Some(wanted_map(uid, subuid, span))
                && map_of(pid, "gid_map") == Some(wanted_map(gid, subgid, span));
            if same {
                return Ok(Self {
                    pid,
                    child: None,
                    record: Some(record.to_path_buf()),
                });
            }
        }
        let mut ns = Self::create(uid, gid, subuid, subgid, span, false)?;
        let started = start_time(ns.pid).unwrap_or(0);
        let tmp = record.with_extension("tmp");
        std::fs::write(&tmp, format!("{} {started}\n", ns.pid))
            .and_then(|_| std::fs::rename(&tmp, record))
            .map_err(|source| UsernsError::Record {
                path: record.to_path_buf(),
                source,
            })?;
        ns.record = Some(record.to_path_buf());
        Ok(ns)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The namespace's identity (inode of its nsfs file).
    pub fn inode(&self) -> Option<u64> {
        std::fs::metadata(format!("/proc/{}/ns/user", self.pid))
            .ok()
            .map(|m| m.ino())
    }

    /// The command prefix that runs a program inside the namespace as its root (you).
    /// The holder's mount namespace comes too: runc setns(2)es into its "host" mount
    /// namespace while preparing mounts, which needs CAP_SYS_ADMIN over that namespace's
    /// owner: true for the holder's, not for the real host's. It is a copy of the host's
    /// whose mounts receive later host mounts (copies made from a less privileged user
    /// namespace turn shared mounts into slaves, mount_namespaces(7)).
    pub fn wrapper(&self) -> Vec<String> {
        let pid = self.pid;
        vec![
            "nsenter".into(),
            format!("--user=/proc/{pid}/ns/user"),
            format!("--mount=/proc/{pid}/ns/mnt"),
            "--".into(),
        ]
    }

    /// Ends the namespace (the daemon's orderly exit, after its sandboxes stopped).
    pub fn shutdown(mut self) {
        self.kill();
        if let Some(r) = self.record.take() {
            let _ = std::fs::remove_file(r);
        }
    }

    fn kill(&mut self) {
        match self.child.take() {
            Some(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            None => {
                if start_time(self.pid).is_some() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(self.pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

impl Drop for IntermediateUserns {
    fn drop(&mut self) {
        // A recorded (daemon) namespace outlives the value on purpose; a transient one ends.
        if self.record.is_none() {
            self.kill();
        }
    }
}

/// The inode of the parent of `pid`'s user namespace (ioctl_ns(2) NS_GET_PARENT).
pub fn parent_userns_inode(pid: u32) -> std::io::Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
    // NS_GET_PARENT = _IO(0xb7, 0x2)
    // SAFETY: the ioctl takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), 0xb702) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    let parent = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(parent.metadata()?.ino())
}
