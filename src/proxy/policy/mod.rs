//! The address policy (DESIGN §5): which destinations a sandbox's connections may reach.
//!
//! In order: `deny` entries win; the host itself (its loopback, the unspecified address,
//! and every address it has right now) is reachable only through `allow_host`, never
//! through a CIDR that happens to contain it; private and special-purpose ranges need
//! `allow_lan` or an `allow` entry lying inside that range (so the default `0.0.0.0/0`
//! does not open them); everything else needs an `allow` entry.

use std::net::{IpAddr, SocketAddr};

use crate::profile::{AllowHost, Cidr, Destination, Network, Ports};

/// A network entry of `allow` / `deny`: a prefix with an optional port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    net: Cidr,
    ports: Ports,
}

/// A private or special-purpose range, and the reason a refusal into it gives.
struct Special {
    net: Cidr,
    reason: &'static str,
}

/// Private and special-purpose ranges (IANA special registries), apart from the host's
/// own loopback and unspecified ranges, which count as the host. None is assumed to route
/// nowhere: documentation and benchmarking ranges are real LANs on some machines and the
/// fake-IP range of common proxy clients, so they are refused like the rest.
const SPECIAL: &[Special] = &[
    Special {
        net: Cidr::v4([10, 0, 0, 0], 8),
        reason: "10.0.0.0/8, a private range (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([100, 64, 0, 0], 10),
        reason: "100.64.0.0/10, carrier-grade NAT (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([169, 254, 0, 0], 16),
        reason: "169.254.0.0/16, link-local (cloud metadata) (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([172, 16, 0, 0], 12),
        reason: "172.16.0.0/12, a private range (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([192, 0, 0, 0], 24),
        reason: "192.0.0.0/24, IETF protocol assignments (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([192, 0, 2, 0], 24),
        reason: "192.0.2.0/24, documentation (TEST-NET-1) (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([192, 88, 99, 0], 24),
        reason: "192.88.99.0/24, 6to4 relays (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([192, 168, 0, 0], 16),
        reason: "192.168.0.0/16, a private range (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([198, 18, 0, 0], 15),
        reason: "198.18.0.0/15, benchmarking (proxy clients' fake-IP range) (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([198, 51, 100, 0], 24),
        reason: "198.51.100.0/24, documentation (TEST-NET-2) (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([203, 0, 113, 0], 24),
        reason: "203.0.113.0/24, documentation (TEST-NET-3) (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([224, 0, 0, 0], 4),
        reason: "224.0.0.0/4, multicast (network.allow_lan)",
    },
    Special {
        net: Cidr::v4([240, 0, 0, 0], 4),
        reason: "240.0.0.0/4, reserved (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
        reason: "64:ff9b::/96, NAT64 (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        reason: "64:ff9b:1::/48, local NAT64 (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        reason: "100::/64, discard (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        reason: "2001::/23, IETF protocol assignments (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        reason: "2001:db8::/32, documentation (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        reason: "2002::/16, 6to4 (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        reason: "fc00::/7, unique local (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        reason: "fe80::/10, link-local (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        reason: "fec0::/10, site-local (network.allow_lan)",
    },
    Special {
        net: Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        reason: "ff00::/8, multicast (network.allow_lan)",
    },
];

/// Ranges that reach the host itself whatever its interfaces are.
const HOST: &[Cidr] = &[
    Cidr::v4([0, 0, 0, 0], 8),
    Cidr::v4([127, 0, 0, 0], 8),
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
];

impl Entry {
    fn matches(&self, dst: SocketAddr) -> bool {
        self.net.contains(dst.ip())
            && self
                .ports
                .is_none_or(|(a, b)| (a..=b).contains(&dst.port()))
    }
}

/// A host name entry of `allow`/`deny`: `name` (that name only) or `*.domain` (every
/// name below `domain`, not `domain` itself), with an optional port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// Lower case, no trailing dot; for `*.domain` it is `.domain`.
    pattern: String,
    ports: Ports,
}

impl NameEntry {
    fn matches_name(&self, name: &str) -> bool {
        if self.pattern.starts_with('.') {
            name.ends_with(&self.pattern)
        } else {
            name == self.pattern
        }
    }

    fn matches(&self, name: &str, port: Option<u16>) -> bool {
        self.matches_name(name)
            && match (self.ports, port) {
                (None, _) => true,
                (Some((a, b)), Some(p)) => (a..=b).contains(&p),
                // Without a port (a DNS question) any port range counts.
                (Some(_), None) => true,
            }
    }
}

/// Why a destination was refused; shown in logs and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Denied,
    Host,
    /// In a private or special range: the range's own reason.
    Special(&'static str),
    NotAllowed,
    NameNotAllowed,
    NameDenied,
}

impl Denial {
    pub fn as_str(&self) -> &'static str {
        match self {
            Denial::Denied => "matches network.deny",
            Denial::Host => "the host itself (network.allow_host)",
            Denial::Special(reason) => reason,
            Denial::NotAllowed => "not in network.allow",
            Denial::NameNotAllowed => "name not in network.allow",
            Denial::NameDenied => "name matches network.deny",
        }
    }
}

/// One sandbox's compiled address policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    allow: Vec<Entry>,
    deny: Vec<Entry>,
    allow_names: Vec<NameEntry>,
    deny_names: Vec<NameEntry>,
    allow_host: AllowHost,
    allow_lan: bool,
    require_sni: bool,
}

/// IPv4-mapped IPv6 destinations are judged (and dialed) as the IPv4 address they are.
pub fn canonical(dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => dst,
        },
        v4 => v4,
    }
}

