//! The D-Bus contract without a bus daemon, root or runc: the daemon's objects served over
//! a peer-to-peer connection (with a runtime that pretends to run containers) introspect
//! exactly as the shipped dist/dbus/org.sandboxd.Sandboxd1.xml says, and its errors carry
//! the contract's names.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use sandboxd::bus::{self, MANAGER_PATH};
use sandboxd::cgroups::Enforcement;
use sandboxd::profile::{Network, ProfileStore};
use sandboxd::proxy::{Denied, Networking, ProxyError, Stats};
use sandboxd::runtime::{
    ContainerState, ExecPath, ExecRequest, ExecStdio, Output, Runtime, RuntimeError, Started,
};
use sandboxd::spec::{HostContext, SessionEnv};
use sandboxd::supervisor::Supervisor;

use common::assert_matches_shipped_xml;

/// Containers that are created and started at once and run until deleted.
#[derive(Default)]
struct Pretend {
    next: AtomicU32,
}

impl Runtime for Pretend {
    async fn create(&self, _: &str, _: &Path, _: Output, _: bool) -> Result<u32, RuntimeError> {
        Ok(100_000 + self.next.fetch_add(1, Ordering::Relaxed))
    }
    async fn lock_nested(&self, _: &str, _: u32) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn start(&self, _: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn state(&self, _: &str) -> Result<Option<ContainerState>, RuntimeError> {
        Ok(None)
    }
    async fn list(&self) -> Result<Vec<ContainerState>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn kill(&self, _: &str, _: i32) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn delete(&self, _: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn exec(&self, _: &str, _: &ExecRequest, _: ExecStdio) -> Result<Started, RuntimeError> {
        Ok(Started {
            pid: 1,
            pty: None,
            via: ExecPath::Channel,
        })
    }
    async fn wait(&self, _: u32) -> Option<i32> {
        std::future::pending().await
    }
}

struct NoNetwork;

impl Networking for NoNetwork {
    fn attach<'a>(
        &'a self,
        _: &'a str,
        _: u32,
        _: &'a Network,
    ) -> Pin<Box<dyn Future<Output = Result<(), ProxyError>> + Send + 'a>> {
        Box::pin(async { Ok(()) })
    }
    fn detach(&self, _: &str) {}
    fn update<'a>(
        &'a self,
        _: &'a str,
        _: &'a Network,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async { false })
    }
    fn stats(&self, _: &str) -> Stats {
        Stats::default()
    }
    fn denials(&self, _: &str) -> Vec<Denied> {
        Vec::new()
    }
    fn name_hits(&self, _: &str) -> HashMap<String, u64> {
        HashMap::new()
    }
}

async fn introspect(conn: &zbus::Connection, path: &str) -> String {
    let reply = conn
        .call_method(
            None::<&str>,
            path,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await
        .unwrap();
    reply.body().deserialize::<String>().unwrap()
}

#[tokio::test]
async fn the_contract_over_a_peer_to_peer_connection() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["profiles", "rootfs/etc", "bundles"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::write(
        dir.path().join("rootfs/etc/passwd"),
        "root:x:0:0::/root:/bin/sh\n",
    )
    .unwrap();
    let root = dir.path().join("rootfs");
    std::fs::write(
        dir.path().join("profiles/p2p.toml"),
        format!(
            "[rootfs]\npath = \"{}\"\n[network]\nmode = \"none\"\n",
            root.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("profiles/nouser.toml"),
        format!(
            "[rootfs]\npath = \"{}\"\n[network]\nmode = \"none\"\n[process]\nuser = \"ghost\"\n",
            root.display()
        ),
    )
    .unwrap();
    let host = HostContext {
        uid: 1000,
        gid: 1000,
        subuid: Some((100_000, 65536)),
        subgid: Some((100_000, 65536)),
        init: "/init".into(),
        etc: root.join("etc"),
        home: dir.path().into(),
        homes: dir.path().join("homes"),
        intermediate: true,
        nofile: (1024, 4096),
        limits: Enforcement::Rlimits { why: "test".into() },
        buses: dir.path().join("dbus"),
    };
    let store = ProfileStore {
        dirs: vec![dir.path().join("profiles")],
        home: dir.path().into(),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sup = Supervisor::new(
        Pretend::default(),
        store,
        host,
        sandboxd::supervisor::Disk {
            bundles: dir.path().join("bundles"),
            logs: sandboxd::logbook::Logbook::new(
                dir.path().join("logs"),
                sandboxd::logbook::DEFAULT_CAP,
            ),
            layers: sandboxd::runtime::Layers {
                dir: "/nonexistent/layers".into(),
                wrapper: None,
                helper: "/nonexistent/sandboxd".into(),
            },
        },
        tx,
        Box::new(SessionEnv::new()),
        Arc::new(NoNetwork),
    );

    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let guid = zbus::Guid::generate();
    let (server, client) = tokio::join!(
        zbus::connection::Builder::unix_stream(a)
            .server(guid)
            .unwrap()
            .p2p()
            .build(),
        zbus::connection::Builder::unix_stream(b).p2p().build(),
    );
    let (server, client) = (server.unwrap(), client.unwrap());
    bus::serve(&server, sup.clone()).await.unwrap();
    tokio::spawn(bus::pump_events(server.clone(), sup.clone(), rx, || {}));

    // A sandbox started over the connection, so that its object exists.
    let reply = client
        .call_method(
            None::<&str>,
            MANAGER_PATH,
            Some("org.sandboxd.Sandboxd1.Manager"),
            "StartSandbox",
            &("p2p",),
        )
        .await
        .unwrap();
    let path: zbus::zvariant::OwnedObjectPath = reply.body().deserialize().unwrap();
    assert_eq!(path.as_str(), "/org/sandboxd/Sandboxd1/sandbox/p2p");
    // The object appears once the pump has run.
    let mut sandbox = String::new();
    for _ in 0..100 {
        sandbox = introspect(&client, path.as_str()).await;
        if sandbox.contains("org.sandboxd.Sandboxd1.Sandbox") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let manager = introspect(&client, MANAGER_PATH).await;
    assert_matches_shipped_xml(&manager, &sandbox);

    // Errors carry the contract's names.
    for (args, want) in [
        ("nosuch", "org.sandboxd.Sandboxd1.Error.NoSuchProfile"),
        ("nouser", "org.sandboxd.Sandboxd1.Error.InvalidProfile"),
        ("p2p", "org.sandboxd.Sandboxd1.Error.AlreadyRunning"),
        ("../etc", "org.sandboxd.Sandboxd1.Error.InvalidProfile"),
    ] {
        let err = client
            .call_method(
                None::<&str>,
                MANAGER_PATH,
                Some("org.sandboxd.Sandboxd1.Manager"),
                "StartSandbox",
                &(args,),
            )
            .await
            .unwrap_err();
        match err {
            zbus::Error::MethodError(name, _, _) => assert_eq!(name.as_str(), want, "{args}"),
            other => panic!("{args}: {other:?}"),
        }
    }
}
