//! Copy-on-write roots (`rootfs.overlay`): a kernel overlayfs whose lower layer is the
//! sandbox's root (or, for a host root, the host's `/usr`) and whose upper layer is private
//! to the sandbox, under `$XDG_DATA_HOME/sandboxd/layers/NAME/` (on disk: a build can write
//! gigabytes, too much for the tmpfs of `$XDG_RUNTIME_DIR`).
//!
//! The overlay is mounted in the daemon's intermediate user and mount namespace, where runc
//! runs, so runc sees it and copy-ups keep every owner the namespace maps (keep-id roots
//! stay right). Its files belong to subordinate ids, so removing a layer and reading what
//! changed also happen in that namespace, each step one process of this binary's `layer`
//! mode (`layer_helper`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
        // A kept layer may still be mounted from a daemon that crashed: the step detaches it.
        let mut argv = self.step(wrapper, "mount");
        argv.extend([lower, &upper, &work, &merged].map(|p| p.display().to_string()));
        run("mounting the overlay", &argv).await?;
        Ok(merged)
    }

    /// The argv of one `layer` step of this binary, in the namespace `wrapper` enters.
    fn step(&self, wrapper: &[String], step: &str) -> Vec<String> {
        let mut argv = wrapper.to_vec();
        argv.push(self.helper.display().to_string());
        argv.extend([super::layer_helper::LAYER_ARG, step].map(String::from));
        argv
    }

    /// Unmounts `name`'s overlay (nothing when it is not mounted).
    pub async fn unmount(&self, name: &str) -> Result<(), LayerError> {
        let Some(wrapper) = &self.wrapper else {
            return Ok(());
        };
        let mut argv = self.step(wrapper, "unmount");
        argv.push(self.merged(name).display().to_string());
        run("unmounting the overlay", &argv).await
    }

    /// Unmounts and deletes `name`'s layer, in one step.
    pub async fn remove(&self, name: &str) -> Result<(), LayerError> {
        let dir = self.path(name);
        if !dir.exists() {
            return Ok(());
        }
        let mut argv = self.step(self.wrapper.as_deref().unwrap_or_default(), "remove");
        argv.extend([&dir, &self.merged(name)].map(|p| p.display().to_string()));
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
        let mut argv = self.step(self.wrapper.as_deref().unwrap_or_default(), "diff");
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
