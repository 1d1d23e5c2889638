//! End to end: binds as the profile says at every depth, and host mounts that propagate
//! in but never out. The host directory is a shared mount (as systemd makes every mount on
//! a desktop; this machine's `/` is private), so mounts below it reach the daemon's
//! namespace. Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A host directory in the test user's home, bind-mounted onto itself and made shared
/// before the daemon's namespace exists; unmounted (with everything below) on drop.
struct SharedDir(PathBuf);

impl SharedDir {
    fn new(s: &Session, name: &str) -> Self {
        let dir = s.home.join(name);
        let _ = Command::new("umount").arg("-R").arg(&dir).output();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        s.chown(&dir);
        root(Command::new("mount").arg("--bind").arg(&dir).arg(&dir));
        root(Command::new("mount").arg("--make-shared").arg(&dir));
        // A fresh daemon namespace, made while the directory is shared.
        s.stop_daemon();
        s.start_daemon();
        Self(dir)
    }

    /// A tmpfs at `rel` below the directory (without nosuid or nodev: the host's own).
    fn tmpfs(&self, rel: &str, source: &str) -> PathBuf {
        let at = self.0.join(rel);
        std::fs::create_dir_all(&at).unwrap();
        root(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=1777", source])
                .arg(&at),
        );
        at
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

fn profile(s: &Session, name: &str, dir: &Path, readonly: bool, extra: &str) {
    s.write_profile(
        name,
        &format!(
            "[rootfs]\nhost = true\n[network]\nmode = \"none\"\n[[mount]]\nsource = \"{}\"\n\
             destination = \"/data\"\nreadonly = {readonly}\n{extra}",
            dir.display()
        ),
    );
}

fn sh(s: &Session, name: &str, user: &str, cmd: &str) -> std::process::Output {
    s.ctl(&["exec", name, "--user", user, "--", "sh", "-c", cmd])
}

#[test]
fn read_only_nosuid_and_nodev_hold_at_every_depth() {
    let _g = lock();
    let s = session();
    s.ready();
    let shared = SharedDir::new(s, "e2e-rbind");
    let a = shared.tmpfs("a", "sbxlevel2");
    let b = shared.tmpfs("a/b", "sbxlevel3");
    // On the deepest submount: a program setuid to root-inside and a device node
    // (/dev/null's).
    std::fs::copy("/usr/bin/id", b.join("suid-id")).unwrap();
    // Owned by the test user on the host, which is root inside the sandbox.
    root(
        Command::new("chown")
            .arg(format!("{}", s.uid))
            .arg(b.join("suid-id")),
    );
    root(Command::new("chmod").arg("4755").arg(b.join("suid-id")));
    root(
        Command::new("mknod")
            .arg(b.join("null"))
            .args(["c", "1", "3"]),
    );
    root(Command::new("chmod").arg("666").arg(b.join("null")));
    let _ = a;

    profile(s, "e2e-rro", &shared.0, true, "");
    s.ctl_ok(&["start", "e2e-rro"]);
    for user in ["root", "nobody"] {
        for dir in ["/data", "/data/a", "/data/a/b"] {
            let out = sh(s, "e2e-rro", user, &format!("touch {dir}/new"));
            assert!(!out.status.success(), "{user} wrote {dir}");
            assert!(
                stderr(&out).contains("Read-only file system"),
                "{user} {dir}: {}",
                stderr(&out)
            );
        }
        let out = sh(s, "e2e-rro", user, "cat /data/a/b/null");
        assert!(
            !out.status.success(),
            "{user} opened a device on a submount"
        );
        assert!(
            stderr(&out).contains("Permission denied"),
            "{}",
            stderr(&out)
        );
        let out = sh(s, "e2e-rro", user, "/data/a/b/suid-id -u");
        let uid = if user == "root" { "0" } else { "65534" };
        assert_eq!(stdout(&out).trim(), uid, "setuid gave {user} privileges");
    }
    let info = s.ctl_ok(&["exec", "e2e-rro", "--", "cat", "/proc/self/mountinfo"]);
    let under: Vec<&str> = info
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with("/data")))
        .collect();
    assert_eq!(under.len(), 3, "{info}");
    for line in under {
        let opts: Vec<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
        for want in ["ro", "nosuid", "nodev"] {
            assert!(opts.contains(&want), "{want} missing: {line}");
        }
    }
    s.ctl_ok(&["stop", "e2e-rro"]);

    // Without readonly: writable at every level, still nosuid and nodev.
    profile(s, "e2e-rw", &shared.0, false, "");
    s.ctl_ok(&["start", "e2e-rw"]);
    for dir in ["/data", "/data/a", "/data/a/b"] {
        let out = sh(s, "e2e-rw", "root", &format!("touch {dir}/new && echo ok"));
        assert_eq!(stdout(&out).trim(), "ok", "{dir}: {}", stderr(&out));
    }
    let out = sh(s, "e2e-rw", "root", "cat /data/a/b/null");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    s.ctl_ok(&["stop", "e2e-rw"]);
    for n in ["e2e-rro", "e2e-rw"] {
        s.remove_profile(n);
    }
}

#[test]
fn host_mounts_propagate_in_and_nothing_propagates_out() {
    let _g = lock();
    let s = session();
    s.ready();
    let shared = SharedDir::new(s, "e2e-propagate");
    let before = host_mounts();
    // Mounted after the daemon (and its namespace) started.
    let late = shared.tmpfs("late", "sbxlate");
    std::fs::write(late.join("marker"), "here\n").unwrap();
    profile(
        s,
        "e2e-prop",
        &shared.0,
        false,
        "[security]\nnested = true\n",
    );
    s.ctl_ok(&["start", "e2e-prop"]);
    let out = s.ctl_ok(&["exec", "e2e-prop", "--", "cat", "/data/late/marker"]);
    assert_eq!(out, "here\n");
    // A mount made inside (in a nested namespace, the only place a sandbox can mount)
    // stays there.
    let out = sh(
        s,
        "e2e-prop",
        "root",
        "unshare -Urm --propagation unchanged sh -c 'mount -t tmpfs sbxinner /data/late && echo mounted'",
    );
    assert_eq!(stdout(&out).trim(), "mounted", "{}", stderr(&out));
    s.ctl_ok(&["stop", "e2e-prop"]);
    let now = host_mounts();
    assert!(
        !now.contains("sbxinner"),
        "a sandbox's mount reached the host"
    );
    // Nothing the daemon or runc mounted appears on the host: only the test's own tmpfs
    // was added.
    let added: Vec<&str> = now
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect();
    assert!(
        added.len() == 1 && added[0].contains("sbxlate"),
        "new host mounts: {added:#?}"
    );

    // Unmounted on the host: a sandbox started later sees the empty directory below.
    root(Command::new("umount").arg(&late));
    s.ctl_ok(&["start", "e2e-prop"]);
    let out = s.ctl_ok(&["exec", "e2e-prop", "--", "ls", "-A", "/data/late"]);
    assert_eq!(out, "", "the unmount did not reach the sandbox");
    s.ctl_ok(&["stop", "e2e-prop"]);
    s.remove_profile("e2e-prop");
}
