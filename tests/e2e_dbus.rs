//! End to end: the filtered session bus of `[dbus]`. The test user's real session bus
//! (dbus-daemon), a real xdg-dbus-proxy started by the daemon, and test peers on the host
//! bus (tests/dbus/peer.py, GLib's D-Bus) answering what reaches them. Needs root, like
//! tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const NOTIFY: &str = "org.freedesktop.Notifications";
const OTHER: &str = "org.sandboxd.Test.Other";

/// The peer script, passed to `python3 -c` inside (the sandbox cannot see this tree).
fn peer_code() -> String {
    std::fs::read_to_string(manifest().join("tests/dbus/peer.py")).unwrap()
}

/// A test peer on the host bus that owns `name` and logs each call it gets.
struct Peer {
    _server: Server,
    log: std::path::PathBuf,
}

impl Peer {
    fn serve(s: &Session, name: &str) -> Self {
        Self::serve_on(s, name, None)
    }

    /// The same on the bus at `address` rather than the session's.
    fn serve_on(s: &Session, name: &str, address: Option<&str>) -> Self {
        let log = s.runtime_dir.join(format!("e2e-peer-{name}.log"));
        let _ = std::fs::remove_file(&log);
        let bus = address.map(|a| format!("DBUS_SESSION_BUS_ADDRESS={a}"));
        let script = manifest().join("tests/dbus/peer.py");
        let (log_text, script) = (log.display().to_string(), script.display().to_string());
        let mut argv = vec!["env"];
        argv.extend(bus.as_deref());
        argv.extend(["python3", &script, "serve", name, &log_text]);
        let peer = Self {
            _server: Server::matching(&log_text, &argv),
            log,
        };
        s.wait_for(
            &format!("the peer owning {name}"),
            Duration::from_secs(20),
            || peer.calls().contains("ready").then_some(()),
        );
        peer
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `gdbus call` on the session bus, inside sandbox `name` (or on the host when `None`).
fn call(
    s: &Session,
    name: Option<&str>,
    dest: &str,
    path: &str,
    method: &str,
) -> std::process::Output {
    let gdbus = [
        "gdbus",
        "call",
        "--session",
        "--timeout",
        "5",
        "--dest",
        dest,
        "--object-path",
        path,
        "--method",
        method,
    ];
    match name {
        Some(n) => {
            let mut args = vec!["exec", n, "--"];
            args.extend(gdbus);
            s.ctl(&args)
        }
        None => s.user(&gdbus),
    }
}

fn server_information(s: &Session, name: &str) -> std::process::Output {
    call(
        s,
        Some(name),
        NOTIFY,
        "/org/freedesktop/Notifications",
        "org.freedesktop.Notifications.GetServerInformation",
    )
}

fn list_names(s: &Session, name: Option<&str>) -> Vec<String> {
    let out = call(
        s,
        name,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.ListNames",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The xdg-dbus-proxy processes serving sandbox `name`.
fn proxies_of(s: &Session, name: &str) -> Vec<u32> {
    let dir = format!("/sandboxd/dbus/{name}/");
    processes_of(s.uid)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("xdg-dbus-proxy") && c.contains(&dir)
            })
        })
        .collect()
}

fn bus_dir(s: &Session, name: &str) -> std::path::PathBuf {
    s.runtime_dir.join("sandboxd/dbus").join(name)
}

/// Stops sandbox `name` (and removes its profile); then no proxy process, no socket
/// directory is left.
fn finish_leaving_nothing(s: &Session, name: &str) {
    s.finish(name);
    assert!(proxies_of(s, name).is_empty(), "a proxy outlived {name}");
    assert!(!bus_dir(s, name).exists(), "{name}'s sockets stayed");
}

