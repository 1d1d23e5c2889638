//! Runs end with their caller: the peer that asked for a throwaway sandbox is watched on
//! the bus, and when it leaves (its `sandboxctl` ended, or was killed with SIGKILL, which
//! nothing inside `sandboxctl` can catch) the sandbox is stopped and removed.

use futures_util::StreamExt;
use zbus::names::{BusName, OwnedUniqueName};

use crate::runtime::Runtime;
use crate::supervisor::{SandboxInfo, Supervisor};

/// Stops the sandbox of `run` once `owner` has no connection to the bus any more. Only
/// that run: a later sandbox of the same name (its `since` differs) is left alone.
pub fn stop_when_gone<R: Runtime>(
    sup: Supervisor<R>,
    conn: zbus::Connection,
    owner: OwnedUniqueName,
    run: SandboxInfo,
) {
    tokio::spawn(async move {
        let Ok(dbus) = zbus::fdo::DBusProxy::new(&conn).await else {
            return;
        };
        let Ok(mut changes) = dbus
            .receive_name_owner_changed_with_args(&[(0, owner.as_str())])
            .await
        else {
            return;
        };
        // Subscribed first, so a departure cannot fall between the check and the wait.
        let present = dbus
            .name_has_owner(BusName::Unique(owner.as_ref()))
            .await
            .unwrap_or(false);
        if present {
            while let Some(change) = changes.next().await {
                if change.args().is_ok_and(|a| a.new_owner().is_none()) {
                    break;
                }
            }
        }
        if sup.get(&run.name).is_ok_and(|now| now.since == run.since) {
            tracing::info!(
                SANDBOX = run.name.as_str(),
                "its caller left the bus: removing the run"
            );
            if let Err(e) = sup.stop(&run.name).await {
                tracing::warn!(SANDBOX = run.name.as_str(), "{}", crate::error_chain(&e));
            }
        }
    });
}

/// After adoption: watches again the callers of the runs an earlier daemon left running
/// (a caller that left meanwhile ends its run at once).
pub fn watch_adopted_runs<R: Runtime>(sup: &Supervisor<R>, conn: &zbus::Connection) {
    for (run, owner) in sup.run_owners() {
        match OwnedUniqueName::try_from(owner) {
            Ok(owner) => stop_when_gone(sup.clone(), conn.clone(), owner, run),
            Err(e) => tracing::warn!(SANDBOX = run.name.as_str(), "its recorded caller: {e}"),
        }
    }
}
