//! Applies image layers to a tree, in order, the way the OCI image spec says: whiteouts
//! (`.wh.NAME`) delete, opaque whiteouts (`.wh..wh..opq`) hide what lower layers put in a
//! directory, hard links are one inode, device nodes are skipped (a rootless sandbox
//! cannot use them), xattrs are set where the kernel lets this user.
//!
//! Layers are untrusted. Every path is resolved with openat2(2) `RESOLVE_IN_ROOT` from a
//! descriptor of the tree, so `..`, absolute paths, and symlinks (planted by an earlier
//! entry, pointing anywhere) all stay inside it; an entry whose own name has `..` is
//! refused; the last component is never followed (an existing symlink is replaced, not
//! written through). Runs as root of the intermediate user namespace, so the owners a
//! layer names become the ids a sandbox sees.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::ImageError;

/// What was left out, to tell the user once per pull.
#[derive(Debug, Default)]
pub struct Notes {
    pub devices: Vec<String>,
    pub xattrs: usize,
    pub owners: usize,
}

impl Notes {
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![];
        if !self.devices.is_empty() {
            let shown: Vec<&str> = self.devices.iter().take(5).map(String::as_str).collect();
            out.push(format!(
                "{} device node(s) skipped, a rootless sandbox cannot use them: {}{}",
                self.devices.len(),
                shown.join(" "),
                if self.devices.len() > 5 { " …" } else { "" }
            ));
        }
        if self.xattrs > 0 {
            out.push(format!(
                "{} extended attribute(s) not set: the kernel does not let this user set them",
                self.xattrs
            ));
        }
        if self.owners > 0 {
            out.push(format!(
                "{} file(s) owned by ids beyond your subordinate range kept as root",
                self.owners
            ));
        }
        out
    }
}

/// Applies the layer in file `layer` (tar, gzip or zstd: read from its first bytes) to
/// the tree at `root`.
pub fn apply(root: &Path, layer: &Path, notes: &mut Notes) -> Result<(), ImageError> {
    let fd = openat(
        None,
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::Io {
        what: root.display().to_string(),
        err: e.into(),
    })?;
    let file = File::open(layer).map_err(ImageError::io(layer.display()))?;
    let mut applier = Applier {
        root: own(fd),
        cached: None,
        created: HashSet::new(),
        notes,
    };
    let name = layer
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut archive =
        tar::Archive::new(decompressed(file).map_err(ImageError::io(layer.display()))?);
    let entries = archive
        .entries()
        .map_err(ImageError::io(format!("layer {name}")))?;
    for entry in entries {
        let mut entry = entry.map_err(ImageError::io(format!("layer {name}")))?;
        let path = entry
            .path()
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| PathBuf::from("?"));
        applier.entry(&mut entry).map_err(|why| {
            ImageError::Format(format!("layer {name}: entry {}: {why}", path.display()))
        })?;
    }
    Ok(())
}

/// The stream of a layer file, decompressed by what its first bytes say it is.
pub fn decompressed(file: File) -> std::io::Result<Box<dyn Read>> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let magic = r.fill_buf()?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The entry's path as components below the root. A leading `/` and `.` mean the root
/// (tar's convention); `..` is refused: no honest layer needs it.
fn clean(path: &Path) -> Result<Vec<OsString>, String> {
    let mut out = vec![];
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err("the path goes up with `..`: refused".into())
            }
        }
    }
    Ok(out)
}

fn joined(comps: &[OsString]) -> Vec<u8> {
    comps
        .iter()
        .map(|c| c.as_bytes())
        .collect::<Vec<_>>()
        .join(&b'/')
}

struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

fn meta<R: Read>(e: &mut tar::Entry<R>) -> Meta {
    let h = e.header();
    let mut m = Meta {
        uid: h.uid().unwrap_or(0).try_into().unwrap_or(u32::MAX),
        gid: h.gid().unwrap_or(0).try_into().unwrap_or(u32::MAX),
        mode: h.mode().unwrap_or(0o644),
        mtime: h.mtime().unwrap_or(0).try_into().unwrap_or(0),
        xattrs: vec![],
    };
    if let Ok(Some(pax)) = e.pax_extensions() {
        for ext in pax.flatten() {
            let (Ok(key), value) = (ext.key(), ext.value_bytes()) else {
                continue;
            };
            let num = || {
                std::str::from_utf8(value)
                    .ok()?
                    .split('.')
                    .next()?
                    .parse::<i64>()
                    .ok()
            };
            match key {
                "uid" => m.uid = num().and_then(|n| n.try_into().ok()).unwrap_or(u32::MAX),
                "gid" => m.gid = num().and_then(|n| n.try_into().ok()).unwrap_or(u32::MAX),
                "mtime" => m.mtime = num().unwrap_or(0),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        m.xattrs.push((name.into(), value.to_vec()));
                    }
                }
            }
        }
    }
    m
}

