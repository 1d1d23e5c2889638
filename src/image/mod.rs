//! OCI images as root file systems, without docker: pulled from a registry
//! ([`registry`]), or read from `docker save` / OCI archives ([`archive`]); blobs kept
//! content-addressed and shared ([`cache`]); layers applied in order, safely, inside the
//! intermediate user namespace ([`layer`]); the image's config kept for a starter profile
//! ([`config`]).
//!
//! The flow for both sources is the same: resolve to an [`Image`] whose blobs are all in the
//! cache and verified, then hand the ordered layer files to `sandboxctl rootfs apply-layers`
//! run as root of the namespace, so that chown(2) lands on the ids the sandbox will see.

pub mod archive;
mod auth;
pub mod cache;
pub mod config;
pub mod layer;
pub mod registry;

use std::fmt;
use std::path::PathBuf;

pub use cache::Cache;
pub use config::ImageConfig;

/// A `sha256:HEX` digest, checked so that it can name a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::Format(format!("digest {s:?}: only sha256 is supported")))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ImageError::Format(format!(
                "digest {s:?} is not sha256 and 64 hex digits"
            )));
        }
        Ok(Digest(s.to_string()))
    }

    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Digest(format!("sha256:{}", hex(&sha2::Sha256::digest(data))))
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One layer of an image: its blob in the cache.
#[derive(Debug, Clone)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub path: PathBuf,
}

/// An image whose blobs are all in the cache, verified.
#[derive(Debug, Clone)]
pub struct Image {
    /// Where it came from (a reference or an archive's path).
    pub source: String,
    /// The manifest's digest (for a pull: what the registry named; for an archive: of the
    /// manifest as stored).
    pub manifest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Every blob it uses (what `rootfs prune` keeps).
    pub fn blobs(&self) -> Vec<Digest> {
        let mut out = vec![self.config_digest.clone()];
        out.extend(self.layers.iter().map(|l| l.digest.clone()));
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Format(String),
    #[error("blob {digest}: {why}")]
    Blob { digest: Digest, why: String },
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{0}")]
    Registry(String),
}

impl ImageError {
    pub(crate) fn io(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> ImageError {
        let what = what.to_string();
        move |err| ImageError::Io { what, err }
    }
}

/// Layer media types this can unpack (compression is read from the bytes).
pub(crate) fn is_layer_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_naming_files() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().hex(), "a".repeat(64));
        for bad in [
            "sha512:00",
            "sha256:../../etc/passwd",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha256:{}/", "a".repeat(63)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
