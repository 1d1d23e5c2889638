#!/usr/bin/env python3
"""Exec benchmark for sandboxd, run as the user whose daemon it measures.

Interleaved round by round, each timed as a user types it (a process started and waited
for):
  sandboxctl exec   `sandboxctl exec bench-exec -- true` into a running host-root sandbox
                    (the fast path: the sandbox's pid 1 forks and execs)
  runc exec         `runc exec` of the same sandbox, as the daemon ran it before (through
                    nsenter into the daemon's user namespace)
  bwrap             `bwrap --unshare-all` with the host's /usr bound read-only, /proc, /dev:
                    a fresh sandbox for `true`
  fork+exec         plain `true`
Then 1 000 sequential `sandboxctl exec`s: the daemon's RSS and fd count before and after.
Prints a Markdown table. Every loop is bounded."""

import os, shutil, statistics, subprocess, time

ROUNDS = int(os.environ.get("EXEC_ROUNDS", "200"))
MANY = int(os.environ.get("EXEC_MANY", "1000"))
HOME = os.environ["HOME"]
RT = os.environ["XDG_RUNTIME_DIR"]
PROFILES = os.path.join(HOME, ".config/sandboxd/profiles")
NAME = "bench-exec"


def run(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def timed(argv):
    t0 = time.monotonic()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def daemon_pid():
    return int(run("systemctl", "--user", "show", "-p", "MainPID", "--value", "sandboxd").stdout)


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def main():
    os.makedirs(PROFILES, exist_ok=True)
    with open(os.path.join(PROFILES, NAME + ".toml"), "w") as f:
        f.write('[rootfs]\nhost = true\n[network]\nmode = "none"\n')
    run("sandboxctl", "start", NAME)
    holder = open(os.path.join(RT, "sandboxd/userns.pid")).read().split()[0]
    runc_root = os.path.join(RT, "sandboxd/runc")
    paths = {
        "sandboxctl exec": ["sandboxctl", "exec", NAME, "--", "true"],
        "runc exec": ["nsenter", f"--user=/proc/{holder}/ns/user", f"--mount=/proc/{holder}/ns/mnt",
                      "--", "runc", "--root", runc_root, "exec", NAME, "true"],
        "bwrap": ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                  "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                  "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
                  "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--", "/usr/bin/true"],
        "fork+exec": ["/usr/bin/true"],
    }
    for argv in paths.values():  # warm caches, and fail early
        timed(argv)
    times = {k: [] for k in paths}
    for _ in range(ROUNDS):
        for k, argv in paths.items():
            times[k].append(timed(argv))

    pid = daemon_pid()
    rss0, fd0 = rss_kib(pid), fds(pid)
    t0 = time.monotonic()
    for _ in range(MANY):
        subprocess.run(paths["sandboxctl exec"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    many = time.monotonic() - t0
    time.sleep(1)
    rss1, fd1 = rss_kib(pid), fds(pid)
    run("sandboxctl", "stop", NAME)
    os.remove(os.path.join(PROFILES, NAME + ".toml"))

    ms = lambda x: f"{x * 1000:.2f} ms"
    ex = times["sandboxctl exec"]
    print("| path | median | p99 | min | sandboxctl exec / path (median) |")
    print("|---|---|---|---|---|")
    for k, xs in times.items():
        print(f"| {k} (n={ROUNDS}) | {ms(statistics.median(xs))} | {ms(p99(xs))} | {ms(min(xs))} | "
              f"{statistics.median(ex) / statistics.median(xs):.2f}× |")
    print(f"| {MANY} sequential `sandboxctl exec` | {many:.1f} s in all | | | |")
    print(f"| daemon RSS before / after them | {rss0 / 1024:.1f} MiB / {rss1 / 1024:.1f} MiB | | | |")
    print(f"| daemon fds before / after them | {fd0} / {fd1} | | | |")


if __name__ == "__main__":
    main()
