//! End to end: faults. After each, the daemon serves, `list` tells the truth and nothing
//! leaks. Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use sandboxd::procfs::Stat;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn assert_clean(s: &Session, name: &str) {
    assert!(
        !s.runc_root().join(name).exists(),
        "runc state of {name} left"
    );
    assert!(!s.bundles().join(name).exists(), "bundle of {name} left");
}

/// SIGKILL of a sandbox's pid 1: shown failed with status 137, cleaned up, restartable.
#[test]
fn kill_9_of_pid_1() {
    let _g = lock();
    let s = session();
    s.ready();
    let (data, bind) = BoundData::new(s, "e2e-k9");
    s.busybox_profile(
        "e2e-k9",
        &format!("{} && exec sleep 1000", BoundData::WRITE),
        &bind,
    );
    s.ctl_ok(&["start", "e2e-k9"]);
    data.wait_written(s);
    let pid = s.leader_of("e2e-k9");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = s.wait_for("e2e-k9 to fail", Duration::from_secs(10), || {
        s.status("e2e-k9").filter(|v| v["state"] == "failed")
    });
    assert_eq!(status["exit_status"], 137);
    assert_eq!(status["leader"], 0);
    assert_clean(s, "e2e-k9");
    data.assert_intact();
    s.ctl_ok(&["start", "e2e-k9"]);
    assert_eq!(s.status("e2e-k9").unwrap()["state"], "running");
    s.ctl_ok(&["stop", "e2e-k9"]);
    s.remove_profile("e2e-k9");
}

/// A profile deleted while its sandbox runs: the sandbox keeps running and stops cleanly;
/// a profile edited while it runs takes effect at the next start.
#[test]
fn profile_deleted_or_edited_while_running() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile(
        "e2e-edit",
        "exec sleep 1000",
        "[process.env]\nMARK = \"one\"\n",
    );
    s.ctl_ok(&["start", "e2e-edit"]);
    s.busybox_profile(
        "e2e-edit",
        "exec sleep 1000",
        "[process.env]\nMARK = \"two\"\n",
    );
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-edit", "--", "sh", "-c", "echo $MARK"]),
        "one\n"
    );
    s.ctl_ok(&["restart", "e2e-edit"]);
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-edit", "--", "sh", "-c", "echo $MARK"]),
        "two\n"
    );
    s.remove_profile("e2e-edit");
    assert_eq!(s.status("e2e-edit").unwrap()["state"], "running");
    s.ctl_ok(&["stop", "e2e-edit"]);
    assert_clean(s, "e2e-edit");
    let out = s.ctl(&["start", "e2e-edit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NoSuchProfile"), "{}", stderr(&out));
}

/// The root file system removed under a stopped sandbox: a clear start error naming it.
#[test]
fn rootfs_removed_under_a_stopped_sandbox() {
    let _g = lock();
    let s = session();
    s.ready();
    let tree = s.busybox_root_copy("e2e-gone-root");
    s.write_profile("e2e-gone", "[rootfs]\npath = \"~/e2e-gone-root\"\n[process]\ncommand = [\"sleep\", \"1000\"]\n[network]\nmode = \"none\"\n");
    s.ctl_ok(&["start", "e2e-gone"]);
    s.ctl_ok(&["stop", "e2e-gone"]);
    std::fs::remove_dir_all(&tree).unwrap();
    let out = s.ctl(&["start", "e2e-gone"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("InvalidProfile")
            && err.contains("rootfs.path")
            && err.contains("e2e-gone-root"),
        "{err}"
    );
    assert_eq!(s.unit_property("ActiveState"), "active");
    assert!(s.list().is_empty());
    s.remove_profile("e2e-gone");
}

/// Stopping the service while sandboxes are starting: every one ends, nothing is left.
#[test]
fn service_stop_while_sandboxes_start() {
    let _g = lock();
    let s = session();
    s.ready();
    let names = ["e2e-race-a", "e2e-race-b", "e2e-race-c"];
    for n in names {
        s.busybox_profile(n, "exec sleep 1000", "");
    }
    let ctl = s.bin().join("sandboxctl");
    let starts: Vec<_> = names
        .iter()
        .map(|n| {
            Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/user-session"))
                .args(["run", USER, ctl.to_str().unwrap(), "start", n])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    s.stop_daemon();
    for mut c in starts {
        let _ = c.wait();
    }
    for n in names {
        assert_clean(s, n);
        s.remove_profile(n);
    }
    let left: Vec<u32> = processes_of(s.uid)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("sandbox-init") || c.starts_with("sleep\u{0}1000"))
        })
        .collect();
    assert!(
        left.is_empty(),
        "sandbox processes survived the service stop: {left:?}"
    );
    s.start_daemon();
    assert!(s.list().is_empty());
}

/// Puts a file back as it was when dropped.
struct Restore(std::path::PathBuf, Vec<u8>);

impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::write(&self.0, &self.1).unwrap();
    }
}

