//! The netns helper: a fresh exec of `sandboxd netns-helper`, one per proxied sandbox
//! (started ahead of need and told the sandbox's init pid over its control socket).
//!
//! The daemon cannot enter a sandbox's network namespace itself (that needs CAP_SYS_ADMIN
//! in its own user namespace, and joining a user namespace needs a single-threaded
//! process). The helper joins the sandbox's user and network namespaces — not its mount
//! or pid namespaces, so the sandbox can neither see nor signal it — sets the namespace up
//! (links, addresses, routes, fwmark rules, the nf_tables table) and hands the
//! transparent listeners to the daemon over its control socket (fd 3). It then stays as a
//! socket factory for what must be born inside (UDP reply sockets) and exits when the
//! daemon closes the socket. Without it the listeners' flows have nowhere to go: a dead
//! helper means no network, never more.

mod control;
mod judge;
mod netlink;
mod nflog;
mod nft;
mod route;
mod sockets;

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

pub use control::{spawn, Client, Control, ControlError, Ready, Spawned};
pub use judge::{valid_code, Rule, MAX_RULES};
pub use nflog::{parse as parse_log, Logged};

/// The argv[1] that selects helper mode in the `sandboxd` binary.
pub const HELPER_ARG: &str = "netns-helper";
/// The sandbox's own addresses, on the veth end its default routes use.
pub const SANDBOX_V4: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
pub const SANDBOX_V6: Ipv6Addr = Ipv6Addr::new(0xfd5a, 0x5bd0, 0, 0, 0, 0, 0, 2);
/// Port of the transparent listeners (wildcard-bound, TCP and UDP, v4 and v6).
pub const PROXY_PORT: u16 = 1;
const MARK: u32 = 0x5bd;
const TABLE: u8 = 100;
const VETH: (&str, &str) = ("sbx0", "sbx1");
/// The control socket's fd number in the helper.
pub const CONTROL_FD: i32 = 3;

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot join the sandbox's {0} namespace")]
    Join(&'static str, #[source] nix::Error),
    #[error("{0}")]
    Step(&'static str, #[source] io::Error),
}

fn step<T>(what: &'static str, r: io::Result<T>) -> Result<T, SetupError> {
    r.map_err(|e| SetupError::Step(what, e))
}

fn join(pid: u32) -> Result<(), SetupError> {
    use nix::sched::{setns, CloneFlags};
    let open = |ns: &str| {
        let path = format!("/proc/{pid}/ns/{ns}");
        File::open(&path).map_err(|source| SetupError::Open { path, source })
    };
    // Both are opened before joining: afterwards /proc is judged from inside.
    let user = open("user")?;
    let net = open("net")?;
    setns(user.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(|e| SetupError::Join("user", e))?;
    setns(net.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| SetupError::Join("network", e))
}

fn configure() -> Result<(), SetupError> {
    let mut rt = step("netlink", route::Routes::open())?;
    let lo = step("find lo", route::index_of("lo"))?;
    step("bring lo up", rt.set_up(lo))?;
    let fresh = step("create the veth pair", rt.add_veth(VETH.0, VETH.1))?;
    let a = step("find the veth", route::index_of(VETH.0))?;
    let b = step("find the veth peer", route::index_of(VETH.1))?;
    step("bring the veth up", rt.set_up(a))?;
    step("bring the veth peer up", rt.set_up(b))?;
    step(
        "add the IPv4 address",
        rt.add_address(a, IpAddr::V4(SANDBOX_V4), 32),
    )?;
    step(
        "add the IPv6 address",
        rt.add_address(a, IpAddr::V6(SANDBOX_V6), 128),
    )?;
    for v6 in [false, true] {
        step("add the default route", rt.add_default_route(v6, a))?;
        step("add the local route", rt.add_local_default(v6, TABLE, lo))?;
        step("add the fwmark rule", rt.add_fwmark_rule(v6, MARK, TABLE))?;
    }
    step(
        "install the nf_tables table",
        nft::install(lo, MARK, PROXY_PORT, !fresh),
    )
}

/// Entry of helper mode; must run before any other thread exists. Never returns.
pub fn helper_main(args: &[String]) -> ! {
    // SAFETY: fd 3 was set up by the daemon for this process; nothing else owns it.
    let control = Control::new(unsafe { OwnedFd::from_raw_fd(CONTROL_FD) });
    // Started ahead of need: the exec and the loading of this binary are done before a
    // sandbox waits for us. A PID argument joins at once (for use by hand).
    let pid = match args.first() {
        Some(p) => p.parse::<u32>().ok(),
        None => control.wait_join(),
    };
    let Some(pid) = pid else {
        std::process::exit(0);
    };
    let listeners = join(pid).and_then(|()| configure()).and_then(|()| {
        step(
            "bind the transparent listeners",
            sockets::listeners(PROXY_PORT),
        )
    });
    let [tcp4, tcp6, udp4, udp6] = match listeners {
        Ok(l) => l,
        Err(e) => {
            let _ = control.send_error(&crate::error_chain(&e));
            std::process::exit(1);
        }
    };
    let mut fds = vec![
        ("tcp4", tcp4),
        ("tcp6", tcp6),
        ("udp4", udp4),
        ("udp6", udp6),
    ];
    // Without these the proxy still refuses, by reset and by silence: a network either
    // way, so their absence is reported (by the daemon) rather than fatal.
    if let Ok(log) = nflog::open() {
        fds.push(("log", log));
    }
    if let (Ok(r4), Ok(r6)) = (sockets::raw(false), sockets::raw(true)) {
        fds.extend([("raw4", r4), ("raw6", r6)]);
    }
    if control.send_ready(&fds).is_err() {
        std::process::exit(1);
    }
    drop(fds);
    control.serve(|req| match req {
        control::Request::UdpReply { local, peer } => {
            sockets::udp_reply(local, peer).map(control::Answer::Fd)
        }
        control::Request::Connect { udp, port } => {
            sockets::connect_inside(udp, port).map(control::Answer::Fd)
        }
        control::Request::Rules(rules) => {
            nft::set_judge(&rules, nflog::GROUP).map(|()| control::Answer::Done)
        }
    });
    std::process::exit(0);
}

/// True for an address of the sandbox itself (never a destination worth proxying).
pub fn is_sandbox_own(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(a) => a == SANDBOX_V4 || a.is_loopback(),
        IpAddr::V6(a) => a == SANDBOX_V6 || a.is_loopback(),
    }
}