/// With `talk` naming the notification service, a call inside reaches the peer and
/// nothing else is visible or callable: not another peer, not systemd; `ListNames` shows
/// only the bus and the allowed name.
#[test]
fn a_filtered_bus_reaches_only_the_names_it_lists() {
    let _g = lock();
    let s = session();
    s.ready();
    let notify = Peer::serve(s, NOTIFY);
    let other = Peer::serve(s, OTHER);
    let name = "e2e-dbus";
    s.start_host_root(name, &format!("[dbus]\ntalk = [\"{NOTIFY}\"]\n"));

    let out = server_information(s, name);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("sandboxd-test"), "{}", stdout(&out));
    assert!(
        notify.calls().contains("GetServerInformation"),
        "{}",
        notify.calls()
    );

    let out = call(
        s,
        Some(name),
        OTHER,
        "/org/freedesktop/Notifications",
        "org.freedesktop.Notifications.GetServerInformation",
    );
    assert!(
        !out.status.success(),
        "an unlisted peer answered: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("ServiceUnknown") || stderr(&out).contains("NameHasNoOwner"),
        "{}",
        stderr(&out)
    );
    assert!(
        !other.calls().contains("GetServerInformation"),
        "{}",
        other.calls()
    );
    let out = call(
        s,
        Some(name),
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.DBus.Peer.Ping",
    );
    assert!(!out.status.success(), "systemd answered: {}", stdout(&out));

    let host = list_names(s, None);
    assert!(host.iter().any(|n| n == OTHER), "{host:?}");
    let inside = list_names(s, Some(name));
    let well_known: Vec<&String> = inside.iter().filter(|n| !n.starts_with(':')).collect();
    assert_eq!(well_known, ["org.freedesktop.DBus", NOTIFY], "{inside:?}");

    // The address points at the proxy's socket, and the host's bus is not there.
    let env = s.ctl_ok(&[
        "exec", name, "--", "sh", "-c",
        "echo $DBUS_SESSION_BUS_ADDRESS; test -e /run/user/0/bus || echo no-bus; test -e /run/user/1001/bus || echo no-host-bus",
    ]);
    assert_eq!(
        env,
        "unix:path=/run/user/0/.dbus-proxy/bus\nno-bus\nno-host-bus\n"
    );
    finish_leaving_nothing(s, name);
}

