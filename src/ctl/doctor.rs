//! `sandboxctl doctor`: checks what sandboxd needs from this machine and this session,
//! and says exactly what to fix. Exit status 1 when anything required is missing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::spec::{subordinate_range, SUBORDINATE_SPAN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works, but something is missing that some profiles need.
    Warn,
    /// sandboxd cannot work.
    Fail,
}

pub struct Finding {
    pub level: Level,
    pub what: String,
    pub detail: String,
    pub fix: Option<String>,
}

fn finding(level: Level, what: &str, detail: impl Into<String>, fix: Option<String>) -> Finding {
    Finding {
        level,
        what: what.into(),
        detail: detail.into(),
        fix,
    }
}

fn read_number(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn user_namespaces() -> Finding {
    let what = "user namespaces";
    if read_number("/proc/sys/user/max_user_namespaces") == Some(0) {
        return finding(
            Level::Fail,
            what,
            "disabled (user.max_user_namespaces = 0)",
            Some("sudo sysctl -w user.max_user_namespaces=15000".into()),
        );
    }
    if read_number("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return finding(
            Level::Fail,
            what,
            "unprivileged ones are disabled",
            Some("sudo sysctl -w kernel.unprivileged_userns_clone=1".into()),
        );
    }
    if read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return finding(
            Level::Fail,
            what,
            "AppArmor restricts unprivileged user namespaces",
            Some("allow runc in an AppArmor profile (see /etc/apparmor.d/), or sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0".into()),
        );
    }
    match Command::new("unshare")
        .args(["--user", "true"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => {
            finding(Level::Ok, what, "an unprivileged one can be made", None)
        }
        Ok(o) => finding(
            Level::Fail,
            what,
            format!(
                "cannot make one: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            None,
        ),
        Err(e) => finding(
            Level::Warn,
            what,
            format!("could not test with unshare(1): {e}"),
            Some("sudo apt-get install util-linux".into()),
        ),
    }
}

fn subordinate_ids(user: &str, uid: u32) -> Vec<Finding> {
    let fix =
        format!("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}");
    [("/etc/subuid", "subordinate uids"), ("/etc/subgid", "subordinate gids")]
        .into_iter()
        .map(|(file, what)| match subordinate_range(Path::new(file), user, uid) {
            None => finding(Level::Fail, what, format!("none for {user} in {file}: sandboxes cannot map a user to you or run package managers"), Some(fix.clone())),
            Some((start, count)) if count < SUBORDINATE_SPAN => {
                finding(Level::Warn, what, format!("{start}-{} is fewer than {SUBORDINATE_SPAN}", start + count - 1), Some(fix.clone()))
            }
            Some((start, count)) => finding(Level::Ok, what, format!("{start}-{} in {file}", start + count - 1), None),
        })
        .collect()
}

fn id_mappers() -> Vec<Finding> {
    ["newuidmap", "newgidmap"]
        .into_iter()
        .map(|tool| match find_program(tool) {
            None => finding(
                Level::Fail,
                tool,
                "not installed",
                Some("sudo apt-get install uidmap".into()),
            ),
            Some(p) => {
                let setuid = std::fs::metadata(&p)
                    .map(|m| m.permissions().mode() & 0o4000 != 0)
                    .unwrap_or(false);
                let caps = Command::new("getcap")
                    .arg(&p)
                    .output()
                    .map(|o| !o.stdout.is_empty())
                    .unwrap_or(false);
                if setuid || caps {
                    finding(Level::Ok, tool, p.display().to_string(), None)
                } else {
                    finding(
                        Level::Fail,
                        tool,
                        format!(
                            "{} is neither setuid nor has file capabilities",
                            p.display()
                        ),
                        Some("sudo apt-get install --reinstall uidmap".into()),
                    )
                }
            }
        })
        .collect()
}

fn runc() -> Finding {
    let Some(p) = find_program("runc") else {
        return finding(
            Level::Fail,
            "runc",
            "not installed",
            Some("sudo apt-get install runc".into()),
        );
    };
    let out = Command::new(&p).arg("--version").output();
    let version = out
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let number = version.split_whitespace().nth(2).unwrap_or("");
    let mut parts = number
        .split(['.', '+', '-', '~'])
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (1, 1) {
        finding(
            Level::Ok,
            "runc",
            format!("{} ({version})", p.display()),
            None,
        )
    } else {
        finding(
            Level::Fail,
            "runc",
            format!("{version:?} is older than 1.1"),
            Some("install runc 1.1 or newer".into()),
        )
    }
}

/// The programs of a filtered session bus (`[dbus]`) and of the portals' app identity.
fn bus_programs() -> Vec<Finding> {
    use crate::busproxy::process::{BWRAP, PROGRAM};
    let check = |program: &str, what: &str, needed: &str, package: &str| match find_program(program)
    {
        Some(p) => finding(Level::Ok, what, format!("{} ({needed})", p.display()), None),
        None => finding(
            Level::Warn,
            what,
            format!("{program} is not installed: {needed} cannot start"),
            Some(format!("sudo apt install {package}")),
        ),
    };
    vec![
        check(
            PROGRAM,
            "D-Bus proxy",
            "profiles with a [dbus] table",
            "xdg-dbus-proxy",
        ),
        check(
            BWRAP,
            "bubblewrap",
            "profiles with dbus.portals",
            "bubblewrap",
        ),
    ]
}

fn find_init() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("sandbox-init")));
    beside
        .into_iter()
        .chain([PathBuf::from("/usr/lib/sandboxd/sandbox-init")])
        .find(|p| p.is_file())
}

