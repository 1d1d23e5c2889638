//! The daemon's side of the transparent proxy: for each proxied sandbox, a netns helper
//! makes the in-sandbox listeners; this module accepts on them, judges each flow by the
//! sandbox's [`Policy`], dials allowed destinations from the host's network namespace and
//! relays, counting bytes and refusals. When the helper dies, the sandbox's listeners are
//! closed: it loses its network, never gains any.

mod budget;
pub mod denials;
pub mod dns;
mod egress;
mod hostaddr;
mod icmp;
mod networking;
mod policy;
mod publish;
mod refusals;
mod relay;
pub mod sniff;
mod tcp;
mod udp;
mod worker;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use budget::Budget;
pub use denials::{Announce, Denied};
pub use hostaddr::HostAddresses;
pub use networking::Networking;
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
    /// Descriptors its connections and flows hold of the daemon's budget, and its share.
    pub descriptors: u64,
    pub share: u64,
}

/// Distinct names whose hits are counted per sandbox; later ones count as "(other)".
const MAX_NAMES_COUNTED: usize = 1000;

/// What every task of one sandbox's proxy shares.
pub struct Shared {
    name: String,
    policy: RwLock<Policy>,
    max_connections: AtomicU32,
    max_udp_flows: AtomicU32,
    counters: Counters,
    log: denials::DenialLog,
    announce: Option<Announce>,
    flows: udp::Flows,
    helper: netns::Client,
    host: Arc<HostAddresses>,
    names: Arc<dns::Names>,
    upstream: Arc<dns::Upstream>,
    /// The daemon answers the sandbox's DNS (`network.dns`).
    dns: std::sync::atomic::AtomicBool,
    egress: RwLock<egress::Egress>,
    /// Connections and flows allowed by name, per name (at most [`MAX_NAMES_COUNTED`]).
    name_hits: Mutex<HashMap<String, u64>>,
    /// Raw sockets inside the sandbox for the ICMP errors of refused datagrams.
    raw: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    /// The helper can log refusals, so the address rules are installed.
    judged: bool,
    /// One rule update at a time, each made from the state current when it runs.
    rules: tokio::sync::Mutex<()>,
    /// Cancelled when the helper dies (and at detach): every connection and flow ends,
    /// and new ones are refused at once rather than left to time out.
    cut: CancellationToken,
    /// The daemon-wide descriptor budget, this sandbox's account in it, and its place in
    /// the shares while it is attached.
    budget: Arc<Budget>,
    account: Arc<budget::Account>,
    _member: budget::Member,
}

