//! End to end: the desktop session reaches a sandbox. A real Wayland compositor (weston,
//! headless) and a real PulseAudio server run as the test user, started *after* the
//! daemon, and their sockets are found through the user manager's environment.
//! Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

fn host_profile(s: &Session, name: &str, extra: &str) {
    s.write_profile(
        name,
        &format!("[rootfs]\nhost = true\n\n[network]\nmode = \"none\"\n\n{extra}"),
    );
}

/// With weston started after the daemon and WAYLAND_DISPLAY imported into the user
/// manager, wayland-info inside lists the compositor's globals; without gui.wayland it
/// cannot connect.
#[test]
fn wayland_reaches_the_sandbox() {
    let _g = lock();
    let s = session();
    s.ready();
    let display = "wayland-e2e";
    let socket = s.runtime_dir.join(display);
    let _weston = Server::start(
        "weston",
        &[
            "--backend=headless-backend.so",
            &format!("--socket={display}"),
            "--idle-time=0",
        ],
    );
    s.wait_for("the weston socket", Duration::from_secs(20), || {
        socket.exists().then_some(())
    });
    s.user_ok(&[
        "env",
        &format!("WAYLAND_DISPLAY={display}"),
        "systemctl",
        "--user",
        "import-environment",
        "WAYLAND_DISPLAY",
    ]);

    host_profile(s, "e2e-wl", "[gui]\nwayland = true\n");
    host_profile(s, "e2e-nowl", "");
    s.ctl_ok(&["start", "e2e-wl"]);
    s.ctl_ok(&["start", "e2e-nowl"]);
    let info = s.ctl(&["exec", "e2e-wl", "--", "wayland-info"]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert!(
        stdout(&info).contains("'wl_compositor'"),
        "{}",
        stdout(&info)
    );
    let env = s.ctl_ok(&["exec", "e2e-wl", "--", "sh", "-c", "echo $WAYLAND_DISPLAY $XDG_RUNTIME_DIR $XDG_SESSION_TYPE; stat -c '%a %u' $XDG_RUNTIME_DIR"]);
    assert_eq!(env, "wayland-0 /run/user/0 wayland\n700 0\n");
    let none = s.ctl(&["exec", "e2e-nowl", "--", "sh", "-c", "WAYLAND_DISPLAY=wayland-0 XDG_RUNTIME_DIR=/run/user/0 wayland-info; WAYLAND_DISPLAY=/run/user/1001/wayland-e2e wayland-info"]);
    assert_ne!(none.status.code(), Some(0));
    assert!(!stdout(&none).contains("wl_compositor"));

    s.ctl_ok(&["stop", "e2e-wl"]);
    s.ctl_ok(&["stop", "e2e-nowl"]);
    s.user_ok(&[
        "systemctl",
        "--user",
        "unset-environment",
        "WAYLAND_DISPLAY",
    ]);
    // Asking for Wayland with no compositor is a start error naming the socket.
    drop(_weston);
    s.wait_for("weston to go", Duration::from_secs(10), || {
        (!socket.exists()).then_some(())
    });
    s.user_ok(&[
        "env",
        &format!("WAYLAND_DISPLAY={display}"),
        "systemctl",
        "--user",
        "import-environment",
        "WAYLAND_DISPLAY",
    ]);
    let out = s.ctl(&["start", "e2e-wl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("gui.wayland") && stderr(&out).contains(display),
        "{}",
        stderr(&out)
    );
    s.user_ok(&[
        "systemctl",
        "--user",
        "unset-environment",
        "WAYLAND_DISPLAY",
    ]);
    s.remove_profile("e2e-wl");
    s.remove_profile("e2e-nowl");
}

/// With a PulseAudio server on the host, `pactl info` inside reports it.
#[test]
fn pulseaudio_reaches_the_sandbox() {
    let _g = lock();
    let s = session();
    s.ready();
    // Debian's pulseaudio package enables a socket-activated server in every user manager;
    // keep it out of the way and run our own on a socket of its own, announced to the
    // session through the user manager's environment, as a desktop would.
    let _ = s.systemctl(&["stop", "pulseaudio.socket", "pulseaudio.service"]);
    let socket = s.runtime_dir.join("e2e-pulse");
    let _ = std::fs::remove_file(&socket);
    let _pulse = Server::start(
        "pulseaudio",
        &[
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "-n",
            &format!(
                "--load=module-native-protocol-unix socket={}",
                socket.display()
            ),
            "--load=module-null-sink",
        ],
    );
    // The client needs the server's cookie too, which a fresh server writes as it starts.
    let cookie = s.home.join(".config/pulse/cookie");
    s.wait_for(
        "the PulseAudio socket and cookie",
        Duration::from_secs(20),
        || (socket.exists() && cookie.exists()).then_some(()),
    );
    let server = format!("PULSE_SERVER=unix:{}", socket.display());
    s.user_ok(&[
        "env",
        &server,
        "systemctl",
        "--user",
        "import-environment",
        "PULSE_SERVER",
    ]);
    host_profile(s, "e2e-pa", "[audio]\npulseaudio = true\n");
    s.ctl_ok(&["start", "e2e-pa"]);
    let info = s.ctl(&["exec", "e2e-pa", "--", "pactl", "info"]);
    s.user_ok(&["systemctl", "--user", "unset-environment", "PULSE_SERVER"]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert!(
        stdout(&info).contains("Server String: unix:/run/user/0/pulse/native"),
        "{}",
        stdout(&info)
    );
    assert!(
        stdout(&info).contains("Server Name: pulseaudio"),
        "{}",
        stdout(&info)
    );
    s.ctl_ok(&["stop", "e2e-pa"]);
    s.remove_profile("e2e-pa");
}

/// With Xvfb running in the session under a cookie and `gui.x11`, an X client inside
/// reaches the display through the bound socket and cookie (and not without the cookie);
/// without `gui.x11` it cannot, by path or by the abstract socket.
#[test]
fn x11_reaches_the_sandbox_with_its_cookie() {
    let _g = lock();
    let s = session();
    s.ready();
    let (number, display) = (42, ":42");
    // A machine that never ran an X server has no socket folder; Xvfb needs one.
    let dir = std::path::Path::new("/tmp/.X11-unix");
    if !dir.exists() {
        std::fs::create_dir(dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let socket = dir.join(format!("X{number}"));
    let auth = s.home.join(".Xauthority");
    let _ = std::fs::remove_file(&auth);
    let cookie: String = std::fs::read("/proc/sys/kernel/random/uuid")
        .map(|u| String::from_utf8_lossy(&u).replace(['-', '\n'], ""))
        .unwrap();
    s.user_ok(&[
        "xauth",
        "-f",
        auth.to_str().unwrap(),
        "add",
        display,
        "MIT-MAGIC-COOKIE-1",
        &cookie,
    ]);
    let _x = Server::start(
        "Xvfb",
        &[display, "-auth", auth.to_str().unwrap(), "-nolisten", "tcp"],
    );
    s.wait_for("the X socket", Duration::from_secs(20), || {
        socket.exists().then_some(())
    });
    s.user_ok(&[
        "env",
        &format!("DISPLAY={display}"),
        "systemctl",
        "--user",
        "import-environment",
        "DISPLAY",
    ]);
    host_profile(s, "e2e-x11", "[gui]\nx11 = true\n");
    host_profile(s, "e2e-nox11", "");
    let started = (s.ctl(&["start", "e2e-x11"]), s.ctl(&["start", "e2e-nox11"]));
    s.user_ok(&["systemctl", "--user", "unset-environment", "DISPLAY"]);
    assert!(started.0.status.success(), "{}", stderr(&started.0));
    assert!(started.1.status.success(), "{}", stderr(&started.1));

    let info = s.ctl(&["exec", "e2e-x11", "--", "xdpyinfo"]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert!(
        stdout(&info).contains(&format!("name of display:    {display}")),
        "{}",
        stdout(&info)
    );
    let env = s.ctl_ok(&[
        "exec",
        "e2e-x11",
        "--",
        "sh",
        "-c",
        "echo $DISPLAY $XAUTHORITY",
    ]);
    assert_eq!(env, format!("{display} /run/user/0/Xauthority\n"));
    // The server checks the cookie: without it the same socket refuses.
    let no_cookie = s.ctl(&[
        "exec",
        "e2e-x11",
        "--",
        "env",
        "XAUTHORITY=/dev/null",
        "xdpyinfo",
    ]);
    assert_ne!(no_cookie.status.code(), Some(0), "{}", stdout(&no_cookie));
    // Without gui.x11: no socket, and the abstract one is in another network namespace.
    let none = s.ctl(&[
        "exec",
        "e2e-nox11",
        "--",
        "env",
        &format!("DISPLAY={display}"),
        "xdpyinfo",
    ]);
    assert_ne!(none.status.code(), Some(0), "{}", stdout(&none));
    assert!(!stdout(&none).contains("name of display"));
    s.ctl_ok(&["stop", "e2e-x11"]);
    s.ctl_ok(&["stop", "e2e-nox11"]);
    s.remove_profile("e2e-x11");
    s.remove_profile("e2e-nox11");
    let _ = std::fs::remove_file(&auth);
}

/// With a PipeWire daemon on a socket of its own, named to the session by
/// PIPEWIRE_REMOTE, `pw-cli info 0` inside reaches its core through `audio.pipewire`.
#[test]
fn pipewire_reaches_the_sandbox() {
    let _g = lock();
    let s = session();
    s.ready();
    // Debian's package socket-activates a server in every user manager: keep it out of
    // the way and run our own, as with PulseAudio.
    let _ = s.systemctl(&["stop", "pipewire.socket", "pipewire.service"]);
    let name = "e2e-pipewire";
    let socket = s.runtime_dir.join(name);
    let _ = std::fs::remove_file(&socket);
    let _pw = Server::with_env("pipewire", &[&format!("PIPEWIRE_CORE={name}")], &[]);
    s.wait_for("the PipeWire socket", Duration::from_secs(20), || {
        socket.exists().then_some(())
    });
    s.user_ok(&[
        "env",
        &format!("PIPEWIRE_REMOTE={name}"),
        "systemctl",
        "--user",
        "import-environment",
        "PIPEWIRE_REMOTE",
    ]);
    host_profile(s, "e2e-pw", "[audio]\npipewire = true\n");
    let started = s.ctl(&["start", "e2e-pw"]);
    s.user_ok(&[
        "systemctl",
        "--user",
        "unset-environment",
        "PIPEWIRE_REMOTE",
    ]);
    assert!(started.status.success(), "{}", stderr(&started));
    let info = s.ctl(&["exec", "e2e-pw", "--", "pw-cli", "info", "0"]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert!(
        stdout(&info).contains("PipeWire:Interface:Core"),
        "{}",
        stdout(&info)
    );
    s.ctl_ok(&["stop", "e2e-pw"]);
    s.remove_profile("e2e-pw");
}