fn init_binary() -> Finding {
    match find_init() {
        None => finding(
            Level::Fail,
            "sandbox-init",
            "not found next to sandboxctl or in /usr/lib/sandboxd",
            Some("make install".into()),
        ),
        Some(p) if crate::daemon::is_static_elf(&p) => finding(
            Level::Ok,
            "sandbox-init",
            format!("{} (static)", p.display()),
            None,
        ),
        Some(p) => finding(
            Level::Fail,
            "sandbox-init",
            format!("{} is dynamically linked", p.display()),
            Some("make install (it builds a static one)".into()),
        ),
    }
}

async fn session(env: &crate::spec::SessionEnv) -> Vec<Finding> {
    let mut out = Vec::new();
    match std::env::var("XDG_RUNTIME_DIR") {
        Ok(d) if Path::new(&d).is_dir() => out.push(finding(Level::Ok, "XDG_RUNTIME_DIR", d, None)),
        _ => out.push(finding(
            Level::Fail,
            "XDG_RUNTIME_DIR",
            "not set: not in a user session",
            Some("log in normally, or export XDG_RUNTIME_DIR=/run/user/$(id -u)".into()),
        )),
    }
    match zbus::Connection::session().await {
        Err(e) => out.push(finding(
            Level::Fail,
            "session bus",
            e.to_string(),
            Some("sudo apt-get install dbus-user-session, then log in again".into()),
        )),
        Ok(conn) => {
            out.push(finding(Level::Ok, "session bus", "connected", None));
            let dbus = zbus::fdo::DBusProxy::new(&conn).await;
            let activatable = match &dbus {
                Ok(p) => p
                    .list_activatable_names()
                    .await
                    .map(|n| n.iter().any(|x| x.as_str() == crate::bus::BUS_NAME))
                    .unwrap_or(false),
                Err(_) => false,
            };
            let owned = match &dbus {
                Ok(p) => p
                    .name_has_owner(crate::bus::BUS_NAME.try_into().expect("valid bus name"))
                    .await
                    .unwrap_or(false),
                Err(_) => false,
            };
            out.push(match (owned, activatable) {
                (true, _) => finding(Level::Ok, "sandboxd", "running", None),
                (false, true) => finding(
                    Level::Ok,
                    "sandboxd",
                    "not running; starts on first use (D-Bus activation)",
                    None,
                ),
                (false, false) => finding(
                    Level::Fail,
                    "sandboxd",
                    "neither running nor activatable",
                    Some("make install && systemctl --user daemon-reload".into()),
                ),
            });
        }
    }
    let socket = |var: &str, default: &str| -> Option<PathBuf> {
        let v = env.get(var).cloned().unwrap_or_else(|| default.to_string());
        if v.is_empty() {
            return None;
        }
        let v = v.strip_prefix("unix:").unwrap_or(&v).to_string();
        Some(if v.starts_with('/') {
            PathBuf::from(v)
        } else {
            PathBuf::from(env.get("XDG_RUNTIME_DIR").cloned().unwrap_or_default()).join(v)
        })
    };
    for (what, var, default, key) in [
        ("Wayland", "WAYLAND_DISPLAY", "", "gui.wayland"),
        (
            "PulseAudio",
            "PULSE_SERVER",
            "pulse/native",
            "audio.pulseaudio",
        ),
    ] {
        out.push(match socket(var, default) {
            // A socket left by a server that died still exists: connect to be sure.
            Some(p) if std::os::unix::net::UnixStream::connect(&p).is_ok() => {
                finding(Level::Ok, what, p.display().to_string(), None)
            }
            _ => finding(
                Level::Warn,
                what,
                format!("no socket in the session: profiles with {key} = true will not start"),
                Some(
                    "start it, or run `systemctl --user import-environment` after it started"
                        .into(),
                ),
            ),
        });
    }
    out
}

