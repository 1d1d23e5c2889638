//! sandbox-init as a process: exit status, signal forwarding, zombie reaping, idling.

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
