//! The name a connection's first bytes ask for: the SNI of a TLS ClientHello, or the
//! `Host:` header of a plaintext HTTP/1 request. Nothing is decrypted or terminated; the
//! bytes are only read, bounded by [`LIMIT`], and then relayed as they came.

/// The most of a connection's first bytes read before deciding.
pub const LIMIT: usize = 16 * 1024;

/// What the first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum First {
    /// A TLS ClientHello, with its server name if it has one.
    Tls(Option<String>),
    /// A plaintext HTTP/1 request, with its `Host` (without a port) if it has one.
    Http(Option<String>),
    /// Anything else: another protocol, whose first bytes name nothing.
    Other,
    /// Not enough bytes yet to tell (or, at [`LIMIT`], a message too long to read).
    More,
    /// A ClientHello this parser cannot read, or a request naming two hosts: refused,
    /// since a server might act on a name that was never checked.
    Malformed,
}

/// HTTP/1 methods a request line starts with (RFC 9110 §9, and PATCH).
const METHODS: [&str; 9] = [
    "GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "CONNECT ", "OPTIONS ", "TRACE ", "PATCH ",
];

/// Reads what `b` (the connection's first bytes so far) is.
pub fn first(b: &[u8]) -> First {
    if b.first() == Some(&0x16) {
        return tls(b);
    }
    let may_be_http = METHODS.iter().any(|m| {
        let n = m.len().min(b.len());
        b[..n] == m.as_bytes()[..n]
    });
    if !may_be_http || b.is_empty() {
        return First::Other;
    }
    if b.len() < METHODS.iter().map(|m| m.len()).min().unwrap_or(4) {
        return First::More;
    }
    http(b)
}

fn http(b: &[u8]) -> First {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return First::More;
    };
    let head = String::from_utf8_lossy(&b[..end]);
    let mut lines = head.split("\r\n");
    // An absolute-form target (`GET http://host/ HTTP/1.1`) names a host too, and
    // servers that take it prefer it to the header.
    let target = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("");
    let absolute = ["http://", "https://"]
        .iter()
        .find_map(|s| {
            target
                .get(..s.len())
                .filter(|p| p.eq_ignore_ascii_case(s))
                .map(|p| &target[p.len()..])
        })
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    let headers = lines.filter_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case("host")
            .then_some(value.trim())
    });
    let mut hosts: Vec<String> = absolute
        .into_iter()
        .chain(headers)
        .map(|h| strip_port(h.rsplit('@').next().unwrap_or(h)).to_ascii_lowercase())
        .collect();
    hosts.dedup();
    match hosts.as_slice() {
        [] => First::Http(None),
        [one] if one.is_empty() => First::Http(None),
        [one] => First::Http(Some(one.clone())),
        // Two hosts, and the server picks one of them: nothing to judge by.
        _ => First::Malformed,
    }
}

/// `example.org:8080` → `example.org`; `[2001:db8::1]:443` → `2001:db8::1`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The handshake bytes of the TLS records in `b`, as far as they go: `None` unless the
/// first is a handshake record. A record of another type (a ChangeCipherSpec sent right
/// after the hello, say) ends them; it does not make the hello unread.
fn handshake(b: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= b.len() {
        if b[at] != 0x16 || b[at + 1] != 0x03 {
            if at == 0 {
                return None;
            }
            return Some((out, true));
        }
        let len = usize::from(u16::from_be_bytes([b[at + 3], b[at + 4]]));
        let Some(body) = b.get(at + 5..at + 5 + len) else {
            out.extend_from_slice(&b[at + 5..]);
            return Some((out, false));
        };
        out.extend_from_slice(body);
        at += 5 + len;
    }
    Some((out, at == b.len()))
}

fn tls(b: &[u8]) -> First {
    let Some((hs, _)) = handshake(b) else {
        return First::Other;
    };
    // Handshake type 1 (ClientHello) and its 24-bit length.
    if hs.len() < 4 {
        return First::More;
    }
    if hs[0] != 1 {
        return First::Other;
    }
    let len = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
    let Some(hello) = hs.get(4..4 + len) else {
        return First::More;
    };
    match server_name(hello) {
        Some(name) => First::Tls(name),
        None => First::Malformed,
    }
}

