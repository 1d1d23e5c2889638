//! A sandbox's copy-on-write layer, seen from the supervisor: mounted before the spec,
//! dropped (or kept) after the end, read for `diff`.

use super::*;

impl<R: Runtime> Supervisor<R> {
    /// The copy-on-write view of a `rootfs.overlay` profile's root (or host `/usr`),
    /// mounted; `None` without the key.
    pub(super) async fn mount_layer(&self, profile: &Profile) -> Result<Option<PathBuf>, Error> {
        if !profile.rootfs.overlay {
            return Ok(None);
        }
        let (lower, prefix) = match &profile.rootfs.source {
            RootfsSource::Path(p) => (p.clone(), "/"),
            RootfsSource::Host => (PathBuf::from("/usr"), "/usr"),
        };
        self.inner
            .layers
            .mount(&profile.name, &lower, prefix, profile.rootfs.keep_changes)
            .await
            .map(Some)
            .map_err(|source| Error::Layer {
                name: profile.name.clone(),
                source,
            })
    }

    /// Unmounts sandbox `name`'s layer, and removes it unless it is kept.
    pub(super) async fn drop_layer(&self, name: &str) -> Result<(), crate::runtime::LayerError> {
        let layers = &self.inner.layers;
        if !layers.exists(name) {
            Ok(())
        } else if layers.is_kept(name) {
            layers.unmount(name).await
        } else {
            layers.remove(name).await
        }
    }

    /// What sandbox `name` changed in its root: its copy-on-write layer, running or kept.
    pub async fn diff(&self, name: &str) -> Result<Vec<crate::runtime::Change>, Error> {
        validate_name(name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if !self.inner.layers.exists(name) {
            return Err(match self.get(name) {
                Ok(_) => Error::InvalidArgument(format!(
                    "sandbox {name:?} has no copy-on-write layer: its changes are made in place (rootfs.overlay = true gives one)"
                )),
                Err(e) => e,
            });
        }
        self.inner
            .layers
            .diff(name)
            .await
            .map_err(|source| Error::Layer {
                name: name.into(),
                source,
            })
    }
}
