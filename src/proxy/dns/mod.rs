//! The sandbox's resolver is the daemon. A sandbox's `/etc/resolv.conf` names
//! [`RESOLVER_V4`] / [`RESOLVER_V6`]; its queries reach the proxy like any flow and are
//! answered here:
//!
//! * names the policy refuses get NXDOMAIN (and a denial record);
//! * names the upstream servers do not answer get SERVFAIL, and a record that says why;
//! * `host.sandbox.internal` is [`HOST_V4`] / [`HOST_V6`], dialed as the host's loopback;
//! * other names are resolved on the host (the daemon's configured servers, else the
//!   host's `/etc/resolv.conf`), and answered with a **synthetic address** of their own,
//!   one per name, never reused for another name while the daemon runs. A connection to
//!   a synthetic address tells the daemon the exact name, so the policy decides by name and
//!   port and the daemon dials the name's real addresses: an address shared by many names
//!   (a CDN) cannot be used to reach a name that is not allowed.

pub mod message;
pub mod records;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use message::{Query, Reply, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_SERVFAIL, TYPE_A, TYPE_AAAA};

/// The resolver address inside every proxied sandbox.
pub const RESOLVER_V4: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
pub const RESOLVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd5a, 0x5bd0, 0, 0, 0, 0, 0, 1);
/// `host.sandbox.internal` inside.
pub const HOST_NAME: &str = "host.sandbox.internal";
pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 254);
pub const HOST_V6: Ipv6Addr = Ipv6Addr::new(0xfd5a, 0x5bd0, 0, 0, 0, 0, 0, 0xfe);
/// Synthetic addresses: 100.89.0.0/16 and fd5a:5bd0:ffff::/112 (index 1 … 65534).
const SYNTH_V4: u32 = u32::from_be_bytes([100, 89, 0, 0]);
const SYNTH_V6: u128 = 0xfd5a_5bd0_ffff_0000_0000_0000_0000_0000;
const SYNTH_MAX: u32 = 65_534;
/// TTL of synthetic answers: short, the mapping itself never changes.
const SYNTH_TTL: u32 = 60;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
const CACHE_MAX_TTL: u32 = 300;
const CACHE_MAX: usize = 10_000;

/// What a destination address means to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The sandbox's resolver.
    Resolver,
    /// `host.sandbox.internal`.
    Host,
    /// A name the sandbox got a synthetic address for.
    Name(String),
    /// A synthetic address the daemon never handed out (or before a restart).
    UnknownName,
    /// An ordinary address.
    Address,
}

/// The name ↔ synthetic address table, shared by all sandboxes of the daemon.
#[derive(Default)]
pub struct Names {
    table: Mutex<(HashMap<String, u32>, Vec<String>)>,
}

impl Names {
    /// The synthetic addresses of `name`, allocating them on first use; `None` when the
    /// range is exhausted.
    pub fn addresses(&self, name: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let index = match t.0.get(name) {
            Some(i) => *i,
            None => {
                if t.1.len() as u32 >= SYNTH_MAX {
                    return None;
                }
                t.1.push(name.to_string());
                let i = t.1.len() as u32;
                t.0.insert(name.to_string(), i);
                i
            }
        };
        Some((
            Ipv4Addr::from(SYNTH_V4 + index),
            Ipv6Addr::from(SYNTH_V6 + index as u128),
        ))
    }

    /// What `ip` stands for.
    pub fn classify(&self, ip: IpAddr) -> Target {
        let index = match ip {
            IpAddr::V4(a) if a == RESOLVER_V4 => return Target::Resolver,
            IpAddr::V6(a) if a == RESOLVER_V6 => return Target::Resolver,
            IpAddr::V4(a) if a == HOST_V4 => return Target::Host,
            IpAddr::V6(a) if a == HOST_V6 => return Target::Host,
            IpAddr::V4(a) if u32::from(a) >> 16 == SYNTH_V4 >> 16 => u32::from(a) & 0xffff,
            IpAddr::V6(a) if u128::from(a) >> 16 == SYNTH_V6 >> 16 => {
                (u128::from(a) & 0xffff) as u32
            }
            _ => return Target::Address,
        };
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match index.checked_sub(1).and_then(|i| t.1.get(i as usize)) {
            Some(name) => Target::Name(name.clone()),
            None => Target::UnknownName,
        }
    }
}

