//! Exponential backoff with jitter, for reconnects and retries.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff between `initial` and `max`, with "equal jitter": each delay is drawn
/// from [d/2, d] so that many devices reconnecting after an outage spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff that starts at `initial` and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; each call doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let full = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Number of delays handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Whether the failure behind the latest delay deserves a log line: the first of an outage,
    /// then every tenth, so that a peer away for a day does not flood the log.
    pub fn should_log(&self) -> bool {
        self.attempt <= 1 || self.attempt.is_multiple_of(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_and_caps_at_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (500, 1000),
            (500, 1000),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay().as_millis() as u64;
            assert!((lo..=hi).contains(&d), "{d} not in {lo}..={hi}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
