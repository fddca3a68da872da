//! A pure, synchronous, deterministic model of a one-broker Kafka cluster: topics of
//! partitions, their logs, the producer state each partition keeps, and producer-id issuance.
//! No I/O and no clock: time enters only as values passed in (record timestamps, `now_ms`).
//!
//! The protocol operations answer what the broker would put in its response (a
//! [`ResponseError`] where Kafka answers an error code); the controls reproduce faults real
//! brokers cannot be made to show on demand; the inspection methods let a test check
//! invariants on what the log holds.

mod answers;
mod error;
mod foreign;
mod partition;
mod producer_state;
mod validation;

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

pub use answers::{ActiveProducer, Appended, OffsetAt, StoredRecord, TopicInfo};
pub use error::ModelError;
pub use foreign::{Foreign, ForeignCodec};
pub(crate) use partition::LEADER_EPOCH;
pub use partition::{Batch, Fetched};
pub use producer_state::{BATCHES_RETAINED, BatchMetadata, ProducerState};

use crate::batch::{self, Codec, Idempotence, increment_sequence};
use partition::Partition;
use producer_state::Verdict;

/// Kafka's default `message.max.bytes` (1 MiB plus the 12-byte log overhead).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// The first producer id the model issues: far from partition numbers, sequences and offsets,
/// so a test that confuses them fails.
const FIRST_PRODUCER_ID: i64 = 1000;

/// Whose rules judge idempotent produce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// Apache Kafka ≥ 2.5: duplicates of the last 5 batches answered NONE with the original
    /// offset; a producer id without state accepted with any sequence.
    #[default]
    Kafka,
    /// tansu 0.6: duplicates answered DUPLICATE_SEQUENCE_NUMBER with offset −1; unknown producer
    /// ids UNKNOWN_PRODUCER_ID; an epoch other than the issued one PRODUCER_FENCED;
    /// InitProducerId only in its v3+ form with producer id and epoch −1.
    Tansu,
}

#[derive(Debug, Clone)]
struct Topic {
    partitions: Vec<Partition>,
    max_message_bytes: usize,
    read_denied: bool,
    describe_denied: bool,
}

/// The cluster: one broker (node id 1) leading every partition.
#[derive(Debug, Clone)]
pub struct Cluster {
    topics: BTreeMap<String, Topic>,
    dialect: Dialect,
    auto_create_partitions: Option<i32>,
    partial_fetch_tail: bool,
    next_producer_id: i64,
    /// Producer ids InitProducerId handed out (and not forgotten), with their epoch: what
    /// tansu checks a produce against. Kafka's leaders do not consult it.
    issued: BTreeMap<i64, i16>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    /// An empty cluster: Kafka dialect, no topics, no auto-creation.
    pub fn new() -> Cluster {
        Cluster {
            topics: BTreeMap::new(),
            dialect: Dialect::Kafka,
            auto_create_partitions: None,
            partial_fetch_tail: false,
            next_producer_id: FIRST_PRODUCER_ID,
            issued: BTreeMap::new(),
        }
    }

    /// `create_topic` for building a cluster in one expression.
    ///
    /// # Panics
    /// When the topic exists or `partitions < 1`.
    pub fn with_topic(mut self, name: &str, partitions: i32) -> Cluster {
        if let Err(e) = self.create_topic(name, partitions) {
            panic!("{e}");
        }
        self
    }

    /// Creates a topic with empty partitions and Kafka's default `max.message.bytes`.
    pub fn create_topic(&mut self, name: &str, partitions: i32) -> Result<(), ModelError> {
        if partitions < 1 {
            return Err(ModelError::InvalidPartitionCount(partitions));
        }
        if self.topics.contains_key(name) {
            return Err(ModelError::TopicExists(name.to_owned()));
        }
        let topic = Topic {
            partitions: (0..partitions).map(|_| Partition::default()).collect(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            read_denied: false,
            describe_denied: false,
        };
        self.topics.insert(name.to_owned(), topic);
        Ok(())
    }

    /// With `Some(n)`, Metadata requests that allow it create unknown topics with `n`
    /// partitions (`auto.create.topics.enable`); `None` (the default) answers them
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn set_auto_create(&mut self, partitions: Option<i32>) {
        self.auto_create_partitions = partitions.filter(|&n| n >= 1);
    }

    /// Switches the idempotence rules; producer states and logs stay.
    pub fn set_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
    }

