//! `sandboxctl rootfs import|list|remove`: root file systems under
//! `$XDG_DATA_HOME/sandboxd/rootfs/NAME`, unpacked with their owners shifted into the ids a
//! sandbox sees, so that inside, files belong to whoever the archive says.
//!
//! Unpacking runs `tar` as root of the same intermediate user namespace the daemon runs
//! runc in (0 → you, 1.. → your subordinate ids), so tar's chown(2) lands on the right
//! host ids. For a "keep-id" root (`--user`), owners are re-mapped once more so that the
//! profile's user is you. Each root records its mapping in `NAME.json` beside it; the
//! daemon refuses a profile whose mapping does not fit. The root appears atomically
//! (unpacked beside it, then renamed): an interrupted import leaves no partial root.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::image::registry::Platform;
use crate::image::{archive, Cache, Image};
use crate::profile::{validate_name, User};
use crate::runtime::IntermediateUserns;
use crate::spec::{resolve, HostContext, ImageRecord, RootfsRecord, SUBORDINATE_SPAN};

pub fn rootfs_dir() -> PathBuf {
    crate::paths::data_home().join("sandboxd/rootfs")
}

fn intermediate() -> Result<IntermediateUserns, String> {
    let host = HostContext::current(PathBuf::new());
    match (host.subuid, host.subgid) {
        (Some(u), Some(g)) => IntermediateUserns::create(host.uid, host.gid, u, g, SUBORDINATE_SPAN, true).map_err(|e| crate::error_chain(&e)),
        _ => Err("your user has no subordinate ids in /etc/subuid and /etc/subgid; without them an archive's owners cannot be kept (sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER)".into()),
    }
}

fn inside(ns: &IntermediateUserns, program: &str) -> Command {
    let w = ns.wrapper();
    let mut c = Command::new(&w[0]);
    c.args(&w[1..]).arg(program);
    c
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes a tree whose files may belong to subordinate ids.
fn remove_tree(ns: &IntermediateUserns, path: &Path) -> Result<(), String> {
    if !path.exists() {
        return Ok(());
    }
    let mut rm = inside(ns, "rm");
    rm.arg("-rf").arg("--one-file-system").arg(path);
    run(rm, &format!("removing {}", path.display()))
}

/// Removes unpack folders of imports whose process is gone (killed midway).
fn clean_stale(ns: &IntermediateUserns, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".import-") else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = remove_tree(ns, &e.path());
        }
    }
}

/// The `tar` decompression flag for a file, from its first bytes.
fn compression(file: &Path) -> Option<&'static str> {
    let mut magic = [0u8; 6];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut magic))
        .ok()?;
    let m = &magic[..n];
    if m.starts_with(&[0x1f, 0x8b]) {
        Some("-z")
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("-J")
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("--zstd")
    } else if m.starts_with(b"BZh") {
        Some("-j")
    } else {
        None
    }
}

