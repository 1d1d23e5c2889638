//! The exec channel: a SOCK_SEQPACKET socket between the daemon and a sandbox's pid 1,
//! passed to `runc create` as fd 3. On request pid 1 forks, sets the child's stdio (the
//! daemon's descriptors, or a new pty of the sandbox's own), session, ids, capabilities,
//! directory and environment, and execs. The child inherits pid 1's namespaces, cgroup,
//! bounding set, no_new_privs, rlimits and seccomp filter, so it is exactly as confined as
//! a `runc exec` child, and it starts in the time of a fork and an exec.
//!
//! Nothing inside can reach the channel: pid 1 is not dumpable (its `/proc/1/fd` and
//! ptrace are refused to everything in the sandbox, which has no CAP_SYS_PTRACE), the
//! descriptor is close-on-exec, and it has no path or abstract name.
//!
//! ```text
//! daemon → init   "exec\0ID\0UID\0GID\0PTY\0CWD\0ARGC\0ARGV…\0ENV…"  + [stdin, stdout, stderr] unless PTY
//! init → daemon   "started ID"  + [pidfd] or [pidfd, pty master]
//!                 "failed ID ERRNO"            the program could not be run
//!                 "exit ID STATUS"             a wait(2) status
//! ```

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::MsgFlags;
use nix::unistd::Pid;

/// The channel's fd number in pid 1.
pub const CHANNEL_FD: RawFd = 3;
/// The argument that tells sandbox-init to serve the channel.
pub const CHANNEL_ARG: &str = "--channel";
/// Bound on one request (argv and environment); larger ones go through `runc exec`.
pub const MAX_REQUEST: usize = 64 * 1024;

/// One process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u32,
    pub uid: u32,
    pub gid: u32,
    /// A new pty inside instead of the three descriptors that come with the request.
    pub pty: bool,
    pub cwd: Option<String>,
    pub argv: Vec<String>,
    /// `NAME=value` entries over pid 1's environment.
    pub env: Vec<String>,
}

impl Request {
    /// The wire form; `None` when a field holds NUL (it cannot be sent).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut fields: Vec<String> = vec![
            "exec".into(),
            self.id.to_string(),
            self.uid.to_string(),
            self.gid.to_string(),
            u8::from(self.pty).to_string(),
            self.cwd.clone().unwrap_or_default(),
            self.argv.len().to_string(),
        ];
        fields.extend(self.argv.iter().cloned());
        fields.extend(self.env.iter().cloned());
        if fields.iter().any(|f| f.contains('\0')) {
            return None;
        }
        Some(fields.join("\0").into_bytes())
    }

    pub fn decode(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut f = text.split('\0');
        if f.next()? != "exec" {
            return None;
        }
        let id = f.next()?.parse().ok()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        let pty = match f.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let cwd = Some(f.next()?.to_string()).filter(|c| !c.is_empty());
        let argc: usize = f.next()?.parse().ok()?;
        let rest: Vec<String> = f.map(String::from).collect();
        if argc == 0 || rest.len() < argc {
            return None;
        }
        let (argv, env) = rest.split_at(argc);
        Some(Self {
            id,
            uid,
            gid,
            pty,
            cwd,
            argv: argv.to_vec(),
            env: env.to_vec(),
        })
    }
}

/// What pid 1 says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Started(u32),
    /// It could not be run: `errno` of the step that failed.
    Failed {
        id: u32,
        errno: i32,
        stage: Stage,
    },
    Exit {
        id: u32,
        status: i32,
    },
}

/// The step at which a process could not be started, so the caller can say which of its
/// inputs was wrong (a missing program is not a missing working directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Descriptors, pty, session, user: the sandbox's side.
    Setup,
    /// chdir(2) to the requested working directory.
    Cwd,
    /// execve(2) of the program.
    Exec,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Cwd => "cwd",
            Self::Exec => "exec",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Setup, Self::Cwd, Self::Exec]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