fn cgroups(uid: u32) -> Finding {
    let what = "cgroup delegation";
    let enforcement = crate::cgroups::Enforcement::detect(uid);
    match enforcement {
        crate::cgroups::Enforcement::SystemdScopes => {
            finding(Level::Ok, what, enforcement.describe(), None)
        }
        crate::cgroups::Enforcement::Rlimits { .. } => finding(
            Level::Warn,
            what,
            enforcement.describe(),
            Some("boot with the unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1): systemd then delegates memory and pids to user@.service".into()),
        ),
    }
}

/// Sets up a sandbox's network the way the daemon does, in a throwaway user and network
/// namespace: the netns helper (`sandboxd netns-helper`) adds the veth pair, routes, the
/// policy rule, the nf_tables table with its `tproxy` rule and the transparent listeners.
async fn transparent_proxy() -> Finding {
    let what = "transparent proxy";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("sandboxd")))
        .filter(|p| p.is_file());
    let Some(daemon) = beside.or_else(|| find_program("sandboxd")) else {
        return finding(
            Level::Fail,
            what,
            "sandboxd not found next to sandboxctl or on PATH",
            Some("make install".into()),
        );
    };
    let target = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn();
    let mut target = match target {
        Ok(t) => t,
        Err(e) => {
            return finding(
                Level::Warn,
                what,
                format!("could not test with unshare(1): {e}"),
                Some("sudo apt-get install util-linux".into()),
            )
        }
    };
    // unshare(1) is exec'd into sleep once the namespaces exist.
    let pid = target.id();
    let own_net = std::fs::read_link("/proc/self/ns/net").ok();
    for _ in 0..100 {
        if std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != own_net
            && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("sleep"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let result = match crate::netns::spawn(&daemon) {
        Ok(mut helper) => {
            let r = helper
                .client
                .join(pid, std::time::Duration::from_secs(5))
                .await;
            let _ = helper.child.start_kill();
            let _ = helper.child.wait().await;
            r.map(drop).map_err(|e| crate::error_chain(&e))
        }
        Err(e) => Err(crate::error_chain(&e)),
    };
    let _ = target.kill();
    let _ = target.wait();
    match result {
        Ok(()) => finding(
            Level::Ok,
            what,
            "nf_tables tproxy, policy routing and transparent sockets work in a new namespace",
            None,
        ),
        Err(e) => finding(
            Level::Fail,
            what,
            format!("a sandbox's network cannot be set up: {e}"),
            Some("a kernel with nf_tables and its tproxy and socket expressions (CONFIG_NFT_TPROXY, CONFIG_NFT_SOCKET), veth and policy routing; network.mode = \"none\" profiles still work".into()),
        ),
    }
}

/// Runs a throwaway sandbox with the spec a default profile gets and reads, from inside,
/// that its seccomp filter is applied and a nested user namespace is refused. Its binds use
/// the recursive flags (`rro`, `rnosuid`, `rnodev`): a runc or kernel without them fails
/// the start, so a sandbox is never started half read-only, and this check says so.
async fn seccomp(init: Option<PathBuf>) -> Finding {
    let what = "seccomp filter";
    let (Some(init), Some(runc)) = (init, find_program("runc")) else {
        return finding(
            Level::Warn,
            what,
            "not checked: runc or sandbox-init is missing",
            None,
        );
    };
    let dir = std::env::temp_dir().join(format!("sandboxd-doctor-{}", std::process::id()));
    let result = seccomp_probe(&dir, init, runc).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => finding(
            Level::Ok,
            what,
            "runc applies it (Seccomp: 2 inside), nested user namespaces are refused, and binds are read-only, nosuid and nodev at every depth (rro)",
            None,
        ),
        Err(e) => finding(
            Level::Fail,
            what,
            format!("a sandbox cannot start as sandboxd builds it: {e}"),
            Some("runc ≥ 1.1 built with libseccomp (Debian 12's runc is) and a kernel with mount_setattr (≥ 5.12) for recursive read-only binds".into()),
        ),
    }
}

