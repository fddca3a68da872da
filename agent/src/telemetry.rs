//! Counters of what went through the pipeline, and log setup.

pub use kedge_base::histogram::{Bounds, Histogram, HistogramSnapshot, MAX_BUCKETS};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::SystemTime;

/// Most distinct Kafka topics counted by name; plugins may route anywhere, and the metrics page
/// must not grow without bound.
pub const MAX_TOPIC_LABELS: usize = 100;
/// The label of the topics beyond [`MAX_TOPIC_LABELS`].
pub const OTHER_TOPICS: &str = "_other";

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

/// Outcomes of the verify step (what Kafka already holds, before anything is resent).
#[derive(Debug, Default)]
pub struct VerifyStats {
    /// Verifications answered by a tail scan.
    pub by_tail_scan: AtomicU64,
    /// Verifications that failed and wait to be tried again.
    pub failed: AtomicU64,
    /// Unacknowledged batches found in Kafka (not resent).
    pub batches_found: AtomicU64,
    /// Unacknowledged batches not in Kafka (sent again).
    pub batches_missing: AtomicU64,
    /// Of those, batches retention may have removed after they landed: not proven absent.
    pub batches_unverifiable: AtomicU64,
    /// Bytes of record sets the scans read.
    pub bytes_read: AtomicU64,
    /// Records of this device id under another queue id, written after this queue's own: another
    /// agent uses the same device id.
    pub twin_records: AtomicU64,
}

/// What the delivery stage reports about its link to Kafka, refreshed on every round.
#[derive(Debug, Default)]
pub struct KafkaLink {
    /// Whether the last metadata request succeeded and no leader is unreachable.
    pub connected: AtomicBool,
    /// Open broker connections.
    pub connections: AtomicU64,
    /// Partitions whose leader is known, over every topic kedge writes to.
    pub leaders_known: AtomicU64,
    /// Partitions of those topics without a known leader.
    pub leaders_unknown: AtomicU64,
    /// Produce requests waiting for their response.
    pub requests_in_flight: AtomicU64,
    /// Sealed batches not yet acknowledged.
    pub batches_unacknowledged: AtomicU64,
    /// Records in those batches.
    pub records_unacknowledged: AtomicU64,
    /// Partitions that cannot go on until something changes: Kafka does not allow the writes
    /// (authorization, broker settings) or a verify cannot read the log.
    pub partitions_stalled: AtomicU64,
    /// Partitions stuck long enough that their records are set aside.
    pub partitions_stuck: AtomicU64,
    /// Wall-clock milliseconds of the last acknowledgement (0: none since the start).
    pub last_ack_ms: AtomicI64,
}

/// Pipeline counters; every stage adds to its own.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events received from sources.
    pub received: AtomicU64,
    /// Events acknowledged to their source after the journal made them durable.
    pub source_acked: AtomicU64,
    /// Records committed to the journal.
    pub journaled: AtomicU64,
    /// Records routed to the dead-letter topic, by [`DeadLetter`] reason.
    dead_lettered: [AtomicU64; DeadLetter::ALL.len()],
    /// Records dropped, by [`Dropped`] reason.
    dropped: [AtomicU64; 3],
    /// Records journaled per Kafka topic.
    routed: Mutex<BTreeMap<String, u64>>,
    /// Journal commits (one write, one flush, one fdatasync each).
    pub commits: AtomicU64,
    /// Records sealed into Kafka batches.
    pub sealed: AtomicU64,
    /// Batches put into Produce requests, resends included.
    pub batches_sent: AtomicU64,
    /// Records in those batches.
    pub records_sent: AtomicU64,
    /// Records Kafka acknowledged.
    pub delivered: AtomicU64,
    /// Batches Kafka acknowledged.
    pub batches_delivered: AtomicU64,
    /// Batches Kafka answered DUPLICATE_SEQUENCE_NUMBER: a resend its own check caught.
    pub duplicates_detected: AtomicU64,
    /// Batches split in two after Kafka refused them as too large or for some record.
    pub batches_split: AtomicU64,
    /// Records set aside because their partition was stuck, so that the others went on.
    pub parked: AtomicU64,
    /// Batches sent again after an error or a lost response.
    pub retries: AtomicU64,
    /// Produce failures by Kafka error name, or `network` for a request that got no answer.
    produce_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// The verify step.
    pub verify: VerifyStats,
    /// The delivery stage's view of Kafka.
    pub kafka: KafkaLink,
    /// Whether the MQTT session is up (for the metrics endpoint).
    pub mqtt_connected: AtomicBool,
    /// MQTT messages recognised as the broker sending again what was already journaled:
    /// acknowledged, not journaled again.
    pub mqtt_redelivered: AtomicU64,
    /// QoS 1/2 messages that arrived with the DUP flag and were journaled: the broker says it
    /// may have sent them before, and kedge could not tell (a possible duplicate).
    pub mqtt_dup_journaled: AtomicU64,
    /// Messages larger than `mqtt.max_packet_size`, skipped (acknowledged, not journaled).
    pub mqtt_oversized: AtomicU64,
    /// New QoS 2 messages under a packet id kedge still held for an earlier one: the broker
    /// had more messages in flight than packet ids, against MQTT.
    pub mqtt_id_collisions: AtomicU64,
    /// Time of each durable journal commit (append + flush + fdatasync).
    pub commit_latency: Histogram<CommitBuckets>,
    /// Time of the fdatasync calls of each commit.
    pub fsync_latency: Histogram<CommitBuckets>,
    /// Per record, from its timestamp (the time kedge received it, unless a plugin set
    /// another) to Kafka's acknowledgement.
    pub delivery_latency: Histogram<DeliveryBuckets>,
}

