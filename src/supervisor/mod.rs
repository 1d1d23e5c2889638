//! The supervisor: owns every sandbox's state machine (see [`State`]), turns profiles into
//! running containers through a [`Runtime`], applies restart policies, and adopts what an
//! earlier daemon left running. It never calls libc or spawns runc itself; it reports
//! every change as an [`Event`] for the bus.

mod adopt;
mod error;
mod exec;
mod launch;
mod layers;
mod monitor;
mod record;
mod run;
mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub use error::{CleanupError, Error};
pub use exec::ExecOptions;
pub use record::RunRecord;
pub use run::{runs_dir, RunOptions};
pub use state::{exit_code, now_us, SandboxInfo, State};

use crate::environ::SessionSource;
use crate::logbook::Logbook;
use crate::profile::{
    validate_name, Nested, NetworkMode, Profile, ProfileStore, Restart, RestartPolicy, RootfsSource,
};
use crate::proxy::{Denied, Networking, Stats};
use crate::runtime::{Output, Runtime};
use crate::spec::{self, Bundle, HostContext};

/// How long to wait for a sandbox to vanish after SIGKILL before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// What changed, in order, for the bus to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    New(String),
    Changed(SandboxInfo),
    Removed {
        name: String,
        result: String,
    },
    /// A process started by [`Supervisor::exec`] ended (exit code, 128+N for signal N).
    ProcessExited {
        name: String,
        id: u32,
        status: i32,
    },
    /// The proxy refused a connection, flow or name.
    ConnectionDenied(crate::proxy::Denied),
}

/// Where the supervisor keeps things on disk.
#[derive(Clone)]
pub struct Disk {
    /// Bundles, a directory per sandbox.
    pub bundles: PathBuf,
    /// Each sandbox's log of output and life-cycle lines.
    pub logs: Logbook,
    /// Copy-on-write layers of `rootfs.overlay` sandboxes.
    pub layers: crate::runtime::Layers,
}

/// One run of a container: set while runc has it.
struct Run {
    id: u64,
    exited: watch::Receiver<bool>,
    stop_requested: bool,
    /// pid 1, for signals without a `runc kill` (`None` for an adopted sandbox).
    leader: Option<Arc<crate::runtime::ProcessHandle>>,
}

struct Entry {
    info: SandboxInfo,
    restart: Restart,
    /// Serialises start, stop and restart-on-exit of this sandbox.
    op: Arc<tokio::sync::Mutex<()>>,
    run: Option<Run>,
}

struct Inner<R> {
    runtime: R,
    store: ProfileStore,
    host: HostContext,
    bundles: PathBuf,
    logs: Logbook,
    layers: crate::runtime::Layers,
    table: Mutex<BTreeMap<String, Entry>>,
    events: mpsc::UnboundedSender<Event>,
    session: Box<dyn SessionSource>,
    net: Arc<dyn Networking>,
    /// The filtered session buses of `[dbus]` sandboxes.
    buses: crate::busproxy::Buses,
    next_run: AtomicU64,
    next_process: std::sync::atomic::AtomicU32,
    /// Processes started by [`Supervisor::exec`] that run now: id → (sandbox, host pid).
    processes: Mutex<std::collections::HashMap<u32, (String, u32)>>,
}

