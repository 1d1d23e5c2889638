//! Registry credentials and settings from the files podman and docker users already have:
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, `~/.docker/config.json` (first match wins, as
//! podman does); `insecure = true` for a registry in `registries.conf`
//! (`~/.config/containers/`, then `/etc/containers/`).

use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;

/// A user name and password for one registry, and the file they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub file: PathBuf,
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

fn auth_files() -> Vec<PathBuf> {
    let mut out = vec![];
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(f));
    }
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR") {
        out.push(PathBuf::from(r).join("containers/auth.json"));
    }
    out.push(crate::paths::config_home().join("containers/auth.json"));
    out.push(crate::paths::home().join(".docker/config.json"));
    out
}

/// The keys a registry may be stored under: `host/repo` prefixes first (podman's
/// namespaced entries), then the host, and Docker Hub's historical names.
fn keys(registry: &str, repository: &str) -> Vec<String> {
    let mut out = vec![];
    let mut path = format!("{registry}/{repository}");
    loop {
        out.push(path.clone());
        match path.rfind('/') {
            Some(i) => path.truncate(i),
            None => break,
        }
    }
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        out.extend([
            "https://index.docker.io/v1/".to_string(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]);
    }
    out.push(format!("https://{registry}"));
    out
}

/// Credentials for `registry`/`repository`, if a file has them. A file that cannot be
/// read as JSON is an error naming it (silently pulling anonymously would be a surprise).
pub fn credentials(registry: &str, repository: &str) -> Result<Option<Credentials>, String> {
    for file in auth_files() {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let parsed: AuthFile =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        for key in keys(registry, repository) {
            let Some(e) = parsed.auths.get(&key) else {
                continue;
            };
            if let (Some(user), Some(password)) = (&e.username, &e.password) {
                return Ok(Some(Credentials {
                    user: user.clone(),
                    password: password.clone(),
                    file,
                }));
            }
            let Some(auth) = &e.auth else { continue };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    format!(
                        "{}: the auth of {key:?} is not base64 of USER:PASSWORD",
                        file.display()
                    )
                })?;
            let (user, password) = decoded.split_once(':').ok_or_else(|| {
                format!(
                    "{}: the auth of {key:?} is not base64 of USER:PASSWORD",
                    file.display()
                )
            })?;
            return Ok(Some(Credentials {
                user: user.into(),
                password: password.into(),
                file,
            }));
        }
    }
    Ok(None)
}

#[derive(Deserialize)]
struct RegistriesConf {
    #[serde(default)]
    registry: Vec<RegistryConf>,
}

#[derive(Deserialize)]
struct RegistryConf {
    #[serde(default)]
    location: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    insecure: bool,
}

/// Whether `registries.conf` marks `registry` insecure (plain HTTP or any certificate).
pub fn insecure(registry: &str) -> bool {
    let files = [
        crate::paths::config_home().join("containers/registries.conf"),
        PathBuf::from("/etc/containers/registries.conf"),
    ];
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(conf) = toml::from_str::<RegistriesConf>(&text) else {
            continue;
        };
        if let Some(r) = conf
            .registry
            .iter()
            .find(|r| r.location == registry || r.prefix == registry)
        {
            return r.insecure;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_entries_come_before_the_host() {
        assert_eq!(
            keys("registry.test:5000", "team/app"),
            [
                "registry.test:5000/team/app",
                "registry.test:5000/team",
                "registry.test:5000",
                "https://registry.test:5000"
            ]
        );
        assert!(
            keys("docker.io", "library/arch").contains(&"https://index.docker.io/v1/".to_string())
        );
    }
}
