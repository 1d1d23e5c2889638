#!/usr/bin/env python3
"""Start-up and scale benchmark for sandboxd, run as the user whose daemon it measures.

1. Start-up latency, side by side and interleaved: from the StartSandbox call to the
   sandbox's main command running (it writes a file into a bound folder), for a sandbox
   with networking (the proxy and its netns helper), against plain
   rootless `runc run --detach` of the same config.json (same root, mounts and namespaces;
   id maps made direct, as a user without sandboxd would write them) without the seccomp
   filter and with it, and against `podman run --rootfs` of the same root when podman is
   installed.
2. The seccomp filter's cost, interleaved: bench/syscalls.rs (10^6 getppid, 10^5 stat, one
   1 GiB loopback TCP stream) in `runc run` of that config.json with and without its filter,
   and through `sandboxctl exec` (the filter, the real path).
3. Scale: 50 sandboxes running at once: daemon RSS, daemon CPU ticks over 10 s idle, and
   `sandboxctl list` latency.

Prints a Markdown table. Every loop is bounded."""

import json, os, shutil, statistics, subprocess, sys, tempfile, time

ROUNDS = int(os.environ.get("ROUNDS", "15"))
SYS_ROUNDS = int(os.environ.get("SYS_ROUNDS", "7"))
SCALE = int(os.environ.get("SCALE", "50"))
HOME = os.environ["HOME"]
RT = os.environ["XDG_RUNTIME_DIR"]
PROFILES = os.path.join(HOME, ".config/sandboxd/profiles")
ROOT = os.path.join(HOME, ".local/share/sandboxd/rootfs/bench-busybox")
OUT = os.path.join(HOME, "bench-out")
SYSCALLS = os.path.join(HOME, "bench-syscalls")  # the static bench/syscalls.rs


def run(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def make_root():
    if os.path.isdir(ROOT):
        shutil.copy(SYSCALLS, os.path.join(ROOT, "bin/syscalls"))
        return
    os.makedirs(os.path.join(ROOT, "bin"))
    shutil.copy("/bin/busybox", os.path.join(ROOT, "bin/busybox"))
    for applet in ["sh", "sleep", "touch"]:
        os.symlink("busybox", os.path.join(ROOT, "bin", applet))
    shutil.copy(SYSCALLS, os.path.join(ROOT, "bin/syscalls"))
    for d in ["etc", "mnt/out", "tmp"]:
        os.makedirs(os.path.join(ROOT, d), exist_ok=True)
    with open(os.path.join(ROOT, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")


def profile(name, command):
    with open(os.path.join(PROFILES, name + ".toml"), "w") as f:
        f.write(f'[rootfs]\npath = "{ROOT}"\nreadonly = true\n'
                f'[process]\ncommand = {json.dumps(command)}\n'
                f'[[mount]]\nsource = "{OUT}"\ndestination = "/mnt/out"\n'
                # With networking: the proxy (its netns helper sets the namespace up before
                # the command runs); no resolver files, so plain runc can reuse the bundle.
                f'[network]\nmode = "proxy"\ndns = false\n[restart]\nstop_timeout = "5s"\n')


def wait_file(path, limit=10.0):
    t0 = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t0 > limit:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.0005)
    return time.monotonic()


def sandboxd_once(name):
    marker = os.path.join(OUT, "ready")
    if os.path.exists(marker):
        os.remove(marker)
    t0 = time.monotonic()
    run("busctl", "--user", "call", "org.sandboxd.Sandboxd1", "/org/sandboxd/Sandboxd1",
        "org.sandboxd.Sandboxd1.Manager", "StartSandbox", "s", name)
    t1 = wait_file(marker)
    run("sandboxctl", "stop", name)
    return t1 - t0


# The smallest filter there is (allow everything, deny one call): what any seccomp filter
# costs a syscall, whatever its rules.
ONE_RULE = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}


def direct_config(src, dst_dir, seccomp=True, args=None):
    """The sandboxd bundle's config.json with direct rootless id maps, with its seccomp
    filter, without one (False) or with another (a dict), optionally with another command."""
    with open(src) as f:
        cfg = json.load(f)
    if seccomp is False:
        del cfg["linux"]["seccomp"]
    elif isinstance(seccomp, dict):
        cfg["linux"]["seccomp"] = seccomp
    if args:
        cfg["process"]["args"] = args
    uid, gid = os.getuid(), os.getgid()
    def rng(file, name, me):
        for line in open(file):
            owner, start, count = line.strip().split(":")
            if owner in (name, str(me)):
                return int(start), min(int(count), 65536)
        raise SystemExit(f"no range in {file}")
    name = os.environ.get("USER", "")
    su, sg = rng("/etc/subuid", name, uid), rng("/etc/subgid", name, gid)
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}, {"containerID": 1, "hostID": su[0], "size": su[1]}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}, {"containerID": 1, "hostID": sg[0], "size": sg[1]}]
    os.makedirs(dst_dir, exist_ok=True)
    with open(os.path.join(dst_dir, "config.json"), "w") as f:
        json.dump(cfg, f)


