//! Profile → OCI runtime spec (`config.json`), built with the `oci-spec` types.
//!
//! What every sandbox gets: its own pid, mount, uts, ipc, cgroup, user and network
//! namespaces; container root mapped to the calling user and 1..65536 to the user's
//! subordinate ids; `noNewPrivileges`; a small capability set; the usual masked and
//! read-only kernel paths; sandbox-init bound read-only and run as pid 1.

mod bundle;
mod desktop;
mod idmap;
mod imported;
mod passwd;
mod seccomp;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use thiserror::Error;

pub use bundle::{Bundle, BundleError, HOST_ROOT_DIRS};
pub use desktop::{resolve as resolve_desktop, Bind, Desktop, DesktopError, SessionEnv};
pub use idmap::{
    container_map, intermediate_root_map, keep_id_map, subordinate_range, IdRange, SUBORDINATE_SPAN,
};
pub use imported::RootfsRecord;
pub use passwd::{resolve, Account};
pub use seccomp::filter as seccomp_filter;

use crate::cgroups::Enforcement;
use crate::profile::{Nested, Profile, RootfsSource};

/// Where sandbox-init appears inside every sandbox. `/dev` is a tmpfs runc creates, so the
/// bind leaves no trace in the user's root file system.
pub const INIT_PATH: &str = "/dev/.sandbox-init";

/// Entries of the host's `/etc` a host-rootfs sandbox sees (read-only) when they exist:
/// what the dynamic loader, name lookups, TLS and Debian's alternatives need.
pub const HOST_ETC: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "group",
    "host.conf",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "locale.gen",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "profile",
    "profile.d",
    "protocols",
    "services",
    "shells",
    "ssl",
    "terminfo",
    "timezone",
    "xdg",
];

/// Capabilities kept inside: enough for root to install packages and manage its own files,
/// nothing that reaches the kernel at large (no SYS_ADMIN, NET_ADMIN, NET_RAW, MKNOD).
pub const CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::Setfcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::AuditWrite,
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Error)]
pub enum SpecError {
    #[error("process.user: {0}")]
    User(String),
    #[error("process.user: uid {uid} inside is mapped to you (\"keep-id\"), which needs {needs}")]
    KeepId { uid: u32, needs: String },
    #[error(transparent)]
    Desktop(#[from] DesktopError),
    #[error("rootfs.path: {} was imported with {recorded}, but this profile runs {wanted}; import it again with `sandboxctl rootfs import NAME SOURCE{hint}`", path.display())]
    RootfsIds {
        path: PathBuf,
        recorded: String,
        wanted: String,
        hint: String,
    },
    #[error("building the OCI spec")]
    Build(#[source] oci_spec::OciSpecError),
}

impl From<oci_spec::OciSpecError> for SpecError {
    fn from(e: oci_spec::OciSpecError) -> Self {
        Self::Build(e)
    }
}

/// Facts about the host the spec depends on, gathered once by the caller.
#[derive(Debug, Clone)]
pub struct HostContext {
    pub uid: u32,
    pub gid: u32,
    pub subuid: Option<(u32, u32)>,
    pub subgid: Option<(u32, u32)>,
    /// The static sandbox-init binary on the host.
    pub init: PathBuf,
    /// The host's `/etc` (a parameter so tests can use a fixture).
    pub etc: PathBuf,
    /// The user's home, where session cookies live.
    pub home: PathBuf,
    /// runc runs inside the daemon's intermediate user namespace (0 → you, 1.. → your
    /// subordinate ids), which is what makes "keep-id" possible.
    pub intermediate: bool,
    /// RLIMIT_NOFILE (soft, hard) a sandbox gets unless its profile sets one: the
    /// session's, from before the daemon raised its own soft limit for the proxy's sockets.
    pub nofile: (u64, u64),
    /// How `limits.memory` and `limits.pids` are enforced here.
    pub limits: Enforcement,
}

impl HostContext {
    /// The current user's ids and subordinate ranges.
    pub fn current(init: PathBuf) -> Self {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let name = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        Self {
            uid,
            gid,
            subuid: subordinate_range(Path::new("/etc/subuid"), &name, uid),
            subgid: subordinate_range(Path::new("/etc/subgid"), &name, uid),
            init,
            etc: PathBuf::from("/etc"),
            home: crate::paths::home(),
            intermediate: false,
            nofile: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .unwrap_or((1024, 4096)),
            limits: Enforcement::detect(uid),
        }
    }
}

fn id_maps(map: &[IdRange]) -> Result<Vec<LinuxIdMapping>, SpecError> {
    map.iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.inside)
                .host_id(r.host)
                .size(r.size)
                .build()
                .map_err(SpecError::from)
        })
        .collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// A bind of a host path and every mount below it, with its flags applied at every depth:
