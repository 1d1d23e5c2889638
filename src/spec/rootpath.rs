//! Paths inside a root file system on disk, looked up as the sandbox will see them:
//! symlinks followed (absolute ones from the sandbox's `/`), never leaving the tree. Used
//! before start to refuse a `process.command` or `process.cwd` that cannot exist there.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Symbolic links followed in one lookup at most, as the kernel's limit (path_resolution(7)).
const MAX_LINKS: usize = 40;

/// The host path of `path` (absolute, as seen inside) in the tree at `root`, or `None`
/// when a component is missing or the links go round.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: VecDeque<String> = components(path).collect();
    let mut at: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => at.push(c),
        }
        let host = join(root, &at);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let target = target.to_string_lossy();
            at.pop();
            if target.starts_with('/') {
                at.clear();
            }
            for (i, t) in components(&target).enumerate() {
                todo.insert(i, t);
            }
        }
    }
    Some(join(root, &at))
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

/// What is wrong with `program` as the command of a sandbox whose root is `root`, if
/// anything.
pub fn check_program(root: &Path, program: &str) -> Result<(), String> {
    let Some(host) = resolve(root, program) else {
        return Err(format!(
            "{program:?} does not exist in the root file system {}",
            root.display()
        ));
    };
    match std::fs::metadata(&host) {
        Ok(m) if m.is_dir() => Err(format!("{program:?} is a directory")),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(format!(
            "{program:?} is not executable (mode {:o})",
            m.permissions().mode() & 0o7777
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{program:?}: {e}")),
    }
}

/// Whether `dir` is a directory in the tree at `root`.
pub fn is_dir(root: &Path, dir: &str) -> bool {
    resolve(root, dir).is_some_and(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_followed_inside_the_tree_only() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("usr/bin/python3.11"), "").unwrap();
        std::fs::set_permissions(
            root.join("usr/bin/python3.11"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(root.join("usr/bin/data"), "").unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("python3.11", root.join("usr/bin/python3")).unwrap();
        // An absolute link means the sandbox's `/`, not the host's.
        symlink("/usr/bin/python3", root.join("usr/bin/py")).unwrap();
        symlink("/etc/passwd", root.join("usr/bin/hostlink")).unwrap();
        symlink("../../../../../../etc", root.join("usr/escape")).unwrap();
        symlink("loop", root.join("loop")).unwrap();

        assert_eq!(check_program(root, "/bin/python3"), Ok(()));
        assert_eq!(check_program(root, "/usr/bin/py"), Ok(()));
        assert!(check_program(root, "/usr/bin/nosuch")
            .unwrap_err()
            .contains("does not exist"));
        assert!(check_program(root, "/usr/bin/data")
            .unwrap_err()
            .contains("not executable"));
        assert!(check_program(root, "/usr")
            .unwrap_err()
            .contains("directory"));
        assert!(
            check_program(root, "/usr/bin/hostlink").is_err(),
            "the host's /etc/passwd"
        );
        assert_eq!(resolve(root, "/usr/escape"), Some(root.join("etc")));
        assert_eq!(resolve(root, "/loop"), None);
        assert!(is_dir(root, "/bin"));
        assert!(!is_dir(root, "/nowhere"));
    }
}