/// Journal commits and fsyncs: from a fast SSD to a worn SD card.
#[derive(Debug)]
pub struct CommitBuckets;

impl Bounds for CommitBuckets {
    const BOUNDS: &'static [f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ];
}

/// Receive to Kafka acknowledgement: fine around the 20 ms budget, then up to an outage of an
/// hour.
#[derive(Debug)]
pub struct DeliveryBuckets;

impl Bounds for DeliveryBuckets {
    const BOUNDS: &'static [f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0,
        300.0, 3600.0,
    ];
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` records dead-lettered for `why`.
    pub fn dead_lettered(&self, why: DeadLetter, n: u64) {
        Self::add(&self.dead_lettered[why as usize], n);
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
        Self::add(&self.dropped[why as usize], n);
    }

    /// Records dropped, by reason.
    pub fn dropped_by_reason(&self) -> Vec<(&'static str, u64)> {
        Dropped::ALL
            .iter()
            .map(|r| (r.label(), self.dropped[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts records journaled for their Kafka topics, given as (topic, records).
    pub fn routed<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut routed = lock(&self.routed);
        for (topic, n) in counts {
            if let Some(v) = routed.get_mut(topic) {
                *v += n;
            } else if routed.len() < MAX_TOPIC_LABELS {
                routed.insert(topic.to_owned(), n);
            } else {
                *routed.entry(OTHER_TOPICS.to_owned()).or_default() += n;
            }
        }
    }

    /// Records journaled per Kafka topic.
    pub fn routed_by_topic(&self) -> Vec<(String, u64)> {
        lock(&self.routed)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Counts one failed Produce for a partition: a Kafka error name, or `network`.
    pub fn produce_error(&self, error: &'static str) {
        *lock(&self.produce_errors).entry(error).or_default() += 1;
    }

    /// Produce failures by error.
    pub fn produce_errors(&self) -> Vec<(&'static str, u64)> {
        lock(&self.produce_errors)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sum = |v: Vec<(&'static str, u64)>| v.iter().map(|(_, n)| n).sum::<u64>();
        format!(
            "received={} acked_to_source={} journaled={} dead_lettered={} dropped={} commits={} \
             sealed={} delivered={} batches_delivered={} duplicates_detected={} retries={}",
            g(&self.received),
            g(&self.source_acked),
            g(&self.journaled),
            sum(self.dead_lettered_by_reason()),
            sum(self.dropped_by_reason()),
            g(&self.commits),
            g(&self.sealed),
            g(&self.delivered),
            g(&self.batches_delivered),
            g(&self.duplicates_detected),
            g(&self.retries),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    fn topic_labels_are_bounded() {
        let stats = Stats::default();
        let names: Vec<String> = (0..MAX_TOPIC_LABELS + 5).map(|i| format!("t{i}")).collect();
        stats.routed(names.iter().map(|n| (n.as_str(), 1)));
        stats.routed([("t0", 2)]);
        let routed = stats.routed_by_topic();
        assert_eq!(routed.len(), MAX_TOPIC_LABELS + 1);
        assert!(routed.contains(&("t0".to_owned(), 3)));
        assert!(routed.contains(&(OTHER_TOPICS.to_owned(), 5)));
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
    fn reasons_are_counted_apart() {
        let stats = Stats::default();
        stats.dead_lettered(DeadLetter::Plugin, 3);
        stats.dead_lettered(DeadLetter::KafkaRefused, 1);
        stats.dropped(Dropped::DropNewest, 2);
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
        assert_eq!(stats.dropped_by_reason()[1], ("drop_newest", 2));
        assert!(stats.summary().contains("dead_lettered=4 dropped=2"));
    }
}
