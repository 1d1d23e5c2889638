//! Relaying what the upstream answered for the record types the daemon does not make up
//! itself (SRV, TXT, MX, CNAME, CAA, HTTPS/SVCB…): every record of the answer and
//! authority sections is read (names decompressed, also inside the data of the types
//! that carry names) and written again uncompressed under the sandbox's own header and
//! question. Addresses never pass: A and AAAA records and the additional section are
//! dropped, and the address hints of HTTPS/SVCB records removed, so a sandbox only ever
//! connects to the synthetic addresses its own lookups return, which the policy judges
//! by name.

use super::message::{read_labels, u16_at, DnsError, Query, HEADER, TYPE_A, TYPE_AAAA};

const TYPE_NS: u16 = 2;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_PTR: u16 = 12;
const TYPE_MX: u16 = 15;
const TYPE_SRV: u16 = 33;
const TYPE_A6: u16 = 38;
const TYPE_DNAME: u16 = 39;
const TYPE_SVCB: u16 = 64;
const TYPE_HTTPS: u16 = 65;
/// SvcParamKeys of address hints (RFC 9460).
const IPV4HINT: u16 = 4;
const IPV6HINT: u16 = 6;
/// The TC flag.
const TRUNCATED: u16 = 0x0200;

/// One resource record, its names as raw labels.
struct Record {
    owner: Vec<Vec<u8>>,
    kind: u16,
    class: u16,
    ttl: u32,
    data: Vec<u8>,
}

