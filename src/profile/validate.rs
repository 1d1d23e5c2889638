//! Semantic checks that serde cannot express: absolute and existing paths, one rootfs
//! source, sane names and values. Each failure names the key it is about so that `load`
//! can point at its line and column.

use std::path::{Component, Path, PathBuf};

use super::model::{
    NetworkMode, RawAllowHost, RawLimits, RawMount, RawNested, RawNetwork, RawProcess, RawProfile,
    RawRestart, RawRootfs, RawSecurity, RawUser,
};
use super::{
    validate_name, AllowHost, Audio, Destination, Devices, Gui, Home, Limits, Mount, Nested,
    Network, Process, Profile, Publish, Restart, Rootfs, RootfsSource, Security, Upstream, User,
};

/// A failed check: the dotted key (`mount[1].source`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Expands a leading `~` or `~/` to `home`.
pub fn expand_home(path: &str, home: &Path) -> PathBuf {
    if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(path)
    }
}

/// An absolute host path that exists, after `~` expansion.
fn host_path(key: &str, raw: &str, home: &Path, want_dir: bool) -> Result<PathBuf, Invalid> {
    let path = expand_home(raw, home);
    if !path.is_absolute() {
        return Err(invalid(
            key,
            format!("{raw:?} is not an absolute path (start it with / or ~/)"),
        ));
    }
    match std::fs::metadata(&path) {
        Ok(meta) if want_dir && !meta.is_dir() => Err(invalid(
            key,
            format!("{} is not a directory", path.display()),
        )),
        Ok(_) => Ok(path),
        Err(e) => Err(invalid(key, format!("{}: {e}", path.display()))),
    }
}

/// An absolute path inside the sandbox without `..`, so a bind cannot climb out of the root.
fn sandbox_path(key: &str, raw: &str) -> Result<String, Invalid> {
    let p = Path::new(raw);
    if !p.is_absolute() || raw.contains('\0') {
        return Err(invalid(
            key,
            format!("{raw:?} must be an absolute path inside the sandbox"),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(key, format!("{raw:?} must not contain \"..\"")));
    }
    Ok(raw.to_string())
}

fn hostname(raw: &str) -> Result<String, Invalid> {
    let ok = !raw.is_empty()
        && raw.len() <= 63
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        && !raw.starts_with(['-', '.']);
    if ok {
        Ok(raw.to_string())
    } else {
        Err(invalid(
            "hostname",
            format!("{raw:?} is not a valid host name (letters, digits, '-', '.'; at most 63)"),
        ))
    }
}

/// A policy destination ([`Destination`]), or the key and why it is none.
fn destination(key: &str, raw: &str) -> Result<Destination, Invalid> {
    Destination::parse(raw).map_err(|why| invalid(key, why))
}

/// `PORT` or `PORT-PORT` (1-65535, ascending) of a destination entry.
pub(crate) fn port_range(raw: &str) -> Option<(u16, u16)> {
    let mut it = raw.splitn(2, '-').map(|p| p.parse::<u16>().ok());
    let a = it.next()??;
    let b = match it.next() {
        Some(b) => b?,
        None => a,
    };
    (a > 0 && a <= b).then_some((a, b))
}

/// Splits `host:port`, `[v6]:port`; a bare IPv6 address or CIDR keeps its colons.
pub(crate) fn split_port(raw: &str) -> (&str, Option<&str>) {
    if let Some(rest) = raw.strip_prefix('[') {
        if let Some((inner, tail)) = rest.split_once(']') {
            return (inner, tail.strip_prefix(':'));
        }
    }
    match raw.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (raw, None),
    }
}

/// `network.upstream` ([`Upstream`]), or why it is none.
fn upstream(raw: &str) -> Result<Upstream, Invalid> {
    Upstream::parse(raw).map_err(|why| invalid("network.upstream", why))
}

/// A `network.publish` entry ([`Publish`]), or why it is none.
fn publish(key: &str, raw: &str) -> Result<Publish, Invalid> {
    Publish::parse(raw).map_err(|why| invalid(key, why))
}

/// Turns a parsed file into a [`Profile`], or names the first key that is wrong.
pub fn validate(name: &str, file: &Path, raw: RawProfile, home: &Path) -> Result<Profile, Invalid> {
    validate_name(name).map_err(|e| invalid("(file name)", e.to_string()))?;
    let rootfs = rootfs(raw.rootfs, home)?;
    let hostname = hostname(raw.hostname.as_deref().unwrap_or(name))?;
    let process = process(raw.process)?;
    let home_dir = home_kind(raw.home.as_deref(), home)?;
    let mounts = mounts(raw.mounts, home)?;
    let network = network(raw.network)?;
    let extra = extra_devices(&raw.devices.extra)?;
    let restart = restart_and_limits(raw.restart, &raw.limits)?;
    let security = security(raw.security)?;
    let dbus = raw.dbus.map(super::dbus::validate).transpose()?;
    Ok(Profile {
        name: name.to_string(),
        file: Some(file.to_path_buf()),
        description: raw.description.unwrap_or_default(),
        hostname,
        autostart: raw.autostart,
        rootfs,
        process,
        home: home_dir,
        mounts,
        network,
        gui: Gui {
            wayland: raw.gui.wayland,
            x11: raw.gui.x11,
        },
        audio: Audio {
            pulseaudio: raw.audio.pulseaudio,
            pipewire: raw.audio.pipewire,
        },
        devices: Devices {
            gpu: raw.devices.gpu,
            sound: raw.devices.sound,
            extra,
        },
        limits: Limits {
            memory: raw.limits.memory,
            pids: raw.limits.pids,
            nofile: raw.limits.nofile,
        },
        restart,
        security,
        dbus,
    })
}

