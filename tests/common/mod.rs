//! The end-to-end harness: a real user (`sandboxd-e2e`) with a real `systemd --user` and
//! user bus (booted by `scripts/user-session`), sandboxd installed into that user's home
//! the way `make install` does it, and helpers to run commands as that user.
//!
//! These tests need root (to create the user and its session). They share one daemon,
//! so each test holds [`lock`] for its whole run.

#![allow(dead_code)]

pub mod net;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub const USER: &str = "sandboxd-e2e";

pub struct Session {
    pub uid: u32,
    pub home: PathBuf,
    pub runtime_dir: PathBuf,
}

pub fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("target"))
}

/// Runs a host command as root, panicking with its output when it fails.
pub fn root(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The static sandbox-init, built with the same command `make build` uses.
fn static_init() -> PathBuf {
    if let Some(p) = std::env::var_os("SANDBOXD_STATIC_INIT") {
        return p.into();
    }
    root(
        Command::new(env!("CARGO"))
            .current_dir(manifest())
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            )
            .args([
                "build",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--bin",
                "sandbox-init",
            ]),
    );
    target_dir().join("x86_64-unknown-linux-gnu/release/sandbox-init")
}

static SESSION: OnceLock<Session> = OnceLock::new();
static LOCK: Mutex<()> = Mutex::new(());

/// Serialises tests that share the daemon; a failed test does not poison the rest.
pub fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The shared session, set up on first use.
pub fn session() -> &'static Session {
    SESSION.get_or_init(|| {
        assert!(nix::unistd::geteuid().is_root(), "the end-to-end tests must run as root: they create the user {USER} and boot its systemd --user (run scripts/test)");
        root(Command::new(manifest().join("scripts/user-session")).args(["up", USER]));
        let pw = nix::unistd::User::from_name(USER).unwrap().unwrap();
        let s = Session { uid: pw.uid.as_raw(), home: pw.dir.clone(), runtime_dir: PathBuf::from(format!("/run/user/{}", pw.uid)) };
        s.install(&static_init());
        s.make_busybox_root();
        s
    })
}

impl Session {
    pub fn bin(&self) -> PathBuf {
        self.home.join(".local/bin")
    }

    pub fn profiles(&self) -> PathBuf {
        self.home.join(".config/sandboxd/profiles")
    }

    pub fn busybox_root(&self) -> PathBuf {
        self.home.join(".local/share/sandboxd/rootfs/busybox")
    }

    pub fn runc_root(&self) -> PathBuf {
        self.runtime_dir.join("sandboxd/runc")
    }

    pub fn bundles(&self) -> PathBuf {
        self.runtime_dir.join("sandboxd/bundles")
    }

    /// Where the daemon's stderr (its log) is appended.
    pub fn daemon_log(&self) -> PathBuf {
        self.runtime_dir.join("sandboxd-test.log")
    }

    pub fn chown(&self, path: &Path) {
        root(
            Command::new("chown")
                .args(["-R", &format!("{USER}:{USER}")])
                .arg(path),
        );
    }

