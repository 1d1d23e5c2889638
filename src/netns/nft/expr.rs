//! The nf_tables expressions sandboxd's rules are made of, as netlink attributes.

use super::super::netlink::Message;

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
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_TPROXY_FAMILY: u16 = 1;
const NFTA_TPROXY_REG_PORT: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_RANGE_SREG: u16 = 1;
const NFTA_RANGE_OP: u16 = 2;
const NFTA_RANGE_FROM_DATA: u16 = 3;
const NFTA_RANGE_TO_DATA: u16 = 4;
const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_LOG_GROUP: u16 = 1;
const NFTA_LOG_PREFIX: u16 = 2;
const NFTA_LOG_SNAPLEN: u16 = 3;
const NFTA_LOG_QTHRESHOLD: u16 = 4;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_RANGE_EQ: u32 = 0;
const NFT_REJECT_TCP_RST: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;

pub const NFT_META_MARK: u32 = 3;
pub const NFT_META_OIF: u32 = 5;
pub const NFT_META_NFPROTO: u32 = 15;
pub const NFT_META_L4PROTO: u32 = 16;
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub const NF_ACCEPT: u32 = 1;
pub const NFT_JUMP: u32 = -3i32 as u32;
pub const NFT_RETURN: u32 = -5i32 as u32;

/// One expression of a rule. Every one that loads or compares uses register 1.
pub enum Expr {
    MetaLoad(u32),
    MetaSet(u32),
    /// `len` bytes at `offset` of a header (`NFT_PAYLOAD_*`).
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    /// Register 1 &= mask (its length is the mask's).
    And(Vec<u8>),
    CmpEq(Vec<u8>),
    CmpNeq(Vec<u8>),
    /// from ≤ register 1 ≤ to, compared as big-endian bytes.
    Range(Vec<u8>, Vec<u8>),
    Data(Vec<u8>),
    Verdict(u32),
    Jump(&'static str),
    Tproxy,
    /// To the nflog group, with a prefix; one netlink message per packet.
    Log {
        group: u16,
        prefix: String,
    },
    RejectTcpReset,
}

fn data(m: &mut Message, kind: u16, value: &[u8]) {
    m.nest(kind).attr(NFTA_DATA_VALUE, value).end();
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::MetaLoad(_) | Expr::MetaSet(_) => "meta",
            Expr::Payload { .. } => "payload",
            Expr::And(_) => "bitwise",
            Expr::CmpEq(_) | Expr::CmpNeq(_) => "cmp",
            Expr::Range(..) => "range",
            Expr::Data(_) | Expr::Verdict(_) | Expr::Jump(_) => "immediate",
            Expr::Tproxy => "tproxy",
            Expr::Log { .. } => "log",
            Expr::RejectTcpReset => "reject",
        }
    }

    pub fn put(&self, m: &mut Message) {
        m.nest(NFTA_LIST_ELEM);
        m.str(NFTA_EXPR_NAME, self.name()).nest(NFTA_EXPR_DATA);
        match self {
            Expr::MetaLoad(key) => {
                m.be32(NFTA_META_DREG, NFT_REG_1).be32(NFTA_META_KEY, *key);
            }
            Expr::MetaSet(key) => {
                m.be32(NFTA_META_KEY, *key).be32(NFTA_META_SREG, NFT_REG_1);
            }
            Expr::Payload { base, offset, len } => {
                m.be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
                    .be32(NFTA_PAYLOAD_BASE, *base)
                    .be32(NFTA_PAYLOAD_OFFSET, *offset)
                    .be32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::And(mask) => {
                m.be32(NFTA_BITWISE_SREG, NFT_REG_1)
                    .be32(NFTA_BITWISE_DREG, NFT_REG_1)
                    .be32(NFTA_BITWISE_LEN, mask.len() as u32);
                data(m, NFTA_BITWISE_MASK, mask);
                data(m, NFTA_BITWISE_XOR, &vec![0; mask.len()]);
            }
            Expr::CmpEq(value) | Expr::CmpNeq(value) => {
                let op = match self {
                    Expr::CmpNeq(_) => NFT_CMP_NEQ,
                    _ => NFT_CMP_EQ,
                };
                m.be32(NFTA_CMP_SREG, NFT_REG_1).be32(NFTA_CMP_OP, op);
                data(m, NFTA_CMP_DATA, value);
            }
            Expr::Range(from, to) => {
                m.be32(NFTA_RANGE_SREG, NFT_REG_1)
                    .be32(NFTA_RANGE_OP, NFT_RANGE_EQ);
                data(m, NFTA_RANGE_FROM_DATA, from);
                data(m, NFTA_RANGE_TO_DATA, to);
            }
            Expr::Data(value) => {
                m.be32(NFTA_IMMEDIATE_DREG, NFT_REG_1);
                data(m, NFTA_IMMEDIATE_DATA, value);
            }
            Expr::Verdict(code) => {
                m.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                    .nest(NFTA_IMMEDIATE_DATA)
                    .nest(NFTA_DATA_VERDICT)
                    .be32(NFTA_VERDICT_CODE, *code)
                    .end()
                    .end();
            }
            Expr::Jump(chain) => {
                m.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                    .nest(NFTA_IMMEDIATE_DATA)
                    .nest(NFTA_DATA_VERDICT)
                    .be32(NFTA_VERDICT_CODE, NFT_JUMP)
                    .str(NFTA_VERDICT_CHAIN, chain)
                    .end()
                    .end();
            }
            Expr::Tproxy => {
                // Family unspecified: one rule serves IPv4 and IPv6; the listener address
                // is the loopback device's own, and the listeners are bound to the wildcard.
                m.be32(NFTA_TPROXY_FAMILY, 0)
                    .be32(NFTA_TPROXY_REG_PORT, NFT_REG_1);
            }
            Expr::Log { group, prefix } => {
                m.attr(NFTA_LOG_GROUP, &group.to_be_bytes())
                    .str(NFTA_LOG_PREFIX, prefix)
                    // The IP and TCP headers are all the daemon reads.
                    .be32(NFTA_LOG_SNAPLEN, 128)
                    // Sent at once, not batched: the denial is announced as it happens.
                    .attr(NFTA_LOG_QTHRESHOLD, &1u16.to_be_bytes());
            }
            Expr::RejectTcpReset => {
                m.be32(NFTA_REJECT_TYPE, NFT_REJECT_TCP_RST);
            }
        }
        m.end().end();
    }
}
