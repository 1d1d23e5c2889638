//! End to end: a hostile sandbox. From inside, as root, each attempt below must fail, and
//! each test asserts how. The sandbox uses the host's /usr (for python3 and util-linux).
//! Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const NAME: &str = "e2e-hostile";

fn start(s: &Session) {
    s.ready();
    s.write_profile(NAME, "[rootfs]\nhost = true\n[network]\nmode = \"none\"\n");
    s.ctl_ok(&["start", NAME]);
}

fn finish(s: &Session) {
    s.ctl_ok(&["stop", NAME]);
    s.remove_profile(NAME);
}

/// Runs a python3 snippet inside as root; returns its stdout (it prints what happened).
fn py(s: &Session, code: &str) -> String {
    let out = s.ctl(&["exec", NAME, "--user", "root", "--", "python3", "-c", code]);
    assert!(out.status.success(), "{code}: {}", stderr(&out));
    stdout(&out)
}

/// Tries `op` and prints the errno name it failed with, or "ok".
const TRY: &str = r#"
import errno, os, sys
def attempt(label, op):
    try:
        op()
        print(label, "ok")
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, e.errno))
"#;

#[test]
fn kernel_interfaces_are_closed() {
    let _g = lock();
    let s = session();
    start(s);
    let daemon = s.daemon_pid();
    let out = py(
        s,
        &format!(
            "{TRY}
attempt('kcore', lambda: print('kcore bytes', len(open('/proc/kcore','rb').read(4096))))
attempt('sysrq', lambda: open('/proc/sysrq-trigger','w').write('h'))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def syscall_errno(nr, *args):
    r = libc.syscall(nr, *args)
    if r != 0:
        raise OSError(ctypes.get_errno(), 'syscall')
# finit_module(2) (313 on x86_64) of any file: needs CAP_SYS_MODULE in the host's namespace.
fd = os.open('/usr/bin/env', os.O_RDONLY)
attempt('module', lambda: syscall_errno(313, fd, b'', 0))
attempt('mknod', lambda: os.mknod('/tmp/sda', 0o600 | 0o060000, os.makedev(8, 0)))
attempt('mount-host-disk', lambda: syscall_errno(165, b'/dev/vda', b'/mnt', b'ext4', 0, None))
# PTRACE_SEIZE of the daemon's host pid: host processes do not exist in the sandbox's
# pid namespace.
attempt('ptrace-host', lambda: syscall_errno(101, 16, {daemon}, 0, 0))
print('nnp', [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0])
print('capeff', [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0])
"
        ),
    );
    let has = |line: &str| {
        assert!(
            out.lines().any(|l| l == line),
            "expected {line:?} in:\n{out}"
        );
    };
    let one_of = |label: &str, ok: &[&str]| {
        let got = out
            .lines()
            .find_map(|l| l.strip_prefix(label).map(str::trim))
            .unwrap_or("");
        assert!(
            ok.contains(&got),
            "{label} {got:?} is not one of {ok:?}:\n{out}"
        );
    };
    // Masked (/dev/null inside, reads nothing) or absent from this kernel.
    one_of("kcore ", &["ok", "ENOENT"]);
    assert!(
        !out.lines()
            .any(|l| l.starts_with("kcore bytes") && l != "kcore bytes 0"),
        "{out}"
    );
    // Read-only inside, or absent from this kernel.
    one_of("sysrq ", &["EROFS", "ENOENT"]);
    // No CAP_SYS_MODULE in the host's namespace (ENOSYS: this kernel has no modules).
    one_of("module ", &["EPERM", "ENOSYS"]);
    has("mknod EPERM");
    one_of("mount-host-disk ", &["ENOENT", "EPERM"]);
    has("ptrace-host ESRCH");
    has("nnp 1");
    // The kept capabilities, and none of SYS_ADMIN (bit 21), SYS_MODULE (16), NET_ADMIN
    // (12), NET_RAW (13), MKNOD (27), SYS_PTRACE (19).
    let capeff = out.lines().find_map(|l| l.strip_prefix("capeff ")).unwrap();
    let caps = u64::from_str_radix(capeff, 16).unwrap();
    for bit in [12, 13, 16, 19, 21, 27] {
        assert_eq!(
            caps & (1 << bit),
            0,
            "capability bit {bit} is effective: {capeff}"
        );
    }
    finish(s);
}

