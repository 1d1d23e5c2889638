//! Places on disk (DESIGN §4): the XDG base directories, and the daemon's runc state and
//! bundles under `$XDG_RUNTIME_DIR/sandboxd/`.

use std::path::PathBuf;

use thiserror::Error;

/// The user's home (`$HOME`, else `/`).
pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/".into())
}

/// `$XDG_CONFIG_HOME`, else `~/.config` (the base directory spec ignores relative values).
pub fn config_home() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_DATA_HOME`, else `~/.local/share`.
pub fn data_home() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share")
}

/// `$XDG_CACHE_HOME`, else `~/.cache`: what can be fetched again (image blobs).
pub fn cache_home() -> PathBuf {
    xdg("XDG_CACHE_HOME", ".cache")
}

/// `$XDG_STATE_HOME`, else `~/.local/state`: what should survive a reboot but is not data.
pub fn state_home() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state")
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(fallback))
}

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

    /// The D-Bus proxies' sockets, a directory per sandbox.
    pub fn buses(&self) -> PathBuf {
        self.base.join("dbus")
    }
}
