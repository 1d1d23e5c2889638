//! The denial log: every refused connection, flow or name is counted, logged with
//! structured fields (SANDBOX, DESTINATION, PORT, REASON), kept in a short per-sandbox
//! history and announced (the bus turns it into the `ConnectionDenied` signal), so a user
//! can see what to allow. A flood of refusals is summarised instead of announced one by
//! one: the bus and the journal stay usable while a hostile sandbox hammers the policy.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals kept per sandbox for `sandboxctl netlog`.
const HISTORY: usize = 200;
/// Refusals announced per sandbox per second; the rest are counted and summarised.
const ANNOUNCE_PER_SECOND: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub sandbox: String,
    /// An address, or a name when the sandbox asked by name.
    pub destination: String,
    pub port: u16,
    pub reason: String,
    /// µs since the epoch.
    pub at: u64,
}

/// Where announced refusals go (the daemon forwards them to the bus).
pub type Announce = std::sync::Arc<dyn Fn(Denied) + Send + Sync>;

struct Window {
    start: Instant,
    announced: u32,
    suppressed: u64,
}

pub struct DenialLog {
    history: Mutex<VecDeque<Denied>>,
    window: Mutex<Window>,
}

impl Default for DenialLog {
    fn default() -> Self {
        Self {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            window: Mutex::new(Window {
                start: Instant::now(),
                announced: 0,
                suppressed: 0,
            }),
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl DenialLog {
    /// Records one refusal; announces it unless this second's budget is spent.
    pub fn record(
        &self,
        sandbox: &str,
        destination: String,
        port: u16,
        reason: &str,
        announce: Option<&Announce>,
    ) {
        let d = Denied {
            sandbox: sandbox.into(),
            destination,
            port,
            reason: reason.into(),
            at: now_us(),
        };
        {
            let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(d.clone());
        }
        let (announce_it, summary) = {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let mut summary = None;
            if w.start.elapsed() >= Duration::from_secs(1) {
                if w.suppressed > 0 {
                    summary = Some(w.suppressed);
                }
                *w = Window {
                    start: Instant::now(),
                    announced: 0,
                    suppressed: 0,
                };
            }
            if w.announced < ANNOUNCE_PER_SECOND {
                w.announced += 1;
                (true, summary)
            } else {
                w.suppressed += 1;
                (false, summary)
            }
        };
        if let Some(n) = summary {
            tracing::warn!(
                SANDBOX = sandbox,
                SUPPRESSED = n,
                "{n} more refusals in the last second were not logged one by one"
            );
        }
        if announce_it {
            tracing::info!(
                SANDBOX = sandbox,
                DESTINATION = d.destination.as_str(),
                PORT = port,
                REASON = reason,
                "connection denied"
            );
            if let Some(a) = announce {
                a(d);
            }
        }
    }

    /// The most recent refusals, oldest first.
    pub fn recent(&self) -> Vec<Denied> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_flood_is_kept_in_history_but_announced_within_budget() {
        let log = DenialLog::default();
        let seen = Arc::new(AtomicU32::new(0));
        let counter = seen.clone();
        let announce: Announce = Arc::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        for i in 0..1000u16 {
            log.record(
                "box",
                format!("10.0.0.{}", i % 250),
                i,
                "test",
                Some(&announce),
            );
        }
        assert_eq!(seen.load(Ordering::Relaxed), ANNOUNCE_PER_SECOND);
        let recent = log.recent();
        assert_eq!(recent.len(), HISTORY);
        assert_eq!(recent.last().unwrap().port, 999);
        assert_eq!(recent.first().unwrap().port, 1000 - HISTORY as u16);
    }
}
