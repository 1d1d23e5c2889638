//! The syscall filter every sandbox runs under (`linux.seccomp`), as data.
//!
//! An allow-list with `EPERM` for everything else, for the native architecture only. The
//! list follows Docker's default profile where it allows without conditions; the rules
//! that differ are the point of it, each one closing a kernel surface that a process with
//! no capabilities outside its sandbox can still reach: nested namespaces (the way to
//! nf_tables, traffic control and the mount API), keyrings, io_uring, bpf, perf,
//! userfaultfd, AF_ALG, AF_VSOCK (not network-namespaced: it would pass the proxy) and
//! terminal input injection.
//!
//! Two properties of runc 1.1 / libseccomp 2.5 shape the rules (SECURITY.md):
//! * a rule whose action equals the default action is dropped, so every deny that is not
//!   the default names another errno;
//! * an unconditional allow of a syscall swallows its conditional denies, so a syscall
//!   with conditions (`clone`, `socket`, `ioctl`, `personality`) is allowed only by
//!   conditional rules and never also named in the plain allow-list.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::profile::{Nested, Security};

use super::SpecError;

/// Allowed whatever their arguments: Docker's unconditional list, without `ioctl`,
/// `modify_ldt`, `personality`, `socket`, `clone` and `clone3` (rules below), without
/// `pidfd_getfd` (nothing a sandboxed program needs; it lifts fds out of other processes),
/// and with what Docker grants for capabilities a sandbox keeps (`chroot`) or a kernel
/// ≥ 4.8 makes safe (`ptrace`, `process_vm_*`). Names unknown to the host's libseccomp
/// are skipped by runc, and runc answers syscalls newer than every name here with ENOSYS.
const ALLOW: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chroot",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// The 32-bit x86 names of `security.multiarch` (Wine, old binaries): the i386 ABI's own
/// spellings of what [`ALLOW`] allows, and `modify_ldt` for 16-bit code segments.
const ALLOW_I386: &[&str] = &[
    "_llseek",
    "_newselect",
    "chown32",
    "clock_adjtime64",
    "clock_getres_time64",
    "clock_gettime64",
    "clock_nanosleep_time64",
    "fadvise64_64",
    "fchown32",
    "fcntl64",
    "fstat64",
    "fstatat64",
    "fstatfs64",
    "ftruncate64",
    "futex_time64",
    "getegid32",
    "geteuid32",
    "getgid32",
    "getgroups32",
    "getresgid32",
    "getresuid32",
    "getuid32",
    "ipc",
    "lchown32",
    "lstat64",
    "mmap2",
    "modify_ldt",
    "mq_timedreceive_time64",
    "mq_timedsend_time64",
    "ppoll_time64",
    "pselect6_time64",
    "recv",
    "recvmmsg_time64",
    "rt_sigtimedwait_time64",
    "sched_rr_get_interval_time64",
    "semtimedop_time64",
    "send",
    "sendfile64",
    "setfsgid32",
    "setfsuid32",
    "setgid32",
    "setgroups32",
    "setregid32",
    "setresgid32",
    "setresuid32",
    "setreuid32",
    "setuid32",
    "sigaction",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    "socketcall",
    "stat64",
    "statfs64",
    "timer_gettime64",
    "timer_settime64",
    "timerfd_gettime64",
    "timerfd_settime64",
    "truncate64",
    "ugetrlimit",
    "utimensat_time64",
    "waitpid",
];

/// What `security.nested` opens on top of the default: namespaces (`clone` and `unshare`
/// by rule), and with [`Nested::Full`] the mount API that podman and bubblewrap need to
/// build a root.
const NESTED_NAMESPACES: &[&str] = &["setns", "sethostname", "setdomainname"];
const NESTED_MOUNT: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
];

/// Syscalls that fail with ENOSYS, not EPERM: glibc falls back from `clone3` to `clone`
/// only on ENOSYS (BPF cannot read `clone3`'s flags, so `clone` is where they are
/// checked), and runc nested inside a sandbox tolerates only ENOSYS from the keyrings,
/// which are not namespaced.
const ENOSYS_CALLS: &[&str] = &["clone3", "keyctl", "add_key", "request_key"];

