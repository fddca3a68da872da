//! Delivery: seal journal chunks into Kafka batches and send them until Kafka holds each once
//! (ARCHITECTURE.md §3).
//!
//! The decisions are pure and live beside this driver: [`partition`] is the state machine of
//! one partition's batches, [`outcome`] says what a Produce answer means for a batch, [`verify`]
//! what a scan of the log proves, [`rebuild`] re-encodes batches. The driver does the I/O
//! through two seams, [`link::Link`] (Kafka) and [`outbox::Outbox`] (the queue), and feeds what
//! happened back to the partitions.
//!
//! Each partition keeps at most `window` sealed, unacknowledged batches and pipelines them on
//! one connection, up to `max_in_flight` requests per broker. A batch leaves the queue only when
//! Kafka holds it and every older batch of its partition. A batch whose fate is unknown (lost
//! answer, ambiguous error, restart) is looked for in the log before it is sent again. No
//! timeout ever drops a batch.

pub mod config;
pub mod link;
pub mod outbox;
pub mod outcome;
pub mod partition;
pub mod rebuild;
mod stats;
pub mod verify;

pub use stats::{DeliveryBuckets, DeliveryStats, KafkaLink, VerifyStats};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::dispatcher::{self, Dispatcher, Plan, PlanInput};
use crate::telemetry::{DeadLetter, Dropped, LogGate, add};
use kedge_queue::outbox::{BatchMeta, SealedBatch};
use kedge_queue::{QueueError, Seal, SealError};
use kedge_wire::KafkaError;
use kedge_wire::batch::{BatchCompression, ProducerIdentity};
use kedge_wire::errors::error_name;
use link::{Answers, Link, PartitionAnswer, ProduceBatch, Scan, ScanReport};
use outbox::{Outbox, Tp};
use outcome::Outcome;
use partition::{Effect, Partition, Refusal};
use verify::Found;

/// Journal chunks read per seal; bounds the work of one plan.
const CHUNKS_PER_SEAL: usize = 64;
/// Shortest interval between two lines of an error that repeats with every delivery round.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// The `error` label of a Produce request that got no answer (connection lost, timeout).
const NETWORK_ERROR: &str = "network";
/// The `error` label of a Produce response that left a partition out.
const MISSING_PARTITION: &str = "missing_partition";
/// Scans running at once: each holds a Fetch buffer of up to 4 MiB.
const MAX_SCANS: usize = 4;
/// A partition that holds batches and makes no progress for this long, while others do, is
/// stuck: its new records are set aside, so that it delays only itself.
const STUCK_AFTER: Duration = Duration::from_secs(30);
/// A topic Kafka reports missing for this long (its producers would have given up: Kafka's
/// `max.block.ms` is 60 s) has its records dead-lettered with the reason.
const MISSING_TOPIC_AFTER: Duration = Duration::from_secs(60);
/// A topic nothing was sealed for this long, and with nothing waiting, is forgotten: plugins
/// may route to ever new topics, and their metadata must not pile up for the life of the process.
const FORGET_TOPIC_AFTER: Duration = Duration::from_secs(600);

/// Producer settings from the config.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// Requests in flight per broker connection, and sealed batches per partition.
    pub max_in_flight: usize,
    /// How long a record may wait for others to share its batch, counted from when the commit
    /// stage took it (so the commit window is part of it, not added to it).
    pub linger: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Refresh metadata at least this often.
    pub metadata_refresh: Duration,
    /// Batch compression.
    pub compression: BatchCompression,
    /// Where batches Kafka refuses for good go, with the reason in a `kedge-error` header.
    pub dead_letter_topic: String,
}

/// When to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Drain {
    /// Keep delivering.
    #[default]
    Run,
    /// Stop once everything is delivered, or when the deadline passes (shutdown).
    Deliver(Instant),
    /// Stop sealing and sending, and stop once the requests and scans in flight have answered,
    /// or when the deadline passes: another producer takes the queue over (a config reload).
    /// What stays sealed is resumed by that producer as after a restart.
    Handover(Instant),
}

impl Drain {
    /// The deadline, once asked to stop.
    pub fn deadline(self) -> Option<Instant> {
        match self {
            Drain::Run => None,
            Drain::Deliver(t) | Drain::Handover(t) => Some(t),
        }
    }
}

/// What the commit stage publishes after each commit; delivery wakes on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Records committed since the start.
    pub records: u64,
    /// When the commit stage took the first event of the latest commit that added records:
    /// their linger started then. When delivery misses a commit (two land while it is busy) it
    /// counts from the later one's, so it seals late, never early.
    pub since: Instant,
}

impl Committed {
    /// Nothing committed yet.
    pub fn none() -> Self {
        Committed {
            records: 0,
            since: Instant::now(),
        }
    }

    /// Adds a commit of `records` whose first event was taken at `since`; a commit of none
    /// (acknowledgements' bookkeeping only) leaves the linger of earlier records alone.
    pub fn add(&mut self, records: u64, since: Instant) {
        if records > 0 {
            self.records += records;
            self.since = since;
        }
    }
}

/// When records committed at `since` are due to be sealed: once they have waited `linger`
/// since the commit stage took them, which may be now already.
fn seal_due(since: Instant, linger: Duration, now: Instant) -> Instant {
    (since + linger).max(now)
}

/// A Produce request's answer, with what it carried.
struct Completion {
    node: i32,
    sent: Vec<(Tp, u64)>,
    result: Result<Vec<PartitionAnswer>, KafkaError>,
}

/// A scan's result for its partition.
struct Scanned {
    tp: Tp,
    node: i32,
    started: Instant,
    result: Result<ScanReport, KafkaError>,
}

/// The delivery stage.
pub struct Producer<L: Link, O: Outbox> {
    outbox: Arc<O>,
    link: L,
    dispatcher: Dispatcher,
    settings: ProducerSettings,
    stats: Arc<DeliveryStats>,
    producer: Option<ProducerIdentity>,
    next_sequences: BTreeMap<Tp, i32>,
    next_batch_no: u64,
    partitions: BTreeMap<Tp, Partition>,
    answers: FuturesUnordered<BoxFuture<'static, Completion>>,
    scans: FuturesUnordered<BoxFuture<'static, Scanned>>,
    in_flight_per_node: HashMap<i32, usize>,
    /// Partitions known to have a scan floor in the queue.
    floors: HashSet<Tp>,
    wanted_topics: BTreeSet<String>,
    /// When a batch was last sealed for each wanted topic.
    topic_used: HashMap<String, Instant>,
    /// Wanted topics the last metadata did not have, since when.
    missing_since: HashMap<String, Instant>,
    /// Partitions with records set aside in the queue.
    parked: HashSet<Tp>,
    /// Partitions stuck at the last seal, for logging when that changes.
    stuck: HashSet<Tp>,
    /// When Kafka last acknowledged anything.
    delivered_at: Option<Instant>,
    metadata_due: Instant,
    metadata_backoff: Backoff,
    /// When a failed InitProducerId may be tried again (the loop wakes for other reasons too).
    producer_retry_at: Instant,
    journal_dirty: Option<Instant>,
    /// The broker forgot or fenced our producer id: once every partition is resolved, take a
    /// new id and re-sequence the batches not in the log under it.
    producer_lost: bool,
    /// A committed seal (or re-sequencing) is not durable yet: nothing is sent until a sync
    /// succeeds, since a batch must be durable before its first send.
    unsynced: Option<Instant>,
    sync_backoff: Backoff,
    /// The last exchange with Kafka (metadata, connect, produce) succeeded.
    kafka_ok: bool,
}

