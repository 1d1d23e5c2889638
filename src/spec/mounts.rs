//! The sandbox's mounts: the kernel file systems every sandbox has, the host-root view,
//! and binds whose flags hold at every depth.

use std::path::Path;

use oci_spec::runtime::{Mount, MountBuilder};

use super::{HostContext, SpecError, HOST_ETC};

pub(super) fn mount(
    dest: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// A bind of a host path and every mount below it, with its flags applied at every depth:
/// `ro`, `nosuid` and `nodev` act on the top mount only, so their recursive forms (runc ≥
/// 1.1: mount_setattr with AT_RECURSIVE) carry them to every submount. Without them a
/// read-only bind of a home with a FUSE mount below, or of `/`, is writable underneath.
pub(super) fn bind(source: &Path, dest: &str, readonly: bool) -> Result<Mount, SpecError> {
    bind_with(source, dest, readonly, true)
}

/// [`bind`], keeping device nodes usable (`nodev` left out) for device binds.
pub(super) fn bind_with(
    source: &Path,
    dest: &str,
    readonly: bool,
    nodev: bool,
) -> Result<Mount, SpecError> {
    let mut opts = vec!["rbind", "nosuid", "rnosuid"];
    if nodev {
        opts.extend(["nodev", "rnodev"]);
    }
    if readonly {
        opts.extend(["ro", "rro"]);
    }
    mount(dest, "bind", &source.to_string_lossy(), &opts)
}

/// The kernel file systems every sandbox has (the runc rootless defaults, with a sysfs of
/// the sandbox's own network namespace rather than a bind of the host's).
pub(super) fn base_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

/// Mounts that turn an empty root into a view of the host's `/usr` (DESIGN §4
/// `rootfs.host`): `/usr` and parts of `/etc` read-only, private `/tmp`, `/home`, `/run`,
/// `/var`, `/root`. The merged-/usr symlinks are created in the bundle's root by [`Bundle`].
pub(super) fn host_root_mounts(ctx: &HostContext) -> Result<Vec<Mount>, SpecError> {
    let mut out = vec![bind(Path::new("/usr"), "/usr", true)?];
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let p = Path::new(dir);
        // A host without merged /usr has real directories here: bind them too.
        if p.is_dir() && !p.is_symlink() {
            out.push(bind(p, dir, true)?);
        }
    }
    out.push(mount(
        "/etc",
        "tmpfs",
        "tmpfs",
        &["nosuid", "nodev", "mode=755", "size=16m"],
    )?);
    for entry in HOST_ETC {
        let src = ctx.etc.join(entry);
        if src.exists() {
            out.push(bind(&src, &format!("/etc/{entry}"), true)?);
        }
    }
    for (dir, mode) in [
        ("/tmp", "1777"),
        ("/var/tmp", "1777"),
        ("/home", "755"),
        ("/run", "755"),
        ("/root", "700"),
    ] {
        let opts = ["nosuid", "nodev", &format!("mode={mode}")];
        let parent_var = dir == "/var/tmp";
        if parent_var {
            out.push(mount(
                "/var",
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=755"],
            )?);
        }
        out.push(mount(dir, "tmpfs", "tmpfs", &opts)?);
    }
    Ok(out)
}
