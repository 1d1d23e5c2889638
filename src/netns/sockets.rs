//! Sockets that must be born inside the sandbox's network namespace, with IP_TRANSPARENT
//! (which needs CAP_NET_ADMIN there, so only the helper can make them).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, connect, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};

const LISTEN_BACKLOG: i32 = 4096;

fn transparent(family: AddressFamily, kind: SockType) -> io::Result<OwnedFd> {
    let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
    if family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        // IPV6_TRANSPARENT: nix has no wrapper for it.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_IPV6,
                libc::IPV6_TRANSPARENT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    } else {
        setsockopt(&fd, sockopt::IpTransparent, &true)?;
    }
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    Ok(fd)
}

/// The four listeners TPROXY delivers to: TCP and UDP, v4 and v6, on `port`. The UDP ones
/// report each datagram's original destination.
pub fn listeners(port: u16) -> io::Result<[OwnedFd; 4]> {
    let v4 = SockaddrStorage::from(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        port,
    )));
    let v6 = SockaddrStorage::from(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        port,
        0,
        0,
    )));
    let backlog = Backlog::new(LISTEN_BACKLOG).unwrap_or(Backlog::MAXCONN);
    let tcp4 = transparent(AddressFamily::Inet, SockType::Stream)?;
    bind(tcp4.as_raw_fd(), &v4)?;
    listen(&tcp4, backlog)?;
    let tcp6 = transparent(AddressFamily::Inet6, SockType::Stream)?;
    bind(tcp6.as_raw_fd(), &v6)?;
    listen(&tcp6, backlog)?;
    let udp4 = transparent(AddressFamily::Inet, SockType::Datagram)?;
    setsockopt(&udp4, sockopt::Ipv4OrigDstAddr, &true)?;
    bind(udp4.as_raw_fd(), &v4)?;
    let udp6 = transparent(AddressFamily::Inet6, SockType::Datagram)?;
    setsockopt(&udp6, sockopt::Ipv6OrigDstAddr, &true)?;
    bind(udp6.as_raw_fd(), &v6)?;
    Ok([tcp4, tcp6, udp4, udp6])
}

/// A UDP socket bound to `local` (the destination the sandbox asked for) and connected to
/// `peer` (the sandbox's socket): replies sent on it come from the address the sandbox
/// expects, and the sandbox's further datagrams of this flow arrive on it.
pub fn udp_reply(local: SocketAddr, peer: SocketAddr) -> io::Result<OwnedFd> {
    let family = if local.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = transparent(family, SockType::Datagram)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
    connect(fd.as_raw_fd(), &SockaddrStorage::from(peer))?;
    Ok(fd)
}

/// A socket connected to the sandbox's own `127.0.0.1:port`, for a published port. The
/// connect is local, so it completes (or is refused) at once.
pub fn connect_inside(udp: bool, port: u16) -> io::Result<OwnedFd> {
    let kind = if udp {
        SockType::Datagram
    } else {
        SockType::Stream
    };
    let fd = socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)?;
    let to = SockaddrStorage::from(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)));
    connect(fd.as_raw_fd(), &to)?;
    Ok(fd)
}

/// A raw IP socket inside the sandbox that sends whole packets, header included: the
/// daemon writes ICMP errors with it whose source is the address the sandbox tried to
/// reach, so its socket takes them for that host's answer.
pub fn raw(v6: bool) -> io::Result<OwnedFd> {
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    Ok(socket(
        family,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        nix::sys::socket::SockProtocol::Raw,
    )?)
}
