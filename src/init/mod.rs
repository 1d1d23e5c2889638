//! sandbox-init: pid 1 of every sandbox. It runs the profile's command (or idles when
//! there is none), reaps every process re-parented to it, forwards SIGTERM, SIGINT and
//! SIGHUP to everything else in the sandbox, exits with the main command's status, and
//! starts the processes the daemon asks for over its exec channel ([`channel`]).
//!
//! It is linked statically so that it runs in a root file system without any libc, and it
//! stays single-threaded: signals are blocked and read from a signalfd in one poll loop
//! with the channel, so there is no handler and no async-signal-safety to worry about.

pub mod channel;

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The argument naming the user (`UID:GID`) the command runs as, when pid 1 is root.
pub const USER_ARG: &str = "--user";

/// Signals passed on to the sandbox's processes.
const FORWARDED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// `UID:GID`.
fn parse_user(raw: &OsString) -> Option<(u32, u32)> {
    let (u, g) = raw.to_str()?.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// What sandbox-init was asked to do.
struct Args {
    /// Serve the exec channel at fd 3.
    serve: bool,
    /// Run the command as this `(uid, gid)` (pid 1 itself stays root).
    user: Option<(u32, u32)>,
    command: Vec<OsString>,
}

const USAGE: &str = "usage: sandbox-init [--channel] [--user UID:GID] [-- COMMAND [ARG…]]\n       sandbox-init --exec [--cwd DIR] -- COMMAND [ARG…]";

/// `[--channel] [--user UID:GID] [-- COMMAND…]`, in that order.
fn parse(args: Vec<OsString>) -> Option<Args> {
    let (serve, args) = match args.split_first() {
        Some((c, rest)) if c == channel::CHANNEL_ARG => (true, rest.to_vec()),
        _ => (false, args),
    };
    let (user, args) = match args.split_first() {
        Some((u, rest)) if u == USER_ARG => {
            let (v, rest) = rest.split_first()?;
            (Some(parse_user(v)?), rest.to_vec())
        }
        _ => (None, args),
    };
    let command = match args.split_first() {
        None => Vec::new(),
        Some((dd, rest)) if dd == "--" => rest.to_vec(),
        Some(_) => return None,
    };
    Some(Args {
        serve,
        user,
        command,
    })
}

/// Blocks the signals pid 1 handles and returns a descriptor to read them from.
fn block_signals() -> Result<SignalFd, String> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("cannot read signals: {e}"))
}

/// The argument of the exec shim: `--exec [--cwd DIR] -- COMMAND…`.
pub const EXEC_ARG: &str = "--exec";

/// The exec shim `runc exec` starts instead of the command itself: it changes to the
/// working directory and execs, and when that fails says why in one line on the process's
/// own stderr, with a shell's status (127 not found, 126 not executable, 1 for the
/// directory). runc would print its own error there too, twice, and exit 1.
fn exec_shim(args: &[OsString]) -> i32 {
    let (cwd, rest) = match args.split_first() {
        Some((c, rest)) if c == "--cwd" => match rest.split_first() {
            Some((dir, rest)) => (Some(dir.clone()), rest),
            None => return 2,
        },
        _ => (None, args),
    };
    let Some((dd, command)) = rest.split_first().filter(|(dd, _)| *dd == "--") else {
        eprintln!("{USAGE}");
        return 2;
    };
    let _ = dd;
    let Some((prog, rest)) = command.split_first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    if let Some(dir) = &cwd {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!(
                "sandbox-init: working directory {}: {}",
                dir.to_string_lossy(),
                channel::describe(&e)
            );
            return 1;
        }
    }
    let e = Command::new(prog).args(rest).exec();
    let name = prog.to_string_lossy();
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => {
            eprintln!("sandbox-init: {name}: command not found");
            127
        }
        _ => {
            eprintln!(
                "sandbox-init: {name}: not executable: {}",
                channel::describe(&e)
            );
            126
        }
    }
}

/// Runs init with `args` (without argv[0]): `[--channel] [--user UID:GID] [-- COMMAND…]`,
/// or the exec shim (`--exec …`). Returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    if args.first().is_some_and(|a| a == EXEC_ARG) {
        return exec_shim(&args[1..]);
    }
    let Some(Args {
        serve,
        user,
        command,
    }) = parse(args)
    else {
        eprintln!("{USAGE}");
        return 2;
    };

    let signals = match block_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandbox-init: {e}");
            return 1;
        }
    };
    // Outside a pid namespace (tests, or a future exec mode) orphans must still come to us.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Before the command starts, so that it never inherits the channel.
    let mut server = if serve { channel::Server::open() } else { None };

    let main = match command.split_first() {
        None => None,
        Some((prog, rest)) => match spawn(prog, rest, user) {
            Ok(child) => Some(Pid::from_raw(child.id() as i32)),
            Err(e) => {
                eprintln!("sandbox-init: cannot run {}: {e}", prog.to_string_lossy());
                return if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
            }
        },
    };

    loop {
        let (sig_ready, chan_ready) = {
            // SAFETY: the channel's fd stays open while this borrow lives (the server is
            // only replaced after the poll).
            let chan = server
                .as_ref()
                .map(|s| unsafe { BorrowedFd::borrow_raw(s.raw()) });
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if let Some(c) = chan {
                fds.push(PollFd::new(c, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(_) => continue,
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if chan_ready && !server.as_mut().is_some_and(channel::Server::handle) {
            // The daemon went away: its successor uses `runc exec`.
            server = None;
        }
        if !sig_ready {
            continue;
        }
        let Ok(Some(info)) = signals.read_signal() else {
            continue;
        };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if sig == Signal::SIGCHLD {
            if let Some(code) = reap(main, &mut server) {
                return code;
            }
            continue;
        }
        match main {
            // Idle: a stop request ends the sandbox.
            None => return 0,
            // pid -1 from pid 1 of a namespace reaches every other process in it.
            Some(pid) => {
                let target = if nix::unistd::getpid().as_raw() == 1 {
                    Pid::from_raw(-1)
                } else {
                    pid
                };
                let _ = kill(target, sig);
            }
        }
    }
}

/// Starts the main command with an empty signal mask (a mask survives exec(2), and a
/// command that inherited ours would never see SIGTERM), as `user` when given.
fn spawn(
    prog: &OsString,
    args: &[OsString],
    user: Option<(u32, u32)>,
) -> std::io::Result<std::process::Child> {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    // SAFETY: the closure runs between fork and exec and only makes system calls
    // (sigprocmask, prctl, capget/capset, setres[ug]id), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            SigSet::all().thread_unblock()?;
            if let Some((uid, gid)) = user {
                channel::become_user(uid, gid)?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// The wait(2) status a [`WaitStatus`] stands for.
fn raw_status(st: &WaitStatus) -> Option<(Pid, i32)> {
    match *st {
        WaitStatus::Exited(pid, code) => Some((pid, (code & 0xff) << 8)),
        WaitStatus::Signaled(pid, sig, core) => {
            Some((pid, sig as i32 | if core { 0x80 } else { 0 }))
        }
        _ => None,
    }
}

/// Reaps every exited child, reporting those the channel started; returns the exit code
/// once the main command is among them.
fn reap(main: Option<Pid>, server: &mut Option<channel::Server>) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(st) => {
                let Some((pid, status)) = raw_status(&st) else {
                    continue;
                };
                if Some(pid) == main {
                    result = Some(crate::supervisor::exit_code(Some(status)));
                } else if let Some(s) = server.as_mut() {
                    s.exited(pid, status);
                }
            }
        }
    }
}
