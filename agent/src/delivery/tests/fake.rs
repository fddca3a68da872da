//! The fakes delivery is tested with: a [`Link`] over kafka-sim's model of Kafka's idempotence
//! rules, with faults decided per request, and an [`Outbox`] that puts faults between delivery
//! and a real queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_sim::model::Cluster as Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::delivery::link::{
    Answers, ConnId, Link, PartitionAnswer, ProduceBatch, Scan, ScanReport,
};
use crate::delivery::outbox::{Outbox, Tp};
use crate::delivery::verify::Found;
use kedge_queue::outbox::{BatchMeta, SealedBatch};
use kedge_queue::{JournalChunk, Queue, QueueError, Seal, SealError};
use kedge_wire::KafkaError;
use kedge_wire::batch::{self, ProducerIdentity};
use kedge_wire::client::TopicInfo;
use kedge_wire::record::{HEADER_QUEUE, HEADER_SEQ, Origin};

/// The broker's node id in the model.
pub const NODE: i32 = 1;

/// What the broker does with one Produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Applied and answered truthfully.
    Answer,
    /// Applied; the answer is lost (the client times out and drops the connection).
    LoseAnswer,
    /// Never reaches the broker; the client times out.
    LoseRequest,
    /// Reaches the broker late: applied only when the client has given up on it, just before
    /// the client learns so (a request read before the connection went, processed after).
    ApplyLate,
    /// Answered with this error code, after applying it (`true`) or without.
    Error(i16, bool),
}

/// Probabilities of faults, each in 0..=1, drawn per request or per scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultPlan {
    /// A request's answer is lost after it was applied.
    pub lose_answer: f64,
    /// A request never arrives.
    pub lose_request: f64,
    /// A request arrives late, after the client gave up.
    pub apply_late: f64,
    /// A request is answered with an error (an ambiguous one applied half the time).
    pub error: f64,
    /// A Fetch of a scan is throttled (answered without data).
    pub throttle: f64,
}

/// What the broker answered, what it appended, and its connections: shared between the fake
/// link and the test.
pub struct Broker {
    /// Kafka's rules.
    pub model: Model,
    /// Every batch the model appended anew, in order: its partition and its records'
    /// `kedge-seq` (records of this device's queue only).
    pub appended: Vec<(Tp, Vec<u64>)>,
    /// Fates to hand out before drawing from the plan.
    pub scripted: Vec<Fate>,
    /// Fault probabilities.
    pub plan: FaultPlan,
    /// Answers by Kafka error code.
    pub answers: BTreeMap<i16, u64>,
    /// Scans started.
    pub scans: u64,
    /// The topics the last metadata request asked for.
    pub last_refresh: Vec<String>,
    /// Partition counts metadata reports instead of the model's (a topic recreated smaller).
    pub partitions_reported: std::collections::HashMap<String, i32>,
    /// Partitions whose leader is away: every Produce for them is answered
    /// LEADER_NOT_AVAILABLE, nothing written.
    pub leaderless: std::collections::HashSet<Tp>,
    /// The broker forgets every producer after each append, so that it accepts any sequence
    /// and never deduplicates: a resend of a batch it holds is written twice (Kafka ≥ 2.5 with
    /// an expired producer id). Only kedge's own verify can keep the count right.
    pub forget_always: bool,
    rng: StdRng,
    conn: ConnId,
    broken: bool,
    /// When the last answer on the current connection comes: answers keep request order.
    last_answer: Option<Instant>,
    queue_id: String,
}

impl Broker {
    /// A broker with `topic` of `partitions`, faults drawn from `seed`.
    pub fn new(topic: &str, partitions: i32, seed: u64, origin: &Origin) -> Arc<Mutex<Broker>> {
        Arc::new(Mutex::new(Broker {
            model: Model::new().with_topic(topic, partitions),
            appended: Vec::new(),
            scripted: Vec::new(),
            plan: FaultPlan::default(),
            answers: BTreeMap::new(),
            scans: 0,
            last_refresh: Vec::new(),
            leaderless: Default::default(),
            partitions_reported: Default::default(),
            forget_always: false,
            rng: StdRng::seed_from_u64(seed),
            conn: 1,
            broken: false,
            last_answer: None,
            queue_id: origin.queue_header(),
        }))
    }

