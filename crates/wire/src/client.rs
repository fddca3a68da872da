//! Cluster view: bootstrap, per-broker API version negotiation, metadata and producer ids.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, ProducerId, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::KafkaError;
use super::batch::{BatchError, ProducerIdentity};
use super::connection::{Connection, TlsSettings};
use super::errors::error_name;
use super::sasl::{self, SaslSettings};

/// Kafka error code UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Bootstrap addresses, `host:port`.
    pub bootstrap: Vec<String>,
    /// Client id sent with every request.
    pub client_id: String,
    /// Limit for establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Limit for one request's response.
    pub request_timeout: Duration,
    /// TLS for every broker connection, bootstrap and leaders alike.
    pub tls: Option<TlsSettings>,
    /// SASL authentication after ApiVersions on every connection.
    pub sasl: Option<SaslSettings>,
    /// Largest record batch expected in the topics read (kedge's `kafka.batch_max_bytes`):
    /// it bounds the responses accepted ([`max_response_bytes`]).
    pub max_batch_bytes: usize,
}

/// A connected broker with its negotiated API versions.
pub struct Broker {
    /// The connection.
    pub conn: Connection,
    versions: HashMap<i16, (i16, i16)>,
}

impl Broker {
    /// The highest version of `api` both sides support within `ours`, if any.
    pub fn version(&self, api: ApiKey, ours: RangeInclusive<i16>) -> Option<i16> {
        let (min, max) = *self.versions.get(&(api as i16))?;
        let hi = max.min(*ours.end());
        (hi >= min.max(*ours.start())).then_some(hi)
    }
}

/// Leader and partition count of a topic.
#[derive(Debug, Clone, Default)]
pub struct TopicInfo {
    /// Leader node of each partition (index = partition), −1 when unknown.
    pub leaders: Vec<i32>,
}

/// The client's view of the cluster.
pub struct Cluster {
    settings: ClusterSettings,
    addrs: HashMap<i32, String>,
    brokers: HashMap<i32, Arc<Broker>>,
    bootstrap: Option<Arc<Broker>>,
    topics: HashMap<String, TopicInfo>,
}

impl Cluster {
    /// A cluster view with no connections yet.
    pub fn new(settings: ClusterSettings) -> Self {
        Cluster {
            settings,
            addrs: HashMap::new(),
            brokers: HashMap::new(),
            bootstrap: None,
            topics: HashMap::new(),
        }
    }

    /// Request timeout from the settings.
    pub fn request_timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    /// Known topics and their leaders.
    pub fn topics(&self) -> &HashMap<String, TopicInfo> {
        &self.topics
    }

    /// Forgets the metadata of every topic not in `keep`.
    pub fn retain_topics(&mut self, keep: &std::collections::BTreeSet<String>) {
        self.topics.retain(|t, _| keep.contains(t));
    }

    /// The connected broker for `node`, connecting if needed.
    pub async fn broker(&mut self, node: i32) -> Result<Arc<Broker>, KafkaError> {
        if let Some(b) = self.brokers.get(&node) {
            if !b.conn.is_broken() {
                return Ok(b.clone());
            }
            self.brokers.remove(&node);
        }
        let addr = self
            .addrs
            .get(&node)
            .cloned()
            .ok_or_else(|| KafkaError::Protocol {
                addr: String::new(),
                reason: format!("broker {node} is not in the metadata"),
            })?;
        let b = Arc::new(self.connect(&addr).await?);
        self.brokers.insert(node, b.clone());
        Ok(b)
    }

    /// The id of the live connection to `node`, if there is one.
    pub fn connection_id(&self, node: i32) -> Option<u64> {
        self.brokers
            .get(&node)
            .filter(|b| !b.conn.is_broken())
            .map(|b| b.conn.id())
    }

    /// Broker connections open and not broken.
    pub fn open_connections(&self) -> usize {
        self.brokers
            .values()
            .filter(|b| !b.conn.is_broken())
            .count()
    }

    /// Forgets a broker's connection after a failure, so the next use reconnects.
    pub fn drop_broker(&mut self, node: i32) {
        if let Some(b) = self.brokers.remove(&node) {
            b.conn.close("dropped after a failure");
        }
    }

