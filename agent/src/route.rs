//! Routing: MQTT topic filters to Kafka topics and keys (DESIGN.md §2, "router").

use bytes::Bytes;

use crate::record::{HEADER_ERROR, Header, Record};

/// One compiled routing rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// MQTT topic filter (`+` one level, `#` the rest).
    pub filter: String,
    /// Kafka topic for matching events.
    pub topic: String,
    /// 0-based MQTT topic level to use as the record key.
    pub key_level: Option<usize>,
}

/// Routes events by their MQTT topic; unroutable ones go to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<Rule>,
    default_topic: Option<String>,
    dead_letter_topic: String,
}

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
}

impl Router {
    /// A router with rules tried in order, then the default topic, then the dead-letter topic.
    pub fn new(rules: Vec<Rule>, default_topic: Option<String>, dead_letter_topic: String) -> Self {
        Router {
            rules,
            default_topic,
            dead_letter_topic,
        }
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Routes one event. Returns the record and whether it was dead-lettered.
    pub fn route(&self, event: Event) -> (Record, bool) {
        let Event {
            subject,
            payload,
            mut headers,
            timestamp_ms,
        } = event;
        let record = |topic: String, key: Option<Bytes>, headers: Vec<Header>| Record {
            topic,
            key,
            value: payload.clone(),
            headers,
            timestamp_ms,
        };
        for (i, rule) in self.rules.iter().enumerate() {
            if !topic_matches(&rule.filter, &subject) {
                continue;
            }
            let key = match rule.key_level {
                None => None,
                Some(level) => match subject.split('/').nth(level) {
                    Some(k) => Some(Bytes::copy_from_slice(k.as_bytes())),
                    None => {
                        headers.push(error_header(format!(
                            "routing rule {i} ({}) takes the key from topic level {level}, which MQTT topic {subject:?} does not have",
                            rule.filter
                        )));
                        return (record(self.dead_letter_topic.clone(), None, headers), true);
                    }
                },
            };
            return (record(rule.topic.clone(), key, headers), false);
        }
        match &self.default_topic {
            Some(t) => (record(t.clone(), None, headers), false),
            None => {
                headers.push(error_header(format!(
                    "no routing rule matches MQTT topic {subject:?} and no default topic is configured"
                )));
                (record(self.dead_letter_topic.clone(), None, headers), true)
            }
        }
    }
}

fn error_header(why: String) -> Header {
    Header {
        name: HEADER_ERROR.to_owned(),
        value: Bytes::from(why),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching_follows_mqtt() {
        let cases = [
            ("sensors/#", "sensors", true),
            ("sensors/#", "sensors/a/b", true),
            ("sensors/+/t", "sensors/a/t", true),
            ("sensors/+/t", "sensors/a/b/t", false),
            ("sensors/+", "sensors/", true),
            ("sensors/+", "sensors", false),
            ("#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(topic_matches(f, t), want, "{f} vs {t}");
        }
    }

    fn ev(subject: &str) -> Event {
        Event {
            subject: subject.into(),
            payload: Bytes::from_static(b"21.5"),
            headers: vec![],
            timestamp_ms: 7,
        }
    }

    fn router(default: Option<&str>) -> Router {
        Router::new(
            vec![
                Rule {
                    filter: "sensors/+/temperature".into(),
                    topic: "temperature".into(),
                    key_level: Some(1),
                },
                Rule {
                    filter: "sensors/#".into(),
                    topic: "deep".into(),
                    key_level: Some(3),
                },
            ],
            default.map(Into::into),
            "dlq".into(),
        )
    }

    #[test]
    fn first_matching_rule_routes_and_keys() {
        let (r, dead) = router(None).route(ev("sensors/dev-7/temperature"));
        assert!(!dead);
        assert_eq!(r.topic, "temperature");
        assert_eq!(r.key.as_deref(), Some(&b"dev-7"[..]));
        assert_eq!(r.value, Bytes::from_static(b"21.5"));
        assert_eq!(r.timestamp_ms, 7);
    }

    #[test]
    fn missing_key_level_and_no_route_dead_letter_with_reason() {
        let (r, dead) = router(Some("fallback")).route(ev("sensors/a/b"));
        assert!(dead);
        assert_eq!(r.topic, "dlq");
        let why = String::from_utf8(r.headers.last().unwrap().value.to_vec()).unwrap();
        assert!(why.contains("topic level 3"), "{why}");

        let (r, dead) = router(Some("fallback")).route(ev("other/x"));
        assert!(!dead);
        assert_eq!(r.topic, "fallback");
        assert_eq!(r.key, None);

        let (r, dead) = router(None).route(ev("other/x"));
        assert!(dead);
        assert_eq!(r.headers[0].name, HEADER_ERROR);
    }
}
