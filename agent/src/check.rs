//! `kedge check`: the effective pipeline a configuration describes, in words.

use std::fmt::Write;
use std::path::Path;

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
        "source        {} — {} at {}:{}{}, client id {:?}",
        m.name,
        m.protocol,
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
        "              {session}, receive maximum {}",
        m.receive_maximum
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
            .map(|s| format!(" (SASL {} as {})", s.mechanism, s.username))
            .unwrap_or_default(),
        k.compression,
        config::HumanDuration(k.linger),
        k.batch_max_records,
        k.batch_max_bytes,
        k.max_in_flight
    );
    let _ = writeln!(
        o,
        "queue         {} — durability {}, commit every {} or {} records or {}, cache {}",
        q.effective_dir(&c.agent).display(),
        q.durability,
        config::HumanDuration(q.commit_window),
        q.commit_max_records,
        q.commit_max_bytes,
        q.cache
    );
    let budget = match q.max_bytes {
        Some(b) => b.to_string(),
        None => "half of the free disk space at start".to_owned(),
    };
    let _ = writeln!(
        o,
        "              disk budget {budget}, keeping {} free; when full: {}",
        q.min_free, q.when_full
    );
    let _ = writeln!(o, "\ndelivery guarantee");
    for s in &m.subscriptions {
        let g = if s.qos == 0 {
            "at-most-once: QoS 0 messages are never acknowledged, so one lost in flight or during a crash is gone"
        } else {
            "no acknowledged message is lost: acknowledged to the broker only once durable in the journal, \
             and each journaled record is written to Kafka once (before it resends a batch whose fate it does \
             not know, kedge looks for it in the partition's log, which needs READ on the topics). A crash \
             between the journal commit and the acknowledgement makes the broker redeliver the message, which \
             is then journaled again: at-least-once on the MQTT hop"
        };
        let _ = writeln!(o, "  {} (QoS {}): {g}", s.filter, s.qos);
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
    o
}
