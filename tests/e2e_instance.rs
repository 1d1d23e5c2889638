//! End to end: one daemon per user. A `sandboxd` started by hand next to the service —
//! on the same bus, or on a private bus with the same runtime directory — exits at once
//! with a message, having touched nothing; killing it changes nothing; a crash releases
//! the lock for the restarted service. Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::net::*;
use common::*;

/// What a second daemon must leave as it was: the service, the sandboxes, their helpers,
/// every process of the user, every file under the runtime directory, the host's mounts.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    daemon: u32,
    leaders: Vec<u32>,
    helper: Option<u32>,
    processes: BTreeSet<u32>,
    files: BTreeSet<(PathBuf, u64)>,
    mounts: String,
}

fn files_under(dir: &Path, out: &mut BTreeSet<(PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        // The test harness appends the daemon's log: its size is not the second daemon's.
        let size = if e.file_name() == "sandboxd-test.log" || meta.is_dir() {
            0
        } else {
            meta.size()
        };
        out.insert((e.path(), size));
        if meta.is_dir() {
            files_under(&e.path(), out);
        }
    }
}

/// Equal snapshots, or a message naming the processes that came or went.
fn assert_same(after: &Snapshot, before: &Snapshot) {
    let name = |pid: &u32| {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        format!("{pid} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
    };
    let came: Vec<String> = after
        .processes
        .difference(&before.processes)
        .map(name)
        .collect();
    let went: Vec<u32> = before
        .processes
        .difference(&after.processes)
        .copied()
        .collect();
    assert!(
        came.is_empty() && went.is_empty(),
        "new processes {came:?}, gone {went:?}"
    );
    assert_eq!(after, before);
}

/// The user's processes once they stop changing (what an earlier test or the session
/// itself started may still be ending), idle netns helpers aside: two equal readings
/// 300 ms apart, within 10 s.
fn settled_processes(uid: u32) -> BTreeSet<u32> {
    let t0 = Instant::now();
    let mut last: BTreeSet<u32> = processes_but_the_pool(uid).into_iter().collect();
    while t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(300));
        let now: BTreeSet<u32> = processes_but_the_pool(uid).into_iter().collect();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn snapshot(s: &Session, names: &[&str]) -> Snapshot {
    let processes = settled_processes(s.uid);
    let leaders: Vec<u32> = names.iter().map(|n| s.leader_of(n)).collect();
    let mut files = BTreeSet::new();
    files_under(&s.runtime_dir.join("sandboxd"), &mut files);
    Snapshot {
        daemon: s.daemon_pid(),
        helper: helper_of(leaders[0]),
        leaders,
        processes,
        files,
        mounts: std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
    }
}

/// Two sandboxes, one of them with networking through the proxy.
fn start_two(s: &Session) {
    proxied_profile(s, "inst-net", ALLOW_INET);
    s.busybox_profile("inst-idle", "exec sleep 1000", "");
    s.ctl_ok(&["start", "inst-net"]);
    s.ctl_ok(&["start", "inst-idle"]);
}

fn stop_two(s: &Session) {
    for n in ["inst-net", "inst-idle"] {
        s.ctl_ok(&["stop", n]);
        s.remove_profile(n);
    }
}

fn download_works(s: &Session) {
    let big = (4u64 << 20).to_string();
    assert!(probe(s, "inst-net", &["download", INET_V4, &big]).starts_with(&big));
}

/// `sandboxd` run by hand as the user, with `env` (`VAR=value`) in front.
fn second_daemon(s: &Session, env: &[&str]) -> (Output, Duration) {
    let mut args = vec!["env"];
    args.extend_from_slice(env);
    let bin = s.bin().join("sandboxd");
    args.push(bin.to_str().unwrap());
    let t0 = Instant::now();
    let out = s.user(&args);
    (out, t0.elapsed())
}

/// `program` as the test user in its session's environment, as a child of this process
/// (so its pid is the program's own).
fn as_user(s: &Session, program: &Path) -> Command {
    let env = root(
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/user-session"))
            .args(["env", USER]),
    );
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for line in String::from_utf8_lossy(&env.stdout).lines() {
        if let Some((k, v)) = line.split_once('=') {
            cmd.env(k, v);
        }
    }
    use std::os::unix::process::CommandExt;
    let gid = nix::unistd::User::from_uid(s.uid.into())
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    cmd.uid(s.uid).gid(gid).current_dir(&s.home);
    cmd
}

fn assert_refused(out: &Output, took: Duration, daemon: u32) {
    let err = stderr(out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    // The user-session wrapper (su) is part of this time.
    assert!(took < Duration::from_secs(1), "took {took:?}: {err}");
    assert!(err.contains("already running for this user"), "{err}");
    assert!(err.contains(&format!("pid {daemon}")), "{err}");
    assert!(err.contains("journalctl --user -u sandboxd"), "{err}");
}

#[test]
fn a_second_daemon_on_the_same_bus_is_refused_and_touches_nothing() {
    let _g = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    start_two(s);
    download_works(s);
    let before = snapshot(s, &["inst-net", "inst-idle"]);
    let (out, took) = second_daemon(s, &[]);
    assert_refused(&out, took, before.daemon);
    assert_same(&snapshot(s, &["inst-net", "inst-idle"]), &before);
    download_works(s);

    // Killed at any point of its short life (SIGTERM, then SIGKILL), it changes nothing.
    for delay_us in [0u64, 200, 1000, 3000, 10000] {
        let mut child = as_user(s, &s.bin().join("sandboxd"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    let after = snapshot(s, &["inst-net", "inst-idle"]);
    assert_eq!(after.daemon, before.daemon, "the service was harmed");
    assert_same(&after, &before);
    download_works(s);

    // A crash releases the lock: the restarted service takes it and adopts both.
    let new = s.crash_daemon();
    let holder = std::fs::read_to_string(s.runtime_dir.join("sandboxd/daemon.lock")).unwrap();
    assert_eq!(holder.trim(), new.to_string());
    assert_eq!(s.leader_of("inst-net"), before.leaders[0]);
    assert_eq!(s.leader_of("inst-idle"), before.leaders[1]);
    stop_two(s);
}

/// The same runtime directory on another bus (a private `dbus-daemon`): refused by the
/// lock before it owns anything on that bus.
#[test]
fn a_second_daemon_on_another_bus_is_refused_by_the_lock() {
    let _g = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    start_two(s);
    let socket = s.runtime_dir.join("e2e-private-bus");
    let _ = std::fs::remove_file(&socket);
    let address = format!("unix:path={}", socket.display());
    let mut bus = as_user(s, Path::new("/usr/bin/dbus-daemon"))
        .args(["--session", "--nofork", "--nopidfile"])
        .arg(format!("--address={address}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    s.wait_for("the private bus", Duration::from_secs(10), || {
        socket.exists().then_some(())
    });
    let mut before = snapshot(s, &["inst-net", "inst-idle"]);
    // The private bus is the test's own, and goes before the comparison.
    before.processes.remove(&bus.id());
    let (out, took) = second_daemon(s, &[&format!("DBUS_SESSION_BUS_ADDRESS={address}")]);
    assert_refused(&out, took, before.daemon);
    let owner = s.user(&[
        "busctl",
        &format!("--address={address}"),
        "status",
        "org.sandboxd.Sandboxd1",
    ]);
    assert!(
        !owner.status.success(),
        "the name was taken on the private bus"
    );
    let _ = bus.kill();
    let _ = bus.wait();
    let _ = std::fs::remove_file(&socket);
    let mut after = snapshot(s, &["inst-net", "inst-idle"]);
    after.files.retain(|(p, _)| !p.ends_with("e2e-private-bus"));
    assert_same(&after, &before);
    download_works(s);
    stop_two(s);
}

#[test]
fn help_version_and_a_clear_error_outside_a_session() {
    let s = session();
    let bin = s.bin().join("sandboxd");
    let help = Command::new(&bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(
        stdout(&help).contains("One daemon runs per user"),
        "{}",
        stdout(&help)
    );
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert_eq!(
        stdout(&version).trim(),
        format!("sandboxd {}", env!("CARGO_PKG_VERSION"))
    );
    let empty = tempfile::tempdir().unwrap();
    for (env, says) in [
        (vec![], "XDG_RUNTIME_DIR is not set"),
        (
            vec![("XDG_RUNTIME_DIR", empty.path().to_str().unwrap())],
            "no session bus",
        ),
    ] {
        let t0 = Instant::now();
        let out = Command::new(&bin)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env)
            .output()
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains("not in a user session") && err.contains(says),
            "{err}"
        );
    }
    // Nothing was made in the runtime directory it was given.
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// A private bus and runtime directory for a daemon of the test user's outside systemd.
struct AltDaemon {
    dir: PathBuf,
    address: String,
    bus: Option<std::process::Child>,
}

impl AltDaemon {
    fn new(s: &Session) -> Self {
        let dir = s.runtime_dir.join("e2e-alt");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        s.chown(&dir);
        let address = format!("unix:path={}/bus", dir.display());
        Self {
            dir,
            address,
            bus: None,
        }
    }

    fn start_bus(&mut self, s: &Session) {
        let _ = std::fs::remove_file(self.dir.join("bus"));
        self.bus = Some(
            as_user(s, Path::new("/usr/bin/dbus-daemon"))
                .args(["--session", "--nofork", "--nopidfile"])
                .arg(format!("--address={}", self.address))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let sock = self.dir.join("bus");
        s.wait_for("the private bus", Duration::from_secs(10), || {
            sock.exists().then_some(())
        });
    }

    fn kill_bus(&mut self) {
        if let Some(mut b) = self.bus.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("XDG_RUNTIME_DIR", &self.dir)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address);
    }

    fn daemon(&self, s: &Session) -> std::process::Child {
        let mut cmd = as_user(s, &s.bin().join("sandboxd"));
        self.env(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Asking for the name's owner never starts anything (a method call to the name
        // would let the bus activate a second daemon from the user's service files).
        s.wait_for(
            "the daemon on the private bus",
            Duration::from_secs(20),
            || {
                s.user(&[
                    "busctl",
                    &format!("--address={}", self.address),
                    "status",
                    "org.sandboxd.Sandboxd1",
                ])
                .status
                .success()
                .then_some(())
            },
        );
        child
    }

    fn ctl(&self, s: &Session, args: &[&str]) -> Output {
        let mut cmd = as_user(s, &s.bin().join("sandboxctl"));
        self.env(&mut cmd);
        cmd.args(args).stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for AltDaemon {
    fn drop(&mut self) {
        self.kill_bus();
    }
}

/// A daemon whose bus goes away stops serving and exits, and stops no sandbox: the next
/// daemon adopts it.
#[test]
fn a_daemon_that_loses_its_bus_leaves_its_sandboxes_running() {
    let _g = lock();
    let s = session();
    s.ready();
    let before: BTreeSet<u32> = settled_processes(s.uid);
    s.busybox_profile("inst-alt", "exec sleep 1000", "");
    let mut alt = AltDaemon::new(s);
    alt.start_bus(s);
    let mut daemon = alt.daemon(s);
    let out = alt.ctl(s, &["start", "inst-alt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&alt.ctl(s, &["list", "--json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let leader = rows[0]["leader"].as_u64().unwrap() as u32;
    assert!(alive(leader));

    alt.kill_bus();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = daemon.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the daemon kept running without its bus"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("without stopping any sandbox"), "{err}");
    assert!(alive(leader), "the sandbox died with its daemon's bus");

    // The next daemon adopts it, and an orderly stop ends everything.
    alt.start_bus(s);
    let mut next = alt.daemon(s);
    let list = stdout(&alt.ctl(s, &["list", "--json"]));
    assert!(list.contains(&format!("\"leader\":{leader}")), "{list}");
    let out = alt.ctl(s, &["stop", "inst-alt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!alive(leader));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(next.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = next.wait();
    alt.kill_bus();
    s.remove_profile("inst-alt");
    // Everything the two daemons started ends with them (their namespace holder, spare
    // helpers): wait for it, so that no later test sees it go. The session daemon's own
    // spare helpers may have been replaced meanwhile; they are its children, the other
    // daemons' orphans are not.
    let session_daemon = s.daemon_pid();
    let mut left = BTreeSet::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        left = processes_of(s.uid)
            .into_iter()
            .filter(|p| !before.contains(p))
            .filter(|p| sandboxd::procfs::Stat::of(*p).is_some_and(|st| st.ppid != session_daemon))
            .collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let described: Vec<String> = left
        .iter()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!("{p} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect();
    assert!(
        left.is_empty(),
        "the second daemon's processes stayed: {described:?}"
    );
}
