//! One partition: a log of record batches kept as the bytes a producer sent (offsets and leader
//! epoch stamped in), its start and end offsets, and the producer states.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use super::producer_state::{BatchMetadata, ProducerState};
use super::{ModelError, StoredRecord};
use crate::batch::{BatchHeader, LEADER_EPOCH_AT, MAGIC_AT};

/// The leader epoch of the only broker; never bumped because leadership never moves.
pub(crate) const LEADER_EPOCH: i32 = 0;

/// One batch in the log (a legacy magic-0/1 entry counts as a batch of one record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Offset of its first record.
    pub base_offset: i64,
    /// Number of offsets it occupies.
    pub record_count: i32,
    /// −1 for a non-idempotent producer.
    pub producer_id: i64,
    /// −1 without a producer id.
    pub producer_epoch: i16,
    /// −1 without a producer id.
    pub base_sequence: i32,
    /// Largest record timestamp (−1 when unknown).
    pub max_timestamp: i64,
    /// 2 for a RecordBatch; 0 or 1 for a legacy message-set entry.
    pub magic: i8,
    /// Codec named in its attributes (`None` is "uncompressed", not "unknown").
    pub compression: Compression,
    /// Its bytes exactly as a Fetch returns them.
    pub bytes: Bytes,
}

impl Batch {
    /// Offset of its last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.record_count) - 1
    }

    /// The offsets and timestamps of its records, if this crate can read them (uncompressed
    /// or zstd v2 batches; legacy entries carry one record with the batch's timestamp).
    fn record_timestamps(&self) -> Option<Vec<(i64, i64)>> {
        if self.magic < 2 {
            return Some(vec![(self.base_offset, self.max_timestamp)]);
        }
        let records = self.decode().ok()?;
        Some(records.iter().map(|r| (r.offset, r.timestamp)).collect())
    }

    /// Decodes the records of a v2 batch in a codec this crate has compiled in.
    fn decode(&self) -> Result<Vec<kafka_protocol::records::Record>, ModelError> {
        let mut buf = self.bytes.clone();
        RecordBatchDecoder::decode(&mut buf)
            .map(|set| set.records)
            .map_err(|e| ModelError::Undecodable {
                offset: self.base_offset,
                reason: e.to_string(),
            })
    }
}

/// A partition's log and producer states.
#[derive(Debug, Clone, Default)]
pub(crate) struct Partition {
    pub(crate) log: Vec<Batch>,
    pub(crate) log_start: i64,
    pub(crate) log_end: i64,
    pub(crate) producers: BTreeMap<i64, ProducerState>,
}

/// Whole batches read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Concatenated batches (possibly ending in part of the next one, when enabled).
    pub records: Bytes,
    /// The log end offset: with one broker and no replication every appended record is
    /// committed at once.
    pub high_watermark: i64,
    /// First offset still in the log.
    pub log_start_offset: i64,
}

impl Partition {
    /// Appends a complete batch at the log end, stamping the base offset and leader epoch as
    /// Kafka's `LogValidator` does for an uncompressed or already compressed v2 batch (neither
    /// field is covered by the CRC). Returns the batch's metadata for the producer state.
    pub(crate) fn append(&mut self, bytes: &[u8], header: &BatchHeader) -> BatchMetadata {
        let base_offset = self.log_end;
        let mut stored = BytesMut::from(bytes);
        stored[0..8].copy_from_slice(&base_offset.to_be_bytes());
        stored[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&LEADER_EPOCH.to_be_bytes());
        let batch = Batch {
            base_offset,
            record_count: header.record_count,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            max_timestamp: header.max_timestamp,
            magic: 2,
            compression: header.compression().unwrap_or(Compression::None),
            bytes: stored.freeze(),
        };
        let meta = BatchMetadata {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            first_offset: base_offset,
            last_offset: batch.last_offset(),
        };
        self.push(batch);
        meta
    }

    /// Appends a legacy (magic 0/1) entry of one record, rewriting its offset field.
    pub(crate) fn append_legacy(&mut self, entry: &[u8], timestamp: i64) -> i64 {
        let base_offset = self.log_end;
        let mut stored = BytesMut::from(entry);
        stored[0..8].copy_from_slice(&base_offset.to_be_bytes());
        self.push(Batch {
            base_offset,
            record_count: 1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            max_timestamp: timestamp,
            magic: entry[MAGIC_AT] as i8,
            compression: Compression::None,
            bytes: stored.freeze(),
        });
        base_offset
    }

