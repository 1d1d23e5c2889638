//! The daemon's side of the transparent proxy: for each proxied sandbox, a netns helper
//! makes the in-sandbox listeners; this module accepts on them, judges each flow by the
//! sandbox's [`Policy`], dials allowed destinations from the host's network namespace and
//! relays, counting bytes and refusals. When the helper dies, the sandbox's listeners are
//! closed: it loses its network, never gains any.

mod hostaddr;
mod policy;
mod relay;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use hostaddr::HostAddresses;
pub use policy::{Denial, Policy};

use crate::netns::{self, ControlError};
use crate::profile::Network;

/// How long a helper may take to set the namespace up and hand over its listeners.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Live counters of one sandbox (the Sandbox object's properties).
#[derive(Debug, Default)]
pub struct Counters {
    pub active: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub denied: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub active: u64,
    pub sent: u64,
    pub received: u64,
    pub denied: u64,
}

/// What every task of one sandbox's proxy shares.
pub struct Shared {
    name: String,
    policy: RwLock<Policy>,
    max_connections: u32,
    max_udp_flows: u32,
    counters: Counters,
    flows: udp::Flows,
    helper: netns::Client,
    host: Arc<HostAddresses>,
    /// Cancelled when the helper dies (and at detach): every connection and flow ends,
    /// and new ones are refused at once rather than left to time out.
    cut: CancellationToken,
}

impl Shared {
    fn policy(&self) -> Policy {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

struct Attached {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

/// Every proxied sandbox of this daemon.
pub struct Proxy {
    helper_exe: PathBuf,
    host: Arc<HostAddresses>,
    sandboxes: Mutex<HashMap<String, Attached>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Helper(#[from] ControlError),
    #[error("cannot use the helper's listeners")]
    Listeners(#[source] std::io::Error),
}

impl Proxy {
    /// `helper_exe` is run as `helper_exe netns-helper PID`: normally this very binary.
    pub fn new(helper_exe: PathBuf) -> Self {
        Self {
            helper_exe,
            host: Arc::new(HostAddresses::new()),
            sandboxes: Mutex::new(HashMap::new()),
        }
    }

    fn sandboxes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives sandbox `name` (container init `pid`) its network: starts the helper, waits
    /// for its listeners and serves them until [`Proxy::detach`] or the helper's death.
    pub async fn attach(&self, name: &str, pid: u32, network: &Network) -> Result<(), ProxyError> {
        self.detach(name);
        let netns::Spawned { mut child, client } = netns::spawn(&self.helper_exe, pid)?;
        let ready = match client.ready(READY_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(e.into());
            }
        };
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            name: name.into(),
            policy: RwLock::new(Policy::new(network)),
            max_connections: network.max_connections,
            max_udp_flows: network.max_udp_flows,
            counters: Counters::default(),
            flows: udp::Flows::default(),
            helper: client,
            host: self.host.clone(),
            cut: stop.child_token(),
        });
        let listeners = (|| {
            Ok::<_, std::io::Error>((
                tcp::listener(ready.tcp4)?,
                tcp::listener(ready.tcp6)?,
                udp::socket(ready.udp4)?,
                udp::socket(ready.udp6)?,
            ))
        })();
        let (t4, t6, u4, u6) = match listeners {
            Ok(l) => l,
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(ProxyError::Listeners(e));
            }
        };
        tokio::spawn(tcp::serve(t4, shared.clone(), stop.clone()));
        tokio::spawn(tcp::serve(t6, shared.clone(), stop.clone()));
        tokio::spawn(udp::serve(u4, shared.clone(), stop.clone()));
        tokio::spawn(udp::serve(u6, shared.clone(), stop.clone()));
        // The helper lives exactly as long as the proxy of this sandbox.
        let watch = stop.clone();
        let cut = shared.cut.clone();
        let who = name.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = watch.cancelled() => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                status = child.wait() => {
                    tracing::warn!(SANDBOX = who.as_str(), ?status, "netns helper exited: the sandbox has no network now");
                    cut.cancel();
                }
            }
        });
        tracing::info!(SANDBOX = name, pid, "proxy attached");
        self.sandboxes()
            .insert(name.into(), Attached { shared, stop });
        Ok(())
    }

    /// Closes sandbox `name`'s listeners and connections and ends its helper.
    pub fn detach(&self, name: &str) {
        if let Some(a) = self.sandboxes().remove(name) {
            a.stop.cancel();
        }
    }

    /// The counters of sandbox `name` (zeros when it is not proxied).
    pub fn stats(&self, name: &str) -> Stats {
        self.sandboxes()
            .get(name)
            .map(|a| {
                let c = &a.shared.counters;
                Stats {
                    active: c.active.load(Ordering::Relaxed),
                    sent: c.sent.load(Ordering::Relaxed),
                    received: c.received.load(Ordering::Relaxed),
                    denied: c.denied.load(Ordering::Relaxed),
                }
            })
            .unwrap_or_default()
    }
}

/// What the supervisor needs from the network side; [`Proxy`] is the real one.
pub trait Networking: Send + Sync + 'static {
    fn attach<'a>(
        &'a self,
        name: &'a str,
        pid: u32,
        network: &'a Network,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
    fn detach(&self, name: &str);
    fn stats(&self, name: &str) -> Stats;
}

impl Networking for Proxy {
    fn attach<'a>(
        &'a self,
        name: &'a str,
        pid: u32,
        network: &'a Network,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            Proxy::attach(self, name, pid, network)
                .await
                .map_err(|e| crate::error_chain(&e))
        })
    }

    fn detach(&self, name: &str) {
        Proxy::detach(self, name)
    }

    fn stats(&self, name: &str) -> Stats {
        Proxy::stats(self, name)
    }
}
