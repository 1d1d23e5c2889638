//! `org.sandboxd.Sandboxd1.Manager` at `/org/sandboxd/Sandboxd1`: a thin adapter from D-Bus
//! calls to the supervisor.

use zbus::interface;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use super::error::BusError;
use super::path::sandbox_path;
use crate::runtime::Runtime;
use crate::supervisor::Supervisor;

pub struct Manager<R> {
    pub sup: Supervisor<R>,
}

#[interface(name = "org.sandboxd.Sandboxd1.Manager")]
impl<R: Runtime> Manager<R> {
    /// Every profile on the search path: name, file ("" for the built-in), and "" or the
    /// validation error.
    async fn list_profiles(&self) -> Vec<(String, String, String)> {
        let store = self.sup.store().clone();
        tokio::task::spawn_blocking(move || store.list())
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.file, e.error))
            .collect()
    }

    /// Every known sandbox: name, state, leader pid (0 if none), object path.
    async fn list_sandboxes(&self) -> Vec<(String, String, u32, OwnedObjectPath)> {
        self.sup
            .list()
            .into_iter()
            .map(|i| {
                let path = sandbox_path(&i.name);
                (i.name, i.state.as_str().to_string(), i.leader, path)
            })
            .collect()
    }

    async fn start_sandbox(&self, name: &str) -> Result<OwnedObjectPath, BusError> {
        let info = self.sup.start(name).await?;
        Ok(sandbox_path(&info.name))
    }

    async fn stop_sandbox(&self, name: &str) -> Result<(), BusError> {
        Ok(self.sup.stop(name).await?)
    }

    async fn restart_sandbox(&self, name: &str) -> Result<OwnedObjectPath, BusError> {
        let info = self.sup.restart(name).await?;
        Ok(sandbox_path(&info.name))
    }

    async fn kill_sandbox(&self, name: &str, signal: i32) -> Result<(), BusError> {
        Ok(self.sup.kill(name, signal).await?)
    }

    async fn get_sandbox(&self, name: &str) -> Result<OwnedObjectPath, BusError> {
        Ok(sandbox_path(&self.sup.get(name)?.name))
    }

    /// Profiles are read afresh at every start; this re-checks them all now and logs
    /// each one that would fail, so a user learns of a broken edit before the next start.
    async fn reload_profiles(&self) {
        for p in self.list_profiles().await {
            if !p.2.is_empty() {
                tracing::warn!(PROFILE = p.0.as_str(), "invalid profile: {}", p.2);
            }
        }
    }

    #[zbus(signal)]
    pub async fn sandbox_new(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn sandbox_removed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
        result: &str,
    ) -> zbus::Result<()>;
}
