//! `network.publish` entries, typed: `[ADDR:]HOSTPORT:SANDBOXPORT[/tcp|/udp]`, parsed once
//! here; the proxy listens where they say.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Where the daemon listens on the host (default address 127.0.0.1).
    pub host: SocketAddr,
    pub sandbox_port: u16,
    pub udp: bool,
    /// The entry as written, for messages.
    pub raw: String,
}

impl Publish {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = || {
            format!("{raw:?}: expected [ADDRESS:]HOST_PORT:SANDBOX_PORT[/tcp|/udp], such as \"127.0.0.1:8080:80\"")
        };
        let (spec, udp) = match (raw.strip_suffix("/udp"), raw.strip_suffix("/tcp")) {
            (Some(s), _) => (s, true),
            (_, Some(s)) => (s, false),
            _ => (raw, false),
        };
        let (rest, inner) = spec.rsplit_once(':').ok_or_else(bad)?;
        let (addr, outer) = match rest.rsplit_once(':') {
            Some((a, o)) if !rest.ends_with(']') => (Some(a), o),
            _ => (None, rest),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
        let ip = match addr {
            Some(a) => a
                .trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .map_err(|_| bad())?,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        Ok(Self {
            host: SocketAddr::new(ip, port(outer)?),
            sandbox_port: port(inner)?,
            udp,
            raw: raw.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let p = Publish::parse("127.0.0.1:8080:80").unwrap();
        assert_eq!(
            (p.host, p.sandbox_port, p.udp),
            ("127.0.0.1:8080".parse().unwrap(), 80, false)
        );
        let p = Publish::parse("8080:80").unwrap();
        assert_eq!(p.host, "127.0.0.1:8080".parse().unwrap());
        let p = Publish::parse("[::1]:5353:53/udp").unwrap();
        assert_eq!(
            (p.host, p.sandbox_port, p.udp),
            ("[::1]:5353".parse().unwrap(), 53, true)
        );
        assert!(Publish::parse("0.0.0.0:8443:443/tcp").is_ok());
        for bad in [
            "80",
            "x:80",
            "1.2.3:8080:80",
            "8080:0",
            "a:b:c:d",
            "8080:80/sctp",
        ] {
            assert!(Publish::parse(bad).is_err(), "{bad}");
        }
    }
}
