"""Network probes run inside a sandbox (the host's python3, fed on stdin).

Each command prints one line the test parses:
    download HOST N             "LENGTH SHA256"
    upload HOST N               "ok" when the server saw what was sent
    udp HOST COUNT              "OK_COUNT" of echoed datagrams (sizes 1..60000)
    udpconnect HOST PORT        "OUTCOME MILLISECONDS" of one datagram on a connected socket
                                (ok | refused | timeout)
    halfclose HOST N            "ok" when the reply after SHUT_WR is complete
    connect HOST PORT           "OUTCOME MILLISECONDS" (ok:FIRST_LINE | closed | reset | refused |
                                unreachable | timeout); sends an HTTP request first
    concurrent HOST N           "OK_COUNT" of N simultaneous request/responses
    stall HOST N                "UNLOADED_S LOADED_S": N-byte downloads without and with a
                                stalled reader on another connection
    privileged                  one "ACTION: OUTCOME" line per attempt
    hold HOST N                 "ALIVE_COUNT" of N connections opened and kept open at once
    holdmany HOST N SECS        the same for thousands of connections (checked together, with
                                epoll), printed once they are open; then kept SECS seconds
    udpflows HOST N             "ANSWERED_COUNT" of N UDP flows (one socket each) at once
    tls HOST PORT SNI           a TLS connection naming SNI ("-": none), GET /hello over it:
                                "ok:FIRST_LINE" | reset | closed (the certificate unchecked)
    hostheader HOST PORT NAME   GET /hello with "Host: NAME": "ok:FIRST_LINE" | reset | closed
    resolve NAME                "ADDRESS" (the system resolver, IPv4) or "nxdomain"
    whoami HOST                 the address the test internet's web server saw, or "failed"
    dns NAME TYPE udp|tcp       a raw query to the resolver in /etc/resolv.conf:
                                "RCODE ADDRESS…" (TYPE: A or AAAA)
    records NAME TYPE           a query (TYPE: SRV, TXT or MX) over UDP with EDNS0 at
                                1232 bytes, asked again over TCP when truncated:
                                "RCODE TRANSPORT ADDITIONAL_COUNT RECORD…" (srv:P,W,PORT,TARGET
                                | txt:LENGTH:FIRST8 | mx:PREF,TARGET | other:TYPE)
    dnsgarbage N                N malformed datagrams to the resolver, then "RCODE" of a
                                valid query for allowed.test
    flood HOST PORT N           N connection attempts, 200 at a time: "OUTCOME=COUNT …"
    garbage HOST PORT N         N connections sending random bytes: "OUTCOME=COUNT …"
    requests HOST N             N HTTP requests to HOST:8000, 200 at a time: "OUTCOME=COUNT …"
"""
import asyncio
import errno
import hashlib
import os
import random
import socket
import ssl
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect(host, port, timeout=10):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def get(host, path):
    s = connect(host, 8000, 60)
    s.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
    return s


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("no header")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def read_body(s):
    """The whole response body, to the end of the connection."""
    _, body = read_head(s)
    while True:
        more = s.recv(4096)
        if not more:
            return body
        body += more


def download(host, n):
    s = get(host, "/bytes/%d" % n)
    _, body = read_head(s)
    h = hashlib.sha256(body)
    total = len(body)
    buf = bytearray(1 << 20)
    while True:
        k = s.recv_into(buf)
        if not k:
            break
        h.update(memoryview(buf)[:k])
        total += k
    return total, h.hexdigest()


def cmd_download(host, n):
    total, sha = download(host, int(n))
    print(total, sha)


