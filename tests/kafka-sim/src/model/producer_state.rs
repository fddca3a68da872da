//! What a partition remembers per producer id to make produce idempotent, and the rules that
//! judge an incoming batch against it, in two dialects.
//!
//! Kafka (Apache Kafka `storage/.../log/ProducerStateEntry.java`, `ProducerAppendInfo.java`,
//! `core/.../log/UnifiedLog.scala` `analyzeAndValidateProducerState`):
//! 1. Duplicate lookup first: same epoch and exactly the same `[first seq, last seq]` as one of
//!    the last 5 batches → the append is skipped and the original offsets are returned.
//!    Content is never compared.
//! 2. `checkProducerEpoch`: a lower epoch than the state's → INVALID_PRODUCER_EPOCH.
//! 3. `checkSequence`: another (higher) epoch must start at sequence 0, unless there is no
//!    state (epoch −1); the same epoch must continue at last sequence + 1 (`inSequence`, with
//!    0 after `i32::MAX`), unless there is no state: then any sequence is accepted (the
//!    "accept writes with any sequence number" branch, Kafka ≥ 2.5) → else
//!    OUT_OF_ORDER_SEQUENCE_NUMBER.
//! 4. `ProducerStateEntry.addBatch`: a new epoch clears the remembered batches; at most 5 are
//!    kept, the oldest dropped first; the last timestamp is the batch's max timestamp.
//!
//! tansu 0.6.0 (`tansu-storage/src/dynostore.rs`, the `memory://` engine) keeps no batch
//! window, only the next expected sequence per producer epoch and partition:
//! producer id never issued (or lost) → UNKNOWN_PRODUCER_ID; epoch other than the one issued
//! → PRODUCER_FENCED; base sequence below the expected one → DUPLICATE_SEQUENCE_NUMBER (any
//! older batch, not only the last 5); above it → OUT_OF_ORDER_SEQUENCE_NUMBER.

use std::collections::VecDeque;

use kafka_protocol::ResponseError;

use crate::batch::increment_sequence;

/// Batches remembered per producer and partition (`ProducerStateEntry.NUM_BATCHES_TO_RETAIN`).
pub const BATCHES_RETAINED: usize = 5;

/// One remembered batch (Kafka's `BatchMetadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence of its first record.
    pub first_seq: i32,
    /// Sequence of its last record.
    pub last_seq: i32,
    /// Offset it was appended at.
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
}

/// The state of one idempotent producer on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
    last_timestamp: i64,
}

impl ProducerState {
    /// The producer's current epoch on this partition.
    pub fn epoch(&self) -> i16 {
        self.epoch
    }

    /// Sequence of the last appended record (−1 if nothing is remembered).
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }

    /// Max record timestamp of the last appended batch: what `producer.id.expiration.ms` is
    /// measured from, and what DescribeProducers reports.
    pub fn last_timestamp(&self) -> i64 {
        self.last_timestamp
    }

    /// The remembered batches, oldest first (at most [`BATCHES_RETAINED`]).
    pub fn batches(&self) -> impl Iterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    /// Starts the state with its first appended batch.
    pub(crate) fn first(epoch: i16, batch: BatchMetadata, max_timestamp: i64) -> ProducerState {
        let mut state = ProducerState {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_RETAINED),
            last_timestamp: max_timestamp,
        };
        state.record(epoch, batch, max_timestamp);
        state
    }

    /// Remembers an appended batch (`ProducerStateEntry.addBatch`).
    pub(crate) fn record(&mut self, epoch: i16, batch: BatchMetadata, max_timestamp: i64) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == BATCHES_RETAINED {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp = max_timestamp;
    }

    /// `ProducerStateEntry.findDuplicateBatch`.
    fn duplicate_of(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }
}

/// What an acceptable batch is, relative to its producer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New data: append it.
    Append,
    /// Already in the log at these offsets: append nothing, answer success (Kafka).
    Duplicate(BatchMetadata),
}

/// Epoch of "no state" in Kafka's `ProducerStateEntry.empty` (`RecordBatch.NO_PRODUCER_EPOCH`).
const NO_EPOCH: i16 = -1;

/// Judges a batch the way Apache Kafka's leader does (module doc, rules 1–3).
pub(crate) fn check_kafka(
    state: Option<&ProducerState>,
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
) -> Result<Verdict, ResponseError> {
    if let Some(dup) = state.and_then(|s| s.duplicate_of(epoch, first_seq, last_seq)) {
        return Ok(Verdict::Duplicate(dup));
    }
    let current_epoch = state.map_or(NO_EPOCH, |s| s.epoch);
    if epoch < current_epoch {
        return Err(ResponseError::InvalidProducerEpoch);
    }
    if epoch != current_epoch {
        if first_seq != 0 && current_epoch != NO_EPOCH {
            return Err(ResponseError::OutOfOrderSequenceNumber);
        }
        return Ok(Verdict::Append);
    }
    let last = state.map_or(-1, ProducerState::last_sequence);
    if current_epoch == NO_EPOCH || in_sequence(last, first_seq) {
        Ok(Verdict::Append)
    } else {
        Err(ResponseError::OutOfOrderSequenceNumber)
    }
}

