//! TCP: accept what TPROXY hands the listeners, judge the original destination (the
//! accepted socket's local address), dial it from the host and relay.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::dns::Target;
use super::egress::{self, Dest, Egress, Outside};
use super::policy::canonical;
use super::sniff::{self, First};
use super::{relay, Shared};

/// How long a dial to the destination may take before the sandbox's connection is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Accept errors (fd exhaustion) are retried after this pause instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Resets the connection at once (RST), so the sandbox learns of a refusal immediately.
pub(super) fn reset(stream: TcpStream) {
    // A zero linger time makes close send RST and return at once (it never blocks).
    let abort = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &abort);
    drop(stream);
}

pub fn listener(fd: OwnedFd) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (inside, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(SANDBOX = shared.name.as_str(), "accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if shared.cut.is_cancelled() {
            if let Ok(dst) = inside.local_addr() {
                let dst = canonical(dst);
                shared.deny(dst.ip().to_string(), dst.port(), "the netns helper is gone");
            }
            reset(inside);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let cut = shared.cut.clone();
            tokio::select! {
                _ = cut.cancelled() => {}
                _ = connection(inside, peer, &shared) => {}
            }
        });
    }
}

/// Counts an open connection for as long as it lives.
struct Active<'a>(&'a Shared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(inside: TcpStream, peer: SocketAddr, shared: &Shared) {
    let name = shared.name.as_str();
    let Ok(dst) = inside.local_addr() else {
        return reset(inside);
    };
    // A connection to the listener itself came over the sandbox's loopback, not TPROXY.
    if crate::netns::is_sandbox_own(dst) {
        return reset(inside);
    }
    let dst = canonical(dst);
    let c = &shared.counters;
    let open = c.active.fetch_add(1, Ordering::Relaxed) + 1;
    let _active = Active(shared);
    if open > shared.max_connections() {
        shared.deny(
            shared.shown(dst.ip()),
            dst.port(),
            "network.max_connections reached",
        );
        return reset(inside);
    }
    let Some(_slot) = shared.slot(dst) else {
        return reset(inside);
    };
    // The rare and large steps are boxed: a connection's task is as big as its largest
    // state, and thousands of idle connections each keep theirs.
    if shared.is_resolver(dst) {
        return Box::pin(dns(inside, shared)).await;
    }
    let targets = Box::pin(shared.destinations(dst)).await;
    if targets.is_empty() {
        tracing::debug!(SANDBOX = name, %dst, %peer, "tcp denied");
        return reset(inside);
    }
    let egress = shared.egress();
    let to_host = shared.names.classify(dst.ip()) == Target::Host;
    let dialed = Box::pin(tokio::time::timeout(
        CONNECT_TIMEOUT,
        dial(&egress, &targets, to_host),
    ))
    .await;
    drop(targets);
    let outside = match dialed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(SANDBOX = name, %dst, "tcp dial failed: {e}");
            if !matches!(egress, Egress::Direct) {
                shared.deny(
                    shared.shown(dst.ip()),
                    dst.port(),
                    "the upstream proxy failed",
                );
            }
            return reset(inside);
        }
        Err(_) => {
            tracing::debug!(SANDBOX = name, %dst, "tcp dial timed out");
            return reset(inside);
        }
    };
    drop(egress);
    let _ = inside.set_nodelay(true);
    let (mut inside, mut outside) = (inside, outside);
    // A name's address: the first bytes must not name another host (SNI, Host). Boxed,
    // so that the connections to addresses (most of them) do not carry its state.
    if let Target::Name(target) = shared.names.classify(dst.ip()) {
        let gated = match &mut outside {
            Outside::Tcp(o) => Box::pin(gate(&mut inside, o, shared, &target, dst.port())).await,
            Outside::Unix(o) => Box::pin(gate(&mut inside, o, shared, &target, dst.port())).await,
        };
        match gated {
            Ok(true) => {}
            Ok(false) => return reset(inside),
            Err(e) => {
                tracing::debug!(SANDBOX = name, %dst, "tcp relay ended: {e}");
                return;
            }
        }
    }
    let result = match &outside {
        Outside::Tcp(o) => {
            let _ = o.set_nodelay(true);
            relay::relay(&inside, o, &c.sent, &c.received).await
        }
        Outside::Unix(o) => relay::relay(&inside, o, &c.sent, &c.received).await,
    };
    if let Err(e) = result {
        tracing::debug!(SANDBOX = name, %dst, "tcp relay ended: {e}");
    }
}
/// Dials the first of `targets` that answers, through `egress` (`to_host`: the local
/// host, never through an upstream); or what went wrong with the last.
async fn dial(egress: &Egress, targets: &[Dest], to_host: bool) -> Result<Outside, String> {
    let mut last = None;
    for t in targets {
        let r = match (egress, t) {
            (Egress::Direct, Dest::Addr(a)) => TcpStream::connect(a)
                .await
                .map(Outside::Tcp)
                .map_err(|e| e.to_string()),
            (_, Dest::Addr(a)) if to_host => TcpStream::connect(a)
                .await
                .map(Outside::Tcp)
                .map_err(|e| e.to_string()),
            (Egress::Socks5 { server, .. }, d) => egress::socks5(server, d)
                .await
                .map_err(|e| crate::error_chain(&e)),
            (Egress::Direct, Dest::Name(..)) => Err("no address".to_string()),
        };
        match r {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_default())
}

/// Holds the sandbox's first bytes to `name`'s address until they tell what they are
/// (what the server sends meanwhile goes through, so a protocol where the server speaks
/// first is not delayed), judges the host they name, and on a pass sends them on. False:
/// refused (recorded); an error: either side ended or failed.
async fn gate<O>(
    inside: &mut TcpStream,
    outside: &mut O,
    shared: &Shared,
    name: &str,
    port: u16,
) -> std::io::Result<bool>
where
    O: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut from_sandbox, mut to_sandbox) = inside.split();
    let (mut from_server, mut to_server) = tokio::io::split(outside);
    let c = &shared.counters;
    let mut first = Vec::new();
    // On the heap: the buffers would otherwise enlarge every connection task for its whole life.
    let mut chunk = vec![0u8; 4096];
    let mut back = vec![0u8; 16 * 1024];
    let seen = loop {
        tokio::select! {
            n = from_sandbox.read(&mut chunk) => {
                let n = n?;
                first.extend_from_slice(&chunk[..n]);
                match sniff::first(&first) {
                    First::More if n > 0 && first.len() < sniff::LIMIT => {}
                    // The sandbox ended its side first: what came is all there is.
                    _ if n == 0 => break First::Other,
                    seen => break seen,
                }
            }
            n = from_server.read(&mut back) => {
                let n = n?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                to_sandbox.write_all(&back[..n]).await?;
                c.received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    };
    let policy = shared.policy();
    let named = |other: &str| other == name || policy.decide_name_only(other, port).is_ok();
    let refusal = match &seen {
        First::Tls(Some(sni)) if !named(sni) => Some("sni-mismatch"),
        First::Http(Some(host)) if !named(host) => Some("host-mismatch"),
        First::Tls(None) if policy.require_sni() => Some("sni-missing (network.require_sni)"),
        First::Malformed => Some("name-unreadable (a ClientHello not read, or two hosts)"),
        First::More => Some("first bytes too long to read"),
        _ => None,
    };
    if let Some(why) = refusal {
        let said = match &seen {
            First::Tls(Some(n)) | First::Http(Some(n)) => format!("{name} (asking for {n})"),
            _ => name.to_string(),
        };
        shared.deny(said, port, why);
        return Ok(false);
    }
    to_server.write_all(&first).await?;
    c.sent.fetch_add(first.len() as u64, Ordering::Relaxed);
    Ok(true)
}

/// DNS over TCP to the sandbox's resolver: length-prefixed queries, answered in turn,
/// until the sandbox closes or idles.
async fn dns(mut inside: TcpStream, shared: &Shared) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const IDLE: Duration = Duration::from_secs(10);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE, inside.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        match tokio::time::timeout(IDLE, inside.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let answer = shared.resolve_query(&query, true).await;
        let mut out = (answer.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&answer);
        if inside.write_all(&out).await.is_err() {
            return;
        }
    }
}