/// `ro`, `nosuid` and `nodev` act on the top mount only, so their recursive forms (runc ≥
/// 1.1: mount_setattr with AT_RECURSIVE) carry them to every submount. Without them a
/// read-only bind of a home with a FUSE mount below, or of `/`, is writable underneath.
fn bind(source: &Path, dest: &str, readonly: bool) -> Result<Mount, SpecError> {
    bind_with(source, dest, readonly, true)
}

/// [`bind`], keeping device nodes usable (`nodev` left out) for device binds.
fn bind_with(source: &Path, dest: &str, readonly: bool, nodev: bool) -> Result<Mount, SpecError> {
    let mut opts = vec!["rbind", "nosuid", "rnosuid"];
    if nodev {
        opts.extend(["nodev", "rnodev"]);
    }
    if readonly {
        opts.extend(["ro", "rro"]);
    }
    mount(dest, "bind", &source.to_string_lossy(), &opts)
}

/// The kernel file systems every sandbox has (the runc rootless defaults, with a sysfs of
/// the sandbox's own network namespace rather than a bind of the host's).
fn base_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

/// Mounts that turn an empty root into a view of the host's `/usr` (DESIGN §4
/// `rootfs.host`): `/usr` and parts of `/etc` read-only, private `/tmp`, `/home`, `/run`,
/// `/var`, `/root`. The merged-/usr symlinks are created in the bundle's root by [`Bundle`].
fn host_root_mounts(ctx: &HostContext) -> Result<Vec<Mount>, SpecError> {
    let mut out = vec![bind(Path::new("/usr"), "/usr", true)?];
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let p = Path::new(dir);
        // A host without merged /usr has real directories here: bind them too.
        if p.is_dir() && !p.is_symlink() {
            out.push(bind(p, dir, true)?);
        }
    }
    out.push(mount(
        "/etc",
        "tmpfs",
        "tmpfs",
        &["nosuid", "nodev", "mode=755", "size=16m"],
    )?);
    for entry in HOST_ETC {
        let src = ctx.etc.join(entry);
        if src.exists() {
            out.push(bind(&src, &format!("/etc/{entry}"), true)?);
        }
    }
    for (dir, mode) in [
        ("/tmp", "1777"),
        ("/var/tmp", "1777"),
        ("/home", "755"),
        ("/run", "755"),
        ("/root", "700"),
    ] {
        let opts = ["nosuid", "nodev", &format!("mode={mode}")];
        let parent_var = dir == "/var/tmp";
        if parent_var {
            out.push(mount(
                "/var",
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=755"],
            )?);
        }
        out.push(mount(dir, "tmpfs", "tmpfs", &opts)?);
    }
    Ok(out)
}

/// Builds the spec for `profile`. `root` is the directory runc uses as the root: the
/// profile's tree, or the bundle's empty `rootfs/` for `rootfs.host`.
/// The `resolv.conf` and `hosts` of a sandbox whose DNS the daemon answers: the
/// daemon's resolver addresses inside, and `host.sandbox.internal`.
pub fn resolver_files(hostname: &str) -> (String, String) {
    use crate::proxy::dns;
    let resolv = format!(
        "# Generated by sandboxd: the daemon answers this sandbox's DNS.\nnameserver {}\nnameserver {}\noptions edns0 trust-ad\n",
        dns::RESOLVER_V4,
        dns::RESOLVER_V6
    );
    let hosts = format!(
        "# Generated by sandboxd.\n127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 {hostname}\n{} {host}\n{} {host}\n",
        dns::HOST_V4,
        dns::HOST_V6,
        host = dns::HOST_NAME
    );
    (resolv, hosts)
}

