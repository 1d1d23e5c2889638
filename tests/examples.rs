//! Every file under etc/ validates: the example profiles (against a home that has the
//! folders they name) and the example daemon configuration.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sandboxd::config::DaemonConfig;
use sandboxd::profile::ProfileStore;

const ETC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc");

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

#[test]
fn example_profiles_validate() {
    let home = tempfile::tempdir().unwrap();
    for dir in [
        ".local/share/sandboxd/rootfs/arch",
        ".local/share/sandboxd/rootfs/busybox",
        "code/project",
        "work/agent",
    ] {
        std::fs::create_dir_all(home.path().join(dir)).unwrap();
    }
    std::fs::write(home.path().join(".gitconfig"), "").unwrap();
    let store = ProfileStore {
        dirs: vec![PathBuf::from(ETC).join("profiles")],
        home: home.path().into(),
    };
    let profiles = files(&PathBuf::from(ETC).join("profiles"));
    assert!(
        profiles.len() >= 3,
        "expected example profiles in etc/profiles"
    );
    for file in profiles {
        assert_eq!(
            file.extension().and_then(|e| e.to_str()),
            Some("toml"),
            "{}",
            file.display()
        );
        let p = store
            .load_file(&file)
            .unwrap_or_else(|e| panic!("{}", sandboxd::error_chain(&e)));
        assert!(
            p.unsupported_features().is_empty(),
            "{}: example asks for {:?}",
            file.display(),
            p.unsupported_features()
        );
    }
    // The listing sees them too, each without an error.
    for entry in store.list() {
        assert_eq!(entry.error, "", "{}", entry.name);
    }
}

#[test]
fn example_daemon_config_validates() {
    let config = DaemonConfig::load(&PathBuf::from(ETC).join("sandboxd.toml")).unwrap();
    assert_eq!(config.runc, Some(PathBuf::from("/usr/sbin/runc")));
    for file in files(Path::new(ETC)) {
        assert!(
            file.is_dir() || file.file_name().unwrap() == "sandboxd.toml",
            "unchecked file under etc/: {}",
            file.display()
        );
    }
}
