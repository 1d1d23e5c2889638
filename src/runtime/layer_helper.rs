//! The side of copy-on-write layers that runs in the intermediate namespace, as one short
//! process per step (`sandboxd layer mount|unmount|remove|diff …`): there every file of a
//! layer is reachable whatever subordinate id owns it, and the overlay is mounted where runc
//! sees it. Each step is the system calls themselves, not mount(8), mountpoint(1) and rm(1)
//! one after the other: a throwaway run makes and removes a layer every time.

use std::path::Path;

use super::layer::{Change, Kind};

/// The argv[1] of the `sandboxd` binary for these steps.
pub const LAYER_ARG: &str = "layer";

/// `sandboxd layer STEP ARGS…`; exits 0, or 1 with one line on stderr.
pub fn layer_main(args: &[String]) -> ! {
    let result = match args {
        [step, lower, upper, work, merged] if step == "mount" => mount(
            Path::new(lower),
            Path::new(upper),
            Path::new(work),
            Path::new(merged),
        ),
        [step, merged] if step == "unmount" => unmount(Path::new(merged)),
        [step, dir, merged] if step == "remove" => {
            unmount(Path::new(merged)).and_then(|()| remove_tree(Path::new(dir)))
        }
        [step, upper, lower, prefix, points @ ..] if step == "diff" => {
            changes(Path::new(upper), Path::new(lower), prefix, points).map(|list| {
                println!(
                    "{}",
                    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
                );
            })
        }
        _ => {
            eprintln!(
                "usage: sandboxd {LAYER_ARG} mount LOWER UPPER WORK MERGED | unmount MERGED | remove DIR MERGED | diff UPPER LOWER PREFIX [MOUNTPOINT...]"
            );
            std::process::exit(2)
        }
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

/// Mounts the overlay at `merged`, first detaching one a crashed daemon left there.
fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> std::io::Result<()> {
    unmount(merged)?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| annotate(e, "mounting the overlay on", merged))
}

/// Detaches the overlay at `merged`; nothing when none is mounted there.
fn unmount(merged: &Path) -> std::io::Result<()> {
    match nix::mount::umount2(merged, nix::mount::MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point; ENOENT: no such folder.
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(annotate(e, "unmounting", merged)),
    }
}

/// Removes `dir` and everything below it, never crossing into another file system (as
/// `rm -rf --one-file-system`): a mount that is still there is an error, not emptied.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_below(dir, meta.dev())?;
    std::fs::remove_dir(dir)
}

fn remove_below(dir: &Path, dev: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let with_path = |e: std::io::Error, p: &Path| {
        std::io::Error::new(e.kind(), format!("removing {}: {e}", p.display()))
    };
    for entry in std::fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let path = entry.map_err(|e| with_path(e, dir))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| with_path(e, &path))?;
        if meta.dev() != dev {
            return Err(std::io::Error::other(format!(
                "removing {}: another file system is mounted there",
                path.display()
            )));
        }
        if meta.is_dir() {
            remove_below(&path, dev)?;
            std::fs::remove_dir(&path).map_err(|e| with_path(e, &path))?;
        } else {
            std::fs::remove_file(&path).map_err(|e| with_path(e, &path))?;
        }
    }
    Ok(())
}

fn annotate(e: nix::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::Error::from(e).kind(),
        format!("{what} {}: {}", path.display(), e.desc()),
    )
}

