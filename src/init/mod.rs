//! sandbox-init: pid 1 of every sandbox. It runs the profile's command (or idles when
//! there is none), reaps every process re-parented to it, forwards SIGTERM, SIGINT and
//! SIGHUP to everything else in the sandbox, and exits with the main command's status.
//!
//! It is linked statically so that it runs in a root file system without any libc, and it
//! stays single-threaded: signals are blocked and taken synchronously with sigwait(3),
//! so there is no handler and no async-signal-safety to worry about.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals passed on to the sandbox's processes.
const FORWARDED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// Runs init with `args` (without argv[0]): empty, or `--` followed by the command.
/// Returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let command: Vec<OsString> = match args.split_first() {
        None => Vec::new(),
        Some((dd, rest)) if dd == "--" => rest.to_vec(),
        Some(_) => {
            eprintln!("usage: sandbox-init [-- COMMAND [ARG…]]");
            return 2;
        }
    };

    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    if let Err(e) = set.thread_block() {
        eprintln!("sandbox-init: cannot block signals: {e}");
        return 1;
    }
    // Outside a pid namespace (tests, or a future exec mode) orphans must still come to us.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let main = match command.split_first() {
        None => None,
        Some((prog, rest)) => match spawn(prog, rest) {
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
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGCHLD {
            if let Some(code) = reap(main) {
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

/// Starts the main command with an empty signal mask: a mask survives exec(2), and a
/// command that inherited ours would never see SIGTERM.
fn spawn(prog: &OsString, args: &[OsString]) -> std::io::Result<std::process::Child> {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    // SAFETY: the closure runs between fork and exec and only calls sigprocmask(2), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| SigSet::all().thread_unblock().map_err(std::io::Error::from));
    }
    cmd.spawn()
}

/// Reaps every exited child; returns the exit code once the main command is among them.
fn reap(main: Option<Pid>) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if Some(pid) == main => result = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if Some(pid) == main => {
                result = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(_) => {}
        }
    }
}
