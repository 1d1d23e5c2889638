//! Image archives as `rootfs import` sources, told apart by content, not by name:
//! `docker save` / `podman save` tarballs (`manifest.json` naming a config and layer
//! files), OCI image layouts (a directory with `oci-layout` and `index.json`) and
//! `oci-archive` tarballs (such a layout in a tar). Their blobs go into the cache
//! (verified), so an import and a pull of one image share them and build the same tree.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::registry::Platform;
use super::{Cache, Digest, Image, ImageConfig, ImageError, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A root file system as it is (`docker export`, a directory).
    Flat,
    Docker,
    OciArchive,
    OciLayout,
}

const LAYOUT: &str = "oci-layout";
/// Metadata files are small; a bigger one is not an honest archive.
const SMALL: u64 = 16 << 20;

/// What `source` is, from its content.
pub fn detect(source: &Path) -> Result<Kind, ImageError> {
    if source.is_dir() {
        return Ok(
            if source.join(LAYOUT).is_file() && source.join("index.json").is_file() {
                Kind::OciLayout
            } else {
                Kind::Flat
            },
        );
    }
    let mut names = vec![];
    let file = std::fs::File::open(source).map_err(ImageError::io(source.display()))?;
    let mut tar = tar::Archive::new(
        super::layer::decompressed(file).map_err(ImageError::io(source.display()))?,
    );
    let Ok(entries) = tar.entries() else {
        return Ok(Kind::Flat);
    };
    for e in entries {
        let Ok(e) = e else { return Ok(Kind::Flat) };
        let Ok(p) = e.path() else { continue };
        let n = normal(&p);
        if !in_image_archive(&n) {
            // A root file system's member (`etc/`, `usr/`…): no need to read the rest.
            return Ok(Kind::Flat);
        }
        if n == LAYOUT || n == "index.json" || n == "manifest.json" {
            names.push(n);
        }
    }
    Ok(
        if names.iter().any(|n| n == LAYOUT) && names.iter().any(|n| n == "index.json") {
            Kind::OciArchive
        } else if names.iter().any(|n| n == "manifest.json") {
            Kind::Docker
        } else {
            Kind::Flat
        },
    )
}

/// Whether a member could be part of a `docker save` or OCI archive: their top level
/// holds only metadata files, `blobs/`, and folders or files named by a hex digest.
fn in_image_archive(member: &str) -> bool {
    let top = member.split('/').next().unwrap_or("");
    let stem = top.split('.').next().unwrap_or("");
    matches!(
        top,
        "" | "manifest.json" | "repositories" | "index.json" | LAYOUT | "blobs"
    ) || (stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A member's path without `./`, `..` resolved lexically (empty if it goes above the
/// archive). Members are only ever looked up by this name, never written to a path.
fn normal(p: &Path) -> String {
    let mut out = vec![];
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return String::new();
                }
            }
            Component::Prefix(_) => return String::new(),
        }
    }
    out.join("/")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Deserialize)]
struct PlatformJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// Reads an image archive or layout into the cache and says what image it holds.
pub fn load(
    source: &Path,
    kind: Kind,
    platform: &Platform,
    cache: &Cache,
) -> Result<Image, ImageError> {
    let shown = source.display().to_string();
    match kind {
        Kind::Flat => Err(ImageError::Format(format!(
            "{shown} is not an image archive"
        ))),
        Kind::OciLayout => {
            let index = std::fs::read(source.join("index.json"))
                .map_err(ImageError::io(format!("{shown}/index.json")))?;
            let blob = |d: &Digest, size: u64| {
                let p = source.join("blobs/sha256").join(d.hex());
                let mut f = std::fs::File::open(&p).map_err(ImageError::io(p.display()))?;
                cache.insert(d, Some(size), &mut f)
            };
            from_index(&shown, &index, platform, &blob)
        }
        Kind::OciArchive | Kind::Docker => {
            let members = unpack_members(source, cache)?;
            let blob = |d: &Digest, size: u64| {
                if cache.has(d, size) {
                    Ok(cache.path(d))
                } else {
                    Err(ImageError::Blob {
                        digest: d.clone(),
                        why: format!("not in {shown}, or not of its size {size}"),
                    })
                }
            };
            if kind == Kind::OciArchive {
                let index = members
                    .small
                    .get("index.json")
                    .ok_or_else(|| ImageError::Format(format!("{shown}: no index.json")))?;
                from_index(&shown, index, platform, &blob)
            } else {
                from_docker(&shown, &members, cache)
            }
        }
    }
}