/// `home` when the root file system has it, else `/`: a process must not fail to start
/// because its account's home was never created. Host roots get a private tmpfs `/root`
/// and `/home` whose subfolders do not exist yet.
pub fn home_or_root(profile: &Profile, home: &str) -> String {
    let exists = match &profile.rootfs.source {
        RootfsSource::Path(p) => p.join(home.trim_start_matches('/')).is_dir(),
        RootfsSource::Host => home == "/root",
    };
    if exists {
        home.to_string()
    } else {
        "/".into()
    }
}

/// The container's uid and gid maps. Root inside is always you; a non-root `process.user`
/// is you too ("keep-id"), which needs runc in the intermediate namespace.
fn id_maps_for(
    ctx: &HostContext,
    account: &Account,
) -> Result<(Vec<IdRange>, Vec<IdRange>), SpecError> {
    if !ctx.intermediate {
        if account.uid != 0 {
            return Err(SpecError::KeepId {
                uid: account.uid,
                needs: "subordinate ids for your user in /etc/subuid and /etc/subgid".into(),
            });
        }
        return Ok((
            container_map(ctx.uid, ctx.subuid),
            container_map(ctx.gid, ctx.subgid),
        ));
    }
    let span = |r: Option<(u32, u32)>| r.map_or(0, |(_, count)| count.min(SUBORDINATE_SPAN));
    let (uspan, gspan) = (span(ctx.subuid), span(ctx.subgid));
    let map = |id: u32, span: u32, what: &str| -> Result<Vec<IdRange>, SpecError> {
        if id == 0 {
            return Ok(intermediate_root_map(span));
        }
        keep_id_map(id, span).ok_or_else(|| SpecError::KeepId {
            uid: account.uid,
            needs: format!("{what} {id} to be within your {span} subordinate ids"),
        })
    };
    Ok((
        map(account.uid, uspan, "uid")?,
        map(account.gid, gspan, "gid")?,
    ))
}

/// What a sandbox's `[limits]` become, by [`Enforcement`].
struct ResourceLimits {
    rlimits: Vec<PosixRlimit>,
    /// Removed from the sandbox's capability sets.
    drop_caps: Vec<Capability>,
    cgroups_path: Option<String>,
    resources: Option<LinuxResources>,
}

fn rlimit(typ: PosixRlimitType, (soft, hard): (u64, u64)) -> Result<PosixRlimit, SpecError> {
    Ok(PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()?)
}

fn resource_limits(profile: &Profile, ctx: &HostContext) -> Result<ResourceLimits, SpecError> {
    let l = &profile.limits;
    let nofile = l.nofile.map_or(ctx.nofile, |n| (n, n));
    let mut out = ResourceLimits {
        rlimits: vec![rlimit(PosixRlimitType::RlimitNofile, nofile)?],
        drop_caps: Vec::new(),
        cgroups_path: None,
        resources: None,
    };
    match &ctx.limits {
        _ if l.pids.is_none() && l.memory.is_none() => {}
        Enforcement::SystemdScopes => {
            out.cgroups_path = Some(crate::cgroups::scope_path(&profile.name));
            let mut resources = LinuxResourcesBuilder::default().devices(vec![]);
            if let Some(n) = l.pids {
                resources = resources.pids(LinuxPidsBuilder::default().limit(n as i64).build()?);
            }
            if let Some(bytes) = l.memory {
                // runc's swap is memory plus swap: equal values leave no swap to escape to.
                let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                let memory = LinuxMemoryBuilder::default()
                    .limit(bytes)
                    .swap(bytes)
                    .build()?;
                resources = resources.memory(memory);
            }
            if l.pids.is_some() || l.memory.is_some() {
                out.resources = Some(resources.build()?);
            }
        }
        Enforcement::Rlimits { .. } => {
            if let Some(n) = l.pids {
                out.rlimits
                    .push(rlimit(PosixRlimitType::RlimitNproc, (n as u64, n as u64))?);
                out.drop_caps = vec![Capability::Setuid, Capability::Setgid];
            }
            if let Some(bytes) = l.memory {
                out.rlimits
                    .push(rlimit(PosixRlimitType::RlimitData, (bytes, bytes))?);
            }
        }
    }
    Ok(out)
}

