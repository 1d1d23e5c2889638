//! nf_tables over netlink: the one `inet sandboxd` table that sends every TCP and UDP flow
//! leaving the sandbox to the proxy listeners, after the address verdicts of `judge`.
//!
//! ```text
//! table inet sandboxd {
//!   chain output { type route hook output priority mangle;
//!     meta oif lo accept                       # the sandbox's own loopback stays local
//!     meta l4proto tcp meta mark set MARK
//!     meta l4proto udp meta mark set MARK }
//!   chain prerouting { type filter hook prerouting priority mangle;
//!     meta mark != MARK accept                 # loopback traffic, and the resets below
//!     meta l4proto tcp tcp flags & (syn|ack) == syn jump judge
//!     meta mark MARK tproxy to :PORT }         # v4 and v6 alike
//!   chain judge {                              # the daemon's rules (judge.rs), e.g.
//!     ip daddr 10.0.0.0/8 log group G prefix "sbx s0 " reject with tcp reset
//!     ... }
//! }
//! ```
//!
//! Only new connections (a SYN) are judged: an open connection is never cut by a change of
//! the rules, as the proxy leaves open connections alone on reload. UDP is not judged here:
//! a refusal made before routing cannot be answered with an ICMP error from an address
//! that is not the sandbox's own, so the proxy refuses datagrams itself (`proxy/udp.rs`).

mod expr;

use std::io;

use expr::*;

use super::judge::Rule;
use super::netlink::{Message, Socket, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_IP_PRI_MANGLE: i32 = -150;
/// TCP flags byte: SYN and ACK.
const TCP_FLAGS_OFFSET: u32 = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const JUDGE: &str = "judge";

pub const TABLE: &str = "sandboxd";

fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn msg(kind: u16, flags: u16) -> Message {
    Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        flags,
        &nfgen(NFPROTO_INET, 0),
    )
}

/// A base chain on `hook`.
fn chain(name: &str, kind: &str, hook: u32) -> Message {
    let mut m = msg(NFT_MSG_NEWCHAIN, NLM_F_ACK | NLM_F_CREATE);
    m.str(NFTA_CHAIN_TABLE, TABLE)
        .str(NFTA_CHAIN_NAME, name)
        .nest(NFTA_CHAIN_HOOK)
        .be32(NFTA_HOOK_HOOKNUM, hook)
        .be32(NFTA_HOOK_PRIORITY, NF_IP_PRI_MANGLE as u32)
        .end()
        .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .str(NFTA_CHAIN_TYPE, kind);
    m
}

fn rule(chain: &str, exprs: &[Expr]) -> Message {
    let mut m = msg(NFT_MSG_NEWRULE, NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND);
    m.str(NFTA_RULE_TABLE, TABLE)
        .str(NFTA_RULE_CHAIN, chain)
        .nest(NFTA_RULE_EXPRESSIONS);
    for e in exprs {
        e.put(&mut m);
    }
    m.end();
    m
}

/// A regular chain, reached only by a jump.
fn regular_chain(name: &str) -> Message {
    let mut m = msg(NFT_MSG_NEWCHAIN, NLM_F_ACK | NLM_F_CREATE);
    m.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, name);
    m
}

fn batch(kind: u16) -> Message {
    Message::new(kind, 0, &nfgen(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES))
}

