//! Every stage's counters gathered for the reports (each stage defines its own), the discard
//! reasons they share, and log setup.

pub use kedge_base::histogram::{Bounds, Histogram, HistogramSnapshot, MAX_BUCKETS};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::keyword;
use crate::delivery::DeliveryStats;
use crate::ingest::IngestStats;
use crate::source::SourceStats;
use serde::Deserialize;

/// Why records went to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetter {
    /// No routing rule matched, or the rule's key level was missing.
    Unroutable,
    /// A plugin failed the record, faulted on it, or routed it there.
    Plugin,
    /// Kafka refused the record for good (alone in its batch, or its topic).
    KafkaRefused,
    /// Its topic does not exist in Kafka, and the broker does not create it.
    TopicMissing,
    /// It cannot be stored as it is: too many headers, a header name or topic too long, or a
    /// timestamp outside 1970..=9999 ([`kedge_wire::record::Record::defect`]).
    Unencodable,
}

impl DeadLetter {
    /// Every reason, in exposition order.
    pub const ALL: [DeadLetter; 5] = [
        DeadLetter::Unroutable,
        DeadLetter::Plugin,
        DeadLetter::KafkaRefused,
        DeadLetter::TopicMissing,
        DeadLetter::Unencodable,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            DeadLetter::Unroutable => "unroutable",
            DeadLetter::Plugin => "plugin",
            DeadLetter::KafkaRefused => "kafka_refused",
            DeadLetter::TopicMissing => "topic_missing",
            DeadLetter::Unencodable => "unencodable",
        }
    }
}

/// Why records were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// `queue.when_full = "drop-oldest"` made room.
    DropOldest,
    /// `queue.when_full = "drop-newest"` refused them.
    DropNewest,
    /// Even the dead-letter topic refused them.
    DeadLetterRefused,
}

impl Dropped {
    /// Every reason, in exposition order.
    pub const ALL: [Dropped; 3] = [
        Dropped::DropOldest,
        Dropped::DropNewest,
        Dropped::DeadLetterRefused,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::DropOldest => "drop_oldest",
            Dropped::DropNewest => "drop_newest",
            Dropped::DeadLetterRefused => "dead_letter_refused",
        }
    }
}

/// Records one stage sent to the dead-letter topic or dropped, by reason. Ingest and delivery
/// each count their own reasons in their own; [`Stats`] adds them up for the report.
#[derive(Debug, Default)]
pub struct Discards {
    /// Records routed to the dead-letter topic, by [`DeadLetter`] reason.
    dead_lettered: [AtomicU64; DeadLetter::ALL.len()],
    /// Records dropped, by [`Dropped`] reason.
    dropped: [AtomicU64; Dropped::ALL.len()],
}

impl Discards {
    /// Counts `n` records dead-lettered for `why`.
    pub fn dead_lettered(&self, why: DeadLetter, n: u64) {
        add(&self.dead_lettered[why as usize], n);
    }

