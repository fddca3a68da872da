//! Routing: MQTT topic filters to Kafka topics and keys (ARCHITECTURE.md §2, "router").

use bytes::Bytes;

use crate::telemetry::DeadLetter;
pub use kedge_plugin_host::event::{Event, topic_matches};
use kedge_wire::record::{Defect, HEADER_ERROR, Header, MAX_HEADER_NAME, MAX_TIMESTAMP_MS, Record};
use serde::Deserialize;

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

    /// The Kafka topic the rules pick for MQTT topic `subject`, if any.
    pub fn topic_for(&self, subject: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| topic_matches(&r.filter, subject))
            .map(|r| r.topic.as_str())
            .or(self.default_topic.as_deref())
    }

    /// Routes one event. Returns the record and why it was dead-lettered, if it was.
    ///
    /// A record that cannot be stored as it is ([`Record::defect`]) goes to the dead-letter
    /// topic with the reason, stripped of what makes it unstorable (its headers, or its
    /// timestamp, replaced by `now_ms`): retrying it could never succeed, and it must not hold
    /// up the records behind it.
    pub fn route(&self, event: Event, now_ms: i64) -> (Record, Option<DeadLetter>) {
        let (mut record, dead) = self.route_by_rules(event);
        let Some(defect) = record.defect() else {
            return (record, dead);
        };
        // A record may have several defects; `defect` names the first, and each is cured.
        if matches!(defect, Defect::Headers(_))
            || record
                .headers
                .iter()
                .any(|h| h.name.len() > MAX_HEADER_NAME)
        {
            record.headers.clear();
        }
        if !(0..=MAX_TIMESTAMP_MS).contains(&record.timestamp_ms) {
            record.timestamp_ms = now_ms;
        }
        record.headers.push(error_header(format!(
            "kedge cannot store this record as it is: {defect}"
        )));
        if record.headers.len() > kedge_wire::record::MAX_HEADERS {
            // Only the reason then: it is what the reader of the dead-letter topic needs.
            record.headers.drain(..record.headers.len() - 1);
        }
        record.topic = self.dead_letter_topic.clone();
        (record, Some(DeadLetter::Unencodable))
    }

    fn route_by_rules(&self, event: Event) -> (Record, Option<DeadLetter>) {
        let Event {
            subject,
            payload,
            mut headers,
            timestamp_ms,
            key: chosen_key,
            topic: chosen_topic,
        } = event;
        let record = |topic: String, key: Option<Bytes>, headers: Vec<Header>| Record {
            topic,
            key,
            value: payload.clone(),
            headers,
            timestamp_ms,
        };
        if let Some(topic) = chosen_topic {
            let dead = (topic == self.dead_letter_topic).then_some(DeadLetter::Plugin);
            return (record(topic, chosen_key, headers), dead);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !topic_matches(&rule.filter, &subject) {
                continue;
            }
            let key = match (chosen_key.clone(), rule.key_level) {
                (Some(key), _) => Some(key),
                (None, None) => None,
                (None, Some(level)) => match subject.split('/').nth(level) {
                    Some(k) => Some(Bytes::copy_from_slice(k.as_bytes())),
                    None => {
                        headers.push(error_header(format!(
                            "routing rule {i} ({}) takes the key from topic level {level}, which MQTT topic {subject:?} does not have",
                            rule.filter
                        )));
                        return (
                            record(self.dead_letter_topic.clone(), None, headers),
                            Some(DeadLetter::Unroutable),
                        );
                    }
                },
            };
            return (record(rule.topic.clone(), key, headers), None);
        }
        match &self.default_topic {
            Some(t) => (record(t.clone(), chosen_key, headers), None),
            None => {
                headers.push(error_header(format!(
                    "no routing rule matches MQTT topic {subject:?} and no default topic is configured"
                )));
                (
                    record(self.dead_letter_topic.clone(), None, headers),
                    Some(DeadLetter::Unroutable),
                )
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

/// `[routing]`: which Kafka topic each MQTT topic goes to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Topic for records no rule matches; `None` sends them to the dead-letter topic.
    pub default_topic: Option<String>,
    /// Topic for records that cannot be routed.
    pub dead_letter_topic: String,
    /// Routing rules, `[[routing.rules]]`.
    pub rules: Vec<RouteRule>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default_topic: None,
            dead_letter_topic: "kedge-dead-letter".to_owned(),
            rules: Vec::new(),
        }
    }
}

