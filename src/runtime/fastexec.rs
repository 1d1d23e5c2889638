//! The daemon's end of a sandbox's exec channel (see [`crate::init::channel`]): starts
//! processes through the sandbox's pid 1 in the time of a fork and an exec, and learns
//! their exit from it. One reader task per channel; whatever pid 1 sends that is not a
//! well-formed answer closes the channel, and the sandbox falls back to `runc exec`.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::MsgFlags;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

use super::{ExecRequest, ExecStdio, NotRun, Started};
use crate::init::channel::{Reply, Request, Stage, MAX_REQUEST};

/// How long pid 1 may take to fork and exec.
const START_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FastExecError {
    /// The channel cannot take this request; `runc exec` can.
    #[error("the exec channel is not usable: {0}")]
    Unavailable(String),
    /// pid 1 could not run the program, as `runc exec` would have failed too.
    #[error("{program}: {why}")]
    NotRun { program: String, why: NotRun },
}

/// A started process (host pid or key, pty master), or the errno it could not run with.
type Outcome = Result<(u32, Option<OwnedFd>), (Stage, i32)>;

struct Waiting {
    /// Host pid once started.
    pid: Option<u32>,
    started: Option<oneshot::Sender<Outcome>>,
}

/// One sandbox's channel.
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
    next: AtomicU32,
    /// Requests by id, until their process ends.
    waiting: Mutex<HashMap<u32, Waiting>>,
    /// Exit statuses by host pid, for [`Channel::wait`].
    exits: Mutex<HashMap<u32, watch::Sender<Option<i32>>>>,
    closed: AtomicBool,
    /// The user pid 1 runs as: root can start processes as anyone, another user only as
    /// itself.
    init_user: (u32, u32),
    /// Serialises sends: one request on the wire at a time.
    send: tokio::sync::Mutex<()>,
}

/// Keys of processes that ended (and were reaped by pid 1) before the daemon could read
/// their host pid: above every pid the kernel hands out (pid_max ≤ 2²²).
const ENDED_KEY: u32 = 1 << 31;

/// The host pid of the process a pidfd refers to (its `/proc/self/fdinfo` entry), or
/// `Some(None)` when it has already been reaped (the kernel then shows -1).
fn pid_of(pidfd: &OwnedFd) -> Option<Option<u32>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    let pid: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse().ok())?;
    Some(u32::try_from(pid).ok().filter(|p| *p > 0))
}

