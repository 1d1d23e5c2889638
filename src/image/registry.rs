//! Pulling from a registry with the OCI distribution protocol, through `oci-client`
//! (a well-kept implementation of the protocol, Docker Hub's bearer-token flow included,
//! over reqwest: the system's CA store, `HTTPS_PROXY`/`NO_PROXY`). What it does not do is
//! done here: the platform choice, resuming a blob, the content-addressed cache, and
//! errors that say which image, blob or credentials file.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Instant;

use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{auth, Cache, Digest, Image, ImageConfig, ImageError, Layer};

/// `--platform os/arch[/variant]`, default linux and this machine's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform {
                    os: os.into(),
                    arch: arch.into(),
                    variant: variant.map(String::from),
                })
            }
            _ => Err(format!(
                "--platform {s:?}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64"
            )),
        }
    }

    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    fn matches(&self, e: &ImageIndexEntry) -> bool {
        e.platform.as_ref().is_some_and(|p| {
            p.os.to_string() == self.os
                && p.architecture.to_string() == self.arch
                && self
                    .variant
                    .as_ref()
                    .is_none_or(|v| p.variant.as_ref() == Some(v))
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

pub struct PullOptions {
    pub platform: Platform,
    /// `--tls-verify=false`: any certificate, or plain HTTP (also per registry in
    /// registries.conf).
    pub insecure: bool,
    pub progress: Progress,
}

/// Progress of a pull: a status line on a terminal (layers done, each layer in flight,
/// the total and the rate), JSON lines with `--json`, or nothing.
pub struct Progress {
    pub mode: ProgressMode,
    state: RefCell<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Quiet,
    Terminal,
    Json,
}

struct State {
    /// Per layer: digest, bytes so far, size.
    layers: Vec<(Digest, u64, u64)>,
    started: Instant,
    shown: Instant,
}

impl State {
    /// "2 of 4 layers; 1a2b3c4d5e6f 12/30 MiB; 40 of 120 MiB, 45.0 MiB/s"
    fn line(&self) -> String {
        let done = self.layers.iter().filter(|l| l.1 == l.2).count();
        let (got, total) = self
            .layers
            .iter()
            .fold((0, 0), |(g, t), l| (g + l.1, t + l.2));
        let mut out = format!("{done} of {} layers", self.layers.len());
        for (d, g, size) in self.layers.iter().filter(|l| l.1 > 0 && l.1 < l.2) {
            out.push_str(&format!(
                "; {} {}/{} MiB",
                &d.hex()[..12],
                g >> 20,
                size >> 20
            ));
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        out.push_str(&format!(
            "; {} of {} MiB, {:.1} MiB/s",
            got >> 20,
            total >> 20,
            (got as f64 / secs) / f64::from(1 << 20)
        ));
        out
    }
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        let now = Instant::now();
        Progress {
            mode,
            state: RefCell::new(State {
                layers: vec![],
                started: now,
                shown: now,
            }),
        }
    }

    fn layers(&self, layers: &[(Digest, u64)]) {
        self.state.borrow_mut().layers = layers.iter().map(|(d, s)| (d.clone(), 0, *s)).collect();
    }

    fn blob(&self, d: &Digest, size: u64, cached: bool) {
        if self.mode == ProgressMode::Json {
            println!(
                "{}",
                serde_json::json!({"event": "blob", "digest": d.as_str(), "size": size, "cached": cached})
            );
        }
        if cached {
            self.add(d, size);
        }
    }

    fn add(&self, d: &Digest, n: u64) {
        let mut s = self.state.borrow_mut();
        if let Some(l) = s.layers.iter_mut().find(|l| &l.0 == d) {
            l.1 = (l.1 + n).min(l.2);
        }
        if self.mode == ProgressMode::Terminal && s.shown.elapsed().as_millis() >= 100 {
            s.shown = Instant::now();
            eprint!("\r\x1b[Kpulling: {}", s.line());
        }
    }

    /// The server sends a blob whole after all: count it from nothing.
    fn restart(&self, d: &Digest) {
        if let Some(l) = self
            .state
            .borrow_mut()
            .layers
            .iter_mut()
            .find(|l| &l.0 == d)
        {
            l.1 = 0;
        }
    }

    /// A blob verified and in the cache.
    fn finished(&self, d: &Digest) {
        if self.mode == ProgressMode::Json {
            println!(
                "{}",
                serde_json::json!({"event": "blob-done", "digest": d.as_str()})
            );
        }
    }

    pub fn done(&self) {
        if self.mode == ProgressMode::Terminal {
            eprintln!("\r\x1b[Kpulled: {}", self.state.borrow().line());
        }
    }
}

/// How to reach a registry: verified HTTPS, or for an insecure one HTTPS with any
/// certificate and, when the registry speaks plain HTTP, that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Verified,
    AnyCertificate,
    Plain,
}

fn client(reference: &Reference, opts: &PullOptions, transport: Transport) -> Client {
    let platform = opts.platform.clone();
    let registry = reference.resolve_registry().to_string();
    Client::new(ClientConfig {
        protocol: if transport == Transport::Plain {
            ClientProtocol::HttpsExcept(vec![registry])
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: transport == Transport::AnyCertificate,
        accept_invalid_hostnames: transport == Transport::AnyCertificate,
        platform_resolver: Some(Box::new(move |entries: &[ImageIndexEntry]| {
            entries
                .iter()
                .find(|e| platform.matches(e))
                .map(|e| e.digest.clone())
        })),
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        user_agent: concat!("sandboxd/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

/// Turns the client's errors into ones that say what to do.
fn explain(
    e: OciDistributionError,
    reference: &Reference,
    creds: Option<&auth::Credentials>,
    platform: &Platform,
) -> ImageError {
    let registry = reference.registry();
    let from = match creds {
        Some(c) => format!("the credentials for {registry} in {}", c.file.display()),
        None => {
            format!("no credentials for {registry} (none in auth.json or ~/.docker/config.json)")
        }
    };
    ImageError::Registry(match e {
        OciDistributionError::AuthenticationFailure(why) => {
            format!("{registry} refused {from}: {why}")
        }
        OciDistributionError::UnauthorizedError { .. } if creds.is_some() => {
            format!("{registry} refused {from} for {reference}: a wrong user name or password, or no access to it")
        }
        OciDistributionError::UnauthorizedError { .. } => {
            format!("{registry} does not let you pull {reference} with {from}: log in (podman login / docker login) or check the name")
        }
        OciDistributionError::ImageManifestNotFoundError(m) if m.contains("image index") => {
            format!("{reference} has no image for {platform}")
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            format!("{reference}: no such image in {registry}")
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| format!("{:?}", e.code).contains("Unknown")) =>
        {
            format!("{reference}: no such image in {registry}")
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                format!("{:?}", e.code).contains("Unauthorized")
                    || format!("{:?}", e.code).contains("Denied")
            }) =>
        {
            format!("{registry} does not let you pull {reference} with {from}")
        }
        OciDistributionError::GenericError(Some(m))
            if m.contains("platform") || m.contains("resolve") =>
        {
            format!("{reference} has no image for {platform}: {m}")
        }
        other => format!("{reference}: {}", crate::error_chain(&other)),
    })
}

/// Pulls `reference` into the cache: manifest (resolved to the platform), config, and
/// every layer, each verified; what is cached already is not fetched again.
pub async fn pull(reference: &str, opts: &PullOptions, cache: &Cache) -> Result<Image, ImageError> {
    let r: Reference = reference
        .parse()
        .map_err(|e| ImageError::Format(format!("{reference:?} is not an image reference: {e}")))?;
    let creds = auth::credentials(r.registry(), r.repository()).map_err(ImageError::Registry)?;
    let auth = match &creds {
        Some(c) => RegistryAuth::Basic(c.user.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let explain = |e| explain(e, &r, creds.as_ref(), &opts.platform);
    let insecure = opts.insecure || auth::insecure(r.registry());
    let mut client = client(
        &r,
        opts,
        if insecure {
            Transport::AnyCertificate
        } else {
            Transport::Verified
        },
    );
    let mut first = client.pull_manifest_and_config(&r, &auth).await;
    if insecure
        && matches!(&first, Err(OciDistributionError::RequestError(e)) if e.is_connect() || e.is_request())
    {
        // An insecure registry that does not speak TLS at all.
        client = self::client(&r, opts, Transport::Plain);
        first = client.pull_manifest_and_config(&r, &auth).await;
    }
    let (manifest, manifest_digest, config) = first.map_err(explain)?;
    let manifest_digest = Digest::parse(&manifest_digest)?;
    let config_digest = Digest::parse(&manifest.config.digest)?;
    if Digest::of(config.as_bytes()) != config_digest {
        return Err(ImageError::Blob {
            digest: config_digest,
            why: "the config the registry sent has another digest".into(),
        });
    }
    cache.insert(
        &config_digest,
        Some(config.len() as u64),
        &mut config.as_bytes(),
    )?;
    let config = ImageConfig::parse(config.as_bytes())?;
    if !config.os.is_empty() && config.os != opts.platform.os {
        return Err(ImageError::Registry(format!(
            "{reference} is an image for {}/{}, not {}",
            config.os, config.architecture, opts.platform
        )));
    }

    let layers = layers_of(&manifest.layers, cache)?;
    let mut unique: Vec<(&OciDescriptor, &Layer)> = vec![];
    for (desc, layer) in manifest.layers.iter().zip(&layers) {
        if !unique.iter().any(|(_, l)| l.digest == layer.digest) {
            unique.push((desc, layer));
        }
    }
    let sizes: Vec<(Digest, u64)> = unique
        .iter()
        .map(|(_, l)| (l.digest.clone(), l.size))
        .collect();
    opts.progress.layers(&sizes);
    let fetches = unique
        .iter()
        .map(|(desc, layer)| fetch(&client, &r, desc, layer, cache, &opts.progress));
    let results: Vec<Result<PathBuf, ImageError>> = futures_util::stream::iter(fetches)
        .buffer_unordered(4)
        .collect()
        .await;
    opts.progress.done();
    for r in results {
        r?;
    }
    Ok(Image {
        source: r.whole(),
        manifest: manifest_digest,
        config_digest,
        config,
        layers,
    })
}

/// The manifest's layers as cache entries, each checked to be a layer this can unpack.
fn layers_of(descriptors: &[OciDescriptor], cache: &Cache) -> Result<Vec<Layer>, ImageError> {
    descriptors
        .iter()
        .map(|l| {
            if !super::is_layer_type(&l.media_type) {
                return Err(ImageError::Format(format!(
                    "layer {}: media type {:?} is not a layer this can unpack",
                    l.digest, l.media_type
                )));
            }
            let size = u64::try_from(l.size)
                .map_err(|_| ImageError::Format(format!("layer {}: negative size", l.digest)))?;
            let digest = Digest::parse(&l.digest)?;
            Ok(Layer {
                path: cache.path(&digest),
                digest,
                size,
            })
        })
        .collect()
}

/// One blob into the cache, resuming what an earlier pull left.
async fn fetch(
    client: &Client,
    r: &Reference,
    desc: &OciDescriptor,
    layer: &Layer,
    cache: &Cache,
    progress: &Progress,
) -> Result<PathBuf, ImageError> {
    let d = &layer.digest;
    if cache.has(d, layer.size) {
        progress.blob(d, layer.size, true);
        return Ok(cache.path(d));
    }
    let blob_err = |why: String| ImageError::Blob {
        digest: d.clone(),
        why,
    };
    let mut w = cache.writer(d, Some(layer.size))?;
    if w.is_complete() {
        progress.blob(d, layer.size, true);
        return Ok(cache.path(d));
    }
    progress.blob(d, layer.size, false);
    progress.add(d, w.offset());
    let response = client
        .pull_blob_stream_partial(r, desc, w.offset(), None)
        .await
        .map_err(|e| blob_err(crate::error_chain(&e)))?;
    let mut stream = match response {
        BlobResponse::Full(s) => {
            w.restart()?;
            progress.restart(d);
            s
        }
        BlobResponse::Partial(s) => s,
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| blob_err(crate::error_chain(&e)))?;
        w.write(&chunk)?;
        progress.add(d, chunk.len() as u64);
    }
    let path = w.finish()?;
    progress.finished(d);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_names_layers_in_flight() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let p = Progress::new(ProgressMode::Quiet);
        p.layers(&[(a.clone(), 4 << 20), (b.clone(), 8 << 20)]);
        p.add(&a, 4 << 20);
        p.add(&b, 3 << 20);
        let line = p.state.borrow().line();
        assert!(line.starts_with("1 of 2 layers; "), "{line}");
        assert!(
            line.contains(&format!("{} 3/8 MiB", &b.hex()[..12])),
            "{line}"
        );
        assert!(!line.contains(&a.hex()[..12]), "{line}");
        assert!(line.contains("7 of 12 MiB"), "{line}");
    }

    #[test]
    fn platforms_parse_or_say_what_they_want() {
        assert_eq!(
            Platform::parse("linux/arm64/v8")
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(
                Platform::parse(bad).unwrap_err().contains("OS/ARCH"),
                "{bad}"
            );
        }
    }
}
