//! `network.publish`: the daemon listens on a host address for as long as the sandbox's
//! proxy is attached, and joins each client to the sandbox's own `127.0.0.1:PORT` through
//! a socket the netns helper connects inside.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::{relay, Shared};

/// Idle time after which a published UDP client's flow ends.
const UDP_IDLE: Duration = Duration::from_secs(60);

pub use crate::profile::Publish;

/// A bound host socket of one entry, ready to serve.
pub enum Bound {
    Tcp(TcpListener, u16),
    Udp(UdpSocket, u16),
}

/// Binds every entry now, so a port in use fails the sandbox's start with its name.
pub async fn bind_all(entries: &[Publish]) -> Result<Vec<Bound>, String> {
    let mut out = Vec::new();
    for (i, p) in entries.iter().enumerate() {
        let err = |e: io::Error| {
            format!(
                "network.publish[{i}] {:?}: cannot listen on {}: {e}",
                p.raw, p.host
            )
        };
        out.push(if p.udp {
            Bound::Udp(UdpSocket::bind(p.host).await.map_err(err)?, p.sandbox_port)
        } else {
            Bound::Tcp(
                TcpListener::bind(p.host).await.map_err(err)?,
                p.sandbox_port,
            )
        });
    }
    Ok(out)
}

pub fn serve(bound: Bound, shared: Arc<Shared>, stop: CancellationToken) {
    match bound {
        Bound::Tcp(l, port) => {
            tokio::spawn(tcp(l, port, shared, stop));
        }
        Bound::Udp(s, port) => {
            tokio::spawn(udp(s, port, shared, stop));
        }
    }
}

async fn tcp(listener: TcpListener, port: u16, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (outside, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let inside = match shared.helper.connect(false, port).await {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::debug!(SANDBOX = shared.name.as_str(), port, "published port: {e}");
                    return super::tcp::reset(outside);
                }
            };
            let inside = std::net::TcpStream::from(inside);
            if inside.set_nonblocking(true).is_err() {
                return;
            }
            let Ok(inside) = TcpStream::from_std(inside) else {
                return;
            };
            let c = &shared.counters;
            c.active.fetch_add(1, Ordering::Relaxed);
            // From the sandbox's side: what it sends out goes to the host client.
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = relay::relay(&inside, &outside, &c.sent, &c.received) => {}
            }
            c.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn udp(host: UdpSocket, port: u16, shared: Arc<Shared>, stop: CancellationToken) {
    let host = Arc::new(host);
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel::<SocketAddr>();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            Some(c) = gone.recv() => {
                flows.remove(&c);
                continue;
            }
            r = host.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let c = &shared.counters;
        if let Some(inner) = flows.get(&client) {
            if inner.send(&buf[..n]).await.is_ok() {
                c.received.fetch_add(n as u64, Ordering::Relaxed);
            }
            continue;
        }
        let inner = match shared.helper.connect(true, port).await {
            Ok(fd) => {
                let s = std::net::UdpSocket::from(fd);
                match s
                    .set_nonblocking(true)
                    .and_then(|()| UdpSocket::from_std(s))
                {
                    Ok(s) => Arc::new(s),
                    Err(_) => continue,
                }
            }
            Err(_) => continue,
        };
        if inner.send(&buf[..n]).await.is_ok() {
            c.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        flows.insert(client, inner.clone());
        let (host, stop, gone_tx, shared) =
            (host.clone(), stop.clone(), gone_tx.clone(), shared.clone());
        tokio::spawn(async move {
            let mut back = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(UDP_IDLE) => break,
                    r = inner.recv(&mut back) => match r {
                        Ok(m) => {
                            if host.send_to(&back[..m], client).await.is_ok() {
                                shared.counters.sent.fetch_add(m as u64, Ordering::Relaxed);
                            }
                        }
                        Err(_) => break,
                    },
                }
            }
            let _ = gone_tx.send(client);
        });
    }
}
