"""The test "internet": servers run inside a network namespace the tests create.

    internet.py serve            TCP 8000 (HTTP), TCP 8443 (the same over TLS, a
                                 self-signed certificate for allowed.test made with
                                 openssl at start), TCP 7008 (half-close), UDP 7007 (echo),
                                 on every address of the namespace, v4 and v6; and an
                                 authoritative DNS server for *.test on UDP 53 (NAMES)
    internet.py expect N         sha256 of what GET /bytes/N sends

HTTP: GET /bytes/N sends N bytes of a fixed pattern; POST /sha256 answers the sha256 of
the request body; GET /whoami answers the client's address; GET /hello answers "hello". Port 7008 reads to end of stream, then
answers "LENGTH SHA256" and closes.
"""
import asyncio
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import tempfile

BLOCK = bytes((i * 7 + 3) & 255 for i in range(1 << 20))


def pattern(n):
    full, rest = divmod(n, len(BLOCK))
    for _ in range(full):
        yield BLOCK
    if rest:
        yield BLOCK[:rest]


async def http(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n")[0].decode()
        method, path, _ = line.split(" ", 2)
        headers = {}
        for h in head.split(b"\r\n")[1:]:
            if b":" in h:
                k, v = h.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        if method == "GET" and path.startswith("/bytes/"):
            n = int(path[len("/bytes/"):])
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            for chunk in pattern(n):
                writer.write(chunk)
                await writer.drain()
        elif method == "POST" and path == "/sha256":
            left = int(headers.get(b"content-length", b"0"))
            h = hashlib.sha256()
            while left:
                chunk = await reader.read(min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            body = h.hexdigest().encode()
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif path == "/whoami":
            me = writer.get_extra_info("peername")[0].encode()
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(me), me))
        else:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def halfclose(reader, writer):
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    writer.write(b"%d %s\n" % (n, h.hexdigest().encode()))
    await writer.drain()
    writer.close()


# The test zone: allowed.test and shared.test share an address; other.test has its own.
# Names a profile may allow resolve to public addresses (routed by the tests to this
# namespace only): an allowed name that resolves into a special range is refused.
NAMES = {
    "allowed.test": ("1.2.3.4", "2a00:1::4"),
    "shared.test": ("1.2.3.4", "2a00:1::4"),
    "other.test": ("203.0.113.3", None),
    "a.wild.test": ("1.2.3.4", None),
    "bad.wild.test": ("1.2.3.4", None),
    "wild.test": ("1.2.3.4", None),
    "lan.test": ("192.168.77.1", None),
    "host.test": ("203.0.113.1", None),
    # Rebinding into special ranges the host routes: 198.18.0.0/15 to this namespace (the
    # tests add it), 192.0.2.0/24 to the CI machine's own LAN (never dialed: refused).
    "bench.test": ("198.18.0.2", None),
    "lanrebind.test": ("192.0.2.77", None),
}
# Answered only to clients inside the test internet (such as a SOCKS5 server there), never
# to the host: a name only an upstream proxy can resolve.
INSIDE_ONLY = {"proxyonly.test": ("203.0.113.2", None)}


def txt(*strings):
    return b"".join(bytes([len(s)]) + s.encode() for s in strings)


def labels_of(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00"


# Records of other types, by (name, type): (data, additional address or None). The SRV
# target is written as a pointer into the question (offset 22: after "_svc" and "_tcp"),
# as servers compress it; its address rides in the additional section, as they send it.
RECORDS = {
    ("_svc._tcp.allowed.test", 33): (b"\x00\x01\x00\x05\x1f\x40\xc0\x16", "1.2.3.4"),
    ("allowed.test", 16): (txt("v=sandboxd-test"), None),
    ("allowed.test", 15): (b"\x00\x0a" + labels_of("mail.allowed.test"), None),
    ("big.allowed.test", 16): (txt(*["%03d" % i + "x" * 246 for i in range(8)]), None),
    ("other.test", 16): (txt("secret"), None),
}


def dns_answer(q, client="203.0.113.2"):
    """The answer to query bytes q from client, or None for garbage."""
    if len(q) < 12:
        return None
    i, labels = 12, []
    while i < len(q) and q[i] != 0:
        n = q[i]
        if n & 0xC0 or i + 1 + n > len(q):
            return None
        labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    if i + 5 > len(q):
        return None
    qtype = int.from_bytes(q[i + 1:i + 3], "big")
    question = q[12:i + 5]
    name = ".".join(labels)
    found = NAMES.get(name)
    if not found and client != "203.0.113.1":
        found = INSIDE_ONLY.get(name)
    answers = []
    extra = None
    if (name, qtype) in RECORDS:
        data, extra = RECORDS[(name, qtype)]
        answers.append((qtype, data))
        found = found or ("", None)
    if found:
        v4, v6 = found
        if qtype == 1 and v4:
            answers.append((1, socket.inet_pton(socket.AF_INET, v4)))
        if qtype == 28 and v6:
            answers.append((28, socket.inet_pton(socket.AF_INET6, v6)))
    rcode = 0 if found else 3
    additional = b"\x00\x01" if extra else b"\x00\x00"
    out = q[:2] + bytes([0x84 | (q[2] & 1), 0x80 | rcode]) + b"\x00\x01" + len(answers).to_bytes(2, "big") + b"\x00\x00" + additional + question
    for kind, data in answers:
        out += b"\xc0\x0c" + kind.to_bytes(2, "big") + b"\x00\x01" + (30).to_bytes(4, "big") + len(data).to_bytes(2, "big") + data
    if extra:
        out += b"\xc0\x16\x00\x01\x00\x01" + (30).to_bytes(4, "big") + b"\x00\x04" + socket.inet_pton(socket.AF_INET, extra)
    return out


class Dns(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        out = dns_answer(data, addr[0])
        if out:
            self.transport.sendto(out, addr)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


def tls_context():
    d = tempfile.mkdtemp()
    key, cert = os.path.join(d, "key"), os.path.join(d, "cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=allowed.test", "-keyout", key, "-out", cert, "-days", "2"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve():
    loop = asyncio.get_running_loop()
    servers = []
    tls = tls_context()
    for host, fam in (("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6)):
        for port, handler in ((8000, http), (7008, halfclose)):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            s.listen(4096)
            servers.append(await asyncio.start_server(handler, sock=s, limit=1 << 20))
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, 8443))
        s.listen(64)
        servers.append(await asyncio.start_server(http, sock=s, ssl=tls))
        u = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        u.bind((host, 7007))
        await loop.create_datagram_endpoint(Echo, sock=u)
        d = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            d.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        d.bind((host, 53))
        await loop.create_datagram_endpoint(Dns, sock=d)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "expect":
        h = hashlib.sha256()
        for chunk in pattern(int(sys.argv[2])):
            h.update(chunk)
        print(h.hexdigest())
    else:
        asyncio.run(serve())
