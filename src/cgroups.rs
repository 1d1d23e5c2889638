//! How `limits.memory` and `limits.pids` are enforced on this machine.
//!
//! A sandbox as a whole is bounded only by a cgroup. Where the user's systemd manager has
//! the cgroup v2 `memory` and `pids` controllers delegated to it (a unified hierarchy, the
//! common desktop case), runc asks that manager over the session bus for a scope for each
//! sandbox with a limit (`--systemd-cgroup`, as rootless podman and docker do) with
//! `TasksMax=` and `MemoryMax=`; sandboxes without limits stay where runc puts them. Elsewhere (a cgroup v1/v2 hybrid whose v2 tree has no controllers) the
//! daemon says so at start and falls back to rlimits, see [`Enforcement::Rlimits`].

use std::path::{Path, PathBuf};

/// The controllers a scope needs for the two limits.
const CONTROLLERS: [&str; 2] = ["memory", "pids"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// A sandbox with a limit runs in `app.slice/sandboxd-NAME.scope` of the user's manager.
    SystemdScopes,
    /// No delegated controllers (`why` says what is missing). `limits.pids` becomes
    /// RLIMIT_NPROC, which the kernel counts per user id and user namespace: every sandbox
    /// has its own user namespace, and loses CAP_SETUID/CAP_SETGID so its processes cannot
    /// spread over further ids. `limits.memory` becomes RLIMIT_DATA (private writable memory), per
    /// process: address-space reservations, such as those of the Go runtime that runs
    /// `runc exec`, do not count against it.
    Rlimits { why: String },
}

impl Enforcement {
    /// Looks at this process's mounts and the user manager's cgroup.
    pub fn detect(uid: u32) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
            || std::env::var_os("XDG_RUNTIME_DIR")
                .is_some_and(|d| Path::new(&d).join("bus").exists());
        detect_from(&mountinfo, uid, bus, |p| std::fs::read_to_string(p).ok())
    }

    /// One sentence for the daemon's start-up log and `sandboxctl doctor`.
    pub fn describe(&self) -> String {
        match self {
            Self::SystemdScopes => "limits.memory and limits.pids are enforced by a systemd scope \
                 per sandbox (cgroup v2 memory and pids controllers delegated to the user manager)"
                .into(),
            Self::Rlimits { why } => format!(
                "{why}: limits.pids falls back to RLIMIT_NPROC per user id inside the sandbox \
                 (such sandboxes lose CAP_SETUID and CAP_SETGID so they cannot spread over more ids) \
                 and limits.memory to RLIMIT_DATA per process"
            ),
        }
    }
}

/// The mount point of the cgroup v2 hierarchy in a mountinfo(5) text.
fn unified_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// The user manager's cgroup below the v2 mount.
pub fn user_manager_cgroup(mount: &Path, uid: u32) -> PathBuf {
    mount.join(format!("user.slice/user-{uid}.slice/user@{uid}.service"))
}

fn detect_from(
    mountinfo: &str,
    uid: u32,
    bus: bool,
    read: impl Fn(&Path) -> Option<String>,
) -> Enforcement {
    let rlimits = |why: String| Enforcement::Rlimits { why };
    let Some(mount) = unified_mount(mountinfo) else {
        return rlimits("no cgroup v2 hierarchy is mounted".into());
    };
    let manager = user_manager_cgroup(&mount, uid);
    let file = manager.join("cgroup.controllers");
    let Some(text) = read(&file) else {
        return rlimits(format!("no user manager cgroup at {}", manager.display()));
    };
    let have: Vec<&str> = text.split_whitespace().collect();
    let missing: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !have.contains(c))
        .collect();
    if !missing.is_empty() {
        return rlimits(format!(
            "the cgroup v2 controllers {} are not delegated to the user manager ({} lists \"{}\")",
            missing.join(" and "),
            file.display(),
            text.trim()
        ));
    }
    if !bus {
        return rlimits("no session bus to ask the user manager for scopes".into());
    }
    Enforcement::SystemdScopes
}

/// Whether a sandbox with `limits` runs in its own scope: only where scopes are available,
/// and only when it has a limit for them to enforce.
pub fn in_scope(enforcement: &Enforcement, limits: &crate::profile::Limits) -> bool {
    *enforcement == Enforcement::SystemdScopes && (limits.pids.is_some() || limits.memory.is_some())
}

/// runc's `cgroupsPath` for a sandbox under `--systemd-cgroup`: `slice:prefix:name`, which
/// runc turns into the unit `sandboxd-NAME.scope` in `app.slice`.
pub fn scope_path(name: &str) -> String {
    format!("app.slice:sandboxd:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
    const UNIFIED: &str = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";

    fn reader(text: &'static str) -> impl Fn(&Path) -> Option<String> {
        move |p| {
            (p == Path::new(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cgroup.controllers",
            ) || p
                == Path::new("/sys/fs/cgroup/unified/user.slice/user-1000.slice/user@1000.service/cgroup.controllers"))
            .then(|| text.to_string())
        }
    }

    #[test]
    fn a_delegated_unified_tree_gets_scopes() {
        let e = detect_from(UNIFIED, 1000, true, reader("cpu io memory pids\n"));
        assert_eq!(e, Enforcement::SystemdScopes);
    }

    #[test]
    fn missing_controllers_or_bus_fall_back_to_rlimits_and_say_why() {
        let Enforcement::Rlimits { why } = detect_from(HYBRID, 1000, true, reader("\n")) else {
            panic!("a hybrid tree without controllers must fall back");
        };
        assert!(why.contains("memory and pids are not delegated"), "{why}");
        let Enforcement::Rlimits { why } = detect_from(UNIFIED, 1000, true, reader("pids")) else {
            panic!()
        };
        assert!(why.contains("memory are not"), "{why}");
        let Enforcement::Rlimits { why } = detect_from(UNIFIED, 1000, false, reader("memory pids"))
        else {
            panic!()
        };
        assert!(why.contains("session bus"), "{why}");
        let Enforcement::Rlimits { why } = detect_from(UNIFIED, 1001, true, reader("memory pids"))
        else {
            panic!()
        };
        assert!(why.contains("user@1001.service"), "{why}");
        let none = "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n";
        assert!(matches!(
            detect_from(none, 1000, true, reader("memory pids")),
            Enforcement::Rlimits { .. }
        ));
    }

    #[test]
    fn finds_the_unified_mount_in_a_hybrid() {
        assert_eq!(
            unified_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(scope_path("web"), "app.slice:sandboxd:web");
    }
}