impl<L: Link, O: Outbox> Producer<L, O> {
    /// A producer over `outbox`, resuming its sealed batches and producer state.
    pub fn new(
        outbox: Arc<O>,
        link: L,
        dispatcher: Dispatcher,
        settings: ProducerSettings,
        stats: Arc<DeliveryStats>,
    ) -> Result<Self, QueueError> {
        let producer = outbox.producer()?;
        let next_sequences = outbox.next_sequences()?;
        let next_batch_no = outbox.next_batch_no()?;
        let backoff = || Backoff::new(settings.retry_initial, settings.retry_max);
        let mut p = Producer {
            metadata_backoff: backoff(),
            sync_backoff: backoff(),
            outbox: outbox.clone(),
            link,
            dispatcher,
            stats,
            producer,
            next_sequences,
            next_batch_no,
            partitions: BTreeMap::new(),
            answers: FuturesUnordered::new(),
            scans: FuturesUnordered::new(),
            in_flight_per_node: HashMap::new(),
            floors: HashSet::new(),
            wanted_topics: BTreeSet::new(),
            topic_used: HashMap::new(),
            missing_since: HashMap::new(),
            parked: HashSet::new(),
            stuck: HashSet::new(),
            delivered_at: None,
            metadata_due: Instant::now(),
            producer_retry_at: Instant::now(),
            journal_dirty: Some(Instant::now()),
            producer_lost: false,
            // Sealed batches read back here may be in the page cache only (a process that died
            // after a seal whose sync failed, or a producer that handed over after one): durable
            // before any is sent.
            unsynced: match outbox.sync() {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot make the sealed batches durable; nothing is sent until it can");
                    Some(Instant::now())
                }
            },
            kafka_ok: false,
            settings,
        };
        p.parked = outbox.parked_partitions()?.into_iter().collect();
        p.wanted_topics
            .extend(p.parked.iter().map(|(t, _)| t.clone()));
        let batches = outbox.sealed()?;
        if !batches.is_empty() {
            tracing::info!(
                batches = batches.len(),
                "resuming delivery of sealed batches"
            );
        }
        for b in in_sequence_order(batches) {
            p.wanted_topics.insert(b.topic.clone());
            // Any of them may have been sent before the restart: look before resending.
            p.partition((b.topic.clone(), b.partition)).push_resumed(b);
        }
        // The backlog gauges count the resumed batches from the start, not from the first round
        // (which may wait on Kafka's metadata): until then they would say nothing waits. The
        // link's gauges wait for that round: the previous producer's stand until then.
        p.publish_backlog();
        Ok(p)
    }

    fn partition(&mut self, tp: Tp) -> &mut Partition {
        let (initial, max) = (self.settings.retry_initial, self.settings.retry_max);
        self.partitions
            .entry(tp)
            .or_insert_with(|| Partition::new(initial, max))
    }

    /// Runs until `drain` asks to stop and everything is delivered, or its deadline passes.
    /// `journal` changes whenever a commit adds records.
    pub async fn run(
        mut self,
        mut journal: watch::Receiver<Committed>,
        mut drain: watch::Receiver<Drain>,
    ) {
        // Once the commit stage is gone its channel reports closed at once; stop listening then.
        let mut journal_open = true;
        loop {
            let now = Instant::now();
            let stop = *drain.borrow();
            match stop {
                Drain::Run => self.step(now).await,
                Drain::Deliver(deadline) => {
                    let idle = self.partitions.values().all(Partition::is_idle)
                        && self.outbox.journal_is_empty();
                    if idle || now >= deadline {
                        if !idle {
                            tracing::warn!(
                                "shutdown deadline reached; undelivered records stay in the queue"
                            );
                        }
                        break;
                    }
                    self.step(now).await;
                }
                // Nothing new starts: each answer that arrives is recorded, so that the next
                // producer resumes as few batches in doubt as possible.
                Drain::Handover(deadline) => {
                    let quiet = self.answers.is_empty() && self.scans.is_empty();
                    if quiet || now >= deadline {
                        if !quiet {
                            tracing::warn!(
                                in_flight = self.answers.len(),
                                scans = self.scans.len(),
                                "handover deadline reached; the next producer verifies what was in flight"
                            );
                        }
                        break;
                    }
                }
            }
            let wake = match stop {
                // Only answers and scans matter now, and they wake the loop themselves.
                Drain::Handover(deadline) => deadline,
                _ => self.next_wake(stop.deadline()),
            };
            tokio::select! {
                Some(c) = self.answers.next(), if !self.answers.is_empty() => self.complete(c),
                Some(s) = self.scans.next(), if !self.scans.is_empty() => self.scanned(s),
                changed = journal.changed(), if journal_open => match changed {
                    Ok(()) => {
                        if self.journal_dirty.is_none() {
                            let since = journal.borrow_and_update().since;
                            self.journal_dirty = Some(seal_due(since, self.settings.linger, Instant::now()));
                        }
                    }
                    Err(_) => journal_open = false,
                },
                _ = drain.changed(), if stop == Drain::Run => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // Requests still in flight are abandoned: their batches stay sealed and are verified or
        // resent at the next start.
        tracing::info!(stats = %self.stats.summary(), "delivery stopped");
    }

    /// One round of everything that may be due.
    async fn step(&mut self, now: Instant) {
        if now >= self.metadata_due {
            self.refresh_metadata().await;
        }
        if self.producer.is_none() && self.cluster_known() && now >= self.producer_retry_at {
            self.init_producer().await;
        }
        if self.unsynced.is_some_and(|t| now >= t) {
            self.retry_sync();
        }
        self.start_verifies().await;
        if self.producer.is_some() && self.unsynced.is_none() {
            self.handle_refused();
            self.rehome_vanished();
        }
        if self.producer_lost && now >= self.producer_retry_at {
            self.resequence().await;
        }
        if self.producer.is_some()
            && !self.producer_lost
            && self.journal_dirty.is_some_and(|t| now >= t)
        {
            self.seal();
        }
        self.send_ready().await;
        self.publish_link();
    }

    fn cluster_known(&self) -> bool {
        !self.link.topics().is_empty() || self.wanted_topics.is_empty()
    }

    /// When the loop must look again. Only times that a round always moves forward once they
    /// are due may be in the past here, or the loop would spin.
    fn next_wake(&self, deadline: Option<Instant>) -> Instant {
        let now = Instant::now();
        let ahead = |t: Instant| (t > now).then_some(t);
        // Re-check at least once a second: cheap, and keeps the drain check timely.
        let mut wake = now + Duration::from_secs(1);
        // A refresh, a seal and an InitProducerId attempt each set their next time.
        wake = wake.min(self.metadata_due);
        if self.producer.is_some()
            && !self.producer_lost
            && let Some(t) = self.journal_dirty
        {
            wake = wake.min(t);
        }
        if self.producer.is_none() && self.cluster_known() {
            wake = wake.min(self.producer_retry_at);
        }
        // Re-sequencing waits for answers and scans, which wake the loop themselves.
        if self.producer_lost
            && let Some(t) = ahead(self.producer_retry_at)
        {
            wake = wake.min(t);
        }
        if let Some(t) = self.unsynced {
            wake = wake.min(t);
        }
        for p in self.partitions.values() {
            // A backoff already over is no reason to wake: whatever waited on it ran this round.
            if let Some(t) = p.retry_at().and_then(ahead) {
                wake = wake.min(t);
            }
        }
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        wake
    }

    /// Forgets topics nothing was sealed for in [`FORGET_TOPIC_AFTER`] and that hold nothing.
    fn forget_idle_topics(&mut self) {
        let now = Instant::now();
        let held: BTreeSet<&str> = self.partitions.keys().map(|(t, _)| t.as_str()).collect();
        let used = &self.topic_used;
        let dlq = &self.settings.dead_letter_topic;
        let parked = &self.parked;
        self.wanted_topics.retain(|t| {
            held.contains(t.as_str())
                || parked.iter().any(|(p, _)| p == t)
                || t == dlq
                || used
                    .get(t)
                    .is_some_and(|at| now.saturating_duration_since(*at) < FORGET_TOPIC_AFTER)
        });
        let wanted = &self.wanted_topics;
        self.topic_used.retain(|t, _| wanted.contains(t));
        self.missing_since.retain(|t, _| wanted.contains(t));
        self.floors.retain(|(t, _)| wanted.contains(t));
        self.link.retain_topics(wanted);
    }

    async fn refresh_metadata(&mut self) {
        self.forget_idle_topics();
        let topics: Vec<String> = self.wanted_topics.iter().cloned().collect();
        let refreshed = self.link.refresh_metadata(&topics).await;
        self.kafka_ok = refreshed.is_ok();
        match refreshed {
            Ok(()) => {
                let now = Instant::now();
                let known = self.link.topics();
                self.missing_since.retain(|t, _| !known.contains_key(t));
                for t in &self.wanted_topics {
                    if !known.contains_key(t) {
                        self.missing_since.entry(t.clone()).or_insert(now);
                    }
                }
                let missing: Vec<&String> = self
                    .wanted_topics
                    .iter()
                    .filter(|t| !self.link.topics().contains_key(*t))
                    .collect();
                if missing.is_empty() {
                    self.metadata_backoff.reset();
                    self.metadata_due = kedge_base::deadline::after(self.settings.metadata_refresh);
                } else {
                    // Look again soon, backing off: the topic may be created any moment, or
                    // never, and a missing topic must not flood the log.
                    let delay = self.metadata_backoff.next_delay();
                    self.metadata_due = kedge_base::deadline::after(delay);
                    if self.metadata_backoff.should_log() {
                        tracing::warn!(?missing, retry_in = ?delay, dead_letter_after = ?MISSING_TOPIC_AFTER,
                            "topics unknown to Kafka; their records wait, and go to the dead-letter topic if the topics do not appear");
                    }
                }
            }
            Err(e) => {
                let delay = self.metadata_backoff.next_delay();
                self.metadata_due = kedge_base::deadline::after(delay);
                if self.metadata_backoff.should_log() {
                    tracing::warn!(error = %e, attempts = self.metadata_backoff.attempts(), retry_in = ?delay,
                        "Kafka unreachable; records wait in the queue");
                }
            }
        }
    }

    async fn init_producer(&mut self) {
        match self.link.init_producer_id().await {
            Ok(p) => match self.outbox.resequence(p, &[], &[]) {
                Ok(()) => self.took_producer(p),
                Err(SealError::NotDurable(e)) => {
                    tracing::warn!(error = %e, "the new producer id is not durable yet; syncing before sending");
                    self.took_producer(p);
                    self.unsynced = Some(Instant::now());
                }
                Err(SealError::NotWritten(e)) => {
                    tracing::error!(error = %e, "cannot persist the producer id")
                }
            },
            Err(e) => {
                self.kafka_ok = false;
                let delay = self.metadata_backoff.next_delay();
                self.producer_retry_at = kedge_base::deadline::after(delay);
                self.metadata_due = self.producer_retry_at;
                if self.metadata_backoff.should_log() {
                    tracing::warn!(error = %e, attempts = self.metadata_backoff.attempts(), retry_in = ?delay,
                        "cannot get a producer id from Kafka; records wait in the queue");
                }
            }
        }
    }

    fn took_producer(&mut self, p: ProducerIdentity) {
        tracing::info!(
            producer_id = p.producer_id,
            epoch = p.producer_epoch,
            "new idempotent producer id"
        );
        self.producer = Some(p);
        self.next_sequences.clear();
    }

    fn retry_sync(&mut self) {
        match blocking(|| self.outbox.sync()) {
            Ok(()) => {
                tracing::info!("the queue is durable again; delivery goes on");
                self.unsynced = None;
                self.sync_backoff.reset();
            }
            Err(e) => {
                let delay = self.sync_backoff.next_delay();
                self.unsynced = Some(kedge_base::deadline::after(delay));
                if self.sync_backoff.should_log() {
                    tracing::error!(error = %e, retry_in = ?delay,
                        "cannot make sealed batches durable; nothing is sent until it can");
                }
            }
        }
    }

    /// Persists a seal and applies it: `Ok` when it committed (durable or not yet: then nothing
    /// is sent until a sync succeeds), `Err` with the reason when nothing was written.
    fn persist(&mut self, seal: &Seal) -> Result<(), QueueError> {
        match blocking(|| self.outbox.seal(seal)) {
            Ok(()) => Ok(()),
            Err(SealError::NotDurable(e)) => {
                tracing::error!(error = %e,
                    "a seal committed but could not be made durable; sending waits for a sync");
                self.unsynced = Some(Instant::now());
                Ok(())
            }
            Err(SealError::NotWritten(e)) => Err(e),
        }
    }

    /// Seals what the windows allow. Runs sled I/O and fdatasync in place: sealing is on the
    /// delivery path, and a sealed batch must be durable before its first send.
    fn seal(&mut self) {
        let Some(producer) = self.producer else {
            return;
        };
        let window = self.settings.max_in_flight;
        let room: HashMap<Tp, usize> = self
            .partitions
            .iter()
            .map(|(tp, p)| (tp.clone(), window.saturating_sub(p.held())))
            .collect();
        let counts: HashMap<String, NonZeroU32> = self
            .link
            .topics()
            .iter()
            .filter_map(|(name, t)| {
                Some((
                    name.clone(),
                    NonZeroU32::new(u32::try_from(t.leaders.len()).ok()?)?,
                ))
            })
            .collect();
        let now = Instant::now();
        let stuck = self.stuck_partitions(now);
        let missing: HashSet<String> = self
            .missing_since
            .iter()
            .filter(|(t, since)| {
                now.saturating_duration_since(**since) >= MISSING_TOPIC_AFTER
                    && **t != self.settings.dead_letter_topic
            })
            .map(|(t, _)| t.clone())
            .collect();
        let unpark = match self.unparkable(&stuck, &counts, &room) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot read records set aside; retrying");
                Vec::new()
            }
        };
        let dlq = self.settings.dead_letter_topic.clone();
        let planned = blocking(|| {
            let mut failed = None;
            let mut chunks = self
                .outbox
                .journal()
                .take(CHUNKS_PER_SEAL)
                .map_while(|c| c.map_err(|e| failed = Some(e)).ok());
            let plan = self.dispatcher.plan(PlanInput {
                chunks: &mut chunks,
                partition_counts: &counts,
                room: &room,
                window,
                next_sequences: &self.next_sequences,
                producer,
                next_batch_no: self.next_batch_no,
                stuck: &stuck,
                parked: &self.parked,
                unpark,
                missing_topics: &missing,
                dead_letter_topic: &dlq,
            });
            drop(chunks);
            // A journal that cannot be read is not sealed from, not even its readable prefix.
            match (failed, plan) {
                (Some(e), _) => Err(e.to_string()),
                (None, Err(e)) => Err(e.to_string()),
                (None, Ok(plan)) => Ok(plan),
            }
        });
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => {
                tracing::error!(error = %e, "sealing failed; the journal keeps the records, retrying");
                self.journal_dirty = Some(kedge_base::deadline::after(
                    self.metadata_backoff.next_delay(),
                ));
                return;
            }
        };
        match plan {
            Plan::Seal(seal) => match self.persist(&seal) {
                Ok(()) => self.sealed(seal),
                Err(QueueError::ChunkGone { first_seq }) => {
                    tracing::debug!(
                        first_seq,
                        "a chunk was dropped while sealing it; planning again"
                    );
                    self.journal_dirty = Some(Instant::now());
                }
                Err(e) => {
                    tracing::error!(error = %e, "sealing failed; the journal keeps the records, retrying");
                    self.journal_dirty = Some(kedge_base::deadline::after(
                        self.metadata_backoff.next_delay(),
                    ));
                }
            },
            Plan::NeedMetadata(topics) => {
                let new = topics.iter().any(|t| !self.wanted_topics.contains(t));
                let now = Instant::now();
                for t in &topics {
                    self.topic_used.insert(t.clone(), now);
                }
                self.wanted_topics.extend(topics);
                if new {
                    self.metadata_due = Instant::now();
                }
                self.journal_dirty = Some(
                    self.metadata_due
                        .max(kedge_base::deadline::after(self.settings.linger)),
                );
            }
            Plan::Blocked => self.journal_dirty = Some(Instant::now() + Duration::from_secs(1)),
            // Records set aside wait for their partition: look again now and then.
            Plan::Empty if !self.parked.is_empty() => {
                self.journal_dirty = Some(Instant::now() + Duration::from_secs(1));
            }
            Plan::Empty => self.journal_dirty = None,
        }
    }

    /// The partitions stuck for [`STUCK_AFTER`] while Kafka acknowledged something else
    /// meanwhile (when nothing goes anywhere, nothing is set aside: that only costs writes).
    fn stuck_partitions(&mut self, now: Instant) -> HashSet<Tp> {
        let others_move = self
            .delivered_at
            .is_some_and(|t| now.saturating_duration_since(t) < STUCK_AFTER);
        let stuck: HashSet<Tp> = if others_move {
            self.partitions
                .iter()
                .filter(|(_, p)| p.stuck_for(now) >= STUCK_AFTER)
                .map(|(tp, _)| tp.clone())
                .collect()
        } else {
            HashSet::new()
        };
        for tp in stuck.difference(&self.stuck) {
            let p = &self.partitions[tp];
            tracing::warn!(topic = %tp.0, partition = tp.1, batches = p.held(), stalled = ?p.stall(),
                leader = ?self.link.leader(&tp.0, tp.1), stuck_for = ?p.stuck_for(now),
                "partition stuck while others deliver: its new records are set aside so that it delays only itself");
        }
        self.stats
            .kafka
            .partitions_stuck
            .store(stuck.len() as u64, Ordering::Relaxed);
        self.stuck = stuck.clone();
        stuck
    }

    /// The set-aside chunks of partitions that can take records again.
    fn unparkable(
        &self,
        stuck: &HashSet<Tp>,
        counts: &HashMap<String, NonZeroU32>,
        room: &HashMap<Tp, usize>,
    ) -> Result<Vec<dispatcher::Unpark>, QueueError> {
        let window = self.settings.max_in_flight;
        let mut out = Vec::new();
        for tp in &self.parked {
            let ready = !stuck.contains(tp)
                && counts.contains_key(&tp.0)
                && room.get(tp).copied().unwrap_or(window) > 0
                && self.link.leader(&tp.0, tp.1).is_some();
            if !ready {
                continue;
            }
            let chunks = blocking(|| self.outbox.parked_chunks(tp, CHUNKS_PER_SEAL))?;
            out.push(dispatcher::Unpark {
                tp: tp.clone(),
                all: chunks.len() < CHUNKS_PER_SEAL,
                chunks,
            });
        }
        Ok(out)
    }

    /// Applies a committed seal in memory.
    fn sealed(&mut self, seal: Seal) {
        let records: u64 = seal.batches.iter().map(|b| b.record_count as u64).sum();
        add(&self.stats.sealed, records);
        if seal.dead_lettered > 0 {
            tracing::warn!(
                records = seal.dead_lettered,
                topics = ?seal.missing_topics,
                "records of topics Kafka does not have went to the dead-letter topic"
            );
            // Still in use: asked for at every refresh, in case the topic is created.
            let now = Instant::now();
            for t in &seal.missing_topics {
                self.topic_used.insert(t.clone(), now);
            }
            self.stats
                .discards
                .dead_lettered(DeadLetter::TopicMissing, seal.dead_lettered);
        }
        let parked: u64 = seal.parked.iter().map(|(_, r)| r.len() as u64).sum();
        add(&self.stats.parked, parked);
        if !seal.parked.is_empty() || !seal.unparked.is_empty() {
            match self.outbox.parked_partitions() {
                Ok(p) => {
                    for tp in self.parked.iter().filter(|tp| !p.contains(tp)) {
                        tracing::info!(topic = %tp.0, partition = tp.1,
                            "the records set aside for the partition are sealed: it goes on");
                    }
                    self.parked = p.into_iter().collect();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the partitions with records set aside")
                }
            }
        }
        self.next_batch_no = seal.next_batch_no;
        for (tp, next) in seal.next_sequences {
            self.next_sequences.insert(tp, next);
        }
        let mut received = seal.received.into_iter();
        let now = Instant::now();
        for b in seal.batches {
            let runs = received.next().unwrap_or_default();
            self.wanted_topics.insert(b.topic.clone());
            self.topic_used.insert(b.topic.clone(), now);
            self.partition((b.topic.clone(), b.partition))
                .push_sealed(b.meta(), runs);
        }
        // More may be waiting beyond this plan: look again right away.
        self.journal_dirty = Some(Instant::now());
    }

    /// Sends the next batch of every partition that may send, one batch per partition and
    /// request, up to `max_in_flight` requests per broker.
    async fn send_ready(&mut self) {
        if self.unsynced.is_some() || self.producer_lost || self.producer.is_none() {
            return;
        }
        let now = Instant::now();
        let mut by_node: BTreeMap<i32, Vec<Tp>> = BTreeMap::new();
        for (tp, p) in &self.partitions {
            if !p.wants_to_send(now) {
                continue;
            }
            match self.link.leader(&tp.0, tp.1) {
                Some(node) => by_node.entry(node).or_default().push(tp.clone()),
                None => {
                    self.metadata_due = self.metadata_due.min(kedge_base::deadline::later(
                        now,
                        self.settings.retry_initial,
                    ))
                }
            }
        }
        for (node, tps) in by_node {
            let conn = match self.link.connection(node) {
                Some(c) => c,
                None => match self.link.connect(node).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.kafka_ok = false;
                        // Tried again on every round while the broker is away: log it sparingly.
                        static GATE: LogGate = LogGate::new();
                        if let Some(held) = GATE.pass(LOG_EVERY) {
                            tracing::warn!(node, error = %e, repeated = held, "cannot reach partition leader");
                        }
                        for tp in &tps {
                            if let Some(p) = self.partitions.get_mut(tp) {
                                p.hold_off(now);
                            }
                        }
                        self.metadata_due = now;
                        continue;
                    }
                },
            };
            let mut ready = Vec::new();
            for tp in &tps {
                if self.ensure_floor(tp).await {
                    ready.push(tp.clone());
                }
            }
            while self.in_flight_per_node.get(&node).copied().unwrap_or(0)
                < self.settings.max_in_flight
            {
                let mut sent = Vec::new();
                let mut batches = Vec::new();
                for tp in &ready {
                    let Some(p) = self.partitions.get_mut(tp) else {
                        continue;
                    };
                    let Some(index) = p.next_to_send(now, conn) else {
                        continue;
                    };
                    let no = p.slot(index).meta.batch_no;
                    let bytes = match blocking(|| self.outbox.read(no)) {
                        Ok(bytes) => bytes,
                        Err(QueueError::BatchLost { .. }) => {
                            // Quarantined and counted by the queue; the rest of the partition
                            // moves on under a new producer id.
                            let effects = p.remove(index);
                            self.apply(tp, effects);
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, batch = no, "cannot read a sealed batch; retrying");
                            p.hold_off(now);
                            continue;
                        }
                    };
                    let p = self.partitions.get_mut(tp).expect("partition");
                    if p.sent(index, conn) {
                        add(&self.stats.retries, 1);
                    }
                    let count = p.slot(index).meta.record_count;
                    add(&self.stats.batches_sent, 1);
                    add(&self.stats.records_sent, count as u64);
                    sent.push((tp.clone(), no));
                    batches.push(ProduceBatch {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        bytes,
                    });
                }
                if sent.is_empty() {
                    break;
                }
                let zstd = self.settings.compression == BatchCompression::Zstd;
                match self.link.produce(node, conn, batches, zstd).await {
                    Ok(answers) => {
                        *self.in_flight_per_node.entry(node).or_default() += 1;
                        self.answers.push(completion(node, sent, answers));
                    }
                    Err(e) => {
                        // Not written: none of it can land.
                        self.kafka_ok = false;
                        static GATE: LogGate = LogGate::new();
                        if let Some(held) = GATE.pass(LOG_EVERY) {
                            tracing::warn!(node, error = %e, repeated = held, "cannot send to partition leader");
                        }
                        for (tp, no) in &sent {
                            if let Some(p) = self.partitions.get_mut(tp) {
                                p.not_sent(*no, now);
                            }
                        }
                        self.link.forget(node);
                        self.metadata_due = now;
                        break;
                    }
                }
            }
        }
    }

    /// Makes sure `tp` has a scan floor in the queue before its first batch goes out, so that
    /// a scan after a lost answer never has to read the partition from its start. Whether it
    /// may send now.
    async fn ensure_floor(&mut self, tp: &Tp) -> bool {
        if self.floors.contains(tp) {
            return true;
        }
        match self.outbox.scan_floor(&tp.0, tp.1) {
            Ok(Some(_)) => {
                self.floors.insert(tp.clone());
                return true;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a scan floor");
                return false;
            }
        }
        let end = match self.link.log_end(&tp.0, tp.1).await {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e,
                    "cannot read the partition's log end before its first batch; retrying");
                if let Some(p) = self.partitions.get_mut(tp) {
                    p.hold_off(Instant::now());
                }
                return false;
            }
        };
        match blocking(|| self.outbox.set_scan_floor(&tp.0, tp.1, end, true)) {
            Ok(()) => {
                self.floors.insert(tp.clone());
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot persist a scan floor; retrying");
                false
            }
        }
    }

    fn complete(&mut self, c: Completion) {
        let now = Instant::now();
        if let Some(n) = self.in_flight_per_node.get_mut(&c.node) {
            *n = n.saturating_sub(1);
        }
        match c.result {
            Err(e) => {
                tracing::warn!(node = c.node, error = %e, "produce request failed; verifying before resending");
                self.kafka_ok = false;
                self.link.forget(c.node);
                self.metadata_due = now;
                for (tp, no) in &c.sent {
                    self.stats.produce_error(NETWORK_ERROR);
                    // The request may have landed: its answer is what was lost.
                    if let Some(p) = self.partitions.get_mut(tp) {
                        p.lost(*no, now);
                    }
                }
            }
            Ok(answers) => {
                self.kafka_ok = true;
                let by_tp: HashMap<(&str, i32), &PartitionAnswer> = answers
                    .iter()
                    .map(|a| ((a.topic.as_str(), a.partition), a))
                    .collect();
                for (tp, no) in &c.sent {
                    let Some(p) = self.partitions.get_mut(tp) else {
                        continue;
                    };
                    let Some(answer) = by_tp.get(&(tp.0.as_str(), tp.1)) else {
                        tracing::warn!(topic = %tp.0, partition = tp.1, "produce answer lacks the partition; verifying");
                        self.stats.produce_error(MISSING_PARTITION);
                        p.lost(*no, now);
                        continue;
                    };
                    let code = answer.error_code;
                    let outcome = outcome::classify(code);
                    match outcome {
                        Outcome::Appended { duplicate } => {
                            if duplicate {
                                add(&self.stats.duplicates_detected, 1);
                            }
                        }
                        _ => self.stats.produce_error(static_error_name(code)),
                    }
                    log_outcome(tp, code, outcome);
                    let effects = p.answered(*no, outcome, code, answer.base_offset, now);
                    self.apply(tp, effects);
                }
            }
        }
        self.retire_idle();
    }

    /// Carries out what a partition's transition asks for.
    fn apply(&mut self, tp: &Tp, effects: Vec<Effect>) {
        let mut removed = false;
        for effect in effects {
            match effect {
                Effect::Delivered(slots) => {
                    self.delivered_at = Some(Instant::now());
                    let now = now_ms();
                    for slot in slots {
                        if let Err(e) = self.outbox.remove(slot.meta.batch_no) {
                            tracing::error!(error = %e, "cannot remove a delivered batch; it will be verified again");
                        }
                        removed = true;
                        add(&self.stats.delivered, slot.meta.record_count as u64);
                        add(&self.stats.batches_delivered, 1);
                        for &(ts, n) in &slot.received {
                            let ms = u64::try_from(now.saturating_sub(ts)).unwrap_or(0);
                            self.stats
                                .delivery_latency
                                .observe_n(Duration::from_millis(ms), u64::from(n));
                        }
                        self.stats.kafka.last_ack_ms.store(now, Ordering::Relaxed);
                    }
                }
                // Written after the removals: sled loses a suffix of its writes in a crash, so a
                // surviving floor implies surviving removals.
                Effect::Floor(offset) => {
                    if let Err(e) = self.outbox.set_scan_floor(&tp.0, tp.1, offset, false) {
                        tracing::warn!(error = %e, "cannot record the scan floor; a later scan starts earlier");
                    }
                }
                Effect::ProducerLost => {
                    if !self.producer_lost {
                        tracing::warn!(topic = %tp.0, partition = tp.1,
                            "Kafka no longer accepts our producer id and sequences; verifying, then re-sequencing under a new one");
                    }
                    self.producer_lost = true;
                }
                Effect::RefreshMetadata => self.metadata_due = Instant::now(),
            }
        }
        if removed {
            // The window has room again: seal what waits in the journal.
            self.journal_dirty = Some(Instant::now());
        }
    }

    fn retire_idle(&mut self) {
        self.partitions.retain(|_, p| !p.is_idle());
    }

    /// Starts a scan for every partition that needs one, up to [`MAX_SCANS`] at a time; each
    /// runs beside delivery, so one slow partition delays only itself.
    async fn start_verifies(&mut self) {
        let now = Instant::now();
        let ready: Vec<(Tp, i32)> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.needs_verify(now))
            .filter_map(|(tp, _)| Some((tp.clone(), self.link.leader(&tp.0, tp.1)?)))
            .take(MAX_SCANS.saturating_sub(self.scans.len()))
            .collect();
        for (tp, node) in ready {
            let from = match self.outbox.scan_floor(&tp.0, tp.1) {
                Ok(floor) => floor,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the scan floor; scanning from the start");
                    None
                }
            };
            let p = self.partitions.get_mut(&tp).expect("partition");
            let Some(window) = Found::window_of(p.unknown()) else {
                continue;
            };
            let found = Found::new(self.outbox.origin().clone(), window)
                .created_at(self.outbox.created_ms());
            p.verify_started();
            let started = Instant::now();
            // Without a floor (a queue from before scan floors) only the whole log tells.
            match self.link.scan(&tp.0, tp.1, from, found).await {
                Ok(scan) => self.scans.push(scanned(tp, node, started, scan)),
                Err(e) => {
                    self.scan_failed(&tp, node, &e);
                }
            }
        }
    }

    fn scanned(&mut self, s: Scanned) {
        let now = Instant::now();
        let report = match s.result {
            Ok(report) => report,
            Err(e) => {
                self.scan_failed(&s.tp, s.node, &e);
                return;
            }
        };
        let Some(p) = self.partitions.get_mut(&s.tp) else {
            return;
        };
        let unacknowledged = p.held();
        let (effects, tally) = p.verified(&report.found, report.end, report.gap, now);
        let v = &self.stats.verify;
        add(&v.by_tail_scan, 1);
        add(&v.batches_found, tally.found);
        add(&v.batches_missing, tally.resent);
        add(&v.batches_unverifiable, tally.unverifiable);
        add(&v.bytes_read, report.bytes);
        tracing::info!(topic = %s.tp.0, partition = s.tp.1, unacknowledged,
            already_in_kafka = tally.found, resending = tally.resent, scanned_bytes = report.bytes,
            skipped_entries = report.found.skipped, took = ?s.started.elapsed(),
            "verified before resending");
        if report.found.undecodable > 0 {
            tracing::warn!(topic = %s.tp.0, partition = s.tp.1, batches = report.found.undecodable,
                first_error = report.found.undecodable_reason.as_deref().unwrap_or_default(),
                "skipped batches of another producer whose records do not decode");
        }
        if tally.unverifiable > 0 {
            tracing::warn!(topic = %s.tp.0, partition = s.tp.1, batches = tally.unverifiable,
                "retention removed part of the log before kedge could look for its batches there; \
                 resending them may write them twice");
        }
        let twins = report.found.twins();
        if !twins.is_empty() {
            let records: u64 = twins.values().sum();
            add(&v.twin_records, records);
            tracing::error!(topic = %s.tp.0, partition = s.tp.1, device = %self.outbox.origin().device,
                other_queues = ?report.found.twin_ids(), records,
                "another agent writes with this device id: give each agent its own agent.device_id \
                 (kedge tells its own records apart by kedge-queue, consumers may not)");
        }
        self.apply(&s.tp, effects);
        self.retire_idle();
    }

    fn scan_failed(&mut self, tp: &Tp, node: i32, e: &KafkaError) {
        let now = Instant::now();
        add(&self.stats.verify.failed, 1);
        if let Some(p) = self.partitions.get_mut(tp) {
            p.verify_failed(now);
            let retry_in = p.retry_at().map(|t| t.saturating_duration_since(now));
            let denied = matches!(e, KafkaError::Broker { code: 29, .. });
            if denied {
                tracing::error!(topic = %tp.0, partition = tp.1, error = %e, ?retry_in,
                    "cannot read the topic to look for unacknowledged batches: grant this client READ \
                     on it; nothing of the partition is resent until it can be verified");
            } else {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, ?retry_in,
                    "cannot verify what Kafka holds; nothing of the partition is resent until it can");
            }
        }
        if matches!(
            e,
            KafkaError::Io { .. } | KafkaError::Timeout { .. } | KafkaError::Disconnected { .. }
        ) {
            self.link.forget(node);
        }
    }

    /// Splits or dead-letters batches Kafka refused for good, so that one bad batch never
    /// blocks its partition.
    fn handle_refused(&mut self) {
        let refused: Vec<(Tp, usize, Refusal, i16)> = self
            .partitions
            .iter()
            .filter_map(|(tp, p)| p.refused().map(|(i, r, c)| (tp.clone(), i, r, c)))
            .collect();
        for (tp, index, refusal, code) in refused {
            let meta = self.partitions[&tp].slot(index).meta.clone();
            let splittable = matches!(refusal, Refusal::TooLarge | Refusal::BadRecords);
            if splittable && meta.record_count > 1 {
                self.split(&tp, index, &meta, code);
            } else {
                self.dead_letter(&tp, index, &meta, code);
            }
        }
    }

    /// Moves the batches of partitions that no longer exist (a topic recreated with fewer
    /// partitions) to the topic's partitions now, by key as the dispatcher would: before, they
    /// waited for a leader forever. A batch of unknown fate cannot be looked for in a partition
    /// that is gone: it is moved all the same and counted as unverifiable.
    fn rehome_vanished(&mut self) {
        let Some(producer) = self.producer else {
            return;
        };
        let vanished: Vec<(Tp, NonZeroU32)> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.in_flight() == 0 && !p.scanning())
            .filter_map(|(tp, _)| {
                let count = self.link.topics().get(&tp.0)?.leaders.len();
                let count = NonZeroU32::new(u32::try_from(count).ok()?)?;
                (u32::try_from(tp.1).is_ok_and(|p| p >= count.get())).then(|| (tp.clone(), count))
            })
            .collect();
        for (tp, count) in vanished {
            let origin = self.outbox.origin().clone();
            let slots: Vec<partition::Slot> = self.partitions[&tp].slots().cloned().collect();
            let mut by_target: BTreeMap<i32, Vec<kedge_wire::record::SequencedRecord>> =
                BTreeMap::new();
            let (mut unknown, mut acked) = (0u64, Vec::new());
            for (index, slot) in slots.iter().enumerate() {
                match slot.state {
                    // Kafka held it; what the partition held went with it.
                    partition::SlotState::Acked { .. } => {
                        acked.push(slot.clone());
                        continue;
                    }
                    partition::SlotState::Unknown => unknown += 1,
                    _ => {}
                }
                let Some(records) = self.records_of(&tp, index, &slot.meta) else {
                    return;
                };
                for r in records {
                    let p = self.dispatcher.partition_of(&r.record, count) as i32;
                    by_target.entry(p).or_default().push(r);
                }
            }
            let mut seal = Seal {
                removed_batches: slots.iter().map(|s| s.meta.batch_no).collect(),
                next_batch_no: self.next_batch_no,
                ..Seal::default()
            };
            for (partition, records) in by_target {
                let target_tp = (tp.0.clone(), partition);
                let base = self.next_sequences.get(&target_tp).copied().unwrap_or(0);
                let target = rebuild::Target {
                    origin: &origin,
                    producer,
                    topic: &tp.0,
                    partition,
                    base_sequence: base,
                    compression: self.settings.compression,
                    first_batch_no: seal.next_batch_no,
                };
                match rebuild::encode(&target, &records) {
                    Ok(made) => {
                        let n: i32 = made.iter().map(|b| b.record_count).sum();
                        seal.next_batch_no += made.len() as u64;
                        seal.next_sequences
                            .push((target_tp, kedge_wire::sequence::increment(base, n)));
                        seal.batches.extend(made);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot move the batches of a vanished partition; retrying");
                        return;
                    }
                }
            }
            if let Err(e) = self.persist(&seal) {
                tracing::error!(error = %e, "cannot move the batches of a vanished partition; retrying");
                return;
            }
            tracing::warn!(topic = %tp.0, partition = tp.1, partitions_now = count.get(),
                batches = slots.len(), unverifiable = unknown,
                "the partition no longer exists (topic recreated with fewer partitions): its batches moved to the partitions it has now");
            add(&self.stats.verify.batches_unverifiable, unknown);
            self.partitions.remove(&tp);
            if !acked.is_empty() {
                self.apply(&tp, vec![Effect::Delivered(acked)]);
            }
            self.next_batch_no = seal.next_batch_no;
            for (target_tp, next) in seal.next_sequences {
                self.next_sequences.insert(target_tp, next);
            }
            for b in seal.batches {
                self.partition((b.topic.clone(), b.partition))
                    .push_sealed(b.meta(), Vec::new());
            }
        }
    }

    /// The records of a sealed batch, or `None` (logged) when they cannot be read.
    fn records_of(
        &mut self,
        tp: &Tp,
        index: usize,
        meta: &BatchMeta,
    ) -> Option<Vec<kedge_wire::record::SequencedRecord>> {
        let bytes = match blocking(|| self.outbox.read(meta.batch_no)) {
            Ok(b) => b,
            Err(QueueError::BatchLost { .. }) => {
                if let Some(p) = self.partitions.get_mut(tp) {
                    let effects = p.remove(index);
                    self.apply(tp, effects);
                }
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, batch = meta.batch_no, "cannot read a sealed batch; retrying");
                return None;
            }
        };
        match rebuild::records_of(meta, &bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, batch = meta.batch_no, "cannot decode a sealed batch; retrying");
                None
            }
        }
    }

    /// Replaces a refused batch with its two halves, same producer and sequences: the broker
    /// wrote nothing of it, so the halves take its place in the partition's sequence.
    fn split(&mut self, tp: &Tp, index: usize, meta: &BatchMeta, code: i16) {
        let Some(records) = self.records_of(tp, index, meta) else {
            return;
        };
        let half = records.len() / 2;
        let compression = self.settings.compression;
        let mut parts = Vec::new();
        let mut base = meta.base_sequence;
        let mut no = self.next_batch_no;
        for chunk in [&records[..half], &records[half..]] {
            let target = rebuild::Target {
                origin: self.outbox.origin(),
                producer: meta.producer,
                topic: &tp.0,
                partition: tp.1,
                base_sequence: base,
                compression,
                first_batch_no: no,
            };
            match rebuild::encode(&target, chunk) {
                Ok(made) => {
                    no += made.len() as u64;
                    base = kedge_wire::sequence::increment(base, chunk.len() as i32);
                    parts.extend(made);
                }
                Err(e) => {
                    tracing::error!(error = %e, batch = meta.batch_no, "cannot split a refused batch; retrying");
                    return;
                }
            }
        }
        let seal = Seal {
            removed_batches: vec![meta.batch_no],
            next_batch_no: no,
            batches: parts,
            ..Seal::default()
        };
        if let Err(e) = self.persist(&seal) {
            tracing::error!(error = %e, "cannot persist a split batch; retrying");
            return;
        }
        tracing::warn!(topic = %tp.0, partition = tp.1, records = meta.record_count, error = %error_name(code),
            "Kafka refused a batch; split it in two");
        add(&self.stats.batches_split, 1);
        self.next_batch_no = seal.next_batch_no;
        let metas = seal.batches.iter().map(SealedBatch::meta).collect();
        if let Some(p) = self.partitions.get_mut(tp) {
            p.split(index, metas);
        }
    }

    /// Moves a refused batch to the dead-letter topic (or, refused there too, drops it and
    /// counts it): it never blocks its partition.
    fn dead_letter(&mut self, tp: &Tp, index: usize, meta: &BatchMeta, code: i16) {
        let Some(producer) = self.producer else {
            return;
        };
        let dlq = self.settings.dead_letter_topic.clone();
        let reason = format!(
            "Kafka refused the batch for {}/{}: {}",
            tp.0,
            tp.1,
            error_name(code)
        );
        let mut seal = Seal {
            removed_batches: vec![meta.batch_no],
            next_batch_no: self.next_batch_no,
            ..Seal::default()
        };
        if tp.0 == dlq {
            tracing::error!(first_seq = meta.first_seq, last_seq = meta.last_seq, records = meta.record_count,
                reason = %reason, "records dropped: even the dead-letter topic refuses them");
        } else {
            let Some(count) = self
                .link
                .topics()
                .get(&dlq)
                .map(|t| t.leaders.len())
                .filter(|n| *n > 0)
            else {
                if self.wanted_topics.insert(dlq.clone()) {
                    self.metadata_due = Instant::now();
                }
                return;
            };
            let Some(records) = self.records_of(tp, index, meta) else {
                return;
            };
            // Partition 0 would do; spreading by the batch number keeps one bad day from piling
            // onto one partition.
            let partition = (meta.batch_no % count as u64) as i32;
            let dlq_tp = (dlq.clone(), partition);
            let base = self.next_sequences.get(&dlq_tp).copied().unwrap_or(0);
            let target = rebuild::Target {
                origin: self.outbox.origin(),
                producer,
                topic: &dlq,
                partition,
                base_sequence: base,
                compression: self.settings.compression,
                first_batch_no: self.next_batch_no,
            };
            match rebuild::encode(&target, &rebuild::dead_lettered(records, &reason)) {
                Ok(moved) => {
                    seal.next_batch_no = self.next_batch_no + moved.len() as u64;
                    let n: i32 = moved.iter().map(|b| b.record_count).sum();
                    seal.next_sequences
                        .push((dlq_tp, kedge_wire::sequence::increment(base, n)));
                    seal.batches = moved;
                }
                Err(e) => {
                    tracing::error!(error = %e, batch = meta.batch_no, "cannot rebuild a refused batch for the dead-letter topic");
                    return;
                }
            }
        }
        if let Err(e) = self.persist(&seal) {
            tracing::error!(error = %e, "cannot move a refused batch to the dead-letter topic; retrying later");
            return;
        }
        if tp.0 == dlq {
            self.stats
                .discards
                .dropped(Dropped::DeadLetterRefused, meta.record_count as u64);
        } else {
            tracing::warn!(topic = %tp.0, partition = tp.1, records = meta.record_count, reason = %reason,
                "batch moved to the dead-letter topic");
            self.stats
                .discards
                .dead_lettered(DeadLetter::KafkaRefused, meta.record_count as u64);
        }
        self.next_batch_no = seal.next_batch_no;
        for (dlq_tp, next) in seal.next_sequences {
            self.next_sequences.insert(dlq_tp, next);
        }
        if let Some(p) = self.partitions.get_mut(tp) {
            let effects = p.remove(index);
            self.apply(tp, effects);
        }
        for b in seal.batches {
            self.partition((b.topic.clone(), b.partition))
                .push_sealed(b.meta(), Vec::new());
        }
        self.retire_idle();
    }

    /// Takes a new producer id and moves every batch not in the log to it, with sequences from
    /// 0: only once no batch anywhere is in flight, unknown, being looked for or refused, so that
    /// no batch that may be in the log is ever sent under a new identity.
    async fn resequence(&mut self) {
        let unresolved = self
            .partitions
            .values()
            .any(|p| p.unresolved() || p.refused().is_some());
        if unresolved || !self.answers.is_empty() || !self.scans.is_empty() {
            return;
        }
        let new = match self.link.init_producer_id().await {
            Ok(p) => p,
            Err(e) => {
                let delay = self.metadata_backoff.next_delay();
                self.producer_retry_at = kedge_base::deadline::after(delay);
                if self.metadata_backoff.should_log() {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot get a new producer id from Kafka");
                }
                return;
            }
        };
        let origin = self.outbox.origin().clone();
        let mut batches = Vec::new();
        let mut next_sequences = Vec::new();
        let tps: Vec<Tp> = self.partitions.keys().cloned().collect();
        for tp in tps {
            let metas: Vec<BatchMeta> = self.partitions[&tp].to_resequence().cloned().collect();
            let mut next = 0;
            for meta in metas {
                let index = self.partitions[&tp]
                    .slots()
                    .position(|s| s.meta.batch_no == meta.batch_no)
                    .expect("slot");
                let Some(records) = self.records_of(&tp, index, &meta) else {
                    return;
                };
                let target = rebuild::Target {
                    origin: &origin,
                    producer: new,
                    topic: &tp.0,
                    partition: tp.1,
                    base_sequence: next,
                    compression: self.settings.compression,
                    first_batch_no: meta.batch_no,
                };
                match rebuild::encode(&target, &records) {
                    Ok(mut made) if made.len() == 1 => {
                        let b = made.pop().expect("one batch");
                        next = kedge_wire::sequence::increment(next, b.record_count);
                        batches.push(b);
                    }
                    Ok(_) => {
                        tracing::error!(
                            batch = meta.batch_no,
                            "a re-sequenced batch would wrap its sequences; retrying later"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::error!(batch = meta.batch_no, error = %e, "cannot re-sequence a sealed batch; retrying later");
                        return;
                    }
                }
            }
            next_sequences.push((tp, next));
        }
        match blocking(|| self.outbox.resequence(new, &batches, &next_sequences)) {
            Ok(()) => {}
            Err(SealError::NotDurable(e)) => {
                tracing::error!(error = %e, "re-sequencing committed but is not durable; sending waits for a sync");
                self.unsynced = Some(Instant::now());
            }
            Err(SealError::NotWritten(e)) => {
                tracing::error!(error = %e, "cannot persist the re-sequenced batches; retrying later");
                return;
            }
        }
        tracing::info!(
            producer_id = new.producer_id,
            epoch = new.producer_epoch,
            batches = batches.len(),
            "re-sequenced the undelivered batches under a new producer id"
        );
        self.producer = Some(new);
        self.next_sequences = next_sequences.into_iter().collect();
        let metas: Vec<BatchMeta> = batches.iter().map(SealedBatch::meta).collect();
        for p in self.partitions.values_mut() {
            p.resequenced(&metas);
        }
        self.producer_lost = false;
    }

    /// Publishes the gauges of the sealed batches waiting for Kafka.
    fn publish_backlog(&self) {
        let k = &self.stats.kafka;
        let slots = || self.partitions.values().flat_map(|p| p.slots());
        k.batches_unacknowledged
            .store(slots().count() as u64, Ordering::Relaxed);
        k.records_unacknowledged.store(
            slots().map(|s| s.meta.record_count as u64).sum(),
            Ordering::Relaxed,
        );
    }

    /// Publishes the gauges of the link to Kafka for the metrics endpoint.
    fn publish_link(&self) {
        let k = &self.stats.kafka;
        let set = |g: &std::sync::atomic::AtomicU64, v: usize| g.store(v as u64, Ordering::Relaxed);
        let (mut known, mut unknown) = (0, 0);
        for t in self.link.topics().values() {
            let with = t.leaders.iter().filter(|l| **l >= 0).count();
            known += with;
            unknown += t.leaders.len() - with;
        }
        k.connected.store(self.kafka_ok, Ordering::Relaxed);
        set(&k.connections, self.link.open_connections());
        set(&k.leaders_known, known);
        set(&k.leaders_unknown, unknown);
        set(&k.requests_in_flight, self.answers.len());
        self.publish_backlog();
        let stalled = self
            .partitions
            .values()
            .filter(|p| p.stall().is_some())
            .count();
        set(&k.partitions_stalled, stalled);
    }
}

