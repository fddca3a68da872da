//! The queue seam: what delivery reads from and writes to the durable queue, as a trait, so
//! that tests can put faults between delivery and a real [`Queue`] (a sync that fails after a
//! committed seal, say). [`Queue`] implements it.

use std::collections::BTreeMap;

use bytes::Bytes;

use kedge_queue::outbox::{BatchMeta, SealedBatch};
use kedge_queue::{JournalChunk, Parked, Queue, QueueError, Seal, SealError};
use kedge_wire::batch::ProducerIdentity;
use kedge_wire::record::Origin;

/// A topic and partition.
pub type Tp = (String, i32);

/// What delivery needs of the queue.
pub trait Outbox: Send + Sync + 'static {
    /// The device and queue incarnation every record carries.
    fn origin(&self) -> &Origin;
    /// When the queue was created (wall-clock ms), if known.
    fn created_ms(&self) -> Option<i64>;
    /// The persisted producer identity, if any.
    fn producer(&self) -> Result<Option<ProducerIdentity>, QueueError>;
    /// The next producer sequence of every partition that has one.
    fn next_sequences(&self) -> Result<BTreeMap<Tp, i32>, QueueError>;
    /// The next batch number.
    fn next_batch_no(&self) -> Result<u64, QueueError>;
    /// Every sealed batch without its bytes, in seal order.
    fn sealed(&self) -> Result<Vec<BatchMeta>, QueueError>;
    /// A sealed batch's bytes; [`QueueError::BatchLost`] when they were damaged.
    fn read(&self, batch_no: u64) -> Result<Bytes, QueueError>;
    /// The journal's chunks from its head, decoded as they are taken.
    fn journal(&self) -> Box<dyn Iterator<Item = Result<JournalChunk, QueueError>> + '_>;
    /// Whether the journal holds nothing.
    fn journal_is_empty(&self) -> bool;
    /// The partitions with records set aside for being stuck.
    fn parked_partitions(&self) -> Result<Vec<Tp>, QueueError>;
    /// Up to `max` of a partition's set-aside chunks, oldest first.
    fn parked_chunks(&self, tp: &Tp, max: usize) -> Result<Vec<Parked>, QueueError>;
    /// Persists a seal atomically (see [`Queue::seal`]).
    fn seal(&self, seal: &Seal) -> Result<(), SealError>;
    /// Moves every listed batch to a new producer id (see [`Queue::resequence`]).
    fn resequence(
        &self,
        producer: ProducerIdentity,
        batches: &[SealedBatch],
        next_sequences: &[(Tp, i32)],
    ) -> Result<(), SealError>;
    /// Removes a batch Kafka holds.
    fn remove(&self, batch_no: u64) -> Result<(), QueueError>;
    /// The partition's scan floor (see [`Queue::set_scan_floor`]).
    fn scan_floor(&self, topic: &str, partition: i32) -> Result<Option<i64>, QueueError>;
    /// Records the partition's scan floor, synced when `durable`.
    fn set_scan_floor(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        durable: bool,
    ) -> Result<(), QueueError>;
    /// Makes everything written so far durable.
    fn sync(&self) -> Result<(), QueueError>;
}

impl Outbox for Queue {
    fn origin(&self) -> &Origin {
        Queue::origin(self)
    }
    fn created_ms(&self) -> Option<i64> {
        Queue::created_ms(self)
    }
    fn producer(&self) -> Result<Option<ProducerIdentity>, QueueError> {
        Queue::producer(self)
    }
    fn next_sequences(&self) -> Result<BTreeMap<Tp, i32>, QueueError> {
        Queue::next_sequences(self)
    }
    fn next_batch_no(&self) -> Result<u64, QueueError> {
        Queue::next_batch_no(self)
    }
    fn sealed(&self) -> Result<Vec<BatchMeta>, QueueError> {
        self.sealed_metas()
    }
    fn read(&self, batch_no: u64) -> Result<Bytes, QueueError> {
        self.read_batch(batch_no)
    }
    fn journal(&self) -> Box<dyn Iterator<Item = Result<JournalChunk, QueueError>> + '_> {
        Box::new(self.journal_iter())
    }
    fn journal_is_empty(&self) -> bool {
        Queue::journal_is_empty(self)
    }
    fn parked_partitions(&self) -> Result<Vec<Tp>, QueueError> {
        Ok(Queue::parked_partitions(self)?.into_keys().collect())
    }
    fn parked_chunks(&self, tp: &Tp, max: usize) -> Result<Vec<Parked>, QueueError> {
        Queue::parked_chunks(self, &tp.0, tp.1, max)
    }
    fn seal(&self, seal: &Seal) -> Result<(), SealError> {
        Queue::seal(self, seal)
    }
    fn resequence(
        &self,
        producer: ProducerIdentity,
        batches: &[SealedBatch],
        next_sequences: &[(Tp, i32)],
    ) -> Result<(), SealError> {
        Queue::resequence(self, producer, batches, next_sequences)
    }
    fn remove(&self, batch_no: u64) -> Result<(), QueueError> {
        self.remove_batch(batch_no)
    }
    fn scan_floor(&self, topic: &str, partition: i32) -> Result<Option<i64>, QueueError> {
        Queue::scan_floor(self, topic, partition)
    }
    fn set_scan_floor(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        durable: bool,
    ) -> Result<(), QueueError> {
        Queue::set_scan_floor(self, topic, partition, offset, durable)
    }
    fn sync(&self) -> Result<(), QueueError> {
        Queue::sync(self)
    }
}
