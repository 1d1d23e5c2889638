//! The blob cache: `$XDG_CACHE_HOME/sandboxd/blobs/sha256/HEX`, content-addressed and
//! shared by every image. A blob appears under its name only once its bytes hashed to it
//! and its size matched; until then it is `HEX.partial`, locked by the one process writing
//! it, and a later pull resumes from what that file holds.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::Digest as _;

use super::{hex, Digest, ImageError};

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The user's cache (`$XDG_CACHE_HOME/sandboxd/blobs`).
    pub fn user() -> Self {
        Self::at(crate::paths::cache_home().join("sandboxd/blobs"))
    }

    pub fn at(dir: PathBuf) -> Self {
        Cache { dir }
    }

    fn sha_dir(&self) -> PathBuf {
        self.dir.join("sha256")
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.sha_dir().join(d.hex())
    }

    pub fn has(&self, d: &Digest, size: u64) -> bool {
        std::fs::metadata(self.path(d)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Starts writing blob `d` of `size` bytes, or resumes a partial one: the writer's
    /// [`BlobWriter::offset`] says how many bytes are already there (and hashed).
    pub fn writer(&self, d: &Digest, size: Option<u64>) -> Result<BlobWriter, ImageError> {
        let dir = self.sha_dir();
        std::fs::create_dir_all(&dir).map_err(ImageError::io(dir.display()))?;
        let partial = dir.join(format!("{}.partial", d.hex()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .map_err(ImageError::io(partial.display()))?;
        // Two pulls of one blob take turns; the second finds it done.
        let file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| ImageError::Io {
            what: format!("locking {}", partial.display()),
            err: e.into(),
        })?;
        let mut w = BlobWriter {
            file,
            hasher: sha2::Sha256::new(),
            written: 0,
            digest: d.clone(),
            size,
            partial,
            done: self.path(d),
        };
        w.rehash()?;
        Ok(w)
    }

    /// Copies `from` into the cache as `d`, verifying it (an archive's blob).
    pub fn insert(
        &self,
        d: &Digest,
        size: Option<u64>,
        from: &mut dyn Read,
    ) -> Result<PathBuf, ImageError> {
        if size.is_some_and(|s| self.has(d, s)) {
            return Ok(self.path(d));
        }
        let mut w = self.writer(d, size)?;
        w.restart()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from
                .read(&mut buf)
                .map_err(ImageError::io(format!("reading blob {d}")))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        w.finish()
    }

    /// Hashes a stream into the cache under whatever digest it has (a `docker save`
    /// layer, named by path only).
    pub fn insert_unnamed(
        &self,
        from: &mut dyn Read,
    ) -> Result<(Digest, u64, PathBuf), ImageError> {
        let dir = self.sha_dir();
        std::fs::create_dir_all(&dir).map_err(ImageError::io(dir.display()))?;
        let tmp = tempfile_in(&dir)?;
        let (mut file, tmp_path) = tmp;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        let result = (|| {
            loop {
                let n = from
                    .read(&mut buf)
                    .map_err(ImageError::io("reading an archive member"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(ImageError::io(tmp_path.display()))?;
                size += n as u64;
            }
            let d = Digest::parse(&format!("sha256:{}", hex(&hasher.finalize())))?;
            let done = self.path(&d);
            std::fs::rename(&tmp_path, &done).map_err(ImageError::io(done.display()))?;
            Ok((d, size, done))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        result
    }

    /// Removes every blob (and partial) not in `keep`: (count, bytes).
    pub fn prune(&self, keep: &HashSet<Digest>) -> Result<(usize, u64), ImageError> {
        let dir = self.sha_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => {
                return Err(ImageError::Io {
                    what: dir.display().to_string(),
                    err: e,
                })
            }
        };
        let (mut count, mut bytes) = (0, 0);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let kept = Digest::parse(&format!("sha256:{name}")).is_ok_and(|d| keep.contains(&d));
            if kept {
                continue;
            }
            // A partial being written by a running pull is locked: leave it.
            if name.ends_with(".partial") {
                let Ok(f) = File::open(e.path()) else {
                    continue;
                };
                if Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err() {
                    continue;
                }
            }
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(e.path()).is_ok() {
                count += 1;
                bytes += len;
            }
        }
        Ok((count, bytes))
    }
}

fn tempfile_in(dir: &Path) -> Result<(File, PathBuf), ImageError> {
    for n in 0..1000u32 {
        let p = dir.join(format!(".unnamed-{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((f, p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(ImageError::Io {
                    what: p.display().to_string(),
                    err: e,
                })
            }
        }
    }
    Err(ImageError::Format(format!(
        "no temporary file name free in {}",
        dir.display()
    )))
}

/// A blob being written: hashed as it goes, checked against its digest and size at the end.
pub struct BlobWriter {
    file: Flock<File>,
    hasher: sha2::Sha256,
    written: u64,
    digest: Digest,
    size: Option<u64>,
    partial: PathBuf,
    done: PathBuf,
}

impl BlobWriter {
    pub fn offset(&self) -> u64 {
        self.written
    }

    pub fn is_complete(&self) -> bool {
        self.done.is_file()
    }

    fn fail(&self, why: String) -> ImageError {
        ImageError::Blob {
            digest: self.digest.clone(),
            why,
        }
    }

    /// Feeds what an earlier, interrupted writer left to the hash (or drops it when it
    /// cannot be the start of this blob).
    fn rehash(&mut self) -> Result<(), ImageError> {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if self.size.is_some_and(|s| len > s) {
            return self.restart();
        }
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(ImageError::io(self.partial.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = self
                .file
                .read(&mut buf)
                .map_err(ImageError::io(self.partial.display()))?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
            total += n as u64;
        }
        self.written = total;
        Ok(())
    }

    /// Starts from nothing (the server sent the whole blob, not the rest).
    pub fn restart(&mut self) -> Result<(), ImageError> {
        self.file
            .set_len(0)
            .map_err(ImageError::io(self.partial.display()))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(ImageError::io(self.partial.display()))?;
        self.hasher = sha2::Sha256::new();
        self.written = 0;
        Ok(())
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        if let Some(size) = self.size {
            if self.written + bytes.len() as u64 > size {
                let _ = self.restart();
                return Err(self.fail(format!("more bytes than the {size} its descriptor says")));
            }
        }
        self.hasher.update(bytes);
        self.file
            .write_all(bytes)
            .map_err(ImageError::io(self.partial.display()))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Checks size and digest; on success the blob appears under its name. On a mismatch
    /// the partial is removed: nothing corrupt stays in the cache.
    pub fn finish(mut self) -> Result<PathBuf, ImageError> {
        let got = Digest(format!(
            "sha256:{}",
            hex(&std::mem::take(&mut self.hasher).finalize())
        ));
        let bad = if self.size.is_some_and(|s| s != self.written) {
            Some(format!(
                "{} bytes, not the {} its descriptor says",
                self.written,
                self.size.unwrap_or(0)
            ))
        } else if got != self.digest {
            Some(format!(
                "content has digest {got}: corrupt or not this blob"
            ))
        } else {
            None
        };
        if let Some(why) = bad {
            let _ = std::fs::remove_file(&self.partial);
            return Err(self.fail(why));
        }
        self.file
            .sync_all()
            .map_err(ImageError::io(self.partial.display()))?;
        std::fs::rename(&self.partial, &self.done).map_err(ImageError::io(self.done.display()))?;
        Ok(self.done.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_named_only_when_its_bytes_match() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().to_path_buf());
        let data = b"hello blob";
        let d = Digest::of(data);
        // Interrupted after 5 bytes, resumed.
        let mut w = cache.writer(&d, Some(data.len() as u64)).unwrap();
        w.write(&data[..5]).unwrap();
        drop(w);
        let mut w = cache.writer(&d, Some(data.len() as u64)).unwrap();
        assert_eq!(w.offset(), 5);
        w.write(&data[5..]).unwrap();
        let path = w.finish().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
        assert!(cache.has(&d, data.len() as u64));

        // Wrong bytes: an error naming the blob, and no file of either name.
        let other = Digest::of(b"other!!!!!");
        let mut w = cache.writer(&other, Some(10)).unwrap();
        w.write(b"0123456789").unwrap();
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains(other.as_str()) && e.contains("corrupt"), "{e}");
        assert!(!cache.path(&other).exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("sha256"))
                .unwrap()
                .count(),
            1
        );

        // Too many bytes are refused at once.
        let mut w = cache.writer(&other, Some(3)).unwrap();
        assert!(w.write(b"0123").is_err());
        drop(w);

        // Prune keeps what is named.
        let keep: HashSet<Digest> = [d.clone()].into();
        assert_eq!(cache.prune(&keep).unwrap().0, 1);
        assert!(cache.has(&d, data.len() as u64));
        assert_eq!(cache.prune(&HashSet::new()).unwrap().0, 1);
        assert!(!cache.has(&d, data.len() as u64));
    }
}
