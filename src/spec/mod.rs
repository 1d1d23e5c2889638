//! Profile → OCI runtime spec (`config.json`), built with the `oci-spec` types.
//!
//! What every sandbox gets: its own pid, mount, uts, ipc, cgroup, user and network
//! namespaces; container root mapped to the calling user and 1..65536 to the user's
//! subordinate ids; `noNewPrivileges`; a small capability set; the usual masked and
//! read-only kernel paths; sandbox-init bound read-only and run as pid 1.

mod bundle;
mod desktop;
mod home;
mod idmap;
mod imported;
mod mounts;
mod passwd;
mod process;
mod rootpath;
mod seccomp;
mod xauth;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResources, Mount, RootBuilder, Spec, SpecBuilder,
};
use thiserror::Error;

pub use bundle::{Bundle, BundleError, HOST_ROOT_DIRS};
pub use desktop::{resolve as resolve_desktop, Bind, Desktop, DesktopError, SessionEnv};
pub use home::persistent_dir as home_dir;
pub use idmap::{
    container_map, intermediate_root_map, keep_id_map, subordinate_range, IdRange, SUBORDINATE_SPAN,
};
pub use imported::{ImageRecord, RootfsRecord};
use mounts::{base_mounts, bind, bind_with, host_root_mounts, mount};
pub use passwd::{resolve, Account};
use process::{process, resource_limits};
pub use seccomp::filter as seccomp_filter;
pub use xauth::write_for_sandbox as write_x11_cookie;

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
    #[error("rootfs.path: {} was imported with {recorded}, but this profile runs {wanted}; {fits}, or import the archive again under another name: `sandboxctl rootfs import NEWNAME SOURCE{hint}`", path.display())]
    RootfsIds {
        path: PathBuf,
        recorded: String,
        wanted: String,
        /// The `process.user` the root fits, first: it needs no new import.
        fits: String,
        hint: String,
    },
    /// `process.command` names a program the root file system does not have.
    #[error("process.command: {0}")]
    Command(String),
    /// A bound folder or file is missing on the host.
    #[error("mount[{index}].source: {} does not exist on this machine (create it, or remove the mount)", path.display())]
    MountSource { index: usize, path: PathBuf },
    /// `process.cwd` is not a directory in the root file system or a mount.
    #[error("process.cwd: {0}")]
    Cwd(String),
    /// The profile's `home` cannot be made for this user.
    #[error("home: {0}")]
    Home(String),
    /// The persistent home could not be created on the host.
    #[error("home: creating {}", path.display())]
    HomeDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
    /// Where persistent sandbox homes live: `$XDG_DATA_HOME/sandboxd/homes`.
    pub homes: PathBuf,
    /// runc runs inside the daemon's intermediate user namespace (0 → you, 1.. → your
    /// subordinate ids), which is what makes "keep-id" possible.
    pub intermediate: bool,
    /// RLIMIT_NOFILE (soft, hard) a sandbox gets unless its profile sets one: the
    /// session's, from before the daemon raised its own soft limit for the proxy's sockets.
    pub nofile: (u64, u64),
    /// How `limits.memory` and `limits.pids` are enforced here.
    pub limits: Enforcement,
    /// `$XDG_RUNTIME_DIR/sandboxd/dbus`: each `[dbus]` sandbox's proxy sockets, in a
    /// directory of its name.
    pub buses: PathBuf,
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
            homes: crate::paths::data_home().join("sandboxd/homes"),
            intermediate: false,
            nofile: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .unwrap_or((1024, 4096)),
            limits: Enforcement::detect(uid),
            buses: crate::paths::RuntimePaths::from_env()
                .map(|p| p.buses())
                .unwrap_or_default(),
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

/// The working directory of a process of `account` that names none: its home when the
/// sandbox has it (mounted by `home`, or in the root file system), else `/`, so that a
/// process never fails to start because its account's home was never created. Host roots
/// have a private tmpfs `/root` and `/home`.
pub fn default_cwd(profile: &Profile, ctx: &HostContext, account: &Account) -> String {
    // The home the sandbox was started with, when this is the account it was made for.
    let plan = profile_account(profile, ctx)
        .ok()
        .filter(|main| main.home == account.home)
        .and_then(|main| home::plan(profile, ctx, &main).ok())
        .unwrap_or(home::Plan::Own);
    home_or_root(profile, account, &plan)
}