/// A setuid-root program gains nothing. The sandbox's own root file system is the one place
/// without `nosuid`, so a setuid copy of python3 there (owned by root inside) isolates
/// `no_new_privs`: run by user 1000 inside, its effective uid stays 1000.
#[test]
fn setuid_programs_gain_no_privileges() {
    let _g = lock();
    let s = session();
    s.ready();
    let tree = s.busybox_root_copy("e2e-suid-root");
    for (link, to) in [("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        std::os::unix::fs::symlink(to, tree.join(link)).unwrap();
    }
    std::fs::create_dir_all(tree.join("usr")).unwrap();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    std::fs::copy(&python, tree.join("bin/spython")).unwrap();
    s.chown(&tree);
    root(
        Command::new("chmod")
            .arg("4755")
            .arg(tree.join("bin/spython")),
    );
    s.write_profile(
        "e2e-suid",
        "[rootfs]\npath = \"~/e2e-suid-root\"\n[process]\ncommand = [\"sleep\", \"1000\"]\n\
         [network]\nmode = \"none\"\n[[mount]]\nsource = \"/usr\"\ndestination = \"/usr\"\nreadonly = true\n",
    );
    s.ctl_ok(&["start", "e2e-suid"]);
    let code = "import os, stat; st = os.stat('/bin/spython'); \
                print('mode', oct(st.st_mode), 'owner', st.st_uid); print('ids', os.getuid(), os.geteuid())";
    let out = s.ctl_ok(&[
        "exec",
        "e2e-suid",
        "--user",
        "1000",
        "--",
        "/bin/spython",
        "-c",
        code,
    ]);
    assert!(
        out.contains("mode 0o104755 owner 0"),
        "not a setuid-root program: {out}"
    );
    assert!(out.contains("ids 1000 1000"), "{out}");
    s.ctl_ok(&["stop", "e2e-suid"]);
    s.remove_profile("e2e-suid");
    let _ = std::fs::remove_dir_all(&tree);
}

#[test]
fn host_processes_and_sockets_are_out_of_reach() {
    let _g = lock();
    let s = session();
    start(s);
    let daemon = s.daemon_pid();
    // An abstract unix socket of the test user on the host: reachable only from the same
    // network namespace, which the sandbox does not share.
    let mut listener: Child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/user-session"))
        .args(["run", USER, "python3", "-c", "import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.bind('\\0sandboxd-e2e-abstract')\ns.listen()\ntime.sleep(30)"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A service on the host's loopback: the sandbox's loopback is its own.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    let out = py(
        s,
        &format!(
            "{TRY}
import socket
def connect(addr):
    c = socket.socket(socket.AF_UNIX)
    c.connect(addr)
attempt('abstract', lambda: connect('\\0sandboxd-e2e-abstract'))
attempt('session-bus', lambda: connect('{rt}/bus'))
attempt('system-bus', lambda: connect('/run/dbus/system_bus_socket'))
attempt('kill-daemon', lambda: os.kill({daemon}, 0))
attempt('host-loopback', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2))
print('links', sorted(os.listdir('/sys/class/net')))
print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
print('run-user', os.listdir('/run'))
",
            rt = s.runtime_dir.display()
        ),
    );
    let _ = listener.kill();
    let _ = listener.wait();
    let _ = Command::new("pkill")
        .args(["-u", USER, "-f", "sandboxd-e2e-abstract"])
        .status();
    assert!(out.contains("abstract ECONNREFUSED"), "{out}");
    assert!(out.contains("session-bus ENOENT"), "{out}");
    assert!(out.contains("system-bus ENOENT"), "{out}");
    assert!(out.contains("kill-daemon ESRCH"), "{out}");
    assert!(out.contains("host-loopback ECONNREFUSED"), "{out}");
    assert!(
        out.contains("links ['lo']"),
        "network.mode = none must leave only lo: {out}"
    );
    drop(service);
    // Only the sandbox's own processes: init, python (and its shell-less parent chain).
    let pids = out.lines().find_map(|l| l.strip_prefix("pids ")).unwrap();
    assert!(pids.starts_with("[1, "), "{pids}");
    assert!(
        pids.split(',').count() <= 4,
        "host processes visible: {pids}"
    );
    assert!(
        out.contains("run-user []"),
        "the private /run is not empty: {out}"
    );
    finish(s);
}

/// Host processes in the pid namespace of `leader` (a sandbox's pid 1).
fn processes_in(leader: u32) -> usize {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(want) = ns(&leader.to_string()) else {
        return 0;
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| ns(&e.file_name().to_string_lossy()).as_ref() == Some(&want))
        .count()
}

/// The daemon's start-up line about how limits are enforced: a systemd scope per sandbox
/// where the user manager has delegated controllers, else the rlimit fallback (these
/// machines: a cgroup hybrid whose v2 tree has none).
fn limits_enforcement(s: &Session) -> &'static str {
    let log = std::fs::read_to_string(s.daemon_log()).unwrap_or_default();
    if log.contains("enforced by a systemd scope per sandbox") {
        "scopes"
    } else {
        assert!(
            log.contains("limits.pids falls back to RLIMIT_NPROC")
                && log.contains("limits.memory to RLIMIT_DATA"),
            "the daemon did not say how it enforces limits:\n{log}"
        );
        "rlimits"
    }
}

/// Starts the hostile sandbox with `limits`; returns how they are enforced here.
fn start_limited(s: &Session, limits: &str) -> &'static str {
    let how = limits_enforcement(s);
    s.write_profile(
        NAME,
        &format!("[rootfs]\nhost = true\n[network]\nmode = \"none\"\n[limits]\n{limits}\n"),
    );
    s.ctl_ok(&["start", NAME]);
    how
}