    /// Any usable broker: a connected one, else a known one, else a bootstrap address.
    async fn any_broker(&mut self) -> Result<Arc<Broker>, KafkaError> {
        if let Some(b) = self.brokers.values().find(|b| !b.conn.is_broken()) {
            return Ok(b.clone());
        }
        if let Some(b) = self.bootstrap.as_ref().filter(|b| !b.conn.is_broken()) {
            return Ok(b.clone());
        }
        let mut candidates: Vec<String> = self.addrs.values().cloned().collect();
        candidates.extend(self.settings.bootstrap.iter().cloned());
        let mut last = None;
        for addr in candidates {
            match self.connect(&addr).await {
                Ok(b) => {
                    let b = Arc::new(b);
                    self.bootstrap = Some(b.clone());
                    return Ok(b);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| KafkaError::Connect {
            addr: String::new(),
            reason: "no bootstrap address".into(),
        }))
    }

    async fn connect(&self, addr: &str) -> Result<Broker, KafkaError> {
        let conn = Connection::connect(
            addr,
            &self.settings.client_id,
            self.settings.connect_timeout,
            self.settings.tls.as_ref(),
        )
        .await?
        .with_write_timeout(self.settings.request_timeout)
        .with_max_response(max_response_bytes(self.settings.max_batch_bytes));
        let versions = negotiate(&conn, self.settings.request_timeout).await?;
        let broker = Broker { conn, versions };
        if let Some(credentials) = &self.settings.sasl {
            sasl::authenticate(
                &broker.conn,
                credentials,
                broker.version(ApiKey::SaslHandshake, 1..=1),
                broker.version(ApiKey::SaslAuthenticate, 0..=2),
                self.settings.request_timeout,
            )
            .await?;
        }
        Ok(broker)
    }

    /// Refreshes brokers and the leaders of `topics`.
    pub async fn refresh_metadata(&mut self, topics: &[String]) -> Result<(), KafkaError> {
        // Producers let the broker create topics when its policy allows, as the Java client does.
        self.metadata(topics, true).await.map(drop)
    }

    /// Refreshes brokers and the leaders of `topics` without ever creating a topic: readers
    /// such as `kedge audit` must not leave empty topics behind a typo. Returns the topics the
    /// cluster answered with an error for (not in [`Cluster::topics`]), with the error's name.
    pub async fn describe_topics(
        &mut self,
        topics: &[String],
    ) -> Result<Vec<(String, Cow<'static, str>)>, KafkaError> {
        self.metadata(topics, false).await
    }

    async fn metadata(
        &mut self,
        topics: &[String],
        create: bool,
    ) -> Result<Vec<(String, Cow<'static, str>)>, KafkaError> {
        let b = self.any_broker().await?;
        let version = b
            .version(ApiKey::Metadata, 1..=12)
            .ok_or_else(|| unsupported(&b, "Metadata v1+"))?;
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(create);
        let response = match b
            .conn
            .call(&request, version, self.settings.request_timeout)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.bootstrap = None;
                return Err(e);
            }
        };
        self.addrs = response
            .brokers
            .iter()
            .map(|br| (br.node_id.0, format!("{}:{}", br.host.as_str(), br.port)))
            .collect();
        // Connections to brokers whose address changed must not be reused.
        let addrs = &self.addrs;
        self.brokers
            .retain(|node, b| addrs.get(node).is_some_and(|a| a == b.conn.addr()));
        let mut refused = Vec::new();
        for t in response.topics {
            let Some(name) = t.name else { continue };
            let name = name.0.to_string();
            if t.error_code != 0 {
                let error = error_name(t.error_code);
                tracing::warn!(
                    topic = %name,
                    %error,
                    "Kafka has no usable metadata for the topic; its records wait in the queue"
                );
                self.topics.remove(&name);
                refused.push((name, error));
                continue;
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in &t.partitions {
                if let Some(slot) = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| leaders.get_mut(i))
                {
                    *slot = if p.error_code == 0 { p.leader_id.0 } else { -1 };
                }
            }
            self.topics.insert(name, TopicInfo { leaders });
        }
        Ok(refused)
    }

    /// Asks the cluster for a new idempotent producer id (epoch 0).
    pub async fn init_producer_id(&mut self) -> Result<ProducerIdentity, KafkaError> {
        let b = self.any_broker().await?;
        let version = b
            .version(ApiKey::InitProducerId, 0..=5)
            .ok_or_else(|| unsupported(&b, "InitProducerId (Kafka ≥ 0.11)"))?;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(i32::MAX)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let r = b
            .conn
            .call(&request, version, self.settings.request_timeout)
            .await?;
        answered(&b, "InitProducerId", r.error_code)?;
        Ok(ProducerIdentity {
            producer_id: r.producer_id.0,
            producer_epoch: r.producer_epoch,
        })
    }

    /// The leader of `topic`/`partition`, if known.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let l = *self
            .topics
            .get(topic)?
            .leaders
            .get(usize::try_from(partition).ok()?)?;
        (l >= 0).then_some(l)
    }
}

