#!/usr/bin/env python3
"""Builds the OCI image layouts the image tests push to a registry or import.

    layout.py good DIR [COMP]     busybox base (gzip) + a second layer (zstd, or COMP) with a
                                  whiteout, an opaque whiteout, a hard link; owners
                                  0/1000/33, a setuid file; tags "1" (one platform)
                                  and "multi" (an index for linux/amd64 and linux/arm64)
    layout.py big DIR MIB [FILES] the base plus three layers of MIB MiB in all: FILES small
                                  text files each, the rest random bytes
    layout.py evil DIR CASE HOST  one hand-made malicious layer on the base (CASE: dotdot,
                                  absolute, symlink-root, symlink-host, hardlink; HOST: a host folder the
                                  layer tries to reach)
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

APPLETS = ["sh", "stat", "ls", "cat", "id", "sleep", "env", "pwd", "test", "echo", "touch", "readlink"]


def entry(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = 1700000000
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info, data


def xattr(e, name, value):
    e[0].pax_headers = {f"SCHILY.xattr.{name}": value}
    return e


def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def base_layer():
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    e = [
        entry("bin", tarfile.DIRTYPE, mode=0o755),
        entry("bin/busybox", data=busybox, mode=0o755),
        entry("bin/suid", data=b"#!/bin/sh\n", mode=0o4755),
        entry("etc", tarfile.DIRTYPE, mode=0o755),
        entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
        entry("etc/group", data=b"root:x:0:\nwww-data:x:33:\nuser:x:1000:\n"),
        entry("home", tarfile.DIRTYPE, mode=0o755),
        entry("home/user", tarfile.DIRTYPE, mode=0o755, uid=1000, gid=1000),
        entry("home/user/mine", data=b"mine\n", uid=1000, gid=1000),
        entry("var", tarfile.DIRTYPE, mode=0o755),
        entry("var/www", tarfile.DIRTYPE, mode=0o755, uid=33, gid=33),
        entry("var/www/web", data=b"web\n", uid=33, gid=33),
        entry("doomed", data=b"deleted by the next layer\n"),
        entry("replaced", tarfile.DIRTYPE, mode=0o755),
        entry("replaced/old", data=b"hidden by the next layer\n"),
        entry("srv", tarfile.DIRTYPE, mode=0o755),
        entry("tmp", tarfile.DIRTYPE, mode=0o1777),
        entry("root", tarfile.DIRTYPE, mode=0o700),
        entry("proc", tarfile.DIRTYPE, mode=0o755),
        entry("sys", tarfile.DIRTYPE, mode=0o755),
        entry("dev", tarfile.DIRTYPE, mode=0o755),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666),
    ]
    e += [entry(f"bin/{a}", tarfile.SYMTYPE, link="busybox", mode=0o777) for a in APPLETS]
    return tar(e)


def second_layer():
    # $LAYOUT_SALT makes the layer's blob one no other test shares.
    salt = [entry("salt", data=os.environ["LAYOUT_SALT"].encode())] if os.environ.get("LAYOUT_SALT") else []
    return tar(salt + [
        entry(".wh.doomed"),
        entry("replaced", tarfile.DIRTYPE, mode=0o755),
        entry("replaced/.wh..wh..opq"),
        entry("replaced/new", data=b"new\n"),
        entry("data", tarfile.DIRTYPE, mode=0o755),
        xattr(entry("data/one", data=b"one inode\n"), "user.sandboxd", "kept"),
        entry("data/two", tarfile.LNKTYPE, link="data/one"),
    ])


class Layout:
    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.index = []

    def blob(self, data, media_type, **extra):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data), **extra}

    def layer(self, raw, compression):
        if compression == "gzip":
            return self.blob(gzip.compress(raw, compresslevel=6, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"), raw
        if compression == "zstd":
            z = subprocess.run(["zstd", "-q", "-c"], input=raw, stdout=subprocess.PIPE, check=True).stdout
            return self.blob(z, "application/vnd.oci.image.layer.v1.tar+zstd"), raw
        return self.blob(raw, "application/vnd.oci.image.layer.v1.tar"), raw

    def manifest(self, layers, arch="amd64", cmd=None):
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin", "GREETING=hello from the image"],
                "Cmd": cmd or ["/bin/sh", "-c", "echo cwd=$(pwd) greeting=$GREETING; exec sleep 1000"],
                "WorkingDir": "/srv",
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest() for _, raw in layers]},
        }
        c = self.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": [d for d, _ in layers]}
        return self.blob(json.dumps(m).encode(), "application/vnd.oci.image.manifest.v1+json", platform={"architecture": arch, "os": "linux"})

    def tag(self, descriptor, tag):
        d = dict(descriptor)
        d["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.index.append(d)

    def write(self):
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.index}, f)


def main():
    what, path = sys.argv[1], sys.argv[2]
    lay = Layout(path)
    base = lay.layer(base_layer(), "gzip")
    if what == "good":
        layers = [base, lay.layer(second_layer(), sys.argv[3] if len(sys.argv) > 3 else "zstd")]
        amd = lay.manifest(layers)
        lay.tag(amd, "1")
        arm = lay.manifest(layers, arch="arm64", cmd=["/bin/sh", "-c", "echo wrong platform; exec sleep 1000"])
        idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm, amd]}
        lay.tag(lay.blob(json.dumps(idx).encode(), "application/vnd.oci.image.index.v1+json"), "multi")
    elif what == "big":
        mib = int(sys.argv[3])
        files = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        words = [os.urandom(4).hex() for _ in range(4096)]
        layers = [base]
        for i in range(3):
            # Many small files of text (as packages are) and one of random bytes.
            small = [entry(f"files{i}", tarfile.DIRTYPE, mode=0o755)]
            for n in range(files):
                text = " ".join(words[(n * 7 + k) % len(words)] for k in range(1800)).encode()
                small.append(entry(f"files{i}/f{n}", data=text, uid=n % 3 * 1000))
            bulk = os.urandom(max(0, mib * 1024 * 1024 // 3 - files * 16200))
            layers.append(lay.layer(tar(small + [entry(f"big{i}", data=bulk)]), "gzip"))
        lay.tag(lay.manifest(layers), "1")
    elif what == "evil":
        case, host = sys.argv[3], sys.argv[4].lstrip("/")
        evil = {
            # The name also carries an escape sequence, which must not reach a terminal.
            "dotdot": [entry("../../escaped\x1b[2J", data=b"out\n")],
            "absolute": [entry("/abs-file", data=b"in\n")],
            "symlink-root": [entry("up", tarfile.SYMTYPE, link="/"), entry("up/planted", data=b"through a symlink\n")],
            "symlink-host": [entry("evil", tarfile.SYMTYPE, link="/" + host), entry("evil/planted", data=b"through a symlink\n")],
            "hardlink": [entry("stolen", tarfile.LNKTYPE, link="/" + host + "/secret")],
        }[case]
        lay.tag(lay.manifest([base, lay.layer(tar(evil), "plain")]), "1")
    else:
        sys.exit(f"unknown layout {what}")
    lay.write()


if __name__ == "__main__":
    main()
