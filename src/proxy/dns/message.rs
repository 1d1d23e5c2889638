//! The little of the DNS wire format (RFC 1035) the daemon's resolver needs: read a
//! query's question, read the A/AAAA answers (and the response code) of an upstream
//! reply, and write queries and answers. Every read is bounds-checked and compression
//! pointers are followed a bounded number of times: hostile input gets an error, never a
//! panic or a loop.

use std::net::IpAddr;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
/// EDNS0 pseudo-record (RFC 6891).
const TYPE_OPT: u16 = 41;
/// The UDP payload size announced upstream (and the receive buffer of `dns::ask`).
pub const EDNS_SIZE: u16 = 4096;
pub const CLASS_IN: u16 = 1;
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

/// The mnemonic of a response code (RFC 1035 §4.1.1, RFC 6895), for messages.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        RCODE_NOERROR => "NOERROR".into(),
        RCODE_FORMERR => "FORMERR".into(),
        RCODE_SERVFAIL => "SERVFAIL".into(),
        RCODE_NXDOMAIN => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        RCODE_REFUSED => "REFUSED".into(),
        n => format!("rcode {n}"),
    }
}
pub(super) const HEADER: usize = 12;
const MAX_POINTERS: usize = 32;
const MAX_NAME: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("truncated DNS message")]
    Truncated,
    #[error("malformed DNS name")]
    BadName,
    #[error("not a query")]
    NotAQuery,
    #[error("no question")]
    NoQuestion,
    #[error("not a reply")]
    NotAReply,
}

/// The first question of a query, with what an answer must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Recursion desired, echoed in the answer.
    pub rd: bool,
    /// Lower-case, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question re-encoded without compression (echoed in the answer): a pointer in
    /// the query could point anywhere in it, which the answer does not have.
    question: Vec<u8>,
    /// The largest UDP answer the client takes: its EDNS0 payload size (at most
    /// [`EDNS_SIZE`]), else 512 bytes (RFC 1035).
    pub udp_size: usize,
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Result<u16, DnsError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(DnsError::Truncated)
}

/// Reads the (possibly compressed) name at `at`; returns it and the offset after it.
fn read_name(b: &[u8], at: usize) -> Result<(String, usize), DnsError> {
    read_labels(b, at, &mut Vec::new())
}

/// [`read_name`], also collecting the raw labels (to re-encode the name uncompressed).
pub(super) fn read_labels(
    b: &[u8],
    mut at: usize,
    labels: &mut Vec<Vec<u8>>,
) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *b.get(at).ok_or(DnsError::Truncated)? as usize;
        match len {
            0 => {
                let after = end.unwrap_or(at + 1);
                return Ok((name, after));
            }
            l if l & 0xc0 == 0xc0 => {
                let ptr = (u16_at(b, at)? & 0x3fff) as usize;
                jumps += 1;
                if jumps > MAX_POINTERS || ptr >= b.len() {
                    return Err(DnsError::BadName);
                }
                end.get_or_insert(at + 2);
                at = ptr;
            }
            l if l & 0xc0 != 0 => return Err(DnsError::BadName),
            l => {
                let label = b.get(at + 1..at + 1 + l).ok_or(DnsError::Truncated)?;
                labels.push(label.to_vec());
                if !name.is_empty() {
                    name.push('.');
                }
                for &c in label {
                    // Names are compared as ASCII; anything else cannot match a policy
                    // entry and is kept escaped.
                    if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                        name.push(c.to_ascii_lowercase() as char);
                    } else {
                        name.push_str(&format!("\\{c:03}"));
                    }
                }
                if name.len() > MAX_NAME * 4 {
                    return Err(DnsError::BadName);
                }
                at += 1 + l;
            }
        }
    }
}

/// The payload size of the EDNS0 OPT record among the additional records of query `b`
/// (which start at `at`, queries having no answer or authority records), clamped to
/// 512..=[`EDNS_SIZE`].
fn edns_size(b: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..u16_at(b, 10).ok()? {
        at = read_name(b, at).ok()?.1;
        let (kind, class) = (u16_at(b, at).ok()?, u16_at(b, at + 2).ok()?);
        if kind == TYPE_OPT {
            return Some(usize::from(class.clamp(512, EDNS_SIZE)));
        }
        at += 10 + usize::from(u16_at(b, at + 8).ok()?);
    }
    None
}

