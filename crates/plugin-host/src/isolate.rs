//! Bisecting a failed batch so that only the guilty events are dead-lettered (ARCHITECTURE.md §5).
//!
//! A trap poisons the whole instance and says nothing about which event caused it, so the host
//! re-runs the halves of the batch on a fresh instance until each failure is pinned to one
//! event. Pure: the plugin is behind [`Caller`], so tests drive it with fakes.

use std::ops::Range;

/// Why a plugin call produced no verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access).
    Trap(String),
    /// The call ran past its deadline and was interrupted.
    Timeout,
    /// The plugin asked for more memory than its limit allows, then failed.
    Memory,
    /// The verdicts and outputs were larger than the plugin's output limit.
    OutputTooLarge {
        /// Bytes returned, if the host copied them all; none if it stopped copying them.
        bytes: Option<usize>,
        /// The limit.
        max: usize,
    },
    /// The plugin returned an error for the whole call.
    Plugin(String),
    /// The plugin returned a different number of verdicts than it was given events.
    WrongCount {
        /// Verdicts returned.
        got: usize,
        /// Events given.
        want: usize,
    },
    /// A fresh instance's `init` failed or trapped.
    Init(String),
    /// The plugin's circuit is open: it failed too often recently.
    CircuitOpen,
}

impl Fault {
    /// Whether the instance is unusable afterwards and must be replaced.
    pub fn poisons(&self) -> bool {
        matches!(self, Fault::Trap(_) | Fault::Timeout | Fault::Memory)
    }

    /// Whether running fewer events might succeed, so bisecting can find the guilty ones.
    fn isolatable(&self) -> bool {
        matches!(
            self,
            Fault::Trap(_) | Fault::Timeout | Fault::Memory | Fault::OutputTooLarge { .. }
        )
    }

    /// A short name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap(_) => "trap",
            Fault::Timeout => "timeout",
            Fault::Memory => "memory",
            Fault::OutputTooLarge { .. } => "output_too_large",
            Fault::Plugin(_) => "plugin_error",
            Fault::WrongCount { .. } => "wrong_count",
            Fault::Init(_) => "init",
            Fault::CircuitOpen => "circuit_open",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Trap(why) => write!(f, "plugin trapped: {why}"),
            Fault::Timeout => f.write_str("plugin call exceeded its timeout"),
            Fault::Memory => f.write_str("plugin exceeded its memory limit"),
            Fault::OutputTooLarge {
                bytes: Some(bytes),
                max,
            } => write!(
                f,
                "plugin output of {bytes} bytes exceeds its limit of {max}"
            ),
            Fault::OutputTooLarge { bytes: None, max } => write!(
                f,
                "plugin output exceeds its limit of {max} bytes (kedge stopped copying it)"
            ),
            Fault::Plugin(why) => write!(f, "plugin failed the batch: {why}"),
            Fault::WrongCount { got, want } => {
                write!(f, "plugin returned {got} verdicts for {want} events")
            }
            Fault::Init(why) => write!(f, "plugin init failed: {why}"),
            Fault::CircuitOpen => f.write_str("plugin disabled after repeated failures"),
        }
    }
}

/// A plugin as the bisection sees it.
pub trait Caller<V> {
    /// Runs the plugin on the events in `range`: one verdict per event, or a fault (after
    /// which the caller has already replaced a poisoned instance).
    fn call(&mut self, range: Range<usize>) -> Result<Vec<V>, Fault>;

    /// Called once per call whose `events` events end up failed by `fault`: a single event the
    /// bisection pinned down, or a whole call that failed as a whole. Returns false to stop
    /// bisecting (the plugin's circuit opened): the rest of the batch then fails with
    /// [`Fault::CircuitOpen`] without running.
    fn failed(&mut self, fault: &Fault, events: usize) -> bool;
}

/// Runs `len` events through `caller`, bisecting around faults. Returns one outcome per event,
/// in order.
pub fn isolate<V>(len: usize, caller: &mut impl Caller<V>) -> Vec<Result<V, Fault>> {
    let mut out = Vec::with_capacity(len);
    let mut go_on = true;
    run(0..len, caller, &mut out, &mut go_on);
    out
}

