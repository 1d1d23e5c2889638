#!/usr/bin/env python3
"""Network benchmark: the same workloads, side by side in one run, through

  direct       the bench user's process in the host's namespace (the ceiling)
  sandboxd     a sandbox whose traffic goes through the daemon's transparent proxy
  pasta        `pasta --config-net -- CMD` (Debian's passt package)
  slirp4netns  `unshare -Urn` + `slirp4netns --configure`

to a throwaway "internet" namespace (198.51.100.2, made here) running iperf3 and
netbench servers. Workloads: iperf3 single-stream upload and download, 8-stream upload;
connection rate and p50/p99 of a 64-byte request/response on a new connection each
(netbench rr, 4 threads); UDP round-trip p50/p99 (netbench udp); the proxy's CPU time per
Gbit/s during the single-stream upload; the proxy's memory per 1 000 open connections.

ROUNDS rounds (default 10), each measuring every path in turn, first unpinned, then pinned
(the client on CPU 0; the servers and the proxy, be it the daemon, pasta or slirp4netns,
on CPU 1), so that the machine's noise falls on every path alike. The memory figures are
measured once, before any other load grows an allocator.

Run by bench/net as root (it needs to create the namespace); prints Markdown tables of
medians with their ranges. Every wait is bounded; everything started is stopped at the end."""

import json, os, shutil, statistics, subprocess, sys, time

USER = os.environ.get("BENCH_USER", "sandboxd-bench")
SECS = int(os.environ.get("SECS", "2"))
ROUNDS = int(os.environ.get("ROUNDS", "10"))
SCALE_CONNS = int(os.environ.get("SCALE_CONNS", "9000"))
NETNS = "sbxbench-inet"
SERVER = "198.51.100.2"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = subprocess.run(["getent", "passwd", USER], capture_output=True, text=True,
                      check=True).stdout.split(":")[5]
TOOL = os.path.join(HOME, "bench-net", "netbench")
SESSION = [os.path.join(REPO, "scripts/user-session"), "run", USER]
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

started = []
# The placement being measured: pinned puts the client on CPU 0, the rest on CPU 1.
PINNED = [False]


def client(cmd):
    return (["taskset", "-c", "0"] + cmd) if PINNED[0] else cmd


def helper_cpu():
    return ["taskset", "-c", "1"] if PINNED[0] else []


def place(pid):
    """Pins every thread of `pid` to CPU 1 (pinned) or lets it run anywhere."""
    if pid:
        sh("taskset", "-a", "-p", "-c", "1" if PINNED[0] else "0-1", str(pid), check=False)


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def spawn(*args):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started.append(p)
    return p


def internet_up():
    internet_down()
    sh("ip", "netns", "add", NETNS)
    sh("ip", "link", "add", "sbxbench0", "type", "veth", "peer", "name", "sbxbench1",
       "netns", NETNS)
    sh("ip", "addr", "add", "198.51.100.1/24", "dev", "sbxbench0")
    sh("ip", "link", "set", "sbxbench0", "up")
    inside = ["ip", "netns", "exec", NETNS]
    sh(*inside, "ip", "link", "set", "lo", "up")
    sh(*inside, "ip", "addr", "add", SERVER + "/24", "dev", "sbxbench1")
    sh(*inside, "ip", "link", "set", "sbxbench1", "up")
    restart_iperf()
    srv = spawn(*inside, TOOL, "serve", "7000")
    assert srv.stdout.readline().strip() == "ready"
    time.sleep(0.5)


IPERF_SERVER = []


def restart_iperf():
    """A fresh iperf3 server for each path: one whose client vanished mid-test (its
    network helper gone first) can stay wedged for minutes and stall the next path."""
    for p in IPERF_SERVER:
        p.kill()
        p.wait()
    IPERF_SERVER.clear()
    IPERF_SERVER.append(spawn("ip", "netns", "exec", NETNS, "iperf3", "-s", "-p", "5201"))
    deadline = time.monotonic() + 10
    while sh("ip", "netns", "exec", NETNS, "ss", "-Hltn", "sport = :5201").stdout.strip() == "":
        if time.monotonic() > deadline:
            sys.exit("iperf3 -s did not listen")
        time.sleep(0.02)


def internet_down():
    sh("ip", "link", "del", "sbxbench0", check=False)
    sh("ip", "netns", "del", NETNS, check=False)


