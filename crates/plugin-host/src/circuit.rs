//! The circuit breaker that stops a plugin that keeps failing from costing the pipeline more
//! (ARCHITECTURE.md §5): too many failed events within a window open it for a backoff that doubles
//! while the plugin keeps failing; after the backoff one batch is let through to probe it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Circuit state for one plugin. Time is passed in, so tests need no clock.
#[derive(Debug)]
pub struct Circuit {
    threshold: usize,
    window: Duration,
    initial: Duration,
    max: Duration,
    failures: VecDeque<Instant>,
    open_until: Option<Instant>,
    next_open: Duration,
}

impl Circuit {
    /// A closed circuit that opens at `threshold` failures within `window`, for `initial`
    /// doubling up to `max`.
    pub fn new(threshold: u32, window: Duration, initial: Duration, max: Duration) -> Self {
        Circuit {
            threshold: threshold.max(1) as usize,
            window,
            initial,
            max: max.max(initial),
            failures: VecDeque::new(),
            open_until: None,
            next_open: initial,
        }
    }

    /// Whether a batch may run now: closed, or open long enough to probe again.
    pub fn allows(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    /// Whether the circuit is open (including waiting for a probe).
    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// When the next probe may run, if the circuit is open.
    pub fn retry_at(&self) -> Option<Instant> {
        self.open_until
    }

    /// Records one failed event. Returns true if this opened (or re-opened) the circuit.
    pub fn failure(&mut self, now: Instant) -> bool {
        if self.open_until.is_some() {
            // A failed probe: stay open, for longer.
            self.open(now);
            return true;
        }
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.window)
        {
            self.failures.pop_front();
        }
        if self.failures.len() >= self.threshold {
            self.open(now);
            true
        } else {
            false
        }
    }

    /// Records a batch that ran without faults: a successful probe closes the circuit.
    pub fn success(&mut self) {
        if self.open_until.take().is_some() {
            self.failures.clear();
            self.next_open = self.initial;
        }
    }

    fn open(&mut self, now: Instant) {
        self.open_until = Some(kedge_base::deadline::later(now, self.next_open));
        self.next_open = self.next_open.saturating_mul(2).min(self.max);
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit() -> Circuit {
        Circuit::new(
            3,
            Duration::from_secs(60),
            Duration::from_secs(1),
            Duration::from_secs(4),
        )
    }

    #[test]
    fn opens_at_the_threshold_within_the_window_only() {
        let t0 = Instant::now();
        let mut c = circuit();
        assert!(!c.failure(t0));
        assert!(!c.failure(t0 + Duration::from_secs(30)));
        // The first failure has left the window.
        assert!(!c.failure(t0 + Duration::from_secs(61)));
        assert!(c.allows(t0 + Duration::from_secs(61)));
        assert!(c.failure(t0 + Duration::from_secs(62)));
        assert!(c.is_open());
        assert!(!c.allows(t0 + Duration::from_secs(62)));
        assert!(c.allows(t0 + Duration::from_secs(63)));
    }

    #[test]
    fn failed_probes_double_the_wait_up_to_the_max_and_a_good_probe_closes() {
        let t0 = Instant::now();
        let mut c = circuit();
        for _ in 0..3 {
            c.failure(t0);
        }
        assert_eq!(c.retry_at(), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert!(c.failure(t1));
        assert_eq!(c.retry_at(), Some(t1 + Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(2);
        assert!(c.failure(t2));
        assert_eq!(c.retry_at(), Some(t2 + Duration::from_secs(4)));
        let t3 = t2 + Duration::from_secs(4);
        assert!(c.failure(t3));
        assert_eq!(c.retry_at(), Some(t3 + Duration::from_secs(4)));
        c.success();
        assert!(!c.is_open());
        assert!(c.allows(t3));
        // Closed again, with the short backoff.
        for _ in 0..3 {
            c.failure(t3);
        }
        assert_eq!(c.retry_at(), Some(t3 + Duration::from_secs(1)));
    }
}
