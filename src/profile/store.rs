//! Where profiles live: `$XDG_CONFIG_HOME/sandboxd/profiles/NAME.toml`, then
//! `/etc/sandboxd/profiles/NAME.toml`; the built-in `default` when neither has it.

use std::path::{Path, PathBuf};

use super::{parse_profile, validate_name, Profile, ProfileError, DEFAULT_PROFILE};

/// One row of `ListProfiles`: a name, its file ("" for the built-in) and "" or its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileEntry {
    pub name: String,
    pub file: String,
    pub error: String,
    /// The profile's `description` ("" when it has none or is invalid).
    pub description: String,
}

/// The ordered profile directories and the home directory `~` expands to.
#[derive(Debug, Clone)]
pub struct ProfileStore {
    pub dirs: Vec<PathBuf>,
    pub home: PathBuf,
}

impl ProfileStore {
    /// The XDG search path of DESIGN §4 for the current user.
    pub fn from_env() -> Self {
        Self {
            dirs: vec![
                crate::paths::config_home().join("sandboxd/profiles"),
                PathBuf::from("/etc/sandboxd/profiles"),
            ],
            home: crate::paths::home(),
        }
    }

    /// Loads profile `name`, searching the directories in order.
    pub fn load(&self, name: &str) -> Result<Profile, ProfileError> {
        validate_name(name)?;
        for dir in &self.dirs {
            let file = dir.join(format!("{name}.toml"));
            match std::fs::read_to_string(&file) {
                Ok(src) => return parse_profile(name, &file, &src, &self.home),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ProfileError::Read { path: file, source }),
            }
        }
        if name == DEFAULT_PROFILE {
            return Ok(Profile::builtin_default());
        }
        let searched = self
            .dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(ProfileError::NotFound {
            name: name.to_string(),
            searched,
        })
    }

    /// Loads a profile from an explicit file; its name is the file's stem.
    pub fn load_file(&self, file: &Path) -> Result<Profile, ProfileError> {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        validate_name(name)?;
        let src = std::fs::read_to_string(file).map_err(|source| ProfileError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        parse_profile(name, file, &src, &self.home)
    }

    /// Every profile visible on the search path (the first of each name wins), each with
    /// its validation result, plus the built-in default unless a file overrides it.
    pub fn list(&self) -> Vec<ProfileEntry> {
        let mut out: Vec<ProfileEntry> = Vec::new();
        for dir in &self.dirs {
            let Ok(read) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = read
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for file in files {
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_string();
                if out.iter().any(|e| e.name == name) {
                    continue;
                }
                let (error, description) = match self.load_file(&file) {
                    Ok(p) => (String::new(), p.description),
                    Err(e) => (crate::error_chain(&e), String::new()),
                };
                out.push(ProfileEntry {
                    name,
                    file: file.display().to_string(),
                    error,
                    description,
                });
            }
        }
        if !out.iter().any(|e| e.name == DEFAULT_PROFILE) {
            out.push(ProfileEntry {
                name: DEFAULT_PROFILE.into(),
                file: String::new(),
                error: String::new(),
                description: super::Profile::builtin_default().description,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dirs: &[&Path]) -> ProfileStore {
        ProfileStore {
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
            home: "/".into(),
        }
    }

    #[test]
    fn search_order_and_builtin_default() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(
            a.path().join("x.toml"),
            "description = \"first\"\n[rootfs]\nhost = true\n",
        )
        .unwrap();
        std::fs::write(
            b.path().join("x.toml"),
            "description = \"second\"\n[rootfs]\nhost = true\n",
        )
        .unwrap();
        std::fs::write(b.path().join("broken.toml"), "[rootfs]\nnope = 1\n").unwrap();
        let s = store(&[a.path(), b.path()]);
        assert_eq!(s.load("x").unwrap().description, "first");
        assert_eq!(s.load("default").unwrap(), Profile::builtin_default());
        assert!(matches!(
            s.load("absent"),
            Err(ProfileError::NotFound { .. })
        ));
        assert!(matches!(s.load("../x"), Err(ProfileError::InvalidName(_))));
        let list = s.list();
        let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["broken", "default", "x"]);
        assert!(
            list[0].error.contains("broken.toml:2:1: rootfs.nope"),
            "{}",
            list[0].error
        );
        assert!(list[2].file.starts_with(&a.path().display().to_string()));
    }
}
