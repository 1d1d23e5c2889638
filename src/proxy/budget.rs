//! The daemon-wide descriptor budget of the proxy: every relayed TCP connection and UDP
//! flow holds two of the daemon's descriptors (one in the sandbox, one outside), all
//! sandboxes draw on one RLIMIT_NOFILE, and running out would break networking, `Exec`
//! and D-Bus for every sandbox at once. So a share of the limit, minus headroom for the
//! rest of the daemon, is split evenly among the proxied sandboxes, with one share kept
//! free: none can take more than its share, a sandbox that starts while the others hold
//! all of theirs still gets a whole one, and past its share (or past the whole budget) a
//! new connection or flow is refused with [`REASON`], never by running out of descriptors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a connection or flow over the budget is refused (logged, counted, in `netlog`).
pub const REASON: &str = "daemon connection budget";

/// Descriptors one proxied connection or flow holds.
pub const PER_FLOW: u64 = 2;

/// Descriptors kept out of the budget for D-Bus, exec and shell pipes and ptys, helpers'
/// control sockets, the relay's pipes while data moves, logs: a fixed part and a tenth.
fn reserve(limit: u64) -> u64 {
    512 + limit / 10
}

/// The daemon's budget. Cheap to share; one per daemon.
#[derive(Debug)]
pub struct Budget {
    total: u64,
    used: AtomicU64,
    sandboxes: AtomicU64,
}

/// One sandbox's account: what it holds now.
#[derive(Debug, Default)]
pub struct Account {
    used: AtomicU64,
}

impl Account {
    /// Descriptors this sandbox's connections and flows hold.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Descriptors held for one connection or flow; given back on drop.
#[derive(Debug)]
pub struct Slot {
    budget: Arc<Budget>,
    account: Arc<Account>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.account.used.fetch_sub(PER_FLOW, Ordering::Relaxed);
        self.budget.used.fetch_sub(PER_FLOW, Ordering::Relaxed);
    }
}

/// Counts a proxied sandbox for the shares while it lives.
#[derive(Debug)]
pub struct Member(Arc<Budget>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.sandboxes.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Budget {
    /// The budget for a daemon whose descriptor limit is `limit`.
    pub fn for_limit(limit: u64) -> Self {
        Self {
            total: limit.saturating_sub(reserve(limit)),
            used: AtomicU64::new(0),
            sandboxes: AtomicU64::new(0),
        }
    }

    /// The budget for this process's soft RLIMIT_NOFILE (raised to the hard limit first
    /// by the daemon).
    pub fn from_rlimit() -> Self {
        use nix::sys::resource::{getrlimit, Resource};
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        Self::for_limit(soft)
    }

    /// Descriptors all proxied sandboxes together may hold.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// One sandbox's share now: the budget split evenly among the attached sandboxes and
    /// one more, so that the next one to attach finds its share free.
    pub fn share(&self) -> u64 {
        self.total / (self.sandboxes.load(Ordering::Relaxed) + 1)
    }

    /// Registers a proxied sandbox; the shares shrink until the [`Member`] is dropped.
    pub fn join(self: &Arc<Self>) -> Member {
        self.sandboxes.fetch_add(1, Ordering::Relaxed);
        Member(self.clone())
    }

    /// Descriptors for one more connection or flow of `account`, or `None` when that
    /// would pass its share or the whole budget.
    pub fn take(self: &Arc<Self>, account: &Arc<Account>) -> Option<Slot> {
        let share = self.share();
        let mine = account.used.fetch_add(PER_FLOW, Ordering::Relaxed) + PER_FLOW;
        let all = self.used.fetch_add(PER_FLOW, Ordering::Relaxed) + PER_FLOW;
        let slot = Slot {
            budget: self.clone(),
            account: account.clone(),
        };
        // Over either bound: dropping the slot gives both back.
        (mine <= share && all <= self.total).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_the_budget_and_slots_come_back() {
        let budget = Arc::new(Budget::for_limit(2000));
        assert_eq!(budget.total(), 2000 - 512 - 200);
        let (a, b, c) = (
            Arc::new(Account::default()),
            Arc::new(Account::default()),
            Arc::new(Account::default()),
        );
        let _ma = budget.join();
        let mb = budget.join();
        assert_eq!(budget.share(), 429);
        // a and b take their whole shares; the next ones are refused and hold nothing.
        let held: Vec<Slot> = (0..214).map(|_| budget.take(&a).unwrap()).collect();
        assert_eq!(a.used(), 428);
        assert!(budget.take(&a).is_none());
        assert_eq!(a.used(), 428, "a refusal holds nothing");
        let b_held: Vec<Slot> = (0..214).map(|_| budget.take(&b).unwrap()).collect();
        assert!(budget.take(&b).is_none());
        // c starts while both hold all they may: it still gets its whole (smaller) share.
        let _mc = budget.join();
        assert_eq!(budget.share(), 322);
        let c_held: Vec<Slot> = (0..161).map(|_| budget.take(&c).unwrap()).collect();
        assert!(budget.take(&c).is_none());
        assert!(budget.take(&a).is_none(), "a is over its new share");
        // b leaves: the others' shares grow again.
        drop(b_held);
        drop(mb);
        assert_eq!(b.used(), 0);
        assert_eq!(budget.share(), 429);
        let more = budget.take(&c);
        assert!(more.is_some(), "c's share grew");
        drop(more);
        drop(held);
        drop(c_held);
        assert_eq!(a.used(), 0);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_tiny_limit_gives_no_budget_rather_than_underflow() {
        let budget = Arc::new(Budget::for_limit(100));
        assert_eq!(budget.total(), 0);
        let a = Arc::new(Account::default());
        assert!(budget.take(&a).is_none());
    }
}
