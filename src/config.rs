//! The optional daemon configuration, `$XDG_CONFIG_HOME/sandboxd/sandboxd.toml`. Every key
//! is optional; an unknown key or a bad value stops the daemon at start with the file,
//! line and key, before it tells systemd it is ready.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::profile::{deserialize_located, Located};

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// The runc binary; default: `runc` on `$PATH`.
    pub runc: Option<PathBuf>,
    /// The static sandbox-init binary; default: `sandbox-init` next to `sandboxd`, then
    /// `/usr/lib/sandboxd/sandbox-init`.
    pub init: Option<PathBuf>,
    /// Extra profile directories searched after `$XDG_CONFIG_HOME/sandboxd/profiles` and
    /// before `/etc/sandboxd/profiles`.
    #[serde(default)]
    pub profile_dirs: Vec<PathBuf>,
    /// DNS servers the daemon resolves sandboxes' names with (`"IP"` or `"IP:PORT"`,
    /// `"[IPv6]:PORT"`); default: the host's `/etc/resolv.conf`.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    /// The most each sandbox's log keeps on disk ("8M", the default); at least 64K.
    #[serde(default, deserialize_with = "crate::profile::units::de_size")]
    pub log_size: Option<u64>,
}

/// Parses a `dns_servers` entry: an address with an optional port (53).
pub fn dns_server(raw: &str) -> Option<std::net::SocketAddr> {
    if let Ok(a) = raw.parse::<std::net::SocketAddr>() {
        return Some(a);
    }
    raw.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{}:{}: {}: {}", path.display(), at.line, at.column, at.key, at.message)]
    Invalid { path: PathBuf, at: Located },
}

impl DaemonConfig {
    /// The default location for the current user.
    pub fn default_path() -> PathBuf {
        crate::paths::config_home().join("sandboxd/sandboxd.toml")
    }

    /// Reads `path`; a missing file is the empty configuration.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let config: Self = deserialize_located(&src).map_err(|at| ConfigError::Invalid {
            path: path.into(),
            at,
        })?;
        for (i, d) in config.profile_dirs.iter().enumerate() {
            if !d.is_absolute() {
                let at = crate::profile::locate_key(
                    &src,
                    format!("profile_dirs[{i}]"),
                    "must be an absolute path".into(),
                );
                return Err(ConfigError::Invalid {
                    path: path.into(),
                    at,
                });
            }
        }
        for (i, d) in config.dns_servers.iter().enumerate() {
            if dns_server(d).is_none() {
                let at = crate::profile::locate_key(
                    &src,
                    format!("dns_servers[{i}]"),
                    format!("{d:?}: expected an IP address, optionally with :PORT"),
                );
                return Err(ConfigError::Invalid {
                    path: path.into(),
                    at,
                });
            }
        }
        Ok(config)
    }

    /// The configured DNS servers (validated by [`DaemonConfig::load`]).
    pub fn dns_server_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.dns_servers
            .iter()
            .filter_map(|d| dns_server(d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_default_and_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sandboxd.toml");
        assert_eq!(DaemonConfig::load(&f).unwrap(), DaemonConfig::default());
        std::fs::write(&f, "runc = \"/usr/sbin/runc\"\nrnuc = 1\n").unwrap();
        let e = DaemonConfig::load(&f).unwrap_err().to_string();
        assert!(e.ends_with("sandboxd.toml:2:1: rnuc: unknown field `rnuc`, expected one of `runc`, `init`, `profile_dirs`, `dns_servers`, `log_size`; did you mean `runc`?"), "{e}");
        std::fs::write(&f, "profile_dirs = [\"rel\"]\n").unwrap();
        assert!(DaemonConfig::load(&f)
            .unwrap_err()
            .to_string()
            .contains(":1:17: profile_dirs[0]: must be an absolute path"));
    }
}