fn run<V>(
    range: Range<usize>,
    caller: &mut impl Caller<V>,
    out: &mut Vec<Result<V, Fault>>,
    go_on: &mut bool,
) {
    if range.is_empty() {
        return;
    }
    if !*go_on {
        out.extend(range.map(|_| Err(Fault::CircuitOpen)));
        return;
    }
    match caller.call(range.clone()) {
        Ok(verdicts) => out.extend(verdicts.into_iter().map(Ok)),
        Err(fault) if range.len() > 1 && fault.isolatable() => {
            let mid = range.start + range.len() / 2;
            run(range.start..mid, caller, out, go_on);
            run(mid..range.end, caller, out, go_on);
        }
        Err(fault) => {
            *go_on = caller.failed(&fault, range.len());
            out.extend(range.map(|_| Err(fault.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Traps whenever the range holds a poisoned event; counts calls and failures.
    struct Fake {
        poison: Vec<bool>,
        fault: Fault,
        calls: usize,
        failures: usize,
        trip_after: usize,
    }

    impl Fake {
        fn new(poison: Vec<bool>, fault: Fault) -> Self {
            Fake {
                poison,
                fault,
                calls: 0,
                failures: 0,
                trip_after: usize::MAX,
            }
        }
    }

    impl Caller<usize> for Fake {
        fn call(&mut self, range: Range<usize>) -> Result<Vec<usize>, Fault> {
            self.calls += 1;
            if self.poison[range.clone()].iter().any(|&p| p) {
                Err(self.fault.clone())
            } else {
                Ok(range.collect())
            }
        }

        fn failed(&mut self, _: &Fault, _: usize) -> bool {
            self.failures += 1;
            self.failures < self.trip_after
        }
    }

    #[test]
    fn a_clean_batch_is_one_call() {
        let mut f = Fake::new(vec![false; 500], Fault::Timeout);
        let out = isolate(500, &mut f);
        assert_eq!(f.calls, 1);
        assert!(out.iter().enumerate().all(|(i, r)| r == &Ok(i)));
    }

    #[test]
    fn one_poisoned_event_costs_about_two_calls_per_level() {
        let mut poison = vec![false; 500];
        poison[317] = true;
        let mut f = Fake::new(poison, Fault::Trap("unreachable".into()));
        let out = isolate(500, &mut f);
        assert_eq!(out[317], Err(Fault::Trap("unreachable".into())));
        assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1);
        assert!(f.calls <= 2 * 9 + 1, "{} calls", f.calls);
        assert_eq!(f.failures, 1);
    }

    #[test]
    fn whole_batch_errors_fail_every_event_without_bisecting() {
        for fault in [
            Fault::Plugin("bad config".into()),
            Fault::WrongCount { got: 1, want: 4 },
            Fault::Init("no".into()),
        ] {
            let mut f = Fake::new(vec![true; 4], fault.clone());
            let out = isolate(4, &mut f);
            assert_eq!(f.calls, 1);
            assert!(out.iter().all(|r| r == &Err(fault.clone())));
        }
    }

    #[test]
    fn an_open_circuit_stops_the_bisection() {
        let mut f = Fake::new(vec![true; 64], Fault::Timeout);
        f.trip_after = 3;
        let out = isolate(64, &mut f);
        assert_eq!(out.len(), 64);
        assert_eq!(f.failures, 3);
        assert!(out[..3].iter().all(|r| r == &Err(Fault::Timeout)));
        assert!(out[3..].iter().all(|r| r == &Err(Fault::CircuitOpen)));
        assert!(f.calls < 20, "{} calls", f.calls);
    }

    proptest! {
        #[test]
        fn exactly_the_poisoned_events_fail(poison in proptest::collection::vec(proptest::bool::weighted(0.05), 0..300)) {
            let mut f = Fake::new(poison.clone(), Fault::Memory);
            let out = isolate(poison.len(), &mut f);
            prop_assert_eq!(out.len(), poison.len());
            for (i, (r, p)) in out.iter().zip(&poison).enumerate() {
                if *p {
                    prop_assert_eq!(r, &Err(Fault::Memory));
                } else {
                    prop_assert_eq!(r, &Ok(i));
                }
            }
        }
    }
}