    /// Installs binaries, the user unit and the D-Bus activation file as `make install`
    /// does for a desktop user.
    fn install(&self, init: &Path) {
        let run = |args: &[&str]| root(Command::new("make").current_dir(manifest()).args(args));
        let bindir = self.bin();
        run(&[
            "install-files",
            &format!("BINDIR={}", bindir.display()),
            &format!("INIT={}", init.display()),
            &format!("SANDBOXD={}", env!("CARGO_BIN_EXE_sandboxd")),
            &format!("SANDBOXCTL={}", env!("CARGO_BIN_EXE_sandboxctl")),
            &format!(
                "UNITDIR={}",
                self.home.join(".config/systemd/user").display()
            ),
            &format!(
                "DBUSDIR={}",
                self.home.join(".local/share/dbus-1/services").display()
            ),
            &format!(
                "AUTOSTARTDIR={}",
                self.home.join(".config/autostart").display()
            ),
            &format!(
                "DOCDIR={}",
                self.home.join(".local/share/doc/sandboxd").display()
            ),
            &format!("MANDIR={}", self.home.join(".local/share/man").display()),
            &format!(
                "BASHCOMPDIR={}",
                self.home
                    .join(".local/share/bash-completion/completions")
                    .display()
            ),
            &format!(
                "ZSHCOMPDIR={}",
                self.home.join(".local/share/zsh/site-functions").display()
            ),
            &format!(
                "FISHCOMPDIR={}",
                self.home.join(".config/fish/completions").display()
            ),
        ]);
        std::fs::create_dir_all(self.profiles()).unwrap();
        // No journal on these machines: the daemon's log goes to a file tests can read.
        let dropin = self
            .home
            .join(".config/systemd/user/sandboxd.service.d/test-log.conf");
        std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
        std::fs::write(
            &dropin,
            format!(
                "[Service]\nStandardError=append:{}\n",
                self.daemon_log().display()
            ),
        )
        .unwrap();
        self.chown(&self.home);
        self.user_ok(&["systemctl", "--user", "daemon-reload"]);
        // A daemon left running by an earlier run must not keep serving an old binary.
        self.user_ok(&["systemctl", "--user", "try-restart", "sandboxd.service"]);
    }

    /// A root file system with busybox-static and nothing else: no libc, so only a static
    /// sandbox-init can run there.
    fn make_busybox_root(&self) {
        let bin = self.busybox_root().join("bin");
        let _ = std::fs::remove_dir_all(self.busybox_root());
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        let list = root(Command::new("/bin/busybox").arg("--list"));
        for applet in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|a| *a != "busybox")
        {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        for dir in ["etc", "root", "home/user", "tmp"] {
            std::fs::create_dir_all(self.busybox_root().join(dir)).unwrap();
        }
        let passwd = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
        std::fs::write(self.busybox_root().join("etc/passwd"), passwd).unwrap();
        std::fs::write(
            self.busybox_root().join("etc/group"),
            "root:x:0:\nuser:x:1000:\n",
        )
        .unwrap();
        self.chown(&self.busybox_root());
        // The folders above it were made here as root: the user's own, not recursively
        // (they may hold trees of subordinate ids from earlier tests).
        let rootfs = self.busybox_root().parent().unwrap().to_path_buf();
        root(
            Command::new("chown")
                .arg(format!("{USER}:{USER}"))
                .arg(rootfs.parent().unwrap())
                .arg(&rootfs),
        );
    }

    /// A copy of the busybox root file system at `~/DIR` (replacing what was there).
    pub fn busybox_root_copy(&self, dir: &str) -> PathBuf {
        let tree = self.home.join(dir);
        let _ = std::fs::remove_dir_all(&tree);
        root(
            Command::new("cp")
                .arg("-a")
                .arg(self.busybox_root())
                .arg(&tree),
        );
        tree
    }

    /// Writes profile `name` with a busybox root and no network; `extra` is appended.
    pub fn busybox_profile(&self, name: &str, command: &str, extra: &str) {
        let cmd = serde_json::to_string(&["/bin/sh", "-c", command]).unwrap();
        let text = format!("[rootfs]\npath = \"~/.local/share/sandboxd/rootfs/busybox\"\n\n[process]\ncommand = {cmd}\n\n[network]\nmode = \"none\"\n\n{extra}");
        self.write_profile(name, &text);
    }

    pub fn write_profile(&self, name: &str, text: &str) {
        let path = self.profiles().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        self.chown(&path);
    }

    pub fn remove_profile(&self, name: &str) {
        let _ = std::fs::remove_file(self.profiles().join(format!("{name}.toml")));
    }

