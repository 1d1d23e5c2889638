//! End to end: a real systemd --user, the real user bus, real runc, real namespaces.
//! Needs root (see tests/common). Each test states the acceptance point it shows.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MANAGER: [&str; 3] = [
    "org.sandboxd.Sandboxd1",
    "/org/sandboxd/Sandboxd1",
    "org.sandboxd.Sandboxd1.Manager",
];

fn busctl_call(s: &Session, member: &str, sig_args: &[&str]) -> std::process::Output {
    let mut args = vec![
        "busctl", "--user", "call", MANAGER[0], MANAGER[1], MANAGER[2], member,
    ];
    args.extend_from_slice(sig_args);
    s.user(&args)
}

/// The unit reaches active (running) only after READY=1, which the daemon sends once it
/// owns its bus name; a busctl StartSandbox then starts a busybox sandbox whose pid 1 is in
/// its own namespaces with uid 0 mapped to the test user.
#[test]
fn systemd_start_then_busctl_start_sandbox() {
    let _g = lock();
    let s = session();
    let _ = s.systemctl(&["stop", "sandboxd.service"]);
    s.start_daemon();
    // `systemctl start` of a Type=notify unit returns once READY=1 arrived: the name must
    // be owned at that very moment, without any retry.
    assert_eq!(s.unit_property("ActiveState"), "active");
    assert_eq!(s.unit_property("SubState"), "running");
    assert_eq!(s.unit_property("Type"), "notify");
    let owner = s.user_ok(&["busctl", "--user", "status", "--no-pager", MANAGER[0]]);
    assert!(
        owner.contains(&format!("PID={}", s.daemon_pid())),
        "{owner}"
    );
    assert!(
        s.unit_property("StatusText").contains("running"),
        "no STATUS= line"
    );

    s.busybox_profile("e2e-ns", "exec sleep 1000", "");
    let out = busctl_call(s, "StartSandbox", &["s", "e2e-ns"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "o \"/org/sandboxd/Sandboxd1/sandbox/e2e_2dns\""
    );
    let pid = s.leader_of("e2e-ns");
    assert!(pid > 0);
    for ns in ["pid", "mnt", "net", "user", "uts", "ipc"] {
        let inner = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(inner, host, "sandbox shares the host's {ns} namespace");
    }
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let first: Vec<&str> = uid_map.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        first,
        ["0", &s.uid.to_string(), "1"],
        "uid 0 must map to the test user: {uid_map}"
    );
    // sandbox-init passes SIGTERM on, so a cooperative sandbox stops well within its
    // 10 s stop_timeout.
    let t0 = Instant::now();
    s.ctl_ok(&["stop", "e2e-ns"]);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t0.elapsed()
    );
    s.remove_profile("e2e-ns");
}

/// With the daemon stopped, a call to its bus name starts it (D-Bus activation through
/// SystemdService=).
#[test]
fn dbus_activation_starts_the_daemon() {
    let _g = lock();
    let s = session();
    s.ready();
    s.stop_daemon();
    assert_eq!(s.unit_property("ActiveState"), "inactive");
    let out = busctl_call(s, "ListSandboxes", &[]);
    assert!(out.status.success(), "activation failed: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "a(ssuo) 0");
    assert_eq!(s.unit_property("ActiveState"), "active");
}

/// `list --json` shows the sandbox running with its leader; `stop` ends a command that
/// ignores SIGTERM within stop_timeout (plus the kill), and leaves no runc state, bundle or
/// process behind.
#[test]
fn stop_kills_a_sandbox_that_ignores_sigterm() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile(
        "e2e-stubborn",
        "trap '' TERM; while :; do sleep 1; done",
        "[restart]\nstop_timeout = \"2s\"\n",
    );
    s.ctl_ok(&["start", "e2e-stubborn"]);
    let row = s
        .list()
        .into_iter()
        .find(|x| x["name"] == "e2e-stubborn")
        .expect("listed");
    assert_eq!(row["state"], "running");
    let pid = row["leader"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    // Let the shell install its trap before we signal it.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    s.ctl_ok(&["stop", "e2e-stubborn"]);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "stopped before stop_timeout ({took:?}): SIGTERM was not ignored?"
    );
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    assert!(!alive(pid), "pid 1 survived");
    assert!(
        !s.runc_root().join("e2e-stubborn").exists(),
        "runc state left"
    );
    assert!(!s.bundles().join("e2e-stubborn").exists(), "bundle left");
    assert!(s.list().iter().all(|x| x["name"] != "e2e-stubborn"));
    s.remove_profile("e2e-stubborn");
}

