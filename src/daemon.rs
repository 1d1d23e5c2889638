//! sandboxd's start-up and shutdown: check the environment (dying with a message that
//! names the fix), adopt what an earlier daemon left, own the bus name, tell systemd, and
//! on SIGTERM stop every sandbox before exiting.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::sync::mpsc;

use crate::bus::{self, BUS_NAME};
use crate::cgroups::Enforcement;
use crate::config::{ConfigError, DaemonConfig};
use crate::environ::ManagerEnvironment;
use crate::paths::{NoRuntimeDir, RuntimePaths};
use crate::profile::ProfileStore;
use crate::proxy::Proxy;
use crate::runtime::{IntermediateUserns, Runc};
use crate::spec::{HostContext, SUBORDINATE_SPAN};
use crate::supervisor::Supervisor;

#[derive(Debug, Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    RuntimeDir(#[from] NoRuntimeDir),
    #[error("runc not found on PATH: install it (Debian: apt-get install runc) or set `runc` in the daemon config")]
    NoRunc,
    #[error("sandbox-init not found at {0}: install it next to sandboxd or set `init` in the daemon config")]
    NoInit(PathBuf),
    #[error("{} is dynamically linked; sandbox-init must be static to run in any root file system (build it with `make build`)", .0.display())]
    InitNotStatic(PathBuf),
    #[error("cannot create {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the D-Bus session bus (is DBUS_SESSION_BUS_ADDRESS set?)")]
    Bus(#[source] zbus::Error),
    #[error("cannot own the bus name {BUS_NAME}")]
    BusName(#[source] zbus::Error),
    #[error("the bus name {BUS_NAME} is owned by another process (pid {}) on this bus; see its log with `journalctl --user -u sandboxd`; to run sandboxd in a terminal, stop the service first: `systemctl --user stop sandboxd`", .0.map_or("unknown".into(), |p| p.to_string()))]
    NameOwned(Option<u32>),
    #[error("lost the bus name {BUS_NAME}; exiting without stopping any sandbox (the next daemon adopts them)")]
    NameLost,
    #[error("the intermediate user namespace (holder pid {0}) went away; exiting so that systemd restarts the daemon, which adopts the running sandboxes")]
    UsernsLost(u32),
}

/// Why sandboxd cannot run here at all: it is not in a user session.
#[derive(Debug, Error)]
pub enum NoSession {
    #[error("not in a user session: {0}")]
    RuntimeDir(NoRuntimeDir),
    #[error("not in a user session: no session bus (DBUS_SESSION_BUS_ADDRESS is unset and {} does not exist); sandboxd is a user service: start it with `systemctl --user start sandboxd` in a login session", .0.display())]
    NoBus(PathBuf),
}

/// Checks, touching nothing, that this is a user session sandboxd can serve: a runtime
/// directory and a session bus. Returns the runtime paths.
pub fn check_session() -> Result<RuntimePaths, NoSession> {
    let paths = RuntimePaths::from_env().map_err(NoSession::RuntimeDir)?;
    let runtime = paths
        .base
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if !runtime.is_dir() {
        return Err(NoSession::RuntimeDir(NoRuntimeDir));
    }
    let bus = runtime.join("bus");
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() && !bus.exists() {
        return Err(NoSession::NoBus(bus));
    }
    Ok(paths)
}

/// Owns the bus name without taking it from anyone and without letting anyone take it:
/// a name already owned means another daemon serves this bus.
async fn own_name(conn: &zbus::Connection) -> Result<(), StartupError> {
    use zbus::fdo::{RequestNameFlags, RequestNameReply};
    let reply = conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DoNotQueue.into())
        .await;
    match reply {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => Ok(()),
        Ok(RequestNameReply::Exists | RequestNameReply::InQueue) | Err(zbus::Error::NameTaken) => {
            Err(StartupError::NameOwned(name_owner_pid(conn).await))
        }
        Err(e) => Err(StartupError::BusName(e)),
    }
}

async fn name_owner_pid(conn: &zbus::Connection) -> Option<u32> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.ok()?;
    let name = zbus::names::BusName::try_from(BUS_NAME).ok()?;
    dbus.get_connection_unix_process_id(name).await.ok()
}

/// Everything checked and resolved before the async core starts.
pub struct Settings {
    pub paths: RuntimePaths,
    pub runc: PathBuf,
    pub host: HostContext,
    pub store: ProfileStore,
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// The cap of each sandbox's log on disk.
    pub log_size: u64,
    /// Where the configuration came from, and what it said, for a reload.
    pub config_path: PathBuf,
    pub config: DaemonConfig,
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain([
            PathBuf::from("/usr/sbin").join(program),
            PathBuf::from("/usr/bin").join(program),
        ])
        .find(|p| p.is_file())
}

/// True when the ELF file has no PT_INTERP program header (no dynamic loader needed).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap_or_default());
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        off + 4 > data.len() || u32_at(off) != 3 // PT_INTERP
    })
}