/// `sandboxctl doctor` finds nothing missing on this machine; with the test user's
/// subordinate ids removed it names them and the command that adds them.
#[test]
fn doctor_names_what_is_missing() {
    let _g = lock();
    let s = session();
    s.ready();
    let out = s.ctl(&["doctor"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!stdout(&out).contains("FAIL"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ok    subordinate uids"),
        "{}",
        stdout(&out)
    );
    // A sandbox's network is really set up (tproxy, transparent sockets) in a throwaway
    // namespace.
    assert!(
        stdout(&out).contains("ok    transparent proxy"),
        "{}",
        stdout(&out)
    );
    // runc applies the filter here, read from inside a throwaway sandbox.
    assert!(
        stdout(&out).contains("ok    seccomp filter     runc applies it (Seccomp: 2 inside)"),
        "{}",
        stdout(&out)
    );
    // What [dbus] tables and the portals run.
    assert!(
        stdout(&out).contains("ok    D-Bus proxy") && stdout(&out).contains("ok    bubblewrap"),
        "{}",
        stdout(&out)
    );
    // How limits are enforced here, and what would make it better.
    let text = stdout(&out);
    assert!(
        text.contains("enforced by a systemd scope per sandbox")
            || (text.contains("warn  cgroup delegation")
                && text.contains("falls back to RLIMIT_NPROC")
                && text.contains("systemd.unified_cgroup_hierarchy=1")),
        "{text}"
    );
    for file in ["/etc/subuid", "/etc/subgid"] {
        let before = std::fs::read(file).unwrap();
        let _restore = Restore(file.into(), before.clone());
        let kept: String = String::from_utf8(before)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with(&format!("{USER}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(file, kept).unwrap();
        let out = s.ctl(&["doctor"]);
        assert_eq!(out.status.code(), Some(1));
        let text = stdout(&out);
        let what = if file.ends_with("uid") {
            "FAIL  subordinate uids"
        } else {
            "FAIL  subordinate gids"
        };
        assert!(text.contains(what), "{text}");
        assert!(
            text.contains(&format!(
                "fix: sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {USER}"
            )),
            "{text}"
        );
    }
    assert_eq!(s.ctl(&["doctor"]).status.code(), Some(0));
}

/// `$XDG_RUNTIME_DIR/sandboxd` nearly full: a start fails with a clear error and leaves
/// nothing half-made; the daemon keeps serving and starts sandboxes again once there is room.
#[test]
fn runtime_dir_nearly_full() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-full", "exec sleep 1000", "");
    let state = s.runtime_dir.join("sandboxd");
    // A small file system for the daemon's state, mounted while the daemon is stopped so
    // that its (and runc's) view includes it from the start.
    s.stop_daemon();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    root(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700"])
            .arg("tmpfs")
            .arg(&state),
    );
    let _unmount = Unmount(state.clone());
    nix::unistd::chown(&state, Some(s.uid.into()), Some(s.uid.into())).unwrap();
    s.start_daemon();
    // Fill it, leaving less than a bundle needs.
    let filler = state.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=1000"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let out = s.ctl(&["start", "e2e-full"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("No space left on device") && stderr(&out).contains("RuntimeFailed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.status("e2e-full").unwrap()["state"], "failed");
    assert_clean(s, "e2e-full");
    assert_eq!(s.unit_property("ActiveState"), "active");
    // Room again: it starts.
    std::fs::remove_file(&filler).unwrap();
    s.ctl_ok(&["start", "e2e-full"]);
    assert_eq!(s.status("e2e-full").unwrap()["state"], "running");
    s.ctl_ok(&["stop", "e2e-full"]);
    s.stop_daemon();
    drop(_unmount);
    s.start_daemon();
    s.remove_profile("e2e-full");
}

/// SIGKILL of the process that holds the daemon's intermediate user namespace: the daemon
/// exits, systemd restarts it, and the running sandbox is adopted, untouched; exec into it
/// is refused with a clear message until it is restarted.
#[test]
fn kill_9_of_the_namespace_holder() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-holder", "while :; do echo tick; sleep 0.1; done", "");
    s.ctl_ok(&["start", "e2e-holder"]);
    let leader = s.leader_of("e2e-holder");
    let daemon = s.daemon_pid();
    let holder = child_named(daemon, "sleep").expect("the daemon's namespace holder");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    s.wait_for("a new daemon", Duration::from_secs(30), || {
        let pid = s.daemon_pid();
        (pid != 0 && pid != daemon && s.unit_property("ActiveState") == "active").then_some(())
    });
    assert!(alive(leader), "the sandbox died with the namespace holder");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        s.leader_of("e2e-holder"),
        leader,
        "not adopted: {:?}",
        s.list()
    );
    // Nothing can join a namespace whose holder is gone: exec says so and what to do...
    let out = s.ctl(&["exec", "e2e-holder", "--", "echo", "ok"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("restart the sandbox"),
        "{}",
        stderr(&out)
    );
    // ...and after a restart the sandbox lives in the new daemon's namespace.
    s.ctl_ok(&["restart", "e2e-holder"]);
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-holder", "--", "echo", "ok"]),
        "ok\n"
    );
    assert!(!alive(leader));
    s.ctl_ok(&["stop", "e2e-holder"]);
    assert_clean(s, "e2e-holder");
    s.remove_profile("e2e-holder");
}

