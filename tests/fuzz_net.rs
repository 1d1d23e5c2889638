//! Property tests of the network policy's inputs with hostile input: any `allow`/`deny`
//! entry the profile validator accepts compiles into a policy, and any destination, name
//! or port is decided without a panic; and the DNS parser (unit-tested in
//! `proxy::dns::message`) is driven here with long random runs too; and the nf_tables
//! verdict rules of any policy agree with it. Bounded by default
//! (CI); `FUZZ_CASES=N` runs longer (see docs/fuzzing.md).

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use sandboxd::profile::{AllowHost, Destination, Network, NetworkMode};
use sandboxd::proxy::dns::message::{Query, Reply, RCODE_NOERROR};
use sandboxd::proxy::dns::records::relay;
use sandboxd::proxy::sniff;
use sandboxd::proxy::{Denial, Policy};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(3000)
}

/// The entries the profile accepts become the policy (the others are errors at `check`).
fn network(allow: Vec<String>, deny: Vec<String>, lan: bool) -> Network {
    let typed = |l: Vec<String>| {
        l.iter()
            .filter_map(|e| Destination::parse(e).ok())
            .collect()
    };
    Network {
        mode: NetworkMode::Proxy,
        allow: typed(allow),
        deny: typed(deny),
        allow_host: AllowHost::Ports(vec![5432]),
        allow_lan: lan,
        dns: true,
        upstream: sandboxd::profile::Upstream::Direct,
        publish: Vec::new(),
        max_connections: 10,
        max_udp_flows: 10,
        require_sni: false,
    }
}

/// Entries of every shape the grammar has, plus raw noise.
fn entry() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,2})?(:[0-9]{1,5}(-[0-9]{1,5})?)?",
        "\\[?[0-9a-f:]{2,20}(/[0-9]{1,3})?\\]?(:[0-9]{1,5})?",
        "(\\*\\.)?[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,8}){0,3}(:[0-9]{1,5}(-[0-9]{1,5})?)?",
        ".{0,40}",
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        Just("127.0.0.1".parse().unwrap()),
        Just("::ffff:10.0.0.1".parse().unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_policy_decides_any_destination(
        allow in proptest::collection::vec(entry(), 0..6),
        deny in proptest::collection::vec(entry(), 0..4),
        lan in any::<bool>(),
        dst in ip(),
        port in any::<u16>(),
        name in "[a-z0-9*.-]{0,30}",
        host in proptest::collection::vec(ip(), 0..3),
    ) {
        let p = Policy::new(&network(allow, deny.clone(), lan));
        let to = SocketAddr::new(dst, port);
        let by_address = p.decide(to, &host);
        let _ = p.decide_named(&name, to, &host);
        let _ = p.decide_name_only(&name, port);
        let _ = p.name_answerable(&name);
        let _ = p.decide_host_port(port);
        // A host address is never opened by anything but allow_host.
        if host.contains(&dst) && port != 5432 {
            prop_assert!(by_address.is_err());
        }
        // deny of an exact address always wins.
        let exact = Policy::new(&network(vec!["0.0.0.0/0".into(), "::/0".into()], vec![dst.to_string()], true));
        prop_assert!(exact.decide(to, &[]).is_err());
    }

    /// The nf_tables verdict rules a policy compiles to refuse exactly what it refuses by
    /// address, with the same reason (the daemon's own addresses they leave to the proxy).
    #[test]
    fn verdict_rules_refuse_exactly_what_the_policy_refuses(
        allow in proptest::collection::vec(entry(), 0..6),
        deny in proptest::collection::vec(entry(), 0..4),
        lan in any::<bool>(),
        dst in ip(),
        port in any::<u16>(),
        host in proptest::collection::vec(ip(), 0..3),
    ) {
        // On the wire an IPv4-mapped destination is IPv4.
        let wire = match dst {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(dst, IpAddr::V4),
            v4 => v4,
        };
        let own = ["10.89.0.0/24", "100.89.0.0/16", "fd5a:5bd0::/32"].iter().any(|c| {
            format!("pass {c}")
                .parse::<sandboxd::netns::Rule>()
                .unwrap()
                .matches(wire, port)
        });
        prop_assume!(!own);
        let p = Policy::new(&network(allow, deny, lan));
        let rules = p.address_rules(&host);
        let first = rules.iter().find(|r| r.matches(wire, port));
        let verdict = match first.and_then(|r| r.refuse.as_deref()) {
            None => Ok(()),
            Some(code) => Err(Denial::from_code(code).unwrap()),
        };
        prop_assert_eq!(verdict, p.decide(SocketAddr::new(dst, port), &host));
    }

    #[test]
    fn dns_parsers_survive_anything(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = Reply::parse(&bytes);
        // An upstream's hostile reply relayed for any question: an error or a message
        // within the limit, never a panic.
        let q = Query::parse(&Query::encode(1, "allowed.test", 16).unwrap()).unwrap();
        if let Ok(out) = relay(&q, &bytes, 512) {
            prop_assert!(out.len() <= 512);
        }
        if let Ok(q) = Query::parse(&bytes) {
            let answer = q.answer(RCODE_NOERROR, &["100.89.0.1".parse().unwrap()], 60);
            let r = Reply::parse(&answer).unwrap();
            prop_assert_eq!(r.id, q.id);
        }
    }

    /// A connection's first bytes, whatever they are, are read without a panic; and
    /// whatever is read of a prefix, the whole never contradicts a decided prefix.
    #[test]
    fn first_bytes_survive_anything(bytes in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..600) {
        let whole = sniff::first(&bytes);
        let prefix = sniff::first(&bytes[..cut.min(bytes.len())]);
        if prefix != sniff::First::More && whole != sniff::First::More {
            prop_assert_eq!(std::mem::discriminant(&prefix), std::mem::discriminant(&whole));
        }
    }
}
