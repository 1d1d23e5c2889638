//! The daemon's start and end: sandboxes an earlier daemon left running are adopted, what
//! ended meanwhile is cleaned up, autostart profiles start; at the end every sandbox stops.

use super::*;

impl<R: Runtime> Supervisor<R> {
    /// Adopts the containers an earlier daemon left running and removes the remains of
    /// the dead ones (runc state, bundles), so nothing leaks across a crash.
    pub async fn reconcile(&self) {
        let containers = match self.inner.runtime.list().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot list earlier sandboxes: {}", crate::error_chain(&e));
                Vec::new()
            }
        };
        for c in containers {
            let bundle = Bundle::at(self.inner.bundles.join(&c.id));
            let record = validate_name(&c.id)
                .ok()
                .and_then(|_| bundle.read_record::<RunRecord>().ok());
            match record {
                Some(record) if c.status == "running" && c.pid != 0 => {
                    self.adopt(&c.id, c.pid, record);
                }
                _ => {
                    tracing::info!(
                        SANDBOX = c.id.as_str(),
                        status = c.status.as_str(),
                        "removing remains of an earlier sandbox"
                    );
                    if let Err(e) = self.inner.runtime.delete(&c.id).await {
                        tracing::warn!(SANDBOX = c.id.as_str(), "{}", crate::error_chain(&e));
                    }
                    if validate_name(&c.id).is_ok() {
                        let _ = bundle.remove();
                    }
                }
            }
        }
        // Bundles runc does not know about are leftovers of a crash between the two.
        if let Ok(dirs) = std::fs::read_dir(&self.inner.bundles) {
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                if !self.table().contains_key(&name) {
                    let _ = Bundle::at(d.path()).remove();
                }
            }
        }
        // Run profiles of runs that ended while no daemon ran.
        if let Ok(files) = std::fs::read_dir(run::runs_dir(&self.inner.bundles)) {
            for f in files.flatten() {
                let path = f.path();
                let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !self.table().contains_key(name) {
                    self.forget_run(name);
                }
            }
        }
        // Bus sockets of sandboxes that ended while no daemon ran.
        self.inner
            .buses
            .remove_others(&|name| self.table().contains_key(name));
        // Layers of sandboxes that ended while no daemon ran (kept ones are unmounted).
        for name in self.inner.layers.names() {
            if !self.table().contains_key(&name) {
                if let Err(e) = self.drop_layer(&name).await {
                    tracing::warn!(SANDBOX = name.as_str(), "{}", crate::error_chain(&e));
                }
            }
        }
    }

    pub(super) fn adopt(&self, name: &str, pid: u32, record: RunRecord) {
        let streams = Output::reattach(name, &self.inner.logs);
        tracing::info!(SANDBOX = name, pid, streams, "adopting running sandbox");
        self.inner.logs.note(
            name,
            &format!("adopted by a new daemon (pid 1 is host pid {pid}, {streams} output streams resumed)"),
        );
        let run_id = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        let info = SandboxInfo {
            name: name.into(),
            state: State::Running,
            leader: pid,
            since: record.since,
            profile: record.profile.clone(),
            restarts: record.restarts,
            exit_status: -1,
            security: record.security.clone(),
        };
        self.table().insert(
            name.into(),
            Entry {
                info: info.clone(),
                restart: Restart {
                    policy: record.policy,
                    max: record.max,
                    stop_timeout: Duration::from_millis(record.stop_timeout_ms.max(1)),
                },
                op: Arc::default(),
                run: Some(Run {
                    id: run_id,
                    exited: rx,
                    stop_requested: false,
                    leader: None,
                }),
            },
        );
        self.emit(Event::New(name.into()));
        self.emit(Event::Changed(info));
        // The earlier daemon's helper and bus proxy ended with it: give the sandbox new
        // ones, under the profile's current policy. Until then (or if that fails) it has
        // no network, or no bus.
        if let Ok(profile) = self.inner.store.load(name) {
            if let Some(dbus) = profile.dbus.clone() {
                let sup = self.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    if let Err(e) = sup.inner.buses.attach(&name, &dbus).await {
                        tracing::warn!(
                            SANDBOX = name.as_str(),
                            "no session bus after adoption: {}",
                            crate::error_chain(&e)
                        );
                    }
                    // Stopped while its proxy was starting: the stop's detach came first.
                    if !sup.table().contains_key(&name) {
                        sup.inner.buses.detach(&name).await;
                    }
                });
            }
            if profile.network.mode == NetworkMode::Proxy {
                let sup = self.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    if let Err(e) = sup.inner.net.attach(&name, pid, &profile.network).await {
                        tracing::warn!(
                            SANDBOX = name.as_str(),
                            "no network after adoption: {}",
                            crate::error_chain(&e)
                        );
                    }
                });
            }
        }
        tokio::spawn(self.clone().monitor(name.into(), run_id, pid, tx));
    }

    /// Starts every valid profile with `autostart = true` that is not running yet.
    pub async fn autostart(&self) {
        let names: Vec<String> = self
            .inner
            .store
            .list()
            .into_iter()
            .filter(|p| p.error.is_empty())
            .filter_map(|p| self.inner.store.load(&p.name).ok())
            .filter(|p| p.autostart && !self.table().contains_key(&p.name))
            .map(|p| p.name)
            .collect();
        at_once(&names, "autostart", |n| async move {
            self.start(n).await.map(drop)
        })
        .await;
    }

    /// Stops every sandbox (daemon shutdown).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self
            .table()
            .iter()
            .filter(|(_, e)| e.info.state.is_active())
            .map(|(n, _)| n.clone())
            .collect();
        at_once(&names, "stop", |n| self.stop(n)).await;
    }
}

/// Runs `op` on every sandbox in `names` at the same time; a failure is logged (`WHAT
/// failed`), and does not keep the others from running.
async fn at_once<'a, F, Fut>(names: &'a [String], what: &str, op: F)
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>> + 'a,
{
    let all = names.iter().map(|n| {
        let done = op(n);
        async move {
            if let Err(e) = done.await {
                tracing::warn!(
                    SANDBOX = n.as_str(),
                    "{what} failed: {}",
                    crate::error_chain(&e)
                );
            }
        }
    });
    futures_util::future::join_all(all).await;
}
