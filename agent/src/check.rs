//! `kedge check`: the effective pipeline a configuration describes, in words.

use std::fmt::Write;
use std::path::Path;

use kedge_wire::KafkaError;
use kedge_wire::client::{Cluster, ClusterSettings};

use crate::config::Keyword;
use crate::config::{self, Config};

/// A human description of the pipeline: sources, routes, Kafka target, queue, guarantees.
pub fn describe(c: &Config, path: &Path) -> String {
    let mut o = String::new();
    let m = &c.mqtt;
    let k = &c.kafka;
    let q = &c.queue;
    let _ = writeln!(o, "{}: configuration is valid\n", path.display());
    let _ = writeln!(o, "device        {}", c.agent.device_id);
    if c.agent.device_id == config::hostname_device_id() {
        let _ = writeln!(
            o,
            "              (the hostname: agents that share a hostname must each set agent.device_id; \
             kedge tells its records apart by kedge-queue, but consumers and the MQTT client id \
             go by the device id)"
        );
    }
    let _ = writeln!(
        o,
        "source        {} — MQTT {} at {}:{}{}, client id {:?}",
        m.name,
        m.protocol.word(),
        m.host,
        m.effective_port(),
        if m.tls.is_some() { " (TLS)" } else { "" },
        m.effective_client_id(&c.agent.device_id)
    );
    let session = match m.protocol {
        config::MqttProtocol::V5 => format!(
            "persistent session, expiry {}",
            config::HumanDuration(m.session_expiry)
        ),
        config::MqttProtocol::V311 => "persistent session (clean session off)".to_owned(),
    };
    let _ = writeln!(
        o,
        "              {session}, receive maximum {}, redelivery window {}",
        m.receive_maximum,
        m.effective_redelivery_window()
    );
    for s in &m.subscriptions {
        let _ = writeln!(o, "  subscribe   {} (QoS {})", s.filter, s.qos);
    }
    for p in &c.plugins {
        let subjects = if p.subjects.is_empty() {
            "every event".to_owned()
        } else {
            p.subjects.join(", ")
        };
        let _ = writeln!(
            o,
            "plugin        {} — {} on {subjects}; memory {}, timeout {}{}, when failing: {}",
            p.name,
            p.path.display(),
            p.memory,
            config::HumanDuration(p.timeout),
            p.tick
                .map(|t| format!(", tick every {}", config::HumanDuration(t)))
                .unwrap_or_default(),
            p.on_failure
        );
    }
    let _ = writeln!(o, "routes");
    for r in &c.routing.rules {
        let key = match r.key_level {
            Some(l) => format!(", key = topic level {l}"),
            None => String::new(),
        };
        let _ = writeln!(o, "  {} → {}{key}", r.filter, r.topic);
    }
    match &c.routing.default_topic {
        Some(t) => {
            let _ = writeln!(o, "  anything else → {t} (default topic, no key)");
        }
        None => {
            let _ = writeln!(
                o,
                "  anything else → {} (dead-letter: no default topic)",
                c.routing.dead_letter_topic
            );
        }
    }
    let _ = writeln!(
        o,
        "  unroutable → {} (with a kedge-error header)",
        c.routing.dead_letter_topic
    );
    let _ = writeln!(
        o,
        "kafka         {}{}{} — {}, acks=all, idempotent, linger {}, batches ≤ {} records / {}, ≤ {} in flight",
        k.bootstrap.join(", "),
        if k.tls.is_some() { " (TLS)" } else { "" },
        k.sasl
            .as_ref()
            .map(|s| format!(" (SASL {} as {})", s.mechanism.word(), s.username))
            .unwrap_or_default(),
        k.compression.word(),
        config::HumanDuration(k.linger),
        k.batch_max_records,
        k.batch_max_bytes,
        k.max_in_flight
    );
    let _ = writeln!(
        o,
        "queue         {} — durability {}, group commits gather up to {}, {} records or {} (less when idle), cache {}",
        q.effective_dir(&c.agent).display(),
        q.durability.word(),
        config::HumanDuration(q.commit_window),
        q.commit_max_records,
        q.commit_max_bytes,
        q.cache
    );
    let budget = match q.max_bytes {
        Some(b) => b.to_string(),
        None => "half of what the queue could use at start (free space plus its own files), at most that less min_free".to_owned(),
    };
    let _ = writeln!(
        o,
        "              disk budget {budget}, keeping {} free; when full: {}",
        q.min_free,
        q.when_full.word()
    );
    let _ = writeln!(o, "\ndelivery guarantee");
    for s in &m.subscriptions {
        let _ = writeln!(o, "  {} (QoS {}): {}", s.filter, s.qos, guarantee(s.qos));
    }
    if m.subscriptions.iter().any(|s| s.qos > 0) {
        let _ = writeln!(
            o,
            "  Every journaled record is written to Kafka once: before it resends a batch whose fate it does\n  \
             not know, kedge looks for it in the partition's log (which needs READ on the topics)."
        );
        let window = m.effective_redelivery_window();
        let prove = usize::from(m.receive_maximum) + 1;
        let qos1 = match m.redelivery {
            config::Redelivery::PacketId => format!(
                "  QoS 1 (also what a QoS 1 publisher's messages arrive with on a QoS 2 subscription): after a crash\n  \
                 or a reconnect the broker resends what it had not read a PUBACK for. kedge recognises a resend by\n  \
                 its DUP flag, packet id, topic and payload among the last {window} messages, and acknowledges it\n  \
                 without journaling it again, once {prove} messages in a row (receive_maximum + 1) had distinct\n  \
                 ids: the broker does not reuse packet ids at once (mosquitto does not). Until then, and with\n  \
                 brokers that reuse ids or do not set DUP, a resend is journaled again: at least once; so is a\n  \
                 resend of a message older than the last {window} (mqtt.redelivery_window). Resends journaled\n  \
                 with DUP set are counted in kedge_mqtt_dup_journaled_total."
            ),
            config::Redelivery::Payload => format!(
                "  QoS 1 (mqtt.redelivery = \"payload\"): after a crash or a reconnect, a message with the topic and\n  \
                 payload of one of the last {window} is taken for a resend and not journaled again, whatever its\n  \
                 packet id and DUP flag. Every message must therefore differ from the ones before it (carry a\n  \
                 timestamp or a counter): an identical one arriving first after a reconnect would be dropped."
            ),
            config::Redelivery::Off => "  QoS 1 (mqtt.redelivery = \"off\"): a crash between the journal commit and the acknowledgement\n  \
                 makes the broker resend the message, which is journaled again: at least once on the MQTT hop."
                .to_owned(),
        };
        let _ = writeln!(o, "{qos1}");
    }
    if m.subscriptions.iter().any(|s| s.qos == 2) {
        let _ = writeln!(
            o,
            "  QoS 2: kedge journals the packet id with the message and releases it durably before PUBCOMP, so a\n  \
             resend with that id and the DUP flag, as MQTT requires (mosquitto), is recognised however many\n  \
             are in flight. A broker that renumbers resends without DUP (rumqttd) needs mqtt.redelivery =\n  \
             \"payload\"; with another rule its resends after a crash are journaled again."
        );
    }
    if q.durability == config::Durability::Relaxed {
        let _ = writeln!(
            o,
            "  durability = relaxed: a power cut can lose the last commits even though they were acknowledged"
        );
    }
    let _ = writeln!(o, "\nwhat the MQTT broker must allow");
    let _ = writeln!(
        o,
        "  While kedge is down, the broker holds QoS 1 messages for the persistent session of {:?}.\n  \
         mosquitto keeps at most max_queued_messages (default 1000) per offline client and drops the rest:\n  \
         set max_queued_messages 0 (no limit) or large enough for your longest outage, and persistence true\n  \
         so that the session survives a broker restart.",
        m.effective_client_id(&c.agent.device_id)
    );
    let size = m.max_packet_size;
    match m.protocol {
        config::MqttProtocol::V5 => {
            let _ = writeln!(
                o,
                "  kedge tells the broker it accepts packets of at most {size} (mqtt.max_packet_size). An MQTT 5\n  \
                 broker drops a larger message for kedge without telling the publisher, which got its PUBACK;\n  \
                 kedge never sees it. Set the broker's own limit to at most {size} (mosquitto: max_packet_size)\n  \
                 so that such a message is refused at publish instead."
            );
        }
        config::MqttProtocol::V311 => {
            let _ = writeln!(
                o,
                "  MQTT 3.1.1 cannot announce kedge's limits. A message larger than {size} (mqtt.max_packet_size)\n  \
                 is skipped: acknowledged, not journaled, logged and counted in kedge_mqtt_oversized_total. Set the\n  \
                 broker's limit to at most {size} (mosquitto: max_packet_size) to refuse it at publish instead.\n  \
                 The broker's limit on unacknowledged messages (mosquitto: max_inflight_messages, default 20) must\n  \
                 be less than mqtt.redelivery_window ({}), the messages a resend is compared with.",
                m.effective_redelivery_window()
            );
        }
    }
    o
}