fn unsupported(b: &Broker, what: &str) -> KafkaError {
    KafkaError::Protocol {
        addr: b.conn.addr().to_owned(),
        reason: format!("the broker does not support {what}"),
    }
}

/// ApiVersions, newest first; a broker that does not know our version answers in v0 format with
/// UNSUPPORTED_VERSION and its own range, and we retry within it.
async fn negotiate(
    conn: &Connection,
    timeout: Duration,
) -> Result<HashMap<i16, (i16, i16)>, KafkaError> {
    let mut version = 3;
    for _ in 0..3 {
        let attempted = version;
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kedge"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let pending = conn.send(&request, version).await?;
        let mut frame = match tokio::time::timeout(timeout, pending.recv_raw()).await {
            Ok(f) => f?,
            Err(_) => {
                conn.close("ApiVersions timed out");
                return Err(KafkaError::Timeout {
                    addr: conn.addr().to_owned(),
                });
            }
        };
        // The ApiVersions response header is always v0: the correlation id alone.
        if frame.remaining() < 6 {
            return Err(KafkaError::Protocol {
                addr: conn.addr().to_owned(),
                reason: "short ApiVersions response".into(),
            });
        }
        frame.advance(4);
        let code = frame.clone().get_i16();
        if code == UNSUPPORTED_VERSION {
            // Kafka answers in v0 format with its own range; librdkafka's mock answers in a
            // shape of its own. Use the range when it reads as v0, else fall back to v0.
            let max = ApiVersionsResponse::decode(&mut frame.clone(), 0)
                .ok()
                .and_then(|r| {
                    r.api_keys
                        .iter()
                        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                        .map(|k| k.max_version)
                });
            match max {
                Some(max) if max < version => version = max,
                _ if version > 0 => version = 0,
                _ => {}
            }
            if version < attempted {
                continue;
            }
        }
        let r =
            ApiVersionsResponse::decode(&mut frame, version).map_err(|e| KafkaError::Protocol {
                addr: conn.addr().to_owned(),
                reason: format!("bad ApiVersions response: {e:#}"),
            })?;
        let versions: HashMap<i16, (i16, i16)> = r
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if code != 0 {
            return Err(KafkaError::Broker {
                addr: conn.addr().to_owned(),
                what: "ApiVersions",
                code,
            });
        }
        return Ok(versions);
    }
    Err(KafkaError::Protocol {
        addr: conn.addr().to_owned(),
        reason: "ApiVersions negotiation did not converge".into(),
    })
}

/// Kafka error code OFFSET_OUT_OF_RANGE: the offset is below the log start (retention).
const OFFSET_OUT_OF_RANGE: i16 = 1;
/// ListOffsets timestamp meaning "the earliest offset".
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp meaning "the log end offset".
const LATEST: i64 = -1;
/// Bytes per partition and Fetch during a tail scan.
const SCAN_FETCH_BYTES: i32 = 4 * 1024 * 1024;

/// Room in a response beyond its record set: a Fetch answer's own fields, and whole answers of
/// other kinds (Metadata for a few topics of a large cluster is the largest of them).
const RESPONSE_HEADROOM: usize = 1024 * 1024;

/// The largest response accepted from a broker, `max_batch_bytes` being the largest batch
/// expected in the log. A Fetch asks for [`SCAN_FETCH_BYTES`], but Kafka returns the first
/// batch whole even when it is larger, so the larger of the two plus [`RESPONSE_HEADROOM`]:
/// 5 MiB with kedge's default 1 MiB batches, far below the 256 MiB MemoryMax of the systemd
/// unit (cross/kedge.service) that a single response could fill before.
pub fn max_response_bytes(max_batch_bytes: usize) -> usize {
    (SCAN_FETCH_BYTES as usize).max(max_batch_bytes) + RESPONSE_HEADROOM
}

