use super::*;

fn entry(raw: &str) -> Destination {
    Destination::parse(raw).unwrap_or_else(|why| panic!("{why}"))
}

/// The compiled form of the network entry `raw`.
fn net(raw: &str) -> Entry {
    match entry(raw) {
        Destination::Net { net, ports } => Entry { net, ports },
        Destination::Name { .. } => panic!("{raw} is a name"),
    }
}

fn policy(allow: &[&str], deny: &[&str], host: AllowHost, lan: bool) -> Policy {
    Policy::new(&Network {
        mode: crate::profile::NetworkMode::Proxy,
        allow: allow.iter().map(|s| entry(s)).collect(),
        deny: deny.iter().map(|s| entry(s)).collect(),
        allow_host: host,
        allow_lan: lan,
        dns: false,
        upstream: crate::profile::Upstream::Direct,
        publish: Vec::new(),
        max_connections: 16,
        max_udp_flows: 16,
        require_sni: false,
    })
}

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_open_public_addresses_only() {
    let p = policy(&["0.0.0.0/0", "::/0"], &[], AllowHost::None, false);
    assert_eq!(p.decide(at("1.1.1.1:443"), &[]), Ok(()));
    assert_eq!(p.decide(at("[2606:4700::1111]:443"), &[]), Ok(()));
    for special in [
        "10.1.2.3:80",
        "172.20.0.1:80",
        "192.168.1.1:80",
        "100.64.0.1:80",
        "169.254.169.254:80",
        "224.0.0.1:5353",
        "255.255.255.255:67",
        "203.0.113.9:80",
        "[fd00::1]:80",
        "[fe80::1]:80",
        "[ff02::1]:80",
        "[2001:db8::1]:80",
        "[::ffff:192.168.1.1]:80",
    ] {
        assert!(
            matches!(p.decide(at(special), &[]), Err(Denial::Special(_))),
            "{special}"
        );
    }
    for host in [
        "127.0.0.1:22",
        "0.0.0.0:22",
        "[::1]:22",
        "[::]:22",
        "[::ffff:127.0.0.1]:22",
    ] {
        assert_eq!(p.decide(at(host), &[]), Err(Denial::Host), "{host}");
    }
}

#[test]
fn host_addresses_need_allow_host_even_inside_an_allowed_cidr() {
    let me: IpAddr = "203.0.113.1".parse().unwrap();
    let p = policy(&["203.0.113.0/24"], &[], AllowHost::None, false);
    assert_eq!(p.decide(at("203.0.113.2:80"), &[me]), Ok(()));
    assert_eq!(p.decide(at("203.0.113.1:80"), &[me]), Err(Denial::Host));
    let ports = policy(&[], &[], AllowHost::Ports(vec![5432]), false);
    assert_eq!(ports.decide(at("203.0.113.1:5432"), &[me]), Ok(()));
    assert_eq!(ports.decide(at("127.0.0.1:5432"), &[me]), Ok(()));
    assert_eq!(ports.decide(at("203.0.113.1:22"), &[me]), Err(Denial::Host));
    let all = policy(&[], &[], AllowHost::All, false);
    assert_eq!(all.decide(at("127.0.0.1:1"), &[me]), Ok(()));
}

#[test]
fn lan_deny_and_ports() {
    let lan = policy(&["0.0.0.0/0"], &[], AllowHost::None, true);
    assert_eq!(lan.decide(at("192.168.1.1:80"), &[]), Ok(()));
    assert_eq!(lan.decide(at("127.0.0.1:80"), &[]), Err(Denial::Host));
    let p = policy(
        &["0.0.0.0/0", "10.0.0.0/8:5432", "[fd00::/8]:80-90"],
        &["1.1.1.1", "8.8.8.8:53"],
        AllowHost::None,
        false,
    );
    assert_eq!(p.decide(at("10.9.9.9:5432"), &[]), Ok(()));
    assert_eq!(
        p.decide(at("10.9.9.9:5433"), &[]),
        Err(Denial::Special(
            "10.0.0.0/8, a private range (network.allow_lan)"
        ))
    );
    assert_eq!(p.decide(at("[fd00::5]:85"), &[]), Ok(()));
    assert_eq!(
        p.decide(at("[fd00::5]:91"), &[]),
        Err(Denial::Special(
            "fc00::/7, unique local (network.allow_lan)"
        ))
    );
    assert_eq!(p.decide(at("1.1.1.1:443"), &[]), Err(Denial::Denied));
    assert_eq!(p.decide(at("8.8.8.8:53"), &[]), Err(Denial::Denied));
    assert_eq!(p.decide(at("8.8.8.8:443"), &[]), Ok(()));
    let none = policy(&[], &[], AllowHost::None, false);
    assert_eq!(none.decide(at("1.1.1.1:443"), &[]), Err(Denial::NotAllowed));
}

