//! End to end: `sandboxctl run`, one command in a throwaway sandbox, from a shell as a user
//! types it: the current folder, a copy-on-write root, exit statuses, stdio, a terminal,
//! a killed caller, many at once, and nothing left behind. Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// What a run could leave behind: sandboxes, runc state, bundles, layers, run profiles,
/// mounts in the daemon's namespace, processes of the test user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remains {
    sandboxes: usize,
    runc: usize,
    bundles: usize,
    layers: usize,
    runs: usize,
    mounts: usize,
    processes: usize,
}

/// A process of the test user whose command line (NUL-separated) passes `wanted`.
fn process_with(s: &Session, wanted: impl Fn(&[u8]) -> bool) -> Option<u32> {
    processes_of(s.uid)
        .into_iter()
        .find(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| wanted(&c)))
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| r.count())
}

fn remains(s: &Session) -> Remains {
    let holder: String = std::fs::read_to_string(s.runtime_dir.join("sandboxd/userns.pid"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .into();
    Remains {
        sandboxes: s.list().len(),
        runc: entries(&s.runc_root()),
        bundles: entries(&s.bundles()),
        layers: entries(&s.home.join(".local/share/sandboxd/layers")),
        runs: entries(&s.runtime_dir.join("sandboxd/runs")),
        mounts: std::fs::read_to_string(format!("/proc/{holder}/mountinfo"))
            .unwrap_or_default()
            .lines()
            .count(),
        processes: processes_but_the_pool(s.uid).len(),
    }
}

/// Waits (bounded) until nothing of a run is left beyond `before`.
fn assert_clean(s: &Session, before: &Remains) {
    let t0 = Instant::now();
    loop {
        let now = remains(s);
        // Processes of an earlier test may still be ending: fewer is fine.
        let others_same = Remains {
            processes: before.processes,
            ..now
        } == *before;
        if others_same && now.processes <= before.processes {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "left behind: {now:?}, before: {before:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A project folder of the test user's, empty.
fn project(s: &Session, name: &str) -> PathBuf {
    let dir = s.home.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    s.chown(&dir);
    dir
}

/// Runs `script` with sh as the test user, in `dir`.
fn sh_in(s: &Session, dir: &Path, script: &str) -> std::process::Output {
    let ctl = s.bin().join("sandboxctl");
    s.user(&[
        "sh",
        "-c",
        &format!("cd '{}' && {script}", dir.display()),
        "sh",
        &ctl.display().to_string(),
    ])
}

/// The first acceptance: in a project folder, the command works there and writes there
/// as the user, its write to /usr lands nowhere on the host, and nothing remains.
#[test]
fn a_run_works_in_the_current_folder_and_leaves_nothing() {
    let _g = lock();
    let s = session();
    s.ready();
    s.stop_all();
    let dir = project(s, "e2e-project");
    let before = remains(s);
    let out = sh_in(
        s,
        &dir,
        "\"$1\" run -- sh -c 'echo hi > out.txt; touch /usr/planted; echo $PWD'",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", dir.display()));
    let made = dir.join("out.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "hi\n");
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), s.uid);
    assert!(!Path::new("/usr/planted").exists());
    assert_clean(s, &before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `--keep` the sandbox stays: `diff` lists what the command added, changed and
/// deleted (`--json` the same), and `stop` removes sandbox and layer.
#[test]
fn a_kept_run_shows_its_changes() {
    let _g = lock();
    let s = session();
    s.ready();
    let root = s.busybox_root_copy("e2e-run-root");
    std::fs::create_dir_all(root.join("usr")).unwrap();
    std::fs::write(root.join("etc/hostname"), "before\n").unwrap();
    s.chown(&root);
    s.write_profile(
        "e2e-runbase",
        &format!(
            "[rootfs]\npath = \"{}\"\n[network]\nmode = \"none\"\n",
            root.display()
        ),
    );
    let dir = project(s, "e2e-project-kept");
    let out = sh_in(
        s,
        &dir,
        "\"$1\" run --keep --name e2e-kept --profile e2e-runbase -- sh -c 'touch /usr/planted; echo after > /etc/hostname; rm /etc/group'",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sandboxctl stop e2e-kept"),
        "{}",
        stderr(&out)
    );
    let diff = s.ctl_ok(&["diff", "e2e-kept"]);
    assert_eq!(diff, "D /etc/group\nC /etc/hostname\nA /usr/planted\n");
    let json: serde_json::Value =
        serde_json::from_str(&s.ctl_ok(&["diff", "e2e-kept", "--json"])).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"kind": "deleted", "path": "/etc/group"},
            {"kind": "changed", "path": "/etc/hostname"},
            {"kind": "added", "path": "/usr/planted"},
        ])
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "before\n"
    );
    s.ctl_ok(&["stop", "e2e-kept"]);
    assert!(!s
        .home
        .join(".local/share/sandboxd/layers/e2e-kept")
        .exists());
    assert!(s.status("e2e-kept").is_none());
    s.remove_profile("e2e-runbase");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The command's exit status is sandboxctl's (128+N for a signal); stdin is piped through
/// and a 3 MB binary stream comes out intact.
#[test]
fn a_run_passes_status_and_stdio() {
    let _g = lock();
    let s = session();
    s.ready();
    let dir = project(s, "e2e-project-io");
    let code = |script: &str| sh_in(s, &dir, script).status.code();
    assert_eq!(code("\"$1\" run -- sh -c 'exit 7'"), Some(7));
    assert_eq!(code("\"$1\" run -- sh -c 'kill -9 $$'"), Some(137));
    assert_eq!(code("\"$1\" run -- nosuchcommand"), Some(127));
    let out = sh_in(s, &dir, "printf data | \"$1\" run -- sha256sum");
    assert!(
        stdout(&out)
            .starts_with("3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"),
        "{}",
        stderr(&out)
    );
    let out = sh_in(
        s,
        &dir,
        "head -c 3000000 /dev/urandom > in.bin && \"$1\" run -- cat in.bin | cmp - in.bin && echo same",
    );
    assert_eq!(stdout(&out), "same\n", "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// On a terminal (tmux): a pty inside, resizes followed, Ctrl-C ends a `sleep`, and the
/// terminal is sane afterwards.
#[test]
fn a_run_on_a_terminal() {
    let _g = lock();
    let s = session();
    s.ready();
    let dir = project(s, "e2e-project-tty");
    let tmux = Tmux::start(s);
    tmux.send(&format!("cd {}; PS1='host$ '", dir.display()));
    tmux.send("sandboxctl run -- sh");
    std::thread::sleep(Duration::from_millis(800));
    tmux.send("echo T\"\"TY=$(tty) S\"\"IZE=$(stty size)");
    let screen = tmux.wait("SIZE=");
    assert!(screen.contains("TTY=/dev/pts/0 SIZE=24 80"), "{screen}");
    tmux.cmd(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.send("echo R\"\"ESIZED=$(stty size)");
    assert!(
        tmux.wait("RESIZED=").contains("RESIZED=30 100"),
        "{}",
        tmux.screen()
    );
    // An interactive shell drops the rest of a line on Ctrl-C: ask for $? afterwards.
    tmux.send("sleep 1000");
    std::thread::sleep(Duration::from_millis(500));
    tmux.cmd(&["send-keys", "-t", "t", "C-c"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.send("echo S\"\"LEPT=$?");
    assert!(
        tmux.wait("SLEPT=").contains("SLEPT=130"),
        "{}",
        tmux.screen()
    );
    tmux.send("exit 3");
    // Typing on before the host's prompt is back would go to the ended run.
    let t0 = Instant::now();
    while tmux.screen().lines().rfind(|l| !l.trim().is_empty()) != Some("host$") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.send("echo R\"\"C=$?; stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo E\"\"ND");
    let screen = tmux.wait("END");
    assert!(screen.contains("RC=3"), "{screen}");
    assert!(
        screen.contains("icanon echo END"),
        "the terminal was not restored: {screen}"
    );
    drop(tmux);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGKILL to sandboxctl during a run: the daemon sees its caller leave and removes the
/// sandbox within two seconds. SIGTERM reaches the command, whose status is sandboxctl's.
#[test]
fn a_killed_caller_takes_its_run_along() {
    let _g = lock();
    let s = session();
    s.ready();
    s.stop_all();
    let dir = project(s, "e2e-project-kill");
    let before = remains(s);
    let ctl = s.bin().join("sandboxctl");
    let mut child = std::process::Command::new(manifest().join("scripts/user-session"))
        .args(["run", USER])
        .arg(&ctl)
        .args(["run", "--no-cwd", "--", "sleep", "1000"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = s.wait_for("the run's sandbox", Duration::from_secs(15), || {
        s.list().into_iter().find(|x| {
            x["name"].as_str().is_some_and(|n| n.starts_with("run-")) && x["state"] == "running"
        })
    });
    let name = run["name"].as_str().unwrap().to_string();
    // The sleep runs: then kill the sandboxctl that waits for it.
    s.wait_for("the sleep", Duration::from_secs(10), || {
        let ps = s.ctl_ok(&["exec", &name, "--", "ps", "-o", "comm"]);
        ps.contains("sleep").then_some(())
    });
    let ctl_pid = s.wait_for("sandboxctl's pid", Duration::from_secs(5), || {
        process_with(s, |c| {
            c.starts_with(ctl.display().to_string().as_bytes())
                && c.windows(4).any(|w| w == b"run\0")
        })
    });
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ctl_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    s.wait_for("the run to be removed", Duration::from_secs(2), || {
        s.status(&name).is_none().then_some(())
    });
    assert!(t0.elapsed() < Duration::from_secs(2));
    let _ = child.wait();
    assert_clean(s, &before);

    // SIGTERM to sandboxctl goes to the command: its status (143) comes back.
    let mut child = std::process::Command::new(manifest().join("scripts/user-session"))
        .args(["run", USER])
        .arg(&ctl)
        .args(["run", "--no-cwd", "--", "sleep", "1000"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ctl_pid = s.wait_for("sandboxctl run", Duration::from_secs(15), || {
        let running = s
            .list()
            .into_iter()
            .any(|x| x["name"].as_str().is_some_and(|n| n.starts_with("run-")));
        running
            .then(|| process_with(s, |c| c.starts_with(ctl.display().to_string().as_bytes())))
            .flatten()
    });
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ctl_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert_clean(s, &before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Twenty runs at once from one shell all succeed and leave nothing behind.
#[test]
fn twenty_runs_at_once() {
    let _g = lock();
    let s = session();
    s.ready();
    s.stop_all();
    let dir = project(s, "e2e-project-many");
    let before = remains(s);
    let out = sh_in(
        s,
        &dir,
        "for i in $(seq 20); do \"$1\" run -- true & done; fails=0; for j in $(jobs -p); do wait $j || fails=$((fails+1)); done; echo fails=$fails",
    );
    assert_eq!(stdout(&out), "fails=0\n", "{}", stderr(&out));
    assert_clean(s, &before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a run may not have: a folder that would expose the home, a profile that publishes
/// ports, a missing profile; each with its reason.
#[test]
fn runs_are_refused_with_a_reason() {
    let _g = lock();
    let s = session();
    s.ready();
    let home = s.home.clone();
    let out = sh_in(s, &home, "\"$1\" run -- true");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds your home") && stderr(&out).contains("--no-cwd"),
        "{}",
        stderr(&out)
    );
    s.write_profile(
        "e2e-published",
        "[rootfs]\nhost = true\n[network]\npublish = [\"127.0.0.1:18080:80\"]\n",
    );
    let out = s.ctl(&[
        "run",
        "--no-cwd",
        "--profile",
        "e2e-published",
        "--",
        "true",
    ]);
    assert!(stderr(&out).contains("publishes ports"), "{}", stderr(&out));
    let out = s.ctl(&["run", "--no-cwd", "--profile", "e2e-nosuch", "--", "true"]);
    assert!(stderr(&out).contains("e2e-nosuch"), "{}", stderr(&out));
    s.remove_profile("e2e-published");
}

/// A daemon killed with SIGKILL while runs live: the next one adopts a kept run (its diff
/// still works), removes the layer of a run that ended while no daemon ran, and watches a
/// run's caller again (the caller gone, the run goes).
#[test]
fn runs_outlive_a_daemon_crash() {
    let _g = lock();
    let s = session();
    s.ready();
    s.stop_all();
    let layers = s.home.join(".local/share/sandboxd/layers");
    for name in ["e2e-crash-kept", "e2e-crash-ended"] {
        s.ctl_ok(&[
            "run",
            "--no-cwd",
            "--keep",
            "--name",
            name,
            "--",
            "touch",
            "/usr/e2e-crash",
        ]);
        assert!(layers.join(name).exists());
    }
    // A run whose caller is killed while no daemon runs.
    let ctl = s.bin().join("sandboxctl");
    let mut caller = std::process::Command::new(manifest().join("scripts/user-session"))
        .args(["run", USER])
        .arg(&ctl)
        .args([
            "run",
            "--no-cwd",
            "--name",
            "e2e-crash-owned",
            "--",
            "sleep",
            "1000",
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    s.wait_for("the owned run", Duration::from_secs(15), || {
        (s.status("e2e-crash-owned")
            .is_some_and(|x| x["state"] == "running"))
        .then_some(())
    });
    let ended = s.leader_of("e2e-crash-ended");
    // Stopped, the daemon can neither see the run end nor reap it; then it is killed.
    let daemon = nix::unistd::Pid::from_raw(s.daemon_pid() as i32);
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGSTOP).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ended as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let owned_ctl = process_with(s, |c| c.windows(16).any(|w| w == b"e2e-crash-owned\0"))
        .expect("the owned run's sandboxctl");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(owned_ctl as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = caller.wait();
    s.crash_daemon();
    s.wait_for(
        "the ended run's layer to go",
        Duration::from_secs(10),
        || (!layers.join("e2e-crash-ended").exists()).then_some(()),
    );
    assert!(s.status("e2e-crash-ended").is_none());
    assert_eq!(s.ctl_ok(&["diff", "e2e-crash-kept"]), "A /usr/e2e-crash\n");
    s.wait_for("the orphaned run to go", Duration::from_secs(10), || {
        s.status("e2e-crash-owned").is_none().then_some(())
    });
    s.ctl_ok(&["stop", "e2e-crash-kept"]);
    assert!(!layers.join("e2e-crash-kept").exists());
}