    fn push(&mut self, batch: Batch) {
        self.log_end = batch.last_offset() + 1;
        self.log.push(batch);
    }

    /// Index of the batch holding `offset` or, below the log start, the first batch after it:
    /// the first batch whose last offset is at or beyond `offset`.
    fn batch_index(&self, offset: i64) -> usize {
        self.log.partition_point(|b| b.last_offset() < offset)
    }

    /// Reads from `offset` (Kafka's `LocalLog.read` over one segment): whole batches starting
    /// with the one that holds `offset`; with `min_one` the first even if it exceeds
    /// `max_bytes`, then as many as fit. Kafka slices the segment file at `max_bytes`, so a
    /// read can end inside the next batch; `partial_tail` reproduces that.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        partial_tail: bool,
    ) -> Result<Fetched, kafka_protocol::ResponseError> {
        if offset < self.log_start || offset > self.log_end {
            return Err(kafka_protocol::ResponseError::OffsetOutOfRange);
        }
        let mut out = BytesMut::new();
        for batch in &self.log[self.batch_index(offset)..] {
            let len = batch.bytes.len();
            if out.len() + len <= max_bytes || (min_one && out.is_empty()) {
                out.extend_from_slice(&batch.bytes);
                continue;
            }
            let room = max_bytes.saturating_sub(out.len());
            if partial_tail && room > 0 {
                out.extend_from_slice(&batch.bytes[..room.min(len - 1)]);
            }
            break;
        }
        Ok(Fetched {
            records: out.freeze(),
            high_watermark: self.log_end,
            log_start_offset: self.log_start,
        })
    }

    /// The first record at or after the log start whose timestamp is at least `target`, with
    /// that timestamp (Kafka's `FileRecords.searchForTimestamp`: the first batch whose max
    /// timestamp reaches the target, then the first record in it that does). A batch this crate
    /// cannot decompress answers with its base offset and max timestamp.
    pub(crate) fn offset_for_timestamp(&self, target: i64) -> Option<(i64, i64)> {
        self.log[self.batch_index(self.log_start)..]
            .iter()
            .filter(|b| b.max_timestamp >= target)
            .find_map(|b| match b.record_timestamps() {
                Some(records) => records
                    .into_iter()
                    .find(|&(offset, ts)| ts >= target && offset >= self.log_start),
                None => Some((b.base_offset.max(self.log_start), b.max_timestamp)),
            })
    }

    /// The record with the largest timestamp, first of equals (ListOffsets MAX_TIMESTAMP, −3).
    pub(crate) fn offset_of_max_timestamp(&self) -> Option<(i64, i64)> {
        let batch = self.log[self.batch_index(self.log_start)..]
            .iter()
            .reduce(|best, b| {
                if b.max_timestamp > best.max_timestamp {
                    b
                } else {
                    best
                }
            })?;
        let offset = batch
            .record_timestamps()
            .and_then(|r| r.into_iter().find(|&(_, ts)| ts == batch.max_timestamp))
            .map_or(batch.base_offset, |(offset, _)| offset);
        Some((offset.max(self.log_start), batch.max_timestamp))
    }

    /// Moves the log start to `offset`, dropping the batches wholly below it (DeleteRecords /
    /// retention: a batch straddling the new start stays, readers skip its lower part).
    pub(crate) fn delete_before(&mut self, offset: i64) {
        if offset <= self.log_start {
            return;
        }
        self.log_start = offset;
        let keep_from = self.batch_index(offset);
        self.log.drain(..keep_from);
    }

    /// Records of the retained batches at or after the log start, for uncompressed and zstd
    /// batches; other codecs and legacy entries are skipped (see `Cluster::batches`).
    pub(crate) fn records(&self) -> Result<Vec<StoredRecord>, ModelError> {
        let mut out = Vec::new();
        for batch in &self.log {
            if batch.magic < 2
                || !matches!(batch.compression, Compression::None | Compression::Zstd)
            {
                continue;
            }
            for r in batch.decode()? {
                if r.offset < self.log_start {
                    continue;
                }
                out.push(StoredRecord {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    producer_id: batch.producer_id,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                });
            }
        }
        Ok(out)
    }
}
