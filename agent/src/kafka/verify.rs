//! Verify before resend (DESIGN.md §3): after a restart, a lost response or a broken
//! connection, find out which unacknowledged batches the broker already holds before sending
//! any of them again.
//!
//! kedge scans the partition's tail from the last offset it saw acknowledged (or from the
//! earliest offset when it never saw one) and matches its batches two ways: by producer id,
//! epoch and base sequence in the batch headers, and by the `kedge-device`/`kedge-seq` record
//! headers for brokers that re-batch what they store. A match on either proves the batch landed
//! (batches are appended atomically). Only batches proven absent are resent. Each batch is
//! judged on its own: a later batch in the log proves nothing about an earlier one on a broker
//! that does not check sequences (or has lost its state for the producer).

use std::collections::HashSet;

use bytes::Bytes;

use super::batch::{self, ProducerIdentity};
use super::sequence;
use crate::queue::outbox::SealedBatch;
use crate::record::{HEADER_DEVICE, HEADER_SEQ};

/// What a tail scan found of this device's records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// (producer id, epoch, base sequence) of every idempotent batch seen.
    pub batches: HashSet<(i64, i16, i32)>,
    /// `kedge-seq` of every record of this device seen.
    pub seqs: HashSet<u64>,
}

impl Found {
    /// Adds the complete batches of one Fetch response's record set; returns the offset after
    /// the last complete batch, if any.
    pub fn add_fetched(
        &mut self,
        records: &[u8],
        device: &str,
    ) -> Result<Option<i64>, batch::BatchError> {
        let mut next = None;
        for (last_offset, bytes) in batch::complete_batches(records)? {
            self.add_batch(&bytes, device)?;
            next = Some(last_offset + 1);
        }
        Ok(next)
    }

    fn add_batch(&mut self, bytes: &Bytes, device: &str) -> Result<(), batch::BatchError> {
        for info in batch::batch_info(bytes)? {
            if info.producer_id >= 0 {
                self.batches
                    .insert((info.producer_id, info.producer_epoch, info.base_sequence));
            }
        }
        // Records are decoded only for their headers; control batches and other producers'
        // records simply carry no kedge-seq for this device.
        for r in batch::decode_batch(bytes)? {
            let mine = r
                .headers
                .iter()
                .any(|(n, v)| n == HEADER_DEVICE && v.as_ref() == device.as_bytes());
            if !mine {
                continue;
            }
            if let Some(seq) = r
                .headers
                .iter()
                .find(|(n, _)| n == HEADER_SEQ)
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            {
                self.seqs.insert(seq);
            }
        }
        Ok(())
    }

    /// Whether `b` is proven to be in the log.
    pub fn holds(&self, b: &SealedBatch) -> bool {
        let ProducerIdentity {
            producer_id,
            producer_epoch,
        } = b.producer;
        self.batches
            .contains(&(producer_id, producer_epoch, b.base_sequence))
            || self.seqs.contains(&b.first_seq)
            || self.seqs.contains(&b.last_seq)
    }
}

/// What a partition leader holds for one producer (DescribeProducers, Kafka ≥ 2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the last record appended for the producer, −1 when none.
    pub last_sequence: i32,
}