#[test]
fn names_wildcards_ports_and_deny() {
    let me: IpAddr = "203.0.113.1".parse().unwrap();
    let p = policy(
        &["allowed.test", "*.wild.test:443", "ports.test:8000-8010"],
        &["bad.wild.test", "allowed.test:25"],
        AllowHost::None,
        false,
    );
    assert_eq!(p.name_answerable("allowed.test"), Ok(()));
    assert_eq!(p.name_answerable("a.wild.test"), Ok(()));
    assert_eq!(p.name_answerable("wild.test"), Err(Denial::NameNotAllowed));
    assert_eq!(p.name_answerable("bad.wild.test"), Err(Denial::NameDenied));
    assert_eq!(p.name_answerable("other.test"), Err(Denial::NameNotAllowed));
    let at = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        p.decide_named("allowed.test", at("1.2.3.4:80"), &[me]),
        Ok(())
    );
    assert_eq!(
        p.decide_named("allowed.test", at("1.2.3.4:25"), &[me]),
        Err(Denial::NameDenied)
    );
    assert_eq!(
        p.decide_named("a.wild.test", at("1.2.3.4:443"), &[me]),
        Ok(())
    );
    assert_eq!(
        p.decide_named("a.wild.test", at("1.2.3.4:80"), &[me]),
        Err(Denial::NameNotAllowed)
    );
    assert_eq!(
        p.decide_named("ports.test", at("1.2.3.4:8005"), &[me]),
        Ok(())
    );
    assert_eq!(
        p.decide_named("ports.test", at("1.2.3.4:8011"), &[me]),
        Err(Denial::NameNotAllowed)
    );
}

/// An allowed name cannot be pointed at the host, the LAN or any other special range,
/// documentation and benchmarking ranges included (DNS rebinding); the refusal names the
/// range. allow_lan, or an allow entry inside the range, opens it for names too.
#[test]
fn an_allowed_name_cannot_rebind_to_special_ranges() {
    let me: IpAddr = "203.0.113.1".parse().unwrap();
    let p = policy(&["allowed.test"], &[], AllowHost::None, false);
    let at = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        p.decide_named("allowed.test", at("203.0.113.1:80"), &[me]),
        Err(Denial::Host)
    );
    assert_eq!(
        p.decide_named("allowed.test", at("127.0.0.1:80"), &[me]),
        Err(Denial::Host)
    );
    for (addr, range) in [
        ("192.168.1.1:80", "192.168.0.0/16"),
        ("203.0.113.2:80", "203.0.113.0/24"),
        ("192.0.2.7:80", "192.0.2.0/24"),
        ("198.18.3.4:80", "198.18.0.0/15"),
        ("[2001:db8::1]:80", "2001:db8::/32"),
    ] {
        match p.decide_named("allowed.test", at(addr), &[me]) {
            Err(Denial::Special(why)) => assert!(why.starts_with(range), "{why}"),
            other => panic!("{addr}: {other:?}"),
        }
    }
    let mut lan = p.clone();
    lan.allow_lan = true;
    assert_eq!(
        lan.decide_named("allowed.test", at("192.0.2.7:80"), &[me]),
        Ok(())
    );
    let cidr = policy(
        &["allowed.test", "192.0.2.0/24:80"],
        &[],
        AllowHost::None,
        false,
    );
    assert_eq!(
        cidr.decide_named("allowed.test", at("192.0.2.7:80"), &[me]),
        Ok(())
    );
    assert!(matches!(
        cidr.decide_named("allowed.test", at("198.18.3.4:80"), &[me]),
        Err(Denial::Special(_))
    ));
    let v6 = policy(
        &["allowed.test", "[2001:db8:113::2/128]:8000"],
        &[],
        AllowHost::None,
        false,
    );
    assert_eq!(
        v6.decide_named("allowed.test", at("[2001:db8:113::2]:8000"), &[me]),
        Ok(())
    );
    // An address by itself is judged by the address rules alone.
    assert!(matches!(
        p.decide(at("203.0.113.2:80"), &[me]),
        Err(Denial::Special(_))
    ));
    assert_eq!(p.decide(at("1.2.3.4:80"), &[me]), Err(Denial::NotAllowed));
    // With address entries every name is answerable; the address decides.
    let open = policy(&["0.0.0.0/0"], &["*.ads.test"], AllowHost::None, false);
    assert_eq!(open.name_answerable("anything.test"), Ok(()));
    assert_eq!(open.name_answerable("x.ads.test"), Err(Denial::NameDenied));
    assert_eq!(
        open.decide_named("anything.test", at("1.2.3.4:80"), &[]),
        Ok(())
    );
    assert!(matches!(
        open.decide_named("anything.test", at("10.0.0.1:80"), &[]),
        Err(Denial::Special(_))
    ));
}