/// `session` is the user session's current environment, for the desktop options.
///
/// `resolver` is the directory holding the generated `resolv.conf` and `hosts` of a
/// sandbox whose DNS the daemon answers ([`resolver_files`]); they are bound read-only
/// over the root file system's.
pub fn build(
    profile: &Profile,
    ctx: &HostContext,
    root: &Path,
    session: &SessionEnv,
    resolver: Option<&Path>,
) -> Result<Spec, SpecError> {
    let passwd = match &profile.rootfs.source {
        RootfsSource::Path(p) => p.join("etc/passwd"),
        RootfsSource::Host => ctx.etc.join("passwd"),
    };
    let account = match &profile.process.user {
        None => Account::root(),
        Some(u) => resolve(&passwd, u).map_err(SpecError::User)?,
    };

    let limits = resource_limits(profile, ctx)?;
    // pid 1 runs as root inside, so that it can start processes as any user over its exec
    // channel, and runs the command as `process.user` itself. Without CAP_SETUID (the
    // rlimit fallback of limits.pids drops it) pid 1 runs as that user, as runc would.
    let can_switch = !limits.drop_caps.contains(&Capability::Setuid);
    let init_as_root = can_switch && (account.uid != 0 || account.gid != 0);
    let mut args = vec![
        INIT_PATH.to_string(),
        crate::init::channel::CHANNEL_ARG.to_string(),
    ];
    if init_as_root {
        args.extend([
            crate::init::USER_ARG.to_string(),
            format!("{}:{}", account.uid, account.gid),
        ]);
    }
    if let Some(cmd) = &profile.process.command {
        args.push("--".into());
        args.extend(cmd.iter().cloned());
    }
    let (init_uid, init_gid) = if init_as_root {
        (0, 0)
    } else {
        (account.uid, account.gid)
    };
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("HOME={}", account.home),
        "container=sandboxd".into(),
        format!("SANDBOX_NAME={}", profile.name),
    ];
    let desktop = desktop::resolve(profile, account.uid, session, &ctx.home)?;
    for w in &desktop.warnings {
        tracing::warn!(SANDBOX = profile.name.as_str(), "{w}");
    }
    env.extend(desktop.env.iter().cloned());
    env.extend(profile.process.env.iter().map(|(k, v)| format!("{k}={v}")));
    let caps: std::collections::HashSet<Capability> = CAPABILITIES
        .iter()
        .copied()
        .filter(|c| !limits.drop_caps.contains(c))
        .collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(init_uid).gid(init_gid).build()?)
        .args(args)
        .env(env)
        .cwd(
            profile
                .process
                .cwd
                .clone()
                .unwrap_or_else(|| home_or_root(profile, &account.home)),
        )
        .capabilities(capabilities)
        .rlimits(limits.rlimits)
        .no_new_privileges(true)
        .build()?;

    let mut mounts = base_mounts()?;
    let readonly_root = match &profile.rootfs.source {
        RootfsSource::Host => {
            mounts.extend(host_root_mounts(ctx)?);
            true
        }
        RootfsSource::Path(_) => profile.rootfs.readonly,
    };
    if let Some(dir) = resolver {
        mounts.retain(|m| {
            let d = m.destination().to_string_lossy();
            d != "/etc/hosts" && d != "/etc/resolv.conf"
        });
        mounts.push(bind(&dir.join("resolv.conf"), "/etc/resolv.conf", true)?);
        mounts.push(bind(&dir.join("hosts"), "/etc/hosts", true)?);
    }
    if let Some(rt) = &desktop.runtime_dir {
        let owner = format!("uid={},gid={}", account.uid, account.gid);
        mounts.push(mount(
            rt,
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=0700", &owner, "size=16m"],
        )?);
    }
    for b in &desktop.binds {
        mounts.push(bind_with(&b.source, &b.destination, b.readonly, !b.device)?);
    }
    for m in &profile.mounts {
        mounts.push(bind(&m.source, &m.destination, m.readonly)?);
    }
    mounts.push(mount(
        INIT_PATH,
        "bind",
        &ctx.init.to_string_lossy(),
        &["bind", "ro", "nosuid", "nodev"],
    )?);

    let (uid_map, gid_map) = id_maps_for(ctx, &account)?;
    if let RootfsSource::Path(path) = &profile.rootfs.source {
        if let Some(record) = RootfsRecord::of(path) {
            let want = (account.uid != 0).then_some(account.uid);
            if record.keep_id != want {
                let (wanted, hint) = match want {
                    None => ("as root".to_string(), String::new()),
                    Some(uid) => (format!("as uid {uid}"), format!(" --user {uid}")),
                };
                return Err(SpecError::RootfsIds {
                    path: path.clone(),
                    recorded: record.describe(),
                    wanted,
                    hint,
                });
            }
        }
    }
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<Vec<_>, _>>()?;

    let mut linux = LinuxBuilder::default();
    if let Some(path) = limits.cgroups_path {
        linux = linux.cgroups_path(PathBuf::from(path));
    }
    if let Some(resources) = limits.resources {
        linux = linux.resources(resources);
    }
    // Fully nested sandboxes mount a /proc of their own, which the kernel refuses while
    // parts of this one are covered ("mount too revealing"); their filter still closes
    // what the masks protect most (keys, kcore need capabilities outside).
    let (masked, readonly) = match profile.security.nested {
        Nested::Full => (&[][..], &[][..]),
        Nested::Off | Nested::Namespaces => (MASKED_PATHS, READONLY_PATHS),
    };
    let linux = linux
        .seccomp(seccomp::filter(&profile.security)?)
        .namespaces(namespaces)
        .uid_mappings(id_maps(&uid_map)?)
        .gid_mappings(id_maps(&gid_map)?)
        .masked_paths(masked.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(readonly.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .hostname(profile.hostname.clone())
        .root(
            RootBuilder::default()
                .path(root)
                .readonly(readonly_root)
                .build()?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Mount as ProfileMount, Profile};

    fn ctx(subids: bool) -> HostContext {
        let r = subids.then_some((100000, 65536));
        HostContext {
            uid: 1000,
            gid: 1000,
            subuid: r,
            subgid: r,
            init: "/opt/sandbox-init".into(),
            etc: "/etc".into(),
            home: "/".into(),
            intermediate: false,
            nofile: (1024, 4096),
            limits: Enforcement::Rlimits { why: "test".into() },
        }
    }

    #[test]
    fn namespaces_maps_and_init() {
        let mut p = Profile::builtin_default();
        p.process.command = Some(vec!["/usr/bin/env".into()]);
        p.mounts.push(ProfileMount {
            source: "/srv/work".into(),
            destination: "/work".into(),
            readonly: false,
        });
        p.limits.nofile = Some(512);
        let spec = build(
            &p,
            &ctx(true),
            Path::new("/b/rootfs"),
            &SessionEnv::new(),
            Some(Path::new("/b")),
        )
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let ns: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "mount", "uts", "ipc", "cgroup", "user", "network"] {
            assert!(ns.contains(&want), "{want} missing from {ns:?}");
        }
        assert_eq!(
            json["linux"]["uidMappings"][0],
            serde_json::json!({"containerID": 0, "hostID": 1000, "size": 1})
        );
        assert_eq!(
            json["linux"]["uidMappings"][1],
            serde_json::json!({"containerID": 1, "hostID": 100000, "size": 65536})
        );
        assert_eq!(
            json["process"]["args"],
            serde_json::json!([INIT_PATH, "--channel", "--", "/usr/bin/env"])
        );
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["root"]["readonly"], true);
        let mounts = json["mounts"].as_array().unwrap();
        let find = |d: &str| {
            mounts
                .iter()
                .find(|m| m["destination"] == d)
                .unwrap_or_else(|| panic!("no mount {d}"))
        };
        let opts = |d: &str| find(d)["options"].as_array().unwrap().clone();
        // Read-only, nosuid and nodev at every depth of a bind, not at its top only.
        for want in ["ro", "rro", "nosuid", "rnosuid", "nodev", "rnodev"] {
            assert!(opts("/usr").contains(&want.into()), "/usr lacks {want}");
        }
        for want in ["rnosuid", "rnodev"] {
            assert!(opts("/work").contains(&want.into()), "/work lacks {want}");
        }
        assert!(!opts("/work").contains(&"ro".into()));
        assert!(!opts("/work").contains(&"rro".into()));
        assert_eq!(find(INIT_PATH)["source"], "/opt/sandbox-init");
        // The generated resolver files replace the host's, once each.
        assert_eq!(find("/etc/hosts")["source"], "/b/hosts");
        assert_eq!(find("/etc/resolv.conf")["source"], "/b/resolv.conf");
        assert_eq!(
            mounts
                .iter()
                .filter(|m| m["destination"] == "/etc/hosts")
                .count(),
            1
        );
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(!caps.contains(&"CAP_SYS_ADMIN".into()));
        assert_eq!(json["process"]["rlimits"][0]["hard"], 512);
    }

    #[test]
    fn single_map_without_subordinate_ids() {
        let spec = build(
            &Profile::builtin_default(),
            &ctx(false),
            Path::new("/r"),
            &SessionEnv::new(),
            None,
        )
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["linux"]["gidMappings"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn limits_become_a_scope_or_rlimits() {
        let mut p = Profile::builtin_default();
        p.name = "capped".into();
        p.limits.pids = Some(64);
        p.limits.memory = Some(256 << 20);
        let json_for = |ctx: &HostContext| {
            let spec = build(&p, ctx, Path::new("/r"), &SessionEnv::new(), None).unwrap();
            serde_json::to_value(&spec).unwrap()
        };
        let caps = |json: &serde_json::Value| json["process"]["capabilities"]["bounding"].clone();

        let mut scoped = ctx(true);
        scoped.limits = Enforcement::SystemdScopes;
        let json = json_for(&scoped);
        assert_eq!(json["linux"]["cgroupsPath"], "app.slice:sandboxd:capped");
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 256 << 20);
        assert_eq!(json["linux"]["resources"]["memory"]["swap"], 256 << 20);
        assert_eq!(json["process"]["rlimits"].as_array().unwrap().len(), 1);
        assert!(caps(&json)
            .as_array()
            .unwrap()
            .contains(&"CAP_SETUID".into()));
        // Without limits a sandbox stays out of scopes and keeps every capability.
        let free = build(
            &Profile::builtin_default(),
            &scoped,
            Path::new("/r"),
            &SessionEnv::new(),
            None,
        )
        .unwrap();
        let free = serde_json::to_value(&free).unwrap();
        assert!(free["linux"].get("cgroupsPath").is_none());
        assert!(caps(&free)
            .as_array()
            .unwrap()
            .contains(&"CAP_SETUID".into()));
        let defaults = Profile::builtin_default().limits;
        assert!(!crate::cgroups::in_scope(&scoped.limits, &defaults));
        assert!(crate::cgroups::in_scope(&scoped.limits, &p.limits));
        assert!(!crate::cgroups::in_scope(&ctx(true).limits, &p.limits));

        let json = json_for(&ctx(true));
        assert!(json["linux"].get("cgroupsPath").is_none());
        assert!(json["linux"]["resources"].get("pids").is_none());
        assert!(json["linux"]["resources"].get("memory").is_none());
        let rlimits = json["process"]["rlimits"].as_array().unwrap();
        let find = |t: &str| {
            rlimits
                .iter()
                .find(|r| r["type"] == t)
                .unwrap_or_else(|| panic!("no {t}"))
        };
        assert_eq!(find("RLIMIT_NPROC")["hard"], 64);
        assert_eq!(find("RLIMIT_NPROC")["soft"], 64);
        assert_eq!(find("RLIMIT_DATA")["hard"], 256 << 20);
        // Without setuid/setgid, root inside cannot move processes to ids the count misses.
        let caps = caps(&json);
        assert!(!caps.as_array().unwrap().contains(&"CAP_SETUID".into()));
        assert!(!caps.as_array().unwrap().contains(&"CAP_SETGID".into()));
        assert!(caps.as_array().unwrap().contains(&"CAP_CHOWN".into()));
    }
}