/// What Kafka says of one topic the routing names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    /// Kafka does not have it (or has it without partitions).
    Missing,
    /// Kafka answered with another error for it (e.g. `TOPIC_AUTHORIZATION_FAILED`).
    Refused(String),
    /// It exists with this many partitions, `leaderless` of them without a leader just now.
    Present {
        /// Its partitions.
        partitions: usize,
        /// Those without a leader.
        leaderless: usize,
    },
}

/// Asks the cluster `settings` describes about `topics`, creating none (a typo must not leave
/// a topic behind): their states in the same order.
pub async fn ask_kafka(
    settings: ClusterSettings,
    topics: &[String],
) -> Result<Vec<TopicState>, KafkaError> {
    let mut cluster = Cluster::new(settings);
    let refused = cluster.describe_topics(topics).await?;
    Ok(topics
        .iter()
        .map(|t| {
            let error = refused.iter().find(|(name, _)| name == t).map(|(_, e)| e);
            match (cluster.topics().get(t), error) {
                (Some(info), _) if !info.leaders.is_empty() => TopicState::Present {
                    partitions: info.leaders.len(),
                    leaderless: info.leaders.iter().filter(|l| **l < 0).count(),
                },
                (_, Some(e)) if e != "UNKNOWN_TOPIC_OR_PARTITION" => {
                    TopicState::Refused(e.to_string())
                }
                _ => TopicState::Missing,
            }
        })
        .collect())
}