    /// Records dead-lettered, by reason.
    pub fn dead_lettered_by_reason(&self) -> Vec<(&'static str, u64)> {
        DeadLetter::ALL
            .iter()
            .map(|r| {
                (
                    r.label(),
                    self.dead_lettered[*r as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Counts `n` records dropped for `why`.
    pub fn dropped(&self, why: Dropped, n: u64) {
        add(&self.dropped[why as usize], n);
    }

    /// Records dropped, by reason.
    pub fn dropped_by_reason(&self) -> Vec<(&'static str, u64)> {
        Dropped::ALL
            .iter()
            .map(|r| (r.label(), self.dropped[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Every stage's counters, for the metrics endpoint, `/status.json` and the log. Each stage is
/// handed only its own part, and counts nothing in another's.
#[derive(Debug, Default)]
pub struct Stats {
    /// The source's.
    pub source: Arc<SourceStats>,
    /// The ingest stage's.
    pub ingest: Arc<IngestStats>,
    /// The delivery stage's.
    pub delivery: Arc<DeliveryStats>,
    /// Config reloads.
    pub reload: crate::reload::ReloadStats,
}

impl Stats {
    /// Records dead-lettered, by reason, over the stages that dead-letter.
    pub fn dead_lettered_by_reason(&self) -> Vec<(&'static str, u64)> {
        merge(
            self.ingest.discards.dead_lettered_by_reason(),
            self.delivery.discards.dead_lettered_by_reason(),
        )
    }

    /// Records dropped, by reason, over the stages that drop.
    pub fn dropped_by_reason(&self) -> Vec<(&'static str, u64)> {
        merge(
            self.ingest.discards.dropped_by_reason(),
            self.delivery.discards.dropped_by_reason(),
        )
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sum = |v: Vec<(&'static str, u64)>| v.iter().map(|(_, n)| n).sum::<u64>();
        format!(
            "received={} acked_to_source={} journaled={} dead_lettered={} dropped={} commits={} {}",
            g(&self.source.received),
            g(&self.source.acked),
            g(&self.ingest.journaled),
            sum(self.dead_lettered_by_reason()),
            sum(self.dropped_by_reason()),
            g(&self.ingest.commits),
            self.delivery.summary(),
        )
    }
}

/// Adds two by-reason tallies of the same reasons, in the same order.
fn merge(a: Vec<(&'static str, u64)>, b: Vec<(&'static str, u64)>) -> Vec<(&'static str, u64)> {
    a.into_iter()
        .zip(b)
        .map(|((label, x), (_, y))| (label, x + y))
        .collect()
}

/// Locks `m`, going on past a poisoning panic: a counter map is still right after one.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Warnings and errors kept for `kedge status`.
const RECENT_PROBLEMS: usize = 10;
/// Longest problem line kept.
const MAX_PROBLEM_LINE: usize = 400;

static PROBLEMS: Mutex<VecDeque<(SystemTime, String)>> = Mutex::new(VecDeque::new());

/// A log layer that keeps the last few warnings and errors (after the rate limits) for
/// `kedge status`, which an operator reads when the log itself is out of reach.
struct RecentProblems;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentProblems {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        // More verbose levels compare greater.
        if *event.metadata().level() > tracing::Level::WARN {
            return;
        }
        let mut line = ProblemLine(format!("{} ", event.metadata().level()));
        event.record(&mut line);
        let mut text = line.0;
        if text.len() > MAX_PROBLEM_LINE {
            text.truncate(kedge_plugin_host::stats::truncate(&text, MAX_PROBLEM_LINE).len());
        }
        let mut recent = lock(&PROBLEMS);
        if recent.len() == RECENT_PROBLEMS {
            recent.pop_front();
        }
        recent.push_back((SystemTime::now(), text));
    }
}

/// The message, then every other field as `name=value`.
struct ProblemLine(String);

impl tracing::field::Visit for ProblemLine {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = if field.name() == "message" {
            write!(self.0, "{value:?}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write as _;
        let _ = if field.name() == "message" {
            write!(self.0, "{value}")
        } else {
            write!(self.0, " {}={value}", field.name())
        };
    }
}

/// The last warnings and errors, oldest first, one line each with its age.
pub fn recent_problems() -> String {
    lock(&PROBLEMS)
        .iter()
        .map(|(at, line)| {
            let age = at.elapsed().unwrap_or_default().as_secs();
            format!("{age}s ago {line}\n")
        })
        .collect()
}

/// Log output format (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the log subscriber: human-readable on a terminal, JSON otherwise (or as configured).
pub fn init_logging(log: &crate::config::LogConfig) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_new(&log.level).map_err(|e| format!("log.level: {e}"))?;
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().finish().with(RecentProblems).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(RecentProblems)
            .try_init()
    };
    result.map_err(|e| e.to_string())
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`info`) or a tracing filter directive (`info,kedge=debug`).
    pub level: String,
    /// Output format.
    #[serde(deserialize_with = "keyword")]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::DeliveryBuckets;
    use crate::ingest::stats::CommitBuckets;
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
        let h = Histogram::<CommitBuckets>::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        let s = h.read();
        assert_eq!(s.buckets.len(), CommitBuckets::BOUNDS.len());
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets[3], (0.005, 2));
        assert_eq!(s.buckets[9], (1.0, 2));
        assert_eq!(s.count, 3);
        assert!((s.sum - 2.0033).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn weighted_observations_count_every_record() {
        let h = Histogram::<DeliveryBuckets>::default();
        h.observe_n(Duration::from_millis(22), 5);
        h.observe_n(Duration::from_secs(7200), 2);
        h.observe_n(Duration::from_secs(1), 0);
        let s = h.read();
        assert_eq!(s.buckets[5], (0.02, 0));
        assert_eq!(s.buckets[6], (0.025, 5));
        assert_eq!(s.buckets.last(), Some(&(3600.0, 5)));
        assert_eq!(s.count, 7);
        assert!((s.sum - 14400.11).abs() < 1e-6, "{}", s.sum);
    }

    #[test]
    fn every_family_fits_the_bucket_array_in_ascending_order() {
        for bounds in [
            CommitBuckets::BOUNDS,
            kedge_plugin_host::stats::CallBuckets::BOUNDS,
            DeliveryBuckets::BOUNDS,
        ] {
            assert!(bounds.len() <= MAX_BUCKETS);
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        }
    }

    #[test]
    fn warnings_and_errors_are_kept_for_status_and_the_rest_is_not() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(RecentProblems);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not a problem");
            for i in 0..RECENT_PROBLEMS + 2 {
                tracing::warn!(attempt = i, addr = "127.0.0.1:1", "Kafka unreachable");
            }
            tracing::error!(error = %"disk full", "journal commit failed");
        });
        let recent = recent_problems();
        let lines: Vec<&str> = recent.lines().collect();
        assert_eq!(lines.len(), RECENT_PROBLEMS, "{recent}");
        assert!(
            lines[0].ends_with("WARN Kafka unreachable attempt=3 addr=127.0.0.1:1"),
            "{recent}"
        );
        assert!(
            lines[RECENT_PROBLEMS - 1].ends_with("ERROR journal commit failed error=disk full"),
            "{recent}"
        );
        assert!(!recent.contains("not a problem"));
    }

    #[test]
    fn reasons_are_counted_apart_and_added_over_the_stages() {
        let stats = Stats::default();
        stats.ingest.discards.dead_lettered(DeadLetter::Plugin, 3);
        stats.ingest.discards.dropped(Dropped::DropNewest, 2);
        stats
            .delivery
            .discards
            .dead_lettered(DeadLetter::KafkaRefused, 1);
        stats
            .delivery
            .discards
            .dropped(Dropped::DeadLetterRefused, 1);
        assert_eq!(
            stats.dead_lettered_by_reason(),
            vec![
                ("unroutable", 0),
                ("plugin", 3),
                ("kafka_refused", 1),
                ("topic_missing", 0),
                ("unencodable", 0)
            ]
        );
        assert_eq!(
            stats.dropped_by_reason(),
            vec![
                ("drop_oldest", 0),
                ("drop_newest", 2),
                ("dead_letter_refused", 1)
            ]
        );
        assert!(stats.summary().contains("dead_lettered=4 dropped=3"));
    }
}