    fn fate(&mut self) -> Fate {
        if !self.scripted.is_empty() {
            return self.scripted.remove(0);
        }
        let plan = self.plan;
        let r = self.rng.random::<f64>();
        let mut edge = plan.lose_answer;
        if r < edge {
            return Fate::LoseAnswer;
        }
        edge += plan.lose_request;
        if r < edge {
            return Fate::LoseRequest;
        }
        edge += plan.apply_late;
        if r < edge {
            return Fate::ApplyLate;
        }
        edge += plan.error;
        if r < edge {
            // Errors of every class: ambiguous ones that followed a write or not, and definite
            // ones that did not write.
            const CODES: [(i16, Option<bool>); 8] = [
                (7, None),
                (20, Some(true)),
                (6, None),
                (-1, None),
                (5, Some(false)),
                (19, Some(false)),
                (3, Some(false)),
                (89, Some(false)),
            ];
            let (code, applied) = CODES[self.rng.random_range(0..CODES.len())];
            let applied = applied.unwrap_or_else(|| self.rng.random_bool(0.5));
            return Fate::Error(code, applied);
        }
        Fate::Answer
    }

    /// Applies one batch to the model: its answer code and base offset.
    fn apply(&mut self, tp: &Tp, bytes: &Bytes) -> (i16, i64) {
        let answer = match self.model.produce(&tp.0, tp.1, bytes) {
            Ok(a) => {
                if !a.duplicate {
                    let seqs = own_seqs(bytes, &self.queue_id);
                    self.appended.push((tp.clone(), seqs));
                }
                (0, a.base_offset)
            }
            Err(e) => (e.code(), -1),
        };
        if self.forget_always {
            self.model.forget_all_producers();
        }
        answer
    }

    /// The client's connection goes (its process died, say); the next one is new.
    pub fn drop_connection(&mut self) {
        self.broken = true;
    }

    /// Every `kedge-seq` the broker ever appended for this queue, with how often.
    pub fn seq_counts(&self) -> BTreeMap<u64, u32> {
        let mut counts = BTreeMap::new();
        for (_, seqs) in &self.appended {
            for s in seqs {
                *counts.entry(*s).or_default() += 1;
            }
        }
        counts
    }
}

/// The `kedge-seq` of the records of `bytes` that carry `queue`.
fn own_seqs(bytes: &[u8], queue: &str) -> Vec<u64> {
    batch::decode_batch(bytes)
        .expect("kedge's own batch decodes")
        .into_iter()
        .filter(|r| {
            r.headers
                .iter()
                .any(|(n, v)| n == HEADER_QUEUE && v.as_ref() == queue.as_bytes())
        })
        .filter_map(|r| {
            let (_, v) = r.headers.iter().find(|(n, _)| n == HEADER_SEQ)?;
            std::str::from_utf8(v).ok()?.parse().ok()
        })
        .collect()
}

/// A [`Link`] to the fake broker.
pub struct FakeLink {
    broker: Arc<Mutex<Broker>>,
    topics: HashMap<String, TopicInfo>,
    /// How long the client waits for an answer.
    pub request_timeout: Duration,
}

