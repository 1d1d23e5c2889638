//! A filtered session bus for each sandbox with a `[dbus]` table: an `xdg-dbus-proxy`
//! outside the sandbox, on the real bus, whose filtered sockets live in
//! `$XDG_RUNTIME_DIR/sandboxd/dbus/NAME/` and are seen inside through that directory
//! ([`INSIDE_DIR`] in the sandbox's runtime folder). The directory, not the socket, is
//! bound, so that a proxy started again (after it died, or by the next daemon adopting the
//! sandbox) is reachable without restarting the sandbox.

pub mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::logbook::Logbook;
use crate::profile::Dbus;
pub use process::SpawnError;

/// The session bus socket in the proxy's directory.
pub const SESSION_SOCKET: &str = "bus";
/// The system bus socket, when `system_talk` names anything.
pub const SYSTEM_SOCKET: &str = "system_bus";
/// Where the proxy's directory is seen, in the sandbox's `$XDG_RUNTIME_DIR`.
pub const INSIDE_DIR: &str = ".dbus-proxy";

/// How long a proxy may take to listen.
const READY_WITHIN: Duration = Duration::from_secs(5);
/// A proxy that ran this long before it ended counts as having worked.
const STEADY: Duration = Duration::from_secs(10);
/// Quick ends in a row after which it is not started again.
const QUICK_ENDS: u32 = 5;
/// The pause before a proxy that ended is started again.
const PAUSE: Duration = Duration::from_millis(500);

/// The buses the proxies connect to: the daemon's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    pub session: String,
    pub system: String,
}

impl Upstreams {
    /// `DBUS_SESSION_BUS_ADDRESS` (else `$XDG_RUNTIME_DIR/bus`) and
    /// `DBUS_SYSTEM_BUS_ADDRESS` (else the well-known socket), as libdbus finds them.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let session = var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_else(|| {
            format!(
                "unix:path={}/bus",
                var("XDG_RUNTIME_DIR").unwrap_or_default()
            )
        });
        let system = var("DBUS_SYSTEM_BUS_ADDRESS")
            .unwrap_or_else(|| "unix:path=/run/dbus/system_bus_socket".into());
        Self { session, system }
    }
}

impl Upstreams {
    /// The folders an identified proxy (in a root of its own) needs: its sockets' `dir`,
    /// and those of the buses it connects to by path.
    fn folders(&self, dbus: &Dbus, dir: &Path) -> Vec<PathBuf> {
        let mut buses = vec![&self.session];
        if !dbus.system_talk.is_empty() {
            buses.push(&self.system);
        }
        let mut folders = vec![dir.to_path_buf()];
        for address in buses {
            let path = address
                .split(';')
                .filter_map(|a| a.strip_prefix("unix:"))
                .flat_map(|a| a.split(','))
                .find_map(|kv| kv.strip_prefix("path="));
            if let Some(parent) = path.and_then(|p| Path::new(p).parent()) {
                if !folders.iter().any(|f| parent.starts_with(f)) {
                    folders.push(parent.to_path_buf());
                }
            }
        }
        folders
    }
}

/// The portal frontend's names, the calls it takes and the signals it sends (what
/// Flatpak grants every app): the portals check access themselves.
const PORTAL_RULES: [&str; 3] = [
    "--talk=org.freedesktop.portal.*",
    "--call=org.freedesktop.portal.*=*",
    "--broadcast=org.freedesktop.portal.*=@/org/freedesktop/portal/*",
];

/// The proxy's command line (after `--fd`) for `dbus`, with its sockets in `dir`.
pub fn args(dbus: &Dbus, up: &Upstreams, dir: &Path) -> Vec<String> {
    let mut a = vec![
        up.session.clone(),
        dir.join(SESSION_SOCKET).display().to_string(),
        "--filter".into(),
    ];
    let lists = [
        ("see", &dbus.see),
        ("talk", &dbus.talk),
        ("own", &dbus.own),
        ("call", &dbus.call),
        ("broadcast", &dbus.broadcast),
    ];
    for (option, list) in lists {
        a.extend(list.iter().map(|v| format!("--{option}={v}")));
    }
    if dbus.portals {
        a.extend(PORTAL_RULES.iter().map(|r| r.to_string()));
    }
    if !dbus.system_talk.is_empty() {
        a.extend([
            up.system.clone(),
            dir.join(SYSTEM_SOCKET).display().to_string(),
            "--filter".into(),
        ]);
        a.extend(dbus.system_talk.iter().map(|v| format!("--talk={v}")));
    }
    a
}