fn completion(node: i32, sent: Vec<(Tp, u64)>, answers: Answers) -> BoxFuture<'static, Completion> {
    Box::pin(async move {
        Completion {
            node,
            sent,
            result: answers.await,
        }
    })
}

fn scanned(tp: Tp, node: i32, started: Instant, scan: Scan) -> BoxFuture<'static, Scanned> {
    Box::pin(async move {
        Scanned {
            tp,
            node,
            started,
            result: scan.await,
        }
    })
}

/// Logs an answer that was not a plain success, at the level it deserves.
fn log_outcome(tp: &Tp, code: i16, outcome: Outcome) {
    match outcome {
        Outcome::Appended { .. } => {}
        Outcome::NotAllowed => {
            static GATE: LogGate = LogGate::new();
            if let Some(held) = GATE.pass(LOG_EVERY) {
                tracing::error!(topic = %tp.0, partition = tp.1, error = %error_name(code), repeated = held,
                    "Kafka does not allow this producer to write there (permissions or broker settings); \
                     retrying until an operator fixes it");
            }
        }
        _ => {
            tracing::debug!(topic = %tp.0, partition = tp.1, error = %error_name(code), ?outcome, "produce error")
        }
    }
}

/// Each partition's batches in the order their sequences follow one another: a split replaces
/// a batch by two with higher batch numbers than the batches after it. Batches are otherwise in
/// batch-number (seal) order.
fn in_sequence_order(batches: Vec<BatchMeta>) -> Vec<BatchMeta> {
    let mut by_tp: BTreeMap<Tp, Vec<BatchMeta>> = BTreeMap::new();
    for b in batches {
        by_tp
            .entry((b.topic.clone(), b.partition))
            .or_default()
            .push(b);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_tp {
        list.sort_by_key(|b| b.batch_no);
        let end_of =
            |b: &BatchMeta| kedge_wire::sequence::increment(b.base_sequence, b.record_count);
        let mut chains: Vec<Vec<BatchMeta>> = Vec::new();
        let mut rest = list;
        while !rest.is_empty() {
            // A chain starts at a batch no other batch of the same producer ends at.
            let start = rest
                .iter()
                .position(|b| {
                    !rest.iter().any(|o| {
                        o.batch_no != b.batch_no
                            && o.producer == b.producer
                            && end_of(o) == b.base_sequence
                    })
                })
                .unwrap_or(0);
            let mut chain = vec![rest.remove(start)];
            while let Some(next) = rest.iter().position(|o| {
                let last = chain.last().expect("chain");
                o.producer == last.producer && o.base_sequence == end_of(last)
            }) {
                chain.push(rest.remove(next));
            }
            chains.push(chain);
        }
        chains.sort_by_key(|c| c.iter().map(|b| b.batch_no).min());
        out.extend(chains.into_iter().flatten());
    }
    out
}

/// Runs queue I/O (sled, fdatasync) from the delivery task: on a multi-threaded runtime the
/// worker steps aside while it blocks; on a current-thread runtime (the tests' paused clock)
/// it simply runs.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `error` label of a Produce error code: its name, or `unknown` for codes newer than
/// kafka_protocol's (a label must not be made from arbitrary input).
fn static_error_name(code: i16) -> &'static str {
    match error_name(code) {
        std::borrow::Cow::Borrowed(name) => name,
        std::borrow::Cow::Owned(_) => "unknown",
    }
}

#[cfg(test)]
mod tests;
