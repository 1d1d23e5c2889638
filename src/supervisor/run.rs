//! Throwaway runs (`sandboxctl run`, `Manager.Run`): a sandbox made from a profile for one
//! command, under a unique name, with the caller's folder bound read-write at the same path
//! and a copy-on-write root, removed when its caller is done (or gone).
//!
//! A run's profile is a file of its own under `$XDG_RUNTIME_DIR/sandboxd/runs/`, first on
//! the daemon's search path: exec defaults, the daemon's restart and adoption read it like
//! any profile, and it goes when the sandbox is removed.

use std::path::{Path, PathBuf};

use super::{Error, SandboxInfo, Supervisor};
use crate::profile::{validate_name, Profile, ProfileError};
use crate::runtime::Runtime;

/// What a run changes in its profile.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The sandbox's name; `None`: `run-` and eight random hex digits.
    pub name: Option<String>,
    /// A host folder to bind read-write at the same path and work in.
    pub cwd: Option<PathBuf>,
    /// See the root through a private copy-on-write layer (the default of `sandboxctl run`).
    pub overlay: bool,
}

/// Folders a run refuses to bind read-write: the system's, and what sandboxd itself keeps.
const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

/// The folder where run profiles live, beside the bundles.
pub fn runs_dir(bundles: &Path) -> PathBuf {
    bundles.with_file_name("runs")
}

impl<R: Runtime> Supervisor<R> {
    /// Starts a run of `profile`; returns the running sandbox.
    pub async fn run(&self, profile: &str, opts: RunOptions) -> Result<SandboxInfo, Error> {
        let base = self.inner.store.load(profile)?;
        if !base.network.publish.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "profile {profile:?} publishes ports ({}): two sandboxes of it cannot run at once, so it cannot be run (start it instead)",
                base.network
                    .publish
                    .iter()
                    .map(|p| p.raw.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let cwd = opts
            .cwd
            .as_deref()
            .map(|c| usable_cwd(c, &self.inner.store.home))
            .transpose()?;
        let name = match &opts.name {
            Some(n) => {
                validate_name(n).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                if self.is_taken(n) {
                    return Err(Error::InvalidArgument(format!(
                        "{n:?} is taken by a profile or a sandbox: choose another --name"
                    )));
                }
                n.clone()
            }
            None => self.fresh_name()?,
        };
        let text = profile_text(&base, cwd.as_deref(), opts.overlay)?;
        let dir = runs_dir(&self.inner.bundles);
        let file = dir.join(format!("{name}.toml"));
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, text));
        written.map_err(|e| Error::RuntimeFailed {
            name: name.clone(),
            message: format!("writing {}: {e}", file.display()),
        })?;
        match self.start(&name).await {
            Ok(info) => Ok(info),
            Err(e) => {
                // Nothing of a run that did not start stays behind.
                let _ = self.stop(&name).await;
                let _ = std::fs::remove_file(&file);
                Err(e)
            }
        }
    }

    /// Removes the profile file (and owner record) of run `name`, if it is one.
    pub(super) fn forget_run(&self, name: &str) {
        let dir = runs_dir(&self.inner.bundles);
        for file in [
            dir.join(format!("{name}.toml")),
            dir.join(format!("{name}.owner")),
        ] {
            if let Err(e) = std::fs::remove_file(&file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(SANDBOX = name, "removing {}: {e}", file.display());
                }
            }
        }
    }

    /// Records the bus peer run `name` ends with, so that a daemon started after a crash
    /// can watch it again.
    pub fn record_owner(&self, name: &str, owner: &str) {
        let file = runs_dir(&self.inner.bundles).join(format!("{name}.owner"));
        if let Err(e) = std::fs::write(&file, owner) {
            tracing::warn!(
                SANDBOX = name,
                "recording its caller in {}: {e}",
                file.display()
            );
        }
    }

    /// The runs this daemon supervises (adopted ones included) that end with a bus peer:
    /// each run's sandbox and the peer's unique name.
    pub fn run_owners(&self) -> Vec<(SandboxInfo, String)> {
        let dir = runs_dir(&self.inner.bundles);
        self.list()
            .into_iter()
            .filter_map(|info| {
                let owner =
                    std::fs::read_to_string(dir.join(format!("{}.owner", info.name))).ok()?;
                Some((info, owner.trim().to_string()))
            })
            .collect()
    }

    fn is_taken(&self, name: &str) -> bool {
        self.table().contains_key(name)
            || !matches!(
                self.inner.store.load(name),
                Err(ProfileError::NotFound { .. })
            )
    }

    fn fresh_name(&self) -> Result<String, Error> {
        for _ in 0..16 {
            let mut bytes = [0u8; 4];
            let got = std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
            got.map_err(|e| Error::InvalidArgument(format!("/dev/urandom: {e}")))?;
            let name = format!("run-{:08x}", u32::from_ne_bytes(bytes));
            if !self.is_taken(&name) {
                return Ok(name);
            }
        }
        Err(Error::InvalidArgument(
            "no free run name after 16 tries".into(),
        ))
    }
}

