//! Reaps the processes runc leaves behind when it dies midway (killed during `runc create`,
//! say): the stages of `runc init` it had started. They become the daemon's children only
//! because the daemon is a subreaper, nobody waits for them, and without this they would
//! stay zombies for the daemon's lifetime.
//!
//! Only runc's processes are touched, so no other waiter loses an exit status: the
//! `runc:[N:…]` stages never are anyone's direct child, and a zombie named `runc` or
//! `exe` (runc re-executes itself through /proc/self/exe: a stage killed before it renamed
//! itself; but also the daemon's own runc calls and netns helpers) is reaped only when it
//! is still there a second later, long after the daemon's own wait would have taken it.
//! Container leaders being waited for are skipped whatever their name.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a zombie named `runc` or `exe` must stay before it counts as left behind.
const GRACE: Duration = Duration::from_secs(1);

/// Leaders whose exit [`super::wait_exit`] is collecting.
static WATCHED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Marks `pid` as waited for until dropped.
pub(crate) struct Watch(u32);

impl Watch {
    pub(crate) fn new(pid: u32) -> Self {
        WATCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
        Self(pid)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// One child of this process, from /proc.
struct ChildProc {
    pid: u32,
    comm: String,
    zombie: bool,
    /// Start time: tells a reused pid apart.
    start: u64,
}

fn children() -> Vec<ChildProc> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|pid| {
            let stat = crate::procfs::Stat::of(pid)?;
            Some(ChildProc {
                pid,
                zombie: stat.is_zombie(),
                start: stat.start_time,
                comm: stat.comm,
            })
        })
        .collect()
}

/// Live children with an open file whose path starts with `path` (deleted or not).
fn children_holding(path: &Path) -> Vec<u32> {
    let want = path.as_os_str().as_encoded_bytes();
    children()
        .into_iter()
        .filter(|c| !c.zombie)
        .filter(|c| {
            std::fs::read_dir(format!("/proc/{}/fd", c.pid)).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.as_os_str().as_encoded_bytes().starts_with(want))
                })
            })
        })
        .map(|c| c.pid)
        .collect()
}

/// Kills what a failed `runc create` of container `id` left running, and waits (bounded)
/// until it is gone: the `runc init` stages, known by the exec fifo in runc's state
/// folder they all hold. One blocked on that fifo would live for ever, and while one lives
/// its mounts keep the bundle's rootfs folder busy.
pub(crate) async fn kill_half_made(runc_root: &Path, id: &str) {
    let fifo = runc_root.join(id).join("exec.fifo");
    for _ in 0..80 {
        let holders = children_holding(&fifo);
        if holders.is_empty() {
            return;
        }
        for pid in holders {
            tracing::debug!(pid, id, "killing a runc init stage its runc left behind");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tracing::warn!(id, "runc init stages of a failed start would not die");
}

fn reap(pid: u32) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let _ = waitpid(
        nix::unistd::Pid::from_raw(pid as i32),
        Some(WaitPidFlag::WNOHANG),
    );
}

/// Zombies named `runc` or `exe`: pid → (start time, first seen).
type Suspects = HashMap<u32, (u64, Instant)>;

/// One pass: reaps what is certainly left over, returns the zombies to look at again.
fn sweep(suspects: &Suspects) -> Suspects {
    let watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut again = HashMap::new();
    for ChildProc {
        pid,
        comm,
        zombie,
        start,
    } in children()
    {
        let stage = comm.starts_with("runc:[");
        if !zombie || watched.contains(&pid) || !(stage || comm == "runc" || comm == "exe") {
            continue;
        }
        let seen = match suspects.get(&pid) {
            Some(&(s, seen)) if s == start => seen,
            _ => Instant::now(),
        };
        if stage || seen.elapsed() >= GRACE {
            tracing::debug!(pid, comm, "reaping a process runc left behind");
            reap(pid);
        } else {
            again.insert(pid, (start, seen));
        }
    }
    again
}

/// Runs for the daemon's lifetime, woken only by SIGCHLD (and, while a suspect is
/// pending, after its grace time).
pub async fn reap_orphans() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut children) = signal(SignalKind::child()) else {
        tracing::warn!("cannot watch SIGCHLD: processes runc leaves behind stay zombies");
        return;
    };
    let mut suspects = HashMap::new();
    loop {
        if suspects.is_empty() {
            if children.recv().await.is_none() {
                return;
            }
        } else {
            tokio::select! {
                _ = children.recv() => {}
                _ = tokio::time::sleep(GRACE) => {}
            }
        }
        suspects = sweep(&suspects);
    }
}
