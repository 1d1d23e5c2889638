//! Resolving `process.user` against the sandbox's own `/etc/passwd` (passwd(5)), read from
//! the host side before the sandbox exists.

use std::path::Path;

use crate::profile::User;

/// Who the sandbox's main process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Login shell; `/bin/sh` when the entry has none.
    pub shell: String,
}

impl Account {
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
        }
    }
}

/// Looks `user` up in `passwd`. A numeric id absent from the file still works, with gid =
/// uid, home `/home/UID` and shell `/bin/sh`; a name absent from it is an error.
pub fn resolve(passwd: &Path, user: &User) -> Result<Account, String> {
    let text = std::fs::read_to_string(passwd).unwrap_or_default();
    let entry = text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        let matches = match user {
            User::Id(id) => *id == uid,
            User::Name(n) => n == f[0],
        };
        let shell = if f[6].is_empty() { "/bin/sh" } else { f[6] };
        matches.then(|| Account {
            uid,
            gid: f[3].parse().unwrap_or(uid),
            home: f[5].to_string(),
            shell: shell.to_string(),
        })
    });
    match (entry, user) {
        (Some(a), _) => Ok(a),
        (None, User::Id(0)) => Ok(Account::root()),
        (None, User::Id(id)) => Ok(Account {
            uid: *id,
            gid: *id,
            home: format!("/home/{id}"),
            shell: "/bin/sh".into(),
        }),
        (None, User::Name(n)) => Err(format!("user {n:?} is not in {}", passwd.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("passwd");
        std::fs::write(
            &f,
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:100::/home/user:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(
            resolve(&f, &User::Name("user".into())).unwrap(),
            Account {
                uid: 1000,
                gid: 100,
                home: "/home/user".into(),
                shell: "/bin/sh".into(),
            }
        );
        assert_eq!(resolve(&f, &User::Id(0)).unwrap(), Account::root());
        assert_eq!(resolve(&f, &User::Id(42)).unwrap().home, "/home/42");
        assert!(resolve(&f, &User::Name("ghost".into())).is_err());
    }
}
