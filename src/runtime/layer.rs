//! Copy-on-write roots (`rootfs.overlay`): a kernel overlayfs whose lower layer is the
//! sandbox's root (or, for a host root, the host's `/usr`) and whose upper layer is private
//! to the sandbox, under `$XDG_DATA_HOME/sandboxd/layers/NAME/` (on disk: a build can write
//! gigabytes, too much for the tmpfs of `$XDG_RUNTIME_DIR`).
//!
//! The overlay is mounted in the daemon's intermediate user and mount namespace, where runc
//! runs, so runc sees it and copy-ups keep every owner the namespace maps (keep-id roots
//! stay right). Its files belong to subordinate ids, so removing a layer and reading what
//! changed also happen in that namespace, the diff through this binary's `layer-diff` mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The argv[1] of the `sandboxd` binary that prints a layer's changes as JSON.
pub const DIFF_ARG: &str = "layer-diff";

/// Bound on one mount, unmount, removal or diff.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Marks a layer kept across stops (`rootfs.keep_changes`): the next daemon keeps it too.
const KEEP_MARK: &str = "keep";
/// What the layer lies over, for the diff: `{"lower": PATH, "prefix": PATH}`.
const ORIGIN: &str = "origin.json";
/// The sandbox's mount points, which runc creates in the layer when the root lacks them:
/// not changes the sandbox made, so the diff leaves them out.
const MOUNT_POINTS: &str = "mountpoints.json";

#[derive(Debug, Serialize, Deserialize)]
struct Origin {
    lower: PathBuf,
    prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("rootfs.overlay needs subordinate ids for your user (/etc/subuid, /etc/subgid): the overlay is made in the namespace they give")]
    NoNamespace,
    #[error("rootfs.overlay: {} cannot be an overlay layer (a comma, colon or backslash in the path)", .0.display())]
    Path(PathBuf),
    #[error("preparing the layer {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
}

/// What a sandbox changed, relative to its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Added,
    Changed,
    Deleted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Changed => "changed",
            Self::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    /// The path inside the sandbox.
    pub path: String,
}

/// The layers of this daemon's sandboxes, and how to reach their namespace.
#[derive(Debug, Clone)]
pub struct Layers {
    /// `$XDG_DATA_HOME/sandboxd/layers`
    pub dir: PathBuf,
    /// The command prefix that enters the intermediate namespace; `None`: there is none.
    pub wrapper: Option<Vec<String>>,
    /// This `sandboxd` binary, for the diff.
    pub helper: PathBuf,
}

impl Layers {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The merged view of sandbox `name`'s layer, where its root (or `/usr`) is seen.
    pub fn merged(&self, name: &str) -> PathBuf {
        self.path(name).join("merged")
    }

    /// Whether `name`'s layer is kept across stops.
    pub fn is_kept(&self, name: &str) -> bool {
        self.path(name).join(KEEP_MARK).exists()
    }

    /// Layers on disk (names of their directories).
    pub fn names(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|r| {
                r.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| crate::profile::validate_name(n).is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Mounts `lower` with `name`'s private upper layer over it at [`Layers::merged`]
    /// (an existing layer, kept from before, is continued).
    /// `prefix` is where `lower` is seen inside (`/`, or `/usr` for a host root).
    pub async fn mount(
        &self,
        name: &str,
        lower: &Path,
        prefix: &str,
        keep: bool,
    ) -> Result<PathBuf, LayerError> {
        let wrapper = self.wrapper.as_ref().ok_or(LayerError::NoNamespace)?;
        let dir = self.path(name);
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for p in [lower, &upper, &work] {
            if p.to_string_lossy().contains([',', ':', '\\']) {
                return Err(LayerError::Path(p.to_path_buf()));
            }
        }
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).map_err(|source| LayerError::Io {
                path: d.clone(),
                source,
            })?;
        }
        let mark = dir.join(KEEP_MARK);
        let marked = if keep {
            std::fs::write(&mark, b"")
        } else {
            std::fs::remove_file(&mark).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        };
        marked.map_err(|source| LayerError::Io { path: mark, source })?;
        let origin = serde_json::to_vec(&Origin {
            lower: lower.to_path_buf(),
            prefix: prefix.into(),
        })
        .unwrap_or_default();
        std::fs::write(dir.join(ORIGIN), origin).map_err(|source| LayerError::Io {
            path: dir.join(ORIGIN),
            source,
        })?;
        // A kept layer may still be mounted from a daemon that crashed.
        let _ = self.unmount(name).await;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let mut argv = wrapper.clone();
        argv.extend(["mount", "-t", "overlay", "overlay", "-o"].map(String::from));
        argv.push(options);
        argv.push(merged.display().to_string());
        run("mounting the overlay", &argv).await?;
        Ok(merged)
    }