    /// Runs `args` as the test user inside its session.
    pub fn user(&self, args: &[&str]) -> Output {
        Command::new(manifest().join("scripts/user-session"))
            .args(["run", USER])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Like [`Session::user`], but the command must succeed; returns its stdout.
    pub fn user_ok(&self, args: &[&str]) -> String {
        let out = self.user(args);
        assert!(
            out.status.success(),
            "{args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        let ctl = self.bin().join("sandboxctl");
        let mut all = vec![ctl.to_str().unwrap()];
        all.extend_from_slice(args);
        self.user(&all)
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let ctl = self.bin().join("sandboxctl");
        let mut all = vec![ctl.to_str().unwrap()];
        all.extend_from_slice(args);
        self.user_ok(&all)
    }

    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["systemctl", "--user"];
        all.extend_from_slice(args);
        self.user(&all)
    }

    /// `systemctl --user show -p PROP --value sandboxd`.
    pub fn unit_property(&self, prop: &str) -> String {
        self.user_ok(&[
            "systemctl",
            "--user",
            "show",
            "-p",
            prop,
            "--value",
            "sandboxd.service",
        ])
        .trim()
        .to_string()
    }

    /// Starts the service and waits until it is active.
    pub fn start_daemon(&self) {
        let _ = self.user(&["systemctl", "--user", "reset-failed", "sandboxd.service"]);
        self.user_ok(&["systemctl", "--user", "start", "sandboxd.service"]);
    }

    pub fn stop_daemon(&self) {
        self.user_ok(&["systemctl", "--user", "stop", "sandboxd.service"]);
    }

    pub fn daemon_pid(&self) -> u32 {
        self.unit_property("MainPID").parse().unwrap()
    }

    /// The leader pid of sandbox `name` in `list`, 0 if none.
    pub fn leader_of(&self, name: &str) -> u32 {
        self.list()
            .iter()
            .find(|x| x["name"] == name)
            .and_then(|x| x["leader"].as_u64())
            .unwrap_or(0) as u32
    }

    /// `sandboxctl list --json`, parsed.
    pub fn list(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ctl_ok(&["list", "--json"])).unwrap()
    }

