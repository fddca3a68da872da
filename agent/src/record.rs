//! The record as it travels through kedge, from the source to a Kafka batch.

use bytes::Bytes;

/// One header of a record; names are UTF-8, values arbitrary bytes (as in Kafka).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: Bytes,
}

/// A routed record: everything Kafka will store for one event, except kedge's own headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Destination Kafka topic.
    pub topic: String,
    /// Partitioning key; `None` means sticky placement.
    pub key: Option<Bytes>,
    /// Payload, byte for byte as received.
    pub value: Bytes,
    /// Headers from the source (e.g. MQTT user properties) and from routing (e.g. dead-letter reason).
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch when kedge received the event.
    pub timestamp_ms: i64,
}

/// A record with the per-device monotonic sequence number the journal gave it (`kedge-seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencedRecord {
    /// Per-device sequence number, assigned once at journal commit and never reused.
    pub seq: u64,
    /// The record itself.
    pub record: Record,
}

/// Header naming the device that produced a record.
pub const HEADER_DEVICE: &str = "kedge-device";
/// Header carrying the record's per-device sequence number, in decimal ASCII.
pub const HEADER_SEQ: &str = "kedge-seq";
/// Header on records Kafka refused, naming the topic they were meant for.
pub const HEADER_TOPIC: &str = "kedge-topic";
/// Header on dead-lettered records saying why they were dead-lettered.
pub const HEADER_ERROR: &str = "kedge-error";
