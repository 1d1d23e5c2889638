//! How an allowed TCP connection leaves the host: dialed directly, or through a SOCKS5
//! upstream (`network.upstream`) over TCP or a unix socket. With an upstream, a failure is
//! the sandbox connection's failure: nothing is ever sent direct instead.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// The way out, as the profile typed it.
pub type Egress = crate::profile::Upstream;
pub use crate::profile::UpstreamServer as Server;

/// What to ask the upstream to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Addr(SocketAddr),
    Name(String, u16),
}

/// The outside end of a relayed connection.
pub enum Outside {
    Tcp(TcpStream),
    Unix(UnixStream),
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("cannot reach the SOCKS5 upstream {0}")]
    Upstream(String, #[source] io::Error),
    #[error("the SOCKS5 upstream refused: {0}")]
    Refused(&'static str),
    #[error("the SOCKS5 upstream spoke something else")]
    Protocol,
    #[error("the SOCKS5 upstream did not answer in time")]
    Timeout,
}

/// Connects to `dest` through the upstream (the caller bounds the time).
pub async fn socks5(server: &Server, dest: &Dest) -> Result<Outside, EgressError> {
    match server {
        Server::Tcp(addr) => {
            let mut s = TcpStream::connect(addr.as_str())
                .await
                .map_err(|e| EgressError::Upstream(addr.clone(), e))?;
            let _ = s.set_nodelay(true);
            handshake(&mut s, dest).await?;
            Ok(Outside::Tcp(s))
        }
        Server::Unix(path) => {
            let mut s = UnixStream::connect(path)
                .await
                .map_err(|e| EgressError::Upstream(path.display().to_string(), e))?;
            handshake(&mut s, dest).await?;
            Ok(Outside::Unix(s))
        }
    }
}

/// RFC 1928: no authentication, then CONNECT.
async fn handshake<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    s: &mut S,
    dest: &Dest,
) -> Result<(), EgressError> {
    let io = |_| EgressError::Protocol;
    let step = async {
        s.write_all(&[5, 1, 0]).await.map_err(io)?;
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).await.map_err(io)?;
        if choice != [5, 0] {
            return Err(EgressError::Refused("it requires authentication"));
        }
        let mut req = vec![5, 1, 0];
        let port = match dest {
            Dest::Addr(a) => {
                match a.ip() {
                    IpAddr::V4(v4) => {
                        req.push(1);
                        req.extend_from_slice(&v4.octets());
                    }
                    IpAddr::V6(v6) => {
                        req.push(4);
                        req.extend_from_slice(&v6.octets());
                    }
                }
                a.port()
            }
            Dest::Name(name, port) => {
                let n = name.as_bytes();
                if n.is_empty() || n.len() > 255 {
                    return Err(EgressError::Refused("the name is too long"));
                }
                req.push(3);
                req.push(n.len() as u8);
                req.extend_from_slice(n);
                *port
            }
        };
        req.extend_from_slice(&port.to_be_bytes());
        s.write_all(&req).await.map_err(io)?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.map_err(io)?;
        if head[0] != 5 {
            return Err(EgressError::Protocol);
        }
        if head[1] != 0 {
            return Err(EgressError::Refused(match head[1] {
                2 => "not allowed by its ruleset",
                3 => "network unreachable",
                4 => "host unreachable",
                5 => "connection refused",
                6 => "TTL expired",
                _ => "general failure",
            }));
        }
        let skip = match head[3] {
            1 => 4,
            4 => 16,
            3 => {
                let mut l = [0u8; 1];
                s.read_exact(&mut l).await.map_err(io)?;
                l[0] as usize
            }
            _ => return Err(EgressError::Protocol),
        };
        let mut rest = vec![0u8; skip + 2];
        s.read_exact(&mut rest).await.map_err(io)?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), step)
        .await
        .map_err(|_| EgressError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_handshake_speaks_rfc_1928() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let mut hello = [0u8; 3];
            b.read_exact(&mut hello).await.unwrap();
            assert_eq!(hello, [5, 1, 0]);
            b.write_all(&[5, 0]).await.unwrap();
            let mut req = [0u8; 4 + 1 + 12 + 2];
            b.read_exact(&mut req).await.unwrap();
            assert_eq!(&req[..5], &[5, 1, 0, 3, 12]);
            assert_eq!(&req[5..17], b"allowed.test");
            assert_eq!(&req[17..], &443u16.to_be_bytes());
            b.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
        });
        handshake(&mut a, &Dest::Name("allowed.test".into(), 443))
            .await
            .unwrap();
        server.await.unwrap();

        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut buf = [0u8; 3];
            b.read_exact(&mut buf).await.unwrap();
            b.write_all(&[5, 0]).await.unwrap();
            let mut req = [0u8; 10];
            b.read_exact(&mut req).await.unwrap();
            b.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
        });
        let r = handshake(&mut a, &Dest::Addr("1.2.3.4:80".parse().unwrap())).await;
        assert!(matches!(r, Err(EgressError::Refused("connection refused"))));
    }
}