    pub fn status(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.ctl(&["status", name, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Polls `f` every 50 ms until it returns `Some`, for at most `limit`.
    pub fn wait_for<T>(&self, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                t0.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon running with no sandboxes, whatever an earlier failed test left.
    pub fn ready(&self) {
        if self.unit_property("ActiveState") != "active" {
            self.start_daemon();
        }
        self.stop_all();
    }

    /// SIGKILL of the service's daemon, and the new one systemd (or this) starts; returns
    /// its pid.
    pub fn crash_daemon(&self) -> u32 {
        let old = self.daemon_pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        self.wait_for("the old daemon to die", Duration::from_secs(10), || {
            (!alive(old)).then_some(())
        });
        self.wait_for("a new daemon", Duration::from_secs(20), || {
            let _ = self.systemctl(&["start", "sandboxd.service"]);
            let pid = self.daemon_pid();
            (pid != 0 && pid != old && self.unit_property("ActiveState") == "active").then_some(pid)
        })
    }

    /// Writes profile `name` with the host's /usr as root and no network (`extra`
    /// appended) and starts it.
    pub fn start_host_root(&self, name: &str, extra: &str) {
        self.write_profile(
            name,
            &format!("[rootfs]\nhost = true\n[network]\nmode = \"none\"\n{extra}"),
        );
        self.ctl_ok(&["start", name]);
    }

    /// Stops sandbox `name` and removes its profile.
    pub fn finish(&self, name: &str) {
        self.ctl_ok(&["stop", name]);
        self.remove_profile(name);
    }

    /// Stops every sandbox the daemon knows, so the next test starts clean.
    pub fn stop_all(&self) {
        for s in self.list() {
            let _ = self.ctl(&["stop", s["name"].as_str().unwrap()]);
        }
    }
}

/// Every process the daemon logged starting in sandbox `name` since it last started went
/// the `via` way ("init channel" or "runc exec"), and there was at least one.
pub fn assert_exec_path(s: &Session, name: &str, via: &str) {
    let log = std::fs::read_to_string(s.daemon_log()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tag = format!("SANDBOX=\"{name}\"");
    let since = lines
        .iter()
        .rposition(|l| l.contains("sandbox running") && l.contains(&tag))
        .unwrap_or(0);
    let started: Vec<&&str> = lines[since..]
        .iter()
        .filter(|l| l.contains("process started") && l.contains(&tag))
        .collect();
    assert!(!started.is_empty(), "no process started in {name}");
    let want = format!("via=\"{via}\"");
    for l in started {
        assert!(l.contains(&want), "{name}: not {via}: {l}");
    }
}

/// The live Manager and Sandbox introspection documents say exactly what the shipped
/// dist/dbus/org.sandboxd.Sandboxd1.xml says.
pub fn assert_matches_shipped_xml(manager: &str, sandbox: &str) {
    let shipped =
        std::fs::read_to_string(manifest().join("dist/dbus/org.sandboxd.Sandboxd1.xml")).unwrap();
    for (iface, live) in [
        ("org.sandboxd.Sandboxd1.Manager", manager),
        ("org.sandboxd.Sandboxd1.Sandbox", sandbox),
    ] {
        let live = interface(live, iface).unwrap_or_else(|| panic!("{iface} not served"));
        let file = interface(&shipped, iface)
            .unwrap_or_else(|| panic!("{iface} missing from the XML file"));
        assert_eq!(
            normalise(file),
            normalise(live),
            "dist/dbus/org.sandboxd.Sandboxd1.xml differs from the live {iface}; live:\n{live}"
        );
    }
}

/// The first `<interface name="NAME">…</interface>` block of an introspection document.
pub fn interface<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<interface name=\"{name}\">"))?;
    let end = xml[start..].find("</interface>")? + start + "</interface>".len();
    Some(&xml[start..end])
}

/// Introspection XML as lines to compare: trimmed, without blank and comment-opening lines.
pub fn normalise(xml: &str) -> Vec<String> {
    xml.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("<!--"))
        .map(str::to_string)
        .collect()
}

/// Processes of `uid` (count), from /proc.
pub fn processes_of(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .map(|l| l.split_whitespace().nth(1) == Some(&uid.to_string()))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// [`processes_of`] without idle netns helpers: a pool the daemon refills at its own pace.
pub fn processes_but_the_pool(uid: u32) -> Vec<u32> {
    processes_of(uid)
        .into_iter()
        .filter(|p| {
            !std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sandboxd: netns helper"))
        })
        .collect()
}

/// desktop-file-validate passes `file` without a word.
pub fn assert_valid_desktop_file(s: &Session, file: &Path) {
    let out = s.user(&["desktop-file-validate", file.to_str().unwrap()]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

pub fn alive(pid: u32) -> bool {
    sandboxd::procfs::Stat::of(pid).is_some_and(|s| !s.is_zombie())
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits for [`bus_latency`]: the slowest call in ms, and the number of calls.
pub fn latency_result(mut probe: Child) -> (u64, u64) {
    use std::io::Read;
    let _ = probe.wait();
    let mut text = String::new();
    probe
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let (worst, calls) = text.trim().split_once(' ').unwrap();
    (worst.parse().unwrap(), calls.parse().unwrap())
}

/// Runs tests/net/buslatency.py as the session's user for `secs` seconds.
pub fn bus_latency(secs: u32) -> Child {
    Command::new(manifest().join("scripts/user-session"))
        .args(["run", USER, "python3"])
        .arg(manifest().join("tests/net/buslatency.py"))
        .arg(secs.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A host folder bound into a sandbox at `/data`, for checking that what a sandbox wrote
/// there survives a fault.
pub struct BoundData {
    pub dir: PathBuf,
}

impl BoundData {
    /// The shell command (inside) that writes 4 MiB, syncs, then marks it done.
    pub const WRITE: &'static str =
        "dd if=/dev/zero bs=1M count=4 2>/dev/null | tr '\\0' k > /data/file && sync && echo done > /data/ready";

    /// An empty folder in the test user's home, and the profile lines that bind it.
    pub fn new(s: &Session, name: &str) -> (Self, String) {
        let dir = s.home.join(format!("{name}-data"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        s.chown(&dir);
        let toml = format!(
            "[[mount]]\nsource = \"{}\"\ndestination = \"/data\"\n",
            dir.display()
        );
        (Self { dir }, toml)
    }

    /// Waits until the sandbox has written and synced its file.
    pub fn wait_written(&self, s: &Session) {
        s.wait_for(
            "the sandbox to write /data",
            Duration::from_secs(20),
            || {
                std::fs::read_to_string(self.dir.join("ready"))
                    .is_ok_and(|t| t == "done\n")
                    .then_some(())
            },
        );
    }

    /// The file is all there.
    pub fn assert_intact(&self) {
        let data = std::fs::read(self.dir.join("file")).unwrap();
        assert_eq!(
            data.len(),
            4 << 20,
            "the file in the bound folder lost data"
        );
        assert!(
            data.iter().all(|b| *b == b'k'),
            "the file in the bound folder changed"
        );
    }
}

impl Drop for BoundData {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tmux server of the test user's (socket `sandboxd-e2e`), one window `t`; killed on drop.
pub struct Tmux<'a> {
    pub s: &'a Session,
}

impl<'a> Tmux<'a> {
    /// A new server of the test user's with one 80×24 window `t` running sh, no status line.
    pub fn start(s: &'a Session) -> Self {
        Self::sized(s, 80, 24)
    }

    /// [`Tmux::start`] with a window of `cols`×`rows`.
    pub fn sized(s: &'a Session, cols: u16, rows: u16) -> Self {
        let tmux = Tmux { s };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        tmux.cmd(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &cols,
            "-y",
            &rows,
            "sh",
        ]);
        tmux.cmd(&["set-option", "-g", "status", "off"]);
        tmux
    }
    pub fn cmd(&self, args: &[&str]) -> String {
        let mut all = vec!["tmux", "-L", "sandboxd-e2e"];
        all.extend_from_slice(args);
        stdout(&self.s.user(&all))
    }

    pub fn send(&self, keys: &str) {
        self.cmd(&["send-keys", "-t", "t", "-l", keys]);
        self.cmd(&["send-keys", "-t", "t", "Enter"]);
    }

    pub fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits until the screen shows `text` (bounded); returns the screen.
    pub fn wait(&self, text: &str) -> String {
        let t0 = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux<'_> {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

/// A server run as the test user in its session, killed when dropped with every process
/// of the user that `pkill` finds by its arguments (the server may have forked or been
/// re-executed under another name).
pub struct Server {
    child: Child,
    pkill: Vec<String>,
}

impl Server {
    /// `name args…`; ended with everything named `name`.
    pub fn start(name: &str, args: &[&str]) -> Self {
        Self::with_env(name, &[], args)
    }

    /// `name` with `VAR=value` settings `env` added to the session's environment.
    pub fn with_env(name: &str, env: &[&str], args: &[&str]) -> Self {
        let mut argv = vec!["env"];
        argv.extend_from_slice(env);
        argv.push(name);
        argv.extend_from_slice(args);
        Self::spawn(&argv, &["-x", name])
    }

    /// `argv`; ended with every process whose command line matches `pattern`.
    pub fn matching(pattern: &str, argv: &[&str]) -> Self {
        Self::spawn(argv, &["-f", pattern])
    }

    fn spawn(argv: &[&str], pkill: &[&str]) -> Self {
        let child = Command::new(manifest().join("scripts/user-session"))
            .args(["run", USER])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut args = vec!["-u".to_string(), USER.to_string()];
        args.extend(pkill.iter().map(|a| a.to_string()));
        Self { child, pkill: args }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(&self.pkill).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