/// Installs the `inet sandboxd` table in one transaction: either all of it is in place
/// afterwards or nothing changed. With `replace`, a table an earlier helper left (an
/// adopted sandbox) is deleted in the same transaction; that costs an RCU grace period
/// (~10 ms here), so a fresh namespace skips it. `judge` starts empty: every flow goes to
/// the proxy until the daemon sends its rules.
pub fn install(lo_index: i32, mark: u32, port: u16, replace: bool) -> io::Result<()> {
    let table = |kind, flags| {
        let mut m = msg(kind, flags);
        m.str(NFTA_TABLE_NAME, TABLE);
        m
    };
    let mark_set = |proto: u8| {
        rule(
            "output",
            &[
                Expr::MetaLoad(NFT_META_L4PROTO),
                Expr::CmpEq(vec![proto]),
                Expr::Data(mark.to_ne_bytes().to_vec()),
                Expr::MetaSet(NFT_META_MARK),
            ],
        )
    };
    let mut msgs = vec![batch(NFNL_MSG_BATCH_BEGIN)];
    if replace {
        // Create-then-delete: removes the old table whether or not it is there.
        msgs.push(table(NFT_MSG_NEWTABLE, NLM_F_ACK | NLM_F_CREATE));
        msgs.push(table(NFT_MSG_DELTABLE, NLM_F_ACK));
    }
    msgs.extend([
        table(NFT_MSG_NEWTABLE, NLM_F_ACK | NLM_F_CREATE),
        chain("output", "route", NF_INET_LOCAL_OUT),
        chain("prerouting", "filter", NF_INET_PRE_ROUTING),
        regular_chain(JUDGE),
        rule(
            "output",
            &[
                Expr::MetaLoad(NFT_META_OIF),
                Expr::CmpEq((lo_index as u32).to_ne_bytes().to_vec()),
                Expr::Verdict(NF_ACCEPT),
            ],
        ),
        mark_set(libc::IPPROTO_TCP as u8),
        mark_set(libc::IPPROTO_UDP as u8),
        rule(
            "prerouting",
            &[
                Expr::MetaLoad(NFT_META_MARK),
                Expr::CmpNeq(mark.to_ne_bytes().to_vec()),
                Expr::Verdict(NF_ACCEPT),
            ],
        ),
        rule(
            "prerouting",
            &[
                Expr::MetaLoad(NFT_META_L4PROTO),
                Expr::CmpEq(vec![libc::IPPROTO_TCP as u8]),
                Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: TCP_FLAGS_OFFSET,
                    len: 1,
                },
                Expr::And(vec![TCP_SYN | TCP_ACK]),
                Expr::CmpEq(vec![TCP_SYN]),
                Expr::Jump(JUDGE),
            ],
        ),
        rule(
            "prerouting",
            &[
                Expr::MetaLoad(NFT_META_MARK),
                Expr::CmpEq(mark.to_ne_bytes().to_vec()),
                Expr::Data(port.to_be_bytes().to_vec()),
                Expr::Tproxy,
            ],
        ),
        batch(NFNL_MSG_BATCH_END),
    ]);
    Socket::open(libc::NETLINK_NETFILTER)?.transact(msgs)
}

/// The expressions of one verdict rule.
fn judge_exprs(r: &Rule, log_group: u16) -> Vec<Expr> {
    let mut e = Vec::new();
    if let Some(net) = r.net {
        let len = net.len;
        let (proto, offset, bytes) = match net.addr {
            std::net::IpAddr::V4(a) => (NFPROTO_IPV4, 16, a.octets().to_vec()),
            std::net::IpAddr::V6(a) => (NFPROTO_IPV6, 24, a.octets().to_vec()),
        };
        e.push(Expr::MetaLoad(NFT_META_NFPROTO));
        e.push(Expr::CmpEq(vec![proto]));
        if len > 0 {
            let full = bytes.len() * 8;
            let mask: Vec<u8> = (0..bytes.len())
                .map(|i| {
                    let bits = (len as usize).saturating_sub(i * 8).min(8);
                    (0xffu16 << (8 - bits)) as u8
                })
                .collect();
            e.push(Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset,
                len: bytes.len() as u32,
            });
            if (len as usize) < full {
                e.push(Expr::And(mask.clone()));
            }
            e.push(Expr::CmpEq(
                bytes.iter().zip(&mask).map(|(b, m)| b & m).collect(),
            ));
        }
    }
    if let Some((a, b)) = r.ports {
        e.push(Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 2,
            len: 2,
        });
        e.push(if a == b {
            Expr::CmpEq(a.to_be_bytes().to_vec())
        } else {
            Expr::Range(a.to_be_bytes().to_vec(), b.to_be_bytes().to_vec())
        });
    }
    match &r.refuse {
        None => e.push(Expr::Verdict(NFT_RETURN)),
        Some(code) => {
            e.push(Expr::Log {
                group: log_group,
                prefix: format!("sbx {code} "),
            });
            e.push(Expr::RejectTcpReset);
        }
    }
    e
}

/// Replaces the verdict rules of `judge` in one transaction (flush and fill): a new
/// connection meets either the old set or the new one, never a mix.
pub fn set_judge(rules: &[Rule], log_group: u16) -> io::Result<()> {
    let mut flush = msg(NFT_MSG_DELRULE, NLM_F_ACK);
    flush
        .str(NFTA_RULE_TABLE, TABLE)
        .str(NFTA_RULE_CHAIN, JUDGE);
    let mut msgs = vec![batch(NFNL_MSG_BATCH_BEGIN), flush];
    msgs.extend(
        rules
            .iter()
            .map(|r| rule(JUDGE, &judge_exprs(r, log_group))),
    );
    msgs.push(batch(NFNL_MSG_BATCH_END));
    Socket::open(libc::NETLINK_NETFILTER)?.transact(msgs)
}