/// Why the host-side resolver has no answer: a sandbox gets SERVFAIL, and the denial log
/// this text, so that a broken upstream is not mistaken for a name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Neither `dns_servers` nor the host's `/etc/resolv.conf` names a server.
    NoServers,
    /// Every server was asked: each one's failure, in order.
    Failed(Vec<(SocketAddr, String)>),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoServers => write!(
                f,
                "no upstream DNS server: set dns_servers in sandboxd.toml, or a nameserver in the host's /etc/resolv.conf"
            ),
            Self::Failed(failures) => {
                write!(f, "upstream DNS failed (")?;
                for (i, (server, why)) in failures.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{server}: {why}")?;
                }
                write!(
                    f,
                    "): check the host's network, or dns_servers in sandboxd.toml"
                )
            }
        }
    }
}

/// The host-side resolver: asks the configured servers, caches by TTL.
pub struct Upstream {
    /// Replaced by a reload of the daemon's configuration.
    servers: Mutex<Vec<SocketAddr>>,
    cache: Mutex<HashMap<(String, u16), (Instant, Reply)>>,
}

/// The nameservers of a resolv.conf text (port 53).
pub fn servers_of_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Upstream {
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self {
            servers: Mutex::new(servers),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The servers asked now.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks `servers` from now on (the cache is dropped: it holds the old servers' answers).
    pub fn set_servers(&self, servers: Vec<SocketAddr>) {
        *self.servers.lock().unwrap_or_else(|p| p.into_inner()) = servers;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Servers from the daemon config, else the host's `/etc/resolv.conf`.
    pub fn from_config(configured: &[SocketAddr]) -> Self {
        let servers = if configured.is_empty() {
            std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| servers_of_resolv_conf(&t))
                .unwrap_or_default()
        } else {
            configured.to_vec()
        };
        Self::new(servers)
    }

    /// The answer for `name`/`qtype`, from the cache or the servers in turn.
    pub async fn lookup(&self, name: &str, qtype: u16) -> Result<Reply, UpstreamError> {
        let key = (name.to_string(), qtype);
        if let Some((until, r)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if Instant::now() < *until {
                return Ok(r.clone());
            }
        }
        let servers = self.servers();
        if servers.is_empty() {
            return Err(UpstreamError::NoServers);
        }
        let mut failures = Vec::new();
        for server in servers {
            match ask(server, name, qtype).await {
                Err(why) => failures.push((server, why)),
                Ok(r) => {
                    let ttl = r.ttl.min(CACHE_MAX_TTL);
                    let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    if c.len() >= CACHE_MAX {
                        c.clear();
                    }
                    c.insert(
                        key,
                        (Instant::now() + Duration::from_secs(ttl as u64), r.clone()),
                    );
                    return Ok(r);
                }
            }
        }
        Err(UpstreamError::Failed(failures))
    }

    /// Every address of `name`, IPv4 first.
    pub async fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let (a, aaaa) = tokio::join!(self.lookup(name, TYPE_A), self.lookup(name, TYPE_AAAA));
        a.into_iter()
            .chain(aaaa)
            .flat_map(|r| r.addresses)
            .collect()
    }
}

/// One query to one server over UDP, again over TCP when the answer was truncated; on
/// failure, what went wrong in a few words. Only a reply to this very question counts
/// (its id and its question section), so a guessed id from elsewhere is ignored.
async fn ask(server: SocketAddr, name: &str, qtype: u16) -> Result<Reply, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(io_reason)?;
    sock.connect(server).await.map_err(io_reason)?;
    let id: u16 = rand_id();
    let q = Query::encode(id, name, qtype).map_err(|e| e.to_string())?;
    sock.send(&q).await.map_err(io_reason)?;
    let mut buf = vec![0u8; usize::from(message::EDNS_SIZE)];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    let late = || format!("no answer within {}s", UPSTREAM_TIMEOUT.as_secs());
    let reply = loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| late())?
            .map_err(io_reason)?;
        match Reply::parse(&buf[..n]) {
            Ok(r) if r.answers(&q) => break r,
            _ => continue, // not ours: keep waiting until the deadline
        }
    };
    let reply = if reply.truncated {
        tokio::time::timeout_at(deadline, ask_tcp(server, &q))
            .await
            .map_err(|_| late())??
    } else {
        reply
    };
    match reply.rcode {
        RCODE_NOERROR | RCODE_NXDOMAIN => Ok(reply),
        code => Err(format!("answered {}", message::rcode_name(code))),
    }
}

