//! Watching a running sandbox: its pid 1's exit, the cleanup after it, the restart policy.

use super::*;

impl<R: Runtime> Supervisor<R> {
    /// Waits for the sandbox's pid 1 to exit, then cleans up and applies the restart
    /// policy, unless a stop is in charge of this run.
    pub(super) fn monitor(
        self,
        name: String,
        run_id: u64,
        pid: u32,
        exited: watch::Sender<bool>,
    ) -> BoxFuture {
        Box::pin(async move {
            let status = self.inner.runtime.wait(pid).await;
            let code = exit_code(status);
            let op = {
                let mut t = self.table();
                let Some(e) = t
                    .get_mut(&name)
                    .filter(|e| e.run.as_ref().is_some_and(|r| r.id == run_id))
                else {
                    return;
                };
                e.info.exit_status = code;
                e.op.clone()
            };
            exited.send_replace(true);
            Output::drained(&name, Duration::from_secs(2)).await;
            self.inner.logs.note(&name, &describe_exit(code));
            tracing::info!(
                SANDBOX = name.as_str(),
                pid,
                status = code,
                "sandbox pid 1 exited"
            );
            let _op = op.lock().await;
            let (restart, restarts) = {
                let t = self.table();
                let Some(e) = t.get(&name) else { return };
                match &e.run {
                    Some(r) if r.id == run_id && !r.stop_requested => {}
                    _ => return,
                }
                (e.restart.clone(), e.info.restarts)
            };
            for err in self.teardown(&name, true).await {
                tracing::warn!(
                    SANDBOX = name.as_str(),
                    "cleanup after exit: {}",
                    crate::error_chain(&err)
                );
            }
            let again = match restart.policy {
                RestartPolicy::No => false,
                RestartPolicy::OnFailure => code != 0,
                RestartPolicy::Always => true,
            } && restarts < restart.max;
            if again {
                self.update(&name, Some(run_id), |e| {
                    e.info.state = State::Starting;
                    e.info.leader = 0;
                    e.run = None;
                });
                let result = match self.inner.store.load(&name) {
                    Ok(profile) => self.launch(&profile, restarts + 1).await,
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = result {
                    let why = crate::error_chain(&e);
                    tracing::warn!(SANDBOX = name.as_str(), "restart failed: {why}");
                    self.inner
                        .logs
                        .note(&name, &format!("restart failed: {why}"));
                    self.update(&name, None, |e| {
                        e.info.state = State::Failed;
                        e.info.restarts = restarts + 1;
                    });
                }
            } else {
                self.update(&name, Some(run_id), |e| {
                    e.info.state = if code == 0 {
                        State::Stopped
                    } else {
                        State::Failed
                    };
                    e.info.leader = 0;
                    e.run = None;
                });
            }
        })
    }
}