/// `own` lets the sandbox own its name, which the host then sees; any other name is
/// refused.
#[test]
fn a_sandbox_owns_only_the_names_it_may() {
    let _g = lock();
    let s = session();
    s.ready();
    let name = "e2e-dbus-own";
    let app = "org.sandboxd.Test.App";
    s.start_host_root(name, &format!("[dbus]\nown = [\"{app}\"]\n"));
    let code = peer_code();
    let ctl = s.bin().join("sandboxctl");
    let mut holder = Command::new(manifest().join("scripts/user-session"))
        .args(["run", USER])
        .arg(&ctl)
        .args(["exec", name, "--", "python3", "-c", &code, "own", app, "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_for(
        "the host to see the sandbox's name",
        Duration::from_secs(20),
        || list_names(s, None).iter().any(|n| n == app).then_some(()),
    );
    let _ = holder.kill();
    let _ = holder.wait();

    let out = s.ctl(&[
        "exec", name, "--", "python3", "-c", &code, "own", OTHER, "0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // xdg-dbus-proxy answers a RequestName it does not allow as if the bus did not know it.
    let refusal = stdout(&out);
    assert!(
        refusal.contains("AccessDenied") || refusal.contains("ServiceUnknown"),
        "{refusal}"
    );
    assert!(!list_names(s, None).iter().any(|n| n == OTHER));
    finish_leaving_nothing(s, name);
}

/// Without a `[dbus]` table there is no bus inside: no address, no socket, gdbus fails.
#[test]
fn no_dbus_table_no_bus() {
    let _g = lock();
    let s = session();
    s.ready();
    let name = "e2e-nodbus";
    s.start_host_root(name, "");
    let env = s.ctl_ok(&[
        "exec", name, "--", "sh", "-c",
        "echo ${DBUS_SESSION_BUS_ADDRESS-unset}; test -e /run/user/0/.dbus-proxy || echo no-proxy; test -e /run/user/1001/bus || echo no-host-bus",
    ]);
    assert_eq!(env, "unset\nno-proxy\nno-host-bus\n");
    let out = call(
        s,
        Some(name),
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.ListNames",
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(proxies_of(s, name).is_empty());
    assert!(!bus_dir(s, name).exists());
    s.finish(name);
}

/// Waits for a proxy of `name` other than `old`; returns its pid.
fn next_proxy(s: &Session, name: &str, old: u32) -> u32 {
    s.wait_for("a new proxy", Duration::from_secs(10), || {
        proxies_of(s, name)
            .into_iter()
            .find(|p| *p != old && alive(*p))
    })
}

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A killed proxy is started again and the bus works again; five quick ends in a row and
/// it is given up, the sandbox then has no bus, and the log says each. A daemon that
/// crashes takes its proxies along; the next one gives the adopted sandbox a new one.
#[test]
fn a_proxy_that_dies_is_replaced_then_given_up() {
    let _g = lock();
    let s = session();
    s.ready();
    let _notify = Peer::serve(s, NOTIFY);
    let name = "e2e-dbus-kill";
    s.start_host_root(name, &format!("[dbus]\ntalk = [\"{NOTIFY}\"]\n"));
    let first = proxies_of(s, name);
    assert_eq!(first.len(), 1, "{first:?}");

    kill9(first[0]);
    let second = next_proxy(s, name, first[0]);
    let out = server_information(s, name);
    assert!(
        out.status.success(),
        "the bus did not come back: {}",
        stderr(&out)
    );
    let logs = s.ctl_ok(&["logs", name]);
    assert!(logs.contains("the D-Bus proxy ended"), "{logs}");

    // The daemon's crash ends its proxy; the next daemon adopts the sandbox and gives it
    // a new proxy.
    s.crash_daemon();
    let third = next_proxy(s, name, second);
    assert!(!alive(second), "a proxy outlived its daemon");
    let out = server_information(s, name);
    assert!(
        out.status.success(),
        "no bus after adoption: {}",
        stderr(&out)
    );

    let mut pid = third;
    let t0 = Instant::now();
    for _ in 0..5 {
        kill9(pid);
        pid = next_proxy(s, name, pid);
    }
    kill9(pid);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the kills were not quick"
    );
    s.wait_for("the daemon to give up", Duration::from_secs(10), || {
        s.ctl_ok(&["logs", name])
            .contains("not starting it again")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        proxies_of(s, name).iter().all(|p| !alive(*p)),
        "a proxy was started again"
    );
    let out = server_information(s, name);
    assert!(
        !out.status.success(),
        "the bus still answered: {}",
        stdout(&out)
    );
    finish_leaving_nothing(s, name);
}

/// Bad `[dbus]` entries are refused at start with the file, the line and the key.
#[test]
fn bad_entries_are_refused_with_their_place() {
    let _g = lock();
    let s = session();
    s.ready();
    for (name, table, key, line) in [
        (
            "e2e-dbus-bad1",
            "talk = [\"not a name\"]",
            "dbus.talk[0]",
            6,
        ),
        ("e2e-dbus-bad2", "call = [\"x\"]", "dbus.call[0]", 6),
    ] {
        s.write_profile(
            name,
            &format!("[rootfs]\nhost = true\n[network]\nmode = \"none\"\n[dbus]\n{table}\n"),
        );
        let out = s.ctl(&["start", name]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{name}.toml:{line}")), "{err}");
        assert!(err.contains(key), "{err}");
        assert!(s.status(name).is_none());
        s.remove_profile(name);
    }
}

/// The portal frontend (Debian's xdg-desktop-portal, headless) with the test peer as its
/// notification backend, run as the test user; stopped with everything it activated.
struct Portal {
    _server: Server,
    backend: Peer,
}

const BACKEND: &str = "org.freedesktop.impl.portal.desktop.sandboxdtest";
const PORTAL_PROGRAMS: [&str; 3] = [
    "xdg-desktop-portal",
    "xdg-document-portal",
    "xdg-permission-store",
];

impl Portal {
    fn start(s: &Session) -> Self {
        let backend = Peer::serve(s, BACKEND);
        let dir = s.runtime_dir.join("e2e-portals");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("sandboxdtest.portal"),
            format!("[portal]\nDBusName={BACKEND}\nInterfaces=org.freedesktop.impl.portal.Notification;\nUseIn=sandboxdtest\n"),
        )
        .unwrap();
        let portal_dir = format!("XDG_DESKTOP_PORTAL_DIR={}", dir.display());
        let server = Server::matching(
            "^/usr/libexec/xdg-desktop-portal",
            &[
                "env",
                &portal_dir,
                "XDG_CURRENT_DESKTOP=sandboxdtest",
                "/usr/libexec/xdg-desktop-portal",
                "--replace",
            ],
        );
        s.wait_for("the portal", Duration::from_secs(20), || {
            list_names(s, None)
                .iter()
                .any(|n| n == "org.freedesktop.portal.Desktop")
                .then_some(())
        });
        Self {
            _server: server,
            backend,
        }
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        let s = session();
        let units: Vec<String> = PORTAL_PROGRAMS
            .iter()
            .map(|p| format!("{p}.service"))
            .collect();
        let mut args = vec!["stop"];
        args.extend(units.iter().map(String::as_str));
        let _ = s.systemctl(&args);
        for p in PORTAL_PROGRAMS {
            let program = format!("^/usr/libexec/{p}");
            let _ = Command::new("pkill")
                .args(["-u", USER, "-f", &program])
                .status();
        }
        let _ = std::fs::remove_dir_all(s.runtime_dir.join("e2e-portals"));
    }
}

/// With `portals = true` a portal call from inside reaches the real portal frontend,
/// which names the sandbox's app id to its backend: `sandboxd.NAME`, or `dbus.app_id`.
#[test]
fn the_portals_know_the_sandbox_s_app_id() {
    let _g = lock();
    let s = session();
    s.ready();
    let portal = Portal::start(s);
    for (name, table, app_id) in [
        ("e2e-portal", "", "sandboxd.e2e-portal"),
        (
            "e2e-portal-id",
            "app_id = \"org.sandboxd.Test.Viewer\"\n",
            "org.sandboxd.Test.Viewer",
        ),
    ] {
        s.start_host_root(name, &format!("[dbus]\nportals = true\n{table}"));
        let out = s.ctl(&[
            "exec",
            name,
            "--",
            "gdbus",
            "call",
            "--session",
            "--timeout",
            "10",
            "--dest",
            "org.freedesktop.portal.Desktop",
            "--object-path",
            "/org/freedesktop/portal/desktop",
            "--method",
            "org.freedesktop.portal.Notification.AddNotification",
            "e2e",
            "{'title': <'hello'>}",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let line = format!("AddNotification app_id={app_id}\n");
        s.wait_for(
            "the backend to get the call",
            Duration::from_secs(10),
            || portal.backend.calls().contains(&line).then_some(()),
        );
        // Only the portals: the notification service itself is not reachable.
        let direct = server_information(s, name);
        assert!(!direct.status.success(), "{}", stdout(&direct));
        finish_leaving_nothing(s, name);
    }
    // The host's own calls are a host app's: no app id.
    let out = s.user(&[
        "gdbus",
        "call",
        "--session",
        "--dest",
        "org.freedesktop.portal.Desktop",
        "--object-path",
        "/org/freedesktop/portal/desktop",
        "--method",
        "org.freedesktop.portal.Notification.AddNotification",
        "e2e",
        "{'title': <'hi'>}",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.wait_for("the host's call", Duration::from_secs(10), || {
        portal
            .backend
            .calls()
            .contains("AddNotification app_id=\n")
            .then_some(())
    });
}

/// A system bus of the test's own (this machine may run none): a dbus-daemon whose policy
/// lets the test user own names, on a socket in its runtime folder, made the daemon's
/// system bus through the user manager's environment (the daemon restarted to read it).
struct SystemBus {
    _server: Server,
    address: String,
}

impl SystemBus {
    fn start(s: &Session) -> Self {
        let socket = s.runtime_dir.join("e2e-system-bus");
        let conf = s.runtime_dir.join("e2e-system-bus.conf");
        let _ = std::fs::remove_file(&socket);
        std::fs::write(
            &conf,
            format!(
                "<busconfig><type>system</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\
                 <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>",
                socket.display()
            ),
        )
        .unwrap();
        let config = format!("--config-file={}", conf.display());
        let server = Server::matching("e2e-system-bus.conf", &["dbus-daemon", "--nofork", &config]);
        s.wait_for("the test system bus", Duration::from_secs(20), || {
            socket.exists().then_some(())
        });
        let address = format!("unix:path={}", socket.display());
        s.user_ok(&[
            "systemctl",
            "--user",
            "set-environment",
            &format!("DBUS_SYSTEM_BUS_ADDRESS={address}"),
        ]);
        restart_daemon(s);
        Self {
            _server: server,
            address,
        }
    }
}

fn restart_daemon(s: &Session) {
    let old = s.daemon_pid();
    let _ = s.systemctl(&["restart", "sandboxd.service"]);
    s.wait_for("the daemon again", Duration::from_secs(20), || {
        (s.unit_property("ActiveState") == "active" && s.daemon_pid() != old).then_some(())
    });
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        let s = session();
        let _ = s.systemctl(&["unset-environment", "DBUS_SYSTEM_BUS_ADDRESS"]);
        restart_daemon(s);
        let _ = std::fs::remove_file(s.runtime_dir.join("e2e-system-bus.conf"));
    }
}

/// `system_talk` gives a second filtered socket, on the system bus, through which only the
/// listed system peers are reachable; the session bus stays as filtered as before.
#[test]
fn system_talk_reaches_only_the_listed_system_peers() {
    let _g = lock();
    let s = session();
    s.ready();
    let system = SystemBus::start(s);
    let listed = "org.sandboxd.Test.System";
    let _listed = Peer::serve_on(s, listed, Some(&system.address));
    let other = Peer::serve_on(s, OTHER, Some(&system.address));
    let name = "e2e-dbus-system";
    s.start_host_root(name, &format!("[dbus]\nsystem_talk = [\"{listed}\"]\n"));
    let system_call = |dest: &str| {
        s.ctl(&[
            "exec",
            name,
            "--",
            "gdbus",
            "call",
            "--system",
            "--timeout",
            "5",
            "--dest",
            dest,
            "--object-path",
            "/org/freedesktop/Notifications",
            "--method",
            "org.freedesktop.Notifications.GetServerInformation",
        ])
    };
    let out = system_call(listed);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("sandboxd-test"), "{}", stdout(&out));
    let out = system_call(OTHER);
    assert!(
        !out.status.success(),
        "an unlisted system peer answered: {}",
        stdout(&out)
    );
    assert!(
        !other.calls().contains("GetServerInformation"),
        "{}",
        other.calls()
    );
    let env = s.ctl_ok(&[
        "exec",
        name,
        "--",
        "sh",
        "-c",
        "echo $DBUS_SYSTEM_BUS_ADDRESS",
    ]);
    assert_eq!(env, "unix:path=/run/user/0/.dbus-proxy/system_bus\n");
    finish_leaving_nothing(s, name);
}