/// Cheap to clone; all clones drive the same sandboxes.
pub struct Supervisor<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Supervisor<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl<R: Runtime> Supervisor<R> {
    pub fn new(
        runtime: R,
        store: ProfileStore,
        host: HostContext,
        disk: Disk,
        events: mpsc::UnboundedSender<Event>,
        session: Box<dyn SessionSource>,
        net: Arc<dyn Networking>,
    ) -> Self {
        let buses = crate::busproxy::Buses::new(
            host.buses.clone(),
            crate::busproxy::Upstreams::from_env(),
            disk.logs.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                runtime,
                store,
                host,
                buses,
                bundles: disk.bundles,
                logs: disk.logs,
                layers: disk.layers,
                table: Mutex::new(BTreeMap::new()),
                events,
                session,
                net,
                next_run: AtomicU64::new(1),
                next_process: std::sync::atomic::AtomicU32::new(1),
                processes: Mutex::default(),
            }),
        }
    }

    pub fn store(&self) -> &ProfileStore {
        &self.inner.store
    }

    /// Every sandbox's log.
    pub fn logs(&self) -> &Logbook {
        &self.inner.logs
    }

    /// Records of sandbox `name`'s log (see [`Logbook::read`]); blocking file reads. A
    /// profile that never ran has an empty log; a name with neither a log nor a profile is
    /// an error.
    pub fn log(
        &self,
        name: &str,
        after: u64,
        since: u64,
        max: usize,
    ) -> Result<Vec<crate::logbook::Record>, Error> {
        validate_name(name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if !self.inner.logs.exists(name) && !self.table().contains_key(name) {
            return match self.inner.store.load(name) {
                Err(e @ crate::profile::ProfileError::NotFound { .. }) => {
                    Err(Error::NoSuchProfile(e))
                }
                _ => Ok(Vec::new()),
            };
        }
        self.inner
            .logs
            .read(name, after, since, max)
            .map_err(|e| Error::RuntimeFailed {
                name: name.into(),
                message: format!("reading its log: {e}"),
            })
    }

    /// The proxy's counters for sandbox `name`.
    pub fn net_stats(&self, name: &str) -> Stats {
        self.inner.net.stats(name)
    }

    /// Connections sandbox `name` made by name, per name.
    pub fn name_hits(&self, name: &str) -> std::collections::HashMap<String, u64> {
        self.inner.net.name_hits(name)
    }

    /// The latest refusals of sandbox `name`'s proxy, oldest first.
    pub fn denials(&self, name: &str) -> Result<Vec<Denied>, Error> {
        self.get(name)?;
        Ok(self.inner.net.denials(name))
    }

    /// Applies every running sandbox's current `[network]` policy to its proxy without
    /// restarting it; a profile that no longer loads keeps the policy it had (and is
    /// named in the log). Returns the sandboxes updated.
    pub async fn reload_network(&self) -> Vec<String> {
        let running: Vec<String> = self
            .table()
            .iter()
            .filter(|(_, e)| e.info.state == State::Running)
            .map(|(n, _)| n.clone())
            .collect();
        let mut updated = Vec::new();
        for name in running {
            match self.inner.store.load(&name) {
                Ok(p) if p.network.mode == NetworkMode::Proxy => {
                    if self.inner.net.update(&name, &p.network).await {
                        updated.push(name);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    SANDBOX = name.as_str(),
                    "keeping the old network policy: {}",
                    crate::error_chain(&e)
                ),
            }
        }
        updated
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (every update
        // is a plain field store), so a poisoned lock is still usable.
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, event: Event) {
        let _ = self.inner.events.send(event);
    }

    /// Applies `f` to the entry of `name` (if it still exists and, when given, still runs
    /// `run_id`), then publishes the new info.
    fn update(&self, name: &str, run_id: Option<u64>, f: impl FnOnce(&mut Entry)) -> bool {
        let info = {
            let mut t = self.table();
            let Some(e) = t.get_mut(name) else {
                return false;
            };
            if run_id.is_some() && e.run.as_ref().map(|r| r.id) != run_id {
                return false;
            }
            f(e);
            e.info.clone()
        };
        self.emit(Event::Changed(info));
        true
    }

    pub fn list(&self) -> Vec<SandboxInfo> {
        self.table().values().map(|e| e.info.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Result<SandboxInfo, Error> {
        self.table()
            .get(name)
            .map(|e| e.info.clone())
            .ok_or_else(|| Error::NoSuchSandbox(shown(name)))
    }

    pub fn running_count(&self) -> usize {
        self.table()
            .values()
            .filter(|e| e.info.state == State::Running)
            .count()
    }

    /// Starts sandbox `name` from its profile.
    pub async fn start(&self, name: &str) -> Result<SandboxInfo, Error> {
        let profile = self.inner.store.load(name)?;
        let unsupported = profile.unsupported_features();
        if !unsupported.is_empty() {
            return Err(Error::Unsupported {
                name: name.into(),
                features: unsupported.iter().map(|s| s.to_string()).collect(),
            });
        }
        let (op, is_new) = {
            let mut t = self.table();
            if t.get(name).is_some_and(|e| e.info.state.is_active()) {
                return Err(Error::AlreadyRunning(name.into()));
            }
            let is_new = !t.contains_key(name);
            let e = t.entry(name.to_string()).or_insert_with(|| Entry {
                info: SandboxInfo::new(name),
                restart: profile.restart.clone(),
                op: Arc::default(),
                run: None,
            });
            e.info = SandboxInfo {
                profile: profile_file(&profile),
                ..SandboxInfo::new(name)
            };
            e.restart = profile.restart.clone();
            (e.op.clone(), is_new)
        };
        if is_new {
            self.emit(Event::New(name.into()));
        }
        self.update(name, None, |_| {});
        let _op = op.lock().await;
        match self.launch(&profile, 0).await {
            Ok(()) => self.get(name),
            Err(e) => {
                self.inner
                    .logs
                    .note(name, &format!("start failed: {}", crate::error_chain(&e)));
                self.update(name, None, |e| {
                    e.info.state = State::Failed;
                    e.info.leader = 0;
                });
                Err(e)
            }
        }
    }

    /// Removes runc's state, the bundle and the layer (unless kept); returns every failure.
    /// Once pid 1 is known to be gone (`exited`), runc's state and the layer are removed at
    /// once: the overlay is the intermediate namespace's mount, and nothing writes to it.
    async fn teardown(&self, name: &str, exited: bool) -> Vec<CleanupError> {
        self.inner.net.detach(name);
        self.inner.buses.detach(name).await;
        let mut errors = Vec::new();
        let (deleted, dropped) = if exited {
            tokio::join!(self.inner.runtime.delete(name), self.drop_layer(name))
        } else {
            // `runc delete --force` kills what still runs first.
            let deleted = self.inner.runtime.delete(name).await;
            (deleted, self.drop_layer(name).await)
        };
        if let Err(e) = deleted {
            errors.push(CleanupError::Runtime(e));
        }
        if let Err(e) = Bundle::at(self.inner.bundles.join(name)).remove() {
            errors.push(CleanupError::Bundle(e));
        }
        if let Err(e) = dropped {
            errors.push(CleanupError::Layer(e));
        }
        Output::forget(name);
        errors
    }

    /// Stops `name`: SIGTERM, up to `stop_timeout` for it to exit, SIGKILL, then runc
    /// delete and the bundle. A sandbox that already ended is just forgotten.
    pub async fn stop(&self, name: &str) -> Result<(), Error> {
        let op = self.table().get(name).map(|e| e.op.clone());
        let Some(op) = op else {
            // A profile that is not running is not the same mistake as a typo.
            return Err(match self.inner.store.load(name) {
                Err(crate::profile::ProfileError::NotFound { .. }) => {
                    Error::NoSuchSandbox(shown(name))
                }
                _ => Error::NotRunning(shown(name)),
            });
        };
        let _op = op.lock().await;
        let (exited, timeout, state) = {
            let mut t = self.table();
            let Some(e) = t.get_mut(name) else {
                return Err(Error::NoSuchSandbox(name.into()));
            };
            let exited = e.run.as_mut().map(|r| {
                r.stop_requested = true;
                (r.exited.clone(), r.leader.clone())
            });
            (exited, e.restart.stop_timeout, e.info.state)
        };
        let mut errors = Vec::new();
        if let Some((mut exited, leader)) = exited {
            self.update(name, None, |e| e.info.state = State::Stopping);
            tracing::info!(SANDBOX = name, "stopping");
            self.inner.logs.note(name, "stopping: SIGTERM");
            if !*exited.borrow() {
                self.signal_leader(name, leader.as_deref(), libc::SIGTERM)
                    .await;
            }
            let gone = tokio::time::timeout(timeout, exited.wait_for(|x| *x))
                .await
                .is_ok();
            if !gone {
                tracing::info!(
                    SANDBOX = name,
                    "still running after {timeout:?}; sending SIGKILL"
                );
                self.inner
                    .logs
                    .note(name, &format!("still running after {timeout:?}: SIGKILL"));
                self.signal_leader(name, leader.as_deref(), libc::SIGKILL)
                    .await;
                if tokio::time::timeout(KILL_GRACE, exited.wait_for(|x| *x))
                    .await
                    .is_err()
                {
                    errors.push(CleanupError::StillRunning(KILL_GRACE));
                }
            }
            let gone = *exited.borrow();
            errors.extend(self.teardown(name, gone).await);
        }
        let failures = errors
            .iter()
            .map(|e| crate::error_chain(e))
            .collect::<Vec<_>>()
            .join("; ");
        let result = match state {
            _ if !errors.is_empty() => format!("cleanup failed: {failures}"),
            State::Failed => "failed".to_string(),
            _ => "done".to_string(),
        };
        self.table().remove(name);
        self.inner.logs.note(
            name,
            &if errors.is_empty() {
                "removed".to_string()
            } else {
                format!("removed; cleanup failed: {failures}")
            },
        );
        self.inner.logs.close(name);
        self.forget_run(name);
        self.emit(Event::Removed {
            name: name.into(),
            result,
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Cleanup {
                name: name.into(),
                errors,
            })
        }
    }

    /// Sends `signal` to pid 1 through its handle, or through `runc kill` without one.
    async fn signal_leader(
        &self,
        name: &str,
        leader: Option<&crate::runtime::ProcessHandle>,
        signal: i32,
    ) {
        let sent = match leader {
            Some(handle) => handle.signal(signal).map_err(|e| e.to_string()),
            None => {
                (self.inner.runtime.kill(name, signal).await).map_err(|e| crate::error_chain(&e))
            }
        };
        if let Err(e) = sent {
            tracing::debug!(SANDBOX = name, signal, "signal to pid 1: {e}");
        }
    }

    pub async fn restart(&self, name: &str) -> Result<SandboxInfo, Error> {
        if self.table().contains_key(name) {
            self.stop(name).await?;
        }
        self.start(name).await
    }

    /// Sends `signal` to the sandbox's pid 1 (sandbox-init forwards TERM, INT and HUP).
    pub async fn kill(&self, name: &str, signal: i32) -> Result<(), Error> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidArgument(format!(
                "signal {signal} is not between 1 and 64"
            )));
        }
        let state = self.get(name)?.state;
        if state != State::Running {
            return Err(Error::NotRunning(name.into()));
        }
        self.inner
            .runtime
            .kill(name, signal)
            .await
            .map_err(|e| Error::RuntimeFailed {
                name: name.into(),
                message: crate::error_chain(&e),
            })
    }
}

fn profile_file(p: &Profile) -> String {
    p.file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default()
}

/// The log's line for the end of pid 1.
fn describe_exit(code: i32) -> String {
    match code {
        0 => "exited with status 0".into(),
        c if c > 128 => {
            let signal = nix::sys::signal::Signal::try_from(c - 128)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {}", c - 128));
            format!("killed by {signal} (status {c})")
        }
        c if c < 0 => "ended; its status is unknown".into(),
        c => format!("exited with status {c}"),
    }
}

/// A name as shown in an error: cut short, so hostile input cannot flood a reply.
fn shown(name: &str) -> String {
    name.chars().take(80).collect()
}

#[cfg(test)]
mod tests;