/// Walks an overlay upper layer: a whiteout (a 0/0 character device) is a deletion; an
/// entry that exists in `lower` is a change (directories only when they are opaque, i.e.
/// replaced), others are additions, except the mount points runc made (`points`, and the
/// folders above them) while they are empty. Sorted by path.
pub fn changes(
    upper: &Path,
    lower: &Path,
    prefix: &str,
    points: &[String],
) -> std::io::Result<Vec<Change>> {
    let mut out = Vec::new();
    let points: Vec<&Path> = points.iter().map(Path::new).collect();
    walk(upper, lower, Path::new(prefix), &points, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(
    upper: &Path,
    lower: &Path,
    inside: &Path,
    points: &[&Path],
    out: &mut Vec<Change>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut entries: Vec<_> = std::fs::read_dir(upper)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let meta = entry.metadata()?;
        let path = inside.join(&name);
        let below = lower.join(&name);
        let in_lower = std::fs::symlink_metadata(&below).is_ok();
        let shown = path.display().to_string();
        // A mount point, or a folder made to hold one.
        let made_by_runc = points.iter().any(|p| p.starts_with(&path));
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            out.push(Change {
                kind: Kind::Deleted,
                path: shown,
            });
        } else if meta.is_dir() {
            if !in_lower && !made_by_runc {
                out.push(Change {
                    kind: Kind::Added,
                    path: shown,
                });
            } else if in_lower && is_opaque(&entry.path()) {
                out.push(Change {
                    kind: Kind::Changed,
                    path: shown,
                });
            }
            walk(&entry.path(), &below, &path, points, out)?;
        } else if !(made_by_runc && !in_lower && meta.len() == 0) {
            out.push(Change {
                kind: if in_lower { Kind::Changed } else { Kind::Added },
                path: shown,
            });
        }
    }
    Ok(())
}

/// An opaque directory hides its lower twin (overlayfs marks it with an xattr, `user.` in
/// a user namespace, `trusted.` otherwise).
fn is_opaque(dir: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|attr| xattr_is_y(dir, attr))
}

fn xattr_is_y(path: &Path, attr: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(p), Ok(a)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(attr),
    ) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: both strings are NUL-terminated and live across the call; buf is writable
    // for its length.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), a.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_reads_as_additions_and_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (upper, lower) = (dir.path().join("u"), dir.path().join("l"));
        for d in [upper.join("etc"), upper.join("new/deep"), lower.join("etc")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(lower.join("etc/hostname"), b"a").unwrap();
        std::fs::write(upper.join("etc/hostname"), b"b").unwrap();
        std::fs::write(upper.join("etc/added"), b"").unwrap();
        std::fs::write(upper.join("new/deep/file"), b"").unwrap();
        std::fs::create_dir_all(upper.join("proc")).unwrap();
        std::fs::create_dir_all(upper.join("run/user/1000")).unwrap();
        std::fs::write(upper.join("etc/resolv.conf"), b"").unwrap();
        std::fs::write(upper.join("run/written"), b"").unwrap();
        let points = ["/proc", "/run/user/1000", "/etc/resolv.conf"].map(String::from);
        let list = changes(&upper, &lower, "/", &points).unwrap();
        let shown: Vec<(Kind, &str)> = list.iter().map(|c| (c.kind, c.path.as_str())).collect();
        assert_eq!(
            shown,
            [
                (Kind::Added, "/etc/added"),
                (Kind::Changed, "/etc/hostname"),
                (Kind::Added, "/new"),
                (Kind::Added, "/new/deep"),
                (Kind::Added, "/new/deep/file"),
                (Kind::Added, "/run/written"),
            ]
        );
        let usr = changes(&upper, &lower, "/usr", &[]).unwrap();
        assert_eq!(usr[0].path, "/usr/etc/added");
    }

    /// (The mount steps need the namespace's CAP_SYS_ADMIN: e2e_run and e2e_rootfs.)
    #[test]
    fn a_tree_is_removed_whole_and_a_missing_one_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        std::fs::create_dir_all(layer.join("upper/etc/deep")).unwrap();
        std::fs::write(layer.join("upper/etc/deep/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", layer.join("upper/link")).unwrap();
        remove_tree(&layer).unwrap();
        assert!(!layer.exists());
        remove_tree(&layer).unwrap();
        // A symlink is removed, never followed.
        assert!(Path::new("/etc").is_dir());
    }
}