/// Whether each batch is in the log, from the leader's producer states: the leader appends a
/// producer's sequences in order, so a batch landed exactly when its last sequence is at or
/// before the producer's last one. `None` when the leader holds no state for some batch's
/// producer and epoch (expired, lost, or never seen): then only a tail scan can tell.
pub fn landed_by_state(batches: &[&SealedBatch], states: &[ProducerState]) -> Option<Vec<bool>> {
    batches
        .iter()
        .map(|b| {
            let s = states.iter().find(|s| {
                s.producer_id == b.producer.producer_id
                    && s.producer_epoch == b.producer.producer_epoch
            })?;
            Some(
                s.last_sequence >= 0
                    && sequence::covers(s.last_sequence, b.base_sequence, b.record_count),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::batch::{BatchCompression, encode_batch};
    use crate::record::{Record, SequencedRecord};

    const P: ProducerIdentity = ProducerIdentity {
        producer_id: 7,
        producer_epoch: 0,
    };

    fn sealed(no: u64, base: i32, first_seq: u64, n: u64) -> SealedBatch {
        let recs: Vec<SequencedRecord> = (first_seq..first_seq + n)
            .map(|seq| SequencedRecord {
                seq,
                record: Record {
                    topic: "t".into(),
                    key: None,
                    value: Bytes::from(format!("v{seq}")),
                    headers: vec![],
                    timestamp_ms: 1,
                },
            })
            .collect();
        SealedBatch {
            batch_no: no,
            topic: "t".into(),
            partition: 0,
            producer: P,
            base_sequence: base,
            record_count: n as i32,
            first_seq,
            last_seq: first_seq + n - 1,
            bytes: encode_batch(P, base, "dev", &recs, BatchCompression::Zstd).unwrap(),
        }
    }

    /// A log as a broker returns it: batches back to back with offsets assigned.
    fn log_of(batches: &[&SealedBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = 0i64;
        for b in batches {
            let mut bytes = b.bytes.to_vec();
            bytes[..8].copy_from_slice(&offset.to_be_bytes());
            offset += i64::from(b.record_count);
            out.extend_from_slice(&bytes);
        }
        out
    }

    #[test]
    fn a_scan_finds_batches_by_sequence_and_by_kedge_seq() {
        let (a, b, c) = (
            sealed(1, 0, 100, 3),
            sealed(2, 3, 103, 2),
            sealed(3, 5, 105, 4),
        );
        let mut found = Found::default();
        let next = found.add_fetched(&log_of(&[&a, &b]), "dev").unwrap();
        assert_eq!(next, Some(5));
        assert!(found.holds(&a) && found.holds(&b) && !found.holds(&c));

        // A re-batching broker loses our batch headers but keeps the record headers.
        let mut by_headers = Found::default();
        by_headers.seqs.extend([103, 104]);
        assert!(!by_headers.holds(&a) && by_headers.holds(&b) && !by_headers.holds(&c));

        // Another device's records prove nothing about ours.
        let mut other = Found::default();
        other.add_fetched(&log_of(&[&a]), "someone-else").unwrap();
        other.batches.clear();
        assert!(!other.holds(&a));
    }

    #[test]
    fn verdicts_for_a_table_of_logs() {
        let (a, b, c) = (sealed(1, 0, 0, 1), sealed(2, 1, 1, 1), sealed(3, 2, 2, 1));
        let cases: [(&[&SealedBatch], [bool; 3]); 5] = [
            (&[], [false, false, false]),
            (&[&a], [true, false, false]),
            (&[&a, &b], [true, true, false]),
            (&[&a, &b, &c], [true, true, true]),
            // b alone (a broker without sequence checks took b although a failed): a is resent.
            (&[&b], [false, true, false]),
        ];
        for (log, want) in cases {
            let mut found = Found::default();
            found.add_fetched(&log_of(log), "dev").unwrap();
            let got = [found.holds(&a), found.holds(&b), found.holds(&c)];
            assert_eq!(got, want, "log of {} batches", log.len());
        }
    }

    #[test]
    fn producer_states_decide_per_batch_or_defer_to_a_scan() {
        // Batches of 1 record at sequences 0, 1, 2.
        let (a, b, c) = (sealed(1, 0, 0, 1), sealed(2, 1, 1, 1), sealed(3, 2, 2, 1));
        let batches = [&a, &b, &c];
        let state = |last| ProducerState {
            producer_id: P.producer_id,
            producer_epoch: P.producer_epoch,
            last_sequence: last,
        };
        let cases: [(Vec<ProducerState>, Option<[bool; 3]>); 6] = [
            (vec![state(-1)], Some([false, false, false])),
            (vec![state(0)], Some([true, false, false])),
            (vec![state(1)], Some([true, true, false])),
            (vec![state(2)], Some([true, true, true])),
            // Unknown producer (expired or lost state): only a scan can tell.
            (vec![], None),
            // Same id, other epoch: not ours to judge by.
            (
                vec![ProducerState {
                    producer_epoch: 1,
                    ..state(2)
                }],
                None,
            ),
        ];
        for (states, want) in cases {
            let got = landed_by_state(&batches, &states);
            assert_eq!(got, want.map(Vec::from), "states {states:?}");
        }
        // Across the int32 wrap: a batch at i32::MAX is covered by a later last sequence of 3.
        let wrapped = sealed(4, i32::MAX, 10, 1);
        assert_eq!(landed_by_state(&[&wrapped], &[state(3)]), Some(vec![true]));
    }

    #[test]
    fn a_partial_trailing_batch_is_left_for_the_next_fetch() {
        let (a, b) = (sealed(1, 0, 0, 2), sealed(2, 2, 2, 2));
        let log = log_of(&[&a, &b]);
        let cut = &log[..log.len() - 5];
        let mut found = Found::default();
        assert_eq!(found.add_fetched(cut, "dev").unwrap(), Some(2));
        assert!(found.holds(&a) && !found.holds(&b));
        assert_eq!(
            Found::default().add_fetched(&log[..10], "dev").unwrap(),
            None
        );
    }
}
