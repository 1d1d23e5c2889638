//! rtnetlink: the sandbox's links, addresses, routes and fwmark rules.
//!
//! Every flow leaves through the veth pair's default route; the nf_tables output chain
//! marks it, and the mark's rule sends it to a table whose only route is `local default
//! dev lo`, so it loops back into prerouting where TPROXY hands it to the proxy listener.

use std::io;
use std::net::IpAddr;

use super::netlink::{Message, Socket, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWRULE: u16 = 32;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FR_ACT_TO_TBL: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_HOST: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTPROT_STATIC: u8 = 4;
const RT_TABLE_MAIN: u8 = 254;
const IFF_UP: u32 = 1;

fn family(v6: bool) -> u8 {
    if v6 {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut h = vec![0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The kernel's index of link `name` in the current network namespace.
pub fn index_of(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: c is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i as i32),
    }
}

/// Accepts "already exists" so that a helper restarted for an adopted sandbox can run the
/// same set-up again.
fn tolerate_exists(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

pub struct Routes {
    sock: Socket,
}

impl Routes {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            sock: Socket::open(libc::NETLINK_ROUTE)?,
        })
    }

    /// Creates the veth pair `a`/`b`, both ends in this namespace; false when it existed
    /// already (a helper set this namespace up before).
    pub fn add_veth(&mut self, a: &str, b: &str) -> io::Result<bool> {
        let mut m = Message::new(
            RTM_NEWLINK,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0, 0, 0),
        );
        m.str(IFLA_IFNAME, a)
            .nest(IFLA_LINKINFO)
            .str(IFLA_INFO_KIND, "veth")
            .nest(IFLA_INFO_DATA)
            .nest(VETH_INFO_PEER)
            .raw(&ifinfomsg(0, 0, 0))
            .str(IFLA_IFNAME, b)
            .end()
            .end()
            .end();
        match self.sock.transact(vec![m]) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn set_up(&mut self, index: i32) -> io::Result<()> {
        let m = Message::new(RTM_NEWLINK, NLM_F_ACK, &ifinfomsg(index, IFF_UP, IFF_UP));
        self.sock.transact(vec![m])
    }

    /// Adds `addr/prefix` to link `index` (IPv6 without duplicate address detection, so
    /// it is usable at once).
    pub fn add_address(&mut self, index: i32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let mut h = vec![0u8; 8];
        h[0] = family(addr.is_ipv6());
        h[1] = prefix;
        h[3] = RT_SCOPE_UNIVERSE;
        h[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let mut m = Message::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &h);
        m.attr(IFA_LOCAL, &ip_bytes(addr))
            .attr(IFA_ADDRESS, &ip_bytes(addr));
        if addr.is_ipv6() {
            m.u32(IFA_FLAGS, IFA_F_NODAD);
        }
        tolerate_exists(self.sock.transact(vec![m]))
    }

    fn route(&mut self, v6: bool, table: u8, kind: u8, scope: u8, oif: i32) -> io::Result<()> {
        let h = [
            family(v6),
            0, // dst_len: default
            0,
            0,
            table,
            RTPROT_STATIC,
            scope,
            kind,
            0,
            0,
            0,
            0,
        ];
        let mut m = Message::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &h);
        m.u32(RTA_TABLE, table as u32).u32(RTA_OIF, oif as u32);
        tolerate_exists(self.sock.transact(vec![m]))
    }

    /// `default dev INDEX` in the main table.
    pub fn add_default_route(&mut self, v6: bool, index: i32) -> io::Result<()> {
        let scope = if v6 { RT_SCOPE_UNIVERSE } else { RT_SCOPE_LINK };
        self.route(v6, RT_TABLE_MAIN, RTN_UNICAST, scope, index)
    }

    /// `local default dev lo table TABLE`: everything routed by this table is delivered
    /// locally, where TPROXY has already picked the listening socket.
    pub fn add_local_default(&mut self, v6: bool, table: u8, lo: i32) -> io::Result<()> {
        self.route(v6, table, RTN_LOCAL, RT_SCOPE_HOST, lo)
    }

    /// `fwmark MARK lookup TABLE`.
    pub fn add_fwmark_rule(&mut self, v6: bool, mark: u32, table: u8) -> io::Result<()> {
        let h = [family(v6), 0, 0, 0, table, 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0];
        let mut m = Message::new(RTM_NEWRULE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &h);
        m.u32(FRA_FWMARK, mark)
            .u32(FRA_TABLE, table as u32)
            .u32(FRA_PRIORITY, 100);
        tolerate_exists(self.sock.transact(vec![m]))
    }
}