fn put_labels(out: &mut Vec<u8>, labels: &[Vec<u8>]) {
    for l in labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// The name at `at` of message `b`, uncompressed; and the offset after it.
fn name_at(b: &[u8], at: usize) -> Result<(Vec<u8>, usize), DnsError> {
    let mut labels = Vec::new();
    let (_, after) = read_labels(b, at, &mut labels)?;
    let mut out = Vec::new();
    put_labels(&mut out, &labels);
    Ok((out, after))
}

/// The record data at `at..end`, with names decompressed where the type carries them
/// (RFC 3597 §4: only the original types may be compressed; SRV's target too, by
/// servers that do it anyway), address hints removed from HTTPS/SVCB.
fn data_of(b: &[u8], kind: u16, at: usize, end: usize) -> Result<Vec<u8>, DnsError> {
    let raw = b.get(at..end).ok_or(DnsError::Truncated)?;
    let mut out = Vec::with_capacity(raw.len());
    let fixed = |n: usize| b.get(at..at + n).ok_or(DnsError::Truncated);
    match kind {
        TYPE_NS | TYPE_CNAME | TYPE_PTR | TYPE_DNAME => out.extend(name_at(b, at)?.0),
        TYPE_MX => {
            out.extend_from_slice(fixed(2)?);
            out.extend(name_at(b, at + 2)?.0);
        }
        TYPE_SRV => {
            out.extend_from_slice(fixed(6)?);
            out.extend(name_at(b, at + 6)?.0);
        }
        TYPE_SOA => {
            let (mname, next) = name_at(b, at)?;
            let (rname, next) = name_at(b, next)?;
            out.extend(mname);
            out.extend(rname);
            out.extend_from_slice(b.get(next..next + 20).ok_or(DnsError::Truncated)?);
        }
        TYPE_SVCB | TYPE_HTTPS => {
            out.extend_from_slice(fixed(2)?);
            let (target, mut next) = name_at(b, at + 2)?;
            out.extend(target);
            while next < end {
                let key = u16_at(b, next)?;
                let len = usize::from(u16_at(b, next + 2)?);
                let param = b.get(next..next + 4 + len).ok_or(DnsError::Truncated)?;
                if key != IPV4HINT && key != IPV6HINT {
                    out.extend_from_slice(param);
                }
                next += 4 + len;
            }
        }
        _ => out.extend_from_slice(raw),
    }
    Ok(out)
}

/// Reads `count` records from `at`; returns them and the offset after them.
fn records(b: &[u8], mut at: usize, count: u16) -> Result<(Vec<Record>, usize), DnsError> {
    let mut out = Vec::new();
    for _ in 0..count {
        let mut owner = Vec::new();
        at = read_labels(b, at, &mut owner)?.1;
        let kind = u16_at(b, at)?;
        let class = u16_at(b, at + 2)?;
        let ttl = b
            .get(at + 4..at + 8)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or(DnsError::Truncated)?;
        let len = usize::from(u16_at(b, at + 8)?);
        let start = at + 10;
        let data = data_of(b, kind, start, start + len)?;
        out.push(Record {
            owner,
            kind,
            class,
            ttl,
            data,
        });
        at = start + len;
    }
    Ok((out, at))
}

/// The sandbox's answer to `query` from the upstream's `reply` (to the same question),
/// at most `limit` bytes: a longer one is cut to its header and question with TC set, so
/// the sandbox asks again over TCP.
pub fn relay(query: &Query, reply: &[u8], limit: usize) -> Result<Vec<u8>, DnsError> {
    let flags = u16_at(reply, 2)?;
    let (qd, an, ns) = (u16_at(reply, 4)?, u16_at(reply, 6)?, u16_at(reply, 8)?);
    let mut at = HEADER;
    for _ in 0..qd {
        at = read_labels(reply, at, &mut Vec::new())?.1 + 4;
    }
    let (answers, at) = records(reply, at, an)?;
    let (authority, _) = records(reply, at, ns)?;
    let keep = |r: &Record| !matches!(r.kind, TYPE_A | TYPE_AAAA | TYPE_A6);
    let answers: Vec<Record> = answers.into_iter().filter(keep).collect();
    let authority: Vec<Record> = authority.into_iter().filter(keep).collect();
    let rcode = flags & 0xf;
    let mut out = query.header(rcode as u8, 0);
    out[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
    out[8..10].copy_from_slice(&(authority.len() as u16).to_be_bytes());
    for r in answers.iter().chain(&authority) {
        put_labels(&mut out, &r.owner);
        out.extend_from_slice(&r.kind.to_be_bytes());
        out.extend_from_slice(&r.class.to_be_bytes());
        out.extend_from_slice(&r.ttl.to_be_bytes());
        let len = u16::try_from(r.data.len()).map_err(|_| DnsError::Truncated)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&r.data);
    }
    if out.len() > limit {
        let mut cut = query.header(rcode as u8, 0);
        let f = u16_at(&cut, 2)? | TRUNCATED;
        cut[2..4].copy_from_slice(&f.to_be_bytes());
        return Ok(cut);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::message::Reply;
    use super::*;

    const TYPE_TXT: u16 = 16;

    fn rr(out: &mut Vec<u8>, owner: &[u8], kind: u16, data: &[u8]) {
        out.extend_from_slice(owner);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&300u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }

    /// A reply as servers write them: names compressed (the SRV target points into the
    /// question), the target's address in the additional section.
    fn srv_reply(id: u16) -> Vec<u8> {
        let q = Query::encode(id, "_svc._tcp.allowed.test", TYPE_SRV).unwrap();
        let question_end = q.len() - 11; // the OPT record the query carries
        let mut b = q[..question_end].to_vec();
        b[2..4].copy_from_slice(&0x8180u16.to_be_bytes());
        b[6..12].copy_from_slice(&[0, 2, 0, 0, 0, 1]);
        // "allowed.test" starts after "_svc" and "_tcp": offset 12 + 5 + 5.
        let mut srv = vec![0, 1, 0, 5, 0x1f, 0x40];
        srv.extend_from_slice(&[0xc0, 22]);
        rr(&mut b, &[0xc0, 12], TYPE_SRV, &srv);
        rr(&mut b, &[0xc0, 22], TYPE_A, &[1, 2, 3, 4]);
        rr(&mut b, &[0xc0, 22], TYPE_A, &[1, 2, 3, 4]);
        b
    }

    #[test]
    fn records_are_decompressed_and_addresses_dropped() {
        let query =
            Query::parse(&Query::encode(9, "_svc._tcp.allowed.test", TYPE_SRV).unwrap()).unwrap();
        let out = relay(&query, &srv_reply(77), 512).unwrap();
        assert_eq!(u16_at(&out, 0).unwrap(), 9, "the sandbox's id");
        assert_eq!(out[6..12], [0, 1, 0, 0, 0, 0], "one answer, no additional");
        let mut srv = b"\x04_svc\x04_tcp\x07allowed\x04test\x00".to_vec();
        srv.extend_from_slice(&TYPE_SRV.to_be_bytes());
        let at = out.windows(srv.len()).rposition(|w| w == srv).unwrap();
        let data = &out[at + srv.len() + 8..];
        assert_eq!(data[..6], [0, 1, 0, 5, 0x1f, 0x40]);
        assert_eq!(&data[6..], b"\x07allowed\x04test\x00");
        // It reads back as a reply to the sandbox's question, with no address in it.
        let back = Reply::parse(&out).unwrap();
        assert!(back.addresses.is_empty());
    }

    #[test]
    fn address_hints_leave_https_records() {
        let query = Query::parse(&Query::encode(1, "allowed.test", TYPE_HTTPS).unwrap()).unwrap();
        let mut b = Query::encode(1, "allowed.test", TYPE_HTTPS).unwrap();
        b.truncate(b.len() - 11);
        b[2..4].copy_from_slice(&0x8180u16.to_be_bytes());
        b[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
        // Priority 1, target ".", alpn "h2", ipv4hint 1.2.3.4, ipv6hint ::1.
        let mut data = vec![0, 1, 0];
        data.extend_from_slice(&[0, 1, 0, 3, 2, b'h', b'2']);
        data.extend_from_slice(&[0, 4, 0, 4, 1, 2, 3, 4]);
        data.extend_from_slice(&[0, 6, 0, 16]);
        data.extend_from_slice(&[0; 15]);
        data.push(1);
        rr(&mut b, &[0xc0, 12], TYPE_HTTPS, &data);
        let out = relay(&query, &b, 512).unwrap();
        assert!(
            out.ends_with(&[0, 10, 0, 1, 0, 0, 1, 0, 3, 2, b'h', b'2']),
            "{out:?}"
        );
    }

    #[test]
    fn too_long_for_the_datagram_is_truncated_and_flagged() {
        let query = Query::parse(&Query::encode(3, "big.test", TYPE_TXT).unwrap()).unwrap();
        let mut b = Query::encode(3, "big.test", TYPE_TXT).unwrap();
        b.truncate(b.len() - 11);
        b[2..4].copy_from_slice(&0x8180u16.to_be_bytes());
        b[6..12].copy_from_slice(&[0, 8, 0, 0, 0, 0]);
        let mut txt = vec![250];
        txt.extend_from_slice(&[b'x'; 250]);
        for _ in 0..8 {
            rr(&mut b, &[0xc0, 12], TYPE_TXT, &txt);
        }
        let whole = relay(&query, &b, 65535).unwrap();
        assert_eq!(whole[6..8], [0, 8]);
        let cut = relay(&query, &b, 1232).unwrap();
        assert_eq!(u16_at(&cut, 2).unwrap() & TRUNCATED, TRUNCATED);
        assert_eq!(cut[6..8], [0, 0]);
        assert!(cut.len() < 100);
    }

    #[test]
    fn hostile_replies_are_errors() {
        let query = Query::parse(&Query::encode(3, "x.test", TYPE_TXT).unwrap()).unwrap();
        let good = srv_reply(1);
        for cut in 0..good.len() {
            let _ = relay(&query, &good[..cut], 512);
        }
        // The answer's owner name pointing at itself.
        let mut looped = good.clone();
        let at = looped.windows(2).position(|w| w == [0xc0, 12]).unwrap();
        looped[at + 1] = at as u8;
        assert!(relay(&query, &looped, 512).is_err());
    }
}
