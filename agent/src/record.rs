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
/// Header naming the queue incarnation that numbered a record (16 hex digits, drawn when the
/// queue was created): a fresh or quarantined queue numbers `kedge-seq` from 0 again, and
/// devices may share an id, so only the three headers together name one record.
pub const HEADER_QUEUE: &str = "kedge-queue";
/// Header carrying the record's per-device sequence number, in decimal ASCII.
pub const HEADER_SEQ: &str = "kedge-seq";
/// Header on records Kafka refused, naming the topic they were meant for.
pub const HEADER_TOPIC: &str = "kedge-topic";
/// Header on dead-lettered records saying why they were dead-lettered.
pub const HEADER_ERROR: &str = "kedge-error";

/// Where records come from: the device and the incarnation of its queue.
///
/// `kedge-seq` alone does not name a record for good: a queue created afresh (a new data
/// directory, or one set aside after damage) numbers from 0 again, and a fleet left with the
/// default device id (the hostname) shares one `kedge-device`. The queue id, drawn at random
/// when the queue is created, tells them apart; kedge's verify step and `kedge audit` match on
/// all three.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The device id (`kedge-device`).
    pub device: String,
    /// The queue incarnation (`kedge-queue`).
    pub queue: u64,
}

impl Origin {
    /// The `kedge-queue` header value: 16 lowercase hex digits.
    pub fn queue_header(&self) -> String {
        format_queue_id(self.queue)
    }
}

/// A queue id as the `kedge-queue` header writes it.
pub fn format_queue_id(queue: u64) -> String {
    format!("{queue:016x}")
}

/// A `kedge-queue` header value read back, if well formed.
pub fn parse_queue_id(value: &[u8]) -> Option<u64> {
    if value.len() != 16 || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_round_trip_and_reject_other_forms() {
        for id in [0, 1, 0xdead_beef, u64::MAX] {
            let text = format_queue_id(id);
            assert_eq!(text.len(), 16);
            assert_eq!(parse_queue_id(text.as_bytes()), Some(id));
        }
        for bad in [
            "",
            "0",
            "+000000000000001",
            "000000000000000g",
            "00000000000000001",
        ] {
            assert_eq!(parse_queue_id(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
