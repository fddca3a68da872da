//! Delivery: seal journal chunks into batches and send them to the partition leaders until Kafka
//! acknowledges them (DESIGN.md §2, steps 4–5).
//!
//! Each partition keeps at most `window` sealed, unacknowledged batches (the broker deduplicates
//! the last 5 batches of a producer per partition) and sends them in order, pipelined up to
//! `max_in_flight` requests per broker. A batch leaves the queue only when Kafka acknowledges it;
//! on any error the partition waits for its requests in flight, then resends the same bytes from
//! its oldest unacknowledged batch. No timeout ever drops a batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::KafkaError;
use super::batch::{BatchCompression, ProducerIdentity};
use super::client::{Broker, Cluster};
use super::errors::{Disposition, classify_produce_error, error_name};
use crate::backoff::Backoff;
use crate::dispatcher::{Dispatcher, Plan, PlanInput};
use crate::queue::outbox::SealedBatch;
use crate::queue::{Queue, QueueError};
use crate::telemetry::{DeadLetter, Dropped, LogGate, Stats};

/// Kafka error code DUPLICATE_SEQUENCE_NUMBER: the batch was already written.
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
/// Journal chunks read per seal; bounds the work of one plan.
const CHUNKS_PER_SEAL: usize = 64;
/// Shortest interval between two lines of an error that repeats with every delivery round.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// The `error` label of a Produce request that got no answer (connection lost, timeout).
const NETWORK_ERROR: &str = "network";
/// The `error` label of a Produce response that left a partition out.
const MISSING_PARTITION: &str = "missing_partition";
/// The verify method that reads the leader's producer state.
const DESCRIBE_PRODUCERS: &str = "describe-producers";

/// Producer settings from the config.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// Requests in flight per broker connection, and sealed batches per partition.
    pub max_in_flight: usize,
    /// How long to wait for more records before sealing a batch.
    pub linger: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Refresh metadata at least this often.
    pub metadata_refresh: Duration,
    /// Batch compression.
    pub compression: BatchCompression,
    /// Device id: a tail scan recognizes this device's records by it.
    pub device_id: String,
    /// Where batches Kafka refuses for good go, with the reason in a `kedge-error` header.
    pub dead_letter_topic: String,
}

type Tp = (String, i32);

struct Slot {
    batch: SealedBatch,
    sent: bool,
    /// Kafka acknowledged it, but an older batch of the partition is still unresolved: it
    /// leaves the queue with the batches before it. (A later acknowledgement proves nothing
    /// about an earlier batch on a broker that does not check sequences.)
    acked: bool,
    /// Log offset after the batch, when its acknowledgement said where it landed.
    end_offset: Option<i64>,
    /// Kafka refused the batch for good with this error code: it moves to the dead-letter topic.
    refused: Option<i16>,
    /// Timestamps of its records as (ms, records) runs, for the delivery latency; empty for
    /// batches sealed before this start.
    received: Vec<(i64, u32)>,
}

impl Slot {
    fn sendable(&self) -> bool {
        !self.sent && !self.acked
    }

    fn new(batch: SealedBatch, received: Vec<(i64, u32)>) -> Self {
        Slot {
            batch,
            sent: false,
            acked: false,
            end_offset: None,
            refused: None,
            received,
        }
    }
}

struct PartitionState {
    slots: VecDeque<Slot>,
    in_flight: usize,
    rewind: bool,
    /// The broker may hold some of the unacknowledged batches (after a restart, a lost
    /// response, a broken connection): scan before sending any of them again.
    verify: bool,
    /// A verify was caused by OUT_OF_ORDER_SEQUENCE_NUMBER; a second one in a row means the
    /// broker's sequence state no longer matches ours, and only a new producer id resolves it.
    out_of_order: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

struct Completion {
    node: i32,
    sent: Vec<(Tp, u64)>,
    result: Result<ProduceResponse, KafkaError>,
}

/// When to stop: never (`None`), or once everything is delivered or the deadline passes.
pub type Drain = Option<Instant>;

/// The delivery stage.
pub struct Producer {
    queue: Arc<Queue>,
    cluster: Cluster,
    dispatcher: Dispatcher,
    settings: ProducerSettings,
    stats: Arc<Stats>,
    producer: Option<ProducerIdentity>,
    next_sequences: BTreeMap<Tp, i32>,
    next_batch_no: u64,
    partitions: BTreeMap<Tp, PartitionState>,
    in_flight: FuturesUnordered<BoxFuture<'static, Completion>>,
    in_flight_per_node: HashMap<i32, usize>,
    wanted_topics: BTreeSet<String>,
    metadata_due: Instant,
    metadata_backoff: Backoff,
    /// When a failed InitProducerId may be tried again (the loop wakes for other reasons too).
    producer_retry_at: Instant,
    journal_dirty: Option<Instant>,
    /// The broker forgot or fenced our producer id: once every partition is verified, take a
    /// new id and re-sequence the remaining batches under it.
    producer_lost: bool,
    /// The last exchange with Kafka (metadata, connect, produce) succeeded.
    kafka_ok: bool,
}

impl Producer {
    /// A producer over `queue`, loading its sealed batches and producer state.
    pub fn new(
        queue: Arc<Queue>,
        cluster: Cluster,
        dispatcher: Dispatcher,
        settings: ProducerSettings,
        stats: Arc<Stats>,
    ) -> Result<Self, crate::queue::QueueError> {
        let producer = queue.producer()?;
        let next_sequences = queue.next_sequences()?;
        let next_batch_no = queue.next_batch_no()?;
        let mut p = Producer {
            metadata_backoff: Backoff::new(settings.retry_initial, settings.retry_max),
            queue: queue.clone(),
            cluster,
            dispatcher,
            stats,
            producer,
            next_sequences,
            next_batch_no,
            partitions: BTreeMap::new(),
            in_flight: FuturesUnordered::new(),
            in_flight_per_node: HashMap::new(),
            wanted_topics: BTreeSet::new(),
            metadata_due: Instant::now(),
            producer_retry_at: Instant::now(),
            journal_dirty: Some(Instant::now()),
            producer_lost: false,
            kafka_ok: false,
            settings,
        };
        let batches = queue.sealed_batches()?;
        if !batches.is_empty() {
            tracing::info!(
                batches = batches.len(),
                "resuming delivery of sealed batches"
            );
        }
        for b in batches {
            p.wanted_topics.insert(b.topic.clone());
            let state = p.partition((b.topic.clone(), b.partition));
            // Any of them may have been sent before the restart: look before resending.
            state.verify = true;
            state.slots.push_back(Slot::new(b, Vec::new()));
        }
        Ok(p)
    }

