//! Starting a sandbox: its bundle and spec, its layer, `runc create`, the lock and the
//! network between create and start.

use super::*;

impl<R: Runtime> Supervisor<R> {
    /// Writes the bundle, creates and starts the container, and starts watching it. On
    /// failure everything it made is removed again.
    pub(super) async fn launch(&self, profile: &Profile, restarts: u32) -> Result<(), Error> {
        let name = profile.name.as_str();
        let failed = |message: String| Error::RuntimeFailed {
            name: name.into(),
            message,
        };
        let bundle_dir = self.inner.bundles.join(name);
        self.inner.logs.note(
            name,
            &match &profile.file {
                Some(f) if restarts > 0 => format!("restart {restarts}, from {}", f.display()),
                Some(f) => format!("starting from {}", f.display()),
                None => "starting from the built-in default profile".into(),
            },
        );
        let host_root = profile.rootfs.source == RootfsSource::Host;
        let bundle =
            Bundle::prepare(bundle_dir, host_root).map_err(|e| failed(crate::error_chain(&e)))?;
        let since = now_us();
        let session = self.inner.session.current().await;
        let layer = match self.mount_layer(profile).await {
            Ok(layer) => layer,
            Err(e) => {
                let _ = bundle.remove();
                return Err(e);
            }
        };
        let prepared = self.write_bundle(
            profile,
            &bundle,
            layer.as_deref(),
            &session,
            (restarts, since),
        );
        let created = match prepared {
            Ok(()) => self.create_and_start(profile, &bundle).await,
            Err(e) => Err(e),
        };
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                self.inner.net.detach(name);
                self.inner.buses.detach(name).await;
                let _ = self.inner.runtime.delete(name).await;
                let _ = bundle.remove();
                let _ = self.drop_layer(name).await;
                return Err(e);
            }
        };
        let run_id = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        // Opened before the monitor exists, so before anything reaps pid 1: it is ours.
        let leader = crate::runtime::ProcessHandle::open(pid).ok().map(Arc::new);
        let tracked = self.update(name, None, |e| {
            e.info.state = State::Running;
            e.info.leader = pid;
            e.info.since = since;
            e.info.restarts = restarts;
            e.info.exit_status = -1;
            e.info.security = profile.security.describe();
            e.run = Some(Run {
                id: run_id,
                exited: rx,
                stop_requested: false,
                leader,
            });
        });
        if !tracked {
            // A stop ran (and forgot the sandbox) while it was starting: undo, so no
            // container lives on that nobody supervises. `runc delete --force` kills it.
            for err in self.teardown(name, false).await {
                tracing::warn!(
                    SANDBOX = name,
                    "undoing a start: {}",
                    crate::error_chain(&err)
                );
            }
            return Err(Error::RuntimeFailed {
                name: name.into(),
                message: "stopped while it was starting".into(),
            });
        }
        tracing::info!(SANDBOX = name, pid, restarts, "sandbox running");
        self.inner
            .logs
            .note(name, &format!("running, pid 1 is host pid {pid}"));
        tokio::spawn(self.clone().monitor(name.to_string(), run_id, pid, tx));
        Ok(())
    }

    /// The bundle's files: resolver files for a proxied sandbox with DNS, the home, the
    /// spec (over `layer`, the merged view, when there is one), the run record.
    fn write_bundle(
        &self,
        profile: &Profile,
        bundle: &Bundle,
        layer: Option<&std::path::Path>,
        session: &spec::SessionEnv,
        (restarts, since): (u32, u64),
    ) -> Result<(), Error> {
        let name = profile.name.as_str();
        let failed = |message: String| Error::RuntimeFailed {
            name: name.into(),
            message,
        };
        let (root, usr_layer) = match (&profile.rootfs.source, layer) {
            (RootfsSource::Host, usr) => (bundle.host_root(), usr),
            (RootfsSource::Path(_), Some(merged)) => (merged.to_path_buf(), None),
            (RootfsSource::Path(p), None) => (p.clone(), None),
        };
        let resolver = if profile.network.mode == NetworkMode::Proxy && profile.network.dns {
            let (resolv, hosts) = spec::resolver_files(&profile.hostname);
            let write = |file: &str, text: String| {
                use std::os::unix::fs::PermissionsExt;
                let path = bundle.dir.join(file);
                std::fs::write(&path, text)?;
                // Readable by every user inside, whatever ids they map to.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            };
            write("resolv.conf", resolv)
                .and_then(|()| write("hosts", hosts))
                .map_err(|e| failed(format!("writing the sandbox's resolver files: {e}")))?;
            Some(bundle.dir.as_path())
        } else {
            None
        };
        let spec_error = |source| Error::Spec {
            name: name.into(),
            source: Box::new(source),
        };
        spec::prepare_home(profile, &self.inner.host).map_err(spec_error)?;
        // The session's X cookie for the display, rewritten for a sandbox of another
        // host name, is the one bound in; none ("") when the session has none for it,
        // never the whole file with the cookies of other displays.
        let mut session = std::borrow::Cow::Borrowed(session);
        if profile.gui.x11 {
            let cookie = spec::write_x11_cookie(&session, &self.inner.host.home, &bundle.dir)
                .map_err(|e| failed(format!("writing the sandbox's X cookie: {e}")))?;
            let path = cookie.map(|p| p.display().to_string()).unwrap_or_default();
            session.to_mut().insert("XAUTHORITY".into(), path);
        }
        let spec = spec::build(
            profile,
            &self.inner.host,
            &root,
            &session,
            resolver,
            usr_layer,
        )
        .map_err(spec_error)?;
        if layer.is_some() {
            let points: Vec<String> = spec
                .mounts()
                .iter()
                .flatten()
                .map(|m| m.destination().display().to_string())
                .collect();
            self.inner
                .layers
                .record_mount_points(name, &points)
                .map_err(|source| Error::Layer {
                    name: name.into(),
                    source,
                })?;
        }
        bundle
            .write_spec(&spec)
            .map_err(|e| failed(crate::error_chain(&e)))?;
        bundle
            .write_record(&RunRecord::new(profile, restarts, since))
            .map_err(|e| failed(crate::error_chain(&e)))
    }

    /// The session bus proxy (its directory is bound in), `runc create`, the network
    /// (between create and start, so the sandbox's first instruction already runs with
    /// it), `runc start`.
    pub(super) async fn create_and_start(
        &self,
        profile: &Profile,
        bundle: &Bundle,
    ) -> Result<u32, Error> {
        let name = profile.name.as_str();
        let failed = |source: crate::runtime::RuntimeError| Error::Runtime {
            name: name.into(),
            source,
        };
        let output =
            Output::for_sandbox(name, &self.inner.logs).map_err(|e| Error::RuntimeFailed {
                name: name.into(),
                message: crate::error_chain(&e),
            })?;
        if let Some(dbus) = &profile.dbus {
            self.inner
                .buses
                .attach(name, dbus)
                .await
                .map_err(|source| Error::Bus {
                    name: name.into(),
                    source,
                })?;
        }
        let pid = self
            .inner
            .runtime
            .create(
                name,
                &bundle.dir,
                output,
                crate::cgroups::in_scope(&self.inner.host.limits, &profile.limits),
            )
            .await
            .map_err(failed)?;
        // The lock and the network are independent: set both up at once.
        let lock = async {
            match profile.security.nested {
                Nested::Off => self.inner.runtime.lock_nested(name, pid).await,
                Nested::Namespaces | Nested::Full => Ok(()),
            }
        };
        let network = async {
            match profile.network.mode {
                NetworkMode::Proxy => self.inner.net.attach(name, pid, &profile.network).await,
                NetworkMode::None => Ok(()),
            }
        };
        let (locked, attached) = tokio::join!(lock, network);
        // Never start a sandbox with the lock missing.
        locked.map_err(failed)?;
        attached.map_err(|source| Error::Network {
            name: name.into(),
            source,
        })?;
        self.inner.runtime.start(name).await.map_err(failed)?;
        Ok(pid)
    }
}
