//! End to end: `sandboxctl rootfs import|list|remove`, with owners kept as the archive
//! says inside real sandboxes, for root-as-you and keep-id roots. Needs root, like
//! tests/e2e.rs (to write an archive with files of several owners).

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A tar archive (written as root) with files owned by uid 0, 1000 and 33, busybox, and an
/// /etc/passwd naming them. `big` adds a large file so an import takes a while.
fn archive(dir: &Path, big: bool) -> PathBuf {
    let tree = dir.join("tree");
    for d in ["bin", "etc", "home/user", "var/www"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for applet in ["sh", "stat", "id", "sleep", "touch"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    std::fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n").unwrap();
    std::fs::write(tree.join("home/user/mine"), "").unwrap();
    std::fs::write(tree.join("var/www/web"), "").unwrap();
    if big {
        let f = std::fs::File::create(tree.join("big")).unwrap();
        f.set_len(1 << 30).unwrap();
    }
    for (path, id) in [
        ("home/user", 1000),
        ("home/user/mine", 1000),
        ("var/www/web", 33),
    ] {
        nix::unistd::chown(&tree.join(path), Some(id.into()), Some(id.into())).unwrap();
    }
    let tar = dir.join(if big { "big.tar" } else { "owners.tar" });
    root(
        Command::new("tar")
            .args(["--numeric-owner", "-c", "-f"])
            .arg(&tar)
            .arg("-C")
            .arg(&tree)
            .arg("."),
    );
    std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _ = std::fs::remove_dir_all(&tree);
    tar
}

fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sandboxd-e2e-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn rootfs_path(s: &Session, name: &str) -> PathBuf {
    s.home.join(".local/share/sandboxd/rootfs").join(name)
}

fn owners_inside(s: &Session, sandbox: &str) -> String {
    s.ctl_ok(&[
        "exec",
        sandbox,
        "--user",
        "root",
        "--",
        "stat",
        "-c",
        "%u",
        "/etc/passwd",
        "/home/user/mine",
        "/var/www/web",
    ])
}

/// Files owned by 0, 1000 and 33 in the archive have exactly those owners inside, both for
/// a root-as-you import and a keep-id import (`--user user`); a profile whose mapping does
/// not fit the import is refused clearly; `remove` deletes the subordinate-owned tree.
#[test]
fn import_keeps_owners_inside() {
    let _g = lock();
    let s = session();
    s.ready();
    let tmp = scratch();
    let tar = archive(tmp.path(), false);
    let tar = tar.to_str().unwrap();
    for name in ["e2e-own", "e2e-ownk"] {
        let _ = s.ctl(&["rootfs", "remove", name]);
    }
    s.ctl_ok(&["rootfs", "import", "e2e-own", tar]);
    s.ctl_ok(&["rootfs", "import", "e2e-ownk", tar, "--user", "user"]);
    let list = s.ctl_ok(&["rootfs", "list"]);
    assert!(
        list.contains("e2e-own ") && list.contains("root inside as you"),
        "{list}"
    );
    assert!(
        list.contains("e2e-ownk") && list.contains("uid 1000 inside as you"),
        "{list}"
    );

    let profile = |name: &str, rootfs: &str, user: &str| {
        let path = rootfs_path(s, rootfs);
        s.write_profile(name, &format!("[rootfs]\npath = \"{}\"\n[process]\ncommand = [\"sleep\", \"1000\"]\n{user}[network]\nmode = \"none\"\n", path.display()));
    };
    profile("e2e-rootfs", "e2e-own", "");
    profile("e2e-rootfsk", "e2e-ownk", "user = \"user\"\n");
    s.ctl_ok(&["start", "e2e-rootfs"]);
    s.ctl_ok(&["start", "e2e-rootfsk"]);
    assert_eq!(owners_inside(s, "e2e-rootfs"), "0\n1000\n33\n");
    assert_eq!(owners_inside(s, "e2e-rootfsk"), "0\n1000\n33\n");
    // In the keep-id root, user's file is the test user's on the host.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(rootfs_path(s, "e2e-ownk").join("home/user/mine"))
            .unwrap()
            .uid(),
        s.uid
    );
    assert_eq!(
        s.ctl_ok(&[
            "exec",
            "e2e-rootfsk",
            "--",
            "sh",
            "-c",
            "id -u; touch /home/user/new && echo ok"
        ]),
        "1000\nok\n"
    );
    s.ctl_ok(&["stop", "e2e-rootfs"]);
    s.ctl_ok(&["stop", "e2e-rootfsk"]);

    // A root-as-you profile on the keep-id import would see every owner shifted: refused.
    profile("e2e-rootfs-wrong", "e2e-ownk", "");
    let out = s.ctl(&["start", "e2e-rootfs-wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("was imported with uid 1000 inside as you"),
        "{}",
        stderr(&out)
    );
    // The fix that needs no new import comes first.
    let err = stderr(&out);
    let fits = err.find("set process.user = ").expect(&err);
    assert!(
        fits < err.find("import the archive again").expect(&err),
        "{err}"
    );
    // Over D-Bus it is a profile problem, not a runtime failure.
    let out = s.user(&[
        "dbus-send",
        "--session",
        "--print-reply",
        "--dest=org.sandboxd.Sandboxd1",
        "/org/sandboxd/Sandboxd1",
        "org.sandboxd.Sandboxd1.Manager.StartSandbox",
        "string:e2e-rootfs-wrong",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("org.sandboxd.Sandboxd1.Error.InvalidProfile")
            && stderr(&out).contains("was imported with uid 1000 inside as you"),
        "{}",
        stderr(&out)
    );

    for name in ["e2e-rootfs", "e2e-rootfsk", "e2e-rootfs-wrong"] {
        s.remove_profile(name);
    }
    for name in ["e2e-own", "e2e-ownk"] {
        s.ctl_ok(&["rootfs", "remove", name]);
        assert!(!rootfs_path(s, name).exists(), "{name} not removed");
    }
}

/// An import killed midway leaves no root (and the next import cleans its remains).
#[test]
fn interrupted_import_leaves_no_partial_root() {
    let _g = lock();
    let s = session();
    s.ready();
    let tmp = scratch();
    let tar = archive(tmp.path(), true);
    let _ = s.ctl(&["rootfs", "remove", "e2e-big"]);
    let ctl = s.bin().join("sandboxctl");
    let mut import = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/user-session"))
        .args([
            "run",
            USER,
            ctl.to_str().unwrap(),
            "rootfs",
            "import",
            "e2e-big",
            tar.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = rootfs_path(s, "");
    // Wait until unpacking is under way: the work folder holds part of the big file.
    let t0 = Instant::now();
    let work = loop {
        let found = std::fs::read_dir(&dir).ok().and_then(|r| {
            r.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".import-e2e-big-"))
            })
        });
        if let Some(w) = found.filter(|w| w.join("big").exists()) {
            break w;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the import never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", USER, "-f", "rootfs import e2e-big"])
        .status();
    let _ = import.kill();
    let _ = import.wait();
    // Let an orphaned tar finish or fail; either way no root may appear.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !rootfs_path(s, "e2e-big").exists(),
        "a partial root appeared"
    );
    // The killed import's user namespace went with it (only the daemon's own remains).
    let daemon = s.daemon_pid().to_string();
    let orphans: Vec<u32> = processes_of(s.uid)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c == b"sandboxd: userns holder\0infinity\0")
        })
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                != Some(daemon.as_str())
        })
        .collect();
    assert!(
        orphans.is_empty(),
        "the killed import left its namespace holder: {orphans:?}"
    );
    assert!(!s.ctl_ok(&["rootfs", "list"]).contains("e2e-big"));
    // The next import cleans the remains of the killed one and succeeds.
    s.ctl_ok(&["rootfs", "import", "e2e-big", tar.to_str().unwrap()]);
    assert!(!work.exists(), "the killed import's folder was not cleaned");
    assert_eq!(
        std::fs::metadata(rootfs_path(s, "e2e-big").join("big"))
            .unwrap()
            .len(),
        1 << 30
    );
    s.ctl_ok(&["rootfs", "remove", "e2e-big"]);
}