/// Streams `source` (a tar file, possibly compressed, or a directory) into `tar -x` run
/// inside the namespace, showing progress for archives on a terminal.
fn unpack(ns: &IntermediateUserns, source: &Path, into: &Path) -> Result<(), String> {
    let mut tar = inside(ns, "tar");
    tar.args([
        "--numeric-owner",
        "--same-permissions",
        "--xattrs",
        "-x",
        "-f",
        "-",
        "-C",
    ])
    .arg(into);
    if source.is_dir() {
        // Read as you (the tree's real owners are recorded numerically), unpacked as root
        // of the namespace.
        let mut pack = Command::new("tar");
        pack.args(["--numeric-owner", "-c", "-f", "-", "-C"])
            .arg(source)
            .arg(".");
        pack.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut packer = pack.spawn().map_err(|e| format!("tar: {e}"))?;
        let stdout = packer.stdout.take().ok_or("tar: no output")?;
        let out = tar
            .stdin(stdout)
            .output()
            .map_err(|e| format!("tar: {e}"))?;
        let packed = packer.wait_with_output().map_err(|e| format!("tar: {e}"))?;
        if !packed.status.success() {
            return Err(format!(
                "reading {}: {}",
                source.display(),
                String::from_utf8_lossy(&packed.stderr).trim()
            ));
        }
        return if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "unpacking: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        };
    }
    if let Some(flag) = compression(source) {
        tar.arg(flag);
    }
    let mut file = std::fs::File::open(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = tar
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("tar: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("tar: no input")?;
    let show = std::io::stderr().is_terminal();
    let (mut done, mut shown) = (0u64, u64::MAX);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", source.display()))?;
        if n == 0 {
            break;
        }
        if stdin.write_all(&buf[..n]).is_err() {
            break; // tar stopped reading: its own error says why
        }
        done += n as u64;
        let pct = (done * 100).checked_div(total).unwrap_or(0);
        if show && pct != shown {
            shown = pct;
            eprint!(
                "\runpacking: {pct:3}% ({} of {} MiB)",
                done >> 20,
                total >> 20
            );
        }
    }
    drop(stdin);
    if show {
        eprintln!();
    }
    let out = child.wait_with_output().map_err(|e| format!("tar: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unpacking {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Re-maps owners so that `id` becomes you: `id → 0`, `0..id → 1..=id`, the rest unchanged
/// (the intermediate side of the keep-id container map).
fn keep_id_owner_map(id: u32) -> String {
    (0..=id)
        .map(|u| format!("+{u} +{}\n", if u == id { 0 } else { u + 1 }))
        .collect()
}

/// `sandboxctl rootfs import NAME SOURCE [--user USER]`: a flat tree or archive, or an
/// image archive (told apart by content, see [`crate::image::archive`]).
pub fn import(name: &str, source: &Path, user: Option<&str>) -> Result<PathBuf, String> {
    validate_name(name).map_err(|e| e.to_string())?;
    if !source.exists() {
        return Err(format!("{}: no such file or directory", source.display()));
    }
    let shown = source.display().to_string();
    match archive::detect(source).map_err(|e| e.to_string())? {
        archive::Kind::Flat => install(name, user, &shown, None, |ns, work| {
            unpack(ns, source, work)
        }),
        kind => {
            let image = archive::load(source, kind, &Platform::host(), &Cache::user())
                .map_err(|e| e.to_string())?;
            install_image(name, user, &image)
        }
    }
}

/// Makes root `name` from `image`, whose blobs are all in the cache.
pub fn install_image(name: &str, user: Option<&str>, image: &Image) -> Result<PathBuf, String> {
    install(name, user, &image.source, Some(image), |ns, work| {
        let mut apply = inside(
            ns,
            &std::env::current_exe()
                .map_err(|e| format!("sandboxctl: {e}"))?
                .display()
                .to_string(),
        );
        apply.args(["rootfs", "apply-layers"]).arg(work);
        apply.args(image.layers.iter().map(|l| &l.path));
        let status = apply
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("applying layers: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "the image's layers could not be applied ({status})"
            ))
        }
    })
}

/// `sandboxctl rootfs apply-layers DIR LAYER…` (internal): run by [`install_image`] as
/// root of the intermediate namespace.
pub fn apply_layers(into: &Path, layers: &[PathBuf]) -> Result<(), String> {
    let mut notes = crate::image::layer::Notes::default();
    let show = std::io::stderr().is_terminal();
    for (i, layer) in layers.iter().enumerate() {
        if show {
            eprint!("\rapplying layer {} of {}", i + 1, layers.len());
        }
        crate::image::layer::apply(into, layer, &mut notes).map_err(|e| e.to_string())?;
    }
    if show {
        eprintln!();
    }
    for line in notes.lines() {
        eprintln!("note: {}", super::terminal_safe(&line));
    }
    Ok(())
}

/// The steps every import shares: `fill` writes the tree into a fresh folder beside the
/// destination, owners are re-mapped for keep-id, the record is written, and the folder
/// is renamed into place, so a root appears whole or not at all.
fn install(
    name: &str,
    user: Option<&str>,
    source: &str,
    image: Option<&Image>,
    fill: impl FnOnce(&IntermediateUserns, &Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let dir = rootfs_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dest = dir.join(name);
    if dest.exists() {
        return Err(format!(
            "{} exists; remove it first with `sandboxctl rootfs remove {name}`",
            dest.display()
        ));
    }
    let ns = intermediate()?;
    clean_stale(&ns, &dir);
    let work = dir.join(format!(".import-{name}-{}", std::process::id()));
    let mapped = dir.join(format!(".import-{name}-{}-ids", std::process::id()));
    let result = (|| {
        std::fs::create_dir(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        fill(&ns, &work)?;
        let (keep_id, keep_gid) = match user {
            None => (None, None),
            Some(u) => {
                let who = u
                    .parse::<u32>()
                    .map(User::Id)
                    .unwrap_or_else(|_| User::Name(u.to_string()));
                let account = resolve(&work.join("etc/passwd"), &who)?;
                if account.uid == 0 {
                    (None, None)
                } else {
                    (Some(account.uid), Some(account.gid))
                }
            }
        };
        let root = match (keep_id, keep_gid) {
            (Some(uid), Some(gid)) => {
                remap(&ns, &work, &mapped, uid, gid)?;
                mapped.clone()
            }
            _ => work.clone(),
        };
        let record = RootfsRecord {
            keep_id,
            keep_gid,
            source: source.to_string(),
            image: image.map(|i| ImageRecord {
                manifest: i.manifest.to_string(),
                blobs: i.blobs().iter().map(ToString::to_string).collect(),
                config: i.config.clone(),
            }),
        };
        std::fs::write(
            dest.with_extension("json"),
            serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        std::fs::rename(&root, &dest).map_err(|e| format!("{}: {e}", dest.display()))
    })();
    if let Err(e) = result {
        let _ = remove_tree(&ns, &work);
        let _ = remove_tree(&ns, &mapped);
        let _ = std::fs::remove_file(dest.with_extension("json"));
        return Err(e);
    }
    Ok(dest)
}

/// Copies tree `work` to `mapped` with owners shifted so that `uid`/`gid` are you, then
/// removes `work`.
fn remap(
    ns: &IntermediateUserns,
    work: &Path,
    mapped: &Path,
    uid: u32,
    gid: u32,
) -> Result<(), String> {
    std::fs::create_dir(mapped).map_err(|e| format!("{}: {e}", mapped.display()))?;
    let (umap, gmap) = (work.with_extension("uidmap"), work.with_extension("gidmap"));
    std::fs::write(&umap, keep_id_owner_map(uid)).map_err(|e| e.to_string())?;
    std::fs::write(&gmap, keep_id_owner_map(gid)).map_err(|e| e.to_string())?;
    let script = "tar --numeric-owner --xattrs --owner-map=\"$1\" --group-map=\"$2\" -c -f - -C \"$3\" . | tar --numeric-owner --same-permissions --xattrs -x -f - -C \"$4\"";
    let mut sh = inside(ns, "sh");
    sh.args(["-c", script, "sh"])
        .arg(&umap)
        .arg(&gmap)
        .arg(work)
        .arg(mapped);
    let r = run(sh, "re-mapping owners");
    let _ = std::fs::remove_file(&umap);
    let _ = std::fs::remove_file(&gmap);
    remove_tree(ns, work)?;
    r
}

/// `sandboxctl rootfs list`: name, mapping, path.
pub fn list() -> Vec<(String, String, PathBuf)> {
    let dir = rootfs_dir();
    let mut out: Vec<(String, String, PathBuf)> = std::fs::read_dir(&dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                })
                .map(|p| {
                    let how = RootfsRecord::of(&p).map_or_else(
                        || "not imported by sandboxctl".to_string(),
                        |r| r.describe(),
                    );
                    (
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned(),
                        how,
                        p,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `sandboxctl rootfs remove NAME`.
pub fn remove(name: &str) -> Result<(), String> {
    validate_name(name).map_err(|e| e.to_string())?;
    let dest = rootfs_dir().join(name);
    if !dest.is_dir() {
        return Err(format!(
            "no root file system named {name:?} in {}",
            rootfs_dir().display()
        ));
    }
    let ns = intermediate()?;
    remove_tree(&ns, &dest)?;
    let _ = std::fs::remove_file(dest.with_extension("json"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_map_moves_the_user_to_zero() {
        assert_eq!(keep_id_owner_map(2), "+0 +1\n+1 +2\n+2 +0\n");
    }
}