/// `cwd`, resolved, when it may be bound read-write: not `/`, not the home or a folder
/// above it (the whole home would be writable), not a system folder.
fn usable_cwd(cwd: &Path, home: &Path) -> Result<PathBuf, Error> {
    let refuse = |why: &str| {
        Error::InvalidArgument(format!(
            "cannot run in {}: {why}; run from a project folder, or pass --no-cwd",
            cwd.display()
        ))
    };
    if !cwd.is_absolute() {
        return Err(refuse("not an absolute path"));
    }
    let real = cwd.canonicalize().map_err(|e| refuse(&e.to_string()))?;
    if !real.is_dir() {
        return Err(refuse("not a folder"));
    }
    if home.starts_with(&real) {
        return Err(refuse(
            "it holds your home, which the command could then change",
        ));
    }
    if SYSTEM_DIRS.iter().any(|d| real.starts_with(d)) {
        return Err(refuse("a system folder"));
    }
    if real.to_string_lossy().contains(['\0', '\n']) {
        return Err(refuse("its name cannot be bound"));
    }
    Ok(real)
}

/// The run's profile: the base profile's file (or the built-in default) with the command
/// removed (the run's command is started by exec), the folder bound and worked in, the
/// overlay on, no restarts, no autostart.
fn profile_text(base: &Profile, cwd: Option<&Path>, overlay: bool) -> Result<String, Error> {
    let invalid =
        |e: String| Error::InvalidArgument(format!("profile {:?} cannot be run: {e}", base.name));
    let mut doc: toml::Table = match &base.file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| invalid(e.to_string()))?
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?,
        None => toml::toml! {
            hostname = "sandbox"
            [rootfs]
            host = true
        },
    };
    let table = |doc: &mut toml::Table, key: &str| -> Result<toml::Table, Error> {
        match doc.remove(key) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(t)) => Ok(t),
            Some(_) => Err(invalid(format!("{key} is not a table"))),
        }
    };
    doc.insert("autostart".into(), false.into());
    doc.insert("hostname".into(), base.hostname.clone().into());
    doc.insert(
        "description".into(),
        format!("sandboxctl run of profile {}", base.name).into(),
    );
    let mut rootfs = table(&mut doc, "rootfs")?;
    rootfs.insert("overlay".into(), overlay.into());
    rootfs.insert("keep_changes".into(), false.into());
    doc.insert("rootfs".into(), rootfs.into());
    let mut process = table(&mut doc, "process")?;
    process.remove("command");
    let mut mounts = match doc.remove("mount") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(_) => return Err(invalid("mount is not an array of tables".into())),
    };
    if let Some(dir) = cwd {
        let path = dir.display().to_string();
        process.insert("cwd".into(), path.clone().into());
        let mut bind = toml::Table::new();
        bind.insert("source".into(), path.clone().into());
        bind.insert("destination".into(), path.into());
        mounts.push(bind.into());
    }
    doc.insert("process".into(), process.into());
    doc.insert("mount".into(), mounts.into());
    let mut restart = table(&mut doc, "restart")?;
    restart.insert("policy".into(), "no".into());
    doc.insert("restart".into(), restart.into());
    toml::to_string(&doc).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::parse_profile;

    #[test]
    fn a_run_profile_binds_the_folder_and_drops_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dev.toml");
        std::fs::write(
            &file,
            "description = \"x\"\n[rootfs]\nhost = true\n[process]\ncommand = [\"sleep\", \"1\"]\nuser = \"root\"\n[[mount]]\nsource = \"/tmp\"\ndestination = \"/t\"\n[restart]\npolicy = \"always\"\n",
        )
        .unwrap();
        let base = parse_profile(
            "dev",
            &file,
            &std::fs::read_to_string(&file).unwrap(),
            dir.path(),
        )
        .unwrap();
        let text = profile_text(&base, Some(dir.path()), true).unwrap();
        let run =
            parse_profile("run-1", &dir.path().join("run-1.toml"), &text, dir.path()).unwrap();
        assert_eq!(run.process.command, None);
        assert_eq!(
            run.process.cwd.as_deref(),
            Some(dir.path().to_str().unwrap())
        );
        assert_eq!(run.mounts.len(), 2);
        assert_eq!(run.mounts[1].source, dir.path());
        assert!(!run.mounts[1].readonly);
        assert!(run.rootfs.overlay && !run.rootfs.keep_changes);
        assert_eq!(run.restart.policy, crate::profile::RestartPolicy::No);
        assert_eq!(run.hostname, "dev");
        // The built-in default runs as well.
        let text = profile_text(&Profile::builtin_default(), None, false).unwrap();
        let run =
            parse_profile("run-2", &dir.path().join("run-2.toml"), &text, dir.path()).unwrap();
        assert_eq!(run.rootfs.source, crate::profile::RootfsSource::Host);
        assert!(run.mounts.is_empty() && !run.rootfs.overlay);
    }

    #[test]
    fn folders_that_would_expose_the_home_or_the_system_are_refused() {
        let home = tempfile::tempdir().unwrap();
        let project = home.path().join("src/p");
        std::fs::create_dir_all(&project).unwrap();
        assert_eq!(
            usable_cwd(&project, home.path()).unwrap(),
            project.canonicalize().unwrap()
        );
        for bad in [
            Path::new("/"),
            home.path(),
            Path::new("/etc"),
            Path::new("/usr/share"),
        ] {
            let err = usable_cwd(bad, home.path()).unwrap_err().to_string();
            assert!(err.contains("--no-cwd"), "{bad:?}: {err}");
        }
        assert!(usable_cwd(Path::new("relative"), home.path()).is_err());
        assert!(usable_cwd(&home.path().join("absent"), home.path()).is_err());
    }
}
