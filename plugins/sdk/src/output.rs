//! Constructors for what a plugin returns: outputs built from an event or from scratch, and
//! headers.

use crate::{Event, Header, Output};

impl Header {
    /// A header `name: value`.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl Output {
    /// A record with this value and nothing else: no headers, and topic, key and timestamp
    /// left to the host (the input's, see [`Output`]'s fields).
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Output {
            topic: None,
            key: None,
            value: value.into(),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// A copy of `event`: its key, value, headers and timestamp; the topic left to the host,
    /// which keeps the event's. Change what differs with the `with_*` methods.
    pub fn from_event(event: &Event) -> Self {
        Output {
            topic: None,
            key: event.key.clone(),
            value: event.value.clone(),
            headers: event.headers.clone(),
            timestamp_ms: Some(event.timestamp_ms),
        }
    }

    /// The same record with this value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = value.into();
        self
    }

    /// The same record, to this Kafka topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The same record with this partitioning key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same record with this timestamp, milliseconds since the Unix epoch.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// The same record with header `name` set to `value`: replacing every header of that name,
    /// or added at the end.
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        let value = value.into();
        match self.headers.iter().position(|h| h.name == name) {
            Some(i) => {
                self.headers[i].value = value;
                let mut n = 0;
                self.headers.retain(|h| {
                    n += usize::from(h.name == name);
                    h.name != name || n == 1
                });
            }
            None => self.headers.push(Header::new(name, value)),
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_from_an_event_keeps_all_but_what_is_changed() {
        let event = Event {
            key: Some(b"k".to_vec()),
            value: b"v".to_vec(),
            headers: vec![Header::new("unit", "F"), Header::new("site", "hall")],
            timestamp_ms: 7,
        };
        let out = Output::from_event(&event)
            .with_value("w")
            .with_header("unit", "C")
            .with_header("plugin", "units")
            .with_topic("lab");
        assert_eq!(
            out,
            Output {
                topic: Some("lab".into()),
                key: Some(b"k".to_vec()),
                value: b"w".to_vec(),
                headers: vec![
                    Header::new("unit", "C"),
                    Header::new("site", "hall"),
                    Header::new("plugin", "units"),
                ],
                timestamp_ms: Some(7),
            }
        );
        let bare = Output::new("x").with_key("k").with_timestamp_ms(1);
        assert_eq!(bare.headers, []);
        assert_eq!(
            (bare.key.as_deref(), bare.timestamp_ms),
            (Some(&b"k"[..]), Some(1))
        );
    }

    #[test]
    fn with_header_replaces_every_header_of_the_name() {
        let mut out = Output::new("x");
        out.headers = vec![
            Header::new("a", "1"),
            Header::new("b", "2"),
            Header::new("a", "3"),
        ];
        let out = out.with_header("a", "9");
        assert_eq!(out.headers, [Header::new("a", "9"), Header::new("b", "2")]);
    }
}
