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
use std::time::Duration;

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
use crate::queue::Queue;
use crate::queue::outbox::SealedBatch;
use crate::telemetry::Stats;

/// Kafka error code DUPLICATE_SEQUENCE_NUMBER: the batch was already written.
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
/// Journal chunks read per seal; bounds the work of one plan.
const CHUNKS_PER_SEAL: usize = 64;

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
}

type Tp = (String, i32);

struct Slot {
    batch: SealedBatch,
    sent: bool,
}

struct PartitionState {
    slots: VecDeque<Slot>,
    in_flight: usize,
    rewind: bool,
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
            p.partition((b.topic.clone(), b.partition))
                .slots
                .push_back(Slot {
                    batch: b,
                    sent: false,
                });
        }
        Ok(p)
    }

    fn partition(&mut self, tp: Tp) -> &mut PartitionState {
        let (initial, max) = (self.settings.retry_initial, self.settings.retry_max);
        self.partitions.entry(tp).or_insert_with(|| PartitionState {
            slots: VecDeque::new(),
            in_flight: 0,
            rewind: false,
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
            if self.producer.is_some() && self.journal_dirty.is_some_and(|t| now >= t) {
                self.seal();
            }
            self.send_ready().await;

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
        match (self.producer, self.journal_dirty) {
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
        match self.cluster.refresh_metadata(&topics).await {
            Ok(()) => {
                self.metadata_backoff.reset();
                self.metadata_due = Instant::now() + self.settings.metadata_refresh;
                let missing: Vec<&String> = self
                    .wanted_topics
                    .iter()
                    .filter(|t| !self.cluster.topics().contains_key(*t))
                    .collect();
                if !missing.is_empty() {
                    // Retry soon: the topic may be created any moment.
                    self.metadata_due = Instant::now() + self.metadata_backoff.next_delay();
                    tracing::warn!(
                        ?missing,
                        "topics unknown to Kafka; their records wait in the queue"
                    );
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
        let result = tokio::task::block_in_place(|| -> Result<Plan, String> {
            let chunks = self
                .queue
                .journal_head(CHUNKS_PER_SEAL)
                .map_err(|e| e.to_string())?;
            let plan = self
                .dispatcher
                .plan(PlanInput {
                    chunks,
                    partition_counts: &counts,
                    room: &room,
                    window,
                    next_sequences: &self.next_sequences,
                    producer,
                    next_batch_no: self.next_batch_no,
                })
                .map_err(|e| e.to_string())?;
            if let Plan::Seal(seal) = &plan {
                self.queue.seal(seal).map_err(|e| e.to_string())?;
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
                for b in seal.batches {
                    self.partition((b.topic.clone(), b.partition))
                        .slots
                        .push_back(Slot {
                            batch: b,
                            sent: false,
                        });
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
            Err(e) => {
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
            if p.rewind || p.retry_at.is_some_and(|t| now < t) || !p.slots.iter().any(|s| !s.sent) {
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
            let broker = match self.cluster.broker(node).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(node, error = %e, "cannot reach partition leader");
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
                    if let Some(slot) = p.slots.iter_mut().find(|s| !s.sent) {
                        slot.sent = true;
                        p.in_flight += 1;
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
                self.cluster.drop_broker(c.node);
                self.metadata_due = Instant::now();
                for (tp, _) in &c.sent {
                    self.fail_partition(tp);
                }
            }
            Ok(response) => {
                let mut codes: HashMap<(String, i32), i16> = HashMap::new();
                for t in &response.responses {
                    for p in &t.partition_responses {
                        codes.insert((t.name.0.to_string(), p.index), p.error_code);
                    }
                }
                for (tp, batch_no) in &c.sent {
                    let Some(&code) = codes.get(tp) else {
                        tracing::warn!(topic = %tp.0, partition = tp.1, "produce response lacks the partition; will resend");
                        self.fail_partition(tp);
                        continue;
                    };
                    match classify_produce_error(code) {
                        Disposition::Delivered => {
                            if code == DUPLICATE_SEQUENCE_NUMBER {
                                Stats::add(&self.stats.duplicates_detected, 1);
                            }
                            self.acknowledge(tp, *batch_no);
                        }
                        Disposition::Retry { refresh_metadata } => {
                            tracing::debug!(topic = %tp.0, partition = tp.1, error = %error_name(code), "retriable produce error");
                            if refresh_metadata {
                                self.metadata_due = Instant::now();
                            }
                            self.fail_partition(tp);
                        }
                        Disposition::Resequence | Disposition::Permanent => {
                            tracing::error!(topic = %tp.0, partition = tp.1, error = %error_name(code),
                                "Kafka rejected the batch; it stays queued and is retried");
                            self.fail_partition(tp);
                        }
                    }
                }
            }
        }
        self.rewind_idle_partitions();
    }

    /// Kafka accepted `batch_no`; since a partition's sequences are accepted only in order,
    /// every older batch of the partition is written too.
    fn acknowledge(&mut self, tp: &Tp, batch_no: u64) {
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        while p
            .slots
            .front()
            .is_some_and(|s| s.batch.batch_no <= batch_no)
        {
            let slot = p.slots.pop_front().expect("front exists");
            if let Err(e) = self.queue.remove_batch(slot.batch.batch_no) {
                tracing::error!(error = %e, "cannot remove a delivered batch; it will be resent and deduplicated");
            }
            Stats::add(&self.stats.delivered, slot.batch.record_count as u64);
            Stats::add(&self.stats.batches_delivered, 1);
            p.backoff.reset();
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

    /// A failed partition resends from its oldest batch once none of its requests is in flight,
    /// so that the resent batches reach the broker in sequence order.
    fn rewind_idle_partitions(&mut self) {
        let now = Instant::now();
        for p in self.partitions.values_mut() {
            if p.rewind && p.in_flight == 0 {
                p.rewind = false;
                let resent = p.slots.iter().filter(|s| s.sent).count() as u64;
                Stats::add(&self.stats.retries, resent);
                for s in &mut p.slots {
                    s.sent = false;
                }
                p.retry_at = Some(now + p.backoff.next_delay());
            }
        }
    }
}
