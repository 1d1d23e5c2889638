//! The helper's control socket (SOCK_SEQPACKET): short text messages, fds passed with
//! SCM_RIGHTS. The helper speaks it blocking ([`Control`]); the daemon async ([`Client`]).
//!
//! ```text
//! daemon → helper   "join PID"            (first; a helper is started ahead of need)
//! helper → daemon   "ready tcp4 tcp6 udp4 udp6 [log] [raw4 raw6]" + those fds
//!                                                        |  "error MESSAGE"
//! daemon → helper   "udp LOCAL PEER"  |  "connect tcp|udp PORT"
//! helper → daemon   "ok" + [fd]                          |  "error MESSAGE"
//! daemon → helper   "rules\nRULE\nRULE…" (judge.rs)
//! helper → daemon   "ok"                                 |  "error MESSAGE"
//! ```
//!
//! `log` (the nflog group's socket) and `raw4 raw6` (raw IP sockets for the ICMP errors
//! of refused datagrams) are left out where the kernel has no nflog or refuses raw
//! sockets; the sandbox then keeps a working network with refusals made by the proxy.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

const MAX_MESSAGE: usize = 512;
/// A request may carry a rule set (at most `judge::MAX_RULES` lines).
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot start the netns helper")]
    Spawn(#[source] io::Error),
    #[error("netns helper: {0}")]
    Helper(String),
    #[error("the netns helper went away")]
    Gone,
    #[error("the netns helper did not answer within {0:?}")]
    Timeout(Duration),
    #[error("netns helper control socket")]
    Io(#[source] io::Error),
}

pub enum Request {
    UdpReply {
        local: SocketAddr,
        peer: SocketAddr,
    },
    /// A socket connected to the sandbox's own 127.0.0.1:port (for published ports).
    Connect {
        udp: bool,
        port: u16,
    },
    /// The verdict rules of `judge`, replacing the ones in place.
    Rules(Vec<super::judge::Rule>),
}

/// What the helper answers a request with.
pub enum Answer {
    Fd(OwnedFd),
    Done,
}

impl Request {
    fn parse(text: &str) -> Option<Self> {
        if let Some(rules) = text.strip_prefix("rules\n") {
            return super::judge::Rule::decode(rules).map(Self::Rules);
        }
        if text == "rules" {
            return Some(Self::Rules(Vec::new()));
        }
        let mut words = text.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("udp"), Some(l), Some(p), None) => Some(Self::UdpReply {
                local: l.parse().ok()?,
                peer: p.parse().ok()?,
            }),
            (Some("connect"), Some(kind @ ("tcp" | "udp")), Some(p), None) => Some(Self::Connect {
                udp: kind == "udp",
                port: p.parse().ok().filter(|p| *p > 0)?,
            }),
            _ => None,
        }
    }
}

fn send(fd: RawFd, text: &str, fds: &[RawFd]) -> nix::Result<usize> {
    crate::seqpacket::send(fd, text.as_bytes(), fds)
}

/// One message of at most `max` bytes: its text (empty at end of stream) and the fds that
/// came with it. A longer one is refused whole rather than read cut.
fn recv(fd: RawFd, flags: MsgFlags, max: usize) -> nix::Result<(String, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; max];
    let msg = crate::seqpacket::recv(fd, &mut buf, flags)?;
    if msg.truncated {
        return Ok(("\0truncated".into(), Vec::new()));
    }
    Ok((
        String::from_utf8_lossy(&buf[..msg.len]).into_owned(),
        msg.fds,
    ))
}

/// The helper's (blocking) end.
pub struct Control {
    fd: OwnedFd,
}

impl Control {
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    pub fn send_error(&self, message: &str) -> nix::Result<usize> {
        let mut text = format!("error {message}");
        text.truncate(MAX_MESSAGE);
        send(self.fd.as_raw_fd(), &text, &[])
    }

    /// Sends the named descriptors (see the module's table for the names).
    pub fn send_ready(&self, fds: &[(&str, OwnedFd)]) -> nix::Result<usize> {
        let raw: Vec<RawFd> = fds.iter().map(|(_, f)| f.as_raw_fd()).collect();
        let names: Vec<&str> = fds.iter().map(|(n, _)| *n).collect();
        send(
            self.fd.as_raw_fd(),
            &format!("ready {}", names.join(" ")),
            &raw,
        )
    }

