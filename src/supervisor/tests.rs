//! Supervisor tests against a fake runtime: the state machine, restart policy, stop
//! escalation and reconcile, without runc.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::*;
use crate::runtime::{ContainerState, ExecRequest, ExecStdio, RuntimeError, Started};

#[derive(Default)]
struct FakeState {
    next_pid: u32,
    containers: BTreeMap<String, ContainerState>,
    exits: BTreeMap<u32, watch::Sender<Option<i32>>>,
    /// Exit status each started container reports at once (`None`: runs until killed).
    exit_on_start: Option<i32>,
    ignore_term: bool,
    /// `lock_nested` fails with this message.
    lock_fails: Option<String>,
    /// `create` fails with this message, as runc's.
    create_fails: Option<String>,
    calls: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn exit(&self, id: &str, status: i32) {
        let mut s = self.lock();
        if let Some(c) = s.containers.get_mut(id) {
            c.status = "stopped".into();
            let pid = c.pid;
            if let Some(tx) = s.exits.get(&pid) {
                tx.send_replace(Some(status));
            }
        }
    }
}

impl Runtime for Fake {
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        _output: Output,
        _systemd_cgroup: bool,
    ) -> Result<u32, RuntimeError> {
        assert!(bundle.join("config.json").is_file());
        let mut s = self.lock();
        if let Some(message) = s.create_fails.clone() {
            return Err(RuntimeError::Failed {
                op: "create",
                id: id.into(),
                message,
            });
        }
        s.next_pid += 1;
        let pid = 1000 + s.next_pid;
        s.calls.push(format!("create {id}"));
        s.containers.insert(
            id.into(),
            ContainerState {
                id: id.into(),
                status: "created".into(),
                pid,
                bundle: bundle.display().to_string(),
            },
        );
        s.exits.insert(pid, watch::channel(None).0);
        Ok(pid)
    }

    async fn lock_nested(&self, id: &str, pid: u32) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        s.calls.push(format!("lock {id}"));
        assert_eq!(s.containers[id].pid, pid);
        match &s.lock_fails {
            Some(why) => Err(RuntimeError::Lock {
                id: id.into(),
                source: crate::runtime::LockError::Failed(why.clone()),
            }),
            None => Ok(()),
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let exit = {
            let mut s = self.lock();
            s.calls.push(format!("start {id}"));
            s.containers.get_mut(id).unwrap().status = "running".into();
            s.exit_on_start
        };
        if let Some(code) = exit {
            self.exit(id, code << 8);
        }
        Ok(())
    }

    async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        Ok(self.lock().containers.get(id).cloned())
    }

    async fn list(&self) -> Result<Vec<ContainerState>, RuntimeError> {
        Ok(self.lock().containers.values().cloned().collect())
    }

    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let ignore = {
            let mut s = self.lock();
            s.calls.push(format!("kill {id} {signal}"));
            s.ignore_term && signal == libc::SIGTERM
        };
        if !ignore {
            self.exit(id, signal);
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        if s.containers.remove(id).is_some() {
            s.calls.push(format!("delete {id}"));
        }
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        req: &ExecRequest,
        _stdio: ExecStdio,
    ) -> Result<Started, RuntimeError> {
        let mut s = self.lock();
        if s.containers.get(id).is_none_or(|c| c.status != "running") {
            return Err(RuntimeError::Failed {
                op: "exec",
                id: id.into(),
                message: "not running".into(),
            });
        }
        s.next_pid += 1;
        let pid = 1000 + s.next_pid;
        s.calls
            .push(format!("exec {id} {} {}", req.uid, req.argv.join(" ")));
        // The process ends at once with status 4.
        s.exits.insert(pid, watch::channel(Some(4 << 8)).0);
        Ok(Started {
            pid,
            pty: None,
            via: crate::runtime::ExecPath::Runc,
        })
    }

    async fn wait(&self, pid: u32) -> Option<i32> {
        let mut rx = self.lock().exits.get(&pid).map(|tx| tx.subscribe())?;
        let status = *rx.wait_for(|s| s.is_some()).await.ok()?;
        status
    }
}

/// Records what the supervisor asks of the network side, in order.
#[derive(Default)]
struct NetLog {
    calls: Mutex<Vec<String>>,
}

