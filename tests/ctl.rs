//! sandboxctl's exit statuses and local commands, without a daemon.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

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
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sandboxctl doctor"),
        "the fix is named"
    );
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

/// `rootfs pull` refuses what cannot be an image, a platform or a root's name before it
/// touches the network or the disk.
#[test]
fn pull_refuses_bad_references_platforms_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let bus = format!("unix:path={}/no-bus", dir.path().display());
    // A valid reference whose last part is too long to name a root.
    let long = format!("127.0.0.1:1/{}:1", "a".repeat(70));
    for (args, says) in [
        (
            vec!["rootfs", "pull", "Not A Reference!"],
            "is not an image reference",
        ),
        (
            vec!["rootfs", "pull", "127.0.0.1:1/x:1", "--platform", "linux"],
            "OS/ARCH",
        ),
        (
            vec!["rootfs", "pull", "127.0.0.1:1/x:1", "--name", "../up"],
            "name",
        ),
        (vec!["rootfs", "pull", &long], "--name"),
    ] {
        let out = Command::new(CTL)
            .args(&args)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus)
            .env("HOME", dir.path())
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_DATA_HOME")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!dir.path().join(".local/share/sandboxd/rootfs").exists());
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

/// Network entries that are not what they claim to be are errors at `check`, with the
/// file, line and key: never a name that silently matches nothing, or a fallback.
#[test]
fn check_refuses_network_entries_that_are_not_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (table, key, line)) in [
        (
            "allow = [\"0.0.0.0/0\", \"192.168.1\"]",
            "network.allow[1]",
            4,
        ),
        ("deny = [\"10.0.0.0/33\"]", "network.deny[0]", 4),
        ("allow = [\"*.\"]", "network.allow[0]", 4),
        ("upstream = \"socks5://\"", "network.upstream", 4),
        ("publish = [\"8080\"]", "network.publish[0]", 4),
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("net{i}.toml"));
        std::fs::write(
            &file,
            format!("[rootfs]\nhost = true\n[network]\n{table}\n"),
        )
        .unwrap();
        let out = ctl(&["check", file.to_str().unwrap()], "unix:path=/nonexistent");
        assert_eq!(out.status.code(), Some(1), "{table}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}:{line}:", file.display())) && err.contains(key),
            "{table}: {err}"
        );
    }
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

/// `check` makes the checks `start` makes: users in the root's passwd, the keep-id
/// mapping of an imported root, the command, bind sources; a missing Wayland socket only
/// warns (it depends on the session when the sandbox starts).
#[test]
fn check_catches_what_start_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    let base = format!(
        "[rootfs]\npath = \"{}\"\n[network]\nmode = \"none\"\n",
        root.display()
    );
    let f = dir.path().join("p.toml");
    let check = |text: &str| {
        std::fs::write(&f, text).unwrap();
        let out = Command::new(CTL)
            .args(["check", f.to_str().unwrap()])
            .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = check(&format!("{base}[process]\nuser = \"ghost\"\n"));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("process.user") && text.contains("ghost"),
        "{text}"
    );

    let (code, text) = check(&format!("{base}[process]\ncommand = [\"/bin/missing\"]\n"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("process.command"), "{text}");

    let (code, text) = check(&format!(
        "{base}[[mount]]\nsource = \"{}/absent\"\ndestination = \"/data\"\n",
        dir.path().display()
    ));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("mount[0].source") && text.contains("absent"),
        "{text}"
    );

    // Imported for keep-id of uid 1000, but this profile runs as root.
    std::fs::write(
        root.with_extension("json"),
        r#"{"keep_id":1000,"keep_gid":1000,"source":"t.tar"}"#,
    )
    .unwrap();
    let (code, text) = check(&base);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("rootfs.path") && text.contains("process.user = \"user\""),
        "{text}"
    );
    std::fs::remove_file(root.with_extension("json")).unwrap();

    let (code, text) = check(&format!("{base}[gui]\nwayland = true\n"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("warning: gui.wayland"), "{text}");
}

/// A home with three profiles and an imported root, and the completion script of `shell`
/// written into it by `sandboxctl completions`.
fn completion_home(shell: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("config/sandboxd/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    for name in ["dev", "devbox", "web"] {
        std::fs::write(profiles.join(format!("{name}.toml")), "").unwrap();
    }
    std::fs::write(profiles.join("notes.txt"), "").unwrap();
    std::fs::create_dir_all(dir.path().join("data/sandboxd/rootfs/arch")).unwrap();
    let out = ctl(&["completions", shell], "unix:path=/nonexistent");
    assert!(out.status.success());
    let script = dir.path().join(format!("sandboxctl.{shell}"));
    std::fs::write(&script, &out.stdout).unwrap();
    (dir, script)
}

/// Runs `shell -c script` in the completion home, with no daemon on the bus.
fn in_completion_home(dir: &std::path::Path, shell: &str, script: &str) -> String {
    let out = Command::new(shell)
        .args(["-c", script])
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}/no-bus", dir.display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `shell` can be run here (scripts/setup-machine installs zsh and fish).
fn have(shell: &str) -> bool {
    let found = Command::new(shell)
        .args(["-c", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("skipped: {shell} is not installed (scripts/setup-machine installs it)");
    }
    found
}

/// bash, through the registered completion function as bash calls it: profile names for
/// `start`, roots for `rootfs remove`, subcommands; nothing hangs without a daemon.
#[test]
fn bash_completes_names_of_profiles_and_roots() {
    let (dir, script) = completion_home("bash");
    // Names only: options (`--help`) are offered beside them for an empty word.
    let complete = |words: &str, cword: usize, current: &str| {
        let out = in_completion_home(
            dir.path(),
            "bash",
            &format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_TYPE=9; \
                 _clap_complete_sandboxctl sandboxctl '{current}' x; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ),
        );
        out.lines()
            .filter(|l| !l.starts_with('-'))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    assert_eq!(
        complete("sandboxctl start de", 2, "de"),
        "default\ndev\ndevbox\n"
    );
    assert_eq!(complete("sandboxctl check w", 2, "w"), "web\n");
    assert_eq!(complete("sandboxctl rootfs remove ''", 3, ""), "arch\n");
    let subcommands = complete("sandboxctl st", 1, "st");
    for sub in ["start", "status", "stop"] {
        assert!(subcommands.lines().any(|l| l == sub), "{subcommands}");
    }
    // Sandbox names come from the daemon; without one there are none, at once.
    let started = std::time::Instant::now();
    assert_eq!(complete("sandboxctl stop ''", 2, ""), "");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

/// fish, with its own `complete -C`, and zsh, with the request its completion function
/// makes (its script is checked by `zsh -n`).
#[test]
fn fish_and_zsh_complete_profile_names() {
    if have("fish") {
        let (dir, script) = completion_home("fish");
        let out = in_completion_home(
            dir.path(),
            "fish",
            &format!(
                "source {}; complete -C 'sandboxctl start dev'",
                script.display()
            ),
        );
        assert_eq!(out, "dev\ndevbox\n");
    }
    if have("zsh") {
        let (dir, script) = completion_home("zsh");
        in_completion_home(dir.path(), "zsh", &format!("zsh -n {}", script.display()));
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(text.starts_with("#compdef sandboxctl"), "{text}");
        let out = in_completion_home(
            dir.path(),
            "zsh",
            &format!(
                "_CLAP_IFS=$'\\n' _CLAP_COMPLETE_INDEX=2 COMPLETE=zsh {CTL} -- sandboxctl start we"
            ),
        );
        assert_eq!(out.trim_end(), "web");
    }
}