impl Settings {
    /// Reads the config and checks the environment; every failure names its fix.
    pub fn load(config_path: &Path) -> Result<Self, StartupError> {
        let config = DaemonConfig::load(config_path)?;
        let loaded = config.clone();
        let dns_servers = config.dns_server_addrs();
        let paths = RuntimePaths::from_env()?;
        let runc = match config.runc {
            Some(p) => p,
            None => find_on_path("runc").ok_or(StartupError::NoRunc)?,
        };
        let init = match config.init {
            Some(p) => p,
            None => {
                let beside = std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(|d| d.join("sandbox-init")));
                beside
                    .filter(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from("/usr/lib/sandboxd/sandbox-init"))
            }
        };
        if !init.is_file() {
            return Err(StartupError::NoInit(init));
        }
        if !is_static_elf(&init) {
            return Err(StartupError::InitNotStatic(init));
        }
        for dir in [paths.base.clone(), paths.runc_root(), paths.bundles()] {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| StartupError::StateDir {
                    path: dir.clone(),
                    source,
                })?;
        }
        let host = HostContext::current(init);
        raise_nofile();
        match &host.limits {
            Enforcement::SystemdScopes => tracing::info!("{}", host.limits.describe()),
            Enforcement::Rlimits { .. } => tracing::warn!("{}", host.limits.describe()),
        }
        if host.subuid.is_none() || host.subgid.is_none() {
            tracing::warn!(
                "no subordinate ids for uid {} in /etc/subuid and /etc/subgid: sandboxes get a single id \
                 (root = you) and programs that switch users inside (package managers) will fail; \
                 add a range with `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`",
                host.uid
            );
        }
        let mut store = ProfileStore::from_env();
        for (i, d) in config.profile_dirs.into_iter().enumerate() {
            store.dirs.insert(1 + i, d);
        }
        // The profiles of throwaway runs come first: their names are never a profile's.
        store
            .dirs
            .insert(0, crate::supervisor::runs_dir(&paths.bundles()));
        Ok(Self {
            paths,
            runc,
            host,
            store,
            dns_servers,
            log_size: config.log_size.unwrap_or(crate::logbook::DEFAULT_CAP),
            config_path: config_path.to_path_buf(),
            config: loaded,
        })
    }
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit: every proxied connection
/// holds two sockets (and two pipes while data moves). Sandboxes keep the session's limits.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Makes this process the reaper of orphaned descendants, so container inits (orphaned
/// when `runc create` exits) become our children and their exit status is ours to read.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

pub(crate) fn notify(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(false, state);
}

/// Runs the daemon until SIGTERM or SIGINT.
/// The daemon's intermediate user namespace (0 → you, 1.. → your subordinate ids), where
/// runc runs. It outlives a crash (recorded for the next daemon, which must enter the
/// sandboxes created in it) and ends with an orderly exit.
fn intermediate(
    paths: &RuntimePaths,
    host: &mut HostContext,
    runc: &mut Runc,
) -> Option<IntermediateUserns> {
    let (Some(u), Some(g)) = (host.subuid, host.subgid) else {
        return None;
    };
    let record = paths.base.join("userns.pid");
    match IntermediateUserns::open_or_create(&record, host.uid, host.gid, u, g, SUBORDINATE_SPAN) {
        Ok(ns) => {
            runc.wrapper = ns.wrapper();
            runc.userns = ns.inode();
            host.intermediate = true;
            Some(ns)
        }
        Err(e) => {
            tracing::warn!(
                "no intermediate user namespace, so no keep-id: {}",
                crate::error_chain(&e)
            );
            None
        }
    }
}

/// Why the daemon stops serving.
enum End {
    /// SIGTERM or SIGINT: stop every sandbox, then exit.
    Asked,
    Failed(StartupError),
}

/// Waits for SIGTERM/SIGINT, the loss of the bus name (or bus), or the end of the
/// intermediate namespace's holder.
async fn serve_until_end(
    mut name_lost: zbus::fdo::NameLostStream,
    holder: Option<u32>,
) -> Result<End, StartupError> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |kind| {
        signal(kind).map_err(|source| StartupError::StateDir {
            path: "signal".into(),
            source,
        })
    };
    let (mut term, mut int) = (sig(SignalKind::terminate())?, sig(SignalKind::interrupt())?);
    // runc cannot run without the intermediate namespace: if its holder dies, exit and let
    // systemd restart us (sandboxes keep running and are adopted); never stop them for it.
    let holder_gone = async move {
        match holder {
            Some(pid) => {
                let _ = crate::runtime::wait_exit(pid).await;
                pid
            }
            None => std::future::pending().await,
        }
    };
    let lost = async {
        use futures_util::StreamExt;
        while let Some(signal) = name_lost.next().await {
            if signal.args().is_ok_and(|a| a.name() == BUS_NAME) {
                return;
            }
        }
        // The bus connection itself ended.
    };
    Ok(tokio::select! {
        _ = term.recv() => End::Asked,
        _ = int.recv() => End::Asked,
        () = lost => {
            // Serving without the name would answer nobody; stopping sandboxes would harm
            // whoever has it now. Leave them running, as after a crash.
            notify(&[sd_notify::NotifyState::Status("lost the bus name; exiting")]);
            End::Failed(StartupError::NameLost)
        }
        pid = holder_gone => {
            notify(&[sd_notify::NotifyState::Status("intermediate user namespace lost; restarting")]);
            End::Failed(StartupError::UsernsLost(pid))
        }
    })
}