    /// The idempotence rules in force.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Sets a topic's `max.message.bytes`: produced batches larger than this are refused.
    pub fn set_max_message_bytes(&mut self, topic: &str, bytes: usize) -> Result<(), ModelError> {
        self.topic_mut(topic)?.max_message_bytes = bytes;
        Ok(())
    }

    /// Denies (or allows again) READ on a topic: Fetch, ListOffsets and DescribeProducers
    /// answer TOPIC_AUTHORIZATION_FAILED; produce still works.
    pub fn deny_read(&mut self, topic: &str, deny: bool) -> Result<(), ModelError> {
        self.topic_mut(topic)?.read_denied = deny;
        Ok(())
    }

    /// Denies (or allows again) DESCRIBE on a topic, in Metadata only: Metadata naming it
    /// answers TOPIC_AUTHORIZATION_FAILED with no partitions, and Metadata for all topics
    /// leaves it out, as Kafka does for a principal without DESCRIBE. (Kafka would refuse
    /// that principal's Produce and Fetch too; here they still work.)
    pub fn deny_describe(&mut self, topic: &str, deny: bool) -> Result<(), ModelError> {
        self.topic_mut(topic)?.describe_denied = deny;
        Ok(())
    }

    /// When on, a Fetch that stops before the next batch because of its byte limit ends with
    /// the part of that batch that fits, as Kafka's file slice does; off by default.
    pub fn set_partial_fetch_tail(&mut self, on: bool) {
        self.partial_fetch_tail = on;
    }

    /// InitProducerId for an idempotent (non-transactional) producer. `current` is the request's
    /// producer id and epoch, `None` before v3 where the request has no such fields.
    ///
    /// Kafka (`TransactionCoordinator.handleInitProducerId` without a transactional id) always
    /// hands out a fresh producer id with epoch 0, whatever `current` says. tansu answers
    /// UNKNOWN_SERVER_ERROR unless `current` is `Some((-1, -1))`.
    pub fn init_producer_id(
        &mut self,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        if self.dialect == Dialect::Tansu && current != Some((-1, -1)) {
            return Err(ResponseError::UnknownServerError);
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        self.issued.insert(id, 0);
        Ok((id, 0))
    }

    /// Produce of one partition's records (one v2 batch), with the validation and producer
    /// state rules of the dialect (see `producer_state` and `validation`).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> Result<Appended, ResponseError> {
        let dialect = self.dialect;
        let t = self
            .topics
            .get_mut(topic)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        let max_message_bytes = t.max_message_bytes;
        let p = partition_of(&mut t.partitions, partition)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        let header = validation::validate_produced(records, max_message_bytes)?;
        if header.producer_id < 0 {
            let meta = p.append(records, &header);
            return Ok(appended(meta.first_offset, p, false));
        }
        let state = p.producers.get(&header.producer_id);
        let verdict = match dialect {
            Dialect::Kafka => producer_state::check_kafka(
                state,
                header.producer_epoch,
                header.base_sequence,
                header.last_sequence(),
            ),
            Dialect::Tansu => producer_state::check_tansu(
                self.issued.get(&header.producer_id).copied(),
                state,
                header.producer_epoch,
                header.base_sequence,
            ),
        }?;
        match verdict {
            Verdict::Duplicate(original) => Ok(appended(original.first_offset, p, true)),
            Verdict::Append => {
                let meta = p.append(records, &header);
                record_state(p, &header, meta);
                Ok(appended(meta.first_offset, p, false))
            }
        }
    }

    /// Fetch of one partition from `offset`, at most `max_bytes` unless `min_one` lets a
    /// larger first batch through. OFFSET_OUT_OF_RANGE below the log start or beyond the log
    /// end (Kafka then reports −1 for high watermark and log start offset).
    pub fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Fetched, ResponseError> {
        let p = self.readable(topic, partition)?;
        p.read(offset, max_bytes, min_one, self.partial_fetch_tail)
    }