/// One `[[routing.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// MQTT topic filter this rule matches.
    pub filter: String,
    /// Kafka topic matching records go to.
    pub topic: String,
    /// 0-based MQTT topic level used as the Kafka record key.
    #[serde(default)]
    pub key_level: Option<usize>,
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
        Event::new(subject.into(), Bytes::from_static(b"21.5"), vec![], 7)
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
        let (r, dead) = router(None).route(ev("sensors/dev-7/temperature"), 7);
        assert_eq!(dead, None);
        assert_eq!(r.topic, "temperature");
        assert_eq!(r.key.as_deref(), Some(&b"dev-7"[..]));
        assert_eq!(r.value, Bytes::from_static(b"21.5"));
        assert_eq!(r.timestamp_ms, 7);
    }

    #[test]
    fn missing_key_level_and_no_route_dead_letter_with_reason() {
        let (r, dead) = router(Some("fallback")).route(ev("sensors/a/b"), 7);
        assert_eq!(dead, Some(DeadLetter::Unroutable));
        assert_eq!(r.topic, "dlq");
        let why = String::from_utf8(r.headers.last().unwrap().value.to_vec()).unwrap();
        assert!(why.contains("topic level 3"), "{why}");

        let (r, dead) = router(Some("fallback")).route(ev("other/x"), 7);
        assert_eq!(dead, None);
        assert_eq!(r.topic, "fallback");
        assert_eq!(r.key, None);

        let (r, dead) = router(None).route(ev("other/x"), 7);
        assert_eq!(dead, Some(DeadLetter::Unroutable));
        assert_eq!(r.headers[0].name, HEADER_ERROR);
    }

    #[test]
    fn a_plugin_chosen_topic_and_key_win_over_the_rules() {
        let mut e = ev("sensors/dev-7/temperature");
        e.key = Some(Bytes::from_static(b"s1"));
        let (r, dead) = router(None).route(e.clone(), 7);
        assert_eq!(dead, None);
        assert_eq!(
            (r.topic.as_str(), r.key.as_deref()),
            ("temperature", Some(&b"s1"[..]))
        );
        e.topic = Some("other".into());
        let (r, _) = router(None).route(e.clone(), 7);
        assert_eq!(
            (r.topic.as_str(), r.key.as_deref()),
            ("other", Some(&b"s1"[..]))
        );
        e.topic = Some("dlq".into());
        assert_eq!(router(None).route(e, 7).1, Some(DeadLetter::Plugin));
        // A plugin key also saves events whose topic lacks the rule's key level.
        let mut e = ev("sensors/a/b");
        e.key = Some(Bytes::from_static(b"k"));
        let (r, dead) = router(None).route(e, 7);
        assert_eq!(dead, None);
        assert_eq!(r.topic, "deep");
    }

    #[test]
    fn records_that_cannot_be_stored_are_dead_lettered_with_the_reason() {
        let empty = Header {
            name: String::new(),
            value: Bytes::new(),
        };
        let mut e = ev("sensors/dev-7/temperature");
        e.headers = vec![empty.clone(); 65_536];
        let (r, dead) = router(None).route(e, 99);
        assert_eq!(dead, Some(DeadLetter::Unencodable));
        assert_eq!(r.topic, "dlq");
        assert_eq!(r.value, Bytes::from_static(b"21.5"));
        assert_eq!(r.headers.len(), 1, "only the reason is kept");
        let why = String::from_utf8(r.headers[0].value.to_vec()).unwrap();
        assert!(why.contains("65536 headers"), "{why}");
        assert_eq!(r.defect(), None);

        // Unroutable with the most headers a record may carry: the reason makes one too many.
        let mut e = ev("other/x");
        e.headers = vec![empty; 65_535];
        let (r, dead) = router(None).route(e, 99);
        assert_eq!(dead, Some(DeadLetter::Unencodable));
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.defect(), None);

        for t in [i64::MIN, -1, i64::MAX] {
            let mut e = ev("sensors/dev-7/temperature");
            e.timestamp_ms = t;
            e.headers = vec![Header {
                name: "unit".into(),
                value: Bytes::from_static(b"C"),
            }];
            let (r, dead) = router(None).route(e, 99);
            assert_eq!(dead, Some(DeadLetter::Unencodable), "{t}");
            assert_eq!(r.timestamp_ms, 99, "the receive time replaces {t}");
            assert_eq!(r.headers[0].name, "unit", "the headers are kept");
            assert_eq!(r.defect(), None);
        }

        let mut e = ev("sensors/dev-7/temperature");
        e.topic = Some("t".repeat(250));
        let (r, dead) = router(None).route(e, 99);
        assert_eq!(
            (r.topic.as_str(), dead),
            ("dlq", Some(DeadLetter::Unencodable))
        );

        // Several defects at once (found by the plugin_output fuzz target): all are cured.
        let mut e = ev("sensors/dev-7/temperature");
        e.topic = Some("t".repeat(250));
        e.timestamp_ms = i64::MAX;
        e.headers = vec![
            Header {
                name: String::new(),
                value: Bytes::new(),
            };
            65_536
        ];
        let (r, dead) = router(None).route(e, 99);
        assert_eq!(dead, Some(DeadLetter::Unencodable));
        assert_eq!((r.topic.as_str(), r.timestamp_ms), ("dlq", 99));
        assert_eq!(r.defect(), None);
    }

    #[test]
    fn topic_for_follows_the_rules_then_the_default() {
        assert_eq!(
            router(None).topic_for("sensors/a/temperature"),
            Some("temperature")
        );
        assert_eq!(router(None).topic_for("other"), None);
        assert_eq!(router(Some("f")).topic_for("other"), Some("f"));
    }
}