impl Networking for NetLog {
    fn attach<'a>(
        &'a self,
        name: &'a str,
        pid: u32,
        _network: &'a crate::profile::Network,
    ) -> Pin<Box<dyn Future<Output = Result<(), crate::proxy::ProxyError>> + Send + 'a>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("attach {name} {pid}"));
        Box::pin(async { Ok(()) })
    }

    fn detach(&self, name: &str) {
        self.calls.lock().unwrap().push(format!("detach {name}"));
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        _network: &'a crate::profile::Network,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        self.calls.lock().unwrap().push(format!("update {name}"));
        Box::pin(async { true })
    }

    fn stats(&self, _name: &str) -> Stats {
        Stats::default()
    }

    fn denials(&self, _name: &str) -> Vec<Denied> {
        Vec::new()
    }

    fn name_hits(&self, _name: &str) -> std::collections::HashMap<String, u64> {
        Default::default()
    }
}

struct Harness {
    sup: Supervisor<Fake>,
    fake: Fake,
    net: Arc<NetLog>,
    events: mpsc::UnboundedReceiver<Event>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["profiles", "rootfs/etc", "bundles"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let store = ProfileStore {
            dirs: vec![dir.path().join("profiles")],
            home: dir.path().into(),
        };
        let host = HostContext {
            uid: 1000,
            gid: 1000,
            subuid: Some((100000, 65536)),
            subgid: Some((100000, 65536)),
            init: "/init".into(),
            etc: dir.path().join("rootfs/etc"),
            home: dir.path().into(),
            homes: dir.path().join("homes"),
            intermediate: true,
            nofile: (1024, 4096),
            limits: crate::cgroups::Enforcement::Rlimits { why: "test".into() },
            buses: dir.path().join("dbus"),
        };
        let fake = Fake::default();
        let net = Arc::new(NetLog::default());
        let (tx, events) = mpsc::unbounded_channel();
        let sup = Supervisor::new(
            fake.clone(),
            store,
            host,
            crate::supervisor::Disk {
                bundles: dir.path().join("bundles"),
                logs: crate::logbook::Logbook::new(
                    dir.path().join("logs"),
                    crate::logbook::DEFAULT_CAP,
                ),
                layers: crate::runtime::Layers {
                    dir: "/nonexistent/layers".into(),
                    wrapper: None,
                    helper: "/nonexistent/sandboxd".into(),
                },
            },
            tx,
            Box::new(crate::spec::SessionEnv::new()),
            net.clone(),
        );
        Self {
            sup,
            fake,
            net,
            events,
            dir,
        }
    }

    fn profile(&self, name: &str, extra: &str) {
        let text = format!(
            "[rootfs]\npath = \"{}\"\n[network]\nmode = \"none\"\n{extra}",
            self.dir.path().join("rootfs").display()
        );
        std::fs::write(self.dir.path().join(format!("profiles/{name}.toml")), text).unwrap();
    }

