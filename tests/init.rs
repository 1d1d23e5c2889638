//! sandbox-init as a process: exit status, signal forwarding, zombie reaping, idling.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INIT: &str = env!("CARGO_BIN_EXE_sandbox-init");

fn term(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            t0.elapsed() < limit,
            "sandbox-init did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exits_with_the_commands_status() {
    let s = Command::new(INIT)
        .args(["--", "sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(s.code(), Some(7));
    let s = Command::new(INIT)
        .args(["--", "/nonexistent/program"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(s.code(), Some(127));
}

#[test]
fn forwards_sigterm_to_the_command() {
    let mut child = Command::new(INIT)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; while :; do sleep 0.05; done",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    term(child.id());
    assert_eq!(
        wait_with_deadline(&mut child, Duration::from_secs(5)).code(),
        Some(42)
    );
}

#[test]
fn the_command_starts_with_no_blocked_signals() {
    // `sleep` installs no handler: it dies of SIGTERM only if init did not leave it blocked.
    let mut child = Command::new(INIT)
        .args(["--", "sleep", "1000"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    term(child.id());
    assert_eq!(
        wait_with_deadline(&mut child, Duration::from_secs(5)).code(),
        Some(128 + 15)
    );
}

#[test]
fn reaps_orphans() {
    // The inner shell exits at once, orphaning `sleep 0.1`; init must reap it when it dies.
    let mut child = Command::new(INIT)
        .args(["--", "sh", "-c", "sh -c 'sleep 0.1 &'; sleep 1"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let init = child.id().to_string();
    let zombies = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            rest.first() == Some(&"Z") && rest.get(1) == Some(&init.as_str())
        })
        .count();
    assert_eq!(zombies, 0, "sandbox-init left zombies");
    assert_eq!(
        wait_with_deadline(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn idles_until_stopped() {
    let mut child = Command::new(INIT).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "idle init exited on its own"
    );
    term(child.id());
    assert_eq!(
        wait_with_deadline(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

mod channel {
    //! The exec channel, served by sandbox-init as a plain process (no namespaces, no root):
    //! requests, started/exit replies, a pty, a program that cannot run, and a main command
    //! that never sees the channel.

    use std::io::Read;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::Duration;

    use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
    use sandboxd::init::channel::{Reply, Request, Stage};
    use sandboxd::seqpacket;

    use super::{term, wait_with_deadline, INIT};

    fn init_with_channel(command: &[&str]) -> (std::process::Child, OwnedFd) {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let raw = theirs.as_raw_fd();
        let mut cmd = Command::new(INIT);
        cmd.arg("--channel").args(command);
        // SAFETY: dup2 only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(theirs);
        (child, ours)
    }

    fn recv(fd: &OwnedFd) -> (Reply, Vec<OwnedFd>) {
        // Bounded: a missing answer fails the test instead of hanging it.
        let mut poll = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(fd),
            nix::poll::PollFlags::POLLIN,
        )];
        let n = nix::poll::poll(&mut poll, nix::poll::PollTimeout::from(5000u16)).unwrap();
        assert_eq!(n, 1, "no answer from sandbox-init within 5 s");
        let mut buf = [0u8; 512];
        let msg = seqpacket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        let reply = Reply::decode(&buf[..msg.len])
            .unwrap_or_else(|| panic!("bad reply {:?}", &buf[..msg.len]));
        (reply, msg.fds)
    }

    fn request(id: u32, pty: bool, argv: &[&str]) -> Vec<u8> {
        Request {
            id,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pty,
            cwd: Some("/tmp".into()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec!["CHANNEL_TEST=yes".into()],
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn starts_processes_reports_exits_and_failures() {
        let (mut init, ch) = init_with_channel(&[]);
        // stdio: /dev/null in, a pipe out, the same pipe for errors.
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let fds = [null.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()];
        let req = request(1, false, &["sh", "-c", "echo $CHANNEL_TEST $PWD; exit 3"]);
        seqpacket::send(ch.as_raw_fd(), &req, &fds).unwrap();
        drop(out_w);
        let (reply, got) = recv(&ch);
        assert_eq!(reply, Reply::Started(1));
        assert_eq!(got.len(), 1, "a pidfd comes with the start");
        let mut text = String::new();
        std::fs::File::from(out_r)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "yes /tmp\n");
        assert_eq!(
            recv(&ch).0,
            Reply::Exit {
                id: 1,
                status: 3 << 8
            }
        );

        // A program that does not exist: failed with ENOENT, no exit report.
        let req = request(2, false, &["/nonexistent/program"]);
        seqpacket::send(ch.as_raw_fd(), &req, &fds[..1].repeat(3)).unwrap();
        assert_eq!(
            recv(&ch).0,
            Reply::Failed {
                id: 2,
                errno: libc::ENOENT,
                stage: Stage::Exec,
            }
        );
        // A working directory that does not exist is told apart from a missing program.
        let mut req = Request::decode(&request(4, false, &["true"])).unwrap();
        req.cwd = Some("/nonexistent/dir".into());
        seqpacket::send(ch.as_raw_fd(), &req.encode().unwrap(), &fds[..1].repeat(3)).unwrap();
        assert_eq!(
            recv(&ch).0,
            Reply::Failed {
                id: 4,
                errno: libc::ENOENT,
                stage: Stage::Cwd,
            }
        );

        // A pty of its own: the master comes back, the process sees a terminal.
        let req = request(3, true, &["sh", "-c", "test -t 0 && test -t 1 && echo tty"]);
        seqpacket::send(ch.as_raw_fd(), &req, &[]).unwrap();
        let (reply, mut got) = recv(&ch);
        assert_eq!(reply, Reply::Started(3));
        assert_eq!(got.len(), 2, "a pidfd and the pty master");
        let master = std::fs::File::from(got.pop().unwrap());
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        let mut reader = &master;
        while !String::from_utf8_lossy(&seen).contains("tty") {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        assert!(String::from_utf8_lossy(&seen).contains("tty"), "{seen:?}");
        assert_eq!(recv(&ch).0, Reply::Exit { id: 3, status: 0 });

        // Garbage from the daemon is ignored; the channel keeps working.
        seqpacket::send(ch.as_raw_fd(), b"\xff\xfe garbage", &[]).unwrap();
        let req = request(4, false, &["true"]);
        seqpacket::send(ch.as_raw_fd(), &req, &fds[..1].repeat(3)).unwrap();
        assert_eq!(recv(&ch).0, Reply::Started(4));
        assert_eq!(recv(&ch).0, Reply::Exit { id: 4, status: 0 });

        term(init.id());
        assert_eq!(
            wait_with_deadline(&mut init, Duration::from_secs(5)).code(),
            Some(0)
        );
    }

    #[test]
    fn the_main_command_never_inherits_the_channel() {
        let (mut init, _ch) = init_with_channel(&[
            "--",
            "sh",
            "-c",
            "if [ -e /proc/$$/fd/3 ]; then exit 9; else exit 4; fi",
        ]);
        let status = wait_with_deadline(&mut init, Duration::from_secs(5));
        assert_eq!(status.code(), Some(4), "fd 3 leaked into the command");
    }
}

/// The exec shim (`runc exec` runs it): one line and a shell's status for a missing
/// program (127), a non-executable one (126) or a missing directory (1); else the program.
#[test]
fn the_exec_shim_says_why_a_command_cannot_run() {
    let shim = |args: &[&str]| {
        std::process::Command::new(INIT)
            .arg("--exec")
            .args(args)
            .output()
            .unwrap()
    };
    let out = shim(&["--cwd", "/tmp", "--", "sh", "-c", "pwd"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/tmp\n");
    for (args, code, says) in [
        (
            &["--", "nosuchcmd"][..],
            127,
            "nosuchcmd: command not found",
        ),
        (
            &["--", "/etc/passwd"][..],
            126,
            "/etc/passwd: not executable: permission denied",
        ),
        (
            &["--cwd", "/nowhere", "--", "true"][..],
            1,
            "working directory /nowhere: no such file or directory",
        ),
    ] {
        let out = shim(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err, format!("sandbox-init: {says}\n"), "{args:?}");
    }
}