fn home_or_root(profile: &Profile, account: &Account, plan: &home::Plan) -> String {
    let exists = *plan != home::Plan::Own
        || match &profile.rootfs.source {
            RootfsSource::Path(p) => p.join(account.home.trim_start_matches('/')).is_dir(),
            RootfsSource::Host => account.home == "/root",
        };
    if exists {
        account.home.clone()
    } else {
        "/".into()
    }
}

/// Who the profile's main command runs as, from the root file system's `/etc/passwd`.
fn profile_account(profile: &Profile, ctx: &HostContext) -> Result<Account, SpecError> {
    let passwd = match &profile.rootfs.source {
        RootfsSource::Path(p) => p.join("etc/passwd"),
        RootfsSource::Host => ctx.etc.join("passwd"),
    };
    match &profile.process.user {
        None => Ok(Account::root()),
        Some(u) => resolve(&passwd, u).map_err(SpecError::User),
    }
}

/// Makes what the profile's home needs on the host before a start: the persistent home's
/// directory, the first time.
pub fn prepare_home(profile: &Profile, ctx: &HostContext) -> Result<(), SpecError> {
    let account = profile_account(profile, ctx)?;
    home::prepare(&home::plan(profile, ctx, &account)?)
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

/// Every mount of the sandbox, and whether its root is read-only.
fn sandbox_mounts(
    profile: &Profile,
    ctx: &HostContext,
    account: &Account,
    home: &home::Plan,
    desktop: &Desktop,
    resolver: Option<&Path>,
) -> Result<(Vec<Mount>, bool), SpecError> {
    let mut mounts = base_mounts()?;
    let readonly_root = match &profile.rootfs.source {
        RootfsSource::Host => {
            mounts.extend(host_root_mounts(ctx)?);
            true
        }
        RootfsSource::Path(_) => profile.rootfs.readonly,
    };
    // After the host root's /home and /root, before the profile's binds, which may be
    // folders inside the home.
    mounts.extend(home::mounts(home, account)?);
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
    for (index, m) in profile.mounts.iter().enumerate() {
        if std::fs::symlink_metadata(&m.source).is_err() {
            return Err(SpecError::MountSource {
                index,
                path: m.source.clone(),
            });
        }
        mounts.push(bind(&m.source, &m.destination, m.readonly)?);
    }
    mounts.push(mount(
        INIT_PATH,
        "bind",
        &ctx.init.to_string_lossy(),
        &["bind", "ro", "nosuid", "nodev"],
    )?);
    Ok((mounts, readonly_root))
}

/// An imported root whose owners were shifted for another mapping than this profile's
/// would show every owner wrong inside: refused, saying how to fix it.
fn check_imported_ids(profile: &Profile, account: &Account) -> Result<(), SpecError> {
    let RootfsSource::Path(path) = &profile.rootfs.source else {
        return Ok(());
    };
    let Some(record) = RootfsRecord::of(path) else {
        return Ok(());
    };
    let want = (account.uid != 0).then_some(account.uid);
    if record.keep_id == want {
        return Ok(());
    }
    let (wanted, hint) = match want {
        None => ("as root".to_string(), String::new()),
        Some(uid) => (format!("as uid {uid}"), format!(" --user {uid}")),
    };
    let fits = match record.keep_id {
        None => {
            "remove process.user (or set it to \"root\"): the root was imported for root".into()
        }
        Some(uid) => {
            let text = std::fs::read_to_string(path.join("etc/passwd")).unwrap_or_default();
            let name = text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            });
            match name {
                Some(n) => {
                    format!("set process.user = \"{n}\" (uid {uid}, the user it was imported for)")
                }
                None => format!("set process.user = {uid} (the uid it was imported for)"),
            }
        }
    };
    Err(SpecError::RootfsIds {
        path: path.clone(),
        recorded: record.describe(),
        wanted,
        fits,
        hint,
    })
}

