//! The public picture of one sandbox, as the bus and the CLI show it.

use serde::{Deserialize, Serialize};

/// A sandbox's life cycle.
///
/// ```text
///            StartSandbox                runc start ok
///  (none) ───────────────▶ Starting ─────────────────▶ Running
///                             │ create/start fails        │ StopSandbox      │ pid 1 exits
///                             ▼                           ▼                  ▼
///                           Failed ◀── exit ≠ 0 ──── Stopping ──▶ (removed)  restart policy:
///                                                                            again → Starting
///                                                     exit 0, no restart → Stopped
///                                                     exit ≠ 0, no restart → Failed
/// ```
/// `Stopped` and `Failed` sandboxes stay listed (with their exit status) until started
/// again or dismissed with `StopSandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    /// True while runc has a container for it.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Stopping)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the bus exposes about a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub name: String,
    pub state: State,
    /// Host pid of the sandbox's pid 1; 0 when none.
    pub leader: u32,
    /// µs since the epoch of the last state change into starting/running.
    pub since: u64,
    /// The profile file, "" for the built-in default.
    pub profile: String,
    pub restarts: u32,
    /// The main command's exit code, 128+N for a signal, -1 when unknown or still running.
    pub exit_status: i32,
    /// The run's `[security]`, described ([`crate::profile::Security::describe`]); "" when
    /// not running.
    pub security: String,
}

impl SandboxInfo {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            state: State::Starting,
            leader: 0,
            since: now_us(),
            profile: String::new(),
            restarts: 0,
            exit_status: -1,
            security: String::new(),
        }
    }
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A raw wait status (waitpid(2)) as a shell would report it.
pub fn exit_code(status: Option<i32>) -> i32 {
    match status {
        None => -1,
        Some(s) if s & 0x7f == 0 => (s >> 8) & 0xff,
        Some(s) => 128 + (s & 0x7f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(Some(3 << 8)), 3);
        assert_eq!(exit_code(Some(0)), 0);
        assert_eq!(exit_code(Some(9)), 137);
        assert_eq!(exit_code(None), -1);
    }
}
