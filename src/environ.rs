//! The user session's environment as it is *now*: the systemd user manager's
//! `Environment` (compositors and login scripts update it with `systemctl --user
//! import-environment` / `dbus-update-activation-environment` after the daemon started),
//! laid over the daemon's own environment.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::spec::SessionEnv;

/// Where the supervisor gets the session environment at each sandbox start.
pub trait SessionSource: Send + Sync + 'static {
    fn current(&self) -> Pin<Box<dyn Future<Output = SessionEnv> + Send + '_>>;
}

/// A fixed environment (tests, or a daemon without a user manager).
impl SessionSource for SessionEnv {
    fn current(&self) -> Pin<Box<dyn Future<Output = SessionEnv> + Send + '_>> {
        Box::pin(async move { self.clone() })
    }
}

/// The systemd user manager's environment over the daemon's own.
pub struct ManagerEnvironment {
    pub conn: zbus::Connection,
}

impl ManagerEnvironment {
    async fn manager_env(&self) -> zbus::Result<Vec<String>> {
        let proxy: zbus::Proxy<'_> = zbus::proxy::Builder::new(&self.conn)
            .destination("org.freedesktop.systemd1")?
            .path("/org/freedesktop/systemd1")?
            .interface("org.freedesktop.systemd1.Manager")?
            // The manager does not announce changes of Environment: always ask.
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        proxy.get_property("Environment").await
    }
}

impl SessionSource for ManagerEnvironment {
    fn current(&self) -> Pin<Box<dyn Future<Output = SessionEnv> + Send + '_>> {
        Box::pin(async move {
            let mut env: SessionEnv = std::env::vars().collect();
            match tokio::time::timeout(Duration::from_secs(2), self.manager_env()).await {
                Ok(Ok(vars)) => {
                    for v in vars {
                        if let Some((k, val)) = v.split_once('=') {
                            env.insert(k.to_string(), val.to_string());
                        }
                    }
                }
                Ok(Err(e)) => tracing::debug!("no user manager environment: {e}"),
                Err(_) => tracing::debug!("the user manager did not answer for its environment"),
            }
            env
        })
    }
}
