//! What an image's config says about running it (Env, Entrypoint/Cmd, WorkingDir, User),
//! kept with the root, and the starter profile written from it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ImageError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// The parts of an image config file read here (the spec's names).
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<Run>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Run {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

impl ImageConfig {
    pub fn parse(json: &[u8]) -> Result<Self, ImageError> {
        let f: File = serde_json::from_slice(json)
            .map_err(|e| ImageError::Format(format!("the image config is not valid: {e}")))?;
        let r = f.config.unwrap_or(Run {
            env: None,
            entrypoint: None,
            cmd: None,
            working_dir: None,
            user: None,
        });
        Ok(ImageConfig {
            env: r.env.unwrap_or_default(),
            entrypoint: r.entrypoint.unwrap_or_default(),
            cmd: r.cmd.unwrap_or_default(),
            working_dir: r.working_dir.unwrap_or_default(),
            user: r.user.unwrap_or_default(),
            architecture: f.architecture,
            os: f.os,
        })
    }

    /// The command the image runs: Entrypoint then Cmd.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The user part of `User` (`name`, `uid`, `uid:gid` → the first part).
    pub fn user_name(&self) -> Option<&str> {
        let u = self.user.split(':').next().unwrap_or("");
        (!u.is_empty()).then_some(u)
    }

    /// A profile for root `root` that runs the image as its config says, with no network
    /// until the user opens some.
    pub fn starter_profile(&self, source: &str, root: &Path) -> String {
        let q = |s: &str| toml_edit::Value::from(s).to_string();
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let mut out = format!(
            "# Written by `sandboxctl rootfs pull` for {source}.\n# Edit freely: this file is not written again.\ndescription = {}\n\n[rootfs]\npath = {}\n\n[process]\n",
            q(&format!("{source}, as its image config says")),
            q(&root.display().to_string())
        );
        let command = self.command();
        if command.is_empty() {
            out.push_str(
                "# The image names no command: the sandbox idles, use `sandboxctl exec`.\n",
            );
        } else {
            out.push_str(&format!("command = {}\n", list(&command)));
        }
        if let Some(u) = self.user_name() {
            out.push_str(&format!("user = {}\n", q(u)));
        }
        if !self.working_dir.is_empty() {
            out.push_str(&format!("cwd = {}\n", q(&self.working_dir)));
        }
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if !env.is_empty() {
            out.push_str("\n[process.env]\n");
            for (k, v) in env {
                out.push_str(&format!("{} = {}\n", q(k), q(v)));
            }
        }
        out.push_str("\n[network]\nmode = \"none\"                   # loopback only; see `man sandboxd.toml` to open names\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_becomes_a_profile_that_parses() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin","GREETING=a \"quoted\" word"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi; sleep 1000"],"WorkingDir":"/srv","User":"1000:1000"}}"#;
        let c = ImageConfig::parse(json).unwrap();
        assert_eq!(c.command(), ["/bin/sh", "-c", "echo hi; sleep 1000"]);
        assert_eq!(c.user_name(), Some("1000"));
        let text = c.starter_profile("registry.test/img:1", Path::new("/r/img"));
        let doc: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(doc["process"]["cwd"].as_str(), Some("/srv"));
        assert_eq!(
            doc["process"]["env"]["GREETING"].as_str(),
            Some("a \"quoted\" word")
        );
        assert_eq!(doc["rootfs"]["path"].as_str(), Some("/r/img"));
        assert!(ImageConfig::parse(b"{").is_err());
        assert_eq!(ImageConfig::parse(b"{}").unwrap(), ImageConfig::default());
    }
}
