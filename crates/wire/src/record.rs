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

/// Most headers a record may carry: the journal chunk counts them in 16 bits.
pub const MAX_HEADERS: usize = u16::MAX as usize;
/// Longest header name, in bytes: the journal chunk gives names a 16-bit length.
pub const MAX_HEADER_NAME: usize = u16::MAX as usize;
/// Longest Kafka topic name Kafka accepts (its `Topic.MAX_NAME_LENGTH`), in bytes.
pub const MAX_TOPIC_LEN: usize = 249;
/// Latest timestamp a record may carry: 9999-12-31T23:59:59.999Z. With timestamps in
/// `0..=MAX_TIMESTAMP_MS` no two records of a batch are too far apart for its i64 deltas.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Why a record cannot be journaled and sent as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// Too many headers, or a header name too long: the headers cannot be kept.
    Headers(String),
    /// The topic name is longer than Kafka allows.
    Topic(String),
    /// The timestamp is negative (Kafka has no such time) or past year 9999.
    Timestamp(i64),
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Defect::Headers(why) | Defect::Topic(why) => f.write_str(why),
            Defect::Timestamp(t) => write!(
                f,
                "timestamp {t} ms is outside 0..={MAX_TIMESTAMP_MS} (1970 to year 9999)"
            ),
        }
    }
}

impl Record {
    /// Why this record cannot be stored in a journal chunk or a Kafka batch, if it cannot. A
    /// deterministic check: a record that fails it would fail every retry, so it is
    /// dead-lettered instead of retried.
    pub fn defect(&self) -> Option<Defect> {
        if self.headers.len() > MAX_HEADERS {
            return Some(Defect::Headers(format!(
                "{} headers, more than the {MAX_HEADERS} a record may carry",
                self.headers.len()
            )));
        }
        if let Some(h) = self.headers.iter().find(|h| h.name.len() > MAX_HEADER_NAME) {
            return Some(Defect::Headers(format!(
                "a header name of {} bytes, longer than {MAX_HEADER_NAME}",
                h.name.len()
            )));
        }
        if self.topic.len() > MAX_TOPIC_LEN {
            return Some(Defect::Topic(format!(
                "topic name of {} bytes, longer than Kafka's {MAX_TOPIC_LEN}",
                self.topic.len()
            )));
        }
        if !(0..=MAX_TIMESTAMP_MS).contains(&self.timestamp_ms) {
            return Some(Defect::Timestamp(self.timestamp_ms));
        }
        None
    }
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

/// Whether `c` may appear in a Kafka topic name; kedge holds its other names (device id, client
/// ids, plugin names) to the same rule so that they can become topic names and labels.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a name against the topic-name rule with at most `max` characters; `what` names it in
/// the error.
pub fn check_name(value: &str, max: usize, what: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    let len = value.chars().count();
    if len > max {
        return Err(format!(
            "{what} {value:?} is {len} characters long; at most {max} are allowed"
        ));
    }
    match value.chars().find(|&c| !is_name_char(c)) {
        Some(c) => Err(format!(
            "{what} {value:?} contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        )),
        None => Ok(()),
    }
}

/// Whether Kafka accepts `topic` as a topic name (its `Topic.validate`).
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic == "." || topic == ".." {
        return Err(format!("invalid Kafka topic name {topic:?}"));
    }
    check_name(topic, MAX_TOPIC_LEN, "Kafka topic name")
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

    fn record(headers: usize, name_len: usize, topic_len: usize, timestamp_ms: i64) -> Record {
        Record {
            topic: "t".repeat(topic_len),
            key: None,
            value: Bytes::from_static(b"v"),
            headers: (0..headers)
                .map(|i| Header {
                    name: if i == 0 {
                        "n".repeat(name_len)
                    } else {
                        String::new()
                    },
                    value: Bytes::new(),
                })
                .collect(),
            timestamp_ms,
        }
    }

    #[test]
    fn defects_name_what_cannot_be_stored() {
        let ok = [
            record(0, 0, 1, 0),
            record(
                MAX_HEADERS,
                MAX_HEADER_NAME,
                MAX_TOPIC_LEN,
                MAX_TIMESTAMP_MS,
            ),
        ];
        for r in ok {
            assert_eq!(r.defect(), None);
        }
        let bad = [
            (record(MAX_HEADERS + 1, 1, 1, 0), "65536 headers"),
            (
                record(1, MAX_HEADER_NAME + 1, 1, 0),
                "header name of 65536 bytes",
            ),
            (
                record(0, 0, MAX_TOPIC_LEN + 1, 0),
                "topic name of 250 bytes",
            ),
            (record(0, 0, 1, -1), "timestamp -1 ms"),
            (
                record(0, 0, 1, i64::MIN),
                "timestamp -9223372036854775808 ms",
            ),
            (
                record(0, 0, 1, MAX_TIMESTAMP_MS + 1),
                "outside 0..=253402300799999",
            ),
        ];
        for (r, want) in bad {
            let why = r.defect().expect("a defect").to_string();
            assert!(why.contains(want), "{why:?} lacks {want:?}");
        }
    }

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
