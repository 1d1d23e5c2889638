//! `network.allow` / `network.deny` entries, typed: parsed once here, with the reason
//! when an entry is not what it claims to be, and consumed as they are by the proxy's
//! policy. An entry is a network (an address or CIDR) or a host name (`name`, `*.domain`),
//! either with an optional port or port range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::validate::{port_range, split_port};

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub const fn v4(a: [u8; 4], len: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            len,
        }
    }

    pub const fn v6(a: [u16; 8], len: u8) -> Self {
        Self {
            addr: IpAddr::V6(Ipv6Addr::new(
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
            )),
            len,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.len as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.len as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// True when every address of `self` lies in `outer`.
    pub fn within(&self, outer: &Cidr) -> bool {
        self.len >= outer.len && outer.contains(self.addr)
    }
}

/// An inclusive port range; `None` in an entry: every port.
pub type Ports = Option<(u16, u16)>;

/// One `allow`/`deny` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Net {
        net: Cidr,
        ports: Ports,
    },
    /// `pattern` is lower case without a trailing dot; `*.domain` is kept as `.domain`
    /// (every name below the domain, not the domain itself).
    Name {
        pattern: String,
        ports: Ports,
    },
}

impl Destination {
    pub fn is_name(&self) -> bool {
        matches!(self, Self::Name { .. })
    }

    /// Reads an entry, or says why it is none.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("{raw:?}: {why}"));
        let (host, port) = split_port(raw);
        let ports = match port {
            None => None,
            Some(p) => match port_range(p) {
                Some(r) => Some(r),
                None => return bad("the port must be 1-65535 or a range such as 8000-8080"),
            },
        };
        if let Some((addr, len)) = host.split_once('/') {
            let Ok(addr) = addr.trim_matches(['[', ']']).parse::<IpAddr>() else {
                return bad("not a valid CIDR address");
            };
            let max = if addr.is_ipv4() { 32 } else { 128 };
            return match len.trim_end_matches(']').parse::<u8>() {
                Ok(l) if l <= max => Ok(Self::net(addr, l, ports)),
                _ => bad("not a valid CIDR prefix length"),
            };
        }
        if let Ok(addr) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            let len = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Self::net(addr, len, ports));
        }
        let name = host.strip_prefix("*.").unwrap_or(host);
        // No top-level domain is all digits (RFC 3696 §2): "192.168.1" is a mistyped
        // address or network, and as a name it would silently never match.
        if name
            .rsplit('.')
            .next()
            .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        {
            return bad(
                "not a valid address (a network is written as a CIDR, such as 192.168.1.0/24)",
            );
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return bad(
                "expected a CIDR, an address, a host name or *.domain, with an optional :port",
            );
        }
        let name = name.to_ascii_lowercase();
        let pattern = if host.starts_with("*.") {
            format!(".{name}")
        } else {
            name
        };
        Ok(Self::Name { pattern, ports })
    }

    /// A network entry; an IPv4-mapped IPv6 one is the IPv4 network it is, as
    /// destinations are judged.
    fn net(addr: IpAddr, len: u8, ports: Ports) -> Self {
        let (addr, len) = match addr {
            IpAddr::V6(v6) if len >= 96 && v6.to_ipv4_mapped().is_some() => v6
                .to_ipv4_mapped()
                .map_or((addr, len), |v4| (IpAddr::V4(v4), len - 96)),
            a => (a, len),
        };
        Self::Net {
            net: Cidr { addr, len },
            ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_is_what_it_says() {
        let net = |s: &str| match Destination::parse(s).unwrap() {
            Destination::Net { net, ports } => (net.addr.to_string(), net.len, ports),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(net("0.0.0.0/0"), ("0.0.0.0".into(), 0, None));
        assert_eq!(
            net("10.0.0.0/8:443"),
            ("10.0.0.0".into(), 8, Some((443, 443)))
        );
        assert_eq!(
            net("[::1]:8000-8080"),
            ("::1".into(), 128, Some((8000, 8080)))
        );
        assert_eq!(net("[::ffff:10.0.0.0/104]"), ("10.0.0.0".into(), 8, None));
        assert_eq!(net("1.2.3.4"), ("1.2.3.4".into(), 32, None));
        assert_eq!(
            Destination::parse("*.PyPI.org:443").unwrap(),
            Destination::Name {
                pattern: ".pypi.org".into(),
                ports: Some((443, 443))
            }
        );
        assert!(Destination::parse("github.com").unwrap().is_name());
        for bad in [
            "",
            "1.2.3.4/33",
            "10.0.0.0/33",
            "github.com:0",
            "a..b",
            "*.x:99999",
            "exa mple.com",
            "x:9-1",
            "192.168.1",
            "10.0.0.0.1",
            "*.10:443",
            "*.",
            "*.:443",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
        let why = Destination::parse("192.168.1").unwrap_err();
        assert!(why.contains("192.168.1.0/24"), "{why}");
    }

    #[test]
    fn prefixes_contain_and_nest() {
        let ten = Cidr::v4([10, 0, 0, 0], 8);
        assert!(ten.contains("10.9.8.7".parse().unwrap()));
        assert!(!ten.contains("11.0.0.1".parse().unwrap()));
        assert!(!ten.contains("::1".parse().unwrap()));
        assert!(Cidr::v4([10, 1, 0, 0], 16).within(&ten));
        assert!(!ten.within(&Cidr::v4([10, 1, 0, 0], 16)));
        assert!(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 0).contains("2001:db8::1".parse().unwrap()));
    }
}
