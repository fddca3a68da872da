//! Fetch: whole batches from the model within Kafka's byte limits, the delayed answer while
//! fewer than `min_bytes` are there, and the answer to a throttled client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use super::Shared;
use crate::model::Cluster;

/// How often a waiting Fetch looks for new data (the model has no notifications).
const POLL: Duration = Duration::from_millis(5);

/// Answers a Fetch (v4–v12, topics by name, no sessions: session id 0 means "none created").
///
/// Kafka (`ReplicaManager.fetchMessages`) answers at once when `max_wait_ms` is 0, when at
/// least `min_bytes` were read or when a partition has an error; otherwise when data arrives
/// or the wait ends. A throttled client gets no partitions at all, only `throttle_time_ms`
/// (`FetchContext.getThrottledResponse`).
pub(crate) async fn fetch(req: &FetchRequest, shared: &Shared) -> FetchResponse {
    if let Some(throttle_ms) = shared.faults.take_fetch_throttle() {
        return FetchResponse::default().with_throttle_time_ms(throttle_ms);
    }
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    loop {
        let read = read(req, &shared.model());
        if read.bytes >= min_bytes || read.errors || Instant::now() >= deadline {
            return FetchResponse::default().with_responses(read.topics);
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Read {
    topics: Vec<FetchableTopicResponse>,
    bytes: usize,
    errors: bool,
}

/// One pass over the requested partitions (`ReplicaManager.readFromLog`): each gets at most its
/// `partition_max_bytes` and what is left of `max_bytes`; until a partition returned data the
/// first batch may exceed both (`minOneMessage`).
fn read(req: &FetchRequest, model: &Cluster) -> Read {
    let mut left = usize::try_from(req.max_bytes).unwrap_or(0);
    let mut min_one = true;
    let mut bytes = 0;
    let mut errors = false;
    let aborted = (req.isolation_level == 1).then(Vec::new);
    let topics = req
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let limit = usize::try_from(p.partition_max_bytes)
                        .unwrap_or(0)
                        .min(left);
                    let data = PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_aborted_transactions(aborted.clone());
                    match model.fetch(&topic.topic.0, p.partition, p.fetch_offset, limit, min_one) {
                        Ok(f) => {
                            let n = f.records.len();
                            if n > 0 {
                                min_one = false;
                            }
                            left = left.saturating_sub(n);
                            bytes += n;
                            data.with_high_watermark(f.high_watermark)
                                .with_last_stable_offset(f.high_watermark)
                                .with_log_start_offset(f.log_start_offset)
                                .with_records(Some(f.records))
                        }
                        Err(e) => {
                            errors = true;
                            // `ReplicaManager.createLogReadResult(e)`: offsets unknown, even
                            // for OFFSET_OUT_OF_RANGE.
                            data.with_error_code(e.code())
                                .with_high_watermark(-1)
                                .with_last_stable_offset(-1)
                                .with_log_start_offset(-1)
                                .with_records(Some(Bytes::new()))
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    Read {
        topics,
        bytes,
        errors,
    }
}
