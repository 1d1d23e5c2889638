//! What the daemon writes next to each bundle so that a restarted daemon can adopt a
//! sandbox that kept running: enough to supervise it without its profile file.

use serde::{Deserialize, Serialize};

use crate::profile::{Profile, RestartPolicy};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub profile: String,
    pub policy: RestartPolicy,
    pub max: u32,
    pub stop_timeout_ms: u64,
    pub restarts: u32,
    pub since: u64,
    /// The run's `[security]`, described; absent in records of older daemons.
    #[serde(default)]
    pub security: String,
}

impl RunRecord {
    pub fn new(profile: &Profile, restarts: u32, since: u64) -> Self {
        Self {
            profile: profile
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            policy: profile.restart.policy,
            max: profile.restart.max,
            stop_timeout_ms: profile.restart.stop_timeout.as_millis() as u64,
            restarts,
            since,
            security: profile.security.describe(),
        }
    }
}
