//! The desktop session a profile opts into: Wayland, X11, PulseAudio and PipeWire sockets,
//! the filtered bus of `[dbus]`, and device nodes, found from the session's *current* environment (the systemd user
//! manager's, which compositors update after the daemon started) and bound into the
//! sandbox. Anything asked for but missing is an error naming it, so a sandbox never
//! starts silently without what its profile promised.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::HostContext;
use crate::profile::Profile;

/// Environment variables of the user's session, e.g. `WAYLAND_DISPLAY`.
pub type SessionEnv = BTreeMap<String, String>;

/// A host path bound into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
    /// Device nodes must keep `dev` on their mount.
    pub device: bool,
}

/// What the desktop options add to a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desktop {
    /// `/run/user/UID` inside, a private tmpfs owned by the sandbox user, when any socket
    /// lives there.
    pub runtime_dir: Option<String>,
    pub binds: Vec<Bind>,
    pub env: Vec<String>,
    /// Optional things that were missing.
    pub warnings: Vec<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{key}: {message}")]
pub struct DesktopError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> DesktopError {
    DesktopError {
        key,
        message: message.into(),
    }
}

fn socket(key: &'static str, path: &Path, what: &str) -> Result<PathBuf, DesktopError> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(path.to_path_buf()),
        Ok(_) => Err(err(
            key,
            format!("{} is not a socket ({what})", path.display()),
        )),
        Err(e) => Err(err(key, format!("{what} {}: {e}", path.display()))),
    }
}

/// Resolves the profile's desktop options for a sandbox whose user is `uid`/`gid` inside.
pub fn resolve(
    profile: &Profile,
    uid: u32,
    session: &SessionEnv,
    ctx: &HostContext,
) -> Result<Desktop, DesktopError> {
    let mut r = Resolver {
        d: Desktop::default(),
        rt: format!("/run/user/{uid}"),
        session,
        home: &ctx.home,
        uses_rt: false,
    };
    if profile.gui.wayland {
        r.wayland()?;
    }
    if profile.gui.x11 {
        r.x11()?;
    }
    if profile.audio.pulseaudio {
        r.pulseaudio()?;
    }
    if profile.audio.pipewire {
        r.pipewire()?;
    }
    if let Some(dbus) = &profile.dbus {
        r.dbus(
            dbus,
            &crate::busproxy::Buses::dir_of(&ctx.buses, &profile.name),
        );
        if dbus.portals {
            r.documents(&dbus.app_id_of(&profile.name), ctx.uid);
        }
    }
    if r.uses_rt {
        r.d.env.push(format!("XDG_RUNTIME_DIR={}", r.rt));
        r.d.runtime_dir = Some(r.rt.clone());
    }
    r.devices(profile)?;
    Ok(r.d)
}

/// The number of a local display (`:N` or `:N.S`).
pub fn display_number(display: &str) -> Option<&str> {
    display
        .strip_prefix(':')
        .and_then(|n| n.split('.').next())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// What [`resolve`] has found so far.
struct Resolver<'a> {
    d: Desktop,
    /// `/run/user/UID` inside.
    rt: String,
    session: &'a SessionEnv,
    home: &'a Path,
    /// Whether a socket or cookie lives in the runtime folder inside.
    uses_rt: bool,
}

