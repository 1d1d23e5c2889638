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

mod tables;

pub use tables::CLONE_NEW_MASK;
use tables::*;

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
mod tests;
