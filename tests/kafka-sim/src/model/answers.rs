//! What the model's protocol operations and inspection methods return.

use bytes::Bytes;
use kafka_protocol::ResponseError;

/// A successful produce of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Where the batch is: new, or where the duplicate's original was appended.
    pub base_offset: i64,
    /// The log start offset, as the Produce response (v5+) reports it.
    pub log_start_offset: i64,
    /// Nothing was appended: the batch duplicates one of the producer's last 5 (Kafka dialect).
    pub duplicate: bool,
}

/// An offset ListOffsets found, with the timestamp it reports (−1 for earliest/latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAt {
    /// The offset.
    pub offset: i64,
    /// The record's timestamp, or −1.
    pub timestamp: i64,
}

/// A topic as Metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE in the response that auto-created it,
    /// or TOPIC_AUTHORIZATION_FAILED while DESCRIBE is denied.
    pub error: Option<ResponseError>,
    /// Number of partitions (0 with an error).
    pub partitions: i32,
}

/// One producer DescribeProducers reports for a partition (`UnifiedLog.activeProducers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch on the partition.
    pub producer_epoch: i16,
    /// Sequence of its last appended record.
    pub last_sequence: i32,
    /// Max timestamp of its last appended batch.
    pub last_timestamp: i64,
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp.
    pub timestamp: i64,
    /// Producer id of its batch (−1 for none).
    pub producer_id: i64,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its value.
    pub value: Option<Bytes>,
    /// Its headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}
