//! `kedge audit`: an independent reader that checks what reached Kafka, by the `kedge-device`
//! and `kedge-seq` headers every kedge record carries.

pub mod analysis;

use std::time::Duration;

use crate::kafka::KafkaError;
use crate::kafka::batch;
use crate::kafka::client::{Cluster, ClusterSettings};
use analysis::{Auditor, Report};

/// How long the broker may wait for data on each Fetch (see [`Cluster::read_partition`]).
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// What to read.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Bootstrap address, `host:port`.
    pub bootstrap: String,
    /// Topics read together: a device's sequence spans every topic its kedge writes to.
    pub topics: Vec<String>,
    /// Only this device is judged when set.
    pub device: Option<String>,
    /// Offset to start every partition at; the earliest offset when `None`.
    pub from_offset: Option<i64>,
}

/// Why an audit could not be done.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The cluster could not be reached or answered with an error.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The topic is unknown to the cluster.
    #[error("topic {0} does not exist (or has no partitions)")]
    NoTopic(String),
}

/// Reads every partition of the topics up to their current end and judges what it found.
pub async fn audit(settings: &AuditSettings) -> Result<Report, AuditError> {
    let mut cluster = Cluster::new(ClusterSettings {
        bootstrap: vec![settings.bootstrap.clone()],
        client_id: "kedge-audit".into(),
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        tls: None,
        sasl: None,
    });
    cluster.describe_topics(&settings.topics).await?;
    let mut auditor = Auditor::new(settings.device.clone());
    for topic in &settings.topics {
        let partitions = cluster
            .topics()
            .get(topic)
            .map_or(0, |t| t.leaders.len() as i32);
        if partitions == 0 {
            return Err(AuditError::NoTopic(topic.clone()));
        }
        for partition in 0..partitions {
            let from = match settings.from_offset {
                Some(n) => n,
                None => cluster.earliest_offset(topic, partition).await?,
            };
            let mut floor = from;
            cluster
                .read_partition(topic, partition, from, FETCH_WAIT, |records| {
                    take(&mut auditor, partition, &mut floor, records)
                })
                .await?;
        }
    }
    Ok(auditor.finish())
}

/// Feeds one Fetch's complete batches to the auditor; the offset after the last one.
///
/// A Fetch returns whole batches, so the first may begin before the offset asked for: records
/// below `floor` were either not asked for or already counted, and are skipped.
fn take(
    auditor: &mut Auditor,
    partition: i32,
    floor: &mut i64,
    records: &[u8],
) -> Result<Option<i64>, batch::BatchError> {
    let mut next = None;
    for (last_offset, bytes) in batch::complete_batches(records)? {
        let base = batch::batch_info(&bytes)?
            .first()
            .map_or(0, |i| i.base_offset);
        for r in batch::decode_batch(&bytes)? {
            let offset = base + r.offset_delta;
            if offset < *floor {
                continue;
            }
            *floor = offset + 1;
            auditor.record(
                partition,
                offset,
                r.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())),
            );
        }
        next = Some(last_offset + 1);
    }
    Ok(next)
}