/// A `busctl monitor` of the daemon's bus name, as the test user, printing JSON lines.
/// `busctl monitor` of the daemon's messages, written to a file: a pipe nobody reads
/// until the end would fill up and stall it.
fn monitor(out: &std::fs::File) -> Child {
    Command::new(env!("CARGO_MANIFEST_DIR").to_string() + "/scripts/user-session")
        .args([
            "run",
            USER,
            // Line-buffered: busctl dies by SIGTERM, and must not take a full buffer of
            // messages with it.
            "stdbuf",
            "-oL",
            "busctl",
            "--user",
            "monitor",
            "--json=short",
            MANAGER[0],
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A command exiting 3 under `on-failure, max = 2` is restarted exactly twice and then
/// shown failed with ExitStatus 3; a bus client sees SandboxNew and the PropertiesChanged.
#[test]
fn on_failure_restarts_twice_then_fails() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile(
        "e2e-crash",
        "sleep 0.3; exit 3",
        "[restart]\npolicy = \"on-failure\"\nmax = 2\n",
    );
    let log = tempfile::tempfile().unwrap();
    let mut mon = monitor(&log);
    std::thread::sleep(Duration::from_millis(500));
    s.ctl_ok(&["start", "e2e-crash"]);
    let status = s.wait_for("e2e-crash to fail", Duration::from_secs(30), || {
        s.status("e2e-crash").filter(|v| v["state"] == "failed")
    });
    assert_eq!(status["exit_status"], 3);
    assert_eq!(status["restarts"], 2);
    std::thread::sleep(Duration::from_millis(300));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = Command::new("pkill")
        .args(["-u", USER, "-f", "busctl --user monitor"])
        .status();
    let _ = mon.wait();
    let mut text = String::new();
    use std::io::{Read, Seek};
    let mut log = log;
    log.seek(std::io::SeekFrom::Start(0)).unwrap();
    log.read_to_string(&mut text).unwrap();
    let messages: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let signals: Vec<&serde_json::Value> =
        messages.iter().filter(|m| m["type"] == "signal").collect();
    assert!(
        signals
            .iter()
            .any(|m| m["member"] == "SandboxNew" && m["payload"]["data"][0] == "e2e-crash"),
        "no SandboxNew seen"
    );
    let states: Vec<String> = signals
        .iter()
        .filter(|m| {
            m["member"] == "PropertiesChanged"
                && m["path"] == "/org/sandboxd/Sandboxd1/sandbox/e2e_2dcrash"
        })
        .filter_map(|m| {
            m["payload"]["data"][1]["State"]["data"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        states.iter().filter(|x| *x == "running").count(),
        3,
        "states seen: {states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("failed"),
        "states seen: {states:?}"
    );
    let exit_changes = signals.iter().any(|m| {
        m["member"] == "PropertiesChanged" && m["payload"]["data"][1]["ExitStatus"]["data"] == 3
    });
    assert!(exit_changes, "no PropertiesChanged for ExitStatus");
    // A failed sandbox is dismissed by stop.
    s.ctl_ok(&["stop", "e2e-crash"]);
    assert!(s.status("e2e-crash").is_none());
    s.remove_profile("e2e-crash");
}

/// The built-in default profile starts with no profile file, runs /usr/bin/env from the
/// host's read-only /usr, and writing to /usr fails.
#[test]
fn default_profile_uses_the_hosts_usr_read_only() {
    let _g = lock();
    let s = session();
    s.ready();
    s.remove_profile("default");
    s.ctl_ok(&["start", "default"]);
    let status = s.status("default").unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["profile"], "", "the built-in profile has no file");
    let env = s.ctl(&["exec", "default", "--", "/usr/bin/env"]);
    assert!(env.status.success(), "{}", stderr(&env));
    assert!(
        stdout(&env).contains("container=sandboxd"),
        "{}",
        stdout(&env)
    );
    let write = s.ctl(&[
        "exec",
        "default",
        "--",
        "/bin/sh",
        "-c",
        "echo x > /usr/sandboxd-write-test",
    ]);
    assert!(!write.status.success());
    assert!(
        stderr(&write).contains("Read-only file system"),
        "{}",
        stderr(&write)
    );
    assert!(!std::path::Path::new("/usr/sandboxd-write-test").exists());
    // Its network is the proxy's, with the daemon as its resolver.
    let links = s.ctl_ok(&["exec", "default", "--", "/bin/cat", "/proc/net/dev"]);
    assert!(links.contains("sbx0:"), "{links}");
    let resolv = s.ctl_ok(&["exec", "default", "--", "/bin/cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.89.0.1"), "{resolv}");
    let tmp = s.ctl(&[
        "exec",
        "default",
        "--",
        "/bin/sh",
        "-c",
        "echo x > /tmp/t && cat /tmp/t",
    ]);
    assert_eq!(stdout(&tmp).trim(), "x", "private /tmp is writable");
    s.ctl_ok(&["stop", "default"]);
}

/// After SIGKILL of the daemon with two sandboxes running, the next daemon lists both as
/// running (adopted, same pids); stopping them leaves nothing behind.
#[test]
fn adopts_running_sandboxes_after_sigkill() {
    let _g = lock();
    let s = session();
    s.ready();
    // It writes all the time: its output must outlive the daemon that read it.
    s.busybox_profile("e2e-adopt-a", "while :; do echo tick; sleep 0.1; done", "");
    let (data, bind) = BoundData::new(s, "e2e-adopt-b");
    s.busybox_profile(
        "e2e-adopt-b",
        &format!("{} && exec sleep 1000", BoundData::WRITE),
        &bind,
    );
    s.ctl_ok(&["start", "e2e-adopt-a"]);
    s.ctl_ok(&["start", "e2e-adopt-b"]);
    data.wait_written(s);
    let (a, b) = (s.leader_of("e2e-adopt-a"), s.leader_of("e2e-adopt-b"));
    let old = s.daemon_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    s.wait_for("the old daemon to die", Duration::from_secs(10), || {
        (!alive(old)).then_some(())
    });
    assert!(alive(a) && alive(b), "sandboxes died with the daemon");
    // Restart=on-failure brings it back; start it explicitly in case the restart is pending.
    s.wait_for("a new daemon", Duration::from_secs(20), || {
        let _ = s.systemctl(&["start", "sandboxd.service"]);
        let pid = s.daemon_pid();
        (pid != 0 && pid != old && s.unit_property("ActiveState") == "active").then_some(())
    });
    let list = s.list();
    for (name, pid) in [("e2e-adopt-a", a), ("e2e-adopt-b", b)] {
        let row = list
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("{name} not adopted: {list:?}"));
        assert_eq!(row["state"], "running");
        assert_eq!(row["leader"], pid);
    }
    // The writer keeps writing through the daemon's crash and restart.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        alive(a),
        "the writing sandbox died (SIGPIPE?) after the daemon restarted"
    );
    assert_eq!(s.status("e2e-adopt-a").unwrap()["state"], "running");
    // The new daemon reuses the earlier one's user namespace, so it can still enter them.
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-adopt-b", "--", "echo", "inside"]),
        "inside\n"
    );
    data.assert_intact();
    s.ctl_ok(&["stop", "e2e-adopt-a"]);
    s.ctl_ok(&["stop", "e2e-adopt-b"]);
    assert!(!alive(a) && !alive(b));
    data.assert_intact();
    for name in ["e2e-adopt-a", "e2e-adopt-b"] {
        assert!(!s.runc_root().join(name).exists());
        assert!(!s.bundles().join(name).exists());
        s.remove_profile(name);
    }
}