def cmd_upload(host, n):
    n = int(n)
    s = connect(host, 8000, 60)
    s.sendall(b"POST /sha256 HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % n)
    h = hashlib.sha256()
    block = os.urandom(1 << 20)
    left = n
    while left:
        chunk = block[: min(left, len(block))]
        s.sendall(chunk)
        h.update(chunk)
        left -= len(chunk)
    body = read_body(s)
    print("ok" if body.decode() == h.hexdigest() else "mismatch %s %s" % (body, h.hexdigest()))


def cmd_udp(host, count):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.settimeout(2)
    rng = random.Random(7)
    ok = 0
    for i in range(int(count)):
        n = rng.choice([1, 2, 100, 512, 1400, 1500, 4096, 9000, 32768, 60000])
        data = rng.randbytes(n)
        s.sendto(data, (host, 7007))
        try:
            got, addr = s.recvfrom(65536)
        except socket.timeout:
            continue
        if got == data and addr[0] == host and addr[1] == 7007:
            ok += 1
    print(ok)


def cmd_udpconnect(host, port):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(2)
    t = time.monotonic()
    try:
        s.connect((host, int(port)))
        s.send(b"ping")
        s.recv(2048)
        outcome = "ok"
    except ConnectionRefusedError:
        outcome = "refused"
    except socket.timeout:
        outcome = "timeout"
    print(outcome, int((time.monotonic() - t) * 1000))


def cmd_halfclose(host, n):
    n = int(n)
    data = os.urandom(n)
    s = connect(host, 7008)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    want = b"%d %s\n" % (n, hashlib.sha256(data).hexdigest().encode())
    print("ok" if reply == want else "bad %r" % reply)


def cmd_connect(host, port):
    t = time.monotonic()
    try:
        s = connect(host, int(port), 5)
        s.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        data = s.recv(64)
        outcome = "ok:" + data.decode().splitlines()[0].replace(" ", "_") if data else "closed"
    except ConnectionResetError:
        outcome = "reset"
    except ConnectionRefusedError:
        outcome = "refused"
    except socket.timeout:
        outcome = "timeout"
    except OSError as e:
        outcome = "unreachable" if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) else "error:%d" % e.errno
    print(outcome, int((time.monotonic() - t) * 1000))


def outcome_of(talk):
    try:
        data = talk()
        return "ok:" + data.decode().splitlines()[0].replace(" ", "_") if data else "closed"
    except ConnectionResetError:
        return "reset"
    except (ssl.SSLError, ssl.SSLEOFError, EOFError, BrokenPipeError):
        return "closed"


def cmd_tls(host, port, sni):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def talk():
        s = ctx.wrap_socket(connect(host, int(port), 5), server_hostname=None if sni == "-" else sni)
        s.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        return s.recv(64)
    print(outcome_of(talk))


def cmd_hostheader(host, port, name):
    def talk():
        s = connect(host, int(port), 5)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name.encode())
        return s.recv(64)
    print(outcome_of(talk))


def cmd_concurrent(host, n):
    n = int(n)

    async def one(gate):
        await gate.wait()
        r, w = await asyncio.open_connection(host, 8000)
        w.write(b"GET /hello HTTP/1.0\r\n\r\n")
        await w.drain()
        data = await r.read()
        w.close()
        return data.endswith(b"hello\n")

    async def main():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(one(gate)) for _ in range(n)]
        await asyncio.sleep(0.1)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return sum(1 for r in results if r is True)

    print(asyncio.run(main()))


def cmd_stall(host, n):
    n = int(n)

    def timed():
        t = time.monotonic()
        total, _ = download(host, n)
        assert total == n, total
        return time.monotonic() - t

    timed()  # warm up
    unloaded = min(timed() for _ in range(3))
    stalled = socket.socket(family(host), socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, 8000))
    stalled.sendall(b"GET /bytes/%d HTTP/1.0\r\n\r\n" % (1 << 34))
    time.sleep(1)  # its window fills; it is never read
    loaded = min(timed() for _ in range(3))
    stalled.close()
    print("%.4f %.4f" % (unloaded, loaded))


