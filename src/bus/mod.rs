//! The D-Bus face of the daemon (DESIGN §4): the Manager object, one object per sandbox,
//! and the pump that turns supervisor events into objects, signals and PropertiesChanged.
//! The daemon takes its `zbus::Connection` as a parameter, so tests can serve it over a
//! peer-to-peer socket.

mod error;
mod manager;
mod owner;

pub use owner::watch_adopted_runs;
mod path;
mod sandbox;

use tokio::sync::mpsc;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

pub use error::BusError;
pub use manager::Manager;
pub use path::{
    escape_label, sandbox_path, BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, SANDBOX_INTERFACE,
};
pub use sandbox::SandboxObject;

use crate::runtime::Runtime;
use crate::supervisor::{Event, Supervisor};

/// Serves the Manager object on `conn`.
pub async fn serve<R: Runtime>(conn: &Connection, sup: Supervisor<R>) -> zbus::Result<()> {
    conn.object_server()
        .at(MANAGER_PATH, Manager { sup })
        .await?;
    Ok(())
}

/// Applies supervisor events to the bus until the channel closes. `on_change` runs after
/// each event (the daemon updates its systemd STATUS= there).
pub async fn pump_events<R: Runtime>(
    conn: Connection,
    sup: Supervisor<R>,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut on_change: impl FnMut() + Send,
) {
    while let Some(event) = events.recv().await {
        if let Err(e) = apply(&conn, &sup, event).await {
            tracing::warn!("publishing a sandbox change on the bus: {e}");
        }
        on_change();
    }
}

async fn apply<R: Runtime>(
    conn: &Connection,
    sup: &Supervisor<R>,
    event: Event,
) -> zbus::Result<()> {
    let server = conn.object_server();
    let manager = SignalEmitter::new(conn, MANAGER_PATH)?;
    match event {
        Event::New(name) => {
            let path = sandbox_path(&name);
            let info = sup
                .get(&name)
                .unwrap_or_else(|_| crate::supervisor::SandboxInfo::new(&name));
            server
                .at(
                    &path,
                    SandboxObject {
                        info,
                        sup: sup.clone(),
                    },
                )
                .await?;
            Manager::<R>::sandbox_new(&manager, &name, path.as_ref()).await?;
        }
        Event::Changed(info) => {
            let path = sandbox_path(&info.name);
            let iface = server.interface::<_, SandboxObject<R>>(&path).await?;
            let emitter = iface.signal_emitter().clone();
            iface.get_mut().await.update(info, &emitter).await?;
        }
        Event::ConnectionDenied(d) => {
            Manager::<R>::connection_denied(
                &manager,
                &d.sandbox,
                &d.destination,
                d.port,
                &d.reason,
            )
            .await?;
        }
        Event::ProcessExited { name, id, status } => {
            Manager::<R>::process_exited(&manager, &name, id, status).await?;
        }
        Event::Removed { name, result } => {
            let path = sandbox_path(&name);
            Manager::<R>::sandbox_removed(&manager, &name, path.as_ref(), &result).await?;
            server.remove::<SandboxObject<R>, _>(&path).await?;
        }
    }
    Ok(())
}
