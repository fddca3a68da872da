//! The broker seam: everything delivery asks of Kafka, as a trait, so that the driver can run
//! against a model of Kafka's idempotence rules in tests (the `ProducerClient` seam of rskafka).
//! [`Cluster`] implements it over the wire client.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::protocol::StrBytes;

use super::verify::Found;
use kedge_wire::KafkaError;
use kedge_wire::batch::ProducerIdentity;
use kedge_wire::client::{Cluster, EARLIEST, TopicInfo, list_offset, read_tail};

/// One connection to a broker, as the link numbers them: a partition pipelines its batches on
/// one connection only.
pub type ConnId = u64;

/// How long a Fetch during a scan may wait for data the broker does not have yet (it only
/// happens when the scan starts at the log end).
const SCAN_WAIT: Duration = Duration::from_millis(100);

/// One batch of a Produce request.
#[derive(Debug, Clone)]
pub struct ProduceBatch {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The sealed batch's bytes.
    pub bytes: Bytes,
}

/// The broker's answer for one partition of a Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAnswer {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Kafka error code (0 when appended).
    pub error_code: i16,
    /// Where the batch landed, −1 when the answer does not say.
    pub base_offset: i64,
}

/// The answer to a Produce request already written: per partition, or the error that lost it.
pub type Answers = BoxFuture<'static, Result<Vec<PartitionAnswer>, KafkaError>>;

/// What a scan of a partition's tail read.
#[derive(Debug, Clone)]
pub struct ScanReport {
    /// This queue's records found.
    pub found: Found,
    /// It read everything below this offset (the high watermark when it began).
    pub end: i64,
    /// Part of the range was gone (retention, a replaced log): what was there is unknown.
    pub gap: bool,
    /// Bytes of record sets read.
    pub bytes: u64,
}

/// A scan already under way: it holds its own connection and runs beside delivery.
pub type Scan = BoxFuture<'static, Result<ScanReport, KafkaError>>;

/// What delivery needs of Kafka.
pub trait Link: Send {
    /// Topics known from the last metadata, with their partitions' leaders.
    fn topics(&self) -> &HashMap<String, TopicInfo>;

    /// The leader of a partition, if known.
    fn leader(&self, topic: &str, partition: i32) -> Option<i32>;

    /// The live connection to `node`, if there is one.
    fn connection(&self, node: i32) -> Option<ConnId>;

    /// Broker connections open.
    fn open_connections(&self) -> usize;

    /// Drops the connection to `node` after a failure; the next use reconnects.
    fn forget(&mut self, node: i32);

    /// Forgets the metadata of every topic not in `keep`.
    fn retain_topics(&mut self, keep: &BTreeSet<String>);

    /// Refreshes brokers and the leaders of `topics` (creating them where the broker's policy
    /// allows, as producers do).
    fn refresh_metadata(
        &mut self,
        topics: &[String],
    ) -> impl Future<Output = Result<(), KafkaError>> + Send;

    /// A new idempotent producer id (epoch 0).
    fn init_producer_id(
        &mut self,
    ) -> impl Future<Output = Result<ProducerIdentity, KafkaError>> + Send;

    /// Connects to `node` if needed; the connection the next request will go out on.
    fn connect(&mut self, node: i32) -> impl Future<Output = Result<ConnId, KafkaError>> + Send;

    /// Writes one Produce request (acks = all) on `node`'s connection `conn` and returns its
    /// answer to come. An error means the request was not written: nothing of it can land.
    fn produce(
        &mut self,
        node: i32,
        conn: ConnId,
        batches: Vec<ProduceBatch>,
        zstd: bool,
    ) -> impl Future<Output = Result<Answers, KafkaError>> + Send;

    /// The offset the next record appended to the partition gets.
    fn log_end(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> impl Future<Output = Result<i64, KafkaError>> + Send;

    /// Starts reading the partition from `from` (its earliest offset when `None`) to its high
    /// watermark, adding what it reads to `found`.
    fn scan(
        &mut self,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        found: Found,
    ) -> impl Future<Output = Result<Scan, KafkaError>> + Send;
}

/// The Produce `timeout_ms`: how long the leader may wait for its replicas. Shorter than the
/// client's own wait, so that a slow replication comes back as an answer (REQUEST_TIMED_OUT),
/// not as a lost response that costs the connection.
pub fn produce_timeout(request_timeout: Duration) -> Duration {
    request_timeout.saturating_sub(
        (request_timeout / 5)
            .max(Duration::from_millis(200))
            .min(request_timeout / 2),
    )
}

impl Link for Cluster {
    fn topics(&self) -> &HashMap<String, TopicInfo> {
        Cluster::topics(self)
    }

    fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        Cluster::leader(self, topic, partition)
    }

    fn connection(&self, node: i32) -> Option<ConnId> {
        self.connection_id(node)
    }

    fn open_connections(&self) -> usize {
        Cluster::open_connections(self)
    }

    fn forget(&mut self, node: i32) {
        self.drop_broker(node);
    }

    fn retain_topics(&mut self, keep: &BTreeSet<String>) {
        Cluster::retain_topics(self, keep);
    }

    async fn refresh_metadata(&mut self, topics: &[String]) -> Result<(), KafkaError> {
        Cluster::refresh_metadata(self, topics).await
    }

    async fn init_producer_id(&mut self) -> Result<ProducerIdentity, KafkaError> {
        Cluster::init_producer_id(self).await
    }

    async fn connect(&mut self, node: i32) -> Result<ConnId, KafkaError> {
        Ok(self.broker(node).await?.conn.id())
    }

    async fn produce(
        &mut self,
        node: i32,
        conn: ConnId,
        batches: Vec<ProduceBatch>,
        zstd: bool,
    ) -> Result<Answers, KafkaError> {
        let broker = self.broker(node).await?;
        if broker.conn.id() != conn {
            return Err(KafkaError::Disconnected {
                addr: broker.conn.addr().to_owned(),
            });
        }
        // zstd needs Produce v7; v13 identifies topics by id, which we do not fill in.
        let (min, needs) = if zstd {
            (7, "Kafka ≥ 2.1 is needed for zstd")
        } else {
            (3, "Kafka ≥ 0.11 is needed for idempotence")
        };
        let version =
            broker
                .version(ApiKey::Produce, min..=12)
                .ok_or_else(|| KafkaError::Protocol {
                    addr: broker.conn.addr().to_owned(),
                    reason: format!("the broker does not support Produce v{min}–v12 ({needs})"),
                })?;
        let timeout = self.request_timeout();
        let mut topics: std::collections::BTreeMap<String, Vec<PartitionProduceData>> =
            std::collections::BTreeMap::new();
        for b in batches {
            topics.entry(b.topic).or_default().push(
                PartitionProduceData::default()
                    .with_index(b.partition)
                    .with_records(Some(b.bytes)),
            );
        }
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(produce_timeout(timeout).as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(t)))
                            .with_partition_data(parts)
                    })
                    .collect(),
            );
        let pending = broker.conn.send(&request, version).await?;
        Ok(Box::pin(async move {
            let response = match tokio::time::timeout(timeout, pending.recv()).await {
                Ok(r) => r?,
                Err(_) => {
                    // The answer is lost; later answers on this connection would be out of
                    // step, so the connection goes.
                    broker.conn.close("produce request timed out");
                    return Err(KafkaError::Timeout {
                        addr: broker.conn.addr().to_owned(),
                    });
                }
            };
            Ok(response
                .responses
                .iter()
                .flat_map(|t| {
                    t.partition_responses.iter().map(|p| PartitionAnswer {
                        topic: t.name.0.to_string(),
                        partition: p.index,
                        error_code: p.error_code,
                        base_offset: p.base_offset,
                    })
                })
                .collect())
        }))
    }

    async fn log_end(&mut self, topic: &str, partition: i32) -> Result<i64, KafkaError> {
        self.latest_offset(topic, partition).await
    }

    async fn scan(
        &mut self,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        mut found: Found,
    ) -> Result<Scan, KafkaError> {
        let broker = self.leader_connection(topic, partition).await?;
        let timeout = self.request_timeout();
        let topic = topic.to_owned();
        Ok(Box::pin(async move {
            let from = match from {
                Some(f) => f,
                None => list_offset(&broker, &topic, partition, EARLIEST, timeout).await?,
            };
            let read = read_tail(
                &broker,
                &topic,
                partition,
                from,
                SCAN_WAIT,
                timeout,
                |records| found.add_fetched(records),
            )
            .await?;
            Ok(ScanReport {
                found,
                end: if read.end >= 0 { read.end } else { from },
                gap: read.gap,
                bytes: read.bytes,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_is_asked_to_answer_before_the_client_gives_up() {
        assert_eq!(
            produce_timeout(Duration::from_secs(30)),
            Duration::from_secs(24)
        );
        assert_eq!(
            produce_timeout(Duration::from_secs(1)),
            Duration::from_millis(800)
        );
        assert_eq!(
            produce_timeout(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(produce_timeout(Duration::ZERO), Duration::ZERO);
    }
}
