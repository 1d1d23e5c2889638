//! The proxy's own thread: a single-threaded runtime for every connection and flow, and
//! the helper's lifetime watch.

/// A single-threaded runtime on a thread of its own, for the proxy's connections; the
/// current runtime where one cannot be made.
pub fn proxy_runtime() -> tokio::runtime::Handle {
    // Built on its thread, so that no runtime is ever dropped inside another.
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("sandboxd-proxy".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    slice_hint();
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    let why = match spawned.map(|_| rx.recv()) {
        Ok(Ok(Ok(handle))) => return handle,
        Ok(Ok(Err(e))) | Err(e) => e.to_string(),
        Ok(Err(e)) => e.to_string(),
    };
    tracing::warn!("the proxy shares the daemon's runtime: {why}");
    tokio::runtime::Handle::current()
}

/// Asks the scheduler for short slices on the calling thread (`sched_runtime` of
/// SCHED_OTHER, Linux 6.12 and later): the proxy works in bursts of microseconds, and a
/// short requested slice lets such a burst preempt a busy thread on wake-up instead of
/// waiting for its slice to end. Older kernels refuse or ignore it; nothing depends on it.
fn slice_hint() {
    /// `struct sched_attr` (include/uapi/linux/sched/types.h); libc has no binding.
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    const SLICE_NS: u64 = 100_000;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: SLICE_NS,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_setattr(2) on this thread (0) with a valid, fully initialised struct of
    // the size it states.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r != 0 {
        tracing::debug!(
            "no short slices for the proxy: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Ends a helper that will not be used (a failed attach).
pub async fn end_helper(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Keeps sandbox `who`'s helper exactly as long as its proxy: ended at detach (`stop`);
/// if it dies first, `cut` ends every connection and flow of the sandbox.
pub fn watch_helper(
    mut child: tokio::process::Child,
    stop: tokio_util::sync::CancellationToken,
    cut: tokio_util::sync::CancellationToken,
    who: String,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => end_helper(&mut child).await,
            status = child.wait() => {
                if stop.is_cancelled() {
                    return; // detached: the helper ended with its control socket
                }
                tracing::warn!(SANDBOX = who.as_str(), ?status, "netns helper exited: the sandbox has no network now");
                cut.cancel();
            }
        }
    });
}