/// Every `CLONE_NEW*` flag `clone` takes: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET.
pub const CLONE_NEW_MASK: u64 = 0x7E02_0000;
/// The flags `security.nested = "namespaces"` allows: everything but a mount namespace.
const CLONE_NEWNS: u64 = 0x0002_0000;

/// Socket families a sandbox may open: local sockets, IP (through the proxy), and netlink
/// (`ip addr`, udev monitors, `getifaddrs`). Every other family is kernel surface no
/// desktop program needs inside: AF_PACKET needs CAP_NET_RAW anyway, AF_ALG and AF_VSOCK
/// are the reason for this rule, and Bluetooth and the rest are reached through D-Bus.
const SOCKET_FAMILIES: &[u64] = &[
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
    libc::AF_NETLINK as u64,
];

/// Terminal ioctls that push input into a terminal or drive the console: `TIOCSTI`
/// (typing into whatever terminal an inherited fd names) and `TIOCLINUX`.
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
/// The kernel reads `ioctl`'s request as 32 bits: compare only those, so a high bit set
/// by the caller cannot slip a denied request past the rule.
const LOW_32: u64 = 0xffff_ffff;

/// `personality` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26 with each, and the
/// query. Others (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC) weaken exploit mitigations.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    two: Option<u64>,
) -> Result<LinuxSeccompArg, SpecError> {
    let mut b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    if let Some(two) = two {
        b = b.value_two(two);
    }
    Ok(b.build()?)
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    errno: Option<i32>,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall, SpecError> {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(action);
    if let Some(errno) = errno {
        b = b.errno_ret(errno as u32);
    }
    if !args.is_empty() {
        b = b.args(args);
    }
    Ok(b.build()?)
}

fn allow(names: &[&str], args: Vec<LinuxSeccompArg>) -> Result<LinuxSyscall, SpecError> {
    rule(names, LinuxSeccompAction::ScmpActAllow, None, args)
}

fn deny(names: &[&str], errno: i32, args: Vec<LinuxSeccompArg>) -> Result<LinuxSyscall, SpecError> {
    rule(names, LinuxSeccompAction::ScmpActErrno, Some(errno), args)
}

fn native_arches(multiarch: bool) -> Vec<Arch> {
    if cfg!(target_arch = "aarch64") {
        let mut a = vec![Arch::ScmpArchAarch64];
        if multiarch {
            a.push(Arch::ScmpArchArm);
        }
        a
    } else {
        let mut a = vec![Arch::ScmpArchX86_64];
        if multiarch {
            a.push(Arch::ScmpArchX86);
        }
        a
    }
}

/// The filter for a sandbox with these `[security]` settings.
pub fn filter(security: &Security) -> Result<LinuxSeccomp, SpecError> {
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpGt, ScmpCmpLt, ScmpCmpMaskedEq};
    let mut names: Vec<&str> = ALLOW.to_vec();
    if security.multiarch {
        names.extend_from_slice(ALLOW_I386);
    }
    if security.nested != Nested::Off {
        names.extend_from_slice(NESTED_NAMESPACES);
    }
    if security.nested == Nested::Full {
        names.extend_from_slice(NESTED_MOUNT);
    }
    let mut rules = vec![allow(&names, vec![])?];

    // clone: no new namespaces (or, nested, no new mount namespace).
    let clone_mask = match security.nested {
        Nested::Off => Some(CLONE_NEW_MASK),
        Nested::Namespaces => Some(CLONE_NEWNS),
        Nested::Full => None,
    };
    rules.push(match clone_mask {
        Some(mask) => allow(&["clone"], vec![arg(0, ScmpCmpMaskedEq, mask, Some(0))?])?,
        None => allow(&["clone"], vec![])?,
    });
    // unshare takes the same flags; closed entirely without nesting.
    match security.nested {
        Nested::Off => {}
        Nested::Namespaces => rules.push(allow(
            &["unshare"],
            vec![arg(0, ScmpCmpMaskedEq, CLONE_NEWNS, Some(0))?],
        )?),
        Nested::Full => rules.push(allow(&["unshare"], vec![])?),
    }
    rules.push(deny(ENOSYS_CALLS, libc::ENOSYS, vec![])?);

    // socket: the families above; netlink without NETLINK_NETFILTER (nf_tables). As for
    // ioctl, netlink is allowed in ranges around that protocol (an allow on the family
    // alone would swallow the deny) and the deny compares the low 32 bits the kernel reads.
    let netlink = libc::AF_NETLINK as u64;
    let netfilter = libc::NETLINK_NETFILTER as u64;
    for family in SOCKET_FAMILIES.iter().filter(|f| **f != netlink) {
        rules.push(allow(&["socket"], vec![arg(0, ScmpCmpEq, *family, None)?])?);
    }
    for op in [ScmpCmpLt, ScmpCmpGt] {
        rules.push(allow(
            &["socket"],
            vec![
                arg(0, ScmpCmpEq, netlink, None)?,
                arg(2, op, netfilter, None)?,
            ],
        )?);
    }
    rules.push(deny(
        &["socket"],
        libc::EPROTONOSUPPORT,
        vec![
            arg(0, ScmpCmpEq, netlink, None)?,
            arg(2, ScmpCmpMaskedEq, LOW_32, Some(netfilter))?,
        ],
    )?);

    // ioctl: every request but TIOCSTI and TIOCLINUX, allowed in ranges around them;
    // the masked denies catch those two with any high bits (the deny wins an overlap).
    rules.push(allow(&["ioctl"], vec![arg(1, ScmpCmpLt, TIOCSTI, None)?])?);
    for req in TIOCSTI + 1..TIOCLINUX {
        rules.push(allow(&["ioctl"], vec![arg(1, ScmpCmpEq, req, None)?])?);
    }
    rules.push(allow(
        &["ioctl"],
        vec![arg(1, ScmpCmpGt, TIOCLINUX, None)?],
    )?);
    for req in [TIOCSTI, TIOCLINUX] {
        rules.push(deny(
            &["ioctl"],
            libc::EIO,
            vec![arg(1, ScmpCmpMaskedEq, LOW_32, Some(req))?],
        )?);
    }

    for p in PERSONALITIES {
        rules.push(allow(&["personality"], vec![arg(0, ScmpCmpEq, *p, None)?])?);
    }

    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(native_arches(security.multiarch))
        .syscalls(rules)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn rules(s: &Security) -> serde_json::Value {
        serde_json::to_value(filter(s).unwrap()).unwrap()
    }

    fn all() -> [Security; 4] {
        [
            Security::default(),
            Security {
                nested: Nested::Namespaces,
                multiarch: false,
            },
            Security {
                nested: Nested::Full,
                multiarch: false,
            },
            Security {
                nested: Nested::Off,
                multiarch: true,
            },
        ]
    }

    /// The names every rule of `action` covers, with and without conditions.
    fn names_of(json: &serde_json::Value, action: &str, conditional: bool) -> HashSet<String> {
        json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action && r.get("args").is_some() == conditional)
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn default_is_eperm_on_the_native_arch_without_flags() {
        let json = rules(&Security::default());
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64"])
        );
        // runc 1.1 refuses a filter with flags.
        assert!(json.get("flags").is_none());
        let multi = rules(&all()[3]);
        assert_eq!(
            multi["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        assert!(names_of(&multi, "SCMP_ACT_ALLOW", false).contains("modify_ldt"));
    }

    /// runc drops a rule equal to the default action; libseccomp lets an unconditional
    /// allow swallow conditional rules of the same syscall. Neither may happen here.
    #[test]
    fn no_rule_is_silently_dropped_or_swallowed() {
        for s in all() {
            let json = rules(&s);
            for r in json["syscalls"].as_array().unwrap() {
                if r["action"] == "SCMP_ACT_ERRNO" {
                    assert_ne!(r["errnoRet"], 1, "{r} equals the default action");
                }
            }
            let plain = names_of(&json, "SCMP_ACT_ALLOW", false);
            let conditional: HashSet<String> = names_of(&json, "SCMP_ACT_ALLOW", true)
                .union(&names_of(&json, "SCMP_ACT_ERRNO", true))
                .cloned()
                .collect();
            let both: Vec<_> = plain.intersection(&conditional).collect();
            assert!(
                both.is_empty(),
                "{s:?}: {both:?} allowed outright and by rules"
            );
        }
    }

    #[test]
    fn the_closed_surfaces_stay_closed() {
        let closed = [
            "unshare",
            "setns",
            "mount",
            "open_tree",
            "fsopen",
            "pivot_root",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "kexec_load",
            "init_module",
            "finit_module",
            "open_by_handle_at",
            "pidfd_getfd",
            "ioctl",
            "socket",
            "clone",
            "clone3",
            "keyctl",
            "personality",
            "modify_ldt",
        ];
        let json = rules(&Security::default());
        let plain = names_of(&json, "SCMP_ACT_ALLOW", false);
        for c in closed {
            assert!(!plain.contains(c), "{c} allowed outright");
        }
        // The nested settings open namespaces, never io_uring, bpf, perf or keyrings.
        for s in &all()[1..3] {
            let plain = names_of(&rules(s), "SCMP_ACT_ALLOW", false);
            assert!(plain.contains("setns"));
            assert_eq!(plain.contains("mount"), s.nested == Nested::Full);
            assert_eq!(plain.contains("unshare"), s.nested == Nested::Full);
            for c in [
                "bpf",
                "perf_event_open",
                "io_uring_setup",
                "keyctl",
                "userfaultfd",
            ] {
                assert!(!plain.contains(c), "{c} open with {s:?}");
            }
        }
        let enosys = names_of(&json, "SCMP_ACT_ERRNO", false);
        for c in ENOSYS_CALLS {
            assert!(enosys.contains(*c));
        }
    }

    #[test]
    fn conditions_compare_what_the_kernel_reads() {
        let json = rules(&Security::default());
        let rules = json["syscalls"].as_array().unwrap();
        let with = |name: &str| -> Vec<&serde_json::Value> {
            rules
                .iter()
                .filter(|r| r["names"].as_array().unwrap().contains(&name.into()))
                .collect()
        };
        let clone = with("clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["value"], CLONE_NEW_MASK);
        assert_eq!(clone[0]["args"][0]["valueTwo"], 0);
        let ioctl_denies: Vec<_> = with("ioctl")
            .into_iter()
            .filter(|r| r["action"] == "SCMP_ACT_ERRNO")
            .collect();
        assert_eq!(ioctl_denies.len(), 2);
        for d in ioctl_denies {
            assert_eq!(d["errnoRet"], libc::EIO);
            assert_eq!(d["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
            assert_eq!(d["args"][0]["value"], LOW_32);
        }
        let mut families: Vec<u64> = with("socket")
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .map(|r| r["args"][0]["value"].as_u64().unwrap())
            .collect();
        families.dedup();
        assert_eq!(families, SOCKET_FAMILIES);
        // Every netlink allow names its protocol, so none swallows the netfilter deny.
        for r in with("socket") {
            if r["args"][0]["value"] == libc::AF_NETLINK {
                assert_eq!(r["args"][1]["index"], 2, "{r}");
            }
        }
        // Nested, a mount namespace stays closed unless the mount API is open too.
        let ns = serde_json::to_value(
            filter(&Security {
                nested: Nested::Namespaces,
                multiarch: false,
            })
            .unwrap(),
        )
        .unwrap();
        let clone = ns["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"].as_array().unwrap().contains(&"clone".into()))
            .unwrap()
            .clone();
        assert_eq!(clone["args"][0]["value"], CLONE_NEWNS);
    }
}