/// Bad profiles give InvalidProfile / NoSuchProfile over D-Bus and a `check` message with
/// file, line and key; the daemon keeps running.
#[test]
fn bad_profiles_are_refused_with_located_errors() {
    let _g = lock();
    let s = session();
    s.ready();
    let pid = s.daemon_pid();
    let root =
        "[rootfs]\npath = \"~/.local/share/sandboxd/rootfs/busybox\"\n[network]\nmode = \"none\"\n";
    let cases = [
        (
            "e2e-unknown",
            format!("{root}colour = \"red\"\n"),
            5,
            "colour",
        ),
        (
            "e2e-type",
            format!("{root}[restart]\nmax = \"two\"\n"),
            6,
            "restart.max",
        ),
        (
            "e2e-duration",
            format!("{root}[restart]\nstop_timeout = \"10 parsecs\"\n"),
            6,
            "restart.stop_timeout",
        ),
        (
            "e2e-rootfs",
            "[rootfs]\npath = \"/nonexistent/rootfs\"\n".to_string(),
            2,
            "rootfs.path",
        ),
        (
            "e2e-netentry",
            "[rootfs]\nhost = true\n[network]\nallow = [\"192.168.1\"]\n".to_string(),
            4,
            "network.allow[0]",
        ),
        (
            "e2e-upstream",
            "[rootfs]\nhost = true\n[network]\nupstream = \"socks5://\"\n".to_string(),
            4,
            "network.upstream",
        ),
    ];
    for (name, text, line, key) in &cases {
        s.write_profile(name, text);
        let out = s.user(&[
            "dbus-send",
            "--session",
            "--print-reply",
            "--dest=org.sandboxd.Sandboxd1",
            "/org/sandboxd/Sandboxd1",
            "org.sandboxd.Sandboxd1.Manager.StartSandbox",
            &format!("string:{name}"),
        ]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("org.sandboxd.Sandboxd1.Error.InvalidProfile"),
            "{name}: {err}"
        );
        let file = s.profiles().join(format!("{name}.toml"));
        assert!(
            err.contains(&format!("{}:{line}:", file.display())),
            "{name}: {err}"
        );
        let check = s.ctl(&["check", &file.display().to_string()]);
        assert_eq!(check.status.code(), Some(1));
        let msg = stderr(&check);
        assert!(
            msg.contains(&format!("{}:{line}:", file.display())) && msg.contains(key),
            "{name}: {msg}"
        );
        s.remove_profile(name);
    }
    for (bad, error) in [
        ("../etc/passwd", "InvalidProfile"),
        ("a/b", "InvalidProfile"),
        ("..", "InvalidProfile"),
        ("no-such-profile", "NoSuchProfile"),
    ] {
        let out = s.user(&[
            "dbus-send",
            "--session",
            "--print-reply",
            "--dest=org.sandboxd.Sandboxd1",
            "/org/sandboxd/Sandboxd1",
            "org.sandboxd.Sandboxd1.Manager.StartSandbox",
            &format!("string:{bad}"),
        ]);
        assert!(
            stderr(&out).contains(&format!("org.sandboxd.Sandboxd1.Error.{error}")),
            "{bad}: {}",
            stderr(&out)
        );
    }
    // Oversized argument (100 KiB, near the limit of one command-line argument).
    let big = format!("string:{}", "y".repeat(100_000));
    let out = s.user(&[
        "dbus-send",
        "--session",
        "--print-reply",
        "--dest=org.sandboxd.Sandboxd1",
        "/org/sandboxd/Sandboxd1",
        "org.sandboxd.Sandboxd1.Manager.StartSandbox",
        &big,
    ]);
    assert!(
        stderr(&out).contains("org.sandboxd.Sandboxd1.Error.InvalidProfile"),
        "{}",
        &stderr(&out)[..stderr(&out).len().min(300)]
    );
    assert!(
        stderr(&out).len() < 1000,
        "the error echoes the whole argument back"
    );
    let huge = "x".repeat(10_000);
    let out = s.ctl(&["start", &huge]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = s.ctl(&["stop", "nothing-here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NoSuchSandbox"));
    assert_eq!(s.daemon_pid(), pid, "the daemon restarted");
    assert_eq!(s.unit_property("ActiveState"), "active");
}

/// The live objects introspect exactly as dist/dbus/org.sandboxd.Sandboxd1.xml says.
#[test]
fn introspection_matches_the_shipped_xml() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-xml", "exec sleep 1000", "");
    s.ctl_ok(&["start", "e2e-xml"]);
    let manager = s.user_ok(&[
        "busctl",
        "--user",
        "introspect",
        "--xml-interface",
        MANAGER[0],
        MANAGER[1],
    ]);
    let sandbox = s.user_ok(&[
        "busctl",
        "--user",
        "introspect",
        "--xml-interface",
        MANAGER[0],
        "/org/sandboxd/Sandboxd1/sandbox/e2e_2dxml",
    ]);
    s.ctl_ok(&["stop", "e2e-xml"]);
    s.remove_profile("e2e-xml");
    assert_matches_shipped_xml(&manager, &sandbox);
}

