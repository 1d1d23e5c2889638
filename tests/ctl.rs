//! sandboxctl's exit statuses and local commands, without a daemon.

use std::process::Command;

const CTL: &str = env!("CARGO_BIN_EXE_sandboxctl");

fn ctl(args: &[&str], bus: &str) -> std::process::Output {
    Command::new(CTL)
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .output()
        .unwrap()
}

#[test]
fn unreachable_daemon_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let bus = format!("unix:path={}/no-bus", dir.path().display());
    let out = ctl(&["list"], &bus);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("session bus"));
}

#[test]
fn usage_errors_are_exit_2() {
    assert_eq!(
        ctl(&["frobnicate"], "unix:path=/nonexistent").status.code(),
        Some(2)
    );
    assert_eq!(
        ctl(&["start"], "unix:path=/nonexistent").status.code(),
        Some(2)
    );
}

#[test]
fn check_reports_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[rootfs]\nhost = true\n[network]\nmode = \"none\"\n").unwrap();
    let out = ctl(&["check", good.to_str().unwrap()], "unix:path=/nonexistent");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("good: ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[rootfs]\nhost = true\n\n[limits]\nmemory = \"lots\"\n",
    )
    .unwrap();
    let out = ctl(&["check", bad.to_str().unwrap()], "unix:path=/nonexistent");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:10: limits.memory: invalid size \"lots\"",
            bad.display()
        )),
        "{err}"
    );

    let wrong_name = dir.path().join("no good.toml");
    std::fs::write(&wrong_name, "[rootfs]\nhost = true\n").unwrap();
    let out = ctl(
        &["check", wrong_name.to_str().unwrap()],
        "unix:path=/nonexistent",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid name"));
}

#[test]
fn check_notes_features_not_provided_yet() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("net.toml");
    std::fs::write(
        &f,
        "[rootfs]\nhost = true\n[network]\nmode = \"proxy\"\ndns = false\nallow = [\"example.test\"]\n",
    )
    .unwrap();
    let out = ctl(&["check", f.to_str().unwrap()], "unix:path=/nonexistent");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("network.dns = false"), "{text}");
    // Limits are supported; the check says how this machine enforces them.
    std::fs::write(&f, "[rootfs]\nhost = true\n[limits]\nmemory = \"1G\"\n").unwrap();
    let out = ctl(&["check", f.to_str().unwrap()], "unix:path=/nonexistent");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("refuses"), "{text}");
    assert!(text.contains("limits.memory"), "{text}");
    // Addresses alone are fully supported.
    std::fs::write(
        &f,
        "[rootfs]\nhost = true\n[network]\nallow = [\"1.2.3.0/24\"]\n",
    )
    .unwrap();
    let out = ctl(&["check", f.to_str().unwrap()], "unix:path=/nonexistent");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("note:"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ctl(&["completions", shell], "unix:path=/nonexistent");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("sandboxctl"));
    }
}
