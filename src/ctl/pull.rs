//! `sandboxctl rootfs pull` and `rootfs prune`: an image from a registry into a root and a
//! starter profile, and the blob cache kept to what roots still use.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::image::registry::{self, Platform, Progress, ProgressMode, PullOptions};
use crate::image::{Cache, Digest, Image};
use crate::profile::validate_name;
use crate::spec::RootfsRecord;

use super::rootfs;

pub struct Args {
    pub reference: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub insecure: bool,
    pub user: Option<String>,
    pub json: bool,
}

/// The default name of a root: the repository's last part (`…/library/archlinux:latest`
/// → `archlinux`).
fn default_name(reference: &str) -> Result<String, String> {
    let repo = reference.split('@').next().unwrap_or(reference);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let name = last.split(':').next().unwrap_or(last);
    validate_name(name)
        .map(|()| name.to_string())
        .map_err(|e| format!("{e}; name the root with --name"))
}

pub async fn pull(a: &Args) -> Result<(), String> {
    let platform = match &a.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let parsed: oci_client::Reference = a
        .reference
        .parse()
        .map_err(|e| format!("{:?} is not an image reference: {e}", a.reference))?;
    let name = match &a.name {
        Some(n) => {
            validate_name(n).map_err(|e| e.to_string())?;
            n.clone()
        }
        None => default_name(parsed.repository())?,
    };
    let mode = if a.json {
        ProgressMode::Json
    } else if std::io::stderr().is_terminal() {
        ProgressMode::Terminal
    } else {
        ProgressMode::Quiet
    };
    let opts = PullOptions {
        platform,
        insecure: a.insecure,
        progress: Progress::new(mode),
    };
    let image = registry::pull(&a.reference, &opts, &Cache::user())
        .await
        .map_err(|e| e.to_string())?;
    let dest = rootfs::rootfs_dir().join(&name);
    if dest.exists() {
        let same = RootfsRecord::of(&dest)
            .and_then(|r| r.image)
            .is_some_and(|i| i.manifest == image.manifest.as_str());
        if !same {
            return Err(format!(
                "{} exists and is not {}; remove it first with `sandboxctl rootfs remove {name}`, or pull with another --name",
                dest.display(),
                a.reference
            ));
        }
        report(a.json, &name, &dest, &image, None, true);
        return Ok(());
    }
    rootfs::install_image(&name, a.user.as_deref(), &image)?;
    let profile = write_starter(&name, &image, &dest, a.user.as_deref())?;
    report(a.json, &name, &dest, &image, Some(profile), false);
    Ok(())
}

fn report(
    json: bool,
    name: &str,
    dest: &Path,
    image: &Image,
    profile: Option<(PathBuf, bool)>,
    up_to_date: bool,
) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "done",
                "name": name,
                "path": dest,
                "manifest": image.manifest.as_str(),
                "up_to_date": up_to_date,
                "profile": profile.as_ref().map(|p| &p.0),
                "profile_written": profile.as_ref().is_some_and(|p| p.1),
            })
        );
        return;
    }
    if up_to_date {
        println!(
            "{name} is up to date with {} ({})",
            image.source, image.manifest
        );
        return;
    }
    println!("pulled {} into {}", image.source, dest.display());
    match profile {
        Some((p, true)) => println!(
            "wrote profile {}; start it with:  sandboxctl start {name}",
            p.display()
        ),
        Some((p, false)) => println!("profile {} exists and was left as it is", p.display()),
        None => {}
    }
}

/// Writes `profiles/NAME.toml` for the root, unless a profile of that name exists:
/// (path, written).
pub fn write_starter(
    name: &str,
    image: &Image,
    root: &Path,
    user: Option<&str>,
) -> Result<(PathBuf, bool), String> {
    let dir = crate::paths::config_home().join("sandboxd/profiles");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.toml"));
    let mut config = image.config.clone();
    if let Some(u) = user {
        config.user = u.to_string();
    }
    let text = config.starter_profile(&image.source, root);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(text.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((path, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((path, false)),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `sandboxctl rootfs prune`: removes blobs no root's record names.
pub fn prune() -> Result<(), String> {
    let mut keep = HashSet::new();
    if let Ok(entries) = std::fs::read_dir(rootfs::rootfs_dir()) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Some(image) = RootfsRecord::of(&p.with_extension("")).and_then(|r| r.image) {
                    keep.extend(image.blobs.iter().filter_map(|b| Digest::parse(b).ok()));
                }
            }
        }
    }
    let (count, bytes) = Cache::user().prune(&keep).map_err(|e| e.to_string())?;
    println!("removed {count} unused blob(s), {} MiB", bytes >> 20);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_named_after_its_repository() {
        assert_eq!(
            default_name("docker.io/library/archlinux:latest").unwrap(),
            "archlinux"
        );
        assert_eq!(default_name("localhost:5000/app@sha256:00").unwrap(), "app");
        assert!(default_name("x/-bad").unwrap_err().contains("--name"));
    }
}