/// A sandbox's proxy being supervised.
struct Supervised {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Every sandbox's proxy. Cheap to clone.
#[derive(Clone)]
pub struct Buses {
    /// `$XDG_RUNTIME_DIR/sandboxd/dbus`
    dir: PathBuf,
    upstreams: Upstreams,
    logs: Logbook,
    running: Arc<Mutex<HashMap<String, Supervised>>>,
}

impl Buses {
    pub fn new(dir: PathBuf, upstreams: Upstreams, logs: Logbook) -> Self {
        Self {
            dir,
            upstreams,
            logs,
            running: Arc::default(),
        }
    }

    /// The host directory of sandbox `name`'s sockets.
    pub fn dir_of(base: &Path, name: &str) -> PathBuf {
        base.join(name)
    }

    /// Starts `name`'s proxy and returns once its sockets listen; from then on it is
    /// started again whenever it ends, until [`Buses::detach`] (or five quick ends in a
    /// row, after which the sandbox has no bus and its log says so).
    ///
    /// The directory is kept if it exists: a running sandbox (adopted from an earlier
    /// daemon) sees its sockets through it.
    pub async fn attach(&self, name: &str, dbus: &Dbus) -> Result<(), SpawnError> {
        self.end(name).await;
        let dir = Self::dir_of(&self.dir, name);
        make_dir(&self.dir, 0o700)
            .and_then(|()| make_dir(&dir, 0o755))
            .map_err(SpawnError::Io)?;
        clear_sockets(&dir);
        let args = args(dbus, &self.upstreams, &dir);
        let identified = dbus.portals.then(|| process::Identified {
            app_id: dbus.app_id_of(name),
            folders: self.upstreams.folders(dbus, &dir),
        });
        let first = match process::spawn(&args, identified.as_ref(), READY_WITHIN).await {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        self.logs.note(
            name,
            &format!(
                "D-Bus proxy running (pid {})",
                first.pid().unwrap_or_default()
            ),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.clone().supervise(
            name.to_string(),
            dir,
            (args, identified),
            first,
            stop.clone(),
        ));
        self.lock()
            .insert(name.to_string(), Supervised { stop, task });
        Ok(())
    }

    /// Ends `name`'s proxy, waits for it, and removes its sockets.
    pub async fn detach(&self, name: &str) {
        self.end(name).await;
        let dir = Self::dir_of(&self.dir, name);
        if dir.exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Removes the socket directories of sandboxes not in `running` (they ended while no
    /// daemon ran).
    pub fn remove_others(&self, running: &dyn Fn(&str) -> bool) {
        let Ok(dirs) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for d in dirs.flatten() {
            if !running(&d.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }

    /// Ends `name`'s proxy and its supervision, and waits for both.
    async fn end(&self, name: &str) {
        let supervised = self.lock().remove(name);
        if let Some(s) = supervised {
            s.stop.cancel();
            let _ = tokio::time::timeout(READY_WITHIN * 2, s.task).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Supervised>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn say(&self, name: &str, text: &str) {
        tracing::warn!(SANDBOX = name, "{text}");
        self.logs.note(name, text);
    }

    async fn supervise(
        self,
        name: String,
        dir: PathBuf,
        (args, identified): (Vec<String>, Option<process::Identified>),
        mut running: process::Running,
        stop: CancellationToken,
    ) {
        let mut quick = 0;
        loop {
            let started = Instant::now();
            let ended = tokio::select! {
                _ = stop.cancelled() => {
                    running.stop().await;
                    return;
                }
                ended = running.child.wait() => ended,
            };
            quick = if started.elapsed() >= STEADY {
                1
            } else {
                quick + 1
            };
            let how = ended.map_or_else(|e| e.to_string(), |s| s.to_string());
            if quick > QUICK_ENDS {
                self.say(&name, &format!("the D-Bus proxy ended ({how}), {QUICK_ENDS} times in a row: not starting it again; the sandbox has no session bus until it restarts"));
                return;
            }
            self.say(
                &name,
                &format!("the D-Bus proxy ended ({how}); starting it again"),
            );
            running = loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(PAUSE) => {}
                }
                clear_sockets(&dir);
                match process::spawn(&args, identified.as_ref(), READY_WITHIN).await {
                    Ok(r) => break r,
                    Err(e) if quick >= QUICK_ENDS => {
                        self.say(&name, &format!("the D-Bus proxy cannot start again ({}): giving up; the sandbox has no session bus until it restarts", crate::error_chain(&e)));
                        return;
                    }
                    Err(e) => {
                        quick += 1;
                        self.say(
                            &name,
                            &format!(
                                "the D-Bus proxy cannot start again: {}",
                                crate::error_chain(&e)
                            ),
                        );
                    }
                }
            };
            self.logs.note(
                &name,
                &format!(
                    "D-Bus proxy running again (pid {})",
                    running.pid().unwrap_or_default()
                ),
            );
        }
    }
}

/// Removes the sockets an earlier proxy left in `dir`, so the next one can listen there.
fn clear_sockets(dir: &Path) {
    for socket in [SESSION_SOCKET, SYSTEM_SOCKET] {
        let _ = std::fs::remove_file(dir.join(socket));
    }
}

fn make_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }?;
    // The mode, whatever the umask.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Upstreams {
        Upstreams {
            session: "unix:path=/run/user/1000/bus".into(),
            system: "unix:path=/run/dbus/system_bus_socket".into(),
        }
    }

    #[test]
    fn the_command_line_lists_each_rule_once_per_bus() {
        let d = Dbus {
            talk: vec!["org.freedesktop.Notifications".into()],
            own: vec!["org.example.App".into()],
            call: vec!["org.example.Other=org.example.Other.Ping@/".into()],
            ..Dbus::default()
        };
        let a = args(&d, &up(), Path::new("/r/sandboxd/dbus/x"));
        assert_eq!(
            a,
            [
                "unix:path=/run/user/1000/bus",
                "/r/sandboxd/dbus/x/bus",
                "--filter",
                "--talk=org.freedesktop.Notifications",
                "--own=org.example.App",
                "--call=org.example.Other=org.example.Other.Ping@/",
            ]
        );
    }

    #[test]
    fn portals_and_the_system_bus_add_their_own_rules() {
        let d = Dbus {
            portals: true,
            system_talk: vec!["org.freedesktop.UPower".into()],
            ..Dbus::default()
        };
        let a = args(&d, &up(), Path::new("/d"));
        assert!(a.contains(&"--talk=org.freedesktop.portal.*".to_string()));
        let system = a.iter().position(|x| x == "/d/system_bus").unwrap();
        assert_eq!(a[system - 1], "unix:path=/run/dbus/system_bus_socket");
        assert_eq!(
            a[system + 1..],
            ["--filter", "--talk=org.freedesktop.UPower"]
        );
        // No system bus unless asked for.
        let a = args(&Dbus::default(), &up(), Path::new("/d"));
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn an_identified_proxy_sees_its_sockets_and_its_buses_folders() {
        let dir = Path::new("/run/user/1000/sandboxd/dbus/x");
        let d = Dbus {
            system_talk: vec!["org.freedesktop.UPower".into()],
            ..Dbus::default()
        };
        assert_eq!(
            up().folders(&d, dir),
            [dir, Path::new("/run/user/1000"), Path::new("/run/dbus")]
        );
        let abstract_bus = Upstreams {
            session: "unix:abstract=/tmp/dbus-x,guid=1".into(),
            ..up()
        };
        assert_eq!(abstract_bus.folders(&Dbus::default(), dir), [dir]);
        let id = process::Identified {
            app_id: "sandboxd.x".into(),
            folders: vec![dir.into()],
        };
        let a = id.bwrap_args();
        assert_eq!(
            a[a.len() - 5..],
            [
                "--ro-bind-data",
                "4",
                "/.flatpak-info",
                "--",
                "xdg-dbus-proxy"
            ]
        );
        assert_eq!(id.info(), "[Application]\nname=sandboxd.x\n");
    }
}