    fn partition(&mut self, tp: Tp) -> &mut PartitionState {
        let (initial, max) = (self.settings.retry_initial, self.settings.retry_max);
        self.partitions.entry(tp).or_insert_with(|| PartitionState {
            slots: VecDeque::new(),
            in_flight: 0,
            rewind: false,
            verify: false,
            out_of_order: false,
            retry_at: None,
            backoff: Backoff::new(initial, max),
        })
    }

    /// Runs until `drain` asks to stop and everything is delivered, or its deadline passes.
    /// `journal` changes whenever a commit adds records.
    pub async fn run(
        mut self,
        mut journal: watch::Receiver<u64>,
        mut drain: watch::Receiver<Drain>,
    ) {
        // Once the commit stage is gone its channel reports closed at once; stop listening then.
        let mut journal_open = true;
        loop {
            let now = Instant::now();
            let deadline = *drain.borrow();
            if let Some(deadline) = deadline {
                let idle = self.partitions.values().all(|p| p.slots.is_empty())
                    && self.queue.journal_is_empty();
                if idle || now >= deadline {
                    if !idle {
                        tracing::warn!(
                            "shutdown deadline reached; undelivered records stay in the queue"
                        );
                    }
                    break;
                }
            }
            if now >= self.metadata_due {
                self.refresh_metadata().await;
            }
            if self.producer.is_none() && self.cluster_known() && now >= self.producer_retry_at {
                self.init_producer().await;
            }
            if self.producer.is_some() {
                self.verify_partitions().await;
            }
            if self.producer.is_some() {
                self.dead_letter_refused();
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

            let wake = self.next_wake(deadline);
            tokio::select! {
                Some(c) = self.in_flight.next(), if !self.in_flight.is_empty() => self.complete(c),
                changed = journal.changed(), if journal_open => match changed {
                    Ok(()) => {
                        if self.journal_dirty.is_none() {
                            self.journal_dirty = Some(Instant::now() + self.settings.linger);
                        }
                    }
                    Err(_) => journal_open = false,
                },
                _ = drain.changed(), if deadline.is_none() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // Requests still in flight are abandoned: their batches stay sealed and are verified or
        // resent at the next start.
        tracing::info!(stats = %self.stats.summary(), "delivery stopped");
    }

    fn cluster_known(&self) -> bool {
        !self.cluster.topics().is_empty() || self.wanted_topics.is_empty()
    }

    fn next_wake(&self, deadline: Drain) -> Instant {
        let mut wake = self.metadata_due;
        // Without a producer id nothing can be sealed: a due journal must not spin the loop.
        // Nor while the producer id is being replaced.
        match (
            self.producer.filter(|_| !self.producer_lost),
            self.journal_dirty,
        ) {
            (Some(_), Some(t)) => wake = wake.min(t),
            (None, _) => wake = wake.min(self.producer_retry_at),
            (Some(_), None) => {}
        }
        for p in self.partitions.values() {
            if let Some(t) = p.retry_at {
                wake = wake.min(t);
            }
        }
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        // Re-check at least once a second: cheap, and keeps the drain check timely.
        wake.min(Instant::now() + Duration::from_secs(1))
    }

    async fn refresh_metadata(&mut self) {
        let mut topics = self.wanted_topics.clone();
        topics.extend(self.cluster.topics().keys().cloned());
        let topics: Vec<String> = topics.into_iter().collect();
        let refreshed = self.cluster.refresh_metadata(&topics).await;
        self.kafka_ok = refreshed.is_ok();
        match refreshed {
            Ok(()) => {
                let missing: Vec<&String> = self
                    .wanted_topics
                    .iter()
                    .filter(|t| !self.cluster.topics().contains_key(*t))
                    .collect();
                if missing.is_empty() {
                    self.metadata_backoff.reset();
                    self.metadata_due = Instant::now() + self.settings.metadata_refresh;
                } else {
                    // Look again soon, backing off: the topic may be created any moment, or
                    // never, and a missing topic must not flood the log.
                    let delay = self.metadata_backoff.next_delay();
                    self.metadata_due = Instant::now() + delay;
                    if self.metadata_backoff.should_log() {
                        tracing::warn!(?missing, retry_in = ?delay,
                            "topics unknown to Kafka; their records wait in the queue");
                    }
                }
            }
            Err(e) => {
                let delay = self.metadata_backoff.next_delay();
                self.metadata_due = Instant::now() + delay;
                if self.metadata_backoff.should_log() {
                    tracing::warn!(error = %e, attempts = self.metadata_backoff.attempts(), retry_in = ?delay,
                        "Kafka unreachable; records wait in the queue");
                }
            }
        }
    }

    async fn init_producer(&mut self) {
        match self.cluster.init_producer_id().await {
            Ok(p) => match self.queue.set_producer(p) {
                Ok(()) => {
                    tracing::info!(
                        producer_id = p.producer_id,
                        epoch = p.producer_epoch,
                        "new idempotent producer id"
                    );
                    self.producer = Some(p);
                    self.next_sequences.clear();
                }
                Err(e) => tracing::error!(error = %e, "cannot persist the producer id"),
            },
            Err(e) => {
                self.kafka_ok = false;
                let delay = self.metadata_backoff.next_delay();
                self.producer_retry_at = Instant::now() + delay;
                self.metadata_due = self.producer_retry_at;
                if self.metadata_backoff.should_log() {
                    tracing::warn!(error = %e, attempts = self.metadata_backoff.attempts(), retry_in = ?delay,
                        "cannot get a producer id from Kafka; records wait in the queue");
                }
            }
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
            .map(|(tp, p)| (tp.clone(), window.saturating_sub(p.slots.len())))
            .collect();
        let counts: HashMap<String, NonZeroU32> = self
            .cluster
            .topics()
            .iter()
            .filter_map(|(name, t)| {
                Some((
                    name.clone(),
                    NonZeroU32::new(u32::try_from(t.leaders.len()).ok()?)?,
                ))
            })
            .collect();
        let result = tokio::task::block_in_place(|| -> Result<Plan, SealFailure> {
            let mut failed = None;
            let mut chunks = self
                .queue
                .journal_iter()
                .take(CHUNKS_PER_SEAL)
                .map_while(|c| c.map_err(|e| failed = Some(e)).ok());
            let plan = self
                .dispatcher
                .plan(PlanInput {
                    chunks: &mut chunks,
                    partition_counts: &counts,
                    room: &room,
                    window,
                    next_sequences: &self.next_sequences,
                    producer,
                    next_batch_no: self.next_batch_no,
                })
                .map_err(|e| SealFailure::Failed(e.to_string()));
            drop(chunks);
            // A journal that cannot be read is not sealed from, not even its readable prefix.
            if let Some(e) = failed {
                return Err(SealFailure::Failed(e.to_string()));
            }
            let plan = plan?;
            if let Plan::Seal(seal) = &plan {
                self.queue.seal(seal).map_err(|e| match e {
                    QueueError::ChunkGone { first_seq } => SealFailure::ChunkGone(first_seq),
                    e => SealFailure::Failed(e.to_string()),
                })?;
            }
            Ok(plan)
        });
        match result {
            Ok(Plan::Seal(seal)) => {
                let records: u64 = seal.batches.iter().map(|b| b.record_count as u64).sum();
                Stats::add(&self.stats.sealed, records);
                self.next_batch_no = seal.next_batch_no;
                for (tp, next) in seal.next_sequences {
                    self.next_sequences.insert(tp, next);
                }
                let mut received = seal.received.into_iter();
                for b in seal.batches {
                    let runs = received.next().unwrap_or_default();
                    self.partition((b.topic.clone(), b.partition))
                        .slots
                        .push_back(Slot::new(b, runs));
                }
                // More may be waiting beyond this plan: look again right away.
                self.journal_dirty = Some(Instant::now());
            }
            Ok(Plan::NeedMetadata(topics)) => {
                let new = topics.iter().any(|t| !self.wanted_topics.contains(t));
                self.wanted_topics.extend(topics);
                if new {
                    self.metadata_due = Instant::now();
                }
                self.journal_dirty =
                    Some(self.metadata_due.max(Instant::now() + self.settings.linger));
            }
            Ok(Plan::Blocked) => self.journal_dirty = Some(Instant::now() + Duration::from_secs(1)),
            Ok(Plan::Empty) => self.journal_dirty = None,
            Err(SealFailure::ChunkGone(first_seq)) => {
                tracing::debug!(
                    first_seq,
                    "a chunk was dropped while sealing it; planning again"
                );
                self.journal_dirty = Some(Instant::now());
            }
            Err(SealFailure::Failed(e)) => {
                tracing::error!(error = %e, "sealing failed; the journal keeps the records, retrying");
                self.journal_dirty = Some(Instant::now() + self.metadata_backoff.next_delay());
            }
        }
    }

    /// Sends the next unsent batch of every ready partition, one request per leader at a time,
    /// up to `max_in_flight` requests per leader.
    async fn send_ready(&mut self) {
        let now = Instant::now();
        let mut by_node: BTreeMap<i32, Vec<Tp>> = BTreeMap::new();
        for (tp, p) in &mut self.partitions {
            let refused = p.slots.iter().any(|s| s.refused.is_some());
            let waiting = p.rewind
                || p.verify
                || refused
                || self.producer_lost
                || p.retry_at.is_some_and(|t| now < t);
            if waiting || !p.slots.iter().any(Slot::sendable) {
                continue;
            }
            p.retry_at = None;
            match self.cluster.leader(&tp.0, tp.1) {
                Some(node) => by_node.entry(node).or_default().push(tp.clone()),
                None => {
                    self.metadata_due = self.metadata_due.min(now + self.settings.retry_initial)
                }
            }
        }
        for (node, tps) in by_node {
            // Batches still in flight on a broken connection fail any moment now; sending their
            // successors on a fresh connection first would only earn OUT_OF_ORDER answers.
            if self.in_flight_per_node.get(&node).is_some_and(|n| *n > 0)
                && self.cluster.connection_broken(node)
            {
                continue;
            }
            let broker = match self.cluster.broker(node).await {
                Ok(b) => b,
                Err(e) => {
                    self.kafka_ok = false;
                    // Tried again on every round while the broker is away: log it sparingly.
                    static GATE: LogGate = LogGate::new();
                    if let Some(held) = GATE.pass(LOG_EVERY) {
                        tracing::warn!(node, error = %e, repeated = held, "cannot reach partition leader");
                    }
                    for tp in &tps {
                        self.fail_partition(tp);
                    }
                    self.metadata_due = now;
                    continue;
                }
            };
            let Some(version) = self.produce_version(&broker) else {
                tracing::error!(
                    broker = broker.conn.addr(),
                    "broker does not support Produce v7–v12 (Kafka ≥ 2.1 is needed for zstd)"
                );
                for tp in &tps {
                    self.fail_partition(tp);
                }
                continue;
            };
            while self.in_flight_per_node.get(&node).copied().unwrap_or(0)
                < self.settings.max_in_flight
            {
                let mut sent = Vec::new();
                let mut topics: BTreeMap<String, Vec<PartitionProduceData>> = BTreeMap::new();
                for tp in &tps {
                    let p = self.partitions.get_mut(tp).expect("partition state");
                    if let Some(slot) = p.slots.iter_mut().find(|s| s.sendable()) {
                        slot.sent = true;
                        p.in_flight += 1;
                        Stats::add(&self.stats.batches_sent, 1);
                        Stats::add(&self.stats.records_sent, slot.batch.record_count as u64);
                        sent.push((tp.clone(), slot.batch.batch_no));
                        topics.entry(tp.0.clone()).or_default().push(
                            PartitionProduceData::default()
                                .with_index(tp.1)
                                .with_records(Some(slot.batch.bytes.clone())),
                        );
                    }
                }
                if sent.is_empty() {
                    break;
                }
                let request = ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(
                        self.cluster
                            .request_timeout()
                            .as_millis()
                            .min(i32::MAX as u128) as i32,
                    )
                    .with_topic_data(
                        topics
                            .into_iter()
                            .map(|(t, parts)| {
                                TopicProduceData::default()
                                    .with_name(TopicName(StrBytes::from_string(t)))
                                    .with_partition_data(parts)
                            })
                            .collect(),
                    );
                *self.in_flight_per_node.entry(node).or_default() += 1;
                let timeout = self.cluster.request_timeout();
                let b = broker.clone();
                let send = broker.conn.send(&request, version).await;
                self.in_flight.push(Box::pin(async move {
                    let result = match send {
                        Ok(pending) => match tokio::time::timeout(timeout, pending.recv()).await {
                            Ok(r) => r,
                            Err(_) => {
                                // The response is lost; later responses on this connection
                                // would be out of step, so the connection goes.
                                b.conn.close("produce request timed out");
                                Err(KafkaError::Timeout {
                                    addr: b.conn.addr().to_owned(),
                                })
                            }
                        },
                        Err(e) => Err(e),
                    };
                    Completion { node, sent, result }
                }));
            }
        }
        self.rewind_idle_partitions();
    }

    fn produce_version(&self, broker: &Broker) -> Option<i16> {
        // zstd needs Produce v7; v13 identifies topics by id, which we do not fill in.
        let min = match self.settings.compression {
            BatchCompression::Zstd => 7,
            BatchCompression::None => 3,
        };
        broker.version(ApiKey::Produce, min..=12)
    }

    fn complete(&mut self, c: Completion) {
        if let Some(n) = self.in_flight_per_node.get_mut(&c.node) {
            *n = n.saturating_sub(1);
        }
        for (tp, _) in &c.sent {
            if let Some(p) = self.partitions.get_mut(tp) {
                p.in_flight = p.in_flight.saturating_sub(1);
            }
        }
        match c.result {
            Err(e) => {
                tracing::warn!(node = c.node, error = %e, "produce request failed; will resend");
                self.kafka_ok = false;
                self.cluster.drop_broker(c.node);
                self.metadata_due = Instant::now();
                for (tp, _) in &c.sent {
                    self.stats.produce_error(NETWORK_ERROR);
                    // The request may have landed: its response is what was lost.
                    self.fail_partition(tp);
                    if let Some(p) = self.partitions.get_mut(tp) {
                        p.verify = true;
                    }
                }
            }
            Ok(response) => {
                self.kafka_ok = true;
                let mut codes: HashMap<(String, i32), (i16, i64)> = HashMap::new();
                for t in &response.responses {
                    for p in &t.partition_responses {
                        codes.insert(
                            (t.name.0.to_string(), p.index),
                            (p.error_code, p.base_offset),
                        );
                    }
                }
                for (tp, batch_no) in &c.sent {
                    let Some(&(code, base_offset)) = codes.get(tp) else {
                        tracing::warn!(topic = %tp.0, partition = tp.1, "produce response lacks the partition; will resend");
                        self.stats.produce_error(MISSING_PARTITION);
                        self.fail_partition(tp);
                        continue;
                    };
                    let disposition = classify_produce_error(code);
                    if !matches!(disposition, Disposition::Delivered) {
                        self.stats.produce_error(static_error_name(code));
                    }
                    match disposition {
                        Disposition::Delivered => {
                            if code == DUPLICATE_SEQUENCE_NUMBER {
                                Stats::add(&self.stats.duplicates_detected, 1);
                            }
                            let end = self.end_offset(tp, *batch_no, base_offset);
                            self.acknowledge(tp, *batch_no, end);
                        }
                        Disposition::Retry { refresh_metadata } => {
                            tracing::debug!(topic = %tp.0, partition = tp.1, error = %error_name(code), "retriable produce error");
                            if refresh_metadata {
                                self.metadata_due = Instant::now();
                            }
                            self.fail_partition(tp);
                        }
                        Disposition::Resequence => {
                            self.producer_state_mismatch(tp, *batch_no, code)
                        }
                        Disposition::Permanent => {
                            self.fail_partition(tp);
                            if let Some(s) = self.partitions.get_mut(tp).and_then(|p| {
                                p.slots.iter_mut().find(|s| s.batch.batch_no == *batch_no)
                            }) {
                                s.refused = Some(code);
                            }
                        }
                    }
                }
            }
        }
        self.rewind_idle_partitions();
    }

    /// Kafka holds `batch_no`. It leaves the queue once every older batch of its partition has
    /// left too; the log offset after the last one that leaves is remembered for tail scans —
    /// only then, so that no batch still queued lies before it.
    fn acknowledge(&mut self, tp: &Tp, batch_no: u64, end_offset: Option<i64>) {
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        if let Some(s) = p.slots.iter_mut().find(|s| s.batch.batch_no == batch_no) {
            s.acked = true;
            s.end_offset = end_offset;
        }
        let mut hint = None;
        while p.slots.front().is_some_and(|s| s.acked) {
            let slot = p.slots.pop_front().expect("front exists");
            if let Err(e) = self.queue.remove_batch(slot.batch.batch_no) {
                tracing::error!(error = %e, "cannot remove a delivered batch; it will be verified again");
            }
            Stats::add(&self.stats.delivered, slot.batch.record_count as u64);
            Stats::add(&self.stats.batches_delivered, 1);
            let now = now_ms();
            for &(ts, n) in &slot.received {
                let ms = u64::try_from(now.saturating_sub(ts)).unwrap_or(0);
                self.stats
                    .delivery_latency
                    .observe_n(Duration::from_millis(ms), u64::from(n));
            }
            self.stats.kafka.last_ack_ms.store(now, Ordering::Relaxed);
            p.backoff.reset();
            p.out_of_order = false;
            hint = slot.end_offset.or(hint);
        }
        // Written after the removals: sled loses a suffix of its writes in a crash, so a
        // surviving hint implies surviving removals.
        if let Some(end) = hint
            && let Err(e) = self.queue.set_acked_offset(&tp.0, tp.1, end)
        {
            tracing::warn!(error = %e, "cannot record the acknowledged offset; a later scan starts earlier");
        }
        if p.slots.is_empty() && p.in_flight == 0 {
            self.partitions.remove(tp);
        }
        // The window has room again: seal what waits in the journal.
        self.journal_dirty = Some(Instant::now());
    }

    fn fail_partition(&mut self, tp: &Tp) {
        if let Some(p) = self.partitions.get_mut(tp) {
            p.rewind = true;
        }
    }

    /// The broker's producer state disagrees with ours (DESIGN.md §3). Nothing is resent
    /// blindly: the partition is verified first, and when the broker no longer knows or accepts
    /// our producer id, a new one is taken once every partition is resolved.
    fn producer_state_mismatch(&mut self, tp: &Tp, batch_no: u64, code: i16) {
        const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
        self.fail_partition(tp);
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        let front = p
            .slots
            .front()
            .is_some_and(|s| s.batch.batch_no == batch_no);
        if code != OUT_OF_ORDER_SEQUENCE_NUMBER {
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %error_name(code),
                "Kafka no longer accepts our producer id; verifying, then re-sequencing under a new one");
            p.verify = true;
            self.producer_lost = true;
        } else if front && p.out_of_order {
            tracing::warn!(topic = %tp.0, partition = tp.1,
                "sequence still out of order after verification; re-sequencing under a new producer id");
            self.producer_lost = true;
        } else if front {
            // Our oldest unacknowledged batch is out of order: the broker may hold it already
            // (its dedup window is smaller after a restart) — look before resending.
            p.verify = true;
            p.out_of_order = true;
        }
        // A later batch out of order only follows from an earlier failure in the same window.
    }

    /// The log offset after `batch_no`, from its Produce response.
    fn end_offset(&self, tp: &Tp, batch_no: u64, base_offset: i64) -> Option<i64> {
        // DUPLICATE_SEQUENCE_NUMBER comes without an offset (−1) on some brokers.
        if base_offset < 0 {
            return None;
        }
        let p = self.partitions.get(tp)?;
        let slot = p.slots.iter().find(|s| s.batch.batch_no == batch_no)?;
        Some(base_offset + i64::from(slot.batch.record_count))
    }

    /// Verifies the partitions that need it, one at a time, and drops the batches the log holds.
    async fn verify_partitions(&mut self) {
        let now = Instant::now();
        let ready: Vec<Tp> = self
            .partitions
            .iter()
            .filter(|(tp, p)| {
                p.verify
                    && p.in_flight == 0
                    && p.retry_at.is_none_or(|t| now >= t)
                    && self.cluster.leader(&tp.0, tp.1).is_some()
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in ready {
            let started = Instant::now();
            let result = self.find_landed(&tp).await;
            let p = self.partitions.get_mut(&tp).expect("partition state");
            match result {
                Ok((method, landed)) => {
                    tracing::info!(topic = %tp.0, partition = tp.1, method, unacknowledged = p.slots.len(),
                        already_in_kafka = landed.len(), took = ?started.elapsed(), "verified before resending");
                    let v = &self.stats.verify;
                    Stats::add(
                        if method == DESCRIBE_PRODUCERS {
                            &v.by_producer_state
                        } else {
                            &v.by_tail_scan
                        },
                        1,
                    );
                    let pending = p.slots.iter().filter(|s| !s.acked).count();
                    Stats::add(&v.batches_found, landed.len() as u64);
                    Stats::add(
                        &v.batches_missing,
                        pending.saturating_sub(landed.len()) as u64,
                    );
                    p.verify = false;
                    for s in &mut p.slots {
                        s.sent = false;
                    }
                    Stats::add(&self.stats.duplicates_detected, landed.len() as u64);
                    for no in landed {
                        self.acknowledge(&tp, no, None);
                    }
                }
                Err(e) => {
                    Stats::add(&self.stats.verify.failed, 1);
                    let delay = p.backoff.next_delay();
                    p.retry_at = Some(Instant::now() + delay);
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, retry_in = ?delay,
                        "cannot verify what Kafka holds; nothing is resent until it can");
                    self.cluster
                        .drop_broker(self.cluster.leader(&tp.0, tp.1).unwrap_or(-1));
                }
            }
        }
    }

    /// The unacknowledged batches of `tp` that are in the log, and how that was established:
    /// the leader's producer state where it has one (DescribeProducers), else a tail scan.
    async fn find_landed(&mut self, tp: &Tp) -> Result<(&'static str, Vec<u64>), KafkaError> {
        let pending: Vec<SealedBatch> = self.partitions[tp]
            .slots
            .iter()
            .filter(|s| !s.acked)
            .map(|s| s.batch.clone())
            .collect();
        match self.cluster.describe_producers(&tp.0, tp.1).await {
            Ok(Some(states)) => {
                let refs: Vec<&SealedBatch> = pending.iter().collect();
                if let Some(landed) = super::verify::landed_by_state(&refs, &states) {
                    let nos = pending
                        .iter()
                        .zip(landed)
                        .filter(|(_, l)| *l)
                        .map(|(b, _)| b.batch_no);
                    return Ok((DESCRIBE_PRODUCERS, nos.collect()));
                }
            }
            Ok(None) => {}
            // Not authorized, or a broker in trouble: the scan has its own chance.
            Err(e) => tracing::debug!(error = %e, "DescribeProducers failed; scanning the tail"),
        }
        let hint = match self.queue.acked_offset(&tp.0, tp.1) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the acknowledged offset; scanning from the start");
                None
            }
        };
        let from = match hint {
            Some(o) => o,
            None => self.cluster.earliest_offset(&tp.0, tp.1).await?,
        };
        let found = self
            .cluster
            .scan_tail(&tp.0, tp.1, from, &self.settings.device_id)
            .await?;
        let landed = pending
            .iter()
            .filter(|b| found.holds(b))
            .map(|b| b.batch_no);
        Ok(("tail-scan", landed.collect()))
    }

    /// Moves batches Kafka refused for good (too large, invalid, not authorized) to the
    /// dead-letter topic, so that one bad batch never blocks its partition. The refused batch
    /// leaves a gap in its partition's sequences, so the rest move to a new producer id.
    fn dead_letter_refused(&mut self) {
        let Some(producer) = self.producer else {
            return;
        };
        let refused: Vec<(Tp, u64, i16)> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.in_flight == 0)
            .flat_map(|(tp, p)| {
                p.slots
                    .iter()
                    .filter_map(move |s| Some((tp.clone(), s.batch.batch_no, s.refused?)))
            })
            .collect();
        for (tp, batch_no, code) in refused {
            let dlq = self.settings.dead_letter_topic.clone();
            let Some(count) = self
                .cluster
                .topics()
                .get(&dlq)
                .map(|t| t.leaders.len())
                .filter(|n| *n > 0)
            else {
                if self.wanted_topics.insert(dlq.clone()) {
                    self.metadata_due = Instant::now();
                }
                continue;
            };
            let slot_batch = {
                let p = &self.partitions[&tp];
                p.slots
                    .iter()
                    .find(|s| s.batch.batch_no == batch_no)
                    .map(|s| s.batch.clone())
            };
            let Some(batch) = slot_batch else { continue };
            let reason = format!(
                "Kafka refused the batch for {}/{}: {}",
                tp.0,
                tp.1,
                error_name(code)
            );
            let mut seal = crate::queue::Seal {
                removed_batches: vec![batch_no],
                next_batch_no: self.next_batch_no,
                ..crate::queue::Seal::default()
            };
            if tp.0 == dlq {
                // The dead-letter topic itself refuses them: nothing is left to try.
                tracing::error!(first_seq = batch.first_seq, last_seq = batch.last_seq, records = batch.record_count,
                    reason = %reason, "records dropped: even the dead-letter topic refuses them");
                self.stats
                    .dropped(Dropped::DeadLetterRefused, batch.record_count as u64);
            } else {
                // Partition 0 would do; spreading by the batch number keeps one bad day from
                // piling onto one partition.
                let partition = (batch_no % count as u64) as i32;
                let dlq_tp = (dlq.clone(), partition);
                let base = self.next_sequences.get(&dlq_tp).copied().unwrap_or(0);
                match rebatch(
                    &batch,
                    producer,
                    base,
                    &self.settings,
                    Some((&dlq, partition, &reason)),
                ) {
                    Ok(mut moved) => {
                        moved.batch_no = self.next_batch_no;
                        seal.next_batch_no = moved.batch_no + 1;
                        seal.next_sequences
                            .push((dlq_tp, super::sequence::increment(base, moved.record_count)));
                        seal.batches.push(moved);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, batch = batch_no, "cannot rebuild a refused batch for the dead-letter topic");
                        continue;
                    }
                }
            }
            if let Err(e) = tokio::task::block_in_place(|| self.queue.seal(&seal)) {
                tracing::error!(error = %e, "cannot move a refused batch to the dead-letter topic; retrying later");
                continue;
            }
            tracing::warn!(topic = %tp.0, partition = tp.1, records = batch.record_count, reason = %reason,
                "batch moved to the dead-letter topic");
            self.stats
                .dead_lettered(DeadLetter::KafkaRefused, batch.record_count as u64);
            self.next_batch_no = seal.next_batch_no;
            for (dlq_tp, next) in seal.next_sequences {
                self.next_sequences.insert(dlq_tp, next);
            }
            if let Some(p) = self.partitions.get_mut(&tp) {
                p.slots.retain(|s| s.batch.batch_no != batch_no);
                // The rest of the partition follows a gap the broker will not accept.
                if !p.slots.is_empty() {
                    self.producer_lost = true;
                }
            }
            for b in seal.batches {
                self.partition((b.topic.clone(), b.partition))
                    .slots
                    .push_back(Slot::new(b, Vec::new()));
            }
        }
    }

