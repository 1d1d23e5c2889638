//! UDP: flows keyed by (sandbox source, original destination). The first datagram of a
//! flow arrives on the listener with its destination in IP_ORIGDSTADDR; the flow then gets
//! a host socket connected to the destination and, from the helper, a reply socket inside
//! the sandbox bound to that destination and connected to the source. Replies leave
//! through it (so they come from the address the sandbox asked for), and the sandbox's
//! further datagrams arrive on it. Idle flows expire.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::policy::canonical;
use super::Shared;

/// Idle time after which a flow that never got an answer ends.
const IDLE: Duration = Duration::from_secs(30);
/// Idle time for a flow that has seen traffic both ways.
const IDLE_ESTABLISHED: Duration = Duration::from_secs(120);
const MAX_DATAGRAM: usize = 65_536;

type Key = (SocketAddr, SocketAddr);

/// The flows of one sandbox, shared by both listeners and the flow tasks.
#[derive(Default)]
pub struct Flows {
    map: Mutex<HashMap<Key, Arc<UdpSocket>>>,
}

impl Flows {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<UdpSocket>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }
}

pub fn socket(fd: OwnedFd) -> io::Result<UdpSocket> {
    let std = std::net::UdpSocket::from(fd);
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}

fn sockaddr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port()))
}

/// One datagram from a listener: payload length, source, original destination.
fn receive(fd: i32, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, SocketAddr)> {
    let mut space = nix::cmsg_space!(libc::sockaddr_in6);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT)?;
    let src = msg.address.as_ref().and_then(sockaddr);
    let mut dst = None;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                dst = Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                    u16::from_be(a.sin_port),
                ))
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                dst = Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                    u16::from_be(a.sin6_port),
                ))
            }
            _ => {}
        }
    }
    let n = msg.bytes;
    match (src, dst) {
        (Some(s), Some(d)) => Ok((n, s, d)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram without source or original destination",
        )),
    }
}

pub async fn serve(listener: UdpSocket, shared: Arc<Shared>, stop: CancellationToken) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.async_io(Interest::READABLE, || receive(listener.as_raw_fd(), &mut buf)) => r,
        };
        let (n, src, dst) = match got {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(SANDBOX = shared.name.as_str(), "udp receive: {e}");
                continue;
            }
        };
        if shared.cut.is_cancelled() {
            continue;
        }
        datagram(&shared, src, dst, &buf[..n]).await;
    }
}

async fn datagram(shared: &Arc<Shared>, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
    let name = shared.name.as_str();
    let existing = shared.flows.map().get(&(src, dst)).cloned();
    // UDP sends complete at once (or drop): awaiting them never stalls the listener.
    if let Some(out) = existing {
        if out.send(data).await.is_ok() {
            shared
                .counters
                .sent
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        return;
    }
    if crate::netns::is_sandbox_own(dst) {
        return;
    }
    let target = canonical(dst);
    if let Err(why) = shared.policy().decide(target, &shared.host.current()) {
        shared.counters.denied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(SANDBOX = name, dst = %target, %src, reason = why.as_str(), "udp denied");
        return;
    }
    if shared.flows.len() >= shared.max_udp_flows as usize {
        shared.counters.denied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(SANDBOX = name, dst = %target, "udp refused: network.max_udp_flows reached");
        return;
    }
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let out = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(SANDBOX = name, "udp socket: {e}");
            return;
        }
    };
    if let Err(e) = out.connect(target).await {
        tracing::debug!(SANDBOX = name, dst = %target, "udp connect: {e}");
        return;
    }
    let out = Arc::new(out);
    if out.send(data).await.is_ok() {
        shared
            .counters
            .sent
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    shared.flows.map().insert((src, dst), out.clone());
    let shared = shared.clone();
    tokio::spawn(async move {
        let cut = shared.cut.clone();
        tokio::select! {
            _ = cut.cancelled() => {}
            r = flow(&shared, src, dst, &out) => {
                if let Err(e) = r {
                    tracing::debug!(SANDBOX = shared.name.as_str(), %dst, "udp flow ended: {e}");
                }
            }
        }
        shared.flows.map().remove(&(src, dst));
    });
}

async fn flow(
    shared: &Shared,
    src: SocketAddr,
    dst: SocketAddr,
    out: &UdpSocket,
) -> io::Result<()> {
    let fd = shared
        .helper
        .udp_reply(dst, src)
        .await
        .map_err(|e| io::Error::other(crate::error_chain(&e)))?;
    let inside = socket(fd)?;
    let c = &shared.counters;
    let answered = AtomicBool::new(false);
    let mut up = vec![0u8; MAX_DATAGRAM];
    let mut down = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle = if answered.load(Ordering::Relaxed) {
            IDLE_ESTABLISHED
        } else {
            IDLE
        };
        tokio::select! {
            r = out.recv(&mut down) => {
                let n = r?;
                answered.store(true, Ordering::Relaxed);
                match inside.send(&down[..n]).await {
                    Ok(_) => {
                        c.received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(SANDBOX = shared.name.as_str(), %src, "udp reply: {e}"),
                }
            }
            r = inside.recv(&mut up) => {
                let n = r?;
                if out.send(&up[..n]).await.is_ok() {
                    c.sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            _ = tokio::time::sleep(idle) => return Ok(()),
        }
    }
}