/// `[rootfs]`: exactly one source; `keep_changes` only with `overlay`.
fn rootfs(raw: Option<RawRootfs>, home: &Path) -> Result<Rootfs, Invalid> {
    let r = raw.ok_or_else(|| {
        invalid(
            "rootfs",
            "missing [rootfs] table: set rootfs.path to a directory or rootfs.host = true",
        )
    })?;
    let source = match (r.path, r.host) {
        (Some(_), true) => {
            return Err(invalid(
                "rootfs.host",
                "set either rootfs.path or rootfs.host = true, not both",
            ))
        }
        (None, false) => {
            return Err(invalid(
                "rootfs",
                "set rootfs.path to a directory or rootfs.host = true",
            ))
        }
        (Some(p), false) => RootfsSource::Path(host_path("rootfs.path", &p, home, true)?),
        (None, true) => RootfsSource::Host,
    };
    if r.keep_changes && !r.overlay {
        return Err(invalid(
            "rootfs.keep_changes",
            "keeps the changes of an overlay: set rootfs.overlay = true too",
        ));
    }
    Ok(Rootfs {
        source,
        readonly: r.readonly,
        overlay: r.overlay,
        keep_changes: r.keep_changes,
    })
}

/// `[process]`: a command that names a program, a user name or uid, an absolute cwd, env
/// names without `=` or NUL.
fn process(p: RawProcess) -> Result<Process, Invalid> {
    if let Some(cmd) = &p.command {
        if cmd.first().is_none_or(|c| c.is_empty()) {
            return Err(invalid(
                "process.command",
                "must name a program: [\"program\", \"arg\", …]",
            ));
        }
        if cmd.iter().any(|a| a.contains('\0')) {
            return Err(invalid("process.command", "arguments must not contain NUL"));
        }
    }
    let user = match p.user {
        None => None,
        Some(RawUser::Id(id)) => Some(User::Id(id)),
        // "1000" is a uid, as for `--user 1000` (names of digits only are not portable).
        Some(RawUser::Name(n)) if n.parse::<u32>().is_ok() => {
            Some(User::Id(n.parse().unwrap_or_default()))
        }
        Some(RawUser::Name(n)) => {
            let ok = !n.is_empty()
                && n.len() <= 32
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return Err(invalid(
                    "process.user",
                    format!("{n:?} is not a valid user name"),
                ));
            }
            Some(User::Name(n))
        }
    };
    let cwd = p.cwd.map(|c| sandbox_path("process.cwd", &c)).transpose()?;
    for (k, v) in &p.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(invalid(
                format!("process.env.{k}"),
                "variable names must be non-empty without '=' or NUL",
            ));
        }
    }
    let process = Process {
        command: p.command,
        user,
        cwd,
        env: p.env,
    };
    Ok(process)
}

/// `home`: `"tmpfs"`, `"persistent"` or an existing host folder.
fn home_kind(raw: Option<&str>, home: &Path) -> Result<Option<Home>, Invalid> {
    Ok(match raw {
        None => None,
        Some("tmpfs") => Some(Home::Tmpfs),
        Some("persistent") => Some(Home::Persistent),
        Some(p) if p.starts_with('/') || p.starts_with('~') => {
            Some(Home::Path(host_path("home", p, home, true)?))
        }
        Some(other) => {
            return Err(invalid(
                "home",
                format!("{other:?}: expected \"tmpfs\", \"persistent\" or an absolute host path"),
            ))
        }
    })
}

/// `[[mount]]`: existing host sources, absolute destinations inside.
fn mounts(raw: Vec<RawMount>, home: &Path) -> Result<Vec<Mount>, Invalid> {
    let mut mounts = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        mounts.push(Mount {
            source: host_path(&format!("mount[{i}].source"), &m.source, home, false)?,
            destination: sandbox_path(&format!("mount[{i}].destination"), &m.destination)?,
            readonly: m.readonly,
        });
    }
    Ok(mounts)
}

