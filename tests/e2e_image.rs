//! End to end: `sandboxctl rootfs pull` from a real registry (Debian's docker-registry,
//! the CNCF distribution registry) over TLS from a test CA and over plain HTTP, with
//! images that `skopeo copy` pushed from OCI layouts built here (tests/image/layout.py);
//! sandboxes started from the starter profiles; corrupt blobs, killed pulls, bearer
//! tokens, image archives, and hand-made malicious layers. Needs root, like tests/e2e.rs.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sandboxd-e2e-img-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Every test's start: the session to itself (tests share the test user), ready, and a
/// scratch folder.
fn begin() -> (
    std::sync::MutexGuard<'static, ()>,
    &'static Session,
    tempfile::TempDir,
) {
    let guard = lock();
    let s = session();
    s.ready();
    (guard, s, scratch())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn must(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// A test CA and a certificate for 127.0.0.1 signed by it.
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_tls(dir: &Path) -> Tls {
    let p = |n: &str| dir.join(n);
    must(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=sandboxd test CA",
                "-keyout",
            ])
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")),
    );
    must(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")),
    );
    std::fs::write(p("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    must(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .args(["-CAcreateserial", "-extfile"])
            .arg(p("ext"))
            .arg("-out")
            .arg(p("server.crt")),
    );
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::fs::set_permissions(p(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    Tls {
        ca: p("ca.crt"),
        cert: p("server.crt"),
        key: p("server.key"),
    }
}

/// A docker-registry of the test's own on loopback; its access log counts blob bytes.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
    log: PathBuf,
}

impl Registry {
    fn start(dir: &Path, tls: Option<&Tls>) -> Self {
        let port = free_port();
        let storage = dir.join(format!("storage-{port}"));
        let tls = tls.map_or(String::new(), |t| {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            )
        });
        let conf = dir.join(format!("registry-{port}.yml"));
        std::fs::write(&conf, format!("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}", storage.display())).unwrap();
        let log = dir.join(format!("registry-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        wait_port(port, "docker-registry");
        Registry {
            child,
            port,
            storage,
            log,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes tag `tag` of layout `layout` as `repo:tag` (`--all` for an index).
    fn push(&self, layout: &Path, tag: &str, repo: &str) {
        must(
            Command::new("skopeo")
                .args([
                    "--insecure-policy",
                    "copy",
                    "--all",
                    "--dest-tls-verify=false",
                    "-q",
                ])
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://{}/{repo}:{tag}", self.addr())),
        );
    }

    /// Bytes the registry sent for blob GETs so far.
    fn blob_bytes(&self) -> u64 {
        let log = std::fs::read_to_string(&self.log).unwrap();
        log.lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .filter_map(|l| {
                let after = l.split("HTTP/1.1\" ").nth(1)?;
                after.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum()
    }

    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A helper script of tests/image/ that prints "ready" and ends when its stdin closes.
struct Helper {
    child: Child,
    _stdin: ChildStdin,
}

impl Helper {
    fn start(script: &str, args: &[String]) -> Self {
        let mut child = Command::new("python3")
            .arg(manifest().join("tests/image").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "{script} did not start");
        Helper {
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn layout(dir: &Path, args: &[&str]) -> PathBuf {
    salted_layout(dir, args, "")
}

/// A layout whose second layer holds `salt`: blobs no earlier test left in the cache.
fn salted_layout(dir: &Path, args: &[&str], salt: &str) -> PathBuf {
    let out = dir.join(format!("layout-{}", args.join("-").replace('/', "_")));
    let mut cmd = Command::new("python3");
    cmd.env("LAYOUT_SALT", salt);
    cmd.arg(manifest().join("tests/image/layout.py"))
        .arg(args[0])
        .arg(&out)
        .args(&args[1..]);
    must(&mut cmd);
    must(Command::new("chmod").args(["-R", "a+rX"]).arg(&out));
    out
}

/// The names in folder `dir` (none if it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The manifest of a layout's first tag (tag "1" of every layout here).
fn first_manifest(layout: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(m.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap()
}

fn rootfs_path(s: &Session, name: &str) -> PathBuf {
    s.home.join(".local/share/sandboxd/rootfs").join(name)
}

fn blobs_dir(s: &Session) -> PathBuf {
    s.home.join(".cache/sandboxd/blobs/sha256")
}

/// `sandboxctl ARGS` as the test user with `env` (VAR=value) added.
fn ctl_env(s: &Session, env: &[String], args: &[&str]) -> Output {
    let ctl = s.bin().join("sandboxctl");
    let mut argv: Vec<&str> = vec!["env"];
    argv.extend(env.iter().map(String::as_str));
    argv.push(ctl.to_str().unwrap());
    argv.extend_from_slice(args);
    s.user(&argv)
}

fn trusting(tls: &Tls) -> Vec<String> {
    vec![format!("SSL_CERT_FILE={}", tls.ca.display())]
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// Removes root, record and profile `name`, as a test's last and first step.
fn forget(s: &Session, name: &str) {
    let _ = s.ctl(&["stop", name]);
    let _ = s.ctl(&["rootfs", "remove", name]);
    let _ = std::fs::remove_file(s.profiles().join(format!("{name}.toml")));
}

/// What the good image's layers promise, seen inside a sandbox started from the profile
/// the pull wrote: whiteouts, opaque whiteouts, one inode for the hard link, owners
/// 0/1000/33, the setuid bit, and the config's Env, WorkingDir and Cmd.
fn assert_good_inside(s: &Session, name: &str) {
    let profile = std::fs::read_to_string(s.profiles().join(format!("{name}.toml"))).unwrap();
    assert!(profile.contains("cwd = \"/srv\""), "{profile}");
    s.ctl_ok(&["start", name]);
    let run = |script: &str| s.ctl_ok(&["exec", name, "--user", "root", "--", "sh", "-c", script]);
    assert_eq!(
        run("test -e /doomed && echo present || echo gone"),
        "gone\n"
    );
    assert_eq!(run("ls /replaced"), "new\n");
    let inodes = run("stat -c %i /data/one /data/two");
    let v: Vec<&str> = inodes.lines().collect();
    assert!(
        v.len() == 2 && v[0] == v[1],
        "hard link is two inodes: {inodes}"
    );
    assert_eq!(
        run("stat -c %u /etc/passwd /home/user/mine /var/www/web"),
        "0\n1000\n33\n"
    );
    assert_eq!(run("stat -c %a /bin/suid"), "4755\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = s.ctl_ok(&["logs", name]);
        if logs.contains("cwd=/srv greeting=hello from the image") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the image's Cmd did not run as its config says: {logs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.ctl_ok(&["stop", name]);
}

/// Pulls over verified TLS (single-platform tag and multi-platform index), sandboxes from
/// the written profiles, and the transport rules: an unknown CA is refused by default,
/// `--tls-verify=false` takes any certificate or plain HTTP, `registries.conf` can say so
/// per registry; a second pull of the same image is up to date.
#[test]
fn pulled_images_run_as_their_layers_and_config_say() {
    let (_g, s, tmp) = begin();
    let tls = make_tls(tmp.path());
    let reg = Registry::start(tmp.path(), Some(&tls));
    let good = layout(tmp.path(), &["good"]);
    reg.push(&good, "1", "e2e/good");
    reg.push(&good, "multi", "e2e/good");
    for n in ["e2e-img", "e2e-imgm", "e2e-imgi"] {
        forget(s, n);
    }

    // No trust in the test CA: refused, naming the certificate problem.
    let out = s.ctl(&[
        "rootfs",
        "pull",
        &format!("{}/e2e/good:1", reg.addr()),
        "--name",
        "e2e-img",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    assert!(!rootfs_path(s, "e2e-img").exists());

    let r1 = format!("{}/e2e/good:1", reg.addr());
    // HTTPS_PROXY is honoured (a dead proxy fails the pull), and so is NO_PROXY.
    let mut proxied = trusting(&tls);
    proxied.push("HTTPS_PROXY=http://127.0.0.1:9".into());
    let out = ctl_env(s, &proxied, &["rootfs", "pull", &r1, "--name", "e2e-img"]);
    assert_eq!(out.status.code(), Some(1), "the proxy was not used");
    proxied.push("NO_PROXY=127.0.0.1".into());
    let out = ctl_env(s, &proxied, &["rootfs", "pull", &r1, "--name", "e2e-img"]);
    let said = ok(out.clone());
    assert!(said.contains("sandboxctl start e2e-img"), "{said}");
    assert!(
        stderr(&out).contains("1 device node(s) skipped") && stderr(&out).contains("/dev/null"),
        "{}",
        stderr(&out)
    );
    // The xattr a layer carries (user.* is one a user may set).
    let one = rootfs_path(s, "e2e-img").join("data/one");
    let name = std::ffi::CString::new("user.sandboxd").unwrap();
    let path = std::ffi::CString::new(one.to_str().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(n, 4, "user.sandboxd not set on data/one");
    assert_eq!(&buf[..4], b"kept");
    assert_good_inside(s, "e2e-img");
    // Again: nothing to do, and quickly.
    let t = Instant::now();
    let again = ok(ctl_env(
        s,
        &trusting(&tls),
        &["rootfs", "pull", &r1, "--name", "e2e-img"],
    ));
    assert!(again.contains("up to date"), "{again}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // The index resolves to linux/amd64 (its arm64 image says "wrong platform").
    let rm = format!("{}/e2e/good:multi", reg.addr());
    let json = ok(ctl_env(
        s,
        &trusting(&tls),
        &["rootfs", "pull", &rm, "--name", "e2e-imgm", "--json"],
    ));
    let last: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done", "{json}");
    assert_eq!(last["profile_written"], true, "{json}");
    assert!(
        json.lines()
            .filter(|l| l.contains("\"event\":\"blob\""))
            .count()
            >= 2,
        "{json}"
    );
    assert_good_inside(s, "e2e-imgm");
    let out = ctl_env(
        s,
        &trusting(&tls),
        &[
            "rootfs",
            "pull",
            &rm,
            "--name",
            "e2e-imgx",
            "--platform",
            "linux/s390x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("linux/s390x"), "{}", stderr(&out));

    // Insecure on request: any certificate on the TLS registry, plain HTTP on another.
    ok(s.ctl(&[
        "rootfs",
        "pull",
        &r1,
        "--name",
        "e2e-imgi",
        "--tls-verify=false",
    ]));
    forget(s, "e2e-imgi");
    let plain = Registry::start(tmp.path(), None);
    plain.push(&good, "1", "e2e/good");
    let rp = format!("{}/e2e/good:1", plain.addr());
    let out = s.ctl(&["rootfs", "pull", &rp, "--name", "e2e-imgi"]);
    assert_eq!(out.status.code(), Some(1), "plain HTTP was used unasked");
    let conf_dir = s.home.join(".config/containers");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(
        conf_dir.join("registries.conf"),
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            plain.addr()
        ),
    )
    .unwrap();
    let pulled = s.ctl(&["rootfs", "pull", &rp, "--name", "e2e-imgi"]);
    std::fs::remove_file(conf_dir.join("registries.conf")).unwrap();
    ok(pulled);
    // A profile of that name exists already: left alone.
    std::fs::write(s.profiles().join("e2e-imgi.toml"), "# mine\n").unwrap();
    forget(s, "e2e-imgi");
    std::fs::write(s.profiles().join("e2e-imgi.toml"), "# mine\n").unwrap();
    s.chown(&s.profiles().join("e2e-imgi.toml"));
    let said = ok(s.ctl(&[
        "rootfs",
        "pull",
        &rp,
        "--name",
        "e2e-imgi",
        "--tls-verify=false",
    ]));
    assert!(said.contains("left as it is"), "{said}");
    assert_eq!(
        std::fs::read_to_string(s.profiles().join("e2e-imgi.toml")).unwrap(),
        "# mine\n"
    );
    for n in ["e2e-img", "e2e-imgm", "e2e-imgi"] {
        forget(s, n);
    }
}

/// A blob corrupted in the registry's storage: the pull fails naming it, with status 1;
/// no root, no profile, and nothing of that blob in the cache.
#[test]
fn a_corrupt_blob_fails_the_pull_and_leaves_nothing() {
    let (_g, s, tmp) = begin();
    let reg = Registry::start(tmp.path(), None);
    let good = salted_layout(tmp.path(), &["good"], &format!("{:?}", Instant::now()));
    reg.push(&good, "1", "e2e/corrupt");
    forget(s, "e2e-corrupt");
    let _ = s.ctl(&["rootfs", "prune"]);
    // The zstd layer: the second of the manifest tagged "1".
    let manifest = first_manifest(&good);
    let digest = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = reg.blob_data(&digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let r = format!("{}/e2e/corrupt:1", reg.addr());
    let out = s.ctl(&[
        "rootfs",
        "pull",
        &r,
        "--name",
        "e2e-corrupt",
        "--tls-verify=false",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&digest),
        "the error does not name {digest}: {}",
        stderr(&out)
    );
    assert!(!rootfs_path(s, "e2e-corrupt").exists());
    assert!(!rootfs_path(s, "e2e-corrupt")
        .with_extension("json")
        .exists());
    assert!(!s.profiles().join("e2e-corrupt.toml").exists());
    let hex = digest.trim_start_matches("sha256:");
    let left: Vec<String> = names_in(&blobs_dir(s))
        .into_iter()
        .filter(|n| n.starts_with(hex))
        .collect();
    assert!(left.is_empty(), "the cache keeps {left:?}");
    let stale: Vec<String> = names_in(&s.home.join(".local/share/sandboxd/rootfs"))
        .into_iter()
        .filter(|n| n.contains("e2e-corrupt"))
        .collect();
    assert!(stale.is_empty(), "{stale:?}");
}

/// A pull killed midway (SIGKILL) and run again completes, fetching only what was
/// missing: the registry sends fewer bytes the second time than the image's layers.
#[test]
fn a_killed_pull_resumes_with_what_was_missing() {
    let (_g, s, tmp) = begin();
    let reg = Registry::start(tmp.path(), None);
    let big = layout(tmp.path(), &["big", "48"]);
    reg.push(&big, "1", "e2e/big");
    forget(s, "e2e-big");
    let _ = s.ctl(&["rootfs", "prune"]);
    let slow_port = free_port();
    let slow = Helper::start(
        "slow.py",
        &[
            slow_port.to_string(),
            reg.port.to_string(),
            (12 << 20).to_string(),
        ],
    );
    let r = format!("127.0.0.1:{slow_port}/e2e/big:1");
    let ctl = s.bin().join("sandboxctl");
    let mut pull = Command::new(manifest().join("scripts/user-session"))
        .args([
            "run",
            USER,
            ctl.to_str().unwrap(),
            "rootfs",
            "pull",
            &r,
            "--name",
            "e2e-big",
            "--tls-verify=false",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Midway: some bytes are in the cache, and the pull goes on.
    let deadline = Instant::now() + Duration::from_secs(30);
    let cached = || -> u64 {
        std::fs::read_dir(blobs_dir(s))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    while cached() < 16 << 20 {
        assert!(Instant::now() < deadline, "the pull did not get going");
        assert!(
            pull.try_wait().unwrap().is_none(),
            "the pull ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    must(Command::new("pkill").args(["-KILL", "-u", USER, "-f", "rootfs pull 127.0.0.1"]));
    let _ = pull.wait();
    assert!(!rootfs_path(s, "e2e-big").exists());
    // The relay gone, the registry logs what it sent the killed pull.
    drop(slow);
    std::thread::sleep(Duration::from_secs(1));
    let before = reg.blob_bytes();
    let had = cached();
    let total: u64 = first_manifest(&big)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    let direct = format!("{}/e2e/big:1", reg.addr());
    ok(s.ctl(&[
        "rootfs",
        "pull",
        &direct,
        "--name",
        "e2e-big",
        "--tls-verify=false",
    ]));
    let again = reg.blob_bytes() - before;
    assert!(
        again + had / 2 <= total,
        "the second pull fetched {again} of {total} bytes though {had} were cached"
    );
    assert!(rootfs_path(s, "e2e-big").join("big2").is_file());
    forget(s, "e2e-big");
}

/// Docker Hub's flow: a token service in front of the registry. Anonymous pulls of a
/// public repository work; a private one with wrong credentials from auth.json is a
/// clear error naming the file; with the right ones it works.
#[test]
fn bearer_tokens_anonymous_and_with_credentials() {
    let (_g, s, tmp) = begin();
    let reg = Registry::start(tmp.path(), None);
    let good = layout(tmp.path(), &["good"]);
    reg.push(&good, "1", "public/img");
    reg.push(&good, "1", "private/img");
    let port = free_port();
    let _tokens = Helper::start("tokens.py", &[port.to_string(), reg.port.to_string()]);
    for n in ["e2e-tok", "e2e-tokp"] {
        forget(s, n);
    }
    let auth = s.home.join(".config/containers/auth.json");
    std::fs::create_dir_all(auth.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&auth);
    ok(s.ctl(&[
        "rootfs",
        "pull",
        &format!("127.0.0.1:{port}/public/img:1"),
        "--name",
        "e2e-tok",
        "--tls-verify=false",
    ]));
    assert!(rootfs_path(s, "e2e-tok").join("bin/busybox").is_file());

    let private = format!("127.0.0.1:{port}/private/img:1");
    let out = s.ctl(&[
        "rootfs",
        "pull",
        &private,
        "--name",
        "e2e-tokp",
        "--tls-verify=false",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no credentials for 127.0.0.1"),
        "{}",
        stderr(&out)
    );

    let write_auth = |user_pass: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(user_pass);
        std::fs::write(
            &auth,
            format!("{{\"auths\":{{\"127.0.0.1:{port}\":{{\"auth\":\"{b}\"}}}}}}"),
        )
        .unwrap();
        s.chown(&auth);
    };
    write_auth("alice:wrong");
    let out = s.ctl(&[
        "rootfs",
        "pull",
        &private,
        "--name",
        "e2e-tokp",
        "--tls-verify=false",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("refused") && err.contains(auth.to_str().unwrap()),
        "{err}"
    );
    assert!(!rootfs_path(s, "e2e-tokp").exists());
    write_auth("alice:secret");
    ok(s.ctl(&[
        "rootfs",
        "pull",
        &private,
        "--name",
        "e2e-tokp",
        "--tls-verify=false",
    ]));
    std::fs::remove_file(&auth).unwrap();
    for n in ["e2e-tok", "e2e-tokp"] {
        forget(s, n);
    }
}

/// Each file of a tree: path → (type and mode, owner, content hash or link target).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                use sha2::Digest as _;
                sha2::Sha256::digest(std::fs::read(&p).unwrap())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                format!("{:o} {}:{} {what}", m.mode(), m.uid(), m.gid()),
            );
        }
    }
    out
}

/// `docker save`-format and `oci-archive` tarballs (made with skopeo) and the OCI layout
/// itself import to the same tree as the pull; `rootfs prune` keeps what roots use.
#[test]
fn image_archives_import_to_the_same_tree_as_the_pull() {
    let (_g, s, tmp) = begin();
    let reg = Registry::start(tmp.path(), None);
    let good = layout(tmp.path(), &["good"]);
    reg.push(&good, "1", "e2e/arch");
    let names = ["e2e-arp", "e2e-ard", "e2e-aro", "e2e-arl"];
    for n in names {
        forget(s, n);
    }
    ok(s.ctl(&[
        "rootfs",
        "pull",
        &format!("{}/e2e/arch:1", reg.addr()),
        "--name",
        "e2e-arp",
        "--tls-verify=false",
    ]));
    let docker = tmp.path().join("saved.tar");
    let oci = tmp.path().join("oci.tar");
    // Docker's format has no zstd layers: the same layers, gzip-compressed.
    let gzipped = layout(tmp.path(), &["good", "gzip"]);
    for (dest, from, file) in [
        ("docker-archive", &gzipped, &docker),
        ("oci-archive", &good, &oci),
    ] {
        must(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "-q"])
                .arg(format!("oci:{}:1", from.display()))
                .arg(format!("{dest}:{}", file.display())),
        );
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // Named for what they are not: content decides.
    let disguised = tmp.path().join("rootfs.tar.gz");
    std::fs::rename(&docker, &disguised).unwrap();
    ok(s.ctl(&["rootfs", "import", "e2e-ard", disguised.to_str().unwrap()]));
    ok(s.ctl(&["rootfs", "import", "e2e-aro", oci.to_str().unwrap()]));
    ok(s.ctl(&["rootfs", "import", "e2e-arl", good.to_str().unwrap()]));
    // Keep-id, as for import: user (1000) is you on the host, and the record says so.
    forget(s, "e2e-ark");
    ok(s.ctl(&[
        "rootfs",
        "pull",
        &format!("{}/e2e/arch:1", reg.addr()),
        "--name",
        "e2e-ark",
        "--tls-verify=false",
        "--user",
        "user",
    ]));
    let mine = std::fs::metadata(rootfs_path(s, "e2e-ark").join("home/user/mine")).unwrap();
    assert_eq!(mine.uid(), s.uid);
    let list = s.ctl_ok(&["rootfs", "list"]);
    assert!(list.contains("uid 1000 inside as you"), "{list}");
    let profile = std::fs::read_to_string(s.profiles().join("e2e-ark.toml")).unwrap();
    assert!(profile.contains("user = \"user\""), "{profile}");
    forget(s, "e2e-ark");
    let pulled = tree(&rootfs_path(s, "e2e-arp"));
    assert!(
        pulled.contains_key("data/two") && !pulled.contains_key("doomed"),
        "{pulled:?}"
    );
    for n in ["e2e-ard", "e2e-aro", "e2e-arl"] {
        assert_eq!(
            tree(&rootfs_path(s, n)),
            pulled,
            "{n} differs from the pull"
        );
    }

    // Prune keeps every blob a root's record names (manifests and indexes can go), then
    // everything once the roots are gone.
    ok(s.ctl(&["rootfs", "prune"]));
    for n in names {
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(rootfs_path(s, n).with_extension("json")).unwrap(),
        )
        .unwrap();
        let blobs = record["image"]["blobs"].as_array().unwrap();
        assert!(blobs.len() >= 3, "{record}");
        for b in blobs {
            let hex = b.as_str().unwrap().trim_start_matches("sha256:");
            assert!(blobs_dir(s).join(hex).is_file(), "prune removed {b} of {n}");
        }
    }
    for n in names {
        forget(s, n);
    }
    ok(s.ctl(&["rootfs", "prune"]));
    let named: std::collections::HashSet<String> =
        std::fs::read_dir(s.home.join(".local/share/sandboxd/rootfs"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).unwrap()).ok()
            })
            .flat_map(|r| r["image"]["blobs"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| {
                b.as_str()
                    .map(|b| b.trim_start_matches("sha256:").to_string())
            })
            .collect();
    let left: Vec<String> = names_in(&blobs_dir(s))
        .into_iter()
        .filter(|n| !named.contains(n))
        .collect();
    assert!(left.is_empty(), "prune left blobs no root uses: {left:?}");
}

/// Hand-made malicious layers cannot reach the host: `..` is refused, an absolute path
/// lands inside, a write through a symlink to `/` lands in the root, one through a
/// symlink to a host folder (absent inside) and a hard link to a host file are refused;
/// the host folder stays as it was.
#[test]
fn malicious_layers_stay_inside_the_root() {
    let (_g, s, tmp) = begin();
    let host = tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("secret"), "host secret\n").unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(host.join("secret"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let host_s = host.to_str().unwrap();
    let escaped = Path::new("/tmp").join("escaped");
    let _ = std::fs::remove_file(&escaped);
    for (case, imports) in [
        ("dotdot", false),
        ("absolute", true),
        ("symlink-root", true),
        ("symlink-host", false),
        ("hardlink", false),
    ] {
        let name = format!("e2e-evil-{case}");
        forget(s, &name);
        let lay = layout(tmp.path(), &["evil", case, host_s]);
        let out = s.ctl(&["rootfs", "import", &name, lay.to_str().unwrap()]);
        let root = rootfs_path(s, &name);
        if imports {
            assert!(out.status.success(), "{case}: {}", stderr(&out));
        } else {
            assert_eq!(out.status.code(), Some(1), "{case} was not refused");
            assert!(!root.exists(), "{case} left a root");
        }
        match case {
            "dotdot" => {
                let err = stderr(&out);
                assert!(err.contains("`..`"), "{err}");
                assert!(
                    err.contains("escaped\\x1b[2J") && !err.contains('\x1b'),
                    "{err:?}"
                );
            }
            "absolute" => assert!(root.join("abs-file").is_file()),
            "symlink-root" => {
                assert!(
                    root.join("planted").is_file(),
                    "the write did not land inside"
                );
                assert!(
                    !Path::new("/planted").exists(),
                    "the write went through to the host"
                );
            }
            "symlink-host" => assert!(stderr(&out).contains("cannot be made"), "{}", stderr(&out)),
            _ => assert!(
                stderr(&out).contains("not in the image"),
                "{}",
                stderr(&out)
            ),
        }
        let listing = names_in(&host);
        assert_eq!(
            listing,
            vec!["secret".to_string()],
            "{case} reached the host"
        );
        let secret = std::fs::metadata(host.join("secret")).unwrap();
        assert_eq!(secret.nlink(), 1, "{case} linked the host file");
        assert_eq!(
            std::fs::read_to_string(host.join("secret")).unwrap(),
            "host secret\n"
        );
        assert!(!escaped.exists(), "{case} wrote /tmp/escaped");
        forget(s, &name);
    }
}
