//! End to end: the kernel's attack surface from inside a sandbox. The default seccomp
//! filter and the nested-userns lock, as root and as a user inside, in pid 1 and in exec'd
//! processes, across a daemon crash; what must keep working; the `security.nested`
//! settings; the lock on its own, outside the daemon. Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const PROBE: &str = include_str!("seccomp/probe.py");

fn host_limit() -> String {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .unwrap()
        .trim()
        .to_string()
}

/// Runs the probe's `part` inside `name` as `user`; its "LABEL RESULT" lines.
fn probe(s: &Session, name: &str, user: &str, part: &str) -> BTreeMap<String, String> {
    let out = s.ctl(&[
        "exec", name, "--user", user, "--", "python3", "-c", PROBE, part,
    ]);
    assert!(
        out.status.success(),
        "probe {part} as {user}: {}",
        stderr(&out)
    );
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn expect(got: &BTreeMap<String, String>, want: &[(&str, &str)], context: &str) {
    for (label, result) in want {
        assert_eq!(
            got.get(*label).map(String::as_str),
            Some(*result),
            "{context}: {label}: {got:#?}"
        );
    }
}

/// What the default filter gives each attempt (and what the lock gives `max-userns`).
const CLOSED: &[(&str, &str)] = &[
    ("unshare-user", "EPERM"),
    ("clone-user", "EPERM"),
    ("clone3", "ENOSYS"),
    ("setns", "EPERM"),
    ("mount", "EPERM"),
    ("open_tree", "EPERM"),
    ("fsopen", "EPERM"),
    ("keyctl", "ENOSYS"),
    ("add_key", "ENOSYS"),
    ("bpf", "EPERM"),
    ("perf_event_open", "EPERM"),
    ("userfaultfd", "EPERM"),
    ("io_uring_setup", "EPERM"),
    ("open_by_handle_at", "EPERM"),
    ("personality-addr-no-randomize", "EPERM"),
    ("personality-query", "ok"),
    ("socket-vsock", "EPERM"),
    ("socket-alg", "EPERM"),
    ("socket-packet", "EPERM"),
    ("socket-netfilter", "EPROTONOSUPPORT"),
    ("socket-netfilter-high", "EPROTONOSUPPORT"),
    ("socket-vsock-high", "EPERM"),
    ("ioctl-tiocsti", "EIO"),
    ("ioctl-tiocsti-high", "EIO"),
    ("ioctl-tioclinux", "EIO"),
    // Not a denied request: the kernel's own answer for fd -1.
    ("ioctl-tiocgwinsz-badfd", "EBADF"),
    ("unshare-Ur", "1"),
    ("unshare-Ur-says", "Operation-not-permitted"),
    ("write-max-userns", "EROFS"),
    ("max-userns", "0"),
    ("seccomp-self", "2"),
    ("seccomp-1", "2"),
];

#[test]
fn the_kernel_surface_is_closed_as_root_and_as_a_user() {
    let _g = lock();
    let s = session();
    s.ready();
    let before = host_limit();
    s.start_host_root("e2e-seccomp", "");
    for user in ["root", "nobody"] {
        let got = probe(s, "e2e-seccomp", user, "closed");
        expect(&got, CLOSED, user);
    }
    // The lock was made inside the sandbox's namespace, never the host's.
    assert_eq!(host_limit(), before);
    let status = s.status("e2e-seccomp").unwrap();
    assert_eq!(status["security"], "seccomp filter, no nested namespaces");
    let text = s.ctl_ok(&["status", "e2e-seccomp"]);
    assert!(text.contains("security:    seccomp filter"), "{text}");
    s.finish("e2e-seccomp");
}

#[test]
fn ordinary_programs_keep_working_under_the_filter() {
    let _g = lock();
    let s = session();
    s.ready();
    s.start_host_root("e2e-seccomp-works", "");
    for user in ["root", "nobody"] {
        let got = probe(s, "e2e-seccomp-works", user, "works");
        expect(
            &got,
            &[
                ("subprocess", "0"),
                ("fork", "7"),
                ("threads", "8"),
                ("socketpair", "x"),
                ("unix-listen", "ok"),
                ("ip-addr", "ok"),
                ("tiocgwinsz", "33x99"),
                ("go", "ok"),
                ("strace", "0"),
                ("personality-linux", "ok"),
            ],
            user,
        );
        // A static Rust program (sandbox-init itself, run as a plain command).
        let out = s.ctl(&[
            "exec",
            "e2e-seccomp-works",
            "--user",
            user,
            "--",
            "/dev/.sandbox-init",
            "--",
            "sh",
            "-c",
            "exit 5",
        ]);
        assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    }
    s.finish("e2e-seccomp-works");
}

/// `security.nested = true` opens namespaces and mounts, and nothing else.
#[test]
fn nested_opens_namespaces_but_not_nf_tables_io_uring_or_keyrings() {
    let _g = lock();
    let s = session();
    s.ready();
    s.start_host_root("e2e-nested", "[security]\nnested = true\n");
    let sh = |cmd: &str| {
        s.ctl(&[
            "exec",
            "e2e-nested",
            "--user",
            "root",
            "--",
            "sh",
            "-c",
            cmd,
        ])
    };
    let out = sh("unshare -Ur true");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sh("unshare -Urpf --mount-proc true");
    assert!(out.status.success(), "{}", stderr(&out));
    // nf_tables stays closed even as root of a nested network namespace.
    let out = sh("unshare -Urn nft list ruleset");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Protocol not supported"),
        "{}",
        stderr(&out)
    );
    let got = probe(s, "e2e-nested", "root", "closed");
    expect(
        &got,
        &[
            ("unshare-user", "ok"),
            ("clone3", "ENOSYS"),
            ("keyctl", "ENOSYS"),
            ("bpf", "EPERM"),
            ("perf_event_open", "EPERM"),
            ("userfaultfd", "EPERM"),
            ("io_uring_setup", "EPERM"),
            ("socket-vsock", "EPERM"),
            ("socket-alg", "EPERM"),
            ("socket-netfilter", "EPROTONOSUPPORT"),
            ("ioctl-tiocsti", "EIO"),
            ("seccomp-self", "2"),
        ],
        "nested",
    );
    assert_ne!(got["max-userns"], "0", "no lock with nested = true");
    assert_eq!(
        s.status("e2e-nested").unwrap()["security"],
        "seccomp filter, nested namespaces and mounts (weaker)"
    );
    s.finish("e2e-nested");
}