/// Two hundred start/stop cycles leak no fds, processes, mounts or files.
#[test]
fn two_hundred_start_stop_cycles_leak_nothing() {
    let _g = lock();
    let s = session();
    s.ready();
    s.stop_all();
    // A stop_timeout far above a normal stop: a SIGTERM that goes nowhere shows as time.
    s.busybox_profile(
        "e2e-cycle",
        "exec sleep 1000",
        "[restart]\nstop_timeout = \"30s\"\n",
    );
    // One cycle first, so lazily opened things (bus connections, caches) exist in both counts.
    s.ctl_ok(&["start", "e2e-cycle"]);
    s.ctl_ok(&["stop", "e2e-cycle"]);
    let daemon = s.daemon_pid();
    let count = || {
        let fds = std::fs::read_dir(format!("/proc/{daemon}/fd"))
            .unwrap()
            .count();
        let procs = service_processes(s);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count();
        let files = walk(&s.runtime_dir.join("sandboxd"));
        (fds, procs, mounts, files)
    };
    let before = count();
    let script = format!(
        "for i in $(seq 1 200); do {ctl} start e2e-cycle >/dev/null || exit 1; {ctl} stop e2e-cycle >/dev/null || exit 1; done",
        ctl = s.bin().join("sandboxctl").display()
    );
    let t0 = Instant::now();
    s.user_ok(&["sh", "-c", &script]);
    eprintln!("200 start/stop cycles took {:?}", t0.elapsed());
    assert!(
        t0.elapsed() < Duration::from_secs(240),
        "200 cycles took {:?}",
        t0.elapsed()
    );
    let after = count();
    assert_eq!(
        before, after,
        "(daemon fds, user processes, host mounts, runtime files) changed over 200 cycles"
    );
    assert_eq!(s.daemon_pid(), daemon);
    s.remove_profile("e2e-cycle");
}

