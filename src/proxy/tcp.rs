//! TCP: accept what TPROXY hands the listeners, judge the original destination (the
//! accepted socket's local address), dial it from the host and relay.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::policy::canonical;
use super::{relay, Shared};

/// How long a dial to the destination may take before the sandbox's connection is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Accept errors (fd exhaustion) are retried after this pause instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Resets the connection at once (RST), so the sandbox learns of a refusal immediately.
fn reset(stream: TcpStream) {
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
            shared.counters.denied.fetch_add(1, Ordering::Relaxed);
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
    if let Err(why) = shared.policy().decide(dst, &shared.host.current()) {
        c.denied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(SANDBOX = name, %dst, %peer, reason = why.as_str(), "tcp denied");
        return reset(inside);
    }
    let open = c.active.fetch_add(1, Ordering::Relaxed) + 1;
    let _active = Active(shared);
    if open > shared.max_connections as u64 {
        c.denied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(SANDBOX = name, %dst, "tcp refused: network.max_connections reached");
        return reset(inside);
    }
    let outside = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(SANDBOX = name, %dst, "tcp dial failed: {e}");
            return reset(inside);
        }
        Err(_) => {
            tracing::debug!(SANDBOX = name, %dst, "tcp dial timed out");
            return reset(inside);
        }
    };
    let _ = inside.set_nodelay(true);
    let _ = outside.set_nodelay(true);
    if let Err(e) = relay::relay(&inside, &outside, &c.sent, &c.received).await {
        tracing::debug!(SANDBOX = name, %dst, "tcp relay ended: {e}");
    }
}
