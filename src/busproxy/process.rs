//! One `xdg-dbus-proxy` process: spawned with its ready/lifetime descriptor as fd 3, the
//! daemon holding the other end. The proxy writes a byte there once its sockets listen and
//! exits when the descriptor closes, so it never outlives the daemon, even a killed one.
//!
//! For a sandbox with the portals it runs under `bwrap`, in a root of the host's `/usr`,
//! `/etc` and the folders of its sockets, with `/.flatpak-info` naming the app: the portal
//! frontend knows a caller by the process on the other end of its bus connection (the
//! proxy) and reads that file through `/proc/PID/root`, as it does for Flatpak apps.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncReadExt;

/// The proxy's end of the lifetime pipe.
const SYNC_FD: i32 = 3;
/// bwrap's `--ro-bind-data` source of `/.flatpak-info`.
const INFO_FD: i32 = 4;

/// The program, looked up on `PATH` (Debian's package `xdg-dbus-proxy`).
pub const PROGRAM: &str = "xdg-dbus-proxy";
/// The wrapper for an identified proxy (Debian's package `bubblewrap`).
pub const BWRAP: &str = "bwrap";

/// A proxy run under bwrap so that the portals know its clients as `app_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub app_id: String,
    /// Host folders the proxy needs besides `/usr` and `/etc`: its sockets' and the
    /// bus's, bound at the same paths.
    pub folders: Vec<std::path::PathBuf>,
}

impl Identified {
    /// bwrap's arguments before the proxy's command.
    pub fn bwrap_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "--ro-bind",
            "/usr",
            "/usr",
            "--ro-bind",
            "/etc",
            "/etc",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]
        .map(String::from)
        .to_vec();
        for f in &self.folders {
            let f = f.display().to_string();
            a.extend(["--bind".into(), f.clone(), f]);
        }
        a.extend([
            "--ro-bind-data".into(),
            INFO_FD.to_string(),
            "/.flatpak-info".into(),
            "--".into(),
            PROGRAM.into(),
        ]);
        a
    }

    /// The `/.flatpak-info` the portal frontend reads (its `[Application] name`).
    pub fn info(&self) -> String {
        format!("[Application]\nname={}\n", self.app_id)
    }
}

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("cannot run {PROGRAM} (the [dbus] table needs it: apt install xdg-dbus-proxy)")]
    Missing(#[source] io::Error),
    #[error("cannot run {BWRAP} (dbus.portals needs it to name the app to the portals: apt install bubblewrap)")]
    NoBwrap(#[source] io::Error),
    #[error("cannot start {PROGRAM}")]
    Io(#[source] io::Error),
    #[error("{PROGRAM} ended before its sockets were ready ({0}; its messages are in the daemon's journal)")]
    Ended(std::process::ExitStatus),
    #[error("{PROGRAM} was not ready within {0:?}")]
    Timeout(Duration),
}

/// A proxy that is ready: its sockets accept connections.
pub struct Running {
    /// The proxy, or the bwrap running it.
    pub child: tokio::process::Child,
    /// Closing it ends the proxy.
    lifetime: Option<tokio::net::unix::pipe::Receiver>,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Ends the proxy: its lifetime pipe closes, which it answers by exiting (and bwrap
    /// with it); SIGKILL if it has not within a second.
    pub async fn stop(mut self) {
        self.lifetime = None;
        let waited = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
        if !matches!(waited, Ok(Ok(_))) {
            let _ = self.child.kill().await;
        }
    }
}

/// Starts the proxy with `args` and waits up to `within` until it is ready. Sockets it
/// creates are connectable by every user of the sandbox (umask 0): the directory they live
/// in is what keeps anyone else out.
pub async fn spawn(
    args: &[String],
    identified: Option<&Identified>,
    within: Duration,
) -> Result<Running, SpawnError> {
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Io(e.into()));
    let (ours, theirs) = pipe()?;
    let mut cmd = match identified {
        Some(id) => {
            let mut c = tokio::process::Command::new(BWRAP);
            c.args(id.bwrap_args());
            c
        }
        None => tokio::process::Command::new(PROGRAM),
    };
    cmd.arg(format!("--fd={SYNC_FD}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    // The app's info, whole in the pipe before bwrap starts (far below a pipe's buffer).
    let info = match identified {
        Some(id) => {
            let (read, write) = pipe()?;
            let mut w = std::fs::File::from(write);
            std::io::Write::write_all(&mut w, id.info().as_bytes()).map_err(SpawnError::Io)?;
            Some(read)
        }
        None => None,
    };
    let fds = [
        (theirs.as_raw_fd(), SYNC_FD),
        (info.as_ref().map_or(-1, |f| f.as_raw_fd()), INFO_FD),
    ];
    // SAFETY: only async-signal-safe calls (umask, fcntl, dup2, close_range) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(0);
            // Out of the way first, so that placing one cannot overwrite the other.
            let mut moved = [-1; 2];
            for (i, (from, _)) in fds.iter().enumerate() {
                if *from >= 0 {
                    moved[i] = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 10);
                    if moved[i] < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            for (i, (_, to)) in fds.iter().enumerate() {
                if moved[i] >= 0 && libc::dup2(moved[i], *to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            crate::fds::cloexec_above(INFO_FD)
        });
    }
    let mut child = cmd.spawn().map_err(|e| match (e.kind(), identified) {
        (io::ErrorKind::NotFound, Some(_)) => SpawnError::NoBwrap(e),
        (io::ErrorKind::NotFound, None) => SpawnError::Missing(e),
        _ => SpawnError::Io(e),
    })?;
    drop::<OwnedFd>(theirs);
    drop(info);
    let mut lifetime =
        tokio::net::unix::pipe::Receiver::from_owned_fd(ours).map_err(SpawnError::Io)?;
    let mut byte = [0u8; 1];
    let ready = tokio::time::timeout(within, lifetime.read(&mut byte)).await;
    match ready {
        Ok(Ok(1)) => Ok(Running {
            child,
            lifetime: Some(lifetime),
        }),
        Ok(_) => {
            let status = child.wait().await.map_err(SpawnError::Io)?;
            Err(SpawnError::Ended(status))
        }
        Err(_) => Err(SpawnError::Timeout(within)),
    }
}
