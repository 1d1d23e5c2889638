//! End to end: processes started in running sandboxes through the daemon (`Exec`,
//! `OpenShell`), driven by `sandboxctl exec` in pipes and `sandboxctl shell` in a real
//! terminal (tmux). Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

fn sh(s: &Session, script: &str) -> std::process::Output {
    s.user(&["sh", "-c", script])
}

/// `printf data | sandboxctl exec box -- sha256sum` prints the right digest; stderr and
/// the exit status pass through.
#[test]
fn exec_streams_stdio_and_exit_status() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-exec", "exec sleep 1000", "");
    s.ctl_ok(&["start", "e2e-exec"]);
    let ctl = s.bin().join("sandboxctl");
    let ctl = ctl.display();
    let out = sh(
        s,
        &format!("printf data | {ctl} exec e2e-exec -- sha256sum"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // sha256("data")
    assert_eq!(
        stdout(&out).split_whitespace().next(),
        Some("3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7")
    );
    let out = sh(s, &format!("{ctl} exec e2e-exec -- sh -c 'echo to-out; echo to-err >&2; exit 5' 2>/tmp/e2e-exec-err; echo status=$?; cat /tmp/e2e-exec-err; rm -f /tmp/e2e-exec-err"));
    let text = stdout(&out);
    assert!(text.contains("to-out\nstatus=5\nto-err"), "{text}");
    // A large stream arrives whole.
    let out = sh(
        s,
        &format!("head -c 3000000 /dev/zero | {ctl} exec e2e-exec -- wc -c"),
    );
    assert_eq!(stdout(&out).trim(), "3000000");
    // The user defaults to the profile's (root here); --user picks another.
    assert_eq!(
        stdout(&sh(s, &format!("{ctl} exec e2e-exec -- id -u </dev/null"))).trim(),
        "0"
    );
    assert_eq!(
        stdout(&sh(
            s,
            &format!("{ctl} exec e2e-exec --user user -- id -u </dev/null")
        ))
        .trim(),
        "1000"
    );
    // Extra environment reaches the process (the Exec `env` option); malformed is refused.
    let out = sh(s, &format!("{ctl} exec e2e-exec --env FOO=bar --env 'SP=a b' -- sh -c 'echo \"$FOO|$SP\"' </dev/null"));
    assert_eq!(stdout(&out), "bar|a b\n", "{}", stderr(&out));
    let out = sh(
        s,
        &format!("{ctl} exec e2e-exec --env NOEQUALS -- true </dev/null"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("InvalidArgs"), "{}", stderr(&out));
    // Errors: unknown user, stopped sandbox, a command that does not exist.
    let out = sh(
        s,
        &format!("{ctl} exec e2e-exec --user nobody-here -- true </dev/null"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nobody-here"), "{}", stderr(&out));
    let out = sh(
        s,
        &format!("{ctl} exec e2e-exec -- /no/such/program </dev/null"),
    );
    assert_ne!(out.status.code(), Some(0));
    // Every process of this test started through the sandbox's pid 1.
    assert_exec_path(s, "e2e-exec", "init channel");
    s.ctl_ok(&["stop", "e2e-exec"]);
    let out = sh(s, &format!("{ctl} exec e2e-exec -- true </dev/null"));
    assert_eq!(out.status.code(), Some(1));
    s.remove_profile("e2e-exec");
}

/// `sandboxctl shell` in a real terminal: the profile's user (1000) or root, a pty of the
/// sandbox's own, window size that follows a resize, the inner exit status as
/// sandboxctl's, and a sane terminal afterwards.
#[test]
fn shell_in_a_real_terminal() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-shell", "exec sleep 1000", "");
    let text = std::fs::read_to_string(s.profiles().join("e2e-shell.toml")).unwrap();
    s.write_profile(
        "e2e-shell",
        &text.replace("[process]\n", "[process]\nuser = \"user\"\n"),
    );
    s.ctl_ok(&["start", "e2e-shell"]);
    let tmux = Tmux::start(s);
    let host_tty = tmux
        .cmd(&["display-message", "-p", "-t", "t", "#{pane_tty}"])
        .trim()
        .to_string();
    tmux.send("PS1='host$ '");
    tmux.send("sandboxctl shell e2e-shell");
    std::thread::sleep(Duration::from_millis(500));
    tmux.send("PS1='inner$ '; echo I\"\"D=$(id -u) TTY=$(tty) PTS=$(ls /dev/pts | tr '\\n' ,)");
    let screen = tmux.wait("ID=");
    assert!(
        screen.contains("ID=1000 TTY=/dev/pts/0 PTS=0,ptmx,"),
        "{screen}"
    );
    assert!(!host_tty.is_empty());
    tmux.send("echo S\"\"IZE=$(stty size)");
    assert!(
        tmux.wait("SIZE=").contains("SIZE=24 80"),
        "{}",
        tmux.screen()
    );
    tmux.cmd(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.send("echo R\"\"ESIZED=$(stty size)");
    assert!(
        tmux.wait("RESIZED=").contains("RESIZED=30 100"),
        "{}",
        tmux.screen()
    );
    tmux.send("exit 7");
    tmux.send("echo R\"\"C=$?; stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo E\"\"ND");
    let screen = tmux.wait("END");
    assert!(screen.contains("RC=7"), "{screen}");
    assert!(
        screen.contains("icanon echo END"),
        "the terminal was not restored: {screen}"
    );
    tmux.send("clear; sandboxctl shell e2e-shell --user root");
    std::thread::sleep(Duration::from_millis(500));
    tmux.send("echo R\"\"OOTID=$(id -u)");
    assert!(
        tmux.wait("ROOTID=").contains("ROOTID=0"),
        "{}",
        tmux.screen()
    );
    tmux.send("exit");
    tmux.send("echo R\"\"C2=$?");
    assert!(tmux.wait("RC2=").contains("RC2=0"));
    drop(tmux);
    // Every process of this test started through the sandbox's pid 1.
    assert_exec_path(s, "e2e-shell", "init channel");
    s.ctl_ok(&["stop", "e2e-shell"]);
    s.remove_profile("e2e-shell");
}

/// "keep-id": with `process.user = "user"`, uid 1000 inside is the test user on the host.
/// Files it creates in a bound folder are the test user's; the test user's files are
/// writable by it; root inside (a subordinate id) can still write the root file system.
#[test]
fn keep_id_maps_the_profile_user_to_you() {
    let _g = lock();
    let s = session();
    s.ready();
    let share = s.home.join("e2e-share");
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("from-host"), "host\n").unwrap();
    nix::unistd::chown(&share, Some(s.uid.into()), Some(s.uid.into())).unwrap();
    nix::unistd::chown(
        &share.join("from-host"),
        Some(s.uid.into()),
        Some(s.uid.into()),
    )
    .unwrap();
    let extra = "[[mount]]\nsource = \"~/e2e-share\"\ndestination = \"/home/user/share\"\n";
    s.busybox_profile("e2e-keepid", "exec sleep 1000", extra);
    let text = std::fs::read_to_string(s.profiles().join("e2e-keepid.toml")).unwrap();
    s.write_profile(
        "e2e-keepid",
        &text.replace("[process]\n", "[process]\nuser = \"user\"\n"),
    );
    s.ctl_ok(&["start", "e2e-keepid"]);
    let ctl = s.bin().join("sandboxctl");
    let ctl = ctl.display();
    let out = sh(s, &format!("{ctl} exec e2e-keepid -- sh -c 'id -u; touch /home/user/share/from-inside && echo more >> /home/user/share/from-host && stat -c %u /home/user/share/from-host' </dev/null"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "1000\n1000\n",
        "inside, the host user's file belongs to user"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(share.join("from-inside")).unwrap().uid(),
        s.uid,
        "a file made by user inside must be the test user's"
    );
    assert_eq!(
        std::fs::read_to_string(share.join("from-host")).unwrap(),
        "host\nmore\n"
    );
    // Root inside is not you: a subordinate id, which can still change the root file system.
    let out = sh(s, &format!("{ctl} exec e2e-keepid --user root -- sh -c 'id -u; touch /etc/root-was-here' </dev/null"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0\n");
    let owner = std::fs::metadata(s.busybox_root().join("etc/root-was-here"))
        .unwrap()
        .uid();
    assert_ne!(owner, s.uid, "root inside must not be the test user");
    assert_ne!(owner, 0, "root inside must not be host root");
    let sub = std::fs::read_to_string("/etc/subuid").unwrap();
    let start: u32 = sub
        .lines()
        .find(|l| l.starts_with(&format!("{USER}:")))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(owner, start, "container root is the first subordinate id");
    // Every process of this test started through the sandbox's pid 1.
    assert_exec_path(s, "e2e-keepid", "init channel");
    s.ctl_ok(&["stop", "e2e-keepid"]);
    s.remove_profile("e2e-keepid");
    let _ = std::fs::remove_dir_all(&share);
}

/// `desktop-entry --from` an installed app's entry keeps its names, icon and MIME types;
/// the launcher validates, and a real launcher (GIO) started with a URL runs the app's
/// command inside the sandbox with that URL.
#[test]
fn desktop_entry_from_an_installed_app() {
    let _g = lock();
    let s = session();
    s.ready();
    let share = s.home.join("e2e-app");
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir(&share).unwrap();
    std::fs::write(
        share.join("app.sh"),
        "#!/bin/sh\nprintf '%s|' \"$SANDBOX_NAME\" \"$@\" > /mnt/app/out\n",
    )
    .unwrap();
    let source = share.join("e2e-viewer.desktop");
    std::fs::write(
        &source,
        "[Desktop Entry]\nType=Application\nName=E2E Viewer\nName[de]=E2E Betrachter\nIcon=e2e-viewer\nMimeType=x-scheme-handler/e2e;text/plain;\nExec=/mnt/app/app.sh --open %u\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(share.join("app.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for p in [share.clone(), share.join("app.sh"), source.clone()] {
        nix::unistd::chown(&p, Some(s.uid.into()), Some(s.uid.into())).unwrap();
    }
    s.write_profile(
        "e2e-app",
        "[rootfs]\nhost = true\n[network]\nmode = \"none\"\n[[mount]]\nsource = \"~/e2e-app\"\ndestination = \"/mnt/app\"\n",
    );
    s.ctl_ok(&[
        "desktop-entry",
        "e2e-app",
        "--from",
        source.to_str().unwrap(),
    ]);
    let entry = s
        .home
        .join(".local/share/applications/sandboxd-e2e-app-e2e-viewer.desktop");
    assert_valid_desktop_file(s, &entry);
    let text = std::fs::read_to_string(&entry).unwrap();
    for line in [
        "Name=E2E Viewer (e2e-app)",
        "Name[de]=E2E Betrachter (e2e-app)",
        "Icon=e2e-viewer",
        "MimeType=x-scheme-handler/e2e;text/plain;",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    assert!(
        s.status("e2e-app").is_none(),
        "the sandbox must not run yet"
    );
    let url = "e2e://host/a%20b?q=1&r=2";
    let run = s.user(&["gio", "launch", entry.to_str().unwrap(), url]);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = s.wait_for("the app's output", Duration::from_secs(20), || {
        std::fs::read_to_string(share.join("out"))
            .ok()
            .filter(|o| o.ends_with('|'))
    });
    assert_eq!(out, format!("e2e-app|--open|{url}|"));
    assert_eq!(s.status("e2e-app").unwrap()["state"], "running");
    s.ctl_ok(&["stop", "e2e-app"]);
    s.remove_profile("e2e-app");
    let _ = std::fs::remove_file(entry);
    let _ = std::fs::remove_dir_all(&share);
}

/// `sandboxctl desktop-entry` writes a launcher that passes desktop-file-validate and whose
/// Exec line starts the sandbox and runs the command inside it.
#[test]
fn desktop_entry_launches_in_the_sandbox() {
    let _g = lock();
    let s = session();
    s.ready();
    let share = s.home.join("e2e-desk");
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir(&share).unwrap();
    nix::unistd::chown(&share, Some(s.uid.into()), Some(s.uid.into())).unwrap();
    s.write_profile(
        "e2e-desk",
        "[rootfs]\nhost = true\n[network]\nmode = \"none\"\n[[mount]]\nsource = \"~/e2e-desk\"\ndestination = \"/mnt/desk\"\n",
    );
    let script = "echo \"launched $SANDBOX_NAME 100%\" > /mnt/desk/out";
    s.ctl_ok(&[
        "desktop-entry",
        "e2e-desk",
        "--title",
        "Desk \"test\"",
        "sh",
        "-c",
        script,
    ]);
    let entry = s
        .home
        .join(".local/share/applications/sandboxd-e2e-desk-sh.desktop");
    assert_valid_desktop_file(s, &entry);
    let text = std::fs::read_to_string(&entry).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("an Exec line");
    // Undo the string-value escaping and the %-doubling; what is left is the quoted
    // argument syntax of the spec, which sh reads the same way.
    let exec = exec.replace("\\\\", "\\").replace("%%", "%");
    assert!(
        s.status("e2e-desk").is_none(),
        "the sandbox must not run yet"
    );
    let run = s.user(&["sh", "-c", &format!("{exec} </dev/null")]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        std::fs::read_to_string(share.join("out")).unwrap(),
        "launched e2e-desk 100%\n"
    );
    assert_eq!(s.status("e2e-desk").unwrap()["state"], "running");
    // Launching again while it runs works too.
    std::fs::remove_file(share.join("out")).unwrap();
    assert!(s
        .user(&["sh", "-c", &format!("{exec} </dev/null")])
        .status
        .success());
    assert!(share.join("out").exists());
    // Every process of this test started through the sandbox's pid 1.
    assert_exec_path(s, "e2e-desk", "init channel");
    s.ctl_ok(&["stop", "e2e-desk"]);
    s.remove_profile("e2e-desk");
    let _ = std::fs::remove_file(entry);
    let _ = std::fs::remove_dir_all(&share);
}

/// A process run from a real terminal cannot inject input into it: `sandboxctl exec` gives
/// it a pty of the sandbox's own, so TIOCSTI on every terminal it holds reaches only that
/// pty, and the host shell never runs the injected command.
#[test]
fn tiocsti_cannot_reach_the_host_terminal() {
    let _g = lock();
    let s = session();
    s.ready();
    s.write_profile(
        "e2e-tty",
        "[rootfs]\nhost = true\n[network]\nmode = \"none\"\n",
    );
    s.ctl_ok(&["start", "e2e-tty"]);
    let tmux = Tmux::sized(s, 100, 30);
    let script = "import fcntl, os, termios\n\
        done = []\n\
        for fd in range(64):\n    \
            try:\n        \
                if os.isatty(fd):\n            \
                    for c in b'echo INJ\"\"ECTED-HOST\\n':\n                \
                        fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))\n            \
                    done.append((fd, os.ttyname(fd)))\n    \
            except OSError as e:\n        \
                done.append((fd, 'refused ' + str(e.errno)))\n\
        print('T''TYS', done)\n";
    std::fs::write(s.home.join("e2e-tiocsti.py"), script).unwrap();
    // Stdin from a file: the process gets pipes, no terminal at all.
    tmux.send("sandboxctl exec e2e-tty -- python3 /dev/stdin < ~/e2e-tiocsti.py; echo A\"\"FTER1");
    let screen = tmux.wait("AFTER1");
    assert!(
        screen.lines().any(|l| l == "TTYS []"),
        "a terminal reached the sandbox:\n{screen}"
    );
    // Stdin and stdout on the terminal: the process gets a pty allocated inside.
    tmux.send(
        "clear; sandboxctl exec e2e-tty -- python3 -c \"$(cat ~/e2e-tiocsti.py)\"; echo A\"\"FTER2",
    );
    let screen = tmux.wait("AFTER2");
    std::thread::sleep(Duration::from_millis(500));
    let screen = format!("{screen}\n{}", tmux.screen());
    let ttys = screen
        .lines()
        .find(|l| l.starts_with("TTYS"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(
        ttys.contains("/dev/pts/0") || ttys.contains("refused"),
        "{ttys}"
    );
    // Whatever the kernel allowed on that pty, the host shell never ran the injected command.
    assert!(
        !screen.contains("INJECTED-HOST"),
        "input was injected into the host terminal:\n{screen}"
    );
    drop(tmux);
    let _ = std::fs::remove_file(s.home.join("e2e-tiocsti.py"));
    // Every process of this test started through the sandbox's pid 1.
    assert_exec_path(s, "e2e-tty", "init channel");
    s.ctl_ok(&["stop", "e2e-tty"]);
    s.remove_profile("e2e-tty");
}

/// exec as podman's: the command without `--`, the profile's `process.cwd` by default,
/// `--cwd` over it, and a shell's 127/126 with one line for a missing or non-executable
/// program — through pid 1's channel and, after a daemon crash, through `runc exec`.
#[test]
fn exec_behaves_like_podman_exec() {
    let _g = lock();
    let s = session();
    s.ready();
    s.busybox_profile("e2e-exec-cwd", "exec sleep 1000", "");
    // busybox_profile writes [process] first; add a cwd to it.
    let file = s.profiles().join("e2e-exec-cwd.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[process]\n", "[process]\ncwd = \"/etc\"\n");
    s.write_profile("e2e-exec-cwd", &text);
    s.ctl_ok(&["start", "e2e-exec-cwd"]);
    for via in ["init channel", "runc exec"] {
        assert_eq!(
            s.ctl_ok(&["exec", "e2e-exec-cwd", "id", "-u"]),
            "0\n",
            "{via}"
        );
        assert_eq!(
            s.ctl_ok(&["exec", "e2e-exec-cwd", "pwd"]),
            "/etc\n",
            "{via}"
        );
        assert_eq!(
            s.ctl_ok(&["exec", "--cwd", "/tmp", "e2e-exec-cwd", "pwd"]),
            "/tmp\n",
            "{via}"
        );
        assert_eq!(
            s.ctl_ok(&["exec", "e2e-exec-cwd", "--", "sh", "-c", "echo $0", "x"]),
            "x\n",
            "{via}"
        );
        let out = s.ctl(&["exec", "e2e-exec-cwd", "nosuchcmd"]);
        assert_eq!(out.status.code(), Some(127), "{via}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{via}: {err}");
        assert!(err.contains("nosuchcmd: command not found"), "{via}: {err}");
        let out = s.ctl(&["exec", "e2e-exec-cwd", "/etc/passwd"]);
        assert_eq!(out.status.code(), Some(126), "{via}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not executable"),
            "{via}: {}",
            stderr(&out)
        );
        let out = s.ctl(&["exec", "--cwd", "/nowhere", "e2e-exec-cwd", "pwd"]);
        assert_eq!(out.status.code(), Some(1), "{via}");
        assert!(
            stderr(&out).contains("working directory /nowhere"),
            "{via}: {}",
            stderr(&out)
        );
        if via == "init channel" {
            assert_exec_path(s, "e2e-exec-cwd", via);
            s.crash_daemon();
        } else {
            let log = std::fs::read_to_string(s.daemon_log()).unwrap();
            let adopted = log
                .rfind("adopting running sandbox")
                .expect("the sandbox was adopted");
            assert!(log[adopted..].contains("via=\"runc exec\""));
        }
    }
    s.finish("e2e-exec-cwd");
}

/// `process.user = "1000"` (a string of digits) is a uid, with a passwd entry and
/// without one.
#[test]
fn a_numeric_process_user_is_a_uid() {
    let _g = lock();
    let s = session();
    s.ready();
    for (uid, home) in [("1000", "/home/user"), ("4242", "/home/4242")] {
        s.busybox_profile("e2e-uid", "exec sleep 1000", "");
        let file = s.profiles().join("e2e-uid.toml");
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("[process]\n", &format!("[process]\nuser = \"{uid}\"\n"));
        s.write_profile("e2e-uid", &text);
        s.ctl_ok(&["start", "e2e-uid"]);
        assert_eq!(
            s.ctl_ok(&["exec", "e2e-uid", "sh", "-c", "echo $(id -u) $HOME"]),
            format!("{uid} {home}\n")
        );
        s.finish("e2e-uid");
    }
}
