//! Profiles: the TOML model (`model`), its checks (`validate`), loading with errors that name
//! file, line, column and key (`load`), and the XDG search path (`store`).
//!
//! A [`Profile`] is always valid: paths are absolute and expanded, sizes and durations are
//! numbers, and every name has passed [`validate_name`].

mod dbus;
mod destination;
mod load;
mod model;
mod name;
mod publish;
mod store;
pub mod units;
mod upstream;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use dbus::Dbus;
pub use destination::{Cidr, Destination, Ports};
pub use load::{deserialize_located, locate_key, parse_profile, Located, ProfileError};
pub use model::{NetworkMode, RestartPolicy};
pub use name::{validate_name, InvalidName, MAX_NAME_LEN};
pub use publish::Publish;
pub use store::{ProfileEntry, ProfileStore};
pub use units::{parse_duration, parse_size};
pub use upstream::{Upstream, UpstreamServer};

/// Name of the built-in profile used when no file of that name exists.
pub const DEFAULT_PROFILE: &str = "default";

/// A validated profile, ready to become an OCI spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// The file it came from; `None` for the built-in default.
    pub file: Option<PathBuf>,
    pub description: String,
    pub hostname: String,
    pub autostart: bool,
    pub rootfs: Rootfs,
    pub process: Process,
    /// `None`: a persistent home for a non-root `process.user`, the root's own otherwise.
    pub home: Option<Home>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub gui: Gui,
    pub audio: Audio,
    pub devices: Devices,
    pub limits: Limits,
    pub restart: Restart,
    pub security: Security,
    /// `None`: no session bus at all.
    pub dbus: Option<Dbus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSource {
    /// A directory tree, e.g. from `docker export`.
    Path(PathBuf),
    /// The host's `/usr` and parts of `/etc`, read-only; everything else private.
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub source: RootfsSource,
    pub readonly: bool,
    /// Seen through a private copy-on-write layer: writes never reach the source.
    pub overlay: bool,
    /// The layer outlives a stop (the next start continues with it).
    pub keep_changes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Id(u32),
    Name(String),
}

/// `home`: what is mounted at the account's home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// A fresh tmpfs each start: nothing survives a stop.
    Tmpfs,
    /// The daemon's directory for this sandbox, `$XDG_DATA_HOME/sandboxd/homes/NAME`.
    Persistent,
    /// A host folder of the user's choosing.
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Process {
    /// `None`: sandbox-init idles until the sandbox is stopped.
    pub command: Option<Vec<String>>,
    /// `None`: root.
    pub user: Option<User>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowHost {
    None,
    All,
    Ports(Vec<u16>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub mode: NetworkMode,
    pub allow: Vec<Destination>,
    pub deny: Vec<Destination>,
    pub allow_host: AllowHost,
    pub allow_lan: bool,
    pub dns: bool,
    pub upstream: Upstream,
    pub publish: Vec<Publish>,
    /// Concurrent proxied TCP connections; more are refused.
    pub max_connections: u32,
    /// Concurrent UDP flows; datagrams of further flows are dropped.
    pub max_udp_flows: u32,
    /// A TLS ClientHello to a name's address must name a server (SNI), or it is refused.
    pub require_sni: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gui {
    pub wayland: bool,
    pub x11: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audio {
    pub pulseaudio: bool,
    pub pipewire: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Devices {
    pub gpu: bool,
    pub sound: bool,
    pub extra: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub memory: Option<u64>,
    pub pids: Option<u32>,
    pub nofile: Option<u64>,
}

/// How far a sandbox may build namespaces of its own (`security.nested`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nested {
    /// None: no nested user namespace, no mount API (the filter and the userns lock).
    #[default]
    Off,
    /// `"namespaces"`: user, pid, net, uts and ipc namespaces, which browsers and
    /// Electron apps build their own sandbox from; still no mount namespace or mount API.
    Namespaces,
    /// `true`: every namespace and the mount API, for podman, bubblewrap, flatpak-builder.
    Full,
}

impl Nested {
    /// The value as a profile writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "false",
            Self::Namespaces => "\"namespaces\"",
            Self::Full => "true",
        }
    }
}

/// The `[security]` table: what of the kernel's surface the sandbox's filter opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Security {
    pub nested: Nested,
    /// 32-bit x86 syscalls too (Wine, old binaries).
    pub multiarch: bool,
}

impl Security {
    /// One line for `status`: the filter and what it opens.
    pub fn describe(&self) -> String {
        let mut s = match self.nested {
            Nested::Off => "seccomp filter, no nested namespaces".to_string(),
            Nested::Namespaces => {
                "seccomp filter, nested user/pid/net namespaces (weaker)".to_string()
            }
            Nested::Full => "seccomp filter, nested namespaces and mounts (weaker)".to_string(),
        };
        if self.multiarch {
            s.push_str(", 32-bit syscalls");
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// Restarts allowed in a row before the sandbox is left `failed`.
    pub max: u32,
    pub stop_timeout: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::No,
            max: 5,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

impl Profile {
    /// The built-in `default` profile: the host's `/usr` read-only, private `/tmp`, `/home`
    /// and `/run`, the network through the proxy under the default policy (public
    /// addresses only) with the daemon as its resolver, sandbox-init idling until stopped.
    pub fn builtin_default() -> Self {
        Self {
            name: DEFAULT_PROFILE.into(),
            file: None,
            description:
                "Built-in: the host's /usr read-only, private /tmp, /home and /run, public network through the proxy"
                    .into(),
            hostname: "sandbox".into(),
            autostart: false,
            rootfs: Rootfs {
                source: RootfsSource::Host,
                readonly: true,
                overlay: false,
                keep_changes: false,
            },
            process: Process::default(),
            home: None,
            mounts: Vec::new(),
            network: Network {
                mode: NetworkMode::Proxy,
                allow: vec![
                    Destination::Net {
                        net: Cidr::v4([0, 0, 0, 0], 0),
                        ports: None,
                    },
                    Destination::Net {
                        net: Cidr::v6([0; 8], 0),
                        ports: None,
                    },
                ],
                deny: Vec::new(),
                allow_host: AllowHost::None,
                allow_lan: false,
                dns: true,
                upstream: Upstream::Direct,
                publish: Vec::new(),
                max_connections: model::default_max_connections(),
                max_udp_flows: model::default_max_udp_flows(),
                require_sni: false,
            },
            gui: Gui::default(),
            audio: Audio::default(),
            devices: Devices::default(),
            limits: Limits::default(),
            restart: Restart::default(),
            security: Security::default(),
            dbus: None,
        }
    }

    /// The profile keys this build parses but cannot honour yet. Starting such a profile is
    /// refused with this list rather than running a sandbox that silently lacks them.
    pub fn unsupported_features(&self) -> Vec<&'static str> {
        let n = &self.network;
        let proxied = n.mode == NetworkMode::Proxy;
        let is_name = Destination::is_name;
        let flags = [
            (
                proxied && !n.dns && (n.allow.iter().any(is_name) || n.deny.iter().any(is_name)),
                "host names in network.allow / network.deny with network.dns = false (names are known only through the daemon's resolver)",
            ),
        ];
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, key)| *key)
            .collect()
    }
}