impl Shared {
    fn policy(&self) -> Policy {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs the verdict rules of the current policy and host addresses (a SYN to
    /// what they refuse is reset before the proxy sees it).
    async fn push_rules(&self) {
        if !self.judged {
            return;
        }
        let _one = self.rules.lock().await;
        let rules = self.policy().address_rules(&self.host.current());
        if let Err(e) = self.helper.set_rules(&rules).await {
            tracing::warn!(
                SANDBOX = self.name.as_str(),
                "cannot install the address rules (the proxy still refuses, by reset): {}",
                crate::error_chain(&e)
            );
        }
    }

    /// Answers a refused datagram the way a closed port would.
    fn unreachable(&self, refused: SocketAddr, sandbox: SocketAddr, len: usize) {
        if let Some(raw) = &self.raw {
            icmp::send(raw, refused, sandbox, len);
        }
    }

    /// Counts, logs and announces one refusal.
    fn deny(&self, destination: String, port: u16, reason: &str) {
        self.counters.denied.fetch_add(1, Ordering::Relaxed);
        self.log.record(
            &self.name,
            destination,
            port,
            reason,
            self.announce.as_ref(),
        );
    }

    /// Counts, logs and announces a refused or failed name lookup, once per name.
    fn deny_lookup(&self, name: &str, reason: &str) {
        if self
            .log
            .record_lookup(&self.name, name, reason, self.announce.as_ref())
        {
            self.counters.denied.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_resolver(&self, dst: SocketAddr) -> bool {
        dst.port() == 53
            && self.dns.load(Ordering::Relaxed)
            && self.names.classify(dst.ip()) == dns::Target::Resolver
    }

    /// How a destination is shown in the denial log: the name behind a synthetic address.
    fn shown(&self, ip: IpAddr) -> String {
        match self.names.classify(ip) {
            dns::Target::Name(n) => n,
            dns::Target::Host => dns::HOST_NAME.into(),
            _ => ip.to_string(),
        }
    }

    fn hit(&self, name: &str) {
        let mut hits = self.name_hits.lock().unwrap_or_else(|p| p.into_inner());
        let key = if hits.len() < MAX_NAMES_COUNTED || hits.contains_key(name) {
            name
        } else {
            "(other)"
        };
        *hits.entry(key.to_string()).or_default() += 1;
    }

    fn egress(&self) -> egress::Egress {
        self.egress
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where a flow to `dst` may go: what to dial, in order, or nothing (the refusal is
    /// then recorded). Synthetic addresses stand for their name, resolved on the host —
    /// or, with a `socks5h` upstream, handed to it unresolved.
    async fn destinations(&self, dst: SocketAddr) -> Vec<egress::Dest> {
        use egress::Dest;
        let policy = self.policy();
        let port = dst.port();
        let target = if self.dns.load(Ordering::Relaxed) {
            self.names.classify(dst.ip())
        } else {
            dns::Target::Address
        };
        match target {
            dns::Target::Address => match policy.decide(dst, &self.host.current()) {
                Ok(()) => vec![Dest::Addr(dst)],
                Err(why) => {
                    self.deny(dst.ip().to_string(), port, why.as_str());
                    Vec::new()
                }
            },
            dns::Target::Host => match policy.decide_host_port(port) {
                Ok(()) => vec![Dest::Addr(SocketAddr::new(
                    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                    port,
                ))],
                Err(why) => {
                    self.deny(dns::HOST_NAME.into(), port, why.as_str());
                    Vec::new()
                }
            },
            dns::Target::Resolver => {
                self.deny(
                    dst.ip().to_string(),
                    port,
                    "the sandbox's resolver serves port 53 only",
                );
                Vec::new()
            }
            dns::Target::UnknownName => {
                self.deny(
                    dst.ip().to_string(),
                    port,
                    "a synthetic address this daemon did not hand out",
                );
                Vec::new()
            }
            dns::Target::Name(name) if self.egress().remote_dns() => {
                match policy.decide_name_only(&name, port) {
                    Ok(()) => {
                        self.hit(&name);
                        vec![Dest::Name(name, port)]
                    }
                    Err(why) => {
                        self.deny(name, port, why.as_str());
                        Vec::new()
                    }
                }
            }
            dns::Target::Name(name) => {
                let host = self.host.current();
                let mut out = Vec::new();
                let mut refusal = Denial::NameNotAllowed;
                for ip in self.upstream.resolve(&name).await {
                    let real = SocketAddr::new(ip, port);
                    match policy.decide_named(&name, real, &host) {
                        Ok(()) => out.push(Dest::Addr(real)),
                        Err(why) => refusal = why,
                    }
                }
                if out.is_empty() {
                    self.deny(name, port, refusal.as_str());
                } else {
                    self.hit(&name);
                }
                out
            }
        }
    }

    /// The daemon's answer to one DNS query from the sandbox (over TCP: no size limit
    /// but the message's).
    async fn resolve_query(&self, raw: &[u8], over_tcp: bool) -> Vec<u8> {
        let policy = self.policy();
        dns::answer(
            raw,
            over_tcp,
            &self.names,
            &self.upstream,
            !self.egress().remote_dns(),
            |name| policy.name_answerable(name).map_err(|d| d.as_str()),
            |name, why| self.deny_lookup(name, why),
        )
        .await
    }

    /// Descriptors for one more connection or flow, or the refusal recorded.
    fn slot(&self, dst: SocketAddr) -> Option<budget::Slot> {
        let slot = self.budget.take(&self.account);
        if slot.is_none() {
            self.deny(self.shown(dst.ip()), dst.port(), budget::REASON);
        }
        slot
    }

    fn max_connections(&self) -> u64 {
        self.max_connections.load(Ordering::Relaxed) as u64
    }

    fn max_udp_flows(&self) -> usize {
        self.max_udp_flows.load(Ordering::Relaxed) as usize
    }
}

struct Attached {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

/// Every proxied sandbox of this daemon.
pub struct Proxy {
    /// The runtime of every connection and flow: one thread of its own, so that the
    /// proxy's short bursts neither wait behind D-Bus and the supervisor nor wake a
    /// second worker (on two vCPUs a cross-CPU wake-up costs more than the work).
    rt: tokio::runtime::Handle,
    helper_exe: PathBuf,
    announce: Option<Announce>,
    host: Arc<HostAddresses>,
    names: Arc<dns::Names>,
    upstream: Arc<dns::Upstream>,
    /// The next sandbox's helper, started ahead of need.
    spare: Mutex<Option<netns::Spawned>>,
    budget: Arc<Budget>,
    sandboxes: Arc<Mutex<HashMap<String, Attached>>>,
    /// The watcher of host address changes runs (started with the first sandbox).
    watching: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Helper(#[from] ControlError),
    #[error("cannot use the helper's listeners")]
    Listeners(#[source] std::io::Error),
    #[error("{0}")]
    Publish(String),
}

impl Proxy {
    /// `helper_exe` is run as `helper_exe netns-helper PID`: normally this very binary.
    /// `announce` receives refusals (within the denial log's rate budget); `upstream`
    /// resolves names on the host for every sandbox.
    /// The descriptor budget comes from this process's RLIMIT_NOFILE as it is now.
    pub fn new(
        helper_exe: PathBuf,
        announce: Option<Announce>,
        upstream: Arc<dns::Upstream>,
    ) -> Self {
        let budget = Arc::new(Budget::from_rlimit());
        let rt = worker::proxy_runtime();
        tracing::info!(
            "proxy descriptor budget: {} for every sandbox together ({} connections or flows)",
            budget.total(),
            budget.total() / budget::PER_FLOW
        );
        Self {
            rt,
            budget,
            helper_exe,
            announce,
            host: Arc::new(HostAddresses::new()),
            names: Arc::new(dns::Names::default()),
            upstream,
            spare: Mutex::new(None),
            sandboxes: Arc::default(),
            watching: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Keeps every sandbox's verdict rules in step with the host's addresses: an address
    /// the host gains is refused at the SYN from then on, like the ones it had.
    fn watch_host(&self) {
        if self.watching.swap(true, Ordering::Relaxed) {
            return;
        }
        let Some(changes) = hostaddr::Changes::subscribe() else {
            tracing::warn!("cannot follow the host's address changes");
            return;
        };
        let sandboxes = self.sandboxes.clone();
        tokio::spawn(async move {
            while changes.next().await.is_some() {
                let all: Vec<Arc<Shared>> = sandboxes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .map(|a| a.shared.clone())
                    .collect();
                for s in all {
                    s.push_rules().await;
                }
            }
        });
    }

    /// A helper that is already running (exec'd and loaded), and a new spare for the next
    /// sandbox: this keeps the helper's start out of the sandbox's start-up time.
    fn take_helper(&self) -> Result<netns::Spawned, ControlError> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let ready = match spare.take() {
            Some(mut s) => match s.child.try_wait() {
                Ok(None) => s,
                _ => netns::spawn(&self.helper_exe)?,
            },
            None => netns::spawn(&self.helper_exe)?,
        };
        *spare = netns::spawn(&self.helper_exe).ok();
        Ok(ready)
    }

    fn sandboxes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state sandbox `name`'s tasks share, for its helper's listeners.
    fn shared(
        &self,
        name: &str,
        network: &Network,
        helper: netns::Client,
        raw: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
        judged: bool,
        stop: &CancellationToken,
    ) -> Shared {
        Shared {
            name: name.into(),
            policy: RwLock::new(Policy::new(network)),
            max_connections: AtomicU32::new(network.max_connections),
            max_udp_flows: AtomicU32::new(network.max_udp_flows),
            counters: Counters::default(),
            log: denials::DenialLog::default(),
            announce: self.announce.clone(),
            flows: udp::Flows::default(),
            helper,
            host: self.host.clone(),
            names: self.names.clone(),
            upstream: self.upstream.clone(),
            dns: std::sync::atomic::AtomicBool::new(network.dns),
            name_hits: Mutex::new(HashMap::new()),
            egress: RwLock::new(network.upstream.clone()),
            raw,
            judged,
            rules: tokio::sync::Mutex::new(()),
            cut: stop.child_token(),
            budget: self.budget.clone(),
            account: Arc::default(),
            _member: self.budget.join(),
        }
    }

    /// Gives sandbox `name` (container init `pid`) its network: starts the helper, waits
    /// for its listeners and serves them until [`Proxy::detach`] or the helper's death.
    pub async fn attach(&self, name: &str, pid: u32, network: &Network) -> Result<(), ProxyError> {
        self.detach(name);
        let t0 = std::time::Instant::now();
        let netns::Spawned { mut child, client } = self.take_helper()?;
        let ready = match client.join(pid, READY_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                worker::end_helper(&mut child).await;
                return Err(e.into());
            }
        };
        let stop = CancellationToken::new();
        let netns::Ready {
            tcp4,
            tcp6,
            udp4,
            udp6,
            log,
            raw,
        } = ready;
        if log.is_none() {
            tracing::warn!(
                SANDBOX = name,
                "no nflog in the sandbox's network: refused connections are reset after the handshake"
            );
        }
        let shared = Arc::new(self.shared(name, network, client, raw, log.is_some(), &stop));
        // Registered with the proxy's runtime, which serves them.
        let entered = self.rt.enter();
        let listeners = (|| {
            Ok::<_, std::io::Error>((
                tcp::listener(tcp4)?,
                tcp::listener(tcp6)?,
                udp::socket(udp4)?,
                udp::socket(udp6)?,
            ))
        })();
        drop(entered);
        let (t4, t6, u4, u6) = match listeners {
            Ok(l) => l,
            Err(e) => {
                worker::end_helper(&mut child).await;
                return Err(ProxyError::Listeners(e));
            }
        };
        // Host listeners for published ports, bound before the sandbox runs: a port in
        // use fails the start and names the entry.
        let published = match publish::bind_all(&network.publish).await {
            Ok(p) => p,
            Err(e) => {
                worker::end_helper(&mut child).await;
                return Err(ProxyError::Publish(e));
            }
        };
        self.rt.spawn(tcp::serve(t4, shared.clone(), stop.clone()));
        self.rt.spawn(tcp::serve(t6, shared.clone(), stop.clone()));
        self.rt.spawn(udp::serve(u4, shared.clone(), stop.clone()));
        self.rt.spawn(udp::serve(u6, shared.clone(), stop.clone()));
        for p in published {
            publish::serve(p, shared.clone(), stop.clone());
        }
        if let Some(log) = log {
            self.rt
                .spawn(refusals::serve(log, shared.clone(), stop.clone()));
        }
        shared.push_rules().await;
        self.watch_host();
        worker::watch_helper(child, stop.clone(), shared.cut.clone(), name.to_string());
        tracing::info!(
            SANDBOX = name,
            pid,
            ms = t0.elapsed().as_millis() as u64,
            "proxy attached"
        );
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

    /// Applies a changed `[network]` policy to a running sandbox: new connections and
    /// flows follow it (its verdict rules are in place on return); open ones are left
    /// alone. False when `name` is not proxied.
    pub async fn update(&self, name: &str, network: &Network) -> bool {
        let Some(s) = self.sandboxes().get(name).map(|a| a.shared.clone()) else {
            return false;
        };
        *s.policy.write().unwrap_or_else(|p| p.into_inner()) = Policy::new(network);
        s.max_connections
            .store(network.max_connections, Ordering::Relaxed);
        s.max_udp_flows
            .store(network.max_udp_flows, Ordering::Relaxed);
        s.dns.store(network.dns, Ordering::Relaxed);
        *s.egress.write().unwrap_or_else(|p| p.into_inner()) = network.upstream.clone();
        s.push_rules().await;
        tracing::info!(SANDBOX = name, "network policy reloaded");
        true
    }

    /// Connections and flows sandbox `name` made by name, per name.
    pub fn name_hits(&self, name: &str) -> HashMap<String, u64> {
        self.sandboxes()
            .get(name)
            .map(|a| {
                a.shared
                    .name_hits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }

    /// The latest refusals for sandbox `name`, oldest first.
    pub fn denials(&self, name: &str) -> Vec<Denied> {
        self.sandboxes()
            .get(name)
            .map(|a| a.shared.log.recent())
            .unwrap_or_default()
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
                    descriptors: a.shared.account.used(),
                    share: self.budget.share(),
                }
            })
            .unwrap_or_default()
    }
}