impl Cluster {
    /// The earliest offset of a partition, from its leader.
    pub async fn earliest_offset(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<i64, KafkaError> {
        let b = self.leader_broker(topic, partition).await?;
        list_offset(
            &b,
            topic,
            partition,
            EARLIEST,
            self.settings.request_timeout,
        )
        .await
    }

    /// The connected leader of `topic`/`partition`.
    async fn leader_broker(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Broker>, KafkaError> {
        let node = self
            .leader(topic, partition)
            .ok_or_else(|| no_leader(topic, partition))?;
        self.broker(node).await
    }

    /// Reads a partition from `from` up to its high watermark, handing each Fetch's record set
    /// to `take`, which returns the offset after the last complete entry it consumed (see
    /// [`read_tail`]; `kedge audit` reads with it).
    pub async fn read_partition(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        wait: Duration,
        take: impl FnMut(&Bytes) -> Result<Option<i64>, BatchError>,
    ) -> Result<TailRead, KafkaError> {
        let b = self.leader_broker(topic, partition).await?;
        read_tail(
            &b,
            topic,
            partition,
            from,
            wait,
            self.settings.request_timeout,
            take,
        )
        .await
    }

    /// The connected leader of `topic`/`partition`, for requests that outlive a borrow of the
    /// cluster (a scan running beside delivery).
    pub async fn leader_connection(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Broker>, KafkaError> {
        self.leader_broker(topic, partition).await
    }

    /// The offset the next record appended to `topic`/`partition` will get (its log end).
    pub async fn latest_offset(&mut self, topic: &str, partition: i32) -> Result<i64, KafkaError> {
        let b = self.leader_broker(topic, partition).await?;
        list_offset(&b, topic, partition, LATEST, self.settings.request_timeout).await
    }
}

/// What reading a partition's tail covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailRead {
    /// The high watermark when the read began: it read everything before it.
    pub end: i64,
    /// Part of the range asked for was gone: retention removed the start of the log, or the
    /// log was replaced (a recreated topic). What was there cannot be read any more.
    pub gap: bool,
    /// Bytes of record sets read.
    pub bytes: u64,
}

/// How long an empty or throttled Fetch below the high watermark is retried before the read
/// fails: an empty answer there is no proof that nothing follows.
const EMPTY_FETCHES: u32 = 20;

/// Reads `topic`/`partition` on `b` from `from` up to the high watermark its first answer
/// reports, handing each Fetch's record set to `take`, which returns the offset after the last
/// complete entry it consumed.
///
/// Each Fetch asks for at least one byte and lets the broker wait up to `wait` for it: tansu
/// answers a Fetch that asks for zero bytes with no data at all, so a reader that must see
/// everything asks for one. An answer without records below the high watermark (a throttled
/// one, or a broker quirk) is retried, never taken as the end. A start below the log start
/// (retention) continues from the log start and reports the gap; a log that ends before
/// `from` (replaced, truncated) is read from its start, also reported.
pub async fn read_tail(
    b: &Broker,
    topic: &str,
    partition: i32,
    mut from: i64,
    wait: Duration,
    timeout: Duration,
    mut take: impl FnMut(&Bytes) -> Result<Option<i64>, BatchError>,
) -> Result<TailRead, KafkaError> {
    // v4 brings isolation levels, v10 zstd. v12 and later are "flexible" versions with tagged
    // fields, and tansu's persistent engine answers v12 with a tag that only v16 defines
    // (kafka-protocol refuses it: "Tag 0 is not valid for version 12"): nothing in them is
    // needed here.
    let version = b
        .version(ApiKey::Fetch, 4..=11)
        .ok_or_else(|| unsupported(b, "Fetch v4+"))?;
    let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    let mut read = TailRead {
        end: -1,
        gap: false,
        bytes: 0,
    };
    let mut rescanned = false;
    let mut empty = 0u32;
    loop {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(SCAN_FETCH_BYTES)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(from)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(SCAN_FETCH_BYTES),
                    ]),
            ]);
        let r = b.conn.call(&request, version, timeout).await?;
        answered(b, "Fetch", r.error_code)?;
        let partition_answer = r.responses.first().and_then(|t| t.partitions.first());
        if r.throttle_time_ms > 0 && partition_answer.is_none_or(|p| p.records.is_none()) {
            // Kafka answers a throttled Fetch with no partitions at all: wait as told and ask
            // again. An answer without data is never the end of the log.
            empty += 1;
            if empty > EMPTY_FETCHES {
                return Err(protocol(
                    b,
                    &format!("{EMPTY_FETCHES} Fetch answers in a row were throttled"),
                ));
            }
            let throttle = u64::try_from(r.throttle_time_ms).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(throttle).min(timeout)).await;
            continue;
        }
        let Some(p) = partition_answer else {
            // tansu leaves out a partition whose log ends before `from` (a replaced or
            // truncated log, where Kafka says OFFSET_OUT_OF_RANGE): read it from its start.
            if rescanned {
                return Ok(read);
            }
            rescanned = true;
            read.gap = true;
            from = list_offset(b, topic, partition, EARLIEST, timeout).await?;
            continue;
        };
        if p.error_code == OFFSET_OUT_OF_RANGE && !rescanned {
            // Retention removed the start of the range, or the log was replaced (a recreated
            // topic) or truncated: read on from its start. Kafka leaves the log start out of
            // this answer (−1), so it is asked for.
            rescanned = true;
            read.gap = true;
            from = list_offset(b, topic, partition, EARLIEST, timeout).await?;
            continue;
        }
        answered(b, "Fetch", p.error_code)?;
        if read.end < 0 {
            read.end = p.high_watermark;
        }
        if from >= read.end {
            return Ok(read);
        }
        // The record set is a slice of the response frame, handed on without a copy.
        let records = p.records.clone().unwrap_or_default();
        read.bytes += records.len() as u64;
        let next = take(&records)
            .map_err(|e| protocol(b, &format!("unreadable batch at offset {from}: {e}")))?;
        match next {
            Some(n) if n > from => {
                empty = 0;
                from = n;
            }
            _ => {
                // Nothing usable below the high watermark: a throttled answer, or a broker
                // quirk. Wait as told, then ask again; never take it for the end.
                empty += 1;
                if empty > EMPTY_FETCHES {
                    return Err(protocol(
                        b,
                        &format!(
                            "{EMPTY_FETCHES} Fetch answers at offset {from} held no records \
                             below the high watermark {}",
                            read.end
                        ),
                    ));
                }
                let throttle = u64::try_from(r.throttle_time_ms).unwrap_or(0);
                let pause = Duration::from_millis(throttle.max(10)).min(timeout);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The offset of `topic`/`partition` at `timestamp` (or [`EARLIEST`], [`LATEST`]), from `b`.
pub async fn list_offset(
    b: &Broker,
    topic: &str,
    partition: i32,
    timestamp: i64,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    let version = b
        .version(ApiKey::ListOffsets, 1..=7)
        .ok_or_else(|| unsupported(b, "ListOffsets v1+"))?;
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let r = b.conn.call(&request, version, timeout).await?;
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| protocol(b, "ListOffsets response without the partition"))?;
    answered(b, "ListOffsets", p.error_code)?;
    Ok(p.offset)
}

/// An error for a non-zero Kafka error code in `what`'s response.
fn answered(b: &Broker, what: &'static str, code: i16) -> Result<(), KafkaError> {
    if code == 0 {
        return Ok(());
    }
    Err(KafkaError::Broker {
        addr: b.conn.addr().to_owned(),
        what,
        code,
    })
}

fn no_leader(topic: &str, partition: i32) -> KafkaError {
    KafkaError::Protocol {
        addr: String::new(),
        reason: format!("no known leader for {topic}/{partition}"),
    }
}

fn protocol(b: &Broker, reason: &str) -> KafkaError {
    KafkaError::Protocol {
        addr: b.conn.addr().to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::negotiate;
    use crate::connection::Connection;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn responses_are_bounded_by_the_fetch_size_or_the_largest_batch() {
        use super::max_response_bytes;
        assert_eq!(max_response_bytes(1 << 20), 5 << 20);
        assert_eq!(max_response_bytes(64 << 20), 65 << 20);
    }

    /// The ApiVersions v3 body a hostile or spoofed broker sent: error code 0, then an api_keys
    /// compact array whose varint length claims 2^31 entries, and nothing after it.
    const HOSTILE_API_VERSIONS: [u8; 7] = [0, 0, 0x80, 0x80, 0x80, 0x80, 0x08];

    /// kafka-protocol 0.18.0 reserved the claimed 2^31 - 1 entries (64 bytes each) before
    /// reading one: "memory allocation of 137438953408 bytes failed" aborted kedge, before any
    /// authentication. Now it is a protocol error like any other malformed answer.
    #[tokio::test]
    async fn an_api_versions_answer_claiming_two_billion_entries_is_an_error() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let len = server.read_i32().await.unwrap();
            let mut request = vec![0; usize::try_from(len).unwrap()];
            server.read_exact(&mut request).await.unwrap();
            // Request header: api key (2), api version (2), correlation id (4).
            let correlation = &request[4..8];
            let mut frame = Vec::new();
            frame.extend_from_slice(&(4 + HOSTILE_API_VERSIONS.len() as i32).to_be_bytes());
            frame.extend_from_slice(correlation);
            frame.extend_from_slice(&HOSTILE_API_VERSIONS);
            server.write_all(&frame).await.unwrap();
            // Hold the connection open: the client must fail on the bytes, not on a close.
            let _ = server.read_i32().await;
        });
        let conn = Connection::over("hostile:9092", "kedge-test", Box::new(client));
        let e = negotiate(&conn, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Kafka broker hostile:9092: bad ApiVersions response"),
            "{e}"
        );
    }
}