/// What `kedge check --kafka` prints of the topics `c`'s routing names and their `states`
/// (from [`ask_kafka`], same order), and whether every one exists and could be described.
pub fn describe_topics(c: &Config, topics: &[String], states: &[TopicState]) -> (String, bool) {
    let mut o = String::new();
    let dead_letter = &c.routing.dead_letter_topic;
    let _ = writeln!(
        o,
        "kafka         {} answered; the topics the routing names (none created by this check):",
        c.kafka.bootstrap.join(", ")
    );
    let mut all = true;
    for (topic, state) in topics.iter().zip(states) {
        let what = match state {
            TopicState::Present {
                partitions,
                leaderless,
            } => {
                let s = if *partitions == 1 { "" } else { "s" };
                match leaderless {
                    0 => format!("{partitions} partition{s}"),
                    n => format!("{partitions} partition{s}, {n} without a leader just now"),
                }
            }
            TopicState::Refused(error) => {
                all = false;
                let hint = match error.as_str() {
                    "TOPIC_AUTHORIZATION_FAILED" => {
                        ": the user kedge logs in as needs WRITE and READ on it"
                    }
                    "LEADER_NOT_AVAILABLE" => {
                        ": it is being created or its leader is moving; ask again"
                    }
                    _ => "",
                };
                format!("Kafka answers {error} for it{hint}")
            }
            TopicState::Missing => {
                all = false;
                if topic == dead_letter {
                    "missing: records that must be dead-lettered wait in the queue until it exists, \
                     and those journaled after them wait behind them (kedge run asks Kafka to \
                     create it where the broker allows)"
                        .to_owned()
                } else {
                    format!(
                        "missing: kedge run asks Kafka to create it where the broker allows; else its \
                         records go to the dead-letter topic {dead_letter} after 60 s"
                    )
                }
            }
        };
        let _ = writeln!(o, "  topic       {topic}: {what}");
    }
    (o, all)
}

