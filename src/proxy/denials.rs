//! The denial log: every refused connection, flow or name is counted, logged with
//! structured fields (SANDBOX, DESTINATION, PORT, REASON), kept in a short per-sandbox
//! history and announced (the bus turns it into the `ConnectionDenied` signal), so a user
//! can see what to allow. A flood of refusals is summarised instead of announced one by
//! one: the bus and the journal stay usable while a hostile sandbox hammers the policy.
//! A refused or failed name lookup is one record per name (port [`LOOKUP`]), however many
//! record types and retries the sandbox's resolver asks for.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals kept per sandbox for `sandboxctl netlog`.
const HISTORY: usize = 200;
/// Refusals announced per sandbox per second; the rest are counted and summarised.
const ANNOUNCE_PER_SECOND: u32 = 50;
/// The port of a record that is a name lookup, not a connection.
pub const LOOKUP: u16 = 0;
/// The same lookup refusal (name and reason) is recorded again only after this long: a
/// resolver asks for A and AAAA, and retries.
const LOOKUP_QUIET: Duration = Duration::from_secs(60);
/// Lookup refusals remembered for [`LOOKUP_QUIET`]; past this, older ones are forgotten.
const LOOKUPS_REMEMBERED: usize = 256;

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
    lookups: Mutex<HashMap<(String, String), Instant>>,
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
            lookups: Mutex::new(HashMap::new()),
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

    /// Records a refused or failed lookup of `name`, unless the same one was recorded in
    /// the last [`LOOKUP_QUIET`]. Returns whether it was recorded.
    pub fn record_lookup(
        &self,
        sandbox: &str,
        name: &str,
        reason: &str,
        announce: Option<&Announce>,
    ) -> bool {
        {
            let now = Instant::now();
            let recent = |t: &Instant| now.duration_since(*t) < LOOKUP_QUIET;
            let mut seen = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
            let key = (name.to_string(), reason.to_string());
            if seen.get(&key).is_some_and(recent) {
                return false;
            }
            if seen.len() >= LOOKUPS_REMEMBERED {
                seen.retain(|_, t| recent(t));
                if seen.len() >= LOOKUPS_REMEMBERED {
                    seen.clear();
                }
            }
            seen.insert(key, now);
        }
        self.record(sandbox, name.to_string(), LOOKUP, reason, announce);
        true
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

    #[test]
    fn a_lookup_is_recorded_once_per_name_and_reason() {
        let log = DenialLog::default();
        assert!(log.record_lookup("box", "a.test", "not allowed", None));
        assert!(!log.record_lookup("box", "a.test", "not allowed", None));
        assert!(log.record_lookup("box", "a.test", "upstream DNS failed", None));
        assert!(log.record_lookup("box", "b.test", "not allowed", None));
        let recent = log.recent();
        assert_eq!(recent.len(), 3);
        assert!(recent.iter().all(|d| d.port == LOOKUP));
        // A flood of distinct names stays bounded and keeps being recorded.
        for i in 0..(LOOKUPS_REMEMBERED * 3) {
            assert!(log.record_lookup("box", &format!("n{i}.test"), "x", None));
        }
        assert!(log.lookups.lock().unwrap().len() <= LOOKUPS_REMEMBERED);
    }
}