    /// Waits for the sandbox to join: the pid of its init. `None` when the daemon went away
    /// (a spare helper that was never used) or sent something else.
    pub fn wait_join(&self) -> Option<u32> {
        loop {
            match recv(self.fd.as_raw_fd(), MsgFlags::empty(), MAX_MESSAGE) {
                Ok((t, _)) => return t.strip_prefix("join ")?.parse().ok(),
                Err(nix::Error::EINTR) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Answers requests until the daemon closes its end.
    pub fn serve(&self, mut handle: impl FnMut(Request) -> io::Result<Answer>) {
        loop {
            let text = match recv(self.fd.as_raw_fd(), MsgFlags::empty(), MAX_REQUEST) {
                Ok((t, _)) if t.is_empty() => return,
                Ok((t, _)) => t,
                Err(nix::Error::EINTR) => continue,
                Err(_) => return,
            };
            let sent = match Request::parse(&text) {
                Some(req) => match handle(req) {
                    Ok(Answer::Fd(fd)) => send(self.fd.as_raw_fd(), "ok", &[fd.as_raw_fd()]),
                    Ok(Answer::Done) => send(self.fd.as_raw_fd(), "ok", &[]),
                    Err(e) => self.send_error(&e.to_string()),
                },
                None => self.send_error("unknown request"),
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// The listeners a helper made, and what else it could open.
pub struct Ready {
    pub tcp4: OwnedFd,
    pub tcp6: OwnedFd,
    pub udp4: OwnedFd,
    pub udp6: OwnedFd,
    /// The nflog group the verdict rules log to.
    pub log: Option<OwnedFd>,
    /// Raw IPv4 and IPv6 sockets inside, for ICMP errors.
    pub raw: Option<(OwnedFd, OwnedFd)>,
}

impl Ready {
    /// Matches the names of a `ready` message to its fds.
    fn from_message(text: &str, fds: Vec<OwnedFd>) -> Result<Self, ControlError> {
        let names: Vec<&str> = text.split(' ').skip(1).collect();
        if names.len() != fds.len() {
            return Err(ControlError::Helper(format!(
                "unexpected answer {text:?} with {} fds",
                fds.len()
            )));
        }
        let mut by_name: std::collections::HashMap<&str, OwnedFd> =
            names.into_iter().zip(fds).collect();
        let mut take = |n: &str| by_name.remove(n);
        let missing = || ControlError::Helper(format!("{text:?} lacks a listener"));
        let (tcp4, tcp6, udp4, udp6) = (take("tcp4"), take("tcp6"), take("udp4"), take("udp6"));
        let log = take("log");
        let raw = take("raw4").zip(take("raw6"));
        Ok(Self {
            tcp4: tcp4.ok_or_else(missing)?,
            tcp6: tcp6.ok_or_else(missing)?,
            udp4: udp4.ok_or_else(missing)?,
            udp6: udp6.ok_or_else(missing)?,
            log,
            raw,
        })
    }
}

/// The daemon's (async) end; one request at a time.
pub struct Client {
    fd: AsyncFd<OwnedFd>,
    lock: Mutex<()>,
}

impl Client {
    async fn recv(&self) -> Result<(String, Vec<OwnedFd>), ControlError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(ControlError::Io)?;
            match guard.try_io(|fd| {
                recv(fd.as_raw_fd(), MsgFlags::MSG_DONTWAIT, MAX_MESSAGE).map_err(io::Error::from)
            }) {
                Ok(Ok((text, _))) if text.is_empty() => return Err(ControlError::Gone),
                Ok(Ok(m)) => return Ok(m),
                Ok(Err(e)) => return Err(ControlError::Io(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn answer(
        text: String,
        mut fds: Vec<OwnedFd>,
        want: usize,
    ) -> Result<Vec<OwnedFd>, ControlError> {
        if let Some(msg) = text.strip_prefix("error ") {
            return Err(ControlError::Helper(msg.into()));
        }
        if fds.len() != want {
            return Err(ControlError::Helper(format!(
                "unexpected answer {text:?} with {} fds",
                fds.len()
            )));
        }
        fds.truncate(want);
        Ok(fds)
    }

    /// Sends one message (no fds) to the helper.
    async fn send(&self, text: &str) -> Result<(), ControlError> {
        loop {
            let mut guard = self.fd.writable().await.map_err(ControlError::Io)?;
            match guard.try_io(|fd| send(fd.as_raw_fd(), text, &[]).map_err(io::Error::from)) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                    return Err(ControlError::Gone)
                }
                Ok(Err(e)) => return Err(ControlError::Io(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends the helper to the sandbox whose init is `pid`, then waits for its listeners
    /// (or why it failed).
    pub async fn join(&self, pid: u32, within: Duration) -> Result<Ready, ControlError> {
        self.send(&format!("join {pid}")).await?;
        self.ready(within).await
    }

    /// Waits for the helper's first message: its listeners, or why it failed.
    async fn ready(&self, within: Duration) -> Result<Ready, ControlError> {
        let (text, fds) = tokio::time::timeout(within, self.recv())
            .await
            .map_err(|_| ControlError::Timeout(within))??;
        if let Some(msg) = text.strip_prefix("error ") {
            return Err(ControlError::Helper(msg.into()));
        }
        Ready::from_message(&text, fds)
    }

    /// A UDP socket inside the sandbox bound to `local` and connected to `peer`.
    pub async fn udp_reply(
        &self,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Result<OwnedFd, ControlError> {
        self.request(format!("udp {local} {peer}")).await
    }

    /// A TCP or UDP socket inside the sandbox connected to its 127.0.0.1:`port`.
    pub async fn connect(&self, udp: bool, port: u16) -> Result<OwnedFd, ControlError> {
        let kind = if udp { "udp" } else { "tcp" };
        self.request(format!("connect {kind} {port}")).await
    }

    /// Replaces the sandbox's verdict rules.
    pub async fn set_rules(&self, rules: &[super::judge::Rule]) -> Result<(), ControlError> {
        let text = format!("rules\n{}", super::judge::Rule::encode(rules));
        self.exchange(text, 0).await.map(drop)
    }

    async fn request(&self, text: String) -> Result<OwnedFd, ControlError> {
        let mut fds = self.exchange(text, 1).await?;
        fds.pop().ok_or(ControlError::Gone)
    }

    /// One request and its answer, which must carry `want` fds.
    async fn exchange(&self, text: String, want: usize) -> Result<Vec<OwnedFd>, ControlError> {
        let _one = self.lock.lock().await;
        self.send(&text).await?;
        let within = Duration::from_secs(5);
        let (text, fds) = tokio::time::timeout(within, self.recv())
            .await
            .map_err(|_| ControlError::Timeout(within))??;
        Self::answer(text, fds, want)
    }
}

/// A running helper: the process and its control socket.
pub struct Spawned {
    pub child: tokio::process::Child,
    pub client: Client,
}

/// Starts `exe netns-helper` with its end of a fresh control socket as fd 3; it waits
/// for [`Client::join`].
pub fn spawn(exe: &Path) -> Result<Spawned, ControlError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|e| ControlError::Spawn(e.into()))?;
    let theirs_raw = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(exe);
    // Named for what it is in `ps` (it is spawned before it knows its sandbox).
    cmd.arg0("sandboxd: netns helper")
        .arg(super::HELPER_ARG)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close_range) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The helper blocks on this socket: make it blocking again, then fd 3.
            let flags = libc::fcntl(theirs_raw, libc::F_GETFL);
            libc::fcntl(theirs_raw, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            if theirs_raw == super::CONTROL_FD {
                libc::fcntl(theirs_raw, libc::F_SETFD, 0);
            } else if libc::dup2(theirs_raw, super::CONTROL_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Nothing else of the daemon's: it lives as long as its sandbox.
            crate::fds::cloexec_above(super::CONTROL_FD)
        });
    }
    let child = cmd.spawn().map_err(ControlError::Spawn)?;
    drop(theirs);
    // SAFETY: an OwnedFd always reports the same, open fd; it lives inside the AsyncFd.
    let fd = unsafe { AsyncFd::register(ours) }.map_err(|e| ControlError::Io(e.into()))?;
    Ok(Spawned {
        child,
        client: Client {
            fd,
            lock: Mutex::new(()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        assert!(matches!(
            Request::parse("udp 203.0.113.5:7 10.89.0.2:4000"),
            Some(Request::UdpReply { .. })
        ));
        assert!(Request::parse("udp [2001:db8::1]:7 [fd5a:5bd0::2]:4000").is_some());
        for bad in [
            "",
            "udp",
            "udp 1.2.3.4:5",
            "udp a b",
            "udp 1.2.3.4:5 1.2.3.4:6 x",
            "tcp 1.2.3.4:5 1.2.3.4:6",
        ] {
            assert!(Request::parse(bad).is_none(), "{bad:?}");
        }
    }
}
