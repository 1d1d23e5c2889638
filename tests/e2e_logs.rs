//! End to end: each sandbox's log (`sandboxctl logs`, `ReadLog`, the tail in `status`)
//! and the start-time checks of what a profile's root file system must have. These
//! machines run no journald, so this is the case without a journal; the same file is
//! written where one runs (the journal then also gets the output). Needs root, like
//! tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn wait_state(s: &Session, name: &str, want: &str) {
    s.wait_for(&format!("{name} {want}"), Duration::from_secs(20), || {
        s.status(name).filter(|st| st["state"] == want).map(|_| ())
    });
}

/// A command that prints three lines and exits 1: `logs` shows them in order with the
/// daemon's exit line, `status` shows the tail, `-n`/`--json`/`--since` select, and the
/// log outlives the sandbox.
#[test]
fn a_failed_sandbox_says_why_in_its_log_and_status() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile(
        "e2e-logs",
        "echo one; echo two; echo three; echo oops >&2; exit 1",
        "",
    );
    s.ctl_ok(&["start", "e2e-logs"]);
    wait_state(s, "e2e-logs", "failed");
    let text = s.ctl_ok(&["logs", "e2e-logs"]);
    let lines: Vec<&str> = text.lines().collect();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("{l:?} not in the log:\n{text}"))
    };
    assert!(at("one") < at("two") && at("two") < at("three"), "{text}");
    at("oops");
    assert!(
        at("-- sandboxd: exited with status 1") > at("three"),
        "{text}"
    );
    assert!(text.contains("-- sandboxd: starting from "), "{text}");

    let status = stdout(&s.ctl(&["status", "e2e-logs"]));
    assert!(status.contains("failed"), "{status}");
    assert!(
        status.contains("last lines (sandboxctl logs e2e-logs)"),
        "{status}"
    );
    assert!(status.contains("    three"), "{status}");
    assert!(
        status.contains("    -- sandboxd: exited with status 1"),
        "{status}"
    );

    assert_eq!(
        s.ctl_ok(&["logs", "-n", "1", "e2e-logs"]),
        "-- sandboxd: exited with status 1\n"
    );
    let json = s.ctl_ok(&["logs", "--json", "e2e-logs"]);
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let three = records.iter().find(|r| r["text"] == "three").unwrap();
    assert_eq!(three["stream"], "out");
    assert!(records
        .iter()
        .any(|r| r["text"] == "oops" && r["stream"] == "err"));
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Nothing is newer than an hour from now; everything is from the last hour.
    assert!(s
        .ctl_ok(&["logs", "--since", "1h", "e2e-logs"])
        .contains("three"));
    let future = format!(
        "@{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600
    );
    assert_eq!(s.ctl_ok(&["logs", "--since", &future, "e2e-logs"]), "");
    let bad = s.ctl(&["logs", "--since", "soon", "e2e-logs"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    // Dismissed, the sandbox is gone from the list but its log stays readable.
    s.ctl_ok(&["stop", "e2e-logs"]);
    assert!(s.ctl_ok(&["logs", "e2e-logs"]).contains("three"));
    let file = s.home.join(".local/state/sandboxd/logs/e2e-logs.log");
    assert!(file.exists(), "{}", file.display());
    // Names that are not sandbox names never reach a path; unknown ones say so.
    let out = s.ctl(&["logs", "../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("InvalidArgs"), "{}", stderr(&out));
    let out = s.ctl(&["logs", "e2e-no-such-profile"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NoSuchProfile"), "{}", stderr(&out));
    s.remove_profile("e2e-logs");
}

/// `logs -f` prints lines as a running sandbox writes them and ends when it does; a
/// sandbox writing 100 MiB (without a newline) leaves no more than the cap on disk and a
/// responsive daemon.
#[test]
fn logs_follow_a_running_sandbox_and_stay_within_the_cap() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile(
        "e2e-logs-follow",
        "i=0; while [ $i -lt 20 ]; do echo tick$i; i=$((i+1)); sleep 0.1; done",
        "",
    );
    s.ctl_ok(&["start", "e2e-logs-follow"]);
    let ctl = s.bin().join("sandboxctl");
    let t0 = Instant::now();
    let mut follow = Command::new(manifest().join("scripts/user-session"))
        .args([
            "run",
            USER,
            ctl.to_str().unwrap(),
            "logs",
            "-f",
            "e2e-logs-follow",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // The first line arrives while the sandbox still runs (it runs for 2 s).
    let mut out = follow.stdout.take().unwrap();
    let mut first = [0u8; 16];
    use std::io::Read;
    let n = out.read(&mut first).unwrap();
    assert!(n > 0);
    assert!(
        s.status("e2e-logs-follow").unwrap()["state"] == "running",
        "the first line came only after the sandbox ended"
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = follow.wait().unwrap();
    assert!(status.success());
    assert!(t0.elapsed() < Duration::from_secs(15));
    let text = format!("{}{rest}", String::from_utf8_lossy(&first[..n]));
    for i in 0..20 {
        assert!(
            text.contains(&format!("tick{i}\n")),
            "tick{i} missing:\n{text}"
        );
    }
    assert!(text.contains("-- sandboxd: exited with status 0"), "{text}");
    s.ctl_ok(&["stop", "e2e-logs-follow"]);
    s.remove_profile("e2e-logs-follow");

    // 100 MiB without a newline, then a last line.
    s.busybox_profile(
        "e2e-logs-flood",
        "head -c 104857600 /dev/zero | tr '\\0' x; echo; echo flood-done",
        "",
    );
    let daemon = s.daemon_pid();
    s.ctl_ok(&["start", "e2e-logs-flood"]);
    s.wait_for("the flood to end", Duration::from_secs(120), || {
        s.status("e2e-logs-flood")
            .filter(|st| st["state"] == "stopped")
            .map(|_| ())
    });
    let logs = s.home.join(".local/state/sandboxd/logs");
    let on_disk: u64 = ["e2e-logs-flood.log", "e2e-logs-flood.log.1"]
        .iter()
        .filter_map(|f| std::fs::metadata(logs.join(f)).ok())
        .map(|m| m.len())
        .sum();
    assert!(
        on_disk <= 8 << 20,
        "{on_disk} bytes on disk, over the 8 MiB default cap"
    );
    assert!(
        on_disk >= 4 << 20,
        "{on_disk}: the cap is also what is kept"
    );
    let tail = s.ctl_ok(&["logs", "-n", "2", "e2e-logs-flood"]);
    assert_eq!(tail, "flood-done\n-- sandboxd: exited with status 0\n");
    assert_eq!(s.daemon_pid(), daemon, "the daemon survived");
    s.ctl_ok(&["stop", "e2e-logs-flood"]);
    s.remove_profile("e2e-logs-flood");
    let _ = std::fs::remove_file(logs.join("e2e-logs-flood.log"));
    let _ = std::fs::remove_file(logs.join("e2e-logs-flood.log.1"));
}

/// What a root file system on disk must have is checked before anything starts: an
/// absolute command and the working directory; the error names the key.
#[test]
fn a_command_or_cwd_missing_from_the_root_is_refused_at_start() {
    let _g = lock();
    let s = session();
    s.ready();
    let base =
        "[rootfs]\npath = \"~/.local/share/sandboxd/rootfs/busybox\"\n[network]\nmode = \"none\"\n";
    for (name, process, key, says) in [
        (
            "e2e-nocmd",
            "command = [\"/usr/bin/python3\", \"-V\"]",
            "process.command",
            "does not exist",
        ),
        (
            "e2e-noexec",
            "command = [\"/etc/passwd\"]",
            "process.command",
            "not executable",
        ),
        (
            "e2e-nocwd",
            "command = [\"/bin/true\"]\ncwd = \"/srv/app\"",
            "process.cwd",
            "not a directory",
        ),
    ] {
        s.write_profile(name, &format!("{base}[process]\n{process}\n"));
        let out = s.ctl(&["start", name]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(key) && err.contains(says), "{name}: {err}");
        assert!(err.contains("InvalidProfile"), "{name}: {err}");
        // `check` says the same, without the daemon.
        let out = s.ctl(&["check", name]);
        assert_eq!(out.status.code(), Some(1), "check {name}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains(key) && err.contains(says),
            "check {name}: {err}"
        );
        let _ = s.ctl(&["stop", name]);
        s.remove_profile(name);
    }
    // A command inside a bound folder is not looked for in the root.
    let dir = s.home.join("e2e-bound-bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("run"), "#!/bin/sh\necho bound-ran\n").unwrap();
    root(Command::new("chmod").arg("755").arg(dir.join("run")));
    s.chown(&dir);
    s.write_profile(
        "e2e-bound-cmd",
        &format!(
            "{base}[process]\ncommand = [\"/opt/tool/run\"]\ncwd = \"/opt/tool\"\n[[mount]]\nsource = \"{}\"\ndestination = \"/opt/tool\"\n",
            dir.display()
        ),
    );
    s.ctl_ok(&["start", "e2e-bound-cmd"]);
    wait_state(s, "e2e-bound-cmd", "stopped");
    assert!(s.ctl_ok(&["logs", "e2e-bound-cmd"]).contains("bound-ran"));
    s.ctl_ok(&["stop", "e2e-bound-cmd"]);
    s.remove_profile("e2e-bound-cmd");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Messages that say what happened and what to do: a profile that is not running is not
/// an unknown name; an empty refusal log says so.
#[test]
fn messages_name_the_fix() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-msg", "exec sleep 1000", "");
    let out = s.ctl(&["stop", "e2e-msg"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("NotRunning") && err.contains("sandboxctl start e2e-msg"),
        "{err}"
    );
    let out = s.ctl(&["stop", "e2e-msg-typo"]);
    let err = stderr(&out);
    assert!(
        err.contains("NoSuchSandbox") && err.contains("sandboxctl profiles"),
        "{err}"
    );
    s.ctl_ok(&["start", "e2e-msg"]);
    let out = s.ctl(&["netlog", "e2e-msg"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "no refusals\n");
    s.finish("e2e-msg");
}