/// The SNI of a ClientHello body: `Some(None)` when it has none, `None` when malformed.
fn server_name(h: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(h);
    r.take(2 + 32)?; // version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.0.is_empty() {
        return Some(None);
    }
    let mut ext = Reader(r.vec16()?);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let data = ext.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut names = Reader(Reader(data).vec16()?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// Bounds-checked reads from the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// Bytes after a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// Bytes after a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as a client writes it, with `sni` if given, in one record.
    pub(crate) fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // no session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext = Vec::new();
        // supported_versions first, as real clients send several.
        ext.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            ext.extend_from_slice(&0u16.to_be_bytes());
            ext.extend_from_slice(&(n + 5).to_be_bytes());
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
        }
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn the_server_name_of_a_client_hello() {
        let hello = client_hello(Some("Allowed.Test."));
        assert_eq!(first(&hello), First::Tls(Some("allowed.test".into())));
        assert_eq!(first(&client_hello(None)), First::Tls(None));
        // Every prefix is "more", never a wrong answer.
        for cut in 1..hello.len() {
            assert_eq!(first(&hello[..cut]), First::More, "{cut}");
        }
        // The same hello split over two records.
        let hs = &hello[5..];
        let mut two = vec![0x16, 3, 1, 0, 10];
        two.extend_from_slice(&hs[..10]);
        two.extend_from_slice(&[0x16, 3, 1]);
        two.extend_from_slice(&((hs.len() - 10) as u16).to_be_bytes());
        two.extend_from_slice(&hs[10..]);
        assert_eq!(first(&two), First::Tls(Some("allowed.test".into())));
        // Whatever follows the hello (a ChangeCipherSpec record, garbage) does not hide it.
        for tail in [&[0x14, 3, 3, 0, 1, 1][..], b"junk"] {
            let mut more = hello.clone();
            more.extend_from_slice(tail);
            assert_eq!(first(&more), First::Tls(Some("allowed.test".into())));
        }
        // A ServerHello or garbage after the type byte is not a ClientHello.
        let mut server_hello = hello.clone();
        server_hello[5] = 2;
        assert_eq!(first(&server_hello), First::Other);
        assert_eq!(first(&[0x16, 0x99, 0, 0, 0, 0]), First::Other);
        // A ClientHello whose extensions overrun it is refused, not passed.
        let mut bad = hello.clone();
        let ext_len_at = 5 + 4 + 2 + 32 + 1 + 4 + 2;
        bad[ext_len_at] = 0x7f;
        assert_eq!(first(&bad), First::Malformed);
    }

    #[test]
    fn the_host_of_an_http_request() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nhost: Other.Test:8000\r\n\r\nbody";
        assert_eq!(first(req), First::Http(Some("other.test".into())));
        assert_eq!(first(b"GET / HTTP/1.0\r\n\r\n"), First::Http(None));
        assert_eq!(
            first(b"POST / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"),
            First::Http(Some("2001:db8::1".into()))
        );
        for cut in 1..req.len() - 5 {
            assert_eq!(first(&req[..cut]), First::More, "{cut}");
        }
        // The absolute form names the host; two different hosts are refused.
        assert_eq!(
            first(b"GET http://Other.Test:81/x HTTP/1.1\r\nHost: other.test\r\n\r\n"),
            First::Http(Some("other.test".into()))
        );
        assert_eq!(
            first(b"GET http://other.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
            First::Malformed
        );
        assert_eq!(
            first(b"GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: other.test\r\n\r\n"),
            First::Malformed
        );
        assert_eq!(first(b"SSH-2.0-OpenSSH\r\n"), First::Other);
        assert_eq!(first(b"GETX"), First::Other);
        assert_eq!(first(b"\x00\x01"), First::Other);
    }
}
