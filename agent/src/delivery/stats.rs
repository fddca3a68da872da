//! What the delivery stage counts: sealing, sending and Kafka's answers, the verify step, the
//! state of the link to Kafka, and the latency from receipt to acknowledgement.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::telemetry::{Bounds, Discards, Histogram, lock};

/// The delivery stage's counters.
#[derive(Debug, Default)]
pub struct DeliveryStats {
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
    /// Records sent to the dead-letter topic because Kafka refused them or lacks their topic,
    /// and records even the dead-letter topic refused (dropped).
    pub discards: Discards,
    /// Produce failures by Kafka error name, or `network` for a request that got no answer.
    produce_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// The verify step.
    pub verify: VerifyStats,
    /// The delivery stage's view of Kafka.
    pub kafka: KafkaLink,
    /// Per record, from its timestamp (the time kedge received it, unless a plugin set
    /// another) to Kafka's acknowledgement.
    pub delivery_latency: Histogram<DeliveryBuckets>,
}

impl DeliveryStats {
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

    /// One line for the log: the delivery part of [`crate::telemetry::Stats::summary`].
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "sealed={} delivered={} batches_delivered={} duplicates_detected={} retries={}",
            g(&self.sealed),
            g(&self.delivered),
            g(&self.batches_delivered),
            g(&self.duplicates_detected),
            g(&self.retries),
        )
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
