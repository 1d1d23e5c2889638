//! End to end: the sandbox user's home (`home`): persistent by default for a non-root
//! user, on imported and host roots; a fresh tmpfs; a host folder. Needs root, like
//! tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::*;

/// The daemon's persistent home of sandbox `name` on the host.
fn persistent(s: &Session, name: &str) -> PathBuf {
    s.home.join(".local/share/sandboxd/homes").join(name)
}

/// `$HOME`, its owner and mode as the sandbox sees them, and the working directory an
/// exec starts in.
fn home_facts(s: &Session, name: &str) -> String {
    s.ctl_ok(&[
        "exec",
        name,
        "sh",
        "-c",
        "echo $HOME $(stat -c '%u %a' $HOME) $(pwd)",
    ])
}

fn restart(s: &Session, name: &str) {
    s.ctl_ok(&["stop", name]);
    s.ctl_ok(&["start", name]);
}

/// A non-root user of an imported root gets a persistent home: it exists before the
/// command starts, is the user's inside (and the test user's on the host), and what is
/// written there survives a stop and a start. Asked for with `home = "persistent"` by
/// "user" (whose /home/user the tree has, and would keep by default), by default for a uid
/// without a passwd entry (`/home/UID`, which the tree lacks).
#[test]
fn an_imported_root_gets_a_persistent_home() {
    let _g = lock();
    let s = session();
    s.ready();
    for (user, uid, home, key) in [
        ("user", "1000", "/home/user", "home = \"persistent\"\n"),
        ("4242", "4242", "/home/4242", ""),
    ] {
        let _ = std::fs::remove_dir_all(persistent(s, "e2e-home"));
        s.busybox_profile(
            "e2e-home",
            "test -d $HOME && echo ok > $HOME/at-start; exec sleep 1000",
            "",
        );
        let text = std::fs::read_to_string(s.profiles().join("e2e-home.toml")).unwrap();
        let text = format!("{key}{text}");
        s.write_profile(
            "e2e-home",
            &text.replace("[process]\n", &format!("[process]\nuser = \"{user}\"\n")),
        );
        s.ctl_ok(&["start", "e2e-home"]);
        assert_eq!(
            home_facts(s, "e2e-home"),
            format!("{home} {uid} 700 {home}\n")
        );
        s.wait_for(
            "the command's file",
            std::time::Duration::from_secs(5),
            || {
                persistent(s, "e2e-home")
                    .join("at-start")
                    .exists()
                    .then_some(())
            },
        );
        s.ctl_ok(&["exec", "e2e-home", "sh", "-c", "echo kept > $HOME/file"]);
        restart(s, "e2e-home");
        assert_eq!(
            s.ctl_ok(&["exec", "e2e-home", "cat", &format!("{home}/file")]),
            "kept\n"
        );
        let dir = persistent(s, "e2e-home");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.uid(), s.uid, "the home is the test user's on the host");
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert!(dir.join(".config").is_dir() && dir.join(".local/share").is_dir());
        s.finish("e2e-home");
    }
    let _ = std::fs::remove_dir_all(persistent(s, "e2e-home"));
}

/// On a host root, whose `/home` is an empty tmpfs: `home = "persistent"` gives the test
/// user (from the host's passwd) a home that persists; `home = "tmpfs"` one that exists,
/// is the user's, and is empty again after a restart; a host folder is bound as it is.
#[test]
fn a_host_root_gets_the_home_it_asks_for() {
    let _g = lock();
    let s = session();
    s.ready();
    let home = s.home.display().to_string();
    let uid = s.uid;
    let name = "e2e-hosthome";
    let _ = std::fs::remove_dir_all(persistent(s, name));
    let profile = |kind: &str| {
        s.write_profile(
            name,
            &format!("home = \"{kind}\"\n[rootfs]\nhost = true\n[process]\nuser = \"{USER}\"\n[network]\nmode = \"none\"\n"),
        );
    };

    profile("persistent");
    s.ctl_ok(&["start", name]);
    assert_eq!(home_facts(s, name), format!("{home} {uid} 700 {home}\n"));
    s.ctl_ok(&["exec", name, "sh", "-c", "echo kept > $HOME/file"]);
    restart(s, name);
    assert_eq!(
        s.ctl_ok(&["exec", name, "cat", &format!("{home}/file")]),
        "kept\n"
    );
    s.ctl_ok(&["stop", name]);

    profile("tmpfs");
    s.ctl_ok(&["start", name]);
    assert_eq!(home_facts(s, name), format!("{home} {uid} 700 {home}\n"));
    s.ctl_ok(&["exec", name, "sh", "-c", "echo gone > $HOME/file"]);
    restart(s, name);
    let ls = s.ctl_ok(&["exec", name, "ls", "-A", &home]);
    assert_eq!(ls, "", "a tmpfs home starts empty");
    s.ctl_ok(&["stop", name]);

    let folder = s.home.join("e2e-own-home");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir(&folder).unwrap();
    s.chown(&folder);
    profile("~/e2e-own-home");
    s.ctl_ok(&["start", name]);
    s.ctl_ok(&["exec", name, "sh", "-c", "echo mine > $HOME/file"]);
    assert_eq!(
        std::fs::read_to_string(folder.join("file")).unwrap(),
        "mine\n"
    );
    assert_eq!(std::fs::metadata(folder.join("file")).unwrap().uid(), uid);
    s.finish(name);
    let _ = std::fs::remove_dir_all(&folder);
    let _ = std::fs::remove_dir_all(persistent(s, name));
}

/// Root keeps the root file system's own home unless a profile says otherwise: nothing is
/// made under the daemon's homes.
#[test]
fn root_keeps_its_own_home_by_default() {
    let _g = lock();
    let s = session();
    s.ready();
    let name = "e2e-roothome";
    s.busybox_profile(name, "exec sleep 1000", "");
    s.ctl_ok(&["start", name]);
    assert_eq!(
        s.ctl_ok(&["exec", name, "sh", "-c", "echo $HOME"]),
        "/root\n"
    );
    assert!(!persistent(s, name).exists());
    s.finish(name);
}