/// Found by tests/fuzz_net.rs: an IPv4-mapped entry must match the IPv4 destination
/// it stands for (destinations are judged as IPv4).
#[test]
fn ipv4_mapped_entries_match_their_ipv4_destination() {
    let p = policy(
        &["0.0.0.0/0", "::/0"],
        &["::ffff:10.0.0.1", "[::ffff:1.2.3.0/120]:80"],
        AllowHost::None,
        true,
    );
    assert_eq!(p.decide(at("10.0.0.1:1"), &[]), Err(Denial::Denied));
    assert_eq!(
        p.decide(at("[::ffff:10.0.0.1]:1"), &[]),
        Err(Denial::Denied)
    );
    assert_eq!(p.decide(at("1.2.3.9:80"), &[]), Err(Denial::Denied));
    assert_eq!(p.decide(at("1.2.3.9:81"), &[]), Ok(()));
}

#[test]
fn network_entries_match_their_prefix_and_ports() {
    let e = net("[2001:db8::/32]:443");
    assert!(e.matches(at("[2001:db8::1]:443")));
    assert!(!e.matches(at("[2001:db8::1]:444")));
    assert!(net("2001:db8::/32").matches(at("[2001:db8::1]:1")));
    assert!(net("1.2.3.4:1-1024").matches(at("1.2.3.4:1024")));
}

// The verdict rules of the nf_tables `judge` chain.

/// What the first matching rule says: `Ok` for a pass, the refusal for a refuse.
fn verdict(rules: &[crate::netns::Rule], dst: SocketAddr) -> Result<(), Denial> {
    let r = rules.iter().find(|r| r.matches(dst.ip(), dst.port()));
    match r.and_then(|r| r.refuse.as_deref()) {
        None => Ok(()),
        Some(code) => Err(Denial::from_code(code).unwrap()),
    }
}

#[test]
fn the_rules_refuse_exactly_what_decide_refuses_by_address() {
    let host: Vec<IpAddr> = vec![
        "192.168.1.20".parse().unwrap(),
        "2a01:4f8::7".parse().unwrap(),
    ];
    let policies = [
        policy(&["0.0.0.0/0", "::/0"], &[], AllowHost::None, false),
        policy(
            &["203.0.113.0/24", "10.1.0.0/16:443", "1.1.1.1:53-54"],
            &["203.0.113.9", "8.8.0.0/16:80"],
            AllowHost::Ports(vec![8080, 22]),
            false,
        ),
        policy(&["0.0.0.0/0"], &["2001:db8::/32"], AllowHost::All, true),
        policy(&[], &[], AllowHost::None, false),
    ];
    let addrs = [
        "1.1.1.1",
        "8.8.4.4",
        "203.0.113.9",
        "203.0.113.10",
        "10.1.2.3",
        "10.2.0.1",
        "192.168.1.20",
        "192.168.1.21",
        "127.0.0.1",
        "0.0.0.0",
        "169.254.169.254",
        "100.64.1.1",
        "224.0.0.1",
        "2a01:4f8::7",
        "2a01:4f8::8",
        "::1",
        "fe80::1",
        "fc00::1",
        "2001:db8::5",
        "2606:4700::1111",
    ];
    for (i, p) in policies.iter().enumerate() {
        let rules = p.address_rules(&host);
        for a in addrs {
            for port in [22, 53, 54, 80, 443, 8080, 9000] {
                let dst = SocketAddr::new(a.parse().unwrap(), port);
                assert_eq!(
                    verdict(&rules, dst),
                    p.decide(dst, &host),
                    "policy {i}, {dst}"
                );
            }
        }
    }
}

#[test]
fn the_daemons_own_addresses_are_left_to_the_proxy() {
    let p = policy(&[], &[], AllowHost::None, false);
    let rules = p.address_rules(&[]);
    for a in [
        "10.89.0.1",
        "10.89.0.254",
        "100.89.3.4",
        "fd5a:5bd0::1",
        "fd5a:5bd0:ffff::9",
    ] {
        assert_eq!(
            verdict(&rules, SocketAddr::new(a.parse().unwrap(), 80)),
            Ok(()),
            "{a}"
        );
    }
}

#[test]
fn every_code_maps_back_to_its_refusal() {
    for d in [Denial::Denied, Denial::Host, Denial::NotAllowed]
        .into_iter()
        .chain(SPECIAL.iter().map(|s| Denial::Special(s.reason)))
    {
        assert!(crate::netns::valid_code(&d.code()), "{d:?}");
        assert_eq!(Denial::from_code(&d.code()), Some(d));
    }
    assert_eq!(Denial::from_code("s999"), None);
    assert_eq!(Denial::from_code("x"), None);
}