/// The spec's `linux`: namespaces, id maps, the seccomp filter, masks, cgroup limits.
fn linux(
    profile: &Profile,
    ctx: &HostContext,
    account: &Account,
    cgroups_path: Option<String>,
    resources: Option<LinuxResources>,
) -> Result<oci_spec::runtime::Linux, SpecError> {
    let (uid_map, gid_map) = id_maps_for(ctx, account)?;
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
    if let Some(path) = cgroups_path {
        linux = linux.cgroups_path(PathBuf::from(path));
    }
    if let Some(resources) = resources {
        linux = linux.resources(resources);
    }
    // Fully nested sandboxes mount a /proc of their own, which the kernel refuses while
    // parts of this one are covered ("mount too revealing"); their filter still closes
    // what the masks protect most (keys, kcore need capabilities outside).
    let (masked, readonly) = match profile.security.nested {
        Nested::Full => (&[][..], &[][..]),
        Nested::Off | Nested::Namespaces => (MASKED_PATHS, READONLY_PATHS),
    };
    Ok(linux
        .seccomp(seccomp::filter(&profile.security)?)
        .namespaces(namespaces)
        .uid_mappings(id_maps(&uid_map)?)
        .gid_mappings(id_maps(&gid_map)?)
        .masked_paths(masked.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(readonly.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Builds the spec for `profile`. `root` is the directory runc uses as the root: the
/// profile's tree, or the bundle's empty `rootfs/` for `rootfs.host`. `session` is the
/// user session's current environment, for the desktop options.
///
/// `resolver` is the directory holding the generated `resolv.conf` and `hosts` of a
/// sandbox whose DNS the daemon answers ([`resolver_files`]); they are bound read-only
/// over the root file system's.
///
/// `usr_layer` is the copy-on-write view of the host's `/usr` of a host root with
/// `rootfs.overlay`, bound writable in its place.
pub fn build(
    profile: &Profile,
    ctx: &HostContext,
    root: &Path,
    session: &SessionEnv,
    resolver: Option<&Path>,
    usr_layer: Option<&Path>,
) -> Result<Spec, SpecError> {
    let account = profile_account(profile, ctx)?;
    let home = home::plan(profile, ctx, &account)?;
    let desktop = desktop::resolve(profile, account.uid, session, ctx)?;
    for w in &desktop.warnings {
        tracing::warn!(SANDBOX = profile.name.as_str(), "{w}");
    }
    let mut limits = resource_limits(profile, ctx)?;
    let (cgroups_path, resources) = (limits.cgroups_path.take(), limits.resources.take());
    let process = process(profile, &account, &home, &desktop, limits)?;
    let (mut mounts, readonly_root) =
        sandbox_mounts(profile, ctx, &account, &home, &desktop, resolver)?;
    if let Some(usr) = usr_layer {
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/usr"))
        {
            *m = bind(usr, "/usr", false)?;
        }
    }
    let linux = linux(profile, ctx, &account, cgroups_path, resources)?;
    check_imported_ids(profile, &account)?;
    check_paths(profile, &mounts)?;
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

/// What `start` would refuse in `profile`, checked without starting anything (`sandboxctl
/// check`): the same [`build`], except that what depends on the moment of the start (the
/// Wayland, X11, PulseAudio and PipeWire sockets of the session) only warns. Returns
/// the warnings.
pub fn preflight(
    profile: &Profile,
    ctx: &HostContext,
    session: &SessionEnv,
) -> Result<Vec<String>, SpecError> {
    let mut local = profile.clone();
    local.gui = Default::default();
    local.audio = Default::default();
    let root = match &profile.rootfs.source {
        RootfsSource::Path(p) => p.clone(),
        RootfsSource::Host => PathBuf::from("/"),
    };
    build(&local, ctx, &root, session, None, None)?;
    let uid = profile_account(profile, ctx)?.uid;
    Ok(match desktop::resolve(profile, uid, session, ctx) {
        Ok(d) => d.warnings,
        Err(e) => vec![format!("{e} (needed when it starts)")],
    })
}

/// For a root file system on disk: the command, when absolute, and the working directory
/// must exist in it, unless a mount provides them (a bound folder, the home).
fn check_paths(profile: &Profile, mounts: &[Mount]) -> Result<(), SpecError> {
    let RootfsSource::Path(root) = &profile.rootfs.source else {
        return Ok(());
    };
    let mounted = |path: &str| {
        mounts.iter().any(|m| {
            let dest = m.destination().to_string_lossy();
            dest != "/" && Path::new(path).starts_with(dest.as_ref())
        })
    };
    if let Some(program) = profile.process.command.as_ref().and_then(|c| c.first()) {
        if program.starts_with('/') && !mounted(program) {
            rootpath::check_program(root, program).map_err(SpecError::Command)?;
        }
    }
    if let Some(cwd) = &profile.process.cwd {
        if !mounted(cwd) && !rootpath::is_dir(root, cwd) {
            return Err(SpecError::Cwd(format!(
                "{cwd:?} is not a directory in the root file system {} (create it there, or bind a folder at it)",
                root.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