/// Encodes `name` as labels (no compression).
fn write_name(out: &mut Vec<u8>, name: &str) -> Result<(), DnsError> {
    if name.len() > MAX_NAME {
        return Err(DnsError::BadName);
    }
    for label in name.split('.').filter(|l| !l.is_empty()) {
        if label.len() > 63 {
            return Err(DnsError::BadName);
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

impl Query {
    pub fn parse(b: &[u8]) -> Result<Self, DnsError> {
        if b.len() < HEADER {
            return Err(DnsError::Truncated);
        }
        let id = u16_at(b, 0)?;
        let flags = u16_at(b, 2)?;
        if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 {
            return Err(DnsError::NotAQuery);
        }
        if u16_at(b, 4)? == 0 {
            return Err(DnsError::NoQuestion);
        }
        let mut labels = Vec::new();
        let (name, after) = read_labels(b, HEADER, &mut labels)?;
        let qtype = u16_at(b, after)?;
        let qclass = u16_at(b, after + 2)?;
        let mut question = Vec::with_capacity(name.len() + 6);
        for l in &labels {
            question.push(l.len() as u8);
            question.extend_from_slice(l);
        }
        if question.len() + 1 > 255 {
            return Err(DnsError::BadName);
        }
        question.push(0);
        question.extend_from_slice(&qtype.to_be_bytes());
        question.extend_from_slice(&qclass.to_be_bytes());
        Ok(Self {
            id,
            rd: flags & 0x0100 != 0,
            name,
            qtype,
            qclass,
            question,
            udp_size: edns_size(b, after + 4).unwrap_or(512),
        })
    }

    /// An answer's header and question: `rcode`, `answers` records to follow.
    pub fn header(&self, rcode: u8, answers: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.question.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        // QR, opcode 0, AA clear, RD echoed, RA set.
        let flags: u16 = 0x8000 | if self.rd { 0x0100 } else { 0 } | 0x0080 | rcode as u16;
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&answers.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.question);
        out
    }

    /// A new query for `name`/`qtype` with id `id`, recursion desired.
    pub fn encode(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
        let mut out = Vec::with_capacity(32 + name.len());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&0x0100u16.to_be_bytes());
        // One question, one additional record: EDNS0's OPT (RFC 6891), so a server may
        // answer in datagrams up to EDNS_SIZE instead of truncating at 512 bytes.
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
        write_name(&mut out, name)?;
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        // Root name, type OPT, class = payload size, extended rcode/version/flags 0, no data.
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_SIZE.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        Ok(out)
    }

    /// The answer to this query: `rcode` and `addresses` as A/AAAA records named by the
    /// question (a compression pointer to it), each with `ttl`.
    pub fn answer(&self, rcode: u8, addresses: &[IpAddr], ttl: u32) -> Vec<u8> {
        let mut out = self.header(rcode, addresses.len() as u16);
        for a in addresses {
            out.extend_from_slice(&0xc00cu16.to_be_bytes());
            let (kind, data) = match a {
                IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
                IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
            };
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
        }
        out
    }

    /// An error answer (no records) for a message that may not even parse: echoes the
    /// id of whatever arrived.
    pub fn error_for(raw: &[u8], rcode: u8) -> Vec<u8> {
        let id = u16_at(raw, 0).unwrap_or(0);
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&(0x8080u16 | rcode as u16).to_be_bytes());
        out.extend_from_slice(&[0; 8]);
        out
    }
}

/// What an upstream server answered: its response code and the A/AAAA records, with the
/// smallest TTL among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: u16,
    pub rcode: u8,
    pub addresses: Vec<IpAddr>,
    pub ttl: u32,
    /// The TC bit: the answer did not fit the datagram (ask again over TCP).
    pub truncated: bool,
    /// The first question as it came, from its name to its class (name compression
    /// is not allowed there, so it compares byte for byte, but for case).
    pub question: Vec<u8>,
    /// The whole message, for the record types relayed as they came ([`super::records`]).
    pub raw: Vec<u8>,
}

impl Reply {
    /// Whether this is the answer to `query` (as [`Query::encode`] made it): a response,
    /// with its id and the same question. An id alone is 16 bits an off-path sender can
    /// guess; the question must match too.
    pub fn answers(&self, query: &[u8]) -> bool {
        Query::parse(query)
            .is_ok_and(|q| q.id == self.id && q.question.eq_ignore_ascii_case(&self.question))
    }
}