def cmd_privileged():
    def attempt(name, f):
        try:
            f()
            print(name + ": allowed")
        except PermissionError:
            print(name + ": EPERM")
        except OSError as e:
            print(name + ": " + errno.errorcode.get(e.errno, str(e.errno)))

    IP_TRANSPARENT = 19

    def transparent():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)

    attempt("ip_transparent", transparent)
    attempt("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP))
    attempt("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
    caps = [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1]
    eff = int(caps, 16)
    print("cap_net_admin: %s" % ("yes" if eff & (1 << 12) else "no"))
    print("cap_net_raw: %s" % ("yes" if eff & (1 << 13) else "no"))


def cmd_hold(host, n):
    conns = []
    for _ in range(int(n)):
        try:
            conns.append(connect(host, 7008, 5))
        except OSError:
            pass
    time.sleep(0.3)
    alive = 0
    for c in conns:
        c.settimeout(0.3)
        try:
            c.sendall(b"x")
            if c.recv(1) == b"":
                continue  # closed or reset by the proxy
        except socket.timeout:
            alive += 1  # open: the server waits for the end of the stream
        except OSError:
            pass
    print(alive)


def cmd_holdmany(host, n, secs):
    import selectors
    conns = []
    for _ in range(int(n)):
        try:
            conns.append(connect(host, 7008, 5))
        except OSError:
            pass
    time.sleep(0.5)
    # A connection the proxy refused is readable (reset or end of stream); an open one,
    # whose server waits for the end of the stream, is not.
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c, selectors.EVENT_READ)
    # Until a whole second passes without another one ending (at most 20 s).
    ended, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 20:
        ready = sel.select(timeout=1.0)
        if not ready:
            break
        for key, _ in ready:
            sel.unregister(key.fileobj)
            ended += 1
    print(len(conns) - ended, flush=True)
    time.sleep(float(secs))
    for c in conns:
        c.close()


def cmd_udpflows(host, n):
    socks = [socket.socket(family(host), socket.SOCK_DGRAM) for _ in range(int(n))]
    for i, s in enumerate(socks):
        s.sendto(b"flow %d" % i, (host, 7007))
    answered = 0
    for i, s in enumerate(socks):
        s.settimeout(0.5)
        try:
            if s.recvfrom(100)[0] == b"flow %d" % i:
                answered += 1
        except socket.timeout:
            pass
    print(answered)


def cmd_whoami(host):
    try:
        print(read_body(get(host, "/whoami")).decode() or "failed")
    except OSError:
        print("failed")


def cmd_resolve(name):
    try:
        print(socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    except socket.gaierror:
        print("nxdomain")


def resolver():
    for line in open("/etc/resolv.conf"):
        if line.startswith("nameserver"):
            return line.split()[1]


def query(name, qtype):
    q = os.urandom(2) + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"


def parse(r):
    rcode = r[3] & 15
    an = int.from_bytes(r[6:8], "big")
    i = 12
    while r[i] != 0:
        i += 1 + r[i]
    i += 5
    addrs = []
    for _ in range(an):
        i += 2  # compressed name
        kind = int.from_bytes(r[i:i + 2], "big")
        ln = int.from_bytes(r[i + 8:i + 10], "big")
        data = r[i + 10:i + 10 + ln]
        addrs.append(socket.inet_ntop(socket.AF_INET if kind == 1 else socket.AF_INET6, data))
        i += 10 + ln
    return rcode, addrs


def cmd_dns(name, kind, transport):
    qtype = {"A": 1, "AAAA": 28}[kind]
    q = query(name, qtype)
    server = resolver()
    if transport == "udp":
        s = socket.socket(family(server), socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(q, (server, 53))
        r = s.recv(4096)
    else:
        s = connect(server, 53, 5)
        s.sendall(len(q).to_bytes(2, "big") + q)
        n = int.from_bytes(s.recv(2), "big")
        r = b""
        while len(r) < n:
            r += s.recv(n - len(r))
    rcode, addrs = parse(r)
    print(" ".join([str(rcode)] + addrs))


def read_name(r, i):
    """The name at i (following compression pointers, a bounded number), and the offset after it."""
    labels, end, jumps = [], None, 0
    while r[i] != 0:
        if r[i] & 0xC0 == 0xC0:
            end = end or i + 2
            i = int.from_bytes(r[i:i + 2], "big") & 0x3FFF
            jumps += 1
            if jumps > 16:
                raise ValueError("pointer loop")
            continue
        labels.append(r[i + 1:i + 1 + r[i]].decode())
        i += 1 + r[i]
    return ".".join(labels), end or i + 1


def record(kind, r, at, ln):
    data = r[at:at + ln]
    if kind == 33:
        p, w, port = (int.from_bytes(data[k:k + 2], "big") for k in (0, 2, 4))
        return f"srv:{p},{w},{port},{read_name(r, at + 6)[0]}"
    if kind == 16:
        text, k = b"", 0
        while k < len(data):
            text += data[k + 1:k + 1 + data[k]]
            k += 1 + data[k]
        return f"txt:{len(text)}:{text[:8].decode()}"
    if kind == 15:
        return f"mx:{int.from_bytes(data[:2], 'big')},{read_name(r, at + 2)[0]}"
    return f"other:{kind}"


def cmd_records(name, kind):
    qtype = {"SRV": 33, "TXT": 16, "MX": 15}[kind]
    q = bytearray(query(name, qtype))
    q[11] = 1  # one additional record: OPT, payload 1232 (what dig and glibc send)
    q += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    server = resolver()
    s = socket.socket(family(server), socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, (server, 53))
    r, via = s.recv(65535), "udp"
    if r[2] & 0x02:
        t = connect(server, 53, 5)
        t.sendall(len(q).to_bytes(2, "big") + q)
        n = int.from_bytes(t.recv(2), "big")
        r, via = b"", "tcp"
        while len(r) < n:
            r += t.recv(n - len(r))
    an, ar = int.from_bytes(r[6:8], "big"), int.from_bytes(r[10:12], "big")
    i = read_name(r, 12)[1] + 4
    out = [str(r[3] & 15), via, str(ar)]
    for _ in range(an):
        i = read_name(r, i)[1]
        rtype = int.from_bytes(r[i:i + 2], "big")
        ln = int.from_bytes(r[i + 8:i + 10], "big")
        out.append(record(rtype, r, i + 10, ln))
        i += 10 + ln
    print(" ".join(out))


def cmd_dnsgarbage(n):
    server = resolver()
    s = socket.socket(family(server), socket.SOCK_DGRAM)
    rng = random.Random(3)
    for i in range(int(n)):
        junk = rng.randbytes(rng.randint(0, 600))
        if i % 3 == 0 and len(junk) > 12:
            junk = query("allowed.test", 1)[:rng.randint(0, 30)] + junk  # truncated / mangled
        s.sendto(junk, (server, 53))
    time.sleep(0.2)
    s.settimeout(5)
    while True:  # drop what the garbage got back
        s.settimeout(0.2)
        try:
            s.recv(4096)
        except socket.timeout:
            break
    s.settimeout(5)
    s.sendto(query("allowed.test", 1), (server, 53))
    print(parse(s.recv(4096))[0])


def tally(outcomes):
    counts = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    print(" ".join("%s=%d" % kv for kv in sorted(counts.items())))


async def attempt(host, port, payload):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        if payload:
            w.write(payload)
            await w.drain()
        data = await asyncio.wait_for(r.read(64), 5)
        w.close()
        return "ok" if data else "closed"
    except ConnectionResetError:
        return "reset"
    except ConnectionRefusedError:
        return "refused"
    except (asyncio.TimeoutError, socket.timeout):
        return "timeout"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def run_many(host, port, n, payload):
    async def main():
        sem = asyncio.Semaphore(200)

        async def one(i):
            async with sem:
                return await attempt(host, int(port), payload(i))

        return await asyncio.gather(*(one(i) for i in range(int(n))))

    tally(asyncio.run(main()))


def cmd_flood(host, port, n):
    run_many(host, port, n, lambda i: b"")


def cmd_requests(host, n):
    run_many(host, 8000, n, lambda i: b"GET /hello HTTP/1.0\r\n\r\n")


def cmd_garbage(host, port, n):
    rng = random.Random(11)
    run_many(host, port, n, lambda i: rng.randbytes(rng.randint(1, 4000)))


if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
