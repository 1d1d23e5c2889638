//! ICMP "port unreachable" for refused datagrams, written as whole IP packets on the raw
//! sockets the helper made inside the sandbox: their source is the address the sandbox
//! tried to reach and they quote the datagram's headers, so the kernel hands the error to
//! the sending socket, and a connected one reports ECONNREFUSED, as a closed port would.
//!
//! nf_tables cannot do this for us: a `reject` before routing must answer from an address
//! the sandbox's namespace owns, and one at output turns the send itself into EPERM.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

const TTL: u8 = 64;

/// The Internet checksum of `parts` laid end to end (each of even length but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let bytes = parts.iter().flat_map(|p| p.iter().copied());
    let mut pending: Option<u8> = None;
    for b in bytes {
        match pending.take() {
            None => pending = Some(b),
            Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
        }
    }
    if let Some(hi) = pending {
        sum += u32::from(hi) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn udp_header(from: u16, to: u16, len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0..2].copy_from_slice(&from.to_be_bytes());
    h[2..4].copy_from_slice(&to.to_be_bytes());
    h[4..6].copy_from_slice(&(len.min(0xffff) as u16).to_be_bytes());
    h
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total: usize) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend((total.min(0xffff) as u16).to_be_bytes());
    h.extend([0, 0, 0x40, 0, TTL, proto, 0, 0]);
    h.extend(src.octets());
    h.extend(dst.octets());
    let sum = checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((payload.min(0xffff) as u16).to_be_bytes());
    h.extend([next, TTL]);
    h.extend(src.octets());
    h.extend(dst.octets());
    h
}

/// The packet `refused` sends back to `sandbox` for a datagram of `len` payload bytes:
/// IPv4 ICMP type 3 code 3, or ICMPv6 type 1 code 4. `None` for mixed families.
pub fn port_unreachable(refused: SocketAddr, sandbox: SocketAddr, len: usize) -> Option<Vec<u8>> {
    let udp_len = len + 8;
    let udp = udp_header(sandbox.port(), refused.port(), udp_len);
    match (refused.ip(), sandbox.ip()) {
        (IpAddr::V4(r), IpAddr::V4(s)) => {
            let quoted = [
                ipv4_header(s, r, libc::IPPROTO_UDP as u8, 20 + udp_len),
                udp.to_vec(),
            ]
            .concat();
            let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
            icmp.extend(quoted);
            let sum = checksum(&[&icmp]);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            Some(
                [
                    ipv4_header(r, s, libc::IPPROTO_ICMP as u8, 20 + icmp.len()),
                    icmp,
                ]
                .concat(),
            )
        }
        (IpAddr::V6(r), IpAddr::V6(s)) => {
            let quoted = [
                ipv6_header(s, r, libc::IPPROTO_UDP as u8, udp_len),
                udp.to_vec(),
            ]
            .concat();
            let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
            icmp.extend(quoted);
            let next = libc::IPPROTO_ICMPV6 as u8;
            let pseudo = [
                &r.octets()[..],
                &s.octets()[..],
                &(icmp.len() as u32).to_be_bytes()[..],
                &[0, 0, 0, next][..],
            ]
            .concat();
            let sum = checksum(&[&pseudo, &icmp]);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            Some([ipv6_header(r, s, next, icmp.len()), icmp].concat())
        }
        _ => None,
    }
}

/// Sends the error on the raw socket of its family; a failure only loses the error.
pub fn send(raw: &(OwnedFd, OwnedFd), refused: SocketAddr, sandbox: SocketAddr, len: usize) {
    use nix::sys::socket::{sendto, MsgFlags, SockaddrStorage};
    let Some(packet) = port_unreachable(refused, sandbox, len) else {
        return;
    };
    let fd = if sandbox.is_ipv4() { &raw.0 } else { &raw.1 };
    let to = SockaddrStorage::from(SocketAddr::new(sandbox.ip(), 0));
    if let Err(e) = sendto(fd.as_raw_fd(), &packet, &to, MsgFlags::MSG_DONTWAIT) {
        tracing::debug!(%refused, "cannot send the ICMP error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_quote_the_datagram_and_carry_valid_checksums() {
        let refused: SocketAddr = "192.168.7.1:53".parse().unwrap();
        let sandbox: SocketAddr = "10.89.0.2:40000".parse().unwrap();
        let p = port_unreachable(refused, sandbox, 10).unwrap();
        assert_eq!(p.len(), 20 + 8 + 20 + 8);
        assert_eq!(checksum(&[&p[..20]]), 0, "IPv4 header checksum");
        assert_eq!(checksum(&[&p[20..]]), 0, "ICMP checksum");
        assert_eq!(
            (&p[12..16], &p[16..20]),
            (&[192, 168, 7, 1][..], &[10, 89, 0, 2][..])
        );
        assert_eq!((p[20], p[21]), (3, 3));
        // The quoted datagram: from the sandbox to the refused port, 18 bytes long.
        assert_eq!(&p[48..56], &[0x9c, 0x40, 0, 53, 0, 18, 0, 0]);

        let refused: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        let sandbox: SocketAddr = "[fd5a:5bd0::2]:40000".parse().unwrap();
        let p = port_unreachable(refused, sandbox, 10).unwrap();
        assert_eq!(p.len(), 40 + 8 + 40 + 8);
        assert_eq!((p[6], p[40], p[41]), (58, 1, 4));
        let pseudo = [&p[8..40], &56u32.to_be_bytes()[..], &[0, 0, 0, 58][..]].concat();
        assert_eq!(checksum(&[&pseudo, &p[40..]]), 0, "ICMPv6 checksum");
        assert!(port_unreachable(refused, "10.89.0.2:1".parse().unwrap(), 1).is_none());
    }
}