/// `[network]`: destinations, upstream and published ports that parse, bounded limits.
fn network(n: RawNetwork) -> Result<Network, Invalid> {
    let entries = |list: &[String], key: &str| -> Result<Vec<Destination>, Invalid> {
        list.iter()
            .enumerate()
            .map(|(i, d)| destination(&format!("{key}[{i}]"), d))
            .collect()
    };
    let (allow, deny) = (
        entries(&n.allow, "network.allow")?,
        entries(&n.deny, "network.deny")?,
    );
    let upstream = upstream(&n.upstream)?;
    let published = n
        .publish
        .iter()
        .enumerate()
        .map(|(i, p)| publish(&format!("network.publish[{i}]"), p))
        .collect::<Result<Vec<_>, _>>()?;
    if n.mode == NetworkMode::None && !n.publish.is_empty() {
        return Err(invalid(
            "network.publish",
            "ports cannot be published with network.mode = \"none\"",
        ));
    }
    let allow_host = match n.allow_host {
        RawAllowHost::All(false) => AllowHost::None,
        RawAllowHost::All(true) => AllowHost::All,
        RawAllowHost::Ports(p) if p.contains(&0) => {
            return Err(invalid("network.allow_host", "ports must be 1-65535"))
        }
        RawAllowHost::Ports(p) => AllowHost::Ports(p),
    };
    for (value, key) in [
        (n.max_connections, "network.max_connections"),
        (n.max_udp_flows, "network.max_udp_flows"),
    ] {
        if value == 0 || value > 1_000_000 {
            return Err(invalid(key, "must be 1-1000000"));
        }
    }
    let network = Network {
        mode: n.mode,
        allow,
        deny,
        allow_host,
        allow_lan: n.allow_lan,
        dns: n.dns,
        upstream,
        publish: published,
        max_connections: n.max_connections,
        max_udp_flows: n.max_udp_flows,
        require_sni: n.require_sni,
    };
    Ok(network)
}

/// `devices.extra`: paths under `/dev/` (a trailing `?`: optional).
fn extra_devices(raw: &[String]) -> Result<Vec<PathBuf>, Invalid> {
    let mut extra = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let key = format!("devices.extra[{i}]");
        // A trailing `?` marks a device as optional: missing, it is a warning, not an error.
        let path = d.strip_suffix('?').unwrap_or(d);
        if !path.starts_with("/dev/")
            || Path::new(path)
                .components()
                .any(|c| c == Component::ParentDir)
        {
            return Err(invalid(key, format!("{d:?} must be a path under /dev/")));
        }
        extra.push(PathBuf::from(d));
    }
    Ok(extra)
}

/// `[limits]` above zero; `[restart]` with its defaults and a stop timeout above zero.
fn restart_and_limits(raw: RawRestart, limits: &RawLimits) -> Result<Restart, Invalid> {
    if limits.pids == Some(0) {
        return Err(invalid("limits.pids", "must be above zero"));
    }
    if limits.nofile == Some(0) {
        return Err(invalid("limits.nofile", "must be above zero"));
    }
    let defaults = Restart::default();
    let restart = Restart {
        policy: raw.policy,
        max: raw.max.unwrap_or(defaults.max),
        stop_timeout: raw.stop_timeout.unwrap_or(defaults.stop_timeout),
    };
    if restart.stop_timeout.is_zero() {
        return Err(invalid("restart.stop_timeout", "must be above zero"));
    }
    Ok(restart)
}

/// `[security]`: `nested` is false, true or "namespaces".
fn security(raw: RawSecurity) -> Result<Security, Invalid> {
    let nested = match raw.nested {
        RawNested::Switch(false) => Nested::Off,
        RawNested::Switch(true) => Nested::Full,
        RawNested::Name(n) if n == "namespaces" => Nested::Namespaces,
        RawNested::Name(n) => {
            return Err(invalid(
                "security.nested",
                format!("{n:?}: expected false, true or \"namespaces\""),
            ))
        }
    };
    Ok(Security {
        nested,
        multiarch: raw.multiarch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_destination_is_named_by_its_key() {
        // The grammar itself is tested with `Destination`; here, that its errors are located.
        let err = destination("network.deny[0]", "192.168.1").unwrap_err();
        assert_eq!(err.key, "network.deny[0]");
        assert!(err.message.contains("192.168.1.0/24"), "{}", err.message);
    }

    #[test]
    fn bad_upstreams_and_published_ports_are_named_by_their_keys() {
        // The grammars are tested with `Upstream` and `Publish`; here, that errors are located.
        assert_eq!(upstream("socks5://").unwrap_err().key, "network.upstream");
        assert_eq!(upstream("direct").unwrap(), Upstream::Direct);
        let err = publish("network.publish[2]", "80").unwrap_err();
        assert_eq!(err.key, "network.publish[2]");
        assert!(
            err.message.contains("HOST_PORT:SANDBOX_PORT"),
            "{}",
            err.message
        );
    }

    #[test]
    fn home_expansion() {
        let home = Path::new("/home/u");
        assert_eq!(expand_home("~/x", home), PathBuf::from("/home/u/x"));
        assert_eq!(expand_home("~", home), PathBuf::from("/home/u"));
        assert_eq!(expand_home("/abs", home), PathBuf::from("/abs"));
        assert_eq!(expand_home("~other/x", home), PathBuf::from("~other/x"));
    }
}