/// Leaves at once when another daemon owns the name on this bus (with another runtime
/// directory), before adopting anything; returns the stream that reports a later loss.
async fn check_name_free(
    conn: &zbus::Connection,
) -> Result<zbus::fdo::NameLostStream, StartupError> {
    let dbus = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(StartupError::Bus)?;
    let well_known =
        zbus::names::BusName::try_from(BUS_NAME).map_err(|e| StartupError::Bus(e.into()))?;
    if dbus
        .name_has_owner(well_known)
        .await
        .map_err(|e| StartupError::Bus(e.into()))?
    {
        return Err(StartupError::NameOwned(name_owner_pid(conn).await));
    }
    dbus.receive_name_lost().await.map_err(StartupError::Bus)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), StartupError> {
    let mut runc = Runc::new(settings.runc, settings.paths.runc_root());
    let mut host = settings.host;
    let userns = intermediate(&settings.paths, &mut host, &mut runc);
    let (tx, rx) = mpsc::unbounded_channel();
    let denied = tx.clone();
    let announce: crate::proxy::Announce = std::sync::Arc::new(move |d| {
        let _ = denied.send(crate::supervisor::Event::ConnectionDenied(d));
    });
    let conn = zbus::connection::Builder::session()
        .map_err(StartupError::Bus)?
        .build()
        .await
        .map_err(StartupError::Bus)?;
    let session = Box::new(ManagerEnvironment { conn: conn.clone() });
    let upstream = std::sync::Arc::new(crate::proxy::dns::Upstream::from_config(
        &settings.dns_servers,
    ));
    let layers = crate::runtime::Layers {
        dir: crate::paths::data_home().join("sandboxd/layers"),
        wrapper: (!runc.wrapper.is_empty()).then(|| runc.wrapper.clone()),
        // The daemon's own binary by path: /proc/self/exe would be nsenter's, and the
        // daemon's /proc entry is out of reach from inside the namespace.
        helper: std::env::current_exe().unwrap_or_else(|_| runc.helper.clone()),
    };
    let sup = Supervisor::new(
        runc,
        settings.store,
        host,
        crate::supervisor::Disk {
            bundles: settings.paths.bundles(),
            logs: crate::logbook::Logbook::new(
                crate::logbook::Logbook::default_dir(),
                settings.log_size,
            ),
            layers,
        },
        tx,
        session,
        // A fresh exec of this very binary, whatever its path is now.
        std::sync::Arc::new(Proxy::new(
            "/proc/self/exe".into(),
            Some(announce),
            upstream.clone(),
        )),
    );
    tokio::spawn(crate::runtime::reap_orphans());
    bus::serve(&conn, sup.clone())
        .await
        .map_err(StartupError::Bus)?;
    let status_sup = sup.clone();
    tokio::spawn(bus::pump_events(conn.clone(), sup.clone(), rx, move || {
        let status = format!("{} sandbox(es) running", status_sup.running_count());
        notify(&[sd_notify::NotifyState::Status(&status)]);
    }));

    let name_lost = check_name_free(&conn).await?;
    // Adopt before owning the name, so the first caller already sees adopted sandboxes.
    // The request settles a race between two starts on one bus.
    sup.reconcile().await;
    crate::bus::watch_adopted_runs(&sup, &conn);
    own_name(&conn).await?;
    tracing::info!("ready on the session bus as {BUS_NAME}");
    let status = format!("{} sandbox(es) running", sup.running_count());
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let autostart = sup.clone();
    tokio::spawn(async move { autostart.autostart().await });
    tokio::spawn(
        crate::reload::Reloader {
            path: settings.config_path,
            config: settings.config,
            upstream,
            sup: sup.clone(),
        }
        .run(),
    );

    if let End::Failed(e) = serve_until_end(name_lost, userns.as_ref().map(|ns| ns.pid())).await? {
        return Err(e);
    }
    tracing::info!("stopping every sandbox");
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping sandboxes"),
    ]);
    sup.stop_all().await;
    if let Some(ns) = userns {
        ns.shutdown();
    }
    let _ = conn.release_name(BUS_NAME).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_dynamic_elf() {
        assert!(!is_static_elf(Path::new("/bin/sh")));
        assert!(!is_static_elf(Path::new("/etc/passwd")));
    }
}
