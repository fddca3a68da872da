//! Per-plugin counters, exported on the metrics endpoint.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kedge_base::histogram::{Bounds, Histogram, HistogramSnapshot};

/// One plugin call: from a few microseconds of compiled Rust to an interpreter's batch.
#[derive(Debug)]
pub struct CallBuckets;

impl Bounds for CallBuckets {
    const BOUNDS: &'static [f64] = &[
        0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
    ];
}

/// Most distinct counter names one plugin may create; later names are ignored, so a plugin
/// cannot grow kedge's memory or the metrics page without bound.
pub const MAX_PLUGIN_COUNTERS: usize = 64;
/// Longest counter name kept.
const MAX_COUNTER_NAME: usize = 64;

/// What one plugin did, since kedge started.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// The plugin's name from the config.
    pub name: String,
    /// Events given to the plugin.
    pub events: AtomicU64,
    /// `process` calls, including the re-runs of a bisection.
    pub calls: AtomicU64,
    /// Verdicts by kind: keep, drop, route, replace, fail.
    pub kept: AtomicU64,
    /// Events the plugin dropped.
    pub dropped: AtomicU64,
    /// Events the plugin routed to another topic.
    pub routed: AtomicU64,
    /// Events the plugin replaced.
    pub replaced: AtomicU64,
    /// Records the plugin made (replacements and tick emissions).
    pub outputs: AtomicU64,
    /// Events the plugin failed with `fail(…)`.
    pub failed: AtomicU64,
    /// Events dead-lettered because of a fault (trap, timeout, memory, …), by fault kind.
    faulted: Mutex<BTreeMap<&'static str, u64>>,
    /// Instances replaced after a trap, timeout or memory overrun.
    pub recycles: AtomicU64,
    /// Times the circuit opened.
    pub circuit_opened: AtomicU64,
    /// Whether the circuit is open now.
    pub circuit_open: AtomicBool,
    /// Log lines from the plugin dropped by the rate limit.
    pub logs_suppressed: AtomicU64,
    /// The plugin's own counters (`counter-add`).
    counters: Mutex<BTreeMap<String, u64>>,
    /// Time of each `process` call that returned (traps and timeouts excluded).
    pub call_time: Histogram<CallBuckets>,
}

impl PluginStats {
    /// Counters for plugin `name`, all zero.
    pub fn new(name: &str) -> Self {
        PluginStats {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// Counts one event dead-lettered by a fault of `kind`.
    pub fn fault(&self, kind: &'static str) {
        *lock(&self.faulted).entry(kind).or_default() += 1;
    }

    /// Events dead-lettered by faults, by kind.
    pub fn faults(&self) -> Vec<(&'static str, u64)> {
        lock(&self.faulted).iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Adds to the plugin's counter `name`, unless the plugin already has too many.
    pub fn counter_add(&self, name: &str, delta: u64) {
        let name = truncate(name, MAX_COUNTER_NAME);
        let mut counters = lock(&self.counters);
        if let Some(v) = counters.get_mut(name) {
            *v = v.saturating_add(delta);
        } else if counters.len() < MAX_PLUGIN_COUNTERS {
            counters.insert(name.to_owned(), delta);
        }
    }

    /// The plugin's own counters.
    pub fn counters(&self) -> Vec<(String, u64)> {
        lock(&self.counters)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Everything, read now.
    pub fn snapshot(&self) -> PluginSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PluginSnapshot {
            name: self.name.clone(),
            events: g(&self.events),
            calls: g(&self.calls),
            verdicts: vec![
                ("keep", g(&self.kept)),
                ("drop", g(&self.dropped)),
                ("route", g(&self.routed)),
                ("replace", g(&self.replaced)),
                ("fail", g(&self.failed)),
            ],
            outputs: g(&self.outputs),
            faults: self.faults(),
            recycles: g(&self.recycles),
            circuit_open: self.circuit_open.load(Ordering::Relaxed),
            circuit_opened: g(&self.circuit_opened),
            logs_suppressed: g(&self.logs_suppressed),
            counters: self.counters(),
            call_time: self.call_time.read(),
        }
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One plugin's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginSnapshot {
    /// The plugin's name.
    pub name: String,
    /// Events given to it.
    pub events: u64,
    /// `process` calls.
    pub calls: u64,
    /// Verdicts by kind.
    pub verdicts: Vec<(&'static str, u64)>,
    /// Records it made.
    pub outputs: u64,
    /// Events dead-lettered by faults, by kind.
    pub faults: Vec<(&'static str, u64)>,
    /// Instances replaced.
    pub recycles: u64,
    /// Whether its circuit is open.
    pub circuit_open: bool,
    /// Times its circuit opened.
    pub circuit_opened: u64,
    /// Log lines dropped by the rate limit.
    pub logs_suppressed: u64,
    /// Its own counters.
    pub counters: Vec<(String, u64)>,
    /// Time per `process` call.
    pub call_time: HistogramSnapshot,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_counters_are_bounded_in_number_and_name_length() {
        let s = PluginStats::new("p");
        for i in 0..MAX_PLUGIN_COUNTERS + 10 {
            s.counter_add(&format!("c{i}"), 1);
        }
        s.counter_add("c0", 2);
        s.counter_add(&"x".repeat(500), 1);
        let c = s.counters();
        assert_eq!(c.len(), MAX_PLUGIN_COUNTERS);
        assert!(c.contains(&("c0".to_owned(), 3)));
        assert!(c.iter().all(|(k, _)| k.len() <= MAX_COUNTER_NAME));
    }

    #[test]
    fn truncates_at_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