    /// Takes a new producer id and moves every remaining sealed batch to it, with sequences from
    /// 0 — only once every partition is verified and nothing is in flight, so no batch whose fate
    /// is unknown is ever sent under a new identity.
    async fn resequence(&mut self) {
        let unresolved = self
            .partitions
            .values()
            .any(|p| p.verify || p.in_flight > 0 || p.rewind);
        if unresolved || !self.in_flight.is_empty() {
            return;
        }
        let new = match self.cluster.init_producer_id().await {
            Ok(p) => p,
            Err(e) => {
                let delay = self.metadata_backoff.next_delay();
                self.producer_retry_at = Instant::now() + delay;
                if self.metadata_backoff.should_log() {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot get a new producer id from Kafka");
                }
                return;
            }
        };
        let mut batches = Vec::new();
        let mut next_sequences = Vec::new();
        for (tp, p) in &self.partitions {
            let mut next = 0;
            // Acknowledged batches wait only for older ones to leave; they are not resent.
            for s in p.slots.iter().filter(|s| !s.acked) {
                match rebatch(&s.batch, new, next, &self.settings, None) {
                    Ok(b) => {
                        next = super::sequence::increment(next, b.record_count);
                        batches.push(b);
                    }
                    Err(e) => {
                        tracing::error!(batch = s.batch.batch_no, error = %e, "cannot re-sequence a sealed batch; retrying later");
                        return;
                    }
                }
            }
            next_sequences.push((tp.clone(), next));
        }
        if let Err(e) =
            tokio::task::block_in_place(|| self.queue.resequence(new, &batches, &next_sequences))
        {
            tracing::error!(error = %e, "cannot persist the re-sequenced batches; retrying later");
            return;
        }
        tracing::info!(
            producer_id = new.producer_id,
            epoch = new.producer_epoch,
            batches = batches.len(),
            "re-sequenced the undelivered batches under a new producer id"
        );
        self.producer = Some(new);
        self.next_sequences = next_sequences.into_iter().collect();
        for b in batches {
            if let Some(p) = self.partitions.get_mut(&(b.topic.clone(), b.partition)) {
                if let Some(slot) = p.slots.iter_mut().find(|s| s.batch.batch_no == b.batch_no) {
                    let received = std::mem::take(&mut slot.received);
                    *slot = Slot::new(b, received);
                }
                p.out_of_order = false;
            }
        }
        self.producer_lost = false;
    }