def cpu_ticks(pid):
    if not pid:
        return 0
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def rss_kib(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE // 1024 if pid else 0


class Direct:
    name = "direct"

    def run(self, cmd, wait=True):
        args = ["runuser", "-u", USER, "--"] + client(cmd)
        return sh(*args, timeout=120).stdout if wait else spawn(*args)

    def placed(self):
        pass

    def done(self):
        """After a command started with wait=False ended."""

    def proxy_pid(self):
        return 0

    def close(self):
        pass


class Sandboxd(Direct):
    name = "sandboxd"

    def __init__(self):
        prof = os.path.join(HOME, ".config/sandboxd/profiles/bench-net.toml")
        os.makedirs(os.path.dirname(prof), exist_ok=True)
        with open(prof, "w") as f:
            f.write('[rootfs]\nhost = true\n[[mount]]\nsource = "~/bench-net"\n'
                    f'destination = "{os.path.dirname(TOOL)}"\nreadonly = true\n'
                    '[network]\nallow = ["198.51.100.0/24"]\nmax_connections = 20000\n'
                    '[limits]\nnofile = 16384\n')
        sh("chown", "-R", f"{USER}:", os.path.dirname(prof))
        sh(*SESSION, "sandboxctl", "stop", "bench-net", check=False)
        sh(*SESSION, "sandboxctl", "start", "bench-net")
        self.pid = int(sh(*SESSION, "systemctl", "--user", "show", "-p", "MainPID",
                          "--value", "sandboxd").stdout)

    def run(self, cmd, wait=True):
        args = SESSION + ["sandboxctl", "exec", "bench-net", "--"] + client(cmd)
        return sh(*args, timeout=120).stdout if wait else spawn(*args)

    def placed(self):
        place(self.pid)

    def proxy_pid(self):
        return self.pid

    def close(self):
        sh(*SESSION, "sandboxctl", "stop", "bench-net", check=False)


class Pasta(Direct):
    name = "pasta"

    def run(self, cmd, wait=True):
        args = (["runuser", "-u", USER, "--"] + helper_cpu()
                + ["pasta", "--config-net", "--quiet", "--"] + client(cmd))
        if wait:
            p = spawn(*args)
            out, _ = p.communicate(timeout=120)
            return out
        p = spawn(*args)
        self.last = p
        return p

    def proxy_pid(self):
        # pasta is the child of the runuser process started last.
        out = sh("pgrep", "-P", str(self.last.pid), check=False).stdout.split()
        return int(out[0]) if out else 0

    def close(self):
        sh("pkill", "-u", USER, "passt", check=False)


class Slirp(Direct):
    name = "slirp4netns"

    def run(self, cmd, wait=True):
        ready = os.path.join(HOME, "bench-net", "slirp-ready")
        if os.path.exists(ready):
            os.unlink(ready)
        script = f'while [ ! -e {ready} ]; do sleep 0.05; done; exec "$@"'
        p = spawn("runuser", "-u", USER, "--", "unshare", "-Urn", "--kill-child", "sh", "-c",
                  script, "sh", *client(cmd))
        child = 0
        for _ in range(200):
            out = sh("pgrep", "-u", USER, "-n", "-f", "^sh -c while", check=False).stdout.split()
            if out:
                child = int(out[0])
                break
            time.sleep(0.02)
        self.slirp = spawn("runuser", "-u", USER, "--", *helper_cpu(), "slirp4netns", "--configure",
                           "--mtu=65520", "--disable-host-loopback", str(child), "tap0")
        time.sleep(0.3)
        open(ready, "w").close()
        if not wait:
            return p
        out, _ = p.communicate(timeout=120)
        self.slirp.terminate()
        self.slirp.wait()
        return out

    def proxy_pid(self):
        # slirp4netns is the child of the runuser process started last.
        out = sh("pgrep", "-P", str(self.slirp.pid), check=False).stdout.split()
        return int(out[0]) if out else 0

    def done(self):
        if self.slirp.poll() is None:
            self.slirp.terminate()
            self.slirp.wait(timeout=10)

    def close(self):
        sh("pkill", "-u", USER, "slirp4netns", check=False)


IPERF = ["iperf3", "-c", SERVER, "-p", "5201", "--connect-timeout", "3000", "-J"]


def iperf(env, *extra):
    out = env.run(IPERF + ["-t", str(SECS), *extra])
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def measure_memory(env):
    """The proxy's memory per 1 000 idle connections (and, for sandboxd, at scale)."""
    r = {}
    if env.name == "direct":
        return r
    # The proxy idles for a second first (pasta and slirp4netns start with the command).
    h = env.run(["sh", "-c", f"sleep 1.5; exec {TOOL} hold {SERVER} 7000 1000 4"], wait=False)
    time.sleep(1)
    pid = env.proxy_pid()
    before = rss_kib(pid)
    line = h.stdout.readline().split()
    after = rss_kib(pid)
    r["mem_per_1000"] = (after - before) if line[:2] == ["open", "1000"] else None
    h.communicate(timeout=30)
    env.done()
    if env.name == "sandboxd":
        # Scale: as many idle connections as the session's fd limit allows the daemon
        # (two sockets each), memory per connection.
        n = SCALE_CONNS
        h = env.run(["sh", "-c", f"sleep 1.5; exec {TOOL} hold {SERVER} 7000 {n} 6"], wait=False)
        time.sleep(1)
        before = rss_kib(env.proxy_pid())
        line = h.stdout.readline().split()
        after = rss_kib(env.proxy_pid())
        opened = int(line[1]) if line[:1] == ["open"] else 0
        r["scale_open"] = opened
        r["scale_kib_per_conn"] = (after - before) / opened if opened else None
        h.communicate(timeout=60)
    return r


def measure(env):
    """One round of the throughput and latency workloads through `env`."""
    r = {}
    # The single-stream upload, with the proxy process's CPU time sampled in its middle.
    p = env.run(IPERF + ["-t", str(SECS + 1)], wait=False)
    time.sleep(0.5)
    pid = env.proxy_pid()
    t0, c0 = time.time(), cpu_ticks(pid)
    time.sleep(SECS - 0.5)
    c1, t1 = cpu_ticks(pid), time.time()
    out, _ = p.communicate(timeout=120)
    env.done()
    r["up1"] = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    r["cpu_per_gbps"] = ((c1 - c0) / CLK) / (t1 - t0) / r["up1"] if pid else None
    r["down1"] = iperf(env, "-R")
    r["up8"] = iperf(env, "-P", "8")
    rate, p50, p99 = env.run([TOOL, "rr", SERVER, "7000", str(SECS), "4"]).split()
    r["conn_rate"], r["rr_p50"], r["rr_p99"] = float(rate), int(p50), int(p99)
    u50, u99 = env.run([TOOL, "udp", SERVER, "7000", "5000"]).split()
    r["udp_p50"], r["udp_p99"] = int(u50), int(u99)
    return r


def main():
    if os.geteuid() != 0:
        sys.exit("bench/net.py runs as root (it creates a network namespace)")
    internet_up()
    servers = [p.pid for p in started if p not in IPERF_SERVER]
    memory = {}
    rounds = {False: {}, True: {}}
    envs = []
    try:
        envs = [cls() for cls in (Direct, Sandboxd, Pasta, Slirp)]
        for env in envs:
            memory[env.name] = measure_memory(env)
            print(env.name, memory[env.name], file=sys.stderr, flush=True)
        for n in range(ROUNDS):
            for pinned in (False, True):
                PINNED[0] = pinned
                for env in envs:
                    restart_iperf()
                    for pid in servers + [IPERF_SERVER[0].pid]:
                        place(pid)
                    env.placed()
                    r = measure(env)
                    for k, v in r.items():
                        rounds[pinned].setdefault(env.name, {}).setdefault(k, []).append(v)
                    print(f"round {n + 1} {'pinned' if pinned else 'unpinned'} {env.name} {r}",
                          file=sys.stderr, flush=True)
    finally:
        for env in envs:
            env.close()
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()
        internet_down()
    for pinned in (False, True):
        print(f"\n{'Pinned (client on CPU 0, servers and proxy on CPU 1)' if pinned else 'Unpinned'}, "
              f"median of {ROUNDS} rounds (range):\n")
        table(rounds[pinned])
    print("\nMemory (once, unpinned):\n")
    memory_table(memory)


ROWS = [
    ("TCP upload, 1 stream (Gbit/s)", "up1", "{:.2f}"),
    ("TCP download, 1 stream (Gbit/s)", "down1", "{:.2f}"),
    ("TCP upload, 8 streams (Gbit/s)", "up8", "{:.2f}"),
    ("new connections per second", "conn_rate", "{:.0f}"),
    ("request/response p50 (µs)", "rr_p50", "{:.0f}"),
    ("request/response p99 (µs)", "rr_p99", "{:.0f}"),
    ("UDP round trip p50 (µs)", "udp_p50", "{:.0f}"),
    ("UDP round trip p99 (µs)", "udp_p99", "{:.0f}"),
    ("proxy CPU per Gbit/s (core-seconds/s)", "cpu_per_gbps", "{:.2f}"),
]


def table(res):
    names = ("direct", "sandboxd", "pasta", "slirp4netns")
    d, s, p, sl = (res.get(k, {}) for k in names)

    def values(r, key):
        return [v for v in r.get(key, []) if v is not None]

    def med(r, key):
        v = values(r, key)
        return statistics.median(v) if v else None

    print("| measure | direct | sandboxd | pasta | slirp4netns | sandboxd / pasta | sandboxd / direct |")
    print("|---|---|---|---|---|---|---|")
    for label, key, fmt in ROWS:
        def cell(r):
            v = values(r, key)
            if not v or (key == "cpu_per_gbps" and r is d):
                return "–"
            return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})"

        def ratio(a, b):
            va, vb = med(a, key), med(b, key)
            if va is None or not vb or (b is d and key == "cpu_per_gbps"):
                return "–"
            return f"{va / vb:.2f}×"

        print(f"| {label} | {cell(d)} | {cell(s)} | {cell(p)} | {cell(sl)} | "
              f"{ratio(s, p)} | {ratio(s, d)} |")


def memory_table(mem):
    print("| measure | sandboxd | pasta | slirp4netns |")
    print("|---|---|---|---|")
    row = [mem.get(k, {}).get("mem_per_1000") for k in ("sandboxd", "pasta", "slirp4netns")]
    print("| proxy memory per 1 000 open connections (KiB) | " +
          " | ".join("–" if v is None else str(v) for v in row) + " |")
    s = mem.get("sandboxd", {})
    if s.get("scale_kib_per_conn") is not None:
        print(f"\nsandboxd at {s['scale_open']} idle connections: "
              f"{s['scale_kib_per_conn']:.2f} KiB of daemon RSS per connection")


if __name__ == "__main__":
    main()
