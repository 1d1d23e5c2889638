//! The nflog group the `judge` rules log refusals to: opened by the helper inside the
//! sandbox's network namespace (groups are per namespace) and read by the daemon, which
//! turns each logged SYN into a denial like any other (log, counter, `ConnectionDenied`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use super::netlink::{Message, Socket, NLM_F_ACK};

/// The group of this namespace's refusals.
pub const GROUP: u16 = 0x5bd;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// Bytes of each packet copied: the IP header (v4 with options, or v6) and the ports.
const COPY_RANGE: u32 = 128;

/// A socket bound to [`GROUP`] in the current network namespace, sending every logged
/// packet at once.
pub fn open() -> io::Result<OwnedFd> {
    let mut sock = Socket::open(libc::NETLINK_NETFILTER)?;
    let mut m = Message::new(
        (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
        NLM_F_ACK,
        &[libc::AF_UNSPEC as u8, 0, (GROUP >> 8) as u8, GROUP as u8],
    );
    m.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend([NFULNL_COPY_PACKET, 0]);
    m.attr(NFULA_CFG_MODE, &mode)
        .be32(NFULA_CFG_QTHRESH, 1)
        .be32(NFULA_CFG_TIMEOUT, 0);
    sock.transact(vec![m])?;
    Ok(sock.into_fd())
}

/// One logged refusal: the rule's code and where the SYN was going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub code: String,
    pub dst: SocketAddr,
}

/// The refusals in one datagram read from the group's socket; anything else (or
/// anything malformed) is skipped.
pub fn parse(buf: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
            let body = buf.get(off + NLMSG_HDRLEN + NFGENMSG_LEN..off + len);
            if let Some(l) = body.and_then(packet) {
                out.push(l);
            }
        }
        off += (len + 3) & !3;
    }
    out
}

fn packet(attrs: &[u8]) -> Option<Logged> {
    let (mut prefix, mut payload) = (None, None);
    let mut off = 0;
    while off + 4 <= attrs.len() {
        let len = u16::from_ne_bytes([attrs[off], attrs[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[off + 2], attrs[off + 3]]) & 0x3fff;
        if len < 4 || off + len > attrs.len() {
            return None;
        }
        let value = &attrs[off + 4..off + len];
        match kind {
            NFULA_PREFIX => prefix = Some(value),
            NFULA_PAYLOAD => payload = Some(value),
            _ => {}
        }
        off += (len + 3) & !3;
    }
    let prefix = std::str::from_utf8(prefix?).ok()?.trim_end_matches('\0');
    let code = prefix.strip_prefix("sbx ")?.trim_end();
    Some(Logged {
        code: code.to_string(),
        dst: destination(payload?)?,
    })
}

/// The destination address and port of an IPv4 or IPv6 TCP/UDP packet.
fn destination(p: &[u8]) -> Option<SocketAddr> {
    match p.first()? >> 4 {
        4 => {
            let ihl = (*p.first()? as usize & 0xf) * 4;
            let ip: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            let port = p.get(ihl + 2..ihl + 4)?;
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                u16::from_be_bytes([port[0], port[1]]),
            ))
        }
        6 => {
            let ip: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let port = p.get(42..44)?;
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                u16::from_be_bytes([port[0], port[1]]),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend(kind.to_ne_bytes());
        a.extend(value);
        a.resize((a.len() + 3) & !3, 0);
        a
    }

    fn message(attrs: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        m.extend(((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        m.extend([0; 10]);
        m.extend([2, 0, 0x05, 0xbd]);
        m.extend(attrs);
        m
    }

    #[test]
    fn logged_syns_give_code_and_destination_and_junk_gives_nothing() {
        let mut v4 = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 89, 0, 2, 192, 168, 7, 1,
        ];
        v4.extend([0x9c, 0x40, 0x1f, 0x90]);
        let mut v6 = vec![0x60; 1];
        v6.resize(24, 0);
        v6.extend([0x20, 0x01, 0x0d, 0xb8]);
        v6.resize(40, 0);
        v6.extend([0x9c, 0x40, 0x01, 0xbb]);
        let mut buf =
            message(&[attr(NFULA_PREFIX, b"sbx s7 \0"), attr(NFULA_PAYLOAD, &v4)].concat());
        buf.extend(message(
            &[attr(NFULA_PAYLOAD, &v6), attr(NFULA_PREFIX, b"sbx d \0")].concat(),
        ));
        buf.extend(message(&attr(NFULA_PREFIX, b"other\0")));
        buf.extend(message(&attr(NFULA_PAYLOAD, &v4[..22])));
        let got = parse(&buf);
        assert_eq!(
            got,
            vec![
                Logged {
                    code: "s7".into(),
                    dst: "192.168.7.1:8080".parse().unwrap()
                },
                Logged {
                    code: "d".into(),
                    dst: "[2001:db8::]:443".parse().unwrap()
                },
            ]
        );
        for junk in [
            &b""[..],
            &[0xff; 3],
            &[0x40, 0, 0, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(parse(junk).is_empty());
        }
    }
}
