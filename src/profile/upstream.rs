//! `network.upstream`, typed: where a sandbox's allowed TCP connections leave from, parsed
//! once here (an unusable value is an error at `check`, never a fallback to direct).

use std::path::PathBuf;

use super::validate::split_port;

/// The way out of allowed connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Dialed by the daemon from the host.
    Direct,
    /// Through a SOCKS5 server (RFC 1928, no authentication).
    Socks5 {
        server: UpstreamServer,
        /// The proxy resolves names (`socks5h://`, and unix sockets): the daemon never
        /// looks a sandbox's name up itself.
        remote_dns: bool,
    },
}

/// Where the SOCKS5 server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamServer {
    /// `HOST:PORT`.
    Tcp(String),
    Unix(PathBuf),
}

impl Upstream {
    /// `direct`, `socks5://HOST:PORT`, `socks5h://HOST:PORT` or `socks5+unix:///PATH`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw == "direct" {
            return Ok(Self::Direct);
        }
        if let Some(path) = raw.strip_prefix("socks5+unix://") {
            if path.len() > 1 && path.starts_with('/') {
                return Ok(Self::Socks5 {
                    server: UpstreamServer::Unix(path.into()),
                    remote_dns: true,
                });
            }
        }
        let tcp = |rest: &str, remote_dns| {
            let server = rest.trim_end_matches('/');
            match split_port(server) {
                (host, Some(port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    Some(Self::Socks5 {
                        server: UpstreamServer::Tcp(server.to_string()),
                        remote_dns,
                    })
                }
                _ => None,
            }
        };
        let parsed = match (
            raw.strip_prefix("socks5h://"),
            raw.strip_prefix("socks5://"),
        ) {
            (Some(rest), _) => tcp(rest, true),
            (_, Some(rest)) => tcp(rest, false),
            _ => None,
        };
        parsed.ok_or_else(|| format!("{raw:?}: expected \"direct\", \"socks5://HOST:PORT\", \"socks5h://HOST:PORT\" or \"socks5+unix:///PATH\""))
    }

    pub fn remote_dns(&self) -> bool {
        matches!(
            self,
            Self::Socks5 {
                remote_dns: true,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_upstream() {
        assert_eq!(Upstream::parse("direct"), Ok(Upstream::Direct));
        assert_eq!(
            Upstream::parse("socks5h://127.0.0.1:9050/"),
            Ok(Upstream::Socks5 {
                server: UpstreamServer::Tcp("127.0.0.1:9050".into()),
                remote_dns: true
            })
        );
        assert!(!Upstream::parse("socks5://[::1]:1080").unwrap().remote_dns());
        assert!(Upstream::parse("socks5+unix:///run/tor.sock")
            .unwrap()
            .remote_dns());
        for bad in [
            "socks5://",
            "socks5://host",
            "socks5://:1080",
            "socks5://h:0",
            "socks5+unix://",
            "socks5+unix://relative",
            "http://h:1",
            "",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
