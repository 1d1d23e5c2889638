//! `systemctl --user reload sandboxd` (SIGHUP): re-reads `sandboxd.toml` and the profiles
//! without stopping any sandbox. What can change live does (the DNS servers, running
//! sandboxes' network policies); what cannot is named in the log and `STATUS=` with the
//! restart it needs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::DaemonConfig;
use crate::proxy::dns::Upstream;
use crate::runtime::Runtime;
use crate::supervisor::Supervisor;

pub struct Reloader<R> {
    pub path: PathBuf,
    /// The configuration in force.
    pub config: DaemonConfig,
    pub upstream: Arc<Upstream>,
    pub sup: Supervisor<R>,
}

impl<R: Runtime> Reloader<R> {
    /// Reloads at every SIGHUP, for the life of the daemon.
    pub async fn run(mut self) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot catch SIGHUP: `systemctl --user reload sandboxd` will not work");
            return;
        };
        while hup.recv().await.is_some() {
            let summary = self.reload().await;
            tracing::info!("reloaded: {summary}");
            crate::daemon::notify(&[sd_notify::NotifyState::Status(&format!(
                "reloaded: {summary}"
            ))]);
        }
    }

    /// Applies what changed; returns what it did, for people.
    pub async fn reload(&mut self) -> String {
        let new = match DaemonConfig::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                let why = crate::error_chain(&e);
                tracing::warn!("{why}");
                return format!(
                    "{} not applied (the old settings stay): {why}",
                    self.path.display()
                );
            }
        };
        let mut done = Vec::new();
        if new.dns_servers != self.config.dns_servers {
            let servers = Upstream::from_config(&new.dns_server_addrs()).servers();
            let shown: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
            self.upstream.set_servers(servers);
            done.push(format!("dns_servers now {}", shown.join(", ")));
        }
        let mut restart = Vec::new();
        if new.runc != self.config.runc {
            restart.push("runc");
        }
        if new.init != self.config.init {
            restart.push("init");
        }
        if new.profile_dirs != self.config.profile_dirs {
            restart.push("profile_dirs");
        }
        if new.log_size != self.config.log_size {
            restart.push("log_size");
        }
        // Only what was applied becomes the configuration in force.
        self.config.dns_servers = new.dns_servers;
        let invalid: Vec<String> = self
            .sup
            .store()
            .list()
            .into_iter()
            .filter(|p| !p.error.is_empty())
            .map(|p| {
                tracing::warn!(PROFILE = p.name.as_str(), "invalid profile: {}", p.error);
                p.name
            })
            .collect();
        let updated = self.sup.reload_network().await;
        if !updated.is_empty() {
            done.push(format!("network policy of {} applied", updated.join(", ")));
        }
        if !invalid.is_empty() {
            done.push(format!("invalid profiles: {}", invalid.join(", ")));
        }
        if !restart.is_empty() {
            done.push(format!(
                "{} changed: applied at the next `systemctl --user restart sandboxd` (which stops every sandbox)",
                restart.join(", ")
            ));
        }
        if done.is_empty() {
            "nothing changed".into()
        } else {
            done.join("; ")
        }
    }
}