/// Everything about a tree that a write could change: each entry's path, owner, group,
/// mode, size, type, link target and mtime, and each file's content.
fn tree_digest(tree: &Path) -> String {
    let script = "cd \"$1\" && { find . -printf '%p %U %G %m %s %y %l %T@\\n' | sort; \
                  find . -type f -exec sha256sum {} + | sort; } | sha256sum";
    let out = root(Command::new("sh").args(["-c", script, "sh"]).arg(tree));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn layer_dir(s: &Session, name: &str) -> PathBuf {
    s.home.join(".local/share/sandboxd/layers").join(name)
}

/// `rootfs.overlay` on a keep-id import (owners 0/1000/33): owners inside are the
/// archive's, a file `user` writes is `user`'s, `diff` lists what was added, changed and
/// deleted (and `--json` the same), and after the stop the layer is gone and the imported
/// tree is exactly as before, to the mtime.
#[test]
fn an_overlay_keeps_the_imported_root_untouched() {
    let _g = lock();
    let s = session();
    s.ready();
    let tmp = scratch();
    let tar = archive(tmp.path(), false);
    let _ = s.ctl(&["rootfs", "remove", "e2e-ovl"]);
    s.ctl_ok(&[
        "rootfs",
        "import",
        "e2e-ovl",
        tar.to_str().unwrap(),
        "--user",
        "user",
    ]);
    let tree = rootfs_path(s, "e2e-ovl");
    let before = tree_digest(&tree);
    s.write_profile(
        "e2e-overlay",
        &format!("[rootfs]\npath = \"{}\"\noverlay = true\n[process]\nuser = \"user\"\ncommand = [\"sleep\", \"1000\"]\n[network]\nmode = \"none\"\n", tree.display()),
    );
    s.ctl_ok(&["start", "e2e-overlay"]);
    assert_eq!(owners_inside(s, "e2e-overlay"), "0\n1000\n33\n");
    s.ctl_ok(&["exec", "e2e-overlay", "--", "touch", "/home/user/new"]);
    assert_eq!(
        s.ctl_ok(&[
            "exec",
            "e2e-overlay",
            "--",
            "stat",
            "-c",
            "%u",
            "/home/user/new"
        ]),
        "1000\n"
    );
    s.ctl_ok(&[
        "exec",
        "e2e-overlay",
        "--user",
        "root",
        "--",
        "sh",
        "-c",
        "touch /planted && echo changed > /var/www/web && rm /home/user/mine",
    ]);
    let diff = s.ctl_ok(&["diff", "e2e-overlay"]);
    for line in [
        "A /planted",
        "C /var/www/web",
        "D /home/user/mine",
        "A /home/user/new",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} not in:\n{diff}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&s.ctl_ok(&["diff", "e2e-overlay", "--json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), diff.lines().count(), "{json}");
    assert!(rows.contains(&serde_json::json!({"kind": "deleted", "path": "/home/user/mine"})));
    // The layer holds the change, the tree does not.
    assert!(!tree.join("planted").exists());
    assert!(layer_dir(s, "e2e-overlay").join("upper/planted").exists());
    s.ctl_ok(&["stop", "e2e-overlay"]);
    assert!(
        !layer_dir(s, "e2e-overlay").exists(),
        "the layer outlived the stop"
    );
    assert_eq!(tree_digest(&tree), before, "the imported tree changed");
    let out = s.ctl(&["diff", "e2e-overlay"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    s.remove_profile("e2e-overlay");
    s.ctl_ok(&["rootfs", "remove", "e2e-ovl"]);
}

/// `rootfs.keep_changes`: the layer survives a stop (diff still reads it) and the next start
/// continues with it; without the key again, the next stop discards it.
#[test]
fn kept_changes_survive_a_stop() {
    let _g = lock();
    let s = session();
    s.ready();
    let root = s.busybox_root_copy("e2e-keep-root");
    let profile = |keep: bool| {
        s.write_profile(
            "e2e-keep",
            &format!("[rootfs]\npath = \"{}\"\noverlay = true\nkeep_changes = {keep}\n[network]\nmode = \"none\"\n", root.display()),
        );
    };
    profile(true);
    s.ctl_ok(&["start", "e2e-keep"]);
    s.ctl_ok(&[
        "exec",
        "e2e-keep",
        "--",
        "sh",
        "-c",
        "echo kept > /etc/kept",
    ]);
    s.ctl_ok(&["stop", "e2e-keep"]);
    assert_eq!(s.ctl_ok(&["diff", "e2e-keep"]), "A /etc/kept\n");
    s.ctl_ok(&["start", "e2e-keep"]);
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-keep", "--", "cat", "/etc/kept"]),
        "kept\n"
    );
    s.ctl_ok(&["stop", "e2e-keep"]);
    profile(false);
    s.ctl_ok(&["start", "e2e-keep"]);
    assert_eq!(
        s.ctl_ok(&["exec", "e2e-keep", "--", "cat", "/etc/kept"]),
        "kept\n"
    );
    s.ctl_ok(&["stop", "e2e-keep"]);
    assert!(!layer_dir(s, "e2e-keep").exists());
    assert!(!root.join("etc/kept").exists());
    s.remove_profile("e2e-keep");
}

/// On a host root the host's /usr is seen through the layer: a file planted in /usr is
/// the sandbox's only, and listed by diff.
#[test]
fn an_overlaid_host_root_plants_nothing_on_the_host() {
    let _g = lock();
    let s = session();
    s.ready();
    s.write_profile(
        "e2e-hostovl",
        "[rootfs]\nhost = true\noverlay = true\n[network]\nmode = \"none\"\n",
    );
    s.ctl_ok(&["start", "e2e-hostovl"]);
    s.ctl_ok(&["exec", "e2e-hostovl", "--", "touch", "/usr/e2e-planted"]);
    assert!(!Path::new("/usr/e2e-planted").exists());
    assert_eq!(s.ctl_ok(&["diff", "e2e-hostovl"]), "A /usr/e2e-planted\n");
    s.finish("e2e-hostovl");
    assert!(!layer_dir(s, "e2e-hostovl").exists());
}