/// The browser example's setting: a Chromium-style namespace sandbox (user, pid and
/// network namespaces) works inside; mount namespaces and the mount API stay closed.
#[test]
fn the_browser_setting_allows_a_namespace_sandbox_only() {
    let _g = lock();
    let s = session();
    s.ready();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/etc/profiles/browser.toml"
    ))
    .unwrap();
    let setting = example
        .lines()
        .find(|l| l.starts_with("nested ="))
        .expect("the browser example sets security.nested");
    assert_eq!(setting, "nested = \"namespaces\"");
    s.start_host_root("e2e-browserish", &format!("[security]\n{setting}\n"));
    let sh = |cmd: &str| {
        s.ctl(&[
            "exec",
            "e2e-browserish",
            "--user",
            "nobody",
            "--",
            "sh",
            "-c",
            cmd,
        ])
    };
    let out = sh("unshare -Urpn --fork sh -c 'test $$ = 1'");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sh("unshare -Urm true");
    assert!(!out.status.success(), "a mount namespace was allowed");
    let got = probe(s, "e2e-browserish", "nobody", "closed");
    expect(
        &got,
        &[
            ("unshare-user", "ok"),
            ("mount", "EPERM"),
            ("open_tree", "EPERM"),
            ("io_uring_setup", "EPERM"),
            ("socket-netfilter", "EPROTONOSUPPORT"),
        ],
        "namespaces",
    );
    s.finish("e2e-browserish");
}