def runc_once(bundle, state):
    marker = os.path.join(OUT, "ready")
    if os.path.exists(marker):
        os.remove(marker)
    t0 = time.monotonic()
    subprocess.run(["runc", "--root", state, "run", "--detach", "--bundle", bundle, "bench-runc"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = wait_file(marker)
    run("runc", "--root", state, "kill", "bench-runc", "KILL", check=False)
    for _ in range(200):
        if run("runc", "--root", state, "delete", "--force", "bench-runc", check=False).returncode == 0:
            break
        time.sleep(0.01)
    return t1 - t0


def syscalls_runc(bundle, state):
    out = subprocess.run(["runc", "--root", state, "run", "--bundle", bundle, "bench-sys"],
                         check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=120)
    run("runc", "--root", state, "delete", "--force", "bench-sys", check=False)
    return parse_syscalls(out.stdout)


def syscalls_exec(name):
    out = subprocess.run(["sandboxctl", "exec", name, "--", "/bin/syscalls"], check=True,
                         capture_output=True, text=True, timeout=120)
    return parse_syscalls(out.stdout)


def parse_syscalls(text):
    return {k: float(v) for k, v in (l.split() for l in text.splitlines() if l.strip())}


def podman_once(name="bench-podman"):
    marker = os.path.join(OUT, "ready")
    if os.path.exists(marker):
        os.remove(marker)
    t0 = time.monotonic()
    # runc, as sandboxd uses; cgroupfs, since these machines' hybrid cgroups have no
    # controllers for a systemd-managed rootless cgroup.
    subprocess.run(["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                    "run", "--detach", "--name", name, "--network", "none",
                    "--volume", f"{OUT}:/mnt/out", "--rootfs", ROOT,
                    "/bin/sh", "-c", "touch /mnt/out/ready; exec sleep 100000"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = wait_file(marker, limit=60.0)
    run("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "rm", "--force", "--time", "0", name, check=False)
    return t1 - t0


def daemon_pid():
    return int(run("systemctl", "--user", "show", "-p", "MainPID", "--value", "sandboxd").stdout)


def ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def ms(x):
    return f"{x * 1000:.1f} ms"


def main():
    os.makedirs(PROFILES, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)
    make_root()
    cmd = ["/bin/sh", "-c", "touch /mnt/out/ready; exec sleep 100000"]
    profile("bench-start", cmd)
    run("sandboxctl", "start", "bench-start")
    bundle_cfg = os.path.join(RT, "sandboxd/bundles/bench-start/config.json")
    tmp = tempfile.mkdtemp(prefix="sandboxd-bench-")
    direct_config(bundle_cfg, os.path.join(tmp, "bundle"))
    direct_config(bundle_cfg, os.path.join(tmp, "bundle-nofilter"), seccomp=False)
    loop = ["/dev/.sandbox-init", "--", "/bin/syscalls"]
    direct_config(bundle_cfg, os.path.join(tmp, "sys"), args=loop)
    direct_config(bundle_cfg, os.path.join(tmp, "sys-nofilter"), seccomp=False, args=loop)
    direct_config(bundle_cfg, os.path.join(tmp, "sys-onerule"), seccomp=ONE_RULE, args=loop)
    state = os.path.join(tmp, "runc")
    # The filter's cost on syscall-bound work, interleaved; the sandbox is still running.
    sys_with, sys_without, sys_one, sys_exec = [], [], [], []
    for _ in range(SYS_ROUNDS):
        sys_with.append(syscalls_runc(os.path.join(tmp, "sys"), state))
        sys_without.append(syscalls_runc(os.path.join(tmp, "sys-nofilter"), state))
        sys_one.append(syscalls_runc(os.path.join(tmp, "sys-onerule"), state))
        sys_exec.append(syscalls_exec("bench-start"))
    run("sandboxctl", "stop", "bench-start")

    podman = shutil.which("podman") is not None
    if podman:
        # Clear a leftover of an interrupted run, then one run to set up podman's storage
        # (not counted).
        run("podman", "--runtime", "runc", "rm", "--force", "--time", "0", "bench-podman", check=False)
        podman_once()
    sandboxd_t, runc_t, runc_f, podman_t = [], [], [], []
    for _ in range(ROUNDS):
        sandboxd_t.append(sandboxd_once("bench-start"))
        runc_t.append(runc_once(os.path.join(tmp, "bundle-nofilter"), state))
        runc_f.append(runc_once(os.path.join(tmp, "bundle"), state))
        if podman:
            podman_t.append(podman_once())
    shutil.rmtree(tmp, ignore_errors=True)
    s_med, r_med = statistics.median(sandboxd_t), statistics.median(runc_t)
    f_med = statistics.median(runc_f)

    names = [f"bench-scale-{i}" for i in range(SCALE)]
    for n in names:
        profile(n, ["/bin/sleep", "100000"])
    pid = daemon_pid()
    rss_before = rss_kib(pid)
    t0 = time.monotonic()
    for n in names:
        run("sandboxctl", "start", n)
    start_all = time.monotonic() - t0
    time.sleep(2)
    c0 = ticks(pid)
    time.sleep(10)
    idle_ticks = ticks(pid) - c0
    rss = rss_kib(pid)
    lat = []
    for _ in range(20):
        t = time.monotonic()
        run("sandboxctl", "list", "--json")
        lat.append(time.monotonic() - t)
    listed = len(json.loads(run("sandboxctl", "list", "--json").stdout))
    for n in names:
        run("sandboxctl", "stop", n, check=False)
        os.remove(os.path.join(PROFILES, n + ".toml"))
    os.remove(os.path.join(PROFILES, "bench-start.toml"))

    hz = os.sysconf("SC_CLK_TCK")
    print(f"| measure | sandboxd | baseline | ratio |")
    print(f"|---|---|---|---|")
    print(f"| start → command running (median of {ROUNDS}) | {ms(s_med)} | plain `runc run`: {ms(r_med)} | {s_med / r_med:.2f}× |")
    print(f"| start → command running (min) | {ms(min(sandboxd_t))} | {ms(min(runc_t))} | {min(sandboxd_t) / min(runc_t):.2f}× |")
    print(f"| `runc run` with the filter → command running (median of {ROUNDS}) | {ms(f_med)} | without: {ms(r_med)} | {f_med / r_med:.2f}× |")
    for key, what, unit, lower in [("getppid_ns", "10⁶ getppid", "ns/call", True),
                                   ("stat_ns", "10⁵ stat", "ns/call", True),
                                   ("stream_mbps", "1 GiB loopback TCP stream", "MB/s", False)]:
        w = [r[key] for r in sys_with]
        wo = [r[key] for r in sys_without]
        ex = [r[key] for r in sys_exec]
        one = [r[key] for r in sys_one]
        mw, mwo, mex = statistics.median(w), statistics.median(wo), statistics.median(ex)
        mone = statistics.median(one)
        spread = lambda xs: f"{min(xs):.0f}–{max(xs):.0f}"
        print(f"| {what} in `runc run`, filter (median of {SYS_ROUNDS}; range) | {mw:.1f} {unit} ({spread(w)}) | "
              f"without: {mwo:.1f} ({spread(wo)}) | {mw / mwo:.2f}× |")
        print(f"| {what} in `runc run`, a one-rule filter | {mone:.1f} {unit} ({spread(one)}) | "
              f"without: {mwo:.1f} | {mone / mwo:.2f}× |")
        print(f"| {what} through `sandboxctl exec` (filter) | {mex:.1f} {unit} ({spread(ex)}) | "
              f"`runc run` without: {mwo:.1f} | {mex / mwo:.2f}× |")
    if podman_t:
        p_med = statistics.median(podman_t)
        print(f"| start → command running (median of {ROUNDS}) | {ms(s_med)} | `podman run --rootfs`: {ms(p_med)} | {s_med / p_med:.2f}× |")
    print(f"| {SCALE} sandboxes started one after another | {start_all:.1f} s | | |")
    print(f"| daemon RSS with {listed} sandboxes running | {rss / 1024:.1f} MiB | with none: {rss_before / 1024:.1f} MiB | |")
    print(f"| daemon CPU while idle for 10 s | {idle_ticks} ticks ({idle_ticks * 1000 / hz:.0f} ms) | | |")
    print(f"| `sandboxctl list` with {listed} sandboxes (median of 20) | {ms(statistics.median(lat))} | | |")


if __name__ == "__main__":
    main()
