//! The supervisor: owns every sandbox's state machine (see [`State`]), turns profiles into
//! running containers through a [`Runtime`], applies restart policies, and adopts what an
//! earlier daemon left running. It never calls libc or spawns runc itself; it reports
//! every change as an [`Event`] for the bus.

mod error;
mod exec;
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

pub use error::Error;
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
        Self {
            inner: Arc::new(Inner {
                runtime,
                store,
                host,
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
    pub fn reload_network(&self) -> Vec<String> {
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
                    if self.inner.net.update(&name, &p.network) {
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

    /// Writes the bundle, creates and starts the container, and starts watching it. On
    /// failure everything it made is removed again.
    async fn launch(&self, profile: &Profile, restarts: u32) -> Result<(), Error> {
        let name = profile.name.as_str();
        let failed = |message: String| Error::RuntimeFailed {
            name: name.into(),
            message,
        };
        let bundle_dir = self.inner.bundles.join(name);
        self.inner.logs.note(
            name,
            &match &profile.file {
                Some(f) if restarts > 0 => format!("restart {restarts}, from {}", f.display()),
                Some(f) => format!("starting from {}", f.display()),
                None => "starting from the built-in default profile".into(),
            },
        );
        let host_root = profile.rootfs.source == RootfsSource::Host;
        let bundle =
            Bundle::prepare(bundle_dir, host_root).map_err(|e| failed(crate::error_chain(&e)))?;
        let since = now_us();
        let session = self.inner.session.current().await;
        let layer = match self.mount_layer(profile).await {
            Ok(layer) => layer,
            Err(e) => {
                let _ = bundle.remove();
                return Err(e);
            }
        };
        let prepared = (|| {
            let (root, usr_layer) = match (&profile.rootfs.source, &layer) {
                (RootfsSource::Host, usr) => (bundle.host_root(), usr.as_deref()),
                (RootfsSource::Path(_), Some(merged)) => (merged.clone(), None),
                (RootfsSource::Path(p), None) => (p.clone(), None),
            };
            let resolver = if profile.network.mode == NetworkMode::Proxy && profile.network.dns {
                let (resolv, hosts) = spec::resolver_files(&profile.hostname);
                let write = |file: &str, text: String| {
                    use std::os::unix::fs::PermissionsExt;
                    let path = bundle.dir.join(file);
                    std::fs::write(&path, text)?;
                    // Readable by every user inside, whatever ids they map to.
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                };
                write("resolv.conf", resolv)
                    .and_then(|()| write("hosts", hosts))
                    .map_err(|e| failed(format!("writing the sandbox's resolver files: {e}")))?;
                Some(bundle.dir.as_path())
            } else {
                None
            };
            let spec_error = |source| Error::Spec {
                name: name.into(),
                source: Box::new(source),
            };
            spec::prepare_home(profile, &self.inner.host).map_err(spec_error)?;
            let spec = spec::build(
                profile,
                &self.inner.host,
                &root,
                &session,
                resolver,
                usr_layer,
            )
            .map_err(spec_error)?;
            if layer.is_some() {
                let points: Vec<String> = spec
                    .mounts()
                    .iter()
                    .flatten()
                    .map(|m| m.destination().display().to_string())
                    .collect();
                self.inner
                    .layers
                    .record_mount_points(name, &points)
                    .map_err(|source| Error::Layer {
                        name: name.into(),
                        source,
                    })?;
            }
            bundle
                .write_spec(&spec)
                .map_err(|e| failed(crate::error_chain(&e)))?;
            bundle
                .write_record(&RunRecord::new(profile, restarts, since))
                .map_err(|e| failed(crate::error_chain(&e)))
        })();
        let created = match prepared {
            Ok(()) => self.create_and_start(profile, &bundle).await,
            Err(e) => Err(e),
        };
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                self.inner.net.detach(name);
                let _ = self.inner.runtime.delete(name).await;
                let _ = bundle.remove();
                let _ = self.drop_layer(name).await;
                return Err(e);
            }
        };
        let run_id = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        // Opened before the monitor exists, so before anything reaps pid 1: it is ours.
        let leader = crate::runtime::ProcessHandle::open(pid).ok().map(Arc::new);
        let tracked = self.update(name, None, |e| {
            e.info.state = State::Running;
            e.info.leader = pid;
            e.info.since = since;
            e.info.restarts = restarts;
            e.info.exit_status = -1;
            e.info.security = profile.security.describe();
            e.run = Some(Run {
                id: run_id,
                exited: rx,
                stop_requested: false,
                leader,
            });
        });
        if !tracked {
            // A stop ran (and forgot the sandbox) while it was starting: undo, so no
            // container lives on that nobody supervises. `runc delete --force` kills it.
            for err in self.teardown(name, false).await {
                tracing::warn!(SANDBOX = name, "undoing a start: {err}");
            }
            return Err(Error::RuntimeFailed {
                name: name.into(),
                message: "stopped while it was starting".into(),
            });
        }
        tracing::info!(SANDBOX = name, pid, restarts, "sandbox running");
        self.inner
            .logs
            .note(name, &format!("running, pid 1 is host pid {pid}"));
        tokio::spawn(self.clone().monitor(name.to_string(), run_id, pid, tx));
        Ok(())
    }

    /// `runc create`, the network (between create and start, so the sandbox's first
    /// instruction already runs with it), `runc start`.
    async fn create_and_start(&self, profile: &Profile, bundle: &Bundle) -> Result<u32, Error> {
        let name = profile.name.as_str();
        let failed = |source: crate::runtime::RuntimeError| Error::Runtime {
            name: name.into(),
            source,
        };
        let output =
            Output::for_sandbox(name, &self.inner.logs).map_err(|e| Error::RuntimeFailed {
                name: name.into(),
                message: crate::error_chain(&e),
            })?;
        let pid = self
            .inner
            .runtime
            .create(
                name,
                &bundle.dir,
                output,
                crate::cgroups::in_scope(&self.inner.host.limits, &profile.limits),
            )
            .await
            .map_err(failed)?;
        // The lock and the network are independent: set both up at once.
        let lock = async {
            match profile.security.nested {
                Nested::Off => self.inner.runtime.lock_nested(name, pid).await,
                Nested::Namespaces | Nested::Full => Ok(()),
            }
        };
        let network = async {
            match profile.network.mode {
                NetworkMode::Proxy => self.inner.net.attach(name, pid, &profile.network).await,
                NetworkMode::None => Ok(()),
            }
        };
        let (locked, attached) = tokio::join!(lock, network);
        // Never start a sandbox with the lock missing.
        locked.map_err(failed)?;
        attached.map_err(|source| Error::Network {
            name: name.into(),
            source,
        })?;
        self.inner.runtime.start(name).await.map_err(failed)?;
        Ok(pid)
    }

    /// Waits for the sandbox's pid 1 to exit, then cleans up and applies the restart
    /// policy, unless a stop is in charge of this run.
    fn monitor(
        self,
        name: String,
        run_id: u64,
        pid: u32,
        exited: watch::Sender<bool>,
    ) -> BoxFuture {
        Box::pin(async move {
            let status = self.inner.runtime.wait(pid).await;
            let code = exit_code(status);
            let op = {
                let mut t = self.table();
                let Some(e) = t
                    .get_mut(&name)
                    .filter(|e| e.run.as_ref().is_some_and(|r| r.id == run_id))
                else {
                    return;
                };
                e.info.exit_status = code;
                e.op.clone()
            };
            exited.send_replace(true);
            Output::drained(&name, Duration::from_secs(2)).await;
            self.inner.logs.note(&name, &describe_exit(code));
            tracing::info!(
                SANDBOX = name.as_str(),
                pid,
                status = code,
                "sandbox pid 1 exited"
            );
            let _op = op.lock().await;
            let (restart, restarts) = {
                let t = self.table();
                let Some(e) = t.get(&name) else { return };
                match &e.run {
                    Some(r) if r.id == run_id && !r.stop_requested => {}
                    _ => return,
                }
                (e.restart.clone(), e.info.restarts)
            };
            for err in self.teardown(&name, true).await {
                tracing::warn!(SANDBOX = name.as_str(), "cleanup after exit: {err}");
            }
            let again = match restart.policy {
                RestartPolicy::No => false,
                RestartPolicy::OnFailure => code != 0,
                RestartPolicy::Always => true,
            } && restarts < restart.max;
            if again {
                self.update(&name, Some(run_id), |e| {
                    e.info.state = State::Starting;
                    e.info.leader = 0;
                    e.run = None;
                });
                let result = match self.inner.store.load(&name) {
                    Ok(profile) => self.launch(&profile, restarts + 1).await,
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = result {
                    let why = crate::error_chain(&e);
                    tracing::warn!(SANDBOX = name.as_str(), "restart failed: {why}");
                    self.inner
                        .logs
                        .note(&name, &format!("restart failed: {why}"));
                    self.update(&name, None, |e| {
                        e.info.state = State::Failed;
                        e.info.restarts = restarts + 1;
                    });
                }
            } else {
                self.update(&name, Some(run_id), |e| {
                    e.info.state = if code == 0 {
                        State::Stopped
                    } else {
                        State::Failed
                    };
                    e.info.leader = 0;
                    e.run = None;
                });
            }
        })
    }

    /// The copy-on-write view of a `rootfs.overlay` profile's root (or host `/usr`),
    /// mounted; `None` without the key.
    async fn mount_layer(&self, profile: &Profile) -> Result<Option<PathBuf>, Error> {
        if !profile.rootfs.overlay {
            return Ok(None);
        }
        let (lower, prefix) = match &profile.rootfs.source {
            RootfsSource::Path(p) => (p.clone(), "/"),
            RootfsSource::Host => (PathBuf::from("/usr"), "/usr"),
        };
        self.inner
            .layers
            .mount(&profile.name, &lower, prefix, profile.rootfs.keep_changes)
            .await
            .map(Some)
            .map_err(|source| Error::Layer {
                name: profile.name.clone(),
                source,
            })
    }

    /// Unmounts sandbox `name`'s layer, and removes it unless it is kept.
    async fn drop_layer(&self, name: &str) -> Result<(), crate::runtime::LayerError> {
        let layers = &self.inner.layers;
        if !layers.exists(name) {
            Ok(())
        } else if layers.is_kept(name) {
            layers.unmount(name).await
        } else {
            layers.remove(name).await
        }
    }

    /// What sandbox `name` changed in its root: its copy-on-write layer, running or kept.
    pub async fn diff(&self, name: &str) -> Result<Vec<crate::runtime::Change>, Error> {
        validate_name(name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if !self.inner.layers.exists(name) {
            return Err(match self.get(name) {
                Ok(_) => Error::InvalidArgument(format!(
                    "sandbox {name:?} has no copy-on-write layer: its changes are made in place (rootfs.overlay = true gives one)"
                )),
                Err(e) => e,
            });
        }
        self.inner
            .layers
            .diff(name)
            .await
            .map_err(|source| Error::Layer {
                name: name.into(),
                source,
            })
    }

    /// Removes runc's state, the bundle and the layer (unless kept); returns every failure.
    /// Once pid 1 is known to be gone (`exited`), runc's state and the layer are removed at
    /// once: the overlay is the intermediate namespace's mount, and nothing writes to it.
    async fn teardown(&self, name: &str, exited: bool) -> Vec<String> {
        self.inner.net.detach(name);
        let mut errors = Vec::new();
        let (deleted, dropped) = if exited {
            tokio::join!(self.inner.runtime.delete(name), self.drop_layer(name))
        } else {
            // `runc delete --force` kills what still runs first.
            let deleted = self.inner.runtime.delete(name).await;
            (deleted, self.drop_layer(name).await)
        };
        if let Err(e) = deleted {
            errors.push(crate::error_chain(&e));
        }
        if let Err(e) = Bundle::at(self.inner.bundles.join(name)).remove() {
            errors.push(crate::error_chain(&e));
        }
        if let Err(e) = dropped {
            errors.push(crate::error_chain(&e));
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
                    errors.push(format!("still running {KILL_GRACE:?} after SIGKILL"));
                }
            }
            let gone = *exited.borrow();
            errors.extend(self.teardown(name, gone).await);
        }
        let result = if errors.is_empty() {
            match state {
                State::Failed => "failed".to_string(),
                _ => "done".to_string(),
            }
        } else {
            format!("cleanup failed: {}", errors.join("; "))
        };
        self.table().remove(name);
        self.inner.logs.note(
            name,
            &if errors.is_empty() {
                "removed".to_string()
            } else {
                format!("removed; cleanup failed: {}", errors.join("; "))
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
            Err(Error::RuntimeFailed {
                name: name.into(),
                message: errors.join("; "),
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

    /// Adopts the containers an earlier daemon left running and removes the remains of
    /// the dead ones (runc state, bundles), so nothing leaks across a crash.
    pub async fn reconcile(&self) {
        let containers = match self.inner.runtime.list().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot list earlier sandboxes: {}", crate::error_chain(&e));
                Vec::new()
            }
        };
        for c in containers {
            let bundle = Bundle::at(self.inner.bundles.join(&c.id));
            let record = validate_name(&c.id)
                .ok()
                .and_then(|_| bundle.read_record::<RunRecord>().ok());
            match record {
                Some(record) if c.status == "running" && c.pid != 0 => {
                    self.adopt(&c.id, c.pid, record);
                }
                _ => {
                    tracing::info!(
                        SANDBOX = c.id.as_str(),
                        status = c.status.as_str(),
                        "removing remains of an earlier sandbox"
                    );
                    if let Err(e) = self.inner.runtime.delete(&c.id).await {
                        tracing::warn!(SANDBOX = c.id.as_str(), "{}", crate::error_chain(&e));
                    }
                    if validate_name(&c.id).is_ok() {
                        let _ = bundle.remove();
                    }
                }
            }
        }
        // Bundles runc does not know about are leftovers of a crash between the two.
        if let Ok(dirs) = std::fs::read_dir(&self.inner.bundles) {
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                if !self.table().contains_key(&name) {
                    let _ = Bundle::at(d.path()).remove();
                }
            }
        }
        // Run profiles of runs that ended while no daemon ran.
        if let Ok(files) = std::fs::read_dir(run::runs_dir(&self.inner.bundles)) {
            for f in files.flatten() {
                let path = f.path();
                let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !self.table().contains_key(name) {
                    self.forget_run(name);
                }
            }
        }
        // Layers of sandboxes that ended while no daemon ran (kept ones are unmounted).
        for name in self.inner.layers.names() {
            if !self.table().contains_key(&name) {
                if let Err(e) = self.drop_layer(&name).await {
                    tracing::warn!(SANDBOX = name.as_str(), "{}", crate::error_chain(&e));
                }
            }
        }
    }

    fn adopt(&self, name: &str, pid: u32, record: RunRecord) {
        let streams = Output::reattach(name, &self.inner.logs);
        tracing::info!(SANDBOX = name, pid, streams, "adopting running sandbox");
        self.inner.logs.note(
            name,
            &format!("adopted by a new daemon (pid 1 is host pid {pid}, {streams} output streams resumed)"),
        );
        let run_id = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        let info = SandboxInfo {
            name: name.into(),
            state: State::Running,
            leader: pid,
            since: record.since,
            profile: record.profile.clone(),
            restarts: record.restarts,
            exit_status: -1,
            security: record.security.clone(),
        };
        self.table().insert(
            name.into(),
            Entry {
                info: info.clone(),
                restart: Restart {
                    policy: record.policy,
                    max: record.max,
                    stop_timeout: Duration::from_millis(record.stop_timeout_ms.max(1)),
                },
                op: Arc::default(),
                run: Some(Run {
                    id: run_id,
                    exited: rx,
                    stop_requested: false,
                    leader: None,
                }),
            },
        );
        self.emit(Event::New(name.into()));
        self.emit(Event::Changed(info));
        // The earlier daemon's helper ended with it: give the sandbox a new one, under
        // the profile's current policy. Until then (or if that fails) it has no network.
        if let Ok(profile) = self.inner.store.load(name) {
            if profile.network.mode == NetworkMode::Proxy {
                let sup = self.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    if let Err(e) = sup.inner.net.attach(&name, pid, &profile.network).await {
                        tracing::warn!(
                            SANDBOX = name.as_str(),
                            "no network after adoption: {}",
                            crate::error_chain(&e)
                        );
                    }
                });
            }
        }
        tokio::spawn(self.clone().monitor(name.into(), run_id, pid, tx));
    }

    /// Starts every valid profile with `autostart = true` that is not running yet.
    pub async fn autostart(&self) {
        let names: Vec<String> = self
            .inner
            .store
            .list()
            .into_iter()
            .filter(|p| p.error.is_empty())
            .filter_map(|p| self.inner.store.load(&p.name).ok())
            .filter(|p| p.autostart)
            .map(|p| p.name)
            .collect();
        let starts = names
            .iter()
            .filter(|n| !self.table().contains_key(n.as_str()))
            .map(|n| async move {
                if let Err(e) = self.start(n).await {
                    tracing::warn!(
                        SANDBOX = n.as_str(),
                        "autostart failed: {}",
                        crate::error_chain(&e)
                    );
                }
            });
        futures_util::future::join_all(starts).await;
    }

    /// Stops every sandbox (daemon shutdown).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self
            .table()
            .iter()
            .filter(|(_, e)| e.info.state.is_active())
            .map(|(n, _)| n.clone())
            .collect();
        let stops = names.iter().map(|n| async move {
            if let Err(e) = self.stop(n).await {
                tracing::warn!(
                    SANDBOX = n.as_str(),
                    "stop failed: {}",
                    crate::error_chain(&e)
                );
            }
        });
        futures_util::future::join_all(stops).await;
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