impl FakeLink {
    /// A link to `broker`.
    pub fn new(broker: Arc<Mutex<Broker>>) -> FakeLink {
        FakeLink {
            broker,
            topics: HashMap::new(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

fn lock(b: &Mutex<Broker>) -> std::sync::MutexGuard<'_, Broker> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

fn timeout() -> KafkaError {
    KafkaError::Timeout {
        addr: "fake".into(),
    }
}

impl Link for FakeLink {
    fn topics(&self) -> &HashMap<String, TopicInfo> {
        &self.topics
    }

    fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let t = self.topics.get(topic)?;
        let l = *t.leaders.get(usize::try_from(partition).ok()?)?;
        (l >= 0).then_some(l)
    }

    fn connection(&self, node: i32) -> Option<ConnId> {
        let b = lock(&self.broker);
        (node == NODE && !b.broken).then_some(b.conn)
    }

    fn open_connections(&self) -> usize {
        usize::from(!lock(&self.broker).broken)
    }

    fn forget(&mut self, _node: i32) {
        lock(&self.broker).broken = true;
    }

    fn retain_topics(&mut self, keep: &std::collections::BTreeSet<String>) {
        self.topics.retain(|t, _| keep.contains(t));
    }

    async fn refresh_metadata(&mut self, topics: &[String]) -> Result<(), KafkaError> {
        let mut b = lock(&self.broker);
        b.last_refresh = topics.to_vec();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        for t in b.model.metadata(Some(&names), false) {
            let partitions = b
                .partitions_reported
                .get(&t.name)
                .copied()
                .unwrap_or(t.partitions);
            if t.error.is_none() && partitions > 0 {
                self.topics.insert(
                    t.name,
                    TopicInfo {
                        leaders: vec![NODE; partitions as usize],
                    },
                );
            }
        }
        Ok(())
    }

    async fn init_producer_id(&mut self) -> Result<ProducerIdentity, KafkaError> {
        let (producer_id, producer_epoch) = lock(&self.broker)
            .model
            .init_producer_id(Some((-1, -1)))
            .map_err(|e| KafkaError::Broker {
                addr: "fake".into(),
                what: "InitProducerId",
                code: e.code(),
            })?;
        Ok(ProducerIdentity {
            producer_id,
            producer_epoch,
        })
    }

    async fn connect(&mut self, _node: i32) -> Result<ConnId, KafkaError> {
        let mut b = lock(&self.broker);
        if b.broken {
            b.broken = false;
            b.conn += 1;
            b.last_answer = None;
        }
        Ok(b.conn)
    }

    async fn produce(
        &mut self,
        _node: i32,
        conn: ConnId,
        batches: Vec<ProduceBatch>,
        _zstd: bool,
    ) -> Result<Answers, KafkaError> {
        let wait = self.request_timeout;
        let mut b = lock(&self.broker);
        if b.broken || b.conn != conn {
            return Err(KafkaError::Disconnected {
                addr: "fake".into(),
            });
        }
        let fate = b.fate();
        let now = Instant::now();
        let delay = Duration::from_millis(b.rng.random_range(1..20));
        let at = b.last_answer.map_or(now + delay, |t| t.max(now + delay));
        match fate {
            Fate::Answer | Fate::Error(_, _) => {
                let answers: Vec<PartitionAnswer> = batches
                    .iter()
                    .map(|pb| {
                        let tp = (pb.topic.clone(), pb.partition);
                        let (code, base_offset) = match fate {
                            _ if b.leaderless.contains(&tp) => (5, -1),
                            Fate::Error(code, true) => {
                                b.apply(&tp, &pb.bytes);
                                (code, -1)
                            }
                            Fate::Error(code, false) => (code, -1),
                            _ => b.apply(&tp, &pb.bytes),
                        };
                        *b.answers.entry(code).or_default() += 1;
                        PartitionAnswer {
                            topic: pb.topic.clone(),
                            partition: pb.partition,
                            error_code: code,
                            base_offset,
                        }
                    })
                    .collect();
                b.last_answer = Some(at);
                Ok(Box::pin(async move {
                    tokio::time::sleep_until(at).await;
                    Ok(answers)
                }))
            }
            Fate::LoseAnswer | Fate::LoseRequest | Fate::ApplyLate => {
                if fate == Fate::LoseAnswer {
                    for pb in &batches {
                        b.apply(&(pb.topic.clone(), pb.partition), &pb.bytes);
                    }
                }
                // The client gives up after its timeout and drops the connection; nothing
                // after this request on it gets an answer either.
                b.broken = true;
                let broker = self.broker.clone();
                let late = fate == Fate::ApplyLate;
                Ok(Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    if late {
                        let mut b = lock(&broker);
                        for pb in &batches {
                            b.apply(&(pb.topic.clone(), pb.partition), &pb.bytes);
                        }
                    }
                    Err(timeout())
                }))
            }
        }
    }

    async fn log_end(&mut self, topic: &str, partition: i32) -> Result<i64, KafkaError> {
        let b = lock(&self.broker);
        b.model
            .log_end_offset(topic, partition)
            .map_err(|e| KafkaError::Protocol {
                addr: "fake".into(),
                reason: e.to_string(),
            })
    }

    async fn scan(
        &mut self,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        mut found: Found,
    ) -> Result<Scan, KafkaError> {
        lock(&self.broker).scans += 1;
        let broker = self.broker.clone();
        let topic = topic.to_owned();
        Ok(Box::pin(async move {
            let broker_err = |code: i16| KafkaError::Broker {
                addr: "fake".into(),
                what: "Fetch",
                code,
            };
            let mut gap = false;
            let mut bytes = 0u64;
            let mut from = match from {
                Some(f) => f,
                None => lock(&broker)
                    .model
                    .log_start_offset(&topic, partition)
                    .map_err(|_| broker_err(3))?,
            };
            let mut end = None;
            let mut rescanned = false;
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let step = {
                    let mut b = lock(&broker);
                    let throttle = b.plan.throttle;
                    if b.rng.random_bool(throttle) {
                        None
                    } else {
                        Some(b.model.fetch(&topic, partition, from, 64 * 1024, true))
                    }
                };
                let Some(fetched) = step else {
                    // Answered without data: never the end of the log.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let fetched = match fetched {
                    Ok(f) => f,
                    Err(e) if e.code() == 1 && !rescanned => {
                        rescanned = true;
                        gap = true;
                        from = lock(&broker)
                            .model
                            .log_start_offset(&topic, partition)
                            .map_err(|_| broker_err(3))?;
                        continue;
                    }
                    Err(e) => return Err(broker_err(e.code())),
                };
                let end = *end.get_or_insert(fetched.high_watermark);
                if from >= end {
                    return Ok(ScanReport {
                        found,
                        end,
                        gap,
                        bytes,
                    });
                }
                bytes += fetched.records.len() as u64;
                match found.add_fetched(&fetched.records) {
                    Ok(Some(next)) if next > from => from = next,
                    Ok(_) => {
                        return Err(KafkaError::Protocol {
                            addr: "fake".into(),
                            reason: format!("no progress at {from}"),
                        });
                    }
                    Err(e) => {
                        return Err(KafkaError::Protocol {
                            addr: "fake".into(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }))
    }
}

/// A real queue with faults between it and delivery.
pub struct Faulty {
    /// The queue.
    pub queue: Queue,
    /// The next this many seals commit and then fail their sync.
    pub seals_not_durable: AtomicU32,
    /// The next this many syncs fail.
    pub syncs_failing: AtomicU32,
}

impl Faulty {
    /// `queue`, without faults yet.
    pub fn new(queue: Queue) -> Faulty {
        Faulty {
            queue,
            seals_not_durable: AtomicU32::new(0),
            syncs_failing: AtomicU32::new(0),
        }
    }
}

fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
        .is_ok()
}

fn io_failure() -> QueueError {
    QueueError::Io {
        path: "fake".into(),
        source: std::io::Error::other("injected fdatasync failure"),
    }
}

impl Outbox for Faulty {
    fn origin(&self) -> &Origin {
        self.queue.origin()
    }
    fn created_ms(&self) -> Option<i64> {
        self.queue.created_ms()
    }
    fn producer(&self) -> Result<Option<ProducerIdentity>, QueueError> {
        self.queue.producer()
    }
    fn next_sequences(&self) -> Result<BTreeMap<Tp, i32>, QueueError> {
        self.queue.next_sequences()
    }
    fn next_batch_no(&self) -> Result<u64, QueueError> {
        self.queue.next_batch_no()
    }
    fn sealed(&self) -> Result<Vec<BatchMeta>, QueueError> {
        self.queue.sealed_metas()
    }
    fn read(&self, batch_no: u64) -> Result<Bytes, QueueError> {
        self.queue.read_batch(batch_no)
    }
    fn journal(&self) -> Box<dyn Iterator<Item = Result<JournalChunk, QueueError>> + '_> {
        Box::new(self.queue.journal_iter())
    }
    fn journal_is_empty(&self) -> bool {
        self.queue.journal_is_empty()
    }
    fn parked_partitions(&self) -> Result<Vec<Tp>, QueueError> {
        Ok(self.queue.parked_partitions()?.into_keys().collect())
    }
    fn parked_chunks(&self, tp: &Tp, max: usize) -> Result<Vec<kedge_queue::Parked>, QueueError> {
        self.queue.parked_chunks(&tp.0, tp.1, max)
    }
    fn seal(&self, seal: &Seal) -> Result<(), SealError> {
        self.queue.seal(seal)?;
        if take(&self.seals_not_durable) {
            return Err(SealError::NotDurable(io_failure()));
        }
        Ok(())
    }
    fn resequence(
        &self,
        producer: ProducerIdentity,
        batches: &[SealedBatch],
        next_sequences: &[(Tp, i32)],
    ) -> Result<(), SealError> {
        self.queue.resequence(producer, batches, next_sequences)
    }
    fn remove(&self, batch_no: u64) -> Result<(), QueueError> {
        self.queue.remove_batch(batch_no)
    }
    fn scan_floor(&self, topic: &str, partition: i32) -> Result<Option<i64>, QueueError> {
        self.queue.scan_floor(topic, partition)
    }
    fn set_scan_floor(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        durable: bool,
    ) -> Result<(), QueueError> {
        self.queue.set_scan_floor(topic, partition, offset, durable)
    }
    fn sync(&self) -> Result<(), QueueError> {
        if take(&self.syncs_failing) {
            return Err(io_failure());
        }
        self.queue.sync()
    }
}