/// Processes in sandboxd.service's cgroup: the daemon and every sandbox it runs (rootless
/// runc without a delegated cgroup leaves containers in the service's cgroup).
fn service_processes(s: &Session) -> usize {
    let cg = s.unit_property("ControlGroup");
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let base = if unified.join("cgroup.procs").exists() {
        unified
    } else {
        std::path::Path::new("/sys/fs/cgroup")
    };
    let procs = std::fs::read_to_string(base.join(cg.trim_start_matches('/')).join("cgroup.procs"))
        .unwrap();
    procs.lines().count()
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| {
                1 + if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    0
                }
            })
            .sum()
    })
}

/// `systemd-analyze verify --user` accepts the installed unit.
#[test]
fn unit_file_verifies() {
    let _g = lock();
    let s = session();
    let unit = s.home.join(".config/systemd/user/sandboxd.service");
    let out = s.user(&[
        "systemd-analyze",
        "verify",
        "--user",
        unit.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        !stderr(&out).contains(unit.to_str().unwrap()),
        "warnings about the unit: {}",
        stderr(&out)
    );
}

/// The installed XDG autostart entry is valid and, run as a login would run it, brings the
/// daemon up (which then starts the `autostart = true` profiles, shown above).
#[test]
fn autostart_entry_starts_the_daemon() {
    let _g = lock();
    let s = session();
    let entry = s.home.join(".config/autostart/sandboxd.desktop");
    assert_valid_desktop_file(s, &entry);
    let _ = s.systemctl(&["stop", "sandboxd.service"]);
    assert_eq!(s.unit_property("ActiveState"), "inactive");
    let text = std::fs::read_to_string(&entry).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("an Exec line");
    s.user_ok(&["sh", "-c", exec]);
    assert_eq!(s.unit_property("ActiveState"), "active");
}

/// Stopping the service stops every sandbox cleanly.
#[test]
fn stopping_the_service_stops_every_sandbox() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-svc", "exec sleep 1000", "");
    s.ctl_ok(&["start", "e2e-svc"]);
    let pid = s.leader_of("e2e-svc");
    // The process holding the daemon's user namespace is named for it in `ps`.
    let holders = || -> Vec<u32> {
        processes_of(s.uid)
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c == b"sandboxd: userns holder\0infinity\0")
            })
            .collect()
    };
    assert_eq!(holders().len(), 1, "one holder, named in ps");
    s.stop_daemon();
    // It goes with an orderly stop.
    let holders = holders();
    assert!(
        holders.is_empty(),
        "namespace holder left after the service stopped: {holders:?}"
    );
    assert!(!alive(pid), "sandbox survived the service stop");
    assert!(!s.runc_root().join("e2e-svc").exists());
    assert!(!s.bundles().join("e2e-svc").exists());
    s.remove_profile("e2e-svc");
    s.start_daemon();
    assert!(s.list().is_empty());
}

