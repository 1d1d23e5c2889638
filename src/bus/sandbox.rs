//! `org.sandboxd.Sandboxd1.Sandbox`: one object per known sandbox, whose properties mirror
//! the supervisor's [`SandboxInfo`] and change with PropertiesChanged.

use zbus::interface;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedObjectPath;

use super::error::BusError;
use super::path::sandbox_path;
use crate::runtime::Runtime;
use crate::supervisor::{SandboxInfo, Supervisor};

pub struct SandboxObject<R> {
    pub info: SandboxInfo,
    pub sup: Supervisor<R>,
}

impl<R: Runtime> SandboxObject<R> {
    /// Stores `new` and announces each property that changed.
    pub async fn update(
        &mut self,
        new: SandboxInfo,
        emitter: &SignalEmitter<'_>,
    ) -> zbus::Result<()> {
        let old = std::mem::replace(&mut self.info, new);
        let now = &self.info;
        if old.state != now.state {
            self.state_changed(emitter).await?;
        }
        if old.leader != now.leader {
            self.leader_changed(emitter).await?;
        }
        if old.since != now.since {
            self.since_changed(emitter).await?;
        }
        if old.profile != now.profile {
            self.profile_changed(emitter).await?;
        }
        if old.restarts != now.restarts {
            self.restarts_changed(emitter).await?;
        }
        if old.security != now.security {
            self.security_changed(emitter).await?;
        }
        if old.exit_status != now.exit_status {
            self.exit_status_changed(emitter).await?;
        }
        Ok(())
    }
}

#[interface(name = "org.sandboxd.Sandboxd1.Sandbox")]
impl<R: Runtime> SandboxObject<R> {
    async fn stop(&self) -> Result<(), BusError> {
        Ok(self.sup.stop(&self.info.name).await?)
    }

    async fn restart(&self) -> Result<OwnedObjectPath, BusError> {
        let info = self.sup.restart(&self.info.name).await?;
        Ok(sandbox_path(&info.name))
    }

    async fn kill(&self, signal: i32) -> Result<(), BusError> {
        Ok(self.sup.kill(&self.info.name, signal).await?)
    }

    #[zbus(property)]
    fn name(&self) -> &str {
        &self.info.name
    }

    /// `starting`, `running`, `stopping`, `stopped` or `failed`.
    #[zbus(property)]
    fn state(&self) -> &str {
        self.info.state.as_str()
    }

    /// Host pid of the sandbox's pid 1; 0 when none.
    #[zbus(property)]
    fn leader(&self) -> u32 {
        self.info.leader
    }

    /// µs since the epoch of the last (re)start.
    #[zbus(property)]
    fn since(&self) -> u64 {
        self.info.since
    }

    /// The profile file; "" for the built-in default.
    #[zbus(property)]
    fn profile(&self) -> &str {
        &self.info.profile
    }

    #[zbus(property)]
    fn restarts(&self) -> u32 {
        self.info.restarts
    }

    /// The run's kernel surface: its seccomp filter and what `[security]` opens.
    #[zbus(property)]
    fn security(&self) -> &str {
        &self.info.security
    }

    /// Exit code of the last run (128+N for signal N); -1 while running or unknown.
    #[zbus(property)]
    fn exit_status(&self) -> i32 {
        self.info.exit_status
    }

    /// Proxied TCP connections open now.
    #[zbus(property(emits_changed_signal = "false"))]
    fn connections_active(&self) -> u32 {
        self.sup.net_stats(&self.info.name).active as u32
    }

    /// Bytes the proxy passed from the sandbox to its destinations (TCP and UDP payload).
    #[zbus(property(emits_changed_signal = "false"))]
    fn bytes_sent(&self) -> u64 {
        self.sup.net_stats(&self.info.name).sent
    }

    /// Bytes the proxy passed from destinations back into the sandbox.
    #[zbus(property(emits_changed_signal = "false"))]
    fn bytes_received(&self) -> u64 {
        self.sup.net_stats(&self.info.name).received
    }

    /// Connections and UDP flows made by name (through the daemon's resolver), per name.
    #[zbus(property(emits_changed_signal = "false"))]
    fn name_hits(&self) -> std::collections::HashMap<String, u64> {
        self.sup.name_hits(&self.info.name)
    }

    /// Descriptors this sandbox's connections and flows hold of the daemon's budget.
    #[zbus(property(emits_changed_signal = "false"))]
    fn descriptors(&self) -> u64 {
        self.sup.net_stats(&self.info.name).descriptors
    }

    /// This sandbox's share of the daemon's descriptor budget now (0 when not proxied).
    #[zbus(property(emits_changed_signal = "false"))]
    fn descriptor_share(&self) -> u64 {
        self.sup.net_stats(&self.info.name).share
    }

    /// Connections and UDP flows the policy (or a limit) refused.
    #[zbus(property(emits_changed_signal = "false"))]
    fn connections_denied(&self) -> u64 {
        self.sup.net_stats(&self.info.name).denied
    }
}