impl Resolver<'_> {
    fn bind(&mut self, source: PathBuf, destination: String, readonly: bool) {
        self.d.binds.push(Bind {
            source,
            destination,
            readonly,
            device: false,
        });
    }

    /// `name` in the host's runtime folder.
    fn in_host_rt(&self, key: &'static str, name: &str) -> Result<PathBuf, DesktopError> {
        let dir = self
            .session
            .get("XDG_RUNTIME_DIR")
            .ok_or_else(|| err(key, "XDG_RUNTIME_DIR is not set in the session"))?;
        Ok(Path::new(dir).join(name))
    }

    /// A socket named by an absolute path or by a name in the host's runtime folder.
    fn named_socket(&self, key: &'static str, name: &str) -> Result<PathBuf, DesktopError> {
        if name.starts_with('/') {
            Ok(PathBuf::from(name))
        } else {
            self.in_host_rt(key, name)
        }
    }

    /// An authentication cookie, from `$var` or `default` in the home: bound read-only at
    /// `inside` in the runtime folder, and `$var` pointed at it. Optional: false when the
    /// file does not exist.
    fn cookie(&mut self, var: &str, default: &str, inside: &str) -> bool {
        let cookie = self
            .session
            .get(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| self.home.join(default));
        if !cookie.is_file() {
            return false;
        }
        let dest = format!("{}/{inside}", self.rt);
        self.bind(cookie, dest.clone(), true);
        self.d.env.push(format!("{var}={dest}"));
        true
    }

    fn wayland(&mut self) -> Result<(), DesktopError> {
        let key = "gui.wayland";
        let display = self
            .session
            .get("WAYLAND_DISPLAY")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| err(key, "WAYLAND_DISPLAY is not set in the session: start the compositor first, or run `systemctl --user import-environment WAYLAND_DISPLAY`"))?;
        let path = self.named_socket(key, display)?;
        let dest = format!("{}/wayland-0", self.rt);
        self.bind(socket(key, &path, "the Wayland socket")?, dest, false);
        self.d.env.extend([
            "WAYLAND_DISPLAY=wayland-0".to_string(),
            "XDG_SESSION_TYPE=wayland".into(),
        ]);
        self.uses_rt = true;
        Ok(())
    }

    fn x11(&mut self) -> Result<(), DesktopError> {
        let key = "gui.x11";
        let display = self
            .session
            .get("DISPLAY")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| err(key, "DISPLAY is not set in the session"))?;
        let number = display_number(display).ok_or_else(|| {
            err(
                key,
                format!("DISPLAY={display:?}: only local displays (\":N\") can be shared"),
            )
        })?;
        let sock = format!("/tmp/.X11-unix/X{number}");
        let source = socket(key, Path::new(&sock), "the X11 socket")?;
        self.bind(source, sock, false);
        self.d.env.push(format!("DISPLAY=:{number}"));
        if self.cookie("XAUTHORITY", ".Xauthority", "Xauthority") {
            self.uses_rt = true;
        }
        Ok(())
    }

    fn pulseaudio(&mut self) -> Result<(), DesktopError> {
        let key = "audio.pulseaudio";
        let path = match self
            .session
            .get("PULSE_SERVER")
            .and_then(|s| s.strip_prefix("unix:"))
        {
            Some(p) => PathBuf::from(p),
            None => self.in_host_rt(key, "pulse/native")?,
        };
        let dest = format!("{}/pulse/native", self.rt);
        self.bind(
            socket(key, &path, "the PulseAudio socket")?,
            dest.clone(),
            false,
        );
        self.d.env.push(format!("PULSE_SERVER=unix:{dest}"));
        self.cookie("PULSE_COOKIE", ".config/pulse/cookie", "pulse/cookie");
        self.uses_rt = true;
        Ok(())
    }

    fn pipewire(&mut self) -> Result<(), DesktopError> {
        let key = "audio.pipewire";
        let name = self
            .session
            .get("PIPEWIRE_REMOTE")
            .map_or("pipewire-0", String::as_str);
        let path = self.named_socket(key, name)?;
        let dest = format!("{}/pipewire-0", self.rt);
        self.bind(socket(key, &path, "the PipeWire socket")?, dest, false);
        self.uses_rt = true;
        Ok(())
    }

    /// The proxy's socket directory (made when the sandbox starts), read-only: the
    /// sandbox connects to the sockets but cannot add any.
    fn dbus(&mut self, dbus: &crate::profile::Dbus, dir: &Path) {
        use crate::busproxy::{INSIDE_DIR, SESSION_SOCKET, SYSTEM_SOCKET};
        let inside = format!("{}/{INSIDE_DIR}", self.rt);
        self.bind(dir.to_path_buf(), inside.clone(), true);
        self.d.env.push(format!(
            "DBUS_SESSION_BUS_ADDRESS=unix:path={inside}/{SESSION_SOCKET}"
        ));
        if !dbus.system_talk.is_empty() {
            self.d.env.push(format!(
                "DBUS_SYSTEM_BUS_ADDRESS=unix:path={inside}/{SYSTEM_SOCKET}"
            ));
        }
        self.uses_rt = true;
    }

    /// The document portal's view for the app, where file chooser results live, at the
    /// path the portal names them by (`/run/user/HOST_UID/doc/…`); a warning when the
    /// document portal is not running.
    fn documents(&mut self, app_id: &str, host_uid: u32) {
        let Ok(doc) = self.in_host_rt("dbus.portals", "doc") else {
            return;
        };
        let view = doc.join("by-app").join(app_id);
        if view.is_dir() {
            self.bind(view, format!("/run/user/{host_uid}/doc"), false);
        } else {
            self.d.warnings.push(format!(
                "dbus.portals: the document portal is not mounted at {}; files chosen through the portals will not be reachable",
                doc.display()
            ));
        }
    }

    /// The device nodes of `devices.*`: a missing one is an error, or a warning when it
    /// is optional.
    fn devices(&mut self, profile: &Profile) -> Result<(), DesktopError> {
        if profile.devices.gpu {
            self.device("devices.gpu", Path::new("/dev/dri"), false)?;
            // NVIDIA's proprietary driver exposes its own nodes beside /dev/dri.
            let mut nvidia: Vec<PathBuf> = std::fs::read_dir("/dev")
                .map(|r| {
                    r.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with("nvidia"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            nvidia.sort();
            for p in nvidia {
                self.device("devices.gpu", &p, true)?;
            }
        }
        if profile.devices.sound {
            self.device("devices.sound", Path::new("/dev/snd"), false)?;
        }
        for extra in &profile.devices.extra {
            let text = extra.to_string_lossy();
            let (path, optional) = match text.strip_suffix('?') {
                Some(p) => (PathBuf::from(p), true),
                None => (extra.clone(), false),
            };
            self.device("devices.extra", &path, optional)?;
        }
        Ok(())
    }

    fn device(
        &mut self,
        key: &'static str,
        path: &Path,
        optional: bool,
    ) -> Result<(), DesktopError> {
        if path.exists() {
            self.d.binds.push(Bind {
                source: path.into(),
                destination: path.display().to_string(),
                readonly: false,
                device: true,
            });
            Ok(())
        } else if optional {
            self.d.warnings.push(format!(
                "{key}: {} does not exist; starting without it",
                path.display()
            ));
            Ok(())
        } else {
            Err(err(
                key,
                format!("{} does not exist on this machine", path.display()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn profile() -> Profile {
        Profile::builtin_default()
    }

    /// A session whose runtime folder is `rt`.
    fn in_runtime_dir(rt: &Path) -> SessionEnv {
        [("XDG_RUNTIME_DIR".to_string(), rt.display().to_string())].into()
    }

    fn ctx(home: &Path) -> HostContext {
        let mut c = super::super::tests::ctx();
        c.home = home.to_path_buf();
        c
    }

    #[test]
    fn a_dbus_table_binds_the_proxy_directory_and_names_its_sockets() {
        let mut p = profile();
        let c = ctx(Path::new("/"));
        assert!(resolve(&p, 1000, &SessionEnv::new(), &c)
            .unwrap()
            .env
            .iter()
            .all(|e| !e.starts_with("DBUS_")));
        p.dbus = Some(crate::profile::Dbus {
            system_talk: vec!["org.freedesktop.UPower".into()],
            ..Default::default()
        });
        let d = resolve(&p, 1000, &SessionEnv::new(), &c).unwrap();
        assert_eq!(
            d.binds,
            [Bind {
                source: c.buses.join("default"),
                destination: "/run/user/1000/.dbus-proxy".into(),
                readonly: true,
                device: false,
            }]
        );
        assert!(d.env.contains(
            &"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/.dbus-proxy/bus".to_string()
        ));
        assert!(d.env.contains(
            &"DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/user/1000/.dbus-proxy/system_bus".to_string()
        ));
        assert_eq!(d.runtime_dir.as_deref(), Some("/run/user/1000"));
    }

    #[test]
    fn portals_bind_the_app_s_documents_where_the_portal_names_them() {
        let rt = tempfile::tempdir().unwrap();
        let session = in_runtime_dir(rt.path());
        let mut p = profile();
        p.name = "web".into();
        p.dbus = Some(crate::profile::Dbus {
            portals: true,
            ..Default::default()
        });
        let c = ctx(Path::new("/"));
        // No document portal: a warning, and nothing bound for it.
        let d = resolve(&p, 0, &session, &c).unwrap();
        assert_eq!(d.binds.len(), 1);
        assert!(
            d.warnings[0].contains("document portal"),
            "{:?}",
            d.warnings
        );
        let view = rt.path().join("doc/by-app/sandboxd.web");
        std::fs::create_dir_all(&view).unwrap();
        let d = resolve(&p, 0, &session, &c).unwrap();
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(d.binds[1].source, view);
        assert_eq!(d.binds[1].destination, format!("/run/user/{}/doc", c.uid));
    }

    #[test]
    fn wayland_and_pulse_from_the_session() {
        let rt = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let _w = UnixListener::bind(rt.path().join("wayland-1")).unwrap();
        std::fs::create_dir(rt.path().join("pulse")).unwrap();
        let _p = UnixListener::bind(rt.path().join("pulse/native")).unwrap();
        std::fs::create_dir_all(home.path().join(".config/pulse")).unwrap();
        std::fs::write(home.path().join(".config/pulse/cookie"), b"c").unwrap();
        let session: SessionEnv = [
            ("XDG_RUNTIME_DIR", rt.path().to_str().unwrap()),
            ("WAYLAND_DISPLAY", "wayland-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut p = profile();
        p.gui.wayland = true;
        p.audio.pulseaudio = true;
        let d = resolve(&p, 1000, &session, &ctx(home.path())).unwrap();
        assert_eq!(d.runtime_dir.as_deref(), Some("/run/user/1000"));
        assert!(d.env.contains(&"WAYLAND_DISPLAY=wayland-0".to_string()));
        assert!(d
            .env
            .contains(&"XDG_RUNTIME_DIR=/run/user/1000".to_string()));
        assert!(d
            .env
            .contains(&"PULSE_SERVER=unix:/run/user/1000/pulse/native".to_string()));
        let dests: Vec<&str> = d.binds.iter().map(|b| b.destination.as_str()).collect();
        assert_eq!(
            dests,
            [
                "/run/user/1000/wayland-0",
                "/run/user/1000/pulse/native",
                "/run/user/1000/pulse/cookie"
            ]
        );
        assert_eq!(d.binds[0].source, rt.path().join("wayland-1"));
    }

    #[test]
    fn missing_things_are_named() {
        let rt = tempfile::tempdir().unwrap();
        let session = in_runtime_dir(rt.path());
        let mut p = profile();
        p.gui.wayland = true;
        let e = resolve(&p, 0, &session, &ctx(Path::new("/"))).unwrap_err();
        assert_eq!(e.key, "gui.wayland");
        assert!(e.message.contains("WAYLAND_DISPLAY is not set"), "{e}");
        let mut s2 = session.clone();
        s2.insert("WAYLAND_DISPLAY".into(), "wayland-9".into());
        let e = resolve(&p, 0, &s2, &ctx(Path::new("/"))).unwrap_err();
        assert!(e.message.contains("wayland-9"), "{e}");
        let mut p = profile();
        p.gui.x11 = true;
        let mut s3 = session.clone();
        s3.insert("DISPLAY".into(), "remote:0".into());
        assert!(resolve(&p, 0, &s3, &ctx(Path::new("/")))
            .unwrap_err()
            .message
            .contains("only local displays"));
        let mut p = profile();
        p.devices.extra = vec!["/dev/sandboxd-absent".into()];
        assert_eq!(
            resolve(&p, 0, &session, &ctx(Path::new("/")))
                .unwrap_err()
                .key,
            "devices.extra"
        );
        p.devices.extra = vec!["/dev/sandboxd-absent?".into(), "/dev/null".into()];
        let d = resolve(&p, 0, &session, &ctx(Path::new("/"))).unwrap();
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(d.binds.len(), 1);
        assert!(d.binds[0].device);
        assert!(d.runtime_dir.is_none());
    }
}