impl Channel {
    /// Serves `fd` (our end of the socket pair handed to `runc create`).
    pub fn new(fd: OwnedFd, sandbox: &str, init_user: (u32, u32)) -> std::io::Result<Arc<Self>> {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // SAFETY: an OwnedFd always reports the same, open fd; it lives inside the AsyncFd.
        let fd = unsafe { AsyncFd::register(fd) }?;
        let ch = Arc::new(Self {
            fd,
            next: AtomicU32::new(1),
            waiting: Mutex::new(HashMap::new()),
            exits: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            init_user,
            send: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(ch.clone().read(sandbox.to_string()));
        Ok(ch)
    }

    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Relaxed)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exits(&self) -> std::sync::MutexGuard<'_, HashMap<u32, watch::Sender<Option<i32>>>> {
        self.exits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when this channel started host process `pid` and it has not been waited for.
    pub fn owns(&self, pid: u32) -> bool {
        self.exits().contains_key(&pid)
    }

    /// Ends the channel: every waiter learns that the status is unknown, and pid 1 sees
    /// its end shut (a send blocked on a full socket fails instead of hanging pid 1).
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let _ = nix::sys::socket::shutdown(
            self.fd.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        for (_, w) in self.waiting().drain() {
            drop(w.started);
        }
        for (_, tx) in self.exits().iter() {
            tx.send_replace(Some(-1));
        }
    }

    async fn read(self: Arc<Self>, sandbox: String) {
        let mut buf = vec![0u8; 512];
        loop {
            let msg = match self.fd.readable().await {
                Ok(mut guard) => match guard.try_io(|fd| {
                    crate::seqpacket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
                        .map_err(std::io::Error::from)
                }) {
                    Ok(Ok(m)) => m,
                    Ok(Err(_)) => break,
                    Err(_would_block) => continue,
                },
                Err(_) => break,
            };
            if msg.len == 0 && msg.fds.is_empty() {
                break; // pid 1 ended
            }
            let reply = (!msg.truncated)
                .then(|| Reply::decode(&buf[..msg.len]))
                .flatten();
            if !matches!(reply.map(|r| self.answer(r, msg.fds)), Some(true)) {
                tracing::warn!(
                    SANDBOX = sandbox.as_str(),
                    "the sandbox's init sent something unexpected on its exec channel; closing it (exec falls back to runc exec)"
                );
                break;
            }
        }
        self.close();
    }

    /// Applies one reply; false when it makes no sense (unknown id, missing fds).
    fn answer(&self, reply: Reply, mut fds: Vec<OwnedFd>) -> bool {
        let mut waiting = self.waiting();
        match reply {
            Reply::Started(id) => {
                let Some(w) = waiting.get_mut(&id).filter(|w| w.pid.is_none()) else {
                    return false;
                };
                let pty = if fds.len() == 2 { fds.pop() } else { None };
                let Some(pid) = fds.first().and_then(pid_of) else {
                    return false;
                };
                // Already ended: its exit report follows; a key stands in for the pid.
                let pid = pid.unwrap_or(ENDED_KEY | id);
                w.pid = Some(pid);
                self.exits().insert(pid, watch::channel(None).0);
                if let Some(tx) = w.started.take() {
                    let _ = tx.send(Ok((pid, pty)));
                }
                true
            }
            Reply::Failed { id, errno, stage } => match waiting.remove(&id) {
                Some(Waiting {
                    started: Some(tx), ..
                }) => {
                    let _ = tx.send(Err((stage, errno)));
                    true
                }
                _ => false,
            },
            Reply::Exit { id, status } => match waiting.remove(&id) {
                Some(Waiting { pid: Some(pid), .. }) => {
                    if let Some(tx) = self.exits().get(&pid) {
                        tx.send_replace(Some(status));
                    }
                    true
                }
                _ => false,
            },
        }
    }

    async fn send(&self, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        let _one = self.send.lock().await;
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                crate::seqpacket::send(fd.as_raw_fd(), bytes, fds).map_err(std::io::Error::from)
            }) {
                Ok(r) => return r.map(drop),
                Err(_would_block) => continue,
            }
        }
    }

    /// True when `req` can go over the channel: open, small enough, and a user pid 1 can
    /// become.
    pub fn fits(&self, req: &ExecRequest) -> bool {
        let size: usize = req.argv.iter().chain(&req.env).map(|s| s.len() + 1).sum();
        let user_ok = self.init_user == (0, 0) || self.init_user == (req.uid, req.gid);
        self.is_open()
            && user_ok
            && size + req.cwd.as_ref().map_or(0, String::len) + 64 <= MAX_REQUEST
    }

    /// Starts `req` through pid 1.
    pub async fn exec(
        &self,
        req: &ExecRequest,
        stdio: ExecStdio,
    ) -> Result<Started, FastExecError> {
        let unavailable = |why: &str| FastExecError::Unavailable(why.into());
        if !self.is_open() {
            return Err(unavailable("closed"));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (fds, pty) = match stdio {
            ExecStdio::Fds(fds) => (fds.into_iter().collect::<Vec<_>>(), false),
            ExecStdio::Terminal => (Vec::new(), true),
        };
        let wire = Request {
            id,
            uid: req.uid,
            gid: req.gid,
            pty,
            cwd: req.cwd.clone(),
            argv: req.argv.clone(),
            env: req.env.clone(),
        }
        .encode()
        .filter(|w| w.len() <= MAX_REQUEST)
        .ok_or_else(|| unavailable("request too large"))?;
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(
            id,
            Waiting {
                pid: None,
                started: Some(tx),
            },
        );
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        // Bounded: a pid 1 that stopped reading must not hold the caller.
        let sent = tokio::time::timeout(START_TIMEOUT, self.send(&wire, &raw)).await;
        if let Err(why) = sent
            .map_err(|_| "the sandbox's init stopped reading".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            self.waiting().remove(&id);
            return Err(unavailable(&why));
        }
        drop(fds);
        match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(Ok((pid, pty)))) => Ok(Started {
                pid,
                pty,
                via: super::ExecPath::Channel,
            }),
            Ok(Ok(Err((stage, errno)))) => Err(FastExecError::NotRun {
                program: req.argv.first().cloned().unwrap_or_default(),
                why: NotRun::from_errno(stage, errno, req.cwd.as_deref()),
            }),
            Ok(Err(_)) => Err(unavailable("the channel closed")),
            Err(_) => {
                self.waiting().remove(&id);
                Err(unavailable("no answer from the sandbox's init"))
            }
        }
    }

    /// The wait(2) status of a process this channel started; `None` when the channel
    /// ended first (the sandbox is gone, and the process with it).
    pub async fn wait(&self, pid: u32) -> Option<i32> {
        let mut rx = self.exits().get(&pid)?.subscribe();
        let status = rx.wait_for(|s| s.is_some()).await.ok().and_then(|s| *s);
        self.exits().remove(&pid);
        status.filter(|s| *s >= 0)
    }
}
