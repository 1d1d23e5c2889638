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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
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
    map: Mutex<HashMap<Key, mpsc::Sender<Vec<u8>>>>,
}

impl Flows {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, mpsc::Sender<Vec<u8>>>> {
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
                ));
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                dst = Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                    u16::from_be(a.sin6_port),
                ));
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

/// Datagrams of a flow wait here while the flow is being set up (resolving a name,
/// getting its reply socket); beyond this many they are dropped, as UDP may.
const QUEUE: usize = 64;

async fn datagram(shared: &Arc<Shared>, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
    if let Some(tx) = shared.flows.map().get(&(src, dst)) {
        let _ = tx.try_send(data.to_vec());
        return;
    }
    if crate::netns::is_sandbox_own(dst) {
        return;
    }
    let dst = canonical(dst);
    if shared.flows.len() >= shared.max_udp_flows() {
        shared.deny(
            shared.shown(dst.ip()),
            dst.port(),
            "network.max_udp_flows reached",
        );
        shared.unreachable(dst, src, data.len());
        return;
    }
    let Some(slot) = shared.slot(dst) else {
        shared.unreachable(dst, src, data.len());
        return;
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let _ = tx.try_send(data.to_vec());
    shared.flows.map().insert((src, dst), tx);
    let shared = shared.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let cut = shared.cut.clone();
        tokio::select! {
            _ = cut.cancelled() => {}
            r = flow(&shared, src, dst, rx) => {
                if let Err(e) = r {
                    tracing::debug!(SANDBOX = shared.name.as_str(), %dst, "udp flow ended: {e}");
                }
            }
        }
        shared.flows.map().remove(&(src, dst));
    });
}

/// The reply socket of a flow: inside the sandbox, bound to the destination the sandbox
/// used and connected to its socket.
async fn reply_socket(shared: &Shared, src: SocketAddr, dst: SocketAddr) -> io::Result<UdpSocket> {
    let fd = shared
        .helper
        .udp_reply(dst, src)
        .await
        .map_err(|e| io::Error::other(crate::error_chain(&e)))?;
    socket(fd)
}

async fn flow(
    shared: &Shared,
    src: SocketAddr,
    dst: SocketAddr,
    mut queued: mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    if shared.is_resolver(dst) {
        return dns_flow(shared, src, dst, queued).await;
    }
    // A refusal is answered as a closed port answers: the first datagram's size goes
    // into the quoted header.
    let refuse = |queued: &mut mpsc::Receiver<Vec<u8>>| {
        let len = queued.try_recv().map(|d| d.len()).unwrap_or(0);
        shared.unreachable(dst, src, len);
        Ok(())
    };
    if !matches!(shared.egress(), super::egress::Egress::Direct) {
        shared.deny(
            shared.shown(dst.ip()),
            dst.port(),
            "UDP cannot go through network.upstream",
        );
        return refuse(&mut queued);
    }
    let target = match shared.destinations(dst).await.into_iter().next() {
        Some(super::egress::Dest::Addr(a)) => a,
        _ => return refuse(&mut queued),
    };
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let out = UdpSocket::bind(bind).await?;
    out.connect(target).await?;
    let c = &shared.counters;
    while let Ok(d) = queued.try_recv() {
        if out.send(&d).await.is_ok() {
            c.sent.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
    }
    let inside = reply_socket(shared, src, dst).await?;
    let mut answered = false;
    let mut up = vec![0u8; MAX_DATAGRAM];
    let mut down = vec![0u8; MAX_DATAGRAM];
    // One timer for the flow's life, re-armed only when it fires early: a datagram costs
    // a clock read, not a timer-wheel insert and cancel.
    let mut last = tokio::time::Instant::now();
    let expiry = tokio::time::sleep(IDLE);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            biased;
            r = out.recv(&mut down) => {
                let n = r?;
                answered = true;
                last = tokio::time::Instant::now();
                match inside.send(&down[..n]).await {
                    Ok(_) => {
                        c.received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(SANDBOX = shared.name.as_str(), %src, "udp reply: {e}"),
                }
            }
            r = inside.recv(&mut up) => {
                let n = r?;
                last = tokio::time::Instant::now();
                if out.send(&up[..n]).await.is_ok() {
                    c.sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            Some(d) = queued.recv() => {
                last = tokio::time::Instant::now();
                if out.send(&d).await.is_ok() {
                    c.sent.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            () = &mut expiry => {
                let idle = if answered { IDLE_ESTABLISHED } else { IDLE };
                if last.elapsed() >= idle {
                    return Ok(());
                }
                expiry.as_mut().reset(last + idle);
            }
        }
    }
}

/// Queries to the sandbox's resolver, answered by the daemon, one at a time per socket.
async fn dns_flow(
    shared: &Shared,
    src: SocketAddr,
    dst: SocketAddr,
    mut queued: mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let inside = reply_socket(shared, src, dst).await?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let query = tokio::select! {
            Some(d) = queued.recv() => d,
            r = inside.recv(&mut buf) => buf[..r?].to_vec(),
            _ = tokio::time::sleep(IDLE) => return Ok(()),
        };
        let answer = shared.resolve_query(&query, false).await;
        let _ = inside.send(&answer).await;
    }
}
