//! The OCI bundle on disk: `config.json`, an empty root for `rootfs.host`, and the
//! sandbox's record that lets a restarted daemon adopt it. One directory per sandbox under
//! `$XDG_RUNTIME_DIR/sandboxd/bundles/`.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

/// Mount points created in the empty root of a host-rootfs sandbox.
pub const HOST_ROOT_DIRS: &[&str] = &[
    "usr", "etc", "tmp", "var", "home", "run", "root", "proc", "dev", "sys",
];

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bundle record {}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing config.json")]
    Spec(#[source] oci_spec::OciSpecError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Creates the bundle directory afresh (0700). With `host_root`, also an empty root
    /// holding only mount points and the host's merged-/usr symlinks.
    pub fn prepare(dir: PathBuf, host_root: bool) -> Result<Self, BundleError> {
        let bundle = Self { dir };
        bundle.remove()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&bundle.dir)
            .map_err(io_err(&bundle.dir))?;
        if host_root {
            let root = bundle.host_root();
            // Explicit modes: runc gives a tmpfs the mode of its mount point, and the
            // daemon's umask is 0077.
            for d in HOST_ROOT_DIRS {
                let p = root.join(d);
                std::fs::create_dir_all(&p).map_err(io_err(&p))?;
                // runc gives a tmpfs the mode of the directory it is mounted on, whatever
                // its `mode=` says: these modes are the ones the sandbox sees.
                let mode = match *d {
                    "tmp" => 0o1777,
                    "root" => 0o700,
                    _ => 0o755,
                };
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .map_err(io_err(&p))?;
            }
            for link in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
                let host = Path::new("/").join(link);
                if let Ok(target) = std::fs::read_link(&host) {
                    let p = root.join(link);
                    std::os::unix::fs::symlink(&target, &p).map_err(io_err(&p))?;
                } else if host.is_dir() {
                    let p = root.join(link);
                    std::fs::create_dir_all(&p).map_err(io_err(&p))?;
                }
            }
            // The root itself must be searchable by the sandbox's other ids.
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err(&root))?;
        }
        Ok(bundle)
    }

    /// The empty root used for `rootfs.host`.
    pub fn host_root(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn write_spec(&self, spec: &Spec) -> Result<(), BundleError> {
        spec.save(self.dir.join("config.json"))
            .map_err(BundleError::Spec)
    }

    /// Writes `record.json` atomically (write + rename), so a crash never leaves half a record.
    pub fn write_record<T: Serialize>(&self, record: &T) -> Result<(), BundleError> {
        let path = self.dir.join("record.json");
        let tmp = self.dir.join("record.json.tmp");
        let data = serde_json::to_vec_pretty(record).map_err(|source| BundleError::Record {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, data).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    pub fn read_record<T: DeserializeOwned>(&self) -> Result<T, BundleError> {
        let path = self.dir.join("record.json");
        let data = std::fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&data).map_err(|source| BundleError::Record { path, source })
    }

    /// Removes the bundle; absent is fine.
    /// Removes the bundle. A mount point in it stays busy (EBUSY) while a mount namespace
    /// that used it is still going away, so that is retried for up to a second.
    pub fn remove(&self) -> Result<(), BundleError> {
        let mut tries = 0;
        loop {
            match std::fs::remove_dir_all(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&self.dir)(e)),
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_record_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Bundle::prepare(tmp.path().join("x"), true).unwrap();
        assert!(b.host_root().join("usr").is_dir());
        if Path::new("/bin").is_symlink() {
            assert!(b.host_root().join("bin").is_symlink());
        }
        b.write_record(&vec![1, 2, 3]).unwrap();
        assert_eq!(b.read_record::<Vec<i32>>().unwrap(), vec![1, 2, 3]);
        // A second prepare starts from nothing.
        let b = Bundle::prepare(tmp.path().join("x"), false).unwrap();
        assert!(!b.host_root().exists());
        b.remove().unwrap();
        assert!(!b.dir.exists());
        b.remove().unwrap();
    }
}