    /// Publishes the gauges of the link to Kafka for the metrics endpoint.
    fn publish_link(&self) {
        let k = &self.stats.kafka;
        let set = |g: &std::sync::atomic::AtomicU64, v: usize| g.store(v as u64, Ordering::Relaxed);
        let (mut known, mut unknown) = (0, 0);
        for t in self.cluster.topics().values() {
            let with = t.leaders.iter().filter(|l| **l >= 0).count();
            known += with;
            unknown += t.leaders.len() - with;
        }
        k.connected.store(self.kafka_ok, Ordering::Relaxed);
        set(&k.connections, self.cluster.open_connections());
        set(&k.leaders_known, known);
        set(&k.leaders_unknown, unknown);
        set(&k.requests_in_flight, self.in_flight.len());
        let slots = || self.partitions.values().flat_map(|p| &p.slots);
        set(&k.batches_unacknowledged, slots().count());
        set(
            &k.records_unacknowledged,
            slots().map(|s| s.batch.record_count as usize).sum(),
        );
    }

    /// A failed partition resends from its oldest batch once none of its requests is in flight,
    /// so that the resent batches reach the broker in sequence order.
    fn rewind_idle_partitions(&mut self) {
        let now = Instant::now();
        for p in self.partitions.values_mut() {
            if p.rewind && p.in_flight == 0 {
                p.rewind = false;
                let resent = p.slots.iter().filter(|s| s.sent && !s.acked).count() as u64;
                Stats::add(&self.stats.retries, resent);
                for s in &mut p.slots {
                    s.sent = false;
                }
                p.retry_at = Some(now + p.backoff.next_delay());
            }
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `error` label of a Produce error code: its name, or `unknown` for codes newer than our
/// table (a label must not be made from arbitrary input).
fn static_error_name(code: i16) -> &'static str {
    match error_name(code) {
        std::borrow::Cow::Borrowed(name) => name,
        std::borrow::Cow::Owned(_) => "unknown",
    }
}

/// The same records as `b`, encoded under another producer id from sequence `base` — or, with
/// `dead_letter` (topic, partition, reason), moved there with the reason and the original topic
/// in headers.
fn rebatch(
    b: &SealedBatch,
    producer: ProducerIdentity,
    base: i32,
    settings: &ProducerSettings,
    dead_letter: Option<(&str, i32, &str)>,
) -> Result<SealedBatch, super::batch::BatchError> {
    use crate::record::{HEADER_ERROR, HEADER_SEQ, HEADER_TOPIC, Header, Record, SequencedRecord};
    let records: Vec<SequencedRecord> = super::batch::decode_batch(&b.bytes)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let seq = r
                .headers
                .iter()
                .find(|(n, _)| n == HEADER_SEQ)
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(b.first_seq + i as u64);
            SequencedRecord {
                seq,
                record: Record {
                    topic: b.topic.clone(),
                    key: r.key,
                    value: r.value.unwrap_or_default(),
                    // encode_batch drops kedge's own headers and appends them afresh.
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(name, value)| Header { name, value })
                        .chain(dead_letter.iter().flat_map(|(_, _, reason)| {
                            [
                                Header {
                                    name: HEADER_ERROR.to_owned(),
                                    value: bytes::Bytes::from(reason.to_string()),
                                },
                                Header {
                                    name: HEADER_TOPIC.to_owned(),
                                    value: bytes::Bytes::from(b.topic.clone()),
                                },
                            ]
                        }))
                        .collect(),
                    timestamp_ms: r.timestamp_ms,
                },
            }
        })
        .collect();
    let bytes = super::batch::encode_batch(
        producer,
        base,
        &settings.device_id,
        &records,
        settings.compression,
    )?;
    let (topic, partition) = match dead_letter {
        Some((t, p, _)) => (t.to_owned(), p),
        None => (b.topic.clone(), b.partition),
    };
    Ok(SealedBatch {
        topic,
        partition,
        producer,
        base_sequence: base,
        bytes,
        ..b.clone()
    })
}

/// Why a seal was not made.
enum SealFailure {
    /// drop-oldest took a chunk the plan was built from (its first sequence); plan again.
    ChunkGone(u64),
    /// The journal could not be read, or the plan or the write failed.
    Failed(String),
}