#[test]
fn a_bad_security_value_is_refused_with_its_place() {
    let _g = lock();
    let s = session();
    s.ready();
    s.write_profile(
        "e2e-badsec",
        "[rootfs]\nhost = true\n[security]\nnested = \"sometimes\"\n",
    );
    let out = s.ctl(&["check", "e2e-badsec"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("e2e-badsec.toml:4:") && err.contains("security.nested"),
        "{err}"
    );
    s.write_profile(
        "e2e-badsec",
        "[rootfs]\nhost = true\n[security]\nmultiarch = \"yes\"\n",
    );
    let err = stderr(&s.ctl(&["check", "e2e-badsec"]));
    assert!(
        err.contains(":4:") && err.contains("security.multiarch"),
        "{err}"
    );
    s.remove_profile("e2e-badsec");
}

/// The lock alone, outside the daemon and without any filter: a throwaway user namespace
/// locked by `sandboxd userns-lock` refuses a nested one with ENOSPC; the host's limit
/// stays as it was.
#[test]
fn the_userns_lock_holds_on_its_own() {
    let s = session();
    let before = host_limit();
    let mut holder = Command::new("unshare")
        .args(["--user", "--map-root-user", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = holder.id().to_string();
    // unshare has created the namespace once its pid's user namespace differs from ours.
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    s.wait_for("the throwaway namespace", Duration::from_secs(5), || {
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok()?;
        (ns != ours).then_some(())
    });
    let nsenter = |args: &[&str]| {
        Command::new("nsenter")
            .args(["-t", &pid, "-U", "--preserve-credentials", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let free = nsenter(&["unshare", "--user", "true"]);
    assert!(free.status.success(), "{}", stderr(&free));
    let lock = Command::new(s.bin().join("sandboxd"))
        .args(["userns-lock", &pid])
        .output()
        .unwrap();
    assert!(lock.status.success(), "{}", stderr(&lock));
    let locked = nsenter(&["unshare", "--user", "true"]);
    assert!(!locked.status.success());
    assert!(
        stderr(&locked).contains("No space left on device"),
        "{}",
        stderr(&locked)
    );
    let inside = nsenter(&["cat", "/proc/sys/user/max_user_namespaces"]);
    assert_eq!(stdout(&inside).trim(), "0");
    assert_eq!(host_limit(), before, "the host's limit changed");
    let _ = holder.kill();
    let _ = holder.wait();
    // A bad pid is an error that says so, not a lock of this namespace.
    let bad = Command::new(s.bin().join("sandboxd"))
        .args(["userns-lock", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("/proc/0/ns/user"), "{}", stderr(&bad));
    assert_eq!(host_limit(), before);
}

/// After SIGKILL of the daemon, the adopted sandbox keeps its filter and its lock.
#[test]
fn an_adopted_sandbox_keeps_its_filter_and_lock() {
    let _g = lock();
    let s = session();
    s.ready();
    s.start_host_root("e2e-seccomp-adopt", "");
    let leader = s.leader_of("e2e-seccomp-adopt");
    s.crash_daemon();
    assert_eq!(s.leader_of("e2e-seccomp-adopt"), leader, "not adopted");
    let got = probe(s, "e2e-seccomp-adopt", "root", "closed");
    expect(
        &got,
        &[
            ("seccomp-1", "2"),
            ("seccomp-self", "2"),
            ("unshare-user", "EPERM"),
            ("unshare-Ur", "1"),
            ("max-userns", "0"),
        ],
        "adopted",
    );
    assert_eq!(
        s.status("e2e-seccomp-adopt").unwrap()["security"],
        "seccomp filter, no nested namespaces"
    );
    s.finish("e2e-seccomp-adopt");
}
