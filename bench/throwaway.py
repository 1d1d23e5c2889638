#!/usr/bin/env python3
"""Throwaway-run benchmark, run as the user whose daemon it measures: one `true` in a new
sandbox, end to end as a user types it, interleaved round by round:

  sandboxctl run    `sandboxctl run --no-cwd --profile bench-run -- /bin/true` (a busybox
                    root, no network, a copy-on-write layer, the sandbox made and removed)
  runc run          plain rootless `runc run` of `runc spec --rootless` on the same root
  bwrap             `bwrap --unshare-all` with the same root bound as /
  podman run --rm   `podman run --rm --rootfs` of the same root, when podman is installed

Prints a Markdown table: medians, ranges, and ratios to `runc run`. Every loop is bounded."""

import json, os, shutil, statistics, subprocess, tempfile, threading, time

ROUNDS = int(os.environ.get("ROUNDS", "15"))
HOME = os.environ["HOME"]
PROFILES = os.path.join(HOME, ".config/sandboxd/profiles")
ROOT = os.path.join(HOME, ".local/share/sandboxd/rootfs/bench-run-busybox")


def make_root():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "bin"))
    shutil.copy("/bin/busybox", os.path.join(ROOT, "bin/busybox"))
    for applet in ["sh", "true"]:
        os.symlink("busybox", os.path.join(ROOT, "bin", applet))
    for d in ["etc", "tmp", "proc", "dev", "sys"]:
        os.makedirs(os.path.join(ROOT, d), exist_ok=True)
    with open(os.path.join(ROOT, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")


def runc_bundle(tmp):
    bundle = os.path.join(tmp, "bundle")
    os.makedirs(bundle)
    subprocess.run(["runc", "spec", "--rootless", "--bundle", bundle], check=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["root"] = {"path": ROOT, "readonly": True}
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    with open(path, "w") as f:
        json.dump(cfg, f)
    return bundle


def timed(argv):
    """Wall time of one run. Bounded by a watchdog, not by `subprocess.run(timeout=)`: with a
    timeout Python polls the child with sleeps that double up to 50 ms, which rounds every
    time up to the next step (31.5, 63.5, 113.5 ms …) and hides the differences measured."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(60, p.kill)
    watchdog.start()
    code = p.wait()
    elapsed = time.monotonic() - t0
    watchdog.cancel()
    if code != 0:
        raise SystemExit(f"{argv[0]} exited with {code}")
    return elapsed


def main():
    make_root()
    os.makedirs(PROFILES, exist_ok=True)
    with open(os.path.join(PROFILES, "bench-run.toml"), "w") as f:
        f.write(f'[rootfs]\npath = "{ROOT}"\n[network]\nmode = "none"\n')
    tmp = tempfile.mkdtemp(prefix="bench-run-")
    bundle = runc_bundle(tmp)
    state = os.path.join(tmp, "state")
    paths = {
        "sandboxctl run": ["sandboxctl", "run", "--no-cwd", "--profile", "bench-run", "--", "/bin/true"],
        "runc run": ["runc", "--root", state, "run", "--bundle", bundle, "bench-plain"],
        "bwrap": ["bwrap", "--unshare-all", "--die-with-parent", "--bind", ROOT, "/",
                  "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"],
    }
    if shutil.which("podman"):
        paths["podman run --rm"] = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                                    "run", "--rm", "--network", "none", "--rootfs", ROOT, "/bin/true"]
    for argv in paths.values():  # warm caches (and podman's storage), and fail early
        timed(argv)
    times = {k: [] for k in paths}
    for _ in range(ROUNDS):
        for k, argv in paths.items():
            times[k].append(timed(argv))
    base = statistics.median(times["runc run"])
    print(f"| `true` in a new sandbox, end to end (median of {ROUNDS}, interleaved) | median | range | × `runc run` |")
    print("|---|---|---|---|")
    for k, t in times.items():
        med = statistics.median(t)
        print(f"| {k} | {med * 1000:.1f} ms | {min(t) * 1000:.1f}–{max(t) * 1000:.1f} ms | {med / base:.2f}× |")
    os.remove(os.path.join(PROFILES, "bench-run.toml"))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
