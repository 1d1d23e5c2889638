//! The daemon's places on disk (DESIGN §4): runc state and bundles under
//! `$XDG_RUNTIME_DIR/sandboxd/`.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
#[error("XDG_RUNTIME_DIR is not set to an absolute path: sandboxd runs in a user session (systemctl --user, or export XDG_RUNTIME_DIR=/run/user/$(id -u))")]
pub struct NoRuntimeDir;

#[derive(Debug, Clone)]
pub struct RuntimePaths {
    /// `$XDG_RUNTIME_DIR/sandboxd`
    pub base: PathBuf,
}

impl RuntimePaths {
    pub fn from_env() -> Result<Self, NoRuntimeDir> {
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .ok_or(NoRuntimeDir)?;
        Ok(Self {
            base: dir.join("sandboxd"),
        })
    }

    /// runc's `--root`.
    pub fn runc_root(&self) -> PathBuf {
        self.base.join("runc")
    }

    pub fn bundles(&self) -> PathBuf {
        self.base.join("bundles")
    }
}