impl Policy {
    /// Compiles the address entries of `network` (name entries are not addresses and are
    /// left to the name policy).
    pub fn new(network: &Network) -> Self {
        let parse = |l: &[Destination]| {
            l.iter()
                .filter_map(|d| match d {
                    Destination::Net { net, ports } => Some(Entry {
                        net: *net,
                        ports: *ports,
                    }),
                    Destination::Name { .. } => None,
                })
                .collect()
        };
        let names = |l: &[Destination]| {
            l.iter()
                .filter_map(|d| match d {
                    Destination::Name { pattern, ports } => Some(NameEntry {
                        pattern: pattern.clone(),
                        ports: *ports,
                    }),
                    Destination::Net { .. } => None,
                })
                .collect()
        };
        Self {
            allow: parse(&network.allow),
            deny: parse(&network.deny),
            allow_names: names(&network.allow),
            deny_names: names(&network.deny),
            allow_host: network.allow_host.clone(),
            allow_lan: network.allow_lan,
            require_sni: network.require_sni,
        }
    }

    /// Whether a TLS ClientHello to a name's address without a server name is refused.
    pub fn require_sni(&self) -> bool {
        self.require_sni
    }

    /// Whether the sandbox's resolver may answer for `name` at all: not denied by name,
    /// and either allowed by name or possibly reachable through an address entry (then the
    /// address it resolves to decides at connection time).
    pub fn name_answerable(&self, name: &str) -> Result<(), Denial> {
        if self
            .deny_names
            .iter()
            .any(|e| e.ports.is_none() && e.matches_name(name))
        {
            return Err(Denial::NameDenied);
        }
        if self.allow_names.iter().any(|e| e.matches(name, None)) || !self.allow.is_empty() {
            Ok(())
        } else {
            Err(Denial::NameNotAllowed)
        }
    }

    /// Decides for a connection the sandbox made by `name` (through the daemon's resolver)
    /// to `dst`, one of the addresses the host resolved the name to. A name `allow` entry
    /// stands in for an address entry; `deny`, the host and private ranges still apply to
    /// the address, so a name cannot be pointed at the LAN or the host (DNS rebinding).
    pub fn decide_named(&self, name: &str, dst: SocketAddr, host: &[IpAddr]) -> Result<(), Denial> {
        let port = Some(dst.port());
        if self.deny_names.iter().any(|e| e.matches(name, port)) {
            return Err(Denial::NameDenied);
        }
        if !self.allow_names.iter().any(|e| e.matches(name, port)) {
            return self.decide(dst, host).map_err(|d| match d {
                Denial::NotAllowed => Denial::NameNotAllowed,
                d => d,
            });
        }
        // The name stands in for an address entry, never for allow_lan: an allowed name
        // that resolves into a private or special range is refused (DNS rebinding).
        match self.decide(dst, host) {
            Err(Denial::NotAllowed) => Ok(()),
            r => r,
        }
    }

    /// Decides for a connection by `name` whose address only an upstream proxy will know
    /// (`socks5h`): a name entry decides; without one, only an `allow` entry opening every
    /// public address (`0.0.0.0/0` or `::/0`) lets it through.
    pub fn decide_name_only(&self, name: &str, port: u16) -> Result<(), Denial> {
        if self.deny_names.iter().any(|e| e.matches(name, Some(port))) {
            return Err(Denial::NameDenied);
        }
        let everything = self
            .allow
            .iter()
            .any(|e| e.net.len == 0 && e.ports.is_none_or(|(a, b)| (a..=b).contains(&port)));
        if everything || self.allow_names.iter().any(|e| e.matches(name, Some(port))) {
            Ok(())
        } else {
            Err(Denial::NameNotAllowed)
        }
    }

    /// Decides for a connection to `host.sandbox.internal:port` (dialed as the host's
    /// loopback).
    pub fn decide_host_port(&self, port: u16) -> Result<(), Denial> {
        match &self.allow_host {
            AllowHost::All => Ok(()),
            AllowHost::Ports(p) if p.contains(&port) => Ok(()),
            _ => Err(Denial::Host),
        }
    }

    /// Decides for `dst`; `host` lists the host's own addresses at this moment.
    pub fn decide(&self, dst: SocketAddr, host: &[IpAddr]) -> Result<(), Denial> {
        let dst = canonical(dst);
        let ip = dst.ip();
        if self.deny.iter().any(|e| e.matches(dst)) {
            return Err(Denial::Denied);
        }
        let is_host = host
            .iter()
            .any(|h| canonical(SocketAddr::new(*h, 0)).ip() == ip);
        if HOST.iter().any(|c| c.contains(ip)) || is_host {
            return self.decide_host_port(dst.port());
        }
        if let Some(range) = SPECIAL.iter().find(|c| c.net.contains(ip)) {
            let explicit = self
                .allow
                .iter()
                .any(|e| e.matches(dst) && e.net.within(&range.net));
            return if self.allow_lan || explicit {
                Ok(())
            } else {
                Err(Denial::Special(range.reason))
            };
        }
        if self.allow.iter().any(|e| e.matches(dst)) {
            Ok(())
        } else {
            Err(Denial::NotAllowed)
        }
    }
}

mod rules;
#[cfg(test)]
mod tests;
