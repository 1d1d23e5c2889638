//! A minimal synchronous netlink client: build messages with nested attributes, send
//! them, and collect the kernel's acknowledgements. Enough for rtnetlink (links,
//! addresses, routes, rules) and nf_tables batches, with no dependency beyond libc.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message under construction: header, fixed family header, attributes.
pub struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    /// A message of `kind` with `flags` (NLM_F_REQUEST is always added) whose family
    /// header is `header` (e.g. an `ifinfomsg` as bytes).
    pub fn new(kind: u16, flags: u16, header: &[u8]) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(header);
        buf.resize(align4(buf.len()), 0);
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// A big-endian u32, as nf_tables attributes are.
    pub fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_be_bytes())
    }

    /// Opens a nested attribute; close it with [`Message::end`].
    pub fn nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.attr(kind | NLA_F_NESTED, &[])
    }

    /// Appends raw bytes inside the current nest (a family header of a nested message).
    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn end(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A netlink socket of one protocol (NETLINK_ROUTE, NETLINK_NETFILTER).
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open(protocol: i32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 1 })
    }

    /// The socket itself, for a subscription read elsewhere (the daemon's end of nflog).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends the messages as one datagram (an nf_tables batch must arrive whole) and waits
    /// for one acknowledgement per message that asked for it; the first error wins.
    pub fn transact(&mut self, msgs: Vec<Message>) -> io::Result<()> {
        let mut out = Vec::new();
        let mut want = Vec::new();
        for m in msgs {
            let seq = self.seq;
            self.seq += 1;
            let flags = u16::from_ne_bytes([m.buf[6], m.buf[7]]);
            if flags & NLM_F_ACK != 0 {
                want.push(seq);
            }
            out.extend_from_slice(&m.finish(seq));
        }
        // SAFETY: out is a valid buffer of out.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), out.as_ptr().cast(), out.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut first_error = None;
        let mut buf = vec![0u8; 64 * 1024];
        while !want.is_empty() {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + NLMSG_HDRLEN <= n {
                let len =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap_or_default());
                if len < NLMSG_HDRLEN || off + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    ));
                }
                if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                    let code = i32::from_ne_bytes(
                        buf[off + NLMSG_HDRLEN..off + NLMSG_HDRLEN + 4]
                            .try_into()
                            .unwrap_or_default(),
                    );
                    want.retain(|s| *s != seq);
                    if code != 0 && first_error.is_none() {
                        first_error = Some(io::Error::from_raw_os_error(-code));
                    }
                } else if kind == NLMSG_DONE {
                    want.retain(|s| *s != seq);
                }
                off += align4(len);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_flag() {
        let mut m = Message::new(16, NLM_F_ACK, &[1, 2, 3, 4]);
        m.nest(1).str(2, "lo").end();
        let b = m.finish(7);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        // nest header at 20: length covers the inner attribute (4 + 3 bytes, padded to 8).
        assert_eq!(u16::from_ne_bytes([b[20], b[21]]), 4 + 8);
        assert_eq!(u16::from_ne_bytes([b[22], b[23]]), 1 | NLA_F_NESTED);
        assert_eq!(&b[28..31], b"lo\0");
    }
}