/// An archive's members: small metadata files kept, the rest put into the cache.
struct Members {
    small: BTreeMap<String, Vec<u8>>,
    /// Member path → its blob, for files not named by digest (`docker save` layers).
    blobs: BTreeMap<String, (Digest, u64)>,
    /// Member path → target (newer `docker save` links layer paths to blobs).
    links: BTreeMap<String, String>,
}

fn unpack_members(source: &Path, cache: &Cache) -> Result<Members, ImageError> {
    let shown = source.display().to_string();
    let file = std::fs::File::open(source).map_err(ImageError::io(&shown))?;
    let mut tar =
        tar::Archive::new(super::layer::decompressed(file).map_err(ImageError::io(&shown))?);
    let mut m = Members {
        small: BTreeMap::new(),
        blobs: BTreeMap::new(),
        links: BTreeMap::new(),
    };
    for e in tar.entries().map_err(ImageError::io(&shown))? {
        let mut e = e.map_err(ImageError::io(&shown))?;
        let name = normal(&e.path().map_err(ImageError::io(&shown))?);
        if name.is_empty() {
            continue;
        }
        let kind = e.header().entry_type();
        if kind.is_symlink() {
            if let Ok(Some(t)) = e.link_name() {
                let target = normal(&Path::new(&name).parent().unwrap_or(Path::new("")).join(t));
                m.links.insert(name, target);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = e.header().size().unwrap_or(0);
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let d = Digest::parse(&format!("sha256:{hex}"))?;
            cache.insert(&d, Some(size), &mut e)?;
        } else if name.ends_with(".json") || name == LAYOUT || name == "repositories" {
            if size > SMALL {
                return Err(ImageError::Format(format!(
                    "{shown}: {name} is {size} bytes, too big for metadata"
                )));
            }
            let mut buf = vec![];
            e.read_to_end(&mut buf).map_err(ImageError::io(&shown))?;
            if name != "manifest.json"
                && name != "index.json"
                && name != LAYOUT
                && name != "repositories"
            {
                // A config file of a docker archive: cached by its digest too.
                let (d, len, _) = cache.insert_unnamed(&mut buf.as_slice())?;
                m.blobs.insert(name.clone(), (d, len));
            }
            m.small.insert(name, buf);
        } else {
            let (d, len, _) = cache.insert_unnamed(&mut e)?;
            m.blobs.insert(name, (d, len));
        }
    }
    Ok(m)
}

fn from_docker(shown: &str, m: &Members, cache: &Cache) -> Result<Image, ImageError> {
    let manifest = m
        .small
        .get("manifest.json")
        .ok_or_else(|| ImageError::Format(format!("{shown}: no manifest.json")))?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(manifest).map_err(|e| {
        ImageError::Format(format!(
            "{shown}: manifest.json is not a docker archive's: {e}"
        ))
    })?;
    let [entry] = entries.as_slice() else {
        return Err(ImageError::Format(format!(
            "{shown} holds {} images; import one at a time",
            entries.len()
        )));
    };
    let lookup = |path: &str| -> Result<(Digest, u64), ImageError> {
        let mut p = normal(Path::new(path));
        for _ in 0..8 {
            match m.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        if let Some(b) = m.blobs.get(&p) {
            return Ok(b.clone());
        }
        if let Some(hex) = p.strip_prefix("blobs/sha256/") {
            let d = Digest::parse(&format!("sha256:{hex}"))?;
            let len = std::fs::metadata(cache.path(&d))
                .map(|md| md.len())
                .unwrap_or(0);
            return Ok((d, len));
        }
        Err(ImageError::Format(format!(
            "{shown}: manifest.json names {path}, which is not in it"
        )))
    };
    let (config_digest, _) = lookup(&entry.config)?;
    let config = std::fs::read(cache.path(&config_digest))
        .map_err(ImageError::io(cache.path(&config_digest).display()))?;
    let layers = entry
        .layers
        .iter()
        .map(|l| {
            lookup(l).map(|(digest, size)| Layer {
                path: cache.path(&digest),
                digest,
                size,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tag = entry
        .repo_tags
        .as_ref()
        .and_then(|t| t.first())
        .map_or(String::new(), |t| format!(" ({t})"));
    Ok(Image {
        source: format!("{shown}{tag}"),
        manifest: Digest::of(manifest),
        config_digest,
        config: ImageConfig::parse(&config)?,
        layers,
    })
}

/// Follows an OCI index (nested ones too) to the platform's manifest.
fn from_index(
    shown: &str,
    index: &[u8],
    platform: &Platform,
    blob: &dyn Fn(&Digest, u64) -> Result<PathBuf, ImageError>,
) -> Result<Image, ImageError> {
    let mut index: Index = serde_json::from_slice(index)
        .map_err(|e| ImageError::Format(format!("{shown}: index.json: {e}")))?;
    for _ in 0..4 {
        let fits = |d: &&Descriptor| {
            d.platform.as_ref().is_none_or(|p| {
                p.os == platform.os
                    && p.architecture == platform.arch
                    && platform
                        .variant
                        .as_ref()
                        .is_none_or(|v| p.variant.as_ref() == Some(v))
            })
        };
        let chosen = match index.manifests.as_slice() {
            [only] => only,
            many => many.iter().find(fits).ok_or_else(|| {
                ImageError::Format(format!("{shown} has no image for {platform}"))
            })?,
        };
        let d = Digest::parse(&chosen.digest)?;
        let path = blob(&d, chosen.size)?;
        let bytes = std::fs::read(&path).map_err(ImageError::io(path.display()))?;
        if chosen.media_type.ends_with("image.index.v1+json")
            || chosen.media_type.ends_with("manifest.list.v2+json")
        {
            index = serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::Format(format!("{shown}: index {d}: {e}")))?;
            continue;
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Format(format!("{shown}: manifest {d}: {e}")))?;
        let config_digest = Digest::parse(&manifest.config.digest)?;
        let config_path = blob(&config_digest, manifest.config.size)?;
        let config = std::fs::read(&config_path).map_err(ImageError::io(config_path.display()))?;
        let mut layers = vec![];
        for l in &manifest.layers {
            if !super::is_layer_type(&l.media_type) {
                return Err(ImageError::Format(format!(
                    "layer {}: media type {:?} is not a layer this can unpack",
                    l.digest, l.media_type
                )));
            }
            let digest = Digest::parse(&l.digest)?;
            let path = blob(&digest, l.size)?;
            layers.push(Layer {
                digest,
                size: l.size,
                path,
            });
        }
        return Ok(Image {
            source: shown.to_string(),
            manifest: d,
            config_digest,
            config: ImageConfig::parse(&config)?,
            layers,
        });
    }
    Err(ImageError::Format(format!(
        "{shown}: indexes nested too deep"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_file_system_is_told_from_its_first_members() {
        let hex = "a".repeat(64);
        for member in [
            "manifest.json",
            "oci-layout",
            "blobs/sha256/x",
            &format!("{hex}/layer.tar"),
            &format!("{hex}.json"),
            "",
        ] {
            assert!(in_image_archive(member), "{member}");
        }
        for member in ["etc/passwd", "bin", "usr/lib/x", "manifest.json.bak"] {
            assert!(!in_image_archive(member), "{member}");
        }
    }
}