    /// ListOffsets: −2 the log start, −1 the log end, −3 the record with the largest
    /// timestamp, any other value the first record with a timestamp at or after it. `None`
    /// where Kafka answers offset −1 and timestamp −1 (no such record).
    pub fn list_offsets(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<OffsetAt>, ResponseError> {
        let p = self.readable(topic, partition)?;
        let at = |(offset, timestamp)| OffsetAt { offset, timestamp };
        Ok(match timestamp {
            -2 => Some(at((p.log_start, -1))),
            -1 => Some(at((p.log_end, -1))),
            -3 => p.offset_of_max_timestamp().map(at),
            target => p.offset_for_timestamp(target).map(at),
        })
    }

    /// DescribeProducers for one partition: every producer it keeps state for.
    pub fn describe_producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ActiveProducer>, ResponseError> {
        let p = self.readable(topic, partition)?;
        Ok(p.producers
            .iter()
            .map(|(&producer_id, s)| ActiveProducer {
                producer_id,
                producer_epoch: s.epoch(),
                last_sequence: s.last_sequence(),
                last_timestamp: s.last_timestamp(),
            })
            .collect())
    }

    /// Metadata for `requested` topics (`None`: all). An unknown topic is created when
    /// `allow_auto_create` and auto-creation is configured, and then reported with
    /// LEADER_NOT_AVAILABLE in this response, as Kafka's `AutoTopicCreationManager` does.
    pub fn metadata(
        &mut self,
        requested: Option<&[&str]>,
        allow_auto_create: bool,
    ) -> Vec<TopicInfo> {
        let Some(requested) = requested else {
            return self
                .topics
                .iter()
                .filter(|(_, t)| !t.describe_denied)
                .map(|(name, t)| TopicInfo {
                    name: name.clone(),
                    error: None,
                    partitions: partition_count(t),
                })
                .collect();
        };
        requested
            .iter()
            .map(|&name| {
                if let Some(t) = self.topics.get(name) {
                    if t.describe_denied {
                        return TopicInfo {
                            name: name.to_owned(),
                            error: Some(ResponseError::TopicAuthorizationFailed),
                            partitions: 0,
                        };
                    }
                    return TopicInfo {
                        name: name.to_owned(),
                        error: None,
                        partitions: partition_count(t),
                    };
                }
                let error = match self.auto_create_partitions {
                    Some(n) if allow_auto_create => {
                        self.create_topic(name, n).expect("new topic, n ≥ 1");
                        ResponseError::LeaderNotAvailable
                    }
                    _ => ResponseError::UnknownTopicOrPartition,
                };
                TopicInfo {
                    name: name.to_owned(),
                    error: Some(error),
                    partitions: 0,
                }
            })
            .collect()
    }

    /// Producer-id expiry for one producer: every partition drops its state (the data stays),
    /// and the id counts as never issued (tansu then answers UNKNOWN_PRODUCER_ID).
    pub fn forget_producer(&mut self, producer_id: i64) {
        for p in self.partitions_mut() {
            p.producers.remove(&producer_id);
        }
        self.issued.remove(&producer_id);
    }

    /// [`Cluster::forget_producer`] for every producer id, as after a broker restart that lost
    /// its producer snapshots.
    pub fn forget_all_producers(&mut self) {
        for p in self.partitions_mut() {
            p.producers.clear();
        }
        self.issued.clear();
    }

    /// Kafka's periodic expiry (`ProducerStateManager.removeExpiredProducers`): drops every
    /// state whose last batch's max record timestamp is `expiration_ms` or more before
    /// `now_ms`. Old record timestamps make a producer expire at once.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) {
        for p in self.partitions_mut() {
            p.producers
                .retain(|_, s| now_ms.saturating_sub(s.last_timestamp()) < expiration_ms);
        }
    }

    /// Retention or DeleteRecords: moves the log start offset to `offset`, dropping whole
    /// batches below it. Producer states stay: Kafka's `ProducerStateManager` drops snapshot
    /// files below the log start but not the in-memory state (`truncateAndReload`).
    pub fn delete_records_before(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), ModelError> {
        let p = self.partition_mut(topic, partition)?;
        if offset > p.log_end {
            return Err(ModelError::BeyondLogEnd {
                offset,
                log_end: p.log_end,
            });
        }
        p.delete_before(offset);
        Ok(())
    }