struct Applier<'a> {
    root: OwnedFd,
    /// The last parent directory opened (most entries share their predecessor's).
    cached: Option<(Vec<OsString>, OwnedFd)>,
    /// Paths this layer wrote, which an opaque whiteout in it must keep.
    created: HashSet<Vec<u8>>,
    notes: &'a mut Notes,
}

fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

impl Applier<'_> {
    /// Opens directory `comps` of the tree (`O_PATH`), resolved inside it.
    fn open_dir(&self, comps: &[OsString]) -> nix::Result<OwnedFd> {
        let p: PathBuf = if comps.is_empty() {
            PathBuf::from(".")
        } else {
            comps.iter().collect()
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(in_root());
        openat2(self.root.as_raw_fd(), &p, how).map(own)
    }

    /// The parent directory for an entry, made (0755, root's) where the layer did not.
    fn parent(&mut self, comps: &[OsString]) -> Result<RawFd, String> {
        if let Some((p, fd)) = &self.cached {
            if p == comps {
                return Ok(fd.as_raw_fd());
            }
        }
        let fd = match self.open_dir(comps) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => self.make_dirs(comps)?,
            Err(e) => return Err(format!("its directory cannot be opened: {e}")),
        };
        let raw = fd.as_raw_fd();
        self.cached = Some((comps.to_vec(), fd));
        Ok(raw)
    }

    fn make_dirs(&self, comps: &[OsString]) -> Result<OwnedFd, String> {
        for i in 1..=comps.len() {
            match self.open_dir(&comps[..i]) {
                Ok(fd) if i == comps.len() => return Ok(fd),
                Ok(_) => continue,
                Err(Errno::ENOENT) => {
                    let up = self.open_dir(&comps[..i - 1]).map_err(|e| e.to_string())?;
                    match mkdirat(
                        Some(up.as_raw_fd()),
                        comps[i - 1].as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(format!("making its directory: {e}")),
                    }
                }
                Err(e) => return Err(format!("its directory cannot be opened: {e}")),
            }
        }
        self.open_dir(comps)
            .map_err(|e| format!("its directory cannot be made: {e}"))
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>) -> Result<(), String> {
        let path = e.path().map_err(|e| e.to_string())?.into_owned();
        let comps = clean(&path)?;
        let kind = e.header().entry_type();
        let Some((name, dir)) = comps.split_last() else {
            // The root itself: its owner and mode, nothing else.
            if kind.is_dir() {
                let m = meta(e);
                self.own_and_mode(self.root.as_raw_fd(), &m);
            }
            return Ok(());
        };
        let bytes = name.as_bytes();
        if bytes == b".wh..wh..opq" {
            self.cached = None;
            return self.opaque(dir);
        }
        if let Some(hidden) = bytes.strip_prefix(b".wh.") {
            self.cached = None;
            if hidden.starts_with(b".wh.") {
                return Ok(()); // other aufs bookkeeping: nothing to apply
            }
            return self.whiteout(dir, OsStr::from_bytes(hidden));
        }
        if !(kind.is_file() || kind.is_hard_link() || kind == tar::EntryType::Continuous) {
            self.cached = None;
        }
        // The entry and the folders above it are this layer's: an opaque whiteout that
        // comes after them in the archive keeps them.
        for n in 1..=comps.len() {
            self.created.insert(joined(&comps[..n]));
        }
        let parent = self.parent(dir)?;
        let m = meta(e);
        use tar::EntryType as T;
        match kind {
            T::Directory => self.directory(parent, name, &m),
            T::Regular | T::Continuous | T::GNUSparse => self.file(parent, name, &m, e),
            T::Symlink => {
                let target = e
                    .link_name()
                    .map_err(|e| e.to_string())?
                    .ok_or("a symlink without a target")?;
                remove_existing(parent, name)?;
                symlinkat(target.as_ref(), Some(parent), name.as_os_str())
                    .map_err(|e| format!("symlink: {e}"))?;
                self.chown_at(parent, name, &m);
                Ok(())
            }
            T::Link => {
                let target = e
                    .link_name()
                    .map_err(|e| e.to_string())?
                    .ok_or("a hard link without a target")?;
                self.hard_link(parent, name, &target)
            }
            T::Fifo => {
                remove_existing(parent, name)?;
                mknodat(
                    Some(parent),
                    name.as_os_str(),
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(m.mode & 0o7777),
                    0,
                )
                .map_err(|e| format!("fifo: {e}"))?;
                self.chown_at(parent, name, &m);
                Ok(())
            }
            T::Char | T::Block => {
                self.notes
                    .devices
                    .push(format!("/{}", path.display()).replace("//", "/"));
                Ok(())
            }
            other => Err(format!(
                "entry type {other:?} is not part of an image layer"
            )),
        }
    }

    fn own_and_mode(&mut self, fd: RawFd, m: &Meta) {
        if nix::unistd::fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid))).is_err()
        {
            self.notes.owners += 1;
        }
        // After chown, which clears setuid bits.
        let _ = nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(m.mode & 0o7777));
    }

    fn chown_at(&mut self, parent: RawFd, name: &OsStr, m: &Meta) {
        if fchownat(
            Some(parent),
            name,
            Some(Uid::from_raw(m.uid)),
            Some(Gid::from_raw(m.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_err()
        {
            self.notes.owners += 1;
        }
    }

    fn directory(&mut self, parent: RawFd, name: &OsStr, m: &Meta) -> Result<(), String> {
        match fstatat(Some(parent), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {}
            Ok(_) => {
                remove_all(parent, name).map_err(|e| format!("replacing it: {e}"))?;
                mkdirat(Some(parent), name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| format!("mkdir: {e}"))?;
            }
            Err(Errno::ENOENT) => mkdirat(Some(parent), name, Mode::from_bits_truncate(0o700))
                .map_err(|e| format!("mkdir: {e}"))?,
            Err(e) => return Err(e.to_string()),
        }
        let fd = openat(
            Some(parent),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("opening it: {e}"))?;
        let fd = own(fd);
        self.own_and_mode(fd.as_raw_fd(), m);
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        parent: RawFd,
        name: &OsStr,
        m: &Meta,
        data: &mut R,
    ) -> Result<(), String> {
        remove_existing(parent, name)?;
        let fd = openat(
            Some(parent),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| format!("creating it: {e}"))?;
        let mut f = File::from(own(fd));
        std::io::copy(data, &mut f).map_err(|e| format!("writing it: {e}"))?;
        self.own_and_mode(f.as_raw_fd(), m);
        for (key, value) in &m.xattrs {
            if set_xattr(&f, key, value).is_err() {
                self.notes.xattrs += 1;
            }
        }
        let t = nix::sys::time::TimeSpec::new(m.mtime, 0);
        let _ = nix::sys::stat::futimens(f.as_raw_fd(), &t, &t);
        Ok(())
    }

    fn hard_link(&self, parent: RawFd, name: &OsStr, target: &Path) -> Result<(), String> {
        let t = clean(target).map_err(|e| format!("hard link target: {e}"))?;
        let Some((tname, tdir)) = t.split_last() else {
            return Err("a hard link to the root".into());
        };
        let tparent = self.open_dir(tdir).map_err(|e| {
            format!(
                "hard link to {}, which is not in the image: {e}",
                target.display()
            )
        })?;
        remove_existing(parent, name)?;
        linkat(
            Some(tparent.as_raw_fd()),
            tname.as_os_str(),
            Some(parent),
            name,
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(|e| format!("hard link to {}: {e}", target.display()))
    }

    fn whiteout(&self, dir: &[OsString], hidden: &OsStr) -> Result<(), String> {
        match self.open_dir(dir) {
            Ok(fd) => remove_all(fd.as_raw_fd(), hidden).map_err(|e| format!("whiteout: {e}")),
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(format!("whiteout: {e}")),
        }
    }

    /// Empties `dir` of everything lower layers put there.
    fn opaque(&self, dir: &[OsString]) -> Result<(), String> {
        let fd = match self.open_dir(dir) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(format!("opaque whiteout: {e}")),
        };
        self.keep_own(fd.as_raw_fd(), joined(dir))
            .map_err(|e| format!("opaque whiteout: {e}"))
    }

    /// Removes from folder `fd` (path `path`) everything lower layers put there: what this
    /// layer wrote stays, and folders it wrote into are searched in turn.
    fn keep_own(&self, fd: RawFd, path: Vec<u8>) -> nix::Result<()> {
        for child in children(fd)? {
            let mut full = path.clone();
            if !full.is_empty() {
                full.push(b'/');
            }
            full.extend_from_slice(child.as_bytes());
            if !self.created.contains(&full) {
                remove_all(fd, &child)?;
                continue;
            }
            let sub = openat(
                Some(fd),
                child.as_os_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
            if let Ok(sub) = sub {
                let sub = own(sub);
                self.keep_own(sub.as_raw_fd(), full)?;
            }
        }
        Ok(())
    }
}

fn set_xattr(f: &File, key: &OsStr, value: &[u8]) -> std::io::Result<()> {
    let key = std::ffi::CString::new(key.as_bytes())?;
    // SAFETY: valid descriptor, NUL-terminated name, and a buffer of the length given.
    let r = unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The names in directory `dirfd` (an `O_PATH` descriptor is fine).
fn children(dirfd: RawFd) -> nix::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::openat(
        Some(dirfd),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(d.iter()
        .flatten()
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
        .filter(|n| n != "." && n != "..")
        .collect())
}

/// Removes `name` in `parent` if it is not a directory; a directory is removed whole.
fn remove_existing(parent: RawFd, name: &OsStr) -> Result<(), String> {
    remove_all(parent, name).map_err(|e| format!("replacing what was there: {e}"))
}

/// Removes `name` in `parent`, recursively, never following a symlink.
fn remove_all(parent: RawFd, name: &OsStr) -> nix::Result<()> {
    match unlinkat(Some(parent), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let fd = own(openat(
        Some(parent),
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?);
    for child in children(fd.as_raw_fd())? {
        remove_all(fd.as_raw_fd(), &child)?;
    }
    unlinkat(Some(parent), name, UnlinkatFlags::RemoveDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer file of `(path, kind, data or link target)` entries, in this order.
    fn layer(dir: &Path, name: &str, entries: &[(&str, tar::EntryType, &str)]) -> PathBuf {
        let path = dir.join(name);
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        for (p, kind, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_size(if kind.is_file() { data.len() as u64 } else { 0 });
            // Names written raw: the builder refuses `..`, which is what a hostile layer has.
            h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
            if kind.is_symlink() || kind.is_hard_link() {
                h.as_old_mut().linkname[..data.len()].copy_from_slice(data.as_bytes());
            }
            h.set_cksum();
            let body: &[u8] = if kind.is_file() { data.as_bytes() } else { &[] };
            b.append(&h, body).unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn an_opaque_whiteout_after_the_layers_own_files_keeps_them() {
        use tar::EntryType as T;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let lower = layer(
            tmp.path(),
            "lower",
            &[
                ("d", T::Directory, ""),
                ("d/old", T::Regular, "old"),
                ("d/sub", T::Directory, ""),
                ("d/sub/lower", T::Regular, "lower"),
                ("gone", T::Regular, "x"),
            ],
        );
        let upper = layer(
            tmp.path(),
            "upper",
            &[
                ("d/sub/new", T::Regular, "new"),
                ("d/.wh..wh..opq", T::Regular, ""),
                (".wh.gone", T::Regular, ""),
                ("link", T::Link, "d/sub/new"),
                ("up", T::Symlink, "/"),
                ("up/through", T::Regular, "inside"),
            ],
        );
        let mut notes = Notes::default();
        apply(&root, &lower, &mut notes).unwrap();
        apply(&root, &upper, &mut notes).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("d/sub/new")).unwrap(),
            "new"
        );
        assert!(!root.join("d/old").exists() && !root.join("d/sub/lower").exists());
        assert!(!root.join("gone").exists());
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            std::fs::metadata(root.join("link")).unwrap(),
            std::fs::metadata(root.join("d/sub/new")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(
            std::fs::read_to_string(root.join("through")).unwrap(),
            "inside"
        );

        let evil = layer(
            tmp.path(),
            "evil",
            &[("a/../../escaped", T::Regular, "out")],
        );
        let e = apply(&root, &evil, &mut notes).unwrap_err().to_string();
        assert!(e.contains("`..`"), "{e}");
        assert!(!tmp.path().join("escaped").exists());
    }

    #[test]
    fn paths_stay_below_the_root() {
        assert_eq!(
            clean(Path::new("/etc/./passwd")).unwrap(),
            vec![OsString::from("etc"), "passwd".into()]
        );
        assert!(clean(Path::new("./")).unwrap().is_empty());
        assert!(clean(Path::new("a/../../etc")).is_err());
    }
}