/// `ProducerAppendInfo.inSequence`: the next sequence, with 0 after `i32::MAX`.
fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// Judges a batch the way tansu 0.6.0 does (module doc). `issued_epoch` is the epoch the
/// cluster issued to this producer id, `None` if it never did or forgot it.
pub(crate) fn check_tansu(
    issued_epoch: Option<i16>,
    state: Option<&ProducerState>,
    epoch: i16,
    first_seq: i32,
) -> Result<Verdict, ResponseError> {
    let Some(issued) = issued_epoch else {
        return Err(ResponseError::UnknownProducerId);
    };
    if epoch != issued {
        return Err(ResponseError::ProducerFenced);
    }
    let expected = state
        .filter(|s| s.epoch == epoch)
        .map_or(0, |s| increment_sequence(s.last_sequence(), 1));
    match first_seq.cmp(&expected) {
        std::cmp::Ordering::Less => Err(ResponseError::DuplicateSequenceNumber),
        std::cmp::Ordering::Greater => Err(ResponseError::OutOfOrderSequenceNumber),
        std::cmp::Ordering::Equal => Ok(Verdict::Append),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMetadata {
        BatchMetadata {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + i64::from(last_seq - first_seq),
        }
    }

    /// A state at epoch 0 holding batches of 2 records with sequences 0–1, 2–3, … .
    fn state_with(batches: i32) -> ProducerState {
        let mut s = ProducerState::first(0, meta(0, 1, 0), 10);
        for b in 1..batches {
            s.record(0, meta(2 * b, 2 * b + 1, i64::from(2 * b)), 10);
        }
        s
    }

    #[test]
    fn keeps_only_the_last_five_batches() {
        let s = state_with(7);
        let firsts: Vec<i32> = s.batches().map(|b| b.first_seq).collect();
        assert_eq!(firsts, [4, 6, 8, 10, 12]);
        assert_eq!(s.last_sequence(), 13);
    }

    #[test]
    fn kafka_duplicate_needs_exact_range_and_epoch() {
        let s = state_with(7);
        assert_eq!(
            check_kafka(Some(&s), 0, 6, 7),
            Ok(Verdict::Duplicate(meta(6, 7, 6)))
        );
        // Overlapping but not the same boundaries: a sequence error, not a duplicate.
        assert_eq!(
            check_kafka(Some(&s), 0, 6, 8),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        // Older than the 5 remembered batches.
        assert_eq!(
            check_kafka(Some(&s), 0, 2, 3),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn kafka_epoch_rules() {
        let mut s = state_with(2);
        s.record(3, meta(0, 0, 10), 10);
        assert_eq!(
            check_kafka(Some(&s), 2, 1, 1),
            Err(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(check_kafka(Some(&s), 4, 0, 5), Ok(Verdict::Append));
        assert_eq!(
            check_kafka(Some(&s), 4, 1, 5),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        // A new epoch forgets the old epoch's batches.
        assert_eq!(s.batches().count(), 1);
    }

    #[test]
    fn kafka_without_state_accepts_any_sequence() {
        assert_eq!(check_kafka(None, 0, 12345, 12349), Ok(Verdict::Append));
        assert_eq!(check_kafka(None, 7, 3, 3), Ok(Verdict::Append));
    }

    #[test]
    fn kafka_sequence_wraps_after_max() {
        let s = ProducerState::first(0, meta(i32::MAX - 1, i32::MAX, 0), 1);
        assert_eq!(check_kafka(Some(&s), 0, 0, 4), Ok(Verdict::Append));
        assert_eq!(
            check_kafka(Some(&s), 0, i32::MIN, 0),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn tansu_rules() {
        let s = state_with(7);
        assert_eq!(
            check_tansu(None, None, 0, 0),
            Err(ResponseError::UnknownProducerId)
        );
        assert_eq!(
            check_tansu(Some(0), Some(&s), 1, 14),
            Err(ResponseError::ProducerFenced)
        );
        // Any older batch is a duplicate, even one Kafka no longer remembers.
        assert_eq!(
            check_tansu(Some(0), Some(&s), 0, 0),
            Err(ResponseError::DuplicateSequenceNumber)
        );
        assert_eq!(
            check_tansu(Some(0), Some(&s), 0, 15),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(check_tansu(Some(0), Some(&s), 0, 14), Ok(Verdict::Append));
        // A partition it never wrote to expects sequence 0.
        assert_eq!(check_tansu(Some(0), None, 0, 0), Ok(Verdict::Append));
        assert_eq!(
            check_tansu(Some(0), None, 0, 5),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
    }
}
