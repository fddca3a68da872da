//! What the ingest stage counts: records journaled and routed, discards, and the journal's
//! commits and their latency.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use crate::telemetry::{Bounds, Discards, Histogram, lock};

/// Most distinct Kafka topics counted by name; plugins may route anywhere, and the metrics page
/// must not grow without bound.
pub const MAX_TOPIC_LABELS: usize = 100;
/// The label of the topics beyond [`MAX_TOPIC_LABELS`].
pub const OTHER_TOPICS: &str = "_other";

/// The ingest stage's counters.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Records committed to the journal.
    pub journaled: AtomicU64,
    /// Records journaled per Kafka topic.
    routed: Mutex<BTreeMap<String, u64>>,
    /// Records the plugins or the router sent to the dead-letter topic, or the full-queue policy
    /// dropped.
    pub discards: Discards,
    /// Journal commits (one write, one flush, one fdatasync each).
    pub commits: AtomicU64,
    /// Time of each durable journal commit (append + flush + fdatasync).
    pub commit_latency: Histogram<CommitBuckets>,
    /// Time of the fdatasync calls of each commit.
    pub fsync_latency: Histogram<CommitBuckets>,
}

impl IngestStats {
    /// Counts records journaled for their Kafka topics, given as (topic, records).
    pub fn routed<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut routed = lock(&self.routed);
        for (topic, n) in counts {
            if let Some(v) = routed.get_mut(topic) {
                *v += n;
            } else if routed.len() < MAX_TOPIC_LABELS {
                routed.insert(topic.to_owned(), n);
            } else {
                *routed.entry(OTHER_TOPICS.to_owned()).or_default() += n;
            }
        }
    }

    /// Records journaled per Kafka topic.
    pub fn routed_by_topic(&self) -> Vec<(String, u64)> {
        lock(&self.routed)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Journal commits and fsyncs: from a fast SSD to a worn SD card.
#[derive(Debug)]
pub struct CommitBuckets;

impl Bounds for CommitBuckets {
    const BOUNDS: &'static [f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_labels_are_bounded() {
        let stats = IngestStats::default();
        let names: Vec<String> = (0..MAX_TOPIC_LABELS + 5).map(|i| format!("t{i}")).collect();
        stats.routed(names.iter().map(|n| (n.as_str(), 1)));
        stats.routed([("t0", 2)]);
        let routed = stats.routed_by_topic();
        assert_eq!(routed.len(), MAX_TOPIC_LABELS + 1);
        assert!(routed.contains(&("t0".to_owned(), 3)));
        assert!(routed.contains(&(OTHER_TOPICS.to_owned(), 5)));
    }
}