/// The query `q` over TCP (RFC 7766: each message after its two-byte length).
async fn ask_tcp(server: SocketAddr, q: &[u8]) -> Result<Reply, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server)
        .await
        .map_err(io_reason)?;
    let len = u16::try_from(q.len()).map_err(|_| "query too long".to_string())?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(q);
    tcp.write_all(&out).await.map_err(io_reason)?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).await.map_err(io_reason)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut reply).await.map_err(io_reason)?;
    match Reply::parse(&reply) {
        Ok(r) if r.answers(q) => Ok(r),
        Ok(_) => Err("answered another question over TCP".into()),
        Err(e) => Err(format!("over TCP: {e}")),
    }
}

fn io_reason(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused (nothing answers DNS there)".to_string(),
        _ => e.to_string(),
    }
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    if getrandom(&mut b) {
        u16::from_ne_bytes(b)
    } else {
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            & 0xffff) as u16
    }
}

fn getrandom(buf: &mut [u8]) -> bool {
    // SAFETY: buf is a valid writable buffer of its length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    n == buf.len() as isize
}

/// Answers one query from a sandbox. `allowed(name)` is the policy's verdict on the name
/// (an error string is the denial reason, recorded by the caller through `refused`, as is
/// the reason of a failed upstream lookup).
///
/// With `lookup` false (a `socks5h` upstream resolves names), allowed names get their
/// synthetic address without the host ever looking them up, and no other records.
///
/// Other record types of allowed names (SRV, TXT, MX…) are the upstream's answer, their
/// addresses left out; one longer than the client's datagram (`over_tcp` false) is
/// truncated with TC set, for it to ask again over TCP.
pub async fn answer(
    raw: &[u8],
    over_tcp: bool,
    names: &Names,
    upstream: &Upstream,
    lookup: bool,
    allowed: impl Fn(&str) -> Result<(), &'static str>,
    refused: impl Fn(&str, &str),
) -> Vec<u8> {
    let q = match Query::parse(raw) {
        Ok(q) => q,
        Err(_) => return Query::error_for(raw, message::RCODE_FORMERR),
    };
    let name = q.name.as_str();
    let wants = |t: u16| q.qtype == t;
    if name == HOST_NAME {
        let addrs: Vec<IpAddr> = match q.qtype {
            TYPE_A => vec![HOST_V4.into()],
            TYPE_AAAA => vec![HOST_V6.into()],
            _ => Vec::new(),
        };
        return q.answer(RCODE_NOERROR, &addrs, SYNTH_TTL);
    }
    if let Err(why) = allowed(name) {
        refused(name, why);
        return q.answer(RCODE_NXDOMAIN, &[], 0);
    }
    if !wants(TYPE_A) && !wants(TYPE_AAAA) {
        if !lookup {
            return q.answer(RCODE_NOERROR, &[], 0);
        }
        let reply = match upstream.lookup(name, q.qtype).await {
            Ok(reply) => reply,
            Err(e) => {
                refused(name, &e.to_string());
                return q.answer(RCODE_SERVFAIL, &[], 0);
            }
        };
        let limit = if over_tcp {
            usize::from(u16::MAX)
        } else {
            q.udp_size
        };
        return records::relay(&q, &reply.raw, limit)
            .unwrap_or_else(|_| q.answer(RCODE_SERVFAIL, &[], 0));
    }
    if lookup {
        let reply = match upstream.lookup(name, q.qtype).await {
            Ok(reply) => reply,
            Err(e) => {
                refused(name, &e.to_string());
                return q.answer(RCODE_SERVFAIL, &[], 0);
            }
        };
        if reply.rcode == RCODE_NXDOMAIN {
            return q.answer(RCODE_NXDOMAIN, &[], 0);
        }
        if reply.addresses.is_empty() {
            return q.answer(RCODE_NOERROR, &[], 0);
        }
    }
    match names.addresses(name) {
        Some((v4, v6)) => {
            let synth: IpAddr = if wants(TYPE_A) { v4.into() } else { v6.into() };
            q.answer(RCODE_NOERROR, &[synth], SYNTH_TTL)
        }
        None => q.answer(RCODE_SERVFAIL, &[], 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback upstream that first sends a reply with the right id to another question
    /// (what an off-path spoofer would send), then the real one truncated; the answer with
    /// the address comes over TCP on the same port.
    #[tokio::test]
    async fn a_spoofed_reply_is_ignored_and_a_truncated_one_is_asked_again_over_tcp() {
        let (udp, tcp) = (0..20)
            .find_map(|_| {
                let udp = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
                let port = udp.local_addr().ok()?.port();
                let tcp = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
                Some((udp, tcp))
            })
            .unwrap();
        let server = udp.local_addr().unwrap();
        let real: IpAddr = "192.0.2.7".parse().unwrap();
        let upstream = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut buf = [0u8; 512];
            udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (n, from) = udp.recv_from(&mut buf).unwrap();
            let q = Query::parse(&buf[..n]).unwrap();
            let forged = Query::encode(q.id, "evil.test", TYPE_A).unwrap();
            let forged = Query::parse(&forged).unwrap().answer(
                RCODE_NOERROR,
                &["203.0.113.66".parse().unwrap()],
                60,
            );
            udp.send_to(&forged, from).unwrap();
            let mut truncated = q.answer(RCODE_NOERROR, &[], 60);
            truncated[2] |= 0x02;
            udp.send_to(&truncated, from).unwrap();
            // Bounded: if the client never comes over TCP, the test fails instead of hanging.
            tcp.set_nonblocking(true).unwrap();
            let (mut conn, _) = (0..500)
                .find_map(|_| {
                    let c = tcp.accept().ok();
                    if c.is_none() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    c
                })
                .expect("no query over TCP within 5 s");
            conn.set_nonblocking(false).unwrap();
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut query).unwrap();
            let answer = Query::parse(&query)
                .unwrap()
                .answer(RCODE_NOERROR, &[real], 60);
            let mut out = u16::try_from(answer.len()).unwrap().to_be_bytes().to_vec();
            out.extend_from_slice(&answer);
            conn.write_all(&out).unwrap();
        });
        let reply = ask(server, "allowed.test", TYPE_A).await.unwrap();
        assert_eq!(reply.addresses, [real]);
        assert!(!reply.truncated);
        upstream.join().unwrap();
    }

    #[test]
    fn synthetic_addresses_are_stable_and_never_shared() {
        let n = Names::default();
        let (a4, a6) = n.addresses("allowed.test").unwrap();
        let (b4, b6) = n.addresses("other.test").unwrap();
        assert_ne!(a4, b4);
        assert_ne!(a6, b6);
        assert_eq!(n.addresses("allowed.test").unwrap(), (a4, a6));
        assert_eq!(n.classify(a4.into()), Target::Name("allowed.test".into()));
        assert_eq!(n.classify(b6.into()), Target::Name("other.test".into()));
        assert_eq!(
            n.classify("100.89.9.9".parse().unwrap()),
            Target::UnknownName
        );
        assert_eq!(n.classify(RESOLVER_V4.into()), Target::Resolver);
        assert_eq!(n.classify(HOST_V6.into()), Target::Host);
        assert_eq!(n.classify("1.2.3.4".parse().unwrap()), Target::Address);
    }

    #[test]
    fn resolv_conf_servers() {
        let s = servers_of_resolv_conf(
            "# c\nnameserver 127.0.0.53\nsearch x\nnameserver fe80::1%eth0\nnameserver bogus\n",
        );
        assert_eq!(
            s,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