/// A profile with `autostart = true` starts when the daemon starts.
#[test]
fn autostart_profiles_start_with_the_daemon() {
    let _g = lock();
    let s = session();
    s.ready();
    s.stop_daemon();
    s.busybox_profile("e2e-auto", "exec sleep 1000", "");
    let text = std::fs::read_to_string(s.profiles().join("e2e-auto.toml")).unwrap();
    s.write_profile("e2e-auto", &format!("autostart = true\n{text}"));
    s.start_daemon();
    let row = s.wait_for("e2e-auto to autostart", Duration::from_secs(20), || {
        s.list()
            .into_iter()
            .find(|x| x["name"] == "e2e-auto" && x["state"] == "running")
    });
    assert!(alive(row["leader"].as_u64().unwrap() as u32));
    s.ctl_ok(&["stop", "e2e-auto"]);
    s.remove_profile("e2e-auto");
}

/// The rest of the D-Bus contract through busctl: ListProfiles, GetSandbox, RestartSandbox,
/// KillSandbox, ReloadProfiles, and the sandbox object's properties and methods.
#[test]
fn bus_contract_through_busctl() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-bus", "exec sleep 1000", "");
    s.write_profile("e2e-bus-bad", "[rootfs]\nnope = 1\n");
    let profiles = stdout(&busctl_call(s, "ListProfiles", &[]));
    assert!(profiles.starts_with("a(sss) "), "{profiles}");
    assert!(profiles.contains("\"default\" \"\" \"\""), "{profiles}");
    assert!(profiles.contains("\"e2e-bus\""), "{profiles}");
    assert!(
        profiles.contains("e2e-bus-bad.toml:2:1: rootfs.nope"),
        "{profiles}"
    );
    assert!(busctl_call(s, "ReloadProfiles", &[]).status.success());
    // DescribeProfiles adds the description; `sandboxctl profiles` shows one line each.
    let text = std::fs::read_to_string(s.profiles().join("e2e-bus.toml")).unwrap();
    s.write_profile("e2e-bus", &format!("description = \"a busy box\"\n{text}"));
    let described = stdout(&busctl_call(s, "DescribeProfiles", &[]));
    assert!(described.starts_with("a(ssss) "), "{described}");
    assert!(described.contains("\"\" \"a busy box\""), "{described}");
    let listing = s.ctl_ok(&["profiles"]);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
            .to_string()
    };
    assert!(line("e2e-bus").ends_with("  a busy box"), "{listing}");
    assert!(line("default").contains("Built-in"), "{listing}");
    let bad = line("e2e-bus-bad");
    assert!(
        bad.contains("invalid: ")
            && bad.contains("rootfs.nope")
            && bad.contains("sandboxctl check e2e-bus-bad"),
        "{bad}"
    );
    assert_eq!(
        listing.lines().count(),
        s.ctl_ok(&["profiles", "--json"])
            .matches("\"name\"")
            .count()
    );

    let path = "/org/sandboxd/Sandboxd1/sandbox/e2e_2dbus";
    assert!(stderr(&busctl_call(s, "GetSandbox", &["s", "e2e-bus"])).contains("no sandbox named"));
    busctl_call(s, "StartSandbox", &["s", "e2e-bus"]);
    assert_eq!(
        stdout(&busctl_call(s, "GetSandbox", &["s", "e2e-bus"])).trim(),
        format!("o \"{path}\"")
    );
    // The bash completion `make install` wrote asks the daemon for sandbox names: `stop`
    // offers the running e2e-bus, not the profile e2e-bus-bad.
    let script = s
        .home
        .join(".local/share/bash-completion/completions/sandboxctl");
    let offered = s.user_ok(&[
        "bash",
        "-c",
        &format!(
            "source {}; COMP_WORDS=(sandboxctl stop e2e-b); COMP_CWORD=2; COMP_TYPE=9; \
             _clap_complete_sandboxctl sandboxctl e2e-b x; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ),
    ]);
    assert_eq!(offered, "e2e-bus\n");
    for shell in [
        ".local/share/zsh/site-functions/_sandboxctl",
        ".config/fish/completions/sandboxctl.fish",
    ] {
        assert!(s.home.join(shell).is_file(), "{shell} not installed");
    }
    // The examples are in the doc dir.
    let doc = s.home.join(".local/share/doc/sandboxd");
    assert!(doc.join("sandboxd.toml").is_file() && doc.join("examples/dev.toml").is_file());
    let prop = |name: &str| {
        s.user_ok(&[
            "busctl",
            "--user",
            "get-property",
            MANAGER[0],
            path,
            "org.sandboxd.Sandboxd1.Sandbox",
            name,
        ])
        .trim()
        .to_string()
    };
    let first = s.leader_of("e2e-bus");
    assert_eq!(prop("Name"), "s \"e2e-bus\"");
    assert_eq!(prop("State"), "s \"running\"");
    assert_eq!(prop("Leader"), format!("u {first}"));
    assert!(prop("Profile").ends_with("e2e-bus.toml\""));
    assert_eq!(prop("ConnectionsActive"), "u 0");

    // RestartSandbox gives a new pid 1.
    assert!(busctl_call(s, "RestartSandbox", &["s", "e2e-bus"])
        .status
        .success());
    let second = s.leader_of("e2e-bus");
    assert!(second != 0 && second != first && !alive(first));

    // The object's own Restart and Kill.
    s.user_ok(&[
        "busctl",
        "--user",
        "call",
        MANAGER[0],
        path,
        "org.sandboxd.Sandboxd1.Sandbox",
        "Restart",
    ]);
    let third = s.leader_of("e2e-bus");
    assert!(third != second && !alive(second));
    let bad = busctl_call(s, "KillSandbox", &["si", "e2e-bus", "0"]);
    assert!(
        !bad.status.success() && stderr(&bad).contains("signal 0"),
        "{}",
        stderr(&bad)
    );
    s.user_ok(&[
        "busctl",
        "--user",
        "call",
        MANAGER[0],
        path,
        "org.sandboxd.Sandboxd1.Sandbox",
        "Kill",
        "i",
        "9",
    ]);
    let failed = s.wait_for("the killed sandbox to end", Duration::from_secs(10), || {
        s.status("e2e-bus").filter(|v| v["state"] == "failed")
    });
    assert_eq!(failed["exit_status"], 137);
    assert!(!alive(third));
    let again = busctl_call(s, "KillSandbox", &["si", "e2e-bus", "15"]);
    assert!(
        stderr(&again).contains("is not running"),
        "{}",
        stderr(&again)
    );
    // The object's Stop dismisses the ended sandbox.
    s.user_ok(&[
        "busctl",
        "--user",
        "call",
        MANAGER[0],
        path,
        "org.sandboxd.Sandboxd1.Sandbox",
        "Stop",
    ]);
    assert!(s.status("e2e-bus").is_none());
    s.remove_profile("e2e-bus");
    s.remove_profile("e2e-bus-bad");
}