    /// Unmounts `name`'s overlay (nothing when it is not mounted).
    pub async fn unmount(&self, name: &str) -> Result<(), LayerError> {
        let Some(wrapper) = &self.wrapper else {
            return Ok(());
        };
        let merged = self.merged(name);
        if !is_mount_point(wrapper, &merged).await {
            return Ok(());
        }
        let mut argv = wrapper.clone();
        argv.extend(["umount", "--lazy"].map(String::from));
        argv.push(merged.display().to_string());
        run("unmounting the overlay", &argv).await
    }

    /// Unmounts and deletes `name`'s layer.
    pub async fn remove(&self, name: &str) -> Result<(), LayerError> {
        let dir = self.path(name);
        if !dir.exists() {
            return Ok(());
        }
        self.unmount(name).await?;
        let mut argv = self.wrapper.clone().unwrap_or_default();
        // Never into a mount: the merged view is unmounted, and nothing else is mounted.
        argv.extend(["rm", "-rf", "--one-file-system"].map(String::from));
        argv.push(dir.display().to_string());
        run("removing the layer", &argv).await
    }

    /// Records the sandbox's mount points (destinations of its spec's mounts).
    pub fn record_mount_points(&self, name: &str, points: &[String]) -> Result<(), LayerError> {
        let path = self.path(name).join(MOUNT_POINTS);
        let text = serde_json::to_vec(points).unwrap_or_default();
        std::fs::write(&path, text).map_err(|source| LayerError::Io { path, source })
    }

    /// Whether sandbox `name` has a layer on disk.
    pub fn exists(&self, name: &str) -> bool {
        self.path(name).join(ORIGIN).is_file()
    }

    /// What `name`'s layer holds, relative to the root it lies over.
    pub async fn diff(&self, name: &str) -> Result<Vec<Change>, LayerError> {
        let dir = self.path(name);
        let origin: Origin = std::fs::read(dir.join(ORIGIN))
            .map_err(|source| LayerError::Io {
                path: dir.join(ORIGIN),
                source,
            })
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| LayerError::Command {
                    what: "reading the layer's origin".into(),
                    message: e.to_string(),
                })
            })?;
        let (lower, prefix) = (origin.lower.as_path(), origin.prefix.as_str());
        let upper = dir.join("upper");
        let mut argv = self.wrapper.clone().unwrap_or_default();
        argv.push(self.helper.display().to_string());
        argv.push(DIFF_ARG.into());
        for p in [&upper, lower] {
            argv.push(p.display().to_string());
        }
        argv.push(prefix.into());
        let points: Vec<String> = std::fs::read(dir.join(MOUNT_POINTS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        argv.extend(points);
        let out = run_output("reading the layer", &argv).await?;
        serde_json::from_slice(&out).map_err(|e| LayerError::Command {
            what: "reading the layer".into(),
            message: e.to_string(),
        })
    }
}

async fn is_mount_point(wrapper: &[String], path: &Path) -> bool {
    let mut argv = wrapper.to_vec();
    argv.extend(["mountpoint", "-q"].map(String::from));
    argv.push(path.display().to_string());
    run("mountpoint", &argv).await.is_ok()
}

async fn run(what: &str, argv: &[String]) -> Result<(), LayerError> {
    run_output(what, argv).await.map(drop)
}

async fn run_output(what: &str, argv: &[String]) -> Result<Vec<u8>, LayerError> {
    let failed = |message: String| LayerError::Command {
        what: what.into(),
        message,
    };
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| failed("no command".into()))?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STEP_TIMEOUT, child)
        .await
        .map_err(|_| failed(format!("no end within {STEP_TIMEOUT:?}")))?
        .map_err(|e| failed(format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The `layer-diff UPPER LOWER PREFIX [MOUNTPOINT…]` mode: prints the changes as a JSON
/// array. Runs in the intermediate namespace, where every file of the layer is readable.
pub fn diff_main(args: &[String]) -> ! {
    let code = match args {
        [upper, lower, prefix, points @ ..] => {
            match changes(Path::new(upper), Path::new(lower), prefix, points) {
                Ok(list) => {
                    println!(
                        "{}",
                        serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
                    );
                    0
                }
                Err(e) => {
                    eprintln!("{upper}: {e}");
                    1
                }
            }
        }
        _ => {
            eprintln!("usage: sandboxd {DIFF_ARG} UPPER LOWER PREFIX [MOUNTPOINT...]");
            2
        }
    };
    std::process::exit(code)
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
}
