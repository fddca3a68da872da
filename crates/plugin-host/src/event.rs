//! An event as the source delivers it and the plugins see it, and MQTT topic-filter matching,
//! which both the plugins' `subjects` and the router use.

use bytes::Bytes;
use kedge_wire::record::Header;

/// An event as a source delivers it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Source subject: the MQTT topic.
    pub subject: String,
    /// Payload.
    pub payload: Bytes,
    /// Headers from the source (MQTT 5 user properties).
    pub headers: Vec<Header>,
    /// Receive time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Partitioning key a plugin set; otherwise the matching rule's `key_level` decides.
    pub key: Option<Bytes>,
    /// Kafka topic a plugin chose, bypassing the routing rules.
    pub topic: Option<String>,
}

impl Event {
    /// An event as a source delivers it: no key or topic chosen yet.
    pub fn new(subject: String, payload: Bytes, headers: Vec<Header>, timestamp_ms: i64) -> Self {
        Event {
            subject,
            payload,
            headers,
            timestamp_ms,
            key: None,
            topic: None,
        }
    }
}

/// MQTT topic filter matching (MQTT 5 §4.7): `+` matches one level, a trailing `#` matches the
/// parent level and everything below, and wildcards at the first level skip `$` topics.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