/// Starts a bystander sandbox and a bus-latency probe; returns the probe.
fn bystander(s: &Session) -> Child {
    s.write_profile(
        "e2e-bystander",
        "[rootfs]\nhost = true\n[network]\nmode = \"none\"\n",
    );
    s.ctl_ok(&["start", "e2e-bystander"]);
    bus_latency(8)
}

/// The bystander still runs commands promptly, and no D-Bus call took 200 ms or more.
fn assert_responsive(s: &Session, latency: Child, during: &str) {
    let t = std::time::Instant::now();
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-bystander", "--", "/bin/echo", "alive"]),
        "alive\n"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "an exec in another sandbox took {:?} during {during}",
        t.elapsed()
    );
    let (worst, calls) = latency_result(latency);
    assert!(calls >= 20, "only {calls} bus calls during {during}");
    assert!(worst < 200, "a D-Bus call took {worst} ms during {during}");
    s.ctl_ok(&["stop", "e2e-bystander"]);
    s.remove_profile("e2e-bystander");
}

#[test]
fn a_fork_bomb_is_held_to_limits_pids() {
    let _g = lock();
    let s = session();
    s.ready();
    let how = start_limited(s, "pids = 64");
    let leader = s.leader_of(NAME);
    // Measured first: forking until the kernel refuses, and switching to another id.
    let out = py(
        s,
        &format!(
            "{TRY}
import time
children = []
err = 'none'
for _ in range(1000):
    try:
        pid = os.fork()
    except OSError as e:
        err = errno.errorcode[e.errno]
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
print('forked', len(children), err)
for c in children:
    os.kill(c, 9)
    os.waitpid(c, 0)
attempt('setuid', lambda: os.setuid(1000))
attempt('setgid', lambda: os.setgid(1000))
"
        ),
    );
    let forked: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("forked "))
        .unwrap()
        .split(' ')
        .collect();
    let n: usize = forked[0].parse().unwrap();
    assert_eq!(forked[1], "EAGAIN", "{out}");
    // 64 in all: sandbox-init, `runc exec`'s process and python are among them.
    assert!(
        (55..64).contains(&n),
        "forked {n} children under pids = 64:\n{out}"
    );
    if how == "rlimits" {
        assert!(out.contains("setuid EPERM"), "{out}");
        assert!(out.contains("setgid EPERM"), "{out}");
    }
    // A bomb that never burns out (every process forks for ever, spinning on failures),
    // left running while the rest of the machine is measured.
    let latency = bystander(s);
    let bomb = "import os\nif os.fork() == 0:\n    os.dup2(os.open('/dev/null', os.O_WRONLY), 1)\n    os.dup2(1, 2)\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n";
    s.ctl_ok(&["exec", NAME, "--", "python3", "-c", bomb]);
    let mut most = 0;
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        most = most.max(processes_in(leader));
    }
    assert!(most <= 64, "{most} processes under pids = 64");
    assert!(most >= 60, "the bomb never got going ({most} processes)");
    assert_responsive(s, latency, "a fork bomb");
    // It stops like any sandbox, and nothing of it is left.
    s.ctl_ok(&["stop", NAME]);
    assert_eq!(processes_in(leader), 0);
    assert!(!alive(leader));
    s.remove_profile(NAME);
}

#[test]
fn a_memory_hog_is_held_to_limits_memory() {
    let _g = lock();
    let s = session();
    s.ready();
    let how = start_limited(s, "memory = \"256M\"");
    let latency = bystander(s);
    // 16 MiB at a time, every page touched, up to 2 GiB.
    let out = s.ctl(&[
        "exec",
        NAME,
        "--",
        "python3",
        "-c",
        "
chunks = []
try:
    for _ in range(128):
        chunks.append(bytearray(16 << 20))
    print('held', len(chunks) * 16, 'none')
except MemoryError:
    print('held', len(chunks) * 16, 'MemoryError')
",
    ]);
    let text = stdout(&out);
    if how == "rlimits" {
        // RLIMIT_DATA: the allocation fails inside the process, which sees MemoryError.
        assert!(out.status.success(), "{text} {}", stderr(&out));
        let held: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("held "))
            .unwrap()
            .split(' ')
            .collect();
        let mib: u64 = held[0].parse().unwrap();
        assert_eq!(held[1], "MemoryError", "{text}");
        assert!((128..256).contains(&mib), "held {mib} MiB under 256M");
    } else {
        // A scope's MemoryMax: the kernel's OOM killer ends the hog.
        assert!(!text.contains("held 2048"), "{text}");
    }
    assert_responsive(s, latency, "a memory hog");
    s.ctl_ok(&["stop", NAME]);
    s.remove_profile(NAME);
}
