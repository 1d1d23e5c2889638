//! The sandbox user's home (profile key `home`): mounted at the account's home directory,
//! so that it exists, owned by the user inside, before the command starts.
//!
//! A persistent home is a directory of the daemon's per sandbox, owned by you on the host.
//! The id maps show it inside as the sandbox's user whoever that is: container root is
//! you, and so is a non-root `process.user` ("keep-id").

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

use super::mounts::{bind, mount};
use super::{Account, HostContext, SpecError};
use crate::profile::{Home, Profile, RootfsSource};

/// Folders a new persistent home starts with: where desktop programs keep their settings,
/// caches, data and state (the XDG base directories), so first starts find them.
const XDG_DIRS: &[&str] = &[
    ".config",
    ".cache",
    ".local",
    ".local/share",
    ".local/state",
];

/// What is mounted at the account's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: the root file system's own (a host root's `/root` is a tmpfs already).
    Own,
    /// A fresh tmpfs owned by the user.
    Tmpfs,
    /// A host directory bound read-write; `persistent` for the daemon's own, which is
    /// created on the first start.
    Bind { source: PathBuf, persistent: bool },
}

/// Where sandbox `name`'s persistent home lives on the host.
pub fn persistent_dir(ctx: &HostContext, name: &str) -> PathBuf {
    ctx.homes.join(name)
}

/// The profile's `home` for `account`. Unset, a non-root user gets a persistent home
/// unless a writable root on disk has one for it already, not empty (it persists with the
/// tree);
/// root keeps the root file system's own. A home that cannot be mounted over (`/`, a
/// relative path in passwd) is an error when asked for, and left alone by default.
pub fn plan(profile: &Profile, ctx: &HostContext, account: &Account) -> Result<Plan, SpecError> {
    let mountable = mountable(&account.home);
    let in_tree = match &profile.rootfs.source {
        // Not empty: an empty one may be the mount point of an earlier persistent home.
        RootfsSource::Path(root) => {
            !profile.rootfs.readonly
                && std::fs::read_dir(root.join(account.home.trim_start_matches('/')))
                    .is_ok_and(|mut entries| entries.next().is_some())
        }
        RootfsSource::Host => false,
    };
    let chosen = match &profile.home {
        None if account.uid == 0 || !mountable || in_tree => return Ok(Plan::Own),
        None => Home::Persistent,
        Some(h) => h.clone(),
    };
    if !mountable {
        return Err(SpecError::Home(format!(
            "the user's home {:?} cannot have a home mounted on it; give the user a home directory in the root file system's /etc/passwd, or remove `home`",
            account.home
        )));
    }
    Ok(match chosen {
        Home::Tmpfs => Plan::Tmpfs,
        Home::Persistent => Plan::Bind {
            source: persistent_dir(ctx, &profile.name),
            persistent: true,
        },
        Home::Path(source) => {
            if !source.is_dir() {
                return Err(SpecError::Home(format!(
                    "{} is not a directory on this machine (create it, or set home = \"persistent\")",
                    source.display()
                )));
            }
            Plan::Bind {
                source,
                persistent: false,
            }
        }
    })
}