async fn seccomp_probe(dir: &Path, init: PathBuf, runc: PathBuf) -> Result<(), String> {
    use crate::profile::{NetworkMode, Profile};
    use crate::spec::{Bundle, HostContext, SessionEnv};
    let mut profile = Profile::builtin_default();
    profile.network.mode = NetworkMode::None;
    profile.process.command = Some(
        [
            "/bin/sh",
            "-c",
            "grep ^Seccomp: /proc/self/status; unshare --user true 2>/dev/null; echo nested=$?",
        ]
        .map(String::from)
        .to_vec(),
    );
    let bundle = Bundle::prepare(dir.join("bundle"), true).map_err(|e| crate::error_chain(&e))?;
    let spec = crate::spec::build(
        &profile,
        &HostContext::current(init),
        &bundle.host_root(),
        &SessionEnv::new(),
        None,
        None,
    )
    .map_err(|e| crate::error_chain(&e))?;
    bundle
        .write_spec(&spec)
        .map_err(|e| crate::error_chain(&e))?;
    let id = format!("doctor-{}", std::process::id());
    let out = crate::runtime::Runc::new(runc, dir.join("runc"))
        .run_once(&id, &bundle.dir)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    let text = String::from_utf8_lossy(&out);
    let seccomp = text
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim);
    match (seccomp, text.contains("nested=1")) {
        (Some("2"), true) => Ok(()),
        (Some("2"), false) => Err(format!(
            "a nested user namespace was allowed ({})",
            text.trim()
        )),
        _ => Err(format!("inside, /proc/self/status says {:?}", text.trim())),
    }
}

/// Runs every check.
pub async fn run() -> Vec<Finding> {
    let uid = nix::unistd::getuid().as_raw();
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let env = {
        use crate::environ::SessionSource;
        match zbus::Connection::session().await {
            Ok(conn) => crate::environ::ManagerEnvironment { conn }.current().await,
            Err(_) => std::env::vars().collect(),
        }
    };
    let mut out = vec![user_namespaces()];
    out.extend(subordinate_ids(&user, uid));
    out.extend(id_mappers());
    out.push(runc());
    out.push(init_binary());
    out.push(seccomp(find_init().filter(|p| crate::daemon::is_static_elf(p))).await);
    out.push(transparent_proxy().await);
    out.extend(bus_programs());
    out.extend(session(&env).await);
    out.push(cgroups(uid));
    out
}

/// Prints the findings; returns true when nothing failed.
pub fn report(findings: &[Finding]) -> bool {
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("{tag}  {:<18} {}", f.what, f.detail);
        if let (Some(fix), false) = (&f.fix, f.level == Level::Ok) {
            println!("      {:<18} fix: {fix}", "");
        }
    }
    !findings.iter().any(|f| f.level == Level::Fail)
}