impl Reply {
    pub fn parse(b: &[u8]) -> Result<Self, DnsError> {
        if b.len() < HEADER {
            return Err(DnsError::Truncated);
        }
        let flags = u16_at(b, 2)?;
        if flags & 0x8000 == 0 {
            return Err(DnsError::NotAReply);
        }
        let qd = u16_at(b, 4)?;
        let an = u16_at(b, 6)?;
        let mut at = HEADER;
        let mut question = Vec::new();
        for i in 0..qd {
            let start = at;
            at = read_name(b, at)?.1 + 4;
            if i == 0 {
                question = b.get(start..at).ok_or(DnsError::Truncated)?.to_vec();
            }
        }
        let mut addresses = Vec::new();
        let mut ttl = u32::MAX;
        for _ in 0..an {
            at = read_name(b, at)?.1;
            let kind = u16_at(b, at)?;
            let class = u16_at(b, at + 2)?;
            let rttl = b
                .get(at + 4..at + 8)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or(DnsError::Truncated)?;
            let len = u16_at(b, at + 8)? as usize;
            let data = b.get(at + 10..at + 10 + len).ok_or(DnsError::Truncated)?;
            match (kind, class, len) {
                (TYPE_A, CLASS_IN, 4) => {
                    addresses.push(IpAddr::from([data[0], data[1], data[2], data[3]]));
                    ttl = ttl.min(rttl);
                }
                (TYPE_AAAA, CLASS_IN, 16) => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(data);
                    addresses.push(IpAddr::from(o));
                    ttl = ttl.min(rttl);
                }
                _ => {}
            }
            at += 10 + len;
        }
        Ok(Self {
            id: u16_at(b, 0)?,
            rcode: (flags & 0xf) as u8,
            addresses,
            ttl: if ttl == u32::MAX { 0 } else { ttl },
            truncated: flags & 0x0200 != 0,
            question,
            raw: b.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_answers_only_its_own_question() {
        let q = Query::encode(7, "allowed.test", TYPE_A).unwrap();
        let reply =
            Reply::parse(&Query::parse(&q).unwrap().answer(RCODE_NOERROR, &[], 60)).unwrap();
        assert!(reply.answers(&q));
        assert!(reply.answers(&Query::encode(7, "ALLOWED.test", TYPE_A).unwrap()));
        assert!(!reply.answers(&Query::encode(8, "allowed.test", TYPE_A).unwrap()));
        assert!(!reply.answers(&Query::encode(7, "other.test", TYPE_A).unwrap()));
        assert!(!reply.answers(&Query::encode(7, "allowed.test", TYPE_AAAA).unwrap()));
        // A query is not a reply.
        assert!(matches!(Reply::parse(&q), Err(DnsError::NotAReply)));
        // The query announces EDNS0: one OPT record of payload size EDNS_SIZE at its end.
        assert_eq!(u16::from_be_bytes([q[10], q[11]]), 1);
        let opt = &q[q.len() - 11..];
        assert_eq!(opt[0], 0);
        assert_eq!(u16::from_be_bytes([opt[1], opt[2]]), TYPE_OPT);
        assert_eq!(u16::from_be_bytes([opt[3], opt[4]]), EDNS_SIZE);
    }

    #[test]
    fn a_query_round_trips_through_an_answer() {
        let q = Query::encode(0x1234, "Allowed.Test", TYPE_A).unwrap();
        let parsed = Query::parse(&q).unwrap();
        assert_eq!(parsed.id, 0x1234);
        assert_eq!(parsed.name, "allowed.test");
        assert_eq!(parsed.qtype, TYPE_A);
        assert!(parsed.rd);
        let addrs: Vec<IpAddr> = vec!["100.89.0.1".parse().unwrap(), "fd5a::1".parse().unwrap()];
        let answer = parsed.answer(RCODE_NOERROR, &addrs, 60);
        let reply = Reply::parse(&answer).unwrap();
        assert_eq!(reply.id, 0x1234);
        assert_eq!(reply.rcode, RCODE_NOERROR);
        assert_eq!(reply.addresses, addrs);
        assert_eq!(reply.ttl, 60);
        let nx = Reply::parse(&parsed.answer(RCODE_NXDOMAIN, &[], 0)).unwrap();
        assert_eq!((nx.rcode, nx.addresses.len()), (RCODE_NXDOMAIN, 0));
    }

    /// Found by tests/fuzz_net.rs: a question whose name points forward (past the
    /// question) gave an answer whose echoed question pointed at nothing.
    #[test]
    fn a_compressed_question_is_echoed_uncompressed() {
        let mut q = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[0xc0, 18, 0, 1, 0, 1]); // name → offset 18, after the question
        q.extend_from_slice(&[4, b't', b'e', b's', b't', 0]);
        let parsed = Query::parse(&q).unwrap();
        assert_eq!(parsed.name, "test");
        let answer = parsed.answer(RCODE_NOERROR, &["100.89.0.1".parse().unwrap()], 5);
        let r = Reply::parse(&answer).unwrap();
        assert_eq!(r.addresses, vec!["100.89.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn hostile_messages_are_errors() {
        assert_eq!(Query::parse(&[0; 5]), Err(DnsError::Truncated));
        // A compression pointer to itself.
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(Query::parse(&q), Err(DnsError::BadName));
        // A label running past the end.
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[40, b'a', b'b']);
        assert_eq!(Query::parse(&q), Err(DnsError::Truncated));
        // A response is not a query.
        let r = Query::encode(1, "x.test", TYPE_A).unwrap();
        let mut r2 = r.clone();
        r2[2] |= 0x80;
        assert_eq!(Query::parse(&r2), Err(DnsError::NotAQuery));
        assert_eq!(Query::error_for(&[7, 8], RCODE_FORMERR)[..2], [7, 8]);
        assert!(Query::encode(1, &"a".repeat(300), TYPE_A).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Query::parse(&bytes);
            let _ = Reply::parse(&bytes);
            let _ = Query::error_for(&bytes, RCODE_FORMERR);
        }

        #[test]
        fn mutated_queries_never_panic(name in "[a-z]{1,20}(\\.[a-z]{1,10}){0,3}", at in 0usize..64, byte in proptest::prelude::any::<u8>()) {
            let mut q = Query::encode(9, &name, TYPE_AAAA).unwrap();
            let i = at % q.len();
            q[i] = byte;
            if let Ok(parsed) = Query::parse(&q) {
                let _ = Reply::parse(&parsed.answer(RCODE_NOERROR, &["1.2.3.4".parse().unwrap()], 1));
            }
        }
    }
}