    async fn wait_state(&self, name: &str, want: State) -> SandboxInfo {
        for _ in 0..200 {
            if let Ok(info) = self.sup.get(name) {
                if info.state == want {
                    return info;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never reached {want}: {:?}", self.sup.get(name));
    }

    fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

#[tokio::test]
async fn on_failure_restarts_exactly_max_times_then_fails() {
    let mut h = Harness::new();
    h.profile("crash", "[restart]\npolicy = \"on-failure\"\nmax = 2\n");
    h.fake.lock().exit_on_start = Some(3);
    h.sup.start("crash").await.unwrap();
    let info = h.wait_state("crash", State::Failed).await;
    assert_eq!(info.exit_status, 3);
    assert_eq!(info.restarts, 2);
    assert_eq!(
        h.fake
            .lock()
            .calls
            .iter()
            .filter(|c| c.starts_with("start"))
            .count(),
        3
    );
    assert!(
        h.fake.lock().containers.is_empty(),
        "runc state left behind"
    );
    assert!(
        !h.dir.path().join("bundles/crash").exists(),
        "bundle left behind"
    );
    let events = h.drain();
    assert_eq!(events[0], Event::New("crash".into()));
    let states: Vec<State> = events
        .iter()
        .filter_map(|e| match e {
            Event::Changed(i) => Some(i.state),
            _ => None,
        })
        .collect();
    assert_eq!(states.iter().filter(|s| **s == State::Running).count(), 3);
    assert_eq!(states.last(), Some(&State::Failed));
}

#[tokio::test]
async fn clean_exit_is_stopped_and_not_restarted_on_failure() {
    let h = Harness::new();
    h.profile("ok", "[restart]\npolicy = \"on-failure\"\n");
    h.fake.lock().exit_on_start = Some(0);
    h.sup.start("ok").await.unwrap();
    let info = h.wait_state("ok", State::Stopped).await;
    assert_eq!((info.exit_status, info.restarts), (0, 0));
}

#[tokio::test]
async fn stop_escalates_to_sigkill_and_removes_everything() {
    let mut h = Harness::new();
    h.profile(
        "stubborn",
        "[restart]\nstop_timeout = \"200ms\"\npolicy = \"always\"\n",
    );
    h.fake.lock().ignore_term = true;
    h.sup.start("stubborn").await.unwrap();
    let t0 = std::time::Instant::now();
    h.sup.stop("stubborn").await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(200) && t0.elapsed() < Duration::from_secs(5));
    let calls = h.fake.lock().calls.clone();
    assert!(
        calls.contains(&"kill stubborn 15".to_string())
            && calls.contains(&"kill stubborn 9".to_string()),
        "{calls:?}"
    );
    assert!(h.fake.lock().containers.is_empty());
    assert!(!h.dir.path().join("bundles/stubborn").exists());
    assert!(matches!(
        h.sup.get("stubborn"),
        Err(Error::NoSuchSandbox(_))
    ));
    // The "always" policy must not revive a sandbox that was stopped on purpose.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.iter().filter(|c| c.starts_with("start")).count(), 1);
    assert!(matches!(h.drain().last(), Some(Event::Removed { result, .. }) if result == "done"));
}

#[tokio::test]
async fn errors_are_typed() {
    let h = Harness::new();
    h.profile("idle", "");
    h.profile("bad", "[restart]\nstop_timeout = \"soon\"\n");
    // Names in the policy need the daemon's resolver, which this profile turns off.
    std::fs::write(
        h.dir.path().join("profiles/proxy.toml"),
        format!(
            "[rootfs]\npath = \"{}\"\n[network]\ndns = false\nallow = [\"example.test\"]\n",
            h.dir.path().join("rootfs").display()
        ),
    )
    .unwrap();
    h.sup.start("idle").await.unwrap();
    assert!(matches!(
        h.sup.start("idle").await,
        Err(Error::AlreadyRunning(_))
    ));
    assert!(matches!(
        h.sup.start("absent").await,
        Err(Error::NoSuchProfile(_))
    ));
    assert!(matches!(
        h.sup.start("bad").await,
        Err(Error::InvalidProfile(_))
    ));
    assert!(matches!(
        h.sup.start("../etc").await,
        Err(Error::InvalidProfile(_))
    ));
    assert!(matches!(
        h.sup.start("proxy").await,
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        h.sup.stop("absent").await,
        Err(Error::NoSuchSandbox(_))
    ));
    assert!(matches!(
        h.sup.kill("idle", 0).await,
        Err(Error::InvalidArgument(_))
    ));
    h.sup.kill("idle", libc::SIGTERM).await.unwrap();
    h.wait_state("idle", State::Failed).await;
    assert!(matches!(
        h.sup.kill("idle", libc::SIGTERM).await,
        Err(Error::NotRunning(_))
    ));
    // Dismissing an ended sandbox removes it.
    h.sup.stop("idle").await.unwrap();
    assert!(h.sup.list().is_empty());
}

#[tokio::test]
async fn reconcile_adopts_running_and_clears_the_dead() {
    let h = Harness::new();
    h.profile("alive", "");
    h.profile("dead", "");
    h.sup.start("alive").await.unwrap();
    h.sup.start("dead").await.unwrap();
    let pid = h.sup.get("alive").unwrap().leader;
    h.fake.lock().containers.get_mut("dead").unwrap().status = "stopped".into();
    std::fs::create_dir_all(h.dir.path().join("bundles/stray")).unwrap();

    // A second daemon over the same runc state and bundles.
    let (tx, _rx) = mpsc::unbounded_channel();
    let again = Supervisor::new(
        h.fake.clone(),
        h.sup.inner.store.clone(),
        h.sup.inner.host.clone(),
        crate::supervisor::Disk {
            bundles: h.dir.path().join("bundles"),
            logs: crate::logbook::Logbook::new(
                h.dir.path().join("logs"),
                crate::logbook::DEFAULT_CAP,
            ),
            layers: crate::runtime::Layers {
                dir: "/nonexistent/layers".into(),
                wrapper: None,
                helper: "/nonexistent/sandboxd".into(),
            },
        },
        tx,
        Box::new(crate::spec::SessionEnv::new()),
        h.net.clone(),
    );
    again.reconcile().await;
    let list = again.list();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].state, list[0].leader),
        ("alive", State::Running, pid)
    );
    assert!(!h.fake.lock().containers.contains_key("dead"));
    assert!(!h.dir.path().join("bundles/dead").exists());
    assert!(!h.dir.path().join("bundles/stray").exists());
    again.stop("alive").await.unwrap();
    assert!(h.fake.lock().containers.is_empty());
}