/// An absolute path below `/`, without `.` or `..`.
fn mountable(home: &str) -> bool {
    let p = Path::new(home);
    p.is_absolute()
        && p.components().count() > 1
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The mount that makes the home, if any.
pub fn mounts(plan: &Plan, account: &Account) -> Result<Vec<Mount>, SpecError> {
    Ok(match plan {
        Plan::Own => Vec::new(),
        Plan::Tmpfs => {
            let owner = format!("uid={},gid={}", account.uid, account.gid);
            vec![mount(
                &account.home,
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=0700", &owner],
            )?]
        }
        Plan::Bind { source, .. } => vec![bind(source, &account.home, false)?],
    })
}

/// Creates a persistent home the first time it is needed: mode 0700, with the XDG folders.
/// An existing one is used as it is, whatever the sandbox left in it.
pub fn prepare(plan: &Plan) -> Result<(), SpecError> {
    let Plan::Bind {
        source,
        persistent: true,
    } = plan
    else {
        return Ok(());
    };
    let failed = |e: io::Error| SpecError::HomeDir {
        path: source.clone(),
        source: e,
    };
    if let Some(parent) = source.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(failed)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(source) {
        Ok(()) => {}
        // `create` does not follow a symlink at the last component: one there is refused.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(source).map_err(failed)?;
            if !meta.is_dir() {
                return Err(failed(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                )));
            }
            return Ok(());
        }
        Err(e) => return Err(failed(e)),
    }
    for dir in XDG_DIRS {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(source.join(dir))
            .map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn account(uid: u32, home: &str) -> Account {
        Account {
            uid,
            gid: uid,
            home: home.into(),
            shell: "/bin/sh".into(),
        }
    }

    fn ctx(homes: &Path) -> HostContext {
        let mut ctx = super::super::tests::ctx();
        ctx.homes = homes.to_path_buf();
        ctx
    }

    #[test]
    fn defaults_follow_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let mut p = Profile::builtin_default();
        p.name = "dev".into();
        assert_eq!(plan(&p, &ctx, &Account::root()).unwrap(), Plan::Own);
        assert_eq!(
            plan(&p, &ctx, &account(1000, "/home/user")).unwrap(),
            Plan::Bind {
                source: dir.path().join("dev"),
                persistent: true
            }
        );
        // A writable tree that has the home keeps it; a read-only one gets a persistent home.
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("home/user")).unwrap();
        std::fs::create_dir_all(tree.path().join("home/empty")).unwrap();
        std::fs::write(tree.path().join("home/user/.profile"), b"").unwrap();
        let mut imported = p.clone();
        imported.rootfs.source = RootfsSource::Path(tree.path().into());
        imported.rootfs.readonly = false;
        let user = account(1000, "/home/user");
        assert_eq!(plan(&imported, &ctx, &user).unwrap(), Plan::Own);
        assert!(matches!(
            plan(&imported, &ctx, &account(1000, "/home/x")),
            Ok(Plan::Bind { .. })
        ));
        imported.rootfs.readonly = true;
        assert!(matches!(
            plan(&imported, &ctx, &user),
            Ok(Plan::Bind { .. })
        ));
        // A home of "/" (or a relative one) is left alone unless asked for.
        assert_eq!(plan(&p, &ctx, &account(1000, "/")).unwrap(), Plan::Own);
        assert_eq!(plan(&p, &ctx, &account(1000, "home/x")).unwrap(), Plan::Own);
        p.home = Some(Home::Tmpfs);
        assert_eq!(plan(&p, &ctx, &Account::root()).unwrap(), Plan::Tmpfs);
        let err = plan(&p, &ctx, &account(1000, "/home/../etc")).unwrap_err();
        assert!(err.to_string().starts_with("home: "), "{err}");
        p.home = Some(Home::Path(dir.path().join("absent")));
        let err = plan(&p, &ctx, &account(1000, "/home/user")).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn a_persistent_home_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("homes/dev");
        let plan = Plan::Bind {
            source: source.clone(),
            persistent: true,
        };
        prepare(&plan).unwrap();
        let mode = std::fs::metadata(&source).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(source.join(".local/share").is_dir());
        std::fs::write(source.join("kept"), b"x").unwrap();
        std::fs::remove_dir(source.join(".cache")).unwrap();
        prepare(&plan).unwrap();
        assert!(source.join("kept").is_file());
        assert!(
            !source.join(".cache").exists(),
            "an existing home is not touched"
        );

        let link = dir.path().join("homes/link");
        std::os::unix::fs::symlink("/", &link).unwrap();
        let err = prepare(&Plan::Bind {
            source: link,
            persistent: true,
        })
        .unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains("not a directory"), "{text}");
    }

    #[test]
    fn mounts_are_owned_by_the_user() {
        let a = account(1000, "/home/user");
        let m = mounts(&Plan::Tmpfs, &a).unwrap();
        assert_eq!(m[0].destination(), Path::new("/home/user"));
        let opts = m[0].options().clone().unwrap();
        assert!(opts.contains(&"uid=1000,gid=1000".to_string()), "{opts:?}");
        assert!(mounts(&Plan::Own, &a).unwrap().is_empty());
    }
}
