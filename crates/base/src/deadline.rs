//! Deadlines that saturate. `Instant + Duration` panics on overflow; the durations added come
//! from the config (bounded by `kedge check`, but a library caller or an old config may not be)
//! and from backoffs, and a deadline too far to represent must mean "not soon", never a panic
//! in a daemon that restarts into the same panic.

use std::time::Duration;

/// As far as a deadline that cannot be represented is put: beyond anything kedge waits for.
const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);

/// An instant type deadlines are computed in (std's and tokio's).
pub trait Moment: Copy {
    /// `self + d`, or `None` when it cannot be represented.
    fn checked_add(self, d: Duration) -> Option<Self>;
}

impl Moment for std::time::Instant {
    fn checked_add(self, d: Duration) -> Option<Self> {
        std::time::Instant::checked_add(&self, d)
    }
}

impl Moment for tokio::time::Instant {
    fn checked_add(self, d: Duration) -> Option<Self> {
        tokio::time::Instant::checked_add(&self, d)
    }
}

/// `at + d`, or as late as can be represented (at most [`FAR`] after `at`).
pub fn later<I: Moment>(at: I, d: Duration) -> I {
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

/// `d` from now, saturating ([`later`]).
pub fn after(d: Duration) -> tokio::time::Instant {
    later(tokio::time::Instant::now(), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unrepresentable_deadline_saturates_instead_of_panicking() {
        let now = std::time::Instant::now();
        let huge = Duration::from_secs(200_000_000_000_000 * 86_400);
        assert!(
            now.checked_add(huge).is_none(),
            "the test needs an overflow"
        );
        assert_eq!(later(now, huge), now + FAR);
        assert_eq!(later(now, Duration::MAX), now + FAR);
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let t = tokio::time::Instant::now();
        assert_eq!(later(t, huge), t + FAR);
    }
}
