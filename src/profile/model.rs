//! The profile file as written: serde structs that mirror the TOML keys of DESIGN §4
//! one to one. Every table denies unknown keys, so a typo is an error, never a silent no-op.
//! Semantic checks live in `validate.rs`; this file only knows shapes and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::units::{de_duration, de_size};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub description: Option<String>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub autostart: bool,
    pub rootfs: Option<RawRootfs>,
    #[serde(default)]
    pub process: RawProcess,
    /// `"tmpfs"`, `"persistent"` or a host path.
    pub home: Option<String>,
    #[serde(default, rename = "mount")]
    pub mounts: Vec<RawMount>,
    #[serde(default)]
    pub network: RawNetwork,
    #[serde(default)]
    pub gui: RawGui,
    #[serde(default)]
    pub audio: RawAudio,
    #[serde(default)]
    pub devices: RawDevices,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub restart: RawRestart,
    #[serde(default)]
    pub security: RawSecurity,
    pub dbus: Option<super::dbus::RawDbus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRootfs {
    pub path: Option<String>,
    #[serde(default)]
    pub host: bool,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub overlay: bool,
    #[serde(default)]
    pub keep_changes: bool,
}

/// `process.user`: a name looked up in the root file system's `/etc/passwd`, or a uid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawUser {
    Id(u32),
    Name(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    pub command: Option<Vec<String>>,
    pub user: Option<RawUser>,
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub readonly: bool,
}

/// `network.allow_host`: all host ports (`true`), none (`false`), or a list of ports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawAllowHost {
    All(bool),
    Ports(Vec<u16>),
}

impl Default for RawAllowHost {
    fn default() -> Self {
        Self::All(false)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Every flow goes through the daemon's transparent proxy (DESIGN §2).
    #[default]
    Proxy,
    /// Loopback only.
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    #[serde(default)]
    pub mode: NetworkMode,
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub allow_host: RawAllowHost,
    #[serde(default)]
    pub allow_lan: bool,
    #[serde(default = "yes")]
    pub dns: bool,
    #[serde(default = "default_upstream")]
    pub upstream: String,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "default_max_udp_flows")]
    pub max_udp_flows: u32,
    #[serde(default)]
    pub require_sni: bool,
}

impl Default for RawNetwork {
    fn default() -> Self {
        Self {
            mode: NetworkMode::default(),
            allow: default_allow(),
            deny: Vec::new(),
            allow_host: RawAllowHost::default(),
            allow_lan: false,
            dns: true,
            upstream: default_upstream(),
            publish: Vec::new(),
            max_connections: default_max_connections(),
            max_udp_flows: default_max_udp_flows(),
            require_sni: false,
        }
    }
}

/// Concurrent proxied TCP connections per sandbox.
pub fn default_max_connections() -> u32 {
    4096
}

/// Concurrent UDP flows per sandbox.
pub fn default_max_udp_flows() -> u32 {
    1024
}

fn default_allow() -> Vec<String> {
    vec!["0.0.0.0/0".into(), "::/0".into()]
}

fn default_upstream() -> String {
    "direct".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGui {
    #[serde(default)]
    pub wayland: bool,
    #[serde(default)]
    pub x11: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudio {
    #[serde(default)]
    pub pulseaudio: bool,
    #[serde(default)]
    pub pipewire: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    #[serde(default)]
    pub gpu: bool,
    #[serde(default)]
    pub sound: bool,
    #[serde(default)]
    pub extra: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default, deserialize_with = "de_size")]
    pub memory: Option<u64>,
    pub pids: Option<u32>,
    pub nofile: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    #[serde(rename = "no")]
    No,
    /// Restart when the main command exits non-zero or is killed by a signal.
    #[serde(rename = "on-failure")]
    OnFailure,
    /// Restart whenever the main command exits, unless the sandbox was stopped.
    #[serde(rename = "always")]
    Always,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    #[serde(default)]
    pub policy: RestartPolicy,
    pub max: Option<u32>,
    #[serde(default, deserialize_with = "de_duration")]
    pub stop_timeout: Option<Duration>,
}

/// `security.nested`: `false`, `true`, or the name of a narrower setting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawNested {
    Switch(bool),
    Name(String),
}

impl Default for RawNested {
    fn default() -> Self {
        Self::Switch(false)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    #[serde(default)]
    pub nested: RawNested,
    #[serde(default)]
    pub multiarch: bool,
}
