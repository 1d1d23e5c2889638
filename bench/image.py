#!/usr/bin/env python3
"""Image pull benchmark, run as the user whose sandboxctl it measures: a ~200 MiB image of
four layers (tests/image/layout.py big: 6000 small text files of three owners and 3 large
random ones) in a docker-registry of its own on loopback (plain HTTP), pulled into a root
file system, interleaved round by round:

  pull, cold       `sandboxctl rootfs pull` with an empty blob cache and no root
  pull, warm blobs the same with every blob cached (the unpack alone)
  re-pull          the same pull again with the root there (manifest check only)
  skopeo + umoci   `skopeo copy docker://… oci:DIR` then `umoci unpack --rootless`, the
                   rootless way to get the same tree without docker, from empty

Prints a Markdown table: medians, ranges, and ratios to skopeo + umoci. Every loop is
bounded."""

import os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

ROUNDS = int(os.environ.get("ROUNDS", "5"))
MIB = int(os.environ.get("IMAGE_MIB", "280"))
FILES = int(os.environ.get("IMAGE_FILES", "2000"))
HOME = os.environ["HOME"]
HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT_PY = os.environ.get("LAYOUT_PY", os.path.join(HERE, "bench-layout.py"))
CTL = os.environ.get("SANDBOXCTL") or shutil.which("sandboxctl") or os.path.join(HOME, ".local/bin/sandboxctl")
NAME = "bench-image"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.join(HOME, ".cache")), "sandboxd/blobs")


def timed(argv):
    """Wall time of one command, bounded by a watchdog; a failure stops the benchmark."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(300, p.kill)
    watchdog.start()
    _, err = p.communicate()
    elapsed = time.monotonic() - t0
    watchdog.cancel()
    if p.returncode != 0:
        sys.exit(f"{argv[0]} failed ({p.returncode}): {err.decode(errors='replace')}")
    return elapsed


def quiet(argv):
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=300)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    tmp = tempfile.mkdtemp(prefix="bench-image-")
    port = free_port()
    conf = os.path.join(tmp, "registry.yml")
    with open(conf, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n")
    registry = subprocess.Popen(["docker-registry", "serve", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("docker-registry did not start")
                time.sleep(0.05)
        layout = os.path.join(tmp, "layout")
        quiet(["python3", LAYOUT_PY, "big", layout, str(MIB), str(FILES)])
        ref = f"127.0.0.1:{port}/bench/big:1"
        quiet(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{ref}"])
        size = sum(os.path.getsize(os.path.join(layout, "blobs/sha256", b)) for b in os.listdir(os.path.join(layout, "blobs/sha256")))
        results = {k: [] for k in ["cold", "blobs", "again", "skopeo"]}
        pull = [CTL, "rootfs", "pull", ref, "--name", NAME, "--tls-verify=false"]
        forget = lambda: subprocess.run([CTL, "rootfs", "remove", NAME], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        profile = os.path.join(HOME, ".config/sandboxd/profiles", NAME + ".toml")
        for r in range(ROUNDS):
            forget()
            shutil.rmtree(CACHE, ignore_errors=True)
            results["cold"].append(timed(pull))
            results["again"].append(timed(pull))
            forget()
            results["blobs"].append(timed(pull))
            forget()
            shutil.rmtree(CACHE, ignore_errors=True)
            oci, bundle = os.path.join(tmp, f"oci-{r}"), os.path.join(tmp, f"bundle-{r}")
            results["skopeo"].append(timed(["sh", "-c", f"skopeo --insecure-policy copy -q --src-tls-verify=false docker://{ref} oci:{oci}:1 && umoci unpack --rootless --image {oci}:1 {bundle}"]))
            shutil.rmtree(oci, ignore_errors=True)
            subprocess.run(["rm", "-rf", bundle])
        forget()
        if os.path.exists(profile):
            os.remove(profile)
        shutil.rmtree(CACHE, ignore_errors=True)
    finally:
        registry.kill()
        registry.wait()
        subprocess.run(["rm", "-rf", tmp])

    base = statistics.median(results["skopeo"])
    rows = [
        ("`rootfs pull`, cold (empty cache, no root)", "cold"),
        ("`rootfs pull`, blobs cached (unpack only)", "blobs"),
        ("`rootfs pull` again, root there (up to date)", "again"),
        ("`skopeo copy` + `umoci unpack --rootless`, cold", "skopeo"),
    ]
    print(f"\nImage pull: {size / (1 << 20):.0f} MiB compressed in 4 layers ({MIB} MiB unpacked, {3 * FILES} small files) from a local docker-registry, {ROUNDS} rounds interleaved\n")
    print("| measure | median | range | ratio to skopeo + umoci |")
    print("|---|---|---|---|")
    for label, key in rows:
        v = results[key]
        print(f"| {label} | {statistics.median(v):.2f} s | {min(v):.2f}–{max(v):.2f} s | {statistics.median(v) / base:.2f}× |")


if __name__ == "__main__":
    main()
