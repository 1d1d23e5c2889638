//! End to end: a hostile sandbox. From inside, as root, each attempt below must fail, and
//! each test asserts how. The sandbox uses the host's /usr (for python3 and util-linux).
//! Needs root, like tests/e2e.rs.

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
        )
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
