//! pid 1 of the spec: its process (user, arguments, environment, capabilities) and what
//! the profile's `[limits]` become (rlimits, or a scope's cgroup resources).

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    UserBuilder,
};

use super::{
    home, home_or_root, Account, Desktop, HostContext, SpecError, CAPABILITIES, INIT_PATH,
};
use crate::cgroups::Enforcement;
use crate::profile::Profile;

/// What a sandbox's `[limits]` become, by [`Enforcement`].
pub(super) struct ResourceLimits {
    pub(super) rlimits: Vec<PosixRlimit>,
    /// Removed from the sandbox's capability sets.
    pub(super) drop_caps: Vec<Capability>,
    pub(super) cgroups_path: Option<String>,
    pub(super) resources: Option<LinuxResources>,
}

fn rlimit(typ: PosixRlimitType, (soft, hard): (u64, u64)) -> Result<PosixRlimit, SpecError> {
    Ok(PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()?)
}

pub(super) fn resource_limits(
    profile: &Profile,
    ctx: &HostContext,
) -> Result<ResourceLimits, SpecError> {
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

/// Who pid 1 runs as, and how: the profile's account, the init arguments, its uid/gid.
struct Init {
    args: Vec<String>,
    uid: u32,
    gid: u32,
}

/// pid 1 runs as root inside, so that it can start processes as any user over its exec
/// channel, and runs the command as `process.user` itself. Without CAP_SETUID (the rlimit
/// fallback of limits.pids drops it) pid 1 runs as that user, as runc would.
fn init(profile: &Profile, account: &Account, limits: &ResourceLimits) -> Init {
    let can_switch = !limits.drop_caps.contains(&Capability::Setuid);
    let as_root = can_switch && (account.uid != 0 || account.gid != 0);
    let mut args = vec![
        INIT_PATH.to_string(),
        crate::init::channel::CHANNEL_ARG.to_string(),
    ];
    if as_root {
        args.extend([
            crate::init::USER_ARG.to_string(),
            format!("{}:{}", account.uid, account.gid),
        ]);
    }
    if let Some(cmd) = &profile.process.command {
        args.push("--".into());
        args.extend(cmd.iter().cloned());
    }
    let (uid, gid) = if as_root {
        (0, 0)
    } else {
        (account.uid, account.gid)
    };
    Init { args, uid, gid }
}

/// The spec's `process`: pid 1 with its environment, capabilities and rlimits.
pub(super) fn process(
    profile: &Profile,
    account: &Account,
    home: &home::Plan,
    desktop: &Desktop,
    limits: ResourceLimits,
) -> Result<oci_spec::runtime::Process, SpecError> {
    let init = init(profile, account, &limits);
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("HOME={}", account.home),
        "container=sandboxd".into(),
        format!("SANDBOX_NAME={}", profile.name),
    ];
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
    Ok(ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(init.uid).gid(init.gid).build()?)
        .args(init.args)
        .env(env)
        .cwd(
            profile
                .process
                .cwd
                .clone()
                .unwrap_or_else(|| home_or_root(profile, account, home)),
        )
        .capabilities(capabilities)
        .rlimits(limits.rlimits)
        .no_new_privileges(true)
        .build()?)
}