/// What holds for one subscription's messages.
fn guarantee(qos: u8) -> &'static str {
    match qos {
        0 => {
            "at most once: QoS 0 messages are never acknowledged, so one lost in flight or during a crash is gone"
        }
        1 => {
            "no acknowledged message is lost: acknowledged (PUBACK) only once durable in the journal; resends: see below"
        }
        _ => {
            "exactly once from the broker: acknowledged (PUBREC) only once durable in the journal with its packet id;\n    \
             a resend of an id still held is acknowledged, not journaled again; the id is released durably before\n    \
             PUBCOMP. Messages published at QoS 1 arrive at QoS 1: see below"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_described_one_a_line_and_only_missing_ones_fail_the_check() {
        let config = Config::parse(
            "[mqtt]\nsubscriptions = [{ filter = \"s/#\", qos = 1 }]\n\
             [kafka]\nbootstrap = [\"k1:9092\", \"k2:9092\"]\n[routing]\ndefault_topic = \"readings\"\n",
            Path::new("kedge.toml"),
        )
        .expect("config");
        let topics: Vec<String> = ["alarms", "readings", "kedge-dead-letter"]
            .map(str::to_owned)
            .into();
        let present = |partitions, leaderless| TopicState::Present {
            partitions,
            leaderless,
        };
        let (text, all) = describe_topics(
            &config,
            &topics,
            &[present(1, 0), present(3, 1), present(2, 0)],
        );
        assert!(all);
        assert_eq!(
            text,
            "kafka         k1:9092, k2:9092 answered; the topics the routing names (none created by this check):\n\
             \x20 topic       alarms: 1 partition\n\
             \x20 topic       readings: 3 partitions, 1 without a leader just now\n\
             \x20 topic       kedge-dead-letter: 2 partitions\n"
        );
        let (text, all) = describe_topics(
            &config,
            &topics,
            &[TopicState::Missing, present(3, 0), TopicState::Missing],
        );
        assert!(!all);
        assert!(text.contains(
            "  topic       alarms: missing: kedge run asks Kafka to create it where the broker allows; \
             else its records go to the dead-letter topic kedge-dead-letter after 60 s\n"
        ));
        assert!(text.contains(
            "  topic       kedge-dead-letter: missing: records that must be dead-lettered wait in the queue"
        ));
        let (_, all) = describe_topics(
            &config,
            &topics,
            &[present(1, 0), present(3, 0), TopicState::Missing],
        );
        assert!(!all, "a missing dead-letter topic fails the check too");
        let (text, all) = describe_topics(
            &config,
            &topics,
            &[
                present(1, 0),
                TopicState::Refused("TOPIC_AUTHORIZATION_FAILED".into()),
                present(1, 0),
            ],
        );
        assert!(!all);
        assert!(
            text.contains(
                "  topic       readings: Kafka answers TOPIC_AUTHORIZATION_FAILED for it: the user \
                 kedge logs in as needs WRITE and READ on it\n"
            ),
            "{text}"
        );
        let (text, _) = describe_topics(
            &config,
            &topics,
            &[
                present(1, 0),
                TopicState::Refused("UNKNOWN_SERVER_ERROR".into()),
                present(1, 0),
            ],
        );
        assert!(
            text.contains("  topic       readings: Kafka answers UNKNOWN_SERVER_ERROR for it\n"),
            "{text}"
        );
    }
}
