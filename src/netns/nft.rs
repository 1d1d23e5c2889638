//! nf_tables over netlink: the one `inet sandboxd` table that sends every TCP and UDP flow
//! leaving the sandbox to the proxy listeners.
//!
//! ```text
//! table inet sandboxd {
//!   chain output { type route hook output priority mangle;
//!     meta oif lo accept                       # the sandbox's own loopback stays local
//!     meta l4proto tcp meta mark set MARK
//!     meta l4proto udp meta mark set MARK }
//!   chain prerouting { type filter hook prerouting priority mangle;
//!     meta mark MARK tproxy to :PORT }         # v4 and v6 alike
//! }
//! ```

use std::io;

use super::netlink::{Message, Socket, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
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
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_TPROXY_FAMILY: u16 = 1;
const NFTA_TPROXY_REG_PORT: u16 = 3;
const NFT_META_MARK: u32 = 3;
const NFT_META_OIF: u32 = 5;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_ACCEPT: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_IP_PRI_MANGLE: i32 = -150;

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

/// One expression of a rule.
enum Expr {
    MetaLoad(u32),
    MetaSet(u32),
    CmpEq(Vec<u8>),
    Data(Vec<u8>),
    Verdict(u32),
    Tproxy,
}

impl Expr {
    fn put(&self, m: &mut Message) {
        m.nest(NFTA_LIST_ELEM);
        let name = match self {
            Expr::MetaLoad(_) | Expr::MetaSet(_) => "meta",
            Expr::CmpEq(_) => "cmp",
            Expr::Data(_) | Expr::Verdict(_) => "immediate",
            Expr::Tproxy => "tproxy",
        };
        m.str(NFTA_EXPR_NAME, name).nest(NFTA_EXPR_DATA);
        match self {
            Expr::MetaLoad(key) => {
                m.be32(NFTA_META_DREG, NFT_REG_1).be32(NFTA_META_KEY, *key);
            }
            Expr::MetaSet(key) => {
                m.be32(NFTA_META_KEY, *key).be32(NFTA_META_SREG, NFT_REG_1);
            }
            Expr::CmpEq(data) => {
                m.be32(NFTA_CMP_SREG, NFT_REG_1)
                    .be32(NFTA_CMP_OP, NFT_CMP_EQ)
                    .nest(NFTA_CMP_DATA)
                    .attr(NFTA_DATA_VALUE, data)
                    .end();
            }
            Expr::Data(data) => {
                m.be32(NFTA_IMMEDIATE_DREG, NFT_REG_1)
                    .nest(NFTA_IMMEDIATE_DATA)
                    .attr(NFTA_DATA_VALUE, data)
                    .end();
            }
            Expr::Verdict(code) => {
                m.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                    .nest(NFTA_IMMEDIATE_DATA)
                    .nest(NFTA_DATA_VERDICT)
                    .be32(NFTA_VERDICT_CODE, *code)
                    .end()
                    .end();
            }
            Expr::Tproxy => {
                // Family unspecified: one rule serves IPv4 and IPv6; the listener address
                // is the loopback device's own, and the listeners are bound to the wildcard.
                m.be32(NFTA_TPROXY_FAMILY, 0)
                    .be32(NFTA_TPROXY_REG_PORT, NFT_REG_1);
            }
        }
        m.end().end();
    }
}

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

/// Installs the `inet sandboxd` table in one transaction: either all of it is in place
/// afterwards or nothing changed. With `replace`, a table an earlier helper left (an
/// adopted sandbox) is deleted in the same transaction; that costs an RCU grace period
/// (~10 ms here), so a fresh namespace skips it.
pub fn install(lo_index: i32, mark: u32, port: u16, replace: bool) -> io::Result<()> {
    let batch = |kind| Message::new(kind, 0, &nfgen(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES));
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
                Expr::CmpEq(mark.to_ne_bytes().to_vec()),
                Expr::Data(port.to_be_bytes().to_vec()),
                Expr::Tproxy,
            ],
        ),
        batch(NFNL_MSG_BATCH_END),
    ]);
    Socket::open(libc::NETLINK_NETFILTER)?.transact(msgs)
}