    /// Writes another writer's batch at the log end, without produce validation. Returns its
    /// base offset.
    pub fn append_foreign(
        &mut self,
        topic: &str,
        partition: i32,
        foreign: Foreign,
    ) -> Result<i64, ModelError> {
        let p = self.partition_mut(topic, partition)?;
        let bytes = match foreign {
            Foreign::Plain {
                producer_id,
                records,
            } => {
                let idempotence = (producer_id >= 0).then(|| {
                    let state = p.producers.get(&producer_id);
                    Idempotence {
                        producer_id,
                        producer_epoch: state.map_or(0, ProducerState::epoch),
                        base_sequence: state
                            .map_or(0, |s| increment_sequence(s.last_sequence(), 1)),
                    }
                });
                batch::encode_batch(idempotence, &records, Codec::None)
            }
            Foreign::Compressed { codec } => foreign::compressed_batch(codec),
            Foreign::LegacyMagic1 => return Ok(p.append_legacy(&foreign::legacy_magic1(), -1)),
        };
        let header = batch::BatchHeader::read(&bytes).expect("a v2 batch of our own making");
        let meta = p.append(&bytes, &header);
        if header.producer_id >= 0 {
            record_state(p, &header, meta);
        }
        Ok(meta.first_offset)
    }

    /// The batches a partition holds, oldest first (a batch straddling the log start included).
    pub fn batches(&self, topic: &str, partition: i32) -> Result<&[Batch], ModelError> {
        Ok(&self.partition(topic, partition)?.log)
    }

    /// The records at or after the log start of a partition's uncompressed and zstd batches
    /// (batches in other codecs and legacy entries are skipped: see [`Cluster::batches`]).
    pub fn records(&self, topic: &str, partition: i32) -> Result<Vec<StoredRecord>, ModelError> {
        self.partition(topic, partition)?.records()
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self, topic: &str, partition: i32) -> Result<i64, ModelError> {
        Ok(self.partition(topic, partition)?.log_start)
    }

    /// The offset the next appended record gets (also the high watermark).
    pub fn log_end_offset(&self, topic: &str, partition: i32) -> Result<i64, ModelError> {
        Ok(self.partition(topic, partition)?.log_end)
    }

    /// The state a partition keeps for a producer id, if any.
    pub fn producer_state(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
    ) -> Result<Option<&ProducerState>, ModelError> {
        Ok(self
            .partition(topic, partition)?
            .producers
            .get(&producer_id))
    }

    /// Number of partitions of a topic, `None` if there is no such topic.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        self.topics.get(topic).map(partition_count)
    }

    fn topic_mut(&mut self, topic: &str) -> Result<&mut Topic, ModelError> {
        self.topics
            .get_mut(topic)
            .ok_or_else(|| ModelError::UnknownTopic(topic.to_owned()))
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<&Partition, ModelError> {
        let t = self
            .topics
            .get(topic)
            .ok_or_else(|| ModelError::UnknownTopic(topic.to_owned()))?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
            .ok_or_else(|| ModelError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> Result<&mut Partition, ModelError> {
        let t = self.topic_mut(topic)?;
        partition_of(&mut t.partitions, partition).ok_or_else(|| ModelError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        })
    }

    /// A partition a reading request may see: UNKNOWN_TOPIC_OR_PARTITION, or
    /// TOPIC_AUTHORIZATION_FAILED while READ is denied.
    fn readable(&self, topic: &str, partition: i32) -> Result<&Partition, ResponseError> {
        let t = self
            .topics
            .get(topic)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        if t.read_denied {
            return Err(ResponseError::TopicAuthorizationFailed);
        }
        usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
            .ok_or(ResponseError::UnknownTopicOrPartition)
    }

    fn partitions_mut(&mut self) -> impl Iterator<Item = &mut Partition> {
        self.topics
            .values_mut()
            .flat_map(|t| t.partitions.iter_mut())
    }
}

fn partition_of(partitions: &mut [Partition], partition: i32) -> Option<&mut Partition> {
    usize::try_from(partition)
        .ok()
        .and_then(|i| partitions.get_mut(i))
}

fn partition_count(t: &Topic) -> i32 {
    i32::try_from(t.partitions.len()).expect("partition count fits i32")
}

fn appended(base_offset: i64, p: &Partition, duplicate: bool) -> Appended {
    Appended {
        base_offset,
        log_start_offset: p.log_start,
        duplicate,
    }
}

/// Updates (or starts) the producer's state with a batch just appended.
fn record_state(p: &mut Partition, header: &batch::BatchHeader, meta: BatchMetadata) {
    let (epoch, ts) = (header.producer_epoch, header.max_timestamp);
    p.producers
        .entry(header.producer_id)
        .and_modify(|s| s.record(epoch, meta, ts))
        .or_insert_with(|| ProducerState::first(epoch, meta, ts));
}

#[cfg(test)]
mod tests;
