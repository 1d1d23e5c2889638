//! The address part of a [`Policy`] as the ordered verdict rules of the sandbox's
//! nf_tables `judge` chain (`netns/judge.rs`), so that what the address alone decides is
//! refused at the SYN.
//!
//! The rules follow [`Policy::decide`] step by step — `deny`, the host, the special ranges
//! with the `allow` entries inside them, the other `allow` entries, then refusal — so the
//! first match gives the same answer `decide` gives. Addresses the daemon itself hands
//! out (the resolver, `host.sandbox.internal`, the synthetic name addresses) pass first:
//! names are judged by the proxy at accept time. A rule may only ever pass a flow the
//! proxy would refuse (it then refuses it itself), never the other way round.

use std::net::{IpAddr, SocketAddr};

use super::{canonical, Denial, Policy, HOST, SPECIAL};
use crate::netns::Rule;
use crate::profile::{AllowHost, Cidr, Ports};

/// The daemon's own ranges inside every sandbox: 10.89.0.0/24 (resolver, host),
/// 100.89.0.0/16 (names), fd5a:5bd0::/32 (all three in IPv6).
const DAEMONS: &[Cidr] = &[
    Cidr::v4([10, 89, 0, 0], 24),
    Cidr::v4([100, 89, 0, 0], 16),
    Cidr::v6([0xfd5a, 0x5bd0, 0, 0, 0, 0, 0, 0], 32),
];

fn net(c: &Cidr) -> Option<Cidr> {
    Some(*c)
}

impl Denial {
    /// The code a verdict rule logs this refusal with.
    pub(super) fn code(&self) -> String {
        match self {
            Denial::Denied => "d".into(),
            Denial::Host => "h".into(),
            Denial::Special(reason) => {
                let i = SPECIAL.iter().position(|s| s.reason == *reason);
                format!("s{}", i.unwrap_or(0))
            }
            _ => "n".into(),
        }
    }

    /// The refusal a logged code stands for (`None` for a code no rule uses).
    pub fn from_code(code: &str) -> Option<Denial> {
        match code {
            "d" => Some(Denial::Denied),
            "h" => Some(Denial::Host),
            "n" => Some(Denial::NotAllowed),
            _ => {
                let i: usize = code.strip_prefix('s')?.parse().ok()?;
                SPECIAL.get(i).map(|s| Denial::Special(s.reason))
            }
        }
    }
}

impl Policy {
    /// The verdict rules of this policy while the host has the addresses `host`.
    pub fn address_rules(&self, host: &[IpAddr]) -> Vec<Rule> {
        let mut rules: Vec<Rule> = DAEMONS.iter().map(|c| Rule::pass(net(c), None)).collect();
        let refuse = |d: Denial, c: &Cidr, ports: Ports| Rule::refuse(&d.code(), net(c), ports);
        for e in &self.deny {
            rules.push(refuse(Denial::Denied, &e.net, e.ports));
        }
        let mut hosts: Vec<Cidr> = HOST.to_vec();
        for h in host {
            let ip = canonical(SocketAddr::new(*h, 0)).ip();
            let c = Cidr {
                addr: ip,
                len: if ip.is_ipv4() { 32 } else { 128 },
            };
            if !hosts.iter().any(|k| c.within(k)) {
                hosts.push(c);
            }
        }
        for c in &hosts {
            match &self.allow_host {
                AllowHost::All => rules.push(Rule::pass(net(c), None)),
                AllowHost::Ports(ports) => {
                    for p in ports {
                        rules.push(Rule::pass(net(c), Some((*p, *p))));
                    }
                    rules.push(refuse(Denial::Host, c, None));
                }
                AllowHost::None => rules.push(refuse(Denial::Host, c, None)),
            }
        }
        for s in SPECIAL {
            if self.allow_lan {
                rules.push(Rule::pass(net(&s.net), None));
                continue;
            }
            for e in self.allow.iter().filter(|e| e.net.within(&s.net)) {
                rules.push(Rule::pass(net(&e.net), e.ports));
            }
            rules.push(refuse(Denial::Special(s.reason), &s.net, None));
        }
        for e in &self.allow {
            rules.push(Rule::pass(net(&e.net), e.ports));
        }
        rules.push(Rule::refuse(&Denial::NotAllowed.code(), None, None));
        Rule::truncate(&mut rules);
        rules
    }
}