/// The pid of a process whose command line has all of `parts`, if one runs now.
fn find_process(parts: &[&str]) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                parts.iter().all(|want| args.contains(&want.as_bytes()))
            })
        })
}

/// How many processes of `uid` run under each command name.
fn process_names(uid: u32) -> std::collections::BTreeMap<String, usize> {
    let mut names = std::collections::BTreeMap::new();
    for stat in processes_of(uid).into_iter().filter_map(Stat::of) {
        *names.entry(stat.comm).or_insert(0) += 1;
    }
    names
}

fn mount_count(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

/// A child of `parent` whose command name is `comm`.
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&p| Stat::of(p).is_some_and(|s| s.comm == comm && s.ppid == parent))
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// SIGKILL of runc while it creates a sandbox: the start fails and says so, nothing of the
/// half-made container is left (processes, runc state, bundle, the daemon's fds, the
/// network helper), the daemon serves and the next start works.
#[test]
fn kill_9_of_runc_mid_start() {
    let _g = lock();
    let s = session();
    s.ready();
    const NAME: &str = "e2e-runc9";
    s.write_profile(
        NAME,
        "[rootfs]\nhost = true\n[process]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    // One start and stop first, so the daemon's own resources are at their steady state.
    s.ctl_ok(&["start", NAME]);
    s.ctl_ok(&["stop", NAME]);
    let daemon = s.daemon_pid();
    let (procs, fds) = (process_names(s.uid), fd_count(daemon));
    // Mounts seen by the daemon and by the namespace runc works in.
    let holder = child_named(daemon, "sleep").expect("the namespace holder");
    let mounts = (mount_count(daemon), mount_count(holder));
    let ctl = s.bin().join("sandboxctl");
    // runc is killed at different points of its work: as soon as it is seen, and later.
    let mut caught = 0;
    for delay_ms in [
        0, 0, 1, 2, 3, 4, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80,
    ] {
        let start = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/user-session"))
            .args(["run", USER, ctl.to_str().unwrap(), "start", NAME])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut killed = false;
        while std::time::Instant::now() < deadline {
            if let Some(runc) = find_process(&["create", NAME]) {
                std::thread::sleep(Duration::from_millis(delay_ms));
                killed = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(runc as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok();
                break;
            }
        }
        let out = start.wait_with_output().unwrap();
        let status = s.status(NAME).unwrap();
        if out.status.success() {
            // runc had finished before the signal: the sandbox runs, truly.
            assert_eq!(status["state"], "running", "{status}");
            assert!(alive(status["leader"].as_u64().unwrap() as u32));
            s.ctl_ok(&["stop", NAME]);
            continue;
        }
        caught += 1;
        let err = stderr(&out);
        assert!(killed, "the start failed without the fault: {err}");
        assert_eq!(out.status.code(), Some(1), "{err}");
        // A runc failure is the runtime's error, with what happened to runc.
        assert!(
            err.contains("(RuntimeFailed)")
                && err.contains("runc create")
                && err.contains("killed by signal 9"),
            "{err}"
        );
        // Listed as it is: failed, with no process.
        assert_eq!(status["state"], "failed", "{status}");
        assert_eq!(status["leader"], 0, "{status}");
        assert_clean(s, NAME);
    }
    assert!(
        caught >= 3,
        "runc create was caught running only {caught} times"
    );
    // No process the user did not have before (by name: the daemon replaces its spare
    // network helper), and the daemon's fds as they were.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = process_names(s.uid);
        let new: Vec<&String> = now
            .iter()
            .filter(|(name, n)| procs.get(*name).copied().unwrap_or(0) < **n)
            .map(|(name, _)| name)
            .collect();
        if new.is_empty() && fd_count(daemon) == fds {
            break;
        }
        if std::time::Instant::now() > deadline {
            let links: Vec<String> = std::fs::read_dir(format!("/proc/{daemon}/fd"))
                .unwrap()
                .flatten()
                .map(|e| format!("{:?}", std::fs::read_link(e.path())))
                .collect();
            panic!(
                "left behind: processes {new:?} (now {now:?}, were {procs:?}); {} daemon fds (were {fds}):\n{}",
                fd_count(daemon),
                links.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((mount_count(daemon), mount_count(holder)), mounts);
    assert_eq!(s.daemon_pid(), daemon);
    s.ctl_ok(&["start", NAME]);
    assert_eq!(s.status(NAME).unwrap()["state"], "running");
    s.ctl_ok(&["stop", NAME]);
    assert_clean(s, NAME);
    s.remove_profile(NAME);
}
