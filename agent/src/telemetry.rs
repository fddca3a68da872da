//! Counters of what went through the pipeline, and log setup.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Pipeline counters; every stage adds to its own.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events received from sources.
    pub received: AtomicU64,
    /// Events acknowledged to their source after the journal made them durable.
    pub source_acked: AtomicU64,
    /// Records committed to the journal.
    pub journaled: AtomicU64,
    /// Records routed to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Records dropped because not even the dead-letter topic accepts them.
    pub dropped: AtomicU64,
    /// Journal commits (one write, one flush, one fdatasync each).
    pub commits: AtomicU64,
    /// Records sealed into Kafka batches.
    pub sealed: AtomicU64,
    /// Records Kafka acknowledged.
    pub delivered: AtomicU64,
    /// Batches Kafka acknowledged.
    pub batches_delivered: AtomicU64,
    /// Batches Kafka reported as already written (a resend it deduplicated).
    pub duplicates_detected: AtomicU64,
    /// Batches sent again after an error or a lost response.
    pub retries: AtomicU64,
    /// Whether the MQTT session is up (for the metrics endpoint).
    pub mqtt_connected: AtomicBool,
    /// Time of each durable journal commit (append + flush + fdatasync).
    pub commit_latency: Histogram,
}

/// Upper bounds, in seconds, of the commit latency buckets: from a fast SSD to a worn SD card.
pub const COMMIT_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A latency histogram over [`COMMIT_BUCKETS`], lock-free for the hot path.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); beyond the last bound only in `count`.
    buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = COMMIT_BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bucket bound, the total count and the sum in seconds.
    pub fn read(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut total = 0;
        let cumulative = COMMIT_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, b)| {
                total += b.load(Ordering::Relaxed);
                (le, total)
            })
            .collect();
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, count, sum)
    }
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "received={} acked_to_source={} journaled={} dead_lettered={} dropped={} commits={} \
             sealed={} delivered={} batches_delivered={} duplicates_detected={} retries={}",
            g(&self.received),
            g(&self.source_acked),
            g(&self.journaled),
            g(&self.dead_lettered),
            g(&self.dropped),
            g(&self.commits),
            g(&self.sealed),
            g(&self.delivered),
            g(&self.batches_delivered),
            g(&self.duplicates_detected),
            g(&self.retries),
        )
    }
}

/// Lets a log line that repeats in a loop through at most once per interval, counting the
/// occurrences it held back, so that a long outage does not flood the device's log.
#[derive(Debug, Default)]
pub struct LogGate {
    /// Milliseconds since [`epoch`] of the last line let through, plus one (0: never).
    last_ms: AtomicU64,
    held: AtomicU64,
}

/// The process-wide time base of every [`LogGate`].
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl LogGate {
    /// A gate that lets the first occurrence through.
    pub const fn new() -> Self {
        LogGate {
            last_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(occurrences held back since the last line)` when this one should be logged.
    pub fn pass(&self, every: std::time::Duration) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= every.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Installs the log subscriber: human-readable on a terminal, JSON otherwise (or as configured).
pub fn init_logging(log: &crate::config::LogConfig) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&log.level).map_err(|e| format!("log.level: {e}"))?;
    let json = match log.format {
        crate::config::LogFormat::Json => true,
        crate::config::LogFormat::Text => false,
        crate::config::LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_gate_lets_one_line_through_per_interval_and_counts_the_rest() {
        let gate = LogGate::new();
        assert_eq!(gate.pass(Duration::from_millis(50)), Some(0));
        assert_eq!(gate.pass(Duration::from_millis(50)), None);
        assert_eq!(gate.pass(Duration::from_millis(50)), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(gate.pass(Duration::from_millis(50)), Some(2));
        assert_eq!(gate.pass(Duration::ZERO), Some(0));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        let (buckets, count, sum) = h.read();
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[3], (0.005, 2));
        assert_eq!(buckets[9], (1.0, 2));
        assert_eq!(count, 3);
        assert!((sum - 2.0033).abs() < 1e-9, "{sum}");
    }
}
