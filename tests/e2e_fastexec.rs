//! End to end: exec through the sandbox's pid 1. Its processes are exactly as confined as
//! `runc exec`'s; nothing inside can reach the channel; a daemon restart falls back to
//! runc exec and says so; a pid 1 that garbles or floods its channel harms only itself.
//! Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const NAME: &str = "e2e-fast";

/// What must be the same for a process however it was started: its seven namespaces,
/// ids, groups, capability sets, no_new_privs and seccomp mode.
const IDENTITY: &str = "for f in cgroup ipc mnt net pid user uts; do echo $f $(readlink /proc/self/ns/$f); done; \
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status";

/// Its cgroup and rlimits, which must be pid 1's: rootless `runc exec` cannot move a
/// process into the sandbox's cgroup (it stays in the caller's), and hands it the soft
/// RLIMIT_NOFILE that Go's runtime raised in runc rather than the spec's.
const PLACE: &str = "cat /proc/$1/cgroup; cat /proc/$1/limits";

/// `runc exec` into sandbox `name` as its daemon would run it, as the test user.
fn runc_exec(s: &Session, name: &str, user: &str, cmd: &str) -> String {
    let record = std::fs::read_to_string(s.runtime_dir.join("sandboxd/userns.pid")).unwrap();
    let holder = record.split_whitespace().next().unwrap().to_string();
    let root = s.runc_root();
    s.user_ok(&[
        "nsenter",
        &format!("--user=/proc/{holder}/ns/user"),
        &format!("--mount=/proc/{holder}/ns/mnt"),
        "--",
        "runc",
        "--root",
        root.to_str().unwrap(),
        "exec",
        "--user",
        user,
        name,
        "sh",
        "-c",
        cmd,
    ])
}

#[test]
fn a_process_started_by_pid_1_is_confined_exactly_like_runc_execs() {
    let _g = lock();
    let s = session();
    s.ready();
    s.start_host_root(NAME, "");
    for (user, ids) in [("root", "0:0"), ("nobody", "65534:65534")] {
        let fast = s.ctl_ok(&["exec", NAME, "--user", user, "--", "sh", "-c", IDENTITY]);
        let runc = runc_exec(s, NAME, ids, IDENTITY);
        assert_eq!(fast, runc, "{user}: the two paths differ");
        let place = |pid: &str| {
            s.ctl_ok(&[
                "exec", NAME, "--user", user, "--", "sh", "-c", PLACE, "sh", pid,
            ])
        };
        assert_eq!(place("self"), place("1"), "{user}: not where pid 1 is");
        assert!(fast.contains("Seccomp:\t2"), "{fast}");
        assert!(fast.contains("NoNewPrivs:\t1"), "{fast}");
    }
    assert_exec_path(s, NAME, "init channel");
    s.finish(NAME);
}

#[test]
fn nothing_inside_reaches_pid_1_or_its_channel() {
    let _g = lock();
    let s = session();
    s.ready();
    s.start_host_root("e2e-fast-hostile", "");
    let code = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def show(label, r):
    print(label, "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()])
try:
    os.open("/proc/1/fd/3", os.O_RDWR)
    print("open-fd3 ok")
except OSError as e:
    print("open-fd3", errno.errorcode[e.errno])
try:
    os.readlink("/proc/1/fd/3")
    print("fd3 ok")
except OSError as e:
    print("fd3", errno.errorcode[e.errno])
show("ptrace", libc.syscall(101, 16, 1, 0, 0))  # PTRACE_ATTACH
pidfd = libc.syscall(434, 1, 0)  # pidfd_open: allowed
show("pidfd_open", pidfd)
show("pidfd_getfd", libc.syscall(438, pidfd, 3, 0))
os.kill(1, 9)  # pid 1 of a namespace ignores it from inside
print("after-kill ok")
"#;
    let out = s.ctl_ok(&[
        "exec",
        "e2e-fast-hostile",
        "--user",
        "root",
        "--",
        "python3",
        "-c",
        code,
    ]);
    for line in [
        "open-fd3 EACCES",
        "fd3 EACCES",
        "ptrace EPERM",
        "pidfd_open ok",
        "pidfd_getfd EPERM",
        "after-kill ok",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} not in:\n{out}");
    }
    // pid 1 and its channel are unharmed.
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-fast-hostile", "--", "echo", "still"]),
        "still\n"
    );
    assert_exec_path(s, "e2e-fast-hostile", "init channel");
    s.finish("e2e-fast-hostile");
}

#[test]
fn after_a_daemon_crash_exec_falls_back_to_runc_exec_and_says_so() {
    let _g = lock();
    let s = session();
    s.ready();
    s.start_host_root("e2e-fast-adopt", "");
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-fast-adopt", "--", "echo", "a"]),
        "a\n"
    );
    s.crash_daemon();
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-fast-adopt", "--", "echo", "b"]),
        "b\n"
    );
    let log = std::fs::read_to_string(s.daemon_log()).unwrap();
    let tail: Vec<&str> = log.lines().rev().take(200).collect();
    assert!(
        tail.iter()
            .any(|l| l.contains("e2e-fast-adopt") && l.contains("using runc exec")),
        "no announced fallback in the log"
    );
    assert!(tail
        .iter()
        .any(|l| l.contains("e2e-fast-adopt") && l.contains("via=\"runc exec\"")));
    s.finish("e2e-fast-adopt");
}

#[test]
fn a_pid_1_that_garbles_or_floods_its_channel_harms_only_itself() {
    let _g = lock();
    let s = session();
    s.ready();
    s.start_host_root("e2e-fast-calm", "");
    for fault in ["garbage", "flood"] {
        let name = format!("e2e-fast-{fault}");
        s.start_host_root(
            &name,
            &format!("[process]\nenv = {{ SANDBOXD_INIT_FAULT = \"{fault}\" }}\n"),
        );
        let latency = bus_latency(4);
        // The first request meets the fault: it fails, and the channel is closed.
        let first = s.ctl(&["exec", &name, "--", "echo", "first"]);
        assert!(!first.status.success(), "{fault}: {}", stdout(&first));
        // Meanwhile every other sandbox execs as before.
        for _ in 0..5 {
            assert_eq!(
                s.ctl_ok(&["exec", "e2e-fast-calm", "--", "echo", "ok"]),
                "ok\n"
            );
        }
        // The faulty one goes on through runc exec.
        assert_eq!(
            s.ctl_ok(&["exec", &name, "--", "echo", "second"]),
            "second\n"
        );
        let (worst, calls) = latency_result(latency);
        assert!(
            calls >= 5 && worst < 200,
            "{fault}: D-Bus {calls} calls, slowest {worst} ms"
        );
        assert_eq!(s.status(&name).unwrap()["state"], "running");
        s.finish(&name);
    }
    assert_exec_path(s, "e2e-fast-calm", "init channel");
    s.finish("e2e-fast-calm");
}