#[tokio::test]
async fn exec_resolves_the_user_and_reports_the_exit() {
    let mut h = Harness::new();
    std::fs::write(
        h.dir.path().join("rootfs/etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/ash\n",
    )
    .unwrap();
    h.profile("box", "[process]\nuser = \"user\"\n");
    let fds = || ExecStdio::Terminal;
    let opts = |argv: &[&str], user: Option<&str>| ExecOptions {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        user: user.map(str::to_string),
        ..Default::default()
    };
    assert!(matches!(
        h.sup.exec("box", opts(&["true"], None), fds()).await,
        Err(Error::NoSuchSandbox(_))
    ));
    h.sup.start("box").await.unwrap();
    h.drain();
    let (id, _) = h.sup.exec("box", opts(&["id"], None), fds()).await.unwrap();
    let (_, _) = h
        .sup
        .exec("box", opts(&[], Some("root")), fds())
        .await
        .unwrap();
    let calls = h.fake.lock().calls.clone();
    assert!(
        calls.contains(&"exec box 1000 id".to_string()),
        "profile user: {calls:?}"
    );
    assert!(
        calls.contains(&"exec box 0 /bin/sh".to_string()),
        "root's login shell: {calls:?}"
    );
    let bad_env = ExecOptions {
        env: vec!["NOEQUALS".into()],
        ..opts(&["x"], None)
    };
    assert!(matches!(
        h.sup.exec("box", bad_env, fds()).await,
        Err(Error::InvalidArgument(_))
    ));
    let bad_user = opts(&["x"], Some("ghost"));
    assert!(matches!(
        h.sup.exec("box", bad_user, fds()).await,
        Err(Error::InvalidArgument(_))
    ));
    for _ in 0..100 {
        if h.drain().contains(&Event::ProcessExited {
            name: "box".into(),
            id,
            status: 4,
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no ProcessExited for {id}");
}

#[tokio::test]
async fn a_stop_during_start_leaves_no_container() {
    let h = Harness::new();
    h.profile("racy", "");
    // An ended sandbox keeps its entry (and operation lock).
    h.fake.lock().exit_on_start = Some(3);
    h.sup.start("racy").await.unwrap();
    h.wait_state("racy", State::Failed).await;
    h.fake.lock().exit_on_start = None;
    // Hold the operation lock, queue a stop, then a start behind it: the stop runs first
    // and forgets the sandbox while the start is already under way.
    let op = h.sup.table().get("racy").unwrap().op.clone();
    let guard = op.lock().await;
    let sup = h.sup.clone();
    let stop = tokio::spawn(async move { sup.stop("racy").await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sup = h.sup.clone();
    let start = tokio::spawn(async move { sup.start("racy").await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.sup.get("racy").unwrap().state, State::Starting);
    drop(guard);
    stop.await.unwrap().unwrap();
    let started = start.await.unwrap();
    assert!(
        matches!(started, Err(Error::RuntimeFailed { .. })),
        "{started:?}"
    );
    assert!(
        h.fake.lock().containers.is_empty(),
        "a container nobody supervises was left"
    );
    assert!(!h.dir.path().join("bundles/racy").exists());
    assert!(h.sup.list().is_empty());
}

#[tokio::test]
async fn proxied_sandboxes_get_their_network_before_start_and_lose_it_at_stop() {
    let h = Harness::new();
    h.profile("plain", "");
    std::fs::write(
        h.dir.path().join("profiles/proxied.toml"),
        std::fs::read_to_string(h.dir.path().join("profiles/plain.toml"))
            .unwrap()
            .replace("mode = \"none\"", "mode = \"proxy\""),
    )
    .unwrap();
    h.sup.start("plain").await.unwrap();
    assert!(h
        .net
        .calls
        .lock()
        .unwrap()
        .iter()
        .all(|c| !c.starts_with("attach")));
    let info = h.sup.start("proxied").await.unwrap();
    h.sup.stop("proxied").await.unwrap();
    let calls = h.net.calls.lock().unwrap().clone();
    let attach = format!("attach proxied {}", info.leader);
    let at = calls.iter().position(|c| *c == attach).expect("attached");
    assert!(
        calls[at..].contains(&"detach proxied".to_string()),
        "{calls:?}"
    );
}

/// The nested-userns lock runs between create and start for every sandbox without
/// `security.nested`; when it fails the sandbox never starts and nothing is left.
#[tokio::test]
async fn a_failed_userns_lock_fails_the_start_and_leaves_nothing() {
    let h = Harness::new();
    h.profile("locked", "");
    h.profile("nested", "[security]\nnested = true\n");
    h.sup.start("locked").await.unwrap();
    h.sup.start("nested").await.unwrap();
    let calls = h.fake.lock().calls.clone();
    let at = |c: &str| calls.iter().position(|x| x == c).unwrap();
    assert!(at("create locked") < at("lock locked") && at("lock locked") < at("start locked"));
    assert!(!calls.iter().any(|c| c == "lock nested"), "{calls:?}");
    assert_eq!(
        h.sup.get("locked").unwrap().security,
        "seccomp filter, no nested namespaces"
    );
    h.sup.stop("locked").await.unwrap();

    h.fake.lock().lock_fails = Some("cannot write /proc/sys/user/max_user_namespaces".into());
    let err = h.sup.start("locked").await.unwrap_err();
    let text = crate::error_chain(&err);
    assert!(text.contains("max_user_namespaces"), "{text}");
    assert_eq!(h.sup.get("locked").unwrap().state, State::Failed);
    let calls = h.fake.lock().calls.clone();
    assert_eq!(calls.iter().filter(|c| *c == "start locked").count(), 1);
    assert!(!h.fake.lock().containers.contains_key("locked"));
    assert!(!h.dir.path().join("bundles/locked").exists());
}

/// Errors keep their type to the edge: a profile the root cannot satisfy is the profile's
/// problem (InvalidProfile over D-Bus), a runc failure a runtime one with runc's message.
#[tokio::test]
async fn spec_and_runtime_failures_keep_their_kind() {
    let h = Harness::new();
    std::fs::write(
        h.dir.path().join("rootfs/etc/passwd"),
        "root:x:0:0::/root:/bin/sh\n",
    )
    .unwrap();
    h.profile("nouser", "[process]\nuser = \"nosuchuser\"\n");
    let err = h.sup.start("nouser").await.unwrap_err();
    assert!(matches!(err, Error::Spec { .. }), "{err:?}");
    assert!(err.is_profile_problem());
    let bus = crate::bus::BusError::from(err);
    assert!(
        matches!(&bus, crate::bus::BusError::InvalidProfile(m) if m.contains("nosuchuser")),
        "{bus:?}"
    );

    h.fake.lock().create_fails =
        Some("container_linux.go: starting container process caused: exec: nope".into());
    h.profile("broken", "");
    let err = h.sup.start("broken").await.unwrap_err();
    assert!(matches!(err, Error::Runtime { .. }), "{err:?}");
    assert!(!err.is_profile_problem());
    let bus = crate::bus::BusError::from(err);
    assert!(
        matches!(&bus, crate::bus::BusError::RuntimeFailed(m) if m.contains("starting container process")),
        "{bus:?}"
    );
}