impl Reply {
    pub fn encode(&self) -> String {
        match self {
            Self::Started(id) => format!("started {id}"),
            Self::Failed { id, errno, stage } => {
                format!("failed {id} {errno} {}", stage.as_str())
            }
            Self::Exit { id, status } => format!("exit {id} {status}"),
        }
    }

    pub fn decode(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut w = text.split(' ');
        let reply = match (w.next()?, w.next()?.parse().ok()?, w.next()) {
            ("started", id, None) => Self::Started(id),
            ("failed", id, Some(e)) => Self::Failed {
                id,
                errno: e.parse().ok()?,
                stage: Stage::parse(w.next()?)?,
            },
            ("exit", id, Some(s)) => Self::Exit {
                id,
                status: s.parse().ok()?,
            },
            _ => return None,
        };
        w.next().is_none().then_some(reply)
    }
}

/// An I/O error as a lowercase description without the "(os error N)" suffix.
pub fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::Error::from_raw(n).desc().to_lowercase(),
        None => e.to_string(),
    }
}

/// Pid 1's end: serves requests, reports exits of the processes it started.
pub struct Server {
    fd: OwnedFd,
    children: HashMap<Pid, u32>,
    fault: Option<String>,
}

impl Server {
    /// The channel at [`CHANNEL_FD`] when it is a socket (a sandbox started without one,
    /// e.g. by plain `runc run` of the same spec, has none). Makes pid 1 non-dumpable and
    /// the channel close-on-exec.
    pub fn open() -> Option<Self> {
        let st = nix::sys::stat::fstat(CHANNEL_FD).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return None;
        }
        // SAFETY: fd 3 is a socket this process was started with and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) };
        // SAFETY: plain fcntl/prctl calls on our own fd and process.
        unsafe {
            libc::fcntl(CHANNEL_FD, libc::F_SETFD, libc::FD_CLOEXEC);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        Some(Self {
            fd,
            children: HashMap::new(),
            // A fault hook for the tests of a misbehaving channel (only this sandbox's).
            fault: std::env::var("SANDBOXD_INIT_FAULT").ok(),
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn reply(&self, reply: Reply, fds: &[RawFd]) {
        let _ = crate::seqpacket::send(self.raw(), reply.encode().as_bytes(), fds);
    }

    /// Handles one message; false when the daemon has gone (the channel is then closed).
    pub fn handle(&mut self) -> bool {
        let mut buf = vec![0u8; MAX_REQUEST];
        let msg = match crate::seqpacket::recv(self.raw(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(m) if m.len == 0 && m.fds.is_empty() => return false,
            Ok(m) => m,
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => return true,
            Err(_) => return false,
        };
        let Some(req) = (!msg.truncated)
            .then(|| Request::decode(&buf[..msg.len]))
            .flatten()
        else {
            return true;
        };
        if let Some(fault) = self.fault.take() {
            return self.misbehave(&fault);
        }
        match spawn(&req, msg.fds) {
            Ok((pid, pidfd, master)) => {
                self.children.insert(pid, req.id);
                let mut fds = vec![pidfd.as_raw_fd()];
                fds.extend(master.as_ref().map(|m| m.as_raw_fd()));
                self.reply(Reply::Started(req.id), &fds);
            }
            Err((stage, errno)) => self.reply(
                Reply::Failed {
                    id: req.id,
                    errno: errno as i32,
                    stage,
                },
                &[],
            ),
        }
        true
    }

    /// The test hook: garbage, or a flood of messages, instead of an answer.
    fn misbehave(&self, how: &str) -> bool {
        match how {
            "flood" => {
                for i in 0..100_000u32 {
                    let text = format!("exit {i} 0");
                    if crate::seqpacket::send(self.raw(), text.as_bytes(), &[]).is_err() {
                        break;
                    }
                }
            }
            _ => {
                let _ = crate::seqpacket::send(self.raw(), &[0xff; 300], &[]);
            }
        }
        true
    }

    /// Reports `pid`'s end if it was one of ours; true when it was.
    pub fn exited(&mut self, pid: Pid, status: i32) -> bool {
        match self.children.remove(&pid) {
            Some(id) => {
                self.reply(Reply::Exit { id, status }, &[]);
                true
            }
            None => false,
        }
    }
}

/// A new pty of the sandbox's own devpts: the master (for the daemon) and the slave path.
fn open_pty() -> nix::Result<(OwnedFd, CString)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let name = CString::new(name).map_err(|_| nix::Error::EINVAL)?;
    // SAFETY: PtyMaster owns an open fd; ownership moves into the OwnedFd.
    let fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    Ok((fd, name))
}

/// Forks and execs `req`; the child's pid, a pidfd of it and the pty master, or the errno
/// the program could not be run with (the child reports it through a close-on-exec pipe).
fn spawn(
    req: &Request,
    fds: Vec<OwnedFd>,
) -> Result<(Pid, OwnedFd, Option<OwnedFd>), (Stage, nix::Error)> {
    let setup = |e| (Stage::Setup, e);
    if !req.pty && fds.len() != 3 {
        return Err(setup(nix::Error::EBADF));
    }
    let pty = if req.pty {
        Some(open_pty().map_err(setup)?)
    } else {
        None
    };
    let argv: Vec<CString> = req
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| setup(nix::Error::EINVAL))?;
    let cwd = req
        .cwd
        .as_deref()
        .map(CString::new)
        .transpose()
        .map_err(|_| (Stage::Cwd, nix::Error::EINVAL))?;
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(setup)?;
    // SAFETY: pid 1 is single-threaded, so the child may do anything the parent could.
    match unsafe { nix::unistd::fork() }.map_err(setup)? {
        nix::unistd::ForkResult::Child => {
            let (stage, errno) =
                child(req, &fds, pty.as_ref().map(|(_, n)| n), cwd.as_ref(), &argv);
            let mut report = [0u8; 8];
            report[..4].copy_from_slice(&(stage as i32).to_ne_bytes());
            report[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
            let _ = nix::unistd::write(&report_w, &report);
            // SAFETY: leave the child at once, without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(report_w);
            drop(fds);
            let mut report = [0u8; 8];
            let n = loop {
                match nix::unistd::read(report_r.as_raw_fd(), &mut report) {
                    Err(nix::Error::EINTR) => continue,
                    other => break other.unwrap_or(0),
                }
            };
            if n == 8 {
                // The child has exited; pid 1's reaping collects it.
                let stage = match i32::from_ne_bytes([report[0], report[1], report[2], report[3]]) {
                    s if s == Stage::Cwd as i32 => Stage::Cwd,
                    s if s == Stage::Exec as i32 => Stage::Exec,
                    _ => Stage::Setup,
                };
                let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
                return Err((stage, nix::Error::from_raw(errno)));
            }
            // SAFETY: pidfd_open(2) on our own child, no flags.
            let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
            if raw < 0 {
                return Err(setup(nix::Error::last()));
            }
            // SAFETY: the kernel just returned this new fd.
            let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
            Ok((child, pidfd, pty.map(|(m, _)| m)))
        }
    }
}

/// In the child: the process `req` describes, as `runc exec` would set it up. Returns
/// only on failure, with the errno.
fn child(
    req: &Request,
    fds: &[OwnedFd],
    pty: Option<&CString>,
    cwd: Option<&CString>,
    argv: &[CString],
) -> (Stage, nix::Error) {
    let set_up = || -> nix::Result<()> {
        use nix::sys::signal::{SigSet, SigmaskHow};
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        nix::unistd::setsid()?;
        match pty {
            Some(slave) => {
                let fd = nix::fcntl::open(
                    slave.as_c_str(),
                    nix::fcntl::OFlag::O_RDWR,
                    nix::sys::stat::Mode::empty(),
                )?;
                // SAFETY: TIOCSCTTY on the slave we just opened, in our new session.
                if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
                    return Err(nix::Error::last());
                }
                for target in 0..3 {
                    nix::unistd::dup2(fd, target)?;
                }
                if fd > 2 {
                    let _ = nix::unistd::close(fd);
                }
            }
            None => {
                for (target, fd) in fds.iter().enumerate() {
                    nix::unistd::dup2(fd.as_raw_fd(), target as RawFd)?;
                }
            }
        }
        become_user(req.uid, req.gid)
    };
    if let Err(e) = set_up() {
        return (Stage::Setup, e);
    }
    if let Some(dir) = cwd {
        if let Err(e) = nix::unistd::chdir(dir.as_c_str()) {
            return (Stage::Cwd, e);
        }
    }
    for e in &req.env {
        if let Some((k, v)) = e.split_once('=') {
            std::env::set_var(k, v);
        }
    }
    match nix::unistd::execvp(&argv[0], argv) {
        Err(e) => (Stage::Exec, e),
        Ok(never) => match never {},
    }
}

/// Switches to `uid`/`gid` keeping pid 1's capability sets, ambient set included, as runc
/// gives a process the spec's capabilities whatever its user (setuid alone would clear
/// them, and a non-root program keeps across execve only what is ambient).
pub(crate) fn become_user(uid: u32, gid: u32) -> nix::Result<()> {
    if uid == 0 && gid == 0 {
        return Ok(());
    }
    let caps = capget()?;
    let mut ambient = [false; 64];
    for (cap, set) in ambient.iter_mut().enumerate() {
        // SAFETY: prctl with plain integers; -1 (EINVAL) past the last capability.
        *set = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_IS_SET,
                cap as libc::c_ulong,
                0,
                0,
            )
        } == 1;
    }
    // SAFETY: prctl with plain integers.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
        return Err(nix::Error::last());
    }
    let (g, u) = (
        nix::unistd::Gid::from_raw(gid),
        nix::unistd::Uid::from_raw(uid),
    );
    nix::unistd::setresgid(g, g, g)?;
    nix::unistd::setresuid(u, u, u)?;
    // SAFETY: prctl with plain integers.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    capset(&caps)?;
    for (cap, _) in ambient.iter().enumerate().filter(|(_, set)| **set) {
        // SAFETY: prctl with plain integers; the capability is permitted and inheritable.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if r < 0 {
            return Err(nix::Error::last());
        }
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn capget() -> nix::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with a v3 header and room for its two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> nix::Result<()> {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: capset(2) with a v3 header and its two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_parse_strictly() {
        let req = Request {
            id: 7,
            uid: 1000,
            gid: 1000,
            pty: false,
            cwd: Some("/tmp".into()),
            argv: vec!["sh".into(), "-c".into(), "echo a b".into()],
            env: vec!["A=1".into(), "EMPTY=".into()],
        };
        assert_eq!(Request::decode(&req.encode().unwrap()), Some(req.clone()));
        let bare = Request {
            cwd: None,
            env: vec![],
            pty: true,
            ..req.clone()
        };
        assert_eq!(Request::decode(&bare.encode().unwrap()), Some(bare));
        let nul = Request {
            argv: vec!["a\0b".into()],
            ..req
        };
        assert!(nul.encode().is_none());
        for bad in [
            &b""[..],
            b"exec",
            b"exec\x001\x000\x000\x002\x00\x001\x00sh",
            b"exec\x001\x000\x000\x000\x00\x000",
            b"exec\x001\x000\x000\x000\x00\x003\x00sh",
            b"run\x001\x000\x000\x000\x00\x001\x00sh",
            &[0xff; 20],
        ] {
            assert!(Request::decode(bad).is_none(), "{bad:?}");
        }
        for r in [
            Reply::Started(3),
            Reply::Failed {
                id: 4,
                errno: 2,
                stage: Stage::Cwd,
            },
            Reply::Exit { id: 5, status: 256 },
        ] {
            assert_eq!(Reply::decode(r.encode().as_bytes()), Some(r));
        }
        for bad in [
            "",
            "started",
            "started x",
            "exit 1",
            "exit 1 2 3",
            "failed 1 x",
        ] {
            assert!(Reply::decode(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }
}
