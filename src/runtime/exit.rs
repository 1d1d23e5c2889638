//! Waiting for a process that is not a tokio child: a pidfd (pidfd_open(2)) becomes
//! readable when the process exits; waitid(2) on it collects the status when we are its
//! parent (the daemon is a child subreaper, so container inits are re-parented to it).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use thiserror::Error;
use tokio::io::unix::AsyncFd;

#[derive(Debug, Error)]
pub enum ExitWaitError {
    #[error("pidfd_open({pid})")]
    Open {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

struct PidFd(OwnedFd);

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

fn pidfd_open(pid: u32) -> Result<PidFd, ExitWaitError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(ExitWaitError::Open {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
}

/// A handle on a process that stays valid when its pid is reused: signals through it reach
/// that process or nobody (pidfd_send_signal(2)), and cost no `runc kill`.
pub struct ProcessHandle(PidFd);

impl ProcessHandle {
    /// A handle on `pid`, which must be known to be the process meant (e.g. a child not yet
    /// reaped).
    pub fn open(pid: u32) -> Result<Self, ExitWaitError> {
        pidfd_open(pid).map(Self)
    }

    /// Sends `signal`; a process that already exited is no error.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags; no memory is shared.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match std::io::Error::last_os_error() {
            _ if rc == 0 => Ok(()),
            e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            e => Err(e),
        }
    }
}

/// The wait status of an exited process behind `fd`, if we may collect it.
fn collect(fd: &PidFd) -> Option<i32> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid initial value for waitid to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pidfd and a pointer to a local siginfo_t that outlives the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful waitid with WEXITED, si_status and si_code are set.
    let (code, status) = unsafe { (info.si_code, info.si_status()) };
    match code {
        libc::CLD_EXITED => Some(status << 8),
        libc::CLD_KILLED | libc::CLD_DUMPED => Some(status & 0x7f),
        _ => None,
    }
}

/// Waits for `pid` to exit. Returns the raw wait status (as waitpid(2) encodes it) when
/// the daemon is the parent, `None` otherwise or when the pid is already gone.
pub async fn wait_exit(pid: u32) -> Result<Option<i32>, ExitWaitError> {
    let _watch = super::reaper::Watch::new(pid);
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        // ESRCH: already gone and reaped.
        Err(ExitWaitError::Open { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    // SAFETY: `PidFd` owns its fd and always returns the same one; it lives inside the
    // AsyncFd until it is dropped.
    let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| ExitWaitError::Open {
            pid,
            source: e.into(),
        })?;
    // Readiness can be reported spuriously; retry until waitid or the exit shows.
    loop {
        let mut guard = afd
            .readable()
            .await
            .map_err(|source| ExitWaitError::Open { pid, source })?;
        if let Some(status) = collect(afd.get_ref()) {
            return Ok(Some(status));
        }
        // Not our child (adopted): readable means exited; the status is not ours to read.
        if !process_exists(pid) {
            return Ok(None);
        }
        guard.clear_ready();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn process_exists(pid: u32) -> bool {
    // A zombie still "exists" for kill(0); /proc/PID/stat state 'Z' means exited.
    crate::procfs::Stat::of(pid).is_some_and(|s| !s.is_zombie())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collects_status_of_own_child() {
        #[allow(clippy::zombie_processes)] // reaped by wait_exit itself
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let status = wait_exit(child.id()).await.unwrap();
        assert_eq!(status, Some(3 << 8));
    }

    #[tokio::test]
    async fn collects_signal_of_own_child() {
        #[allow(clippy::zombie_processes)] // reaped by wait_exit itself
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert_eq!(wait_exit(child.id()).await.unwrap(), Some(9));
    }
}
