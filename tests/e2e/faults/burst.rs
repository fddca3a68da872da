//! A burst of large readings with `compression = "none"` and `max_in_flight = 1`, into a broker
//! that enforces Kafka's default `message.max.bytes` (kafka-sim; tansu does not check it).
//!
//! Before, full uncompressed batches came to ~1.15 MB (the size estimate left out kedge's own
//! headers and the record framing): Kafka refused them, the dead-letter topic refused them
//! again, and they were dropped. And a journal chunk that needed more batches than a window of
//! one was never sealed: 10,264 of 20,000 readings were delivered, the rest waited without a
//! log line. Every reading must arrive, once, and nothing be dead-lettered or dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use kafka_sim::{Cluster, SimBroker};

use super::lost_acks::sim_records;
use super::{TOPIC, config};
use crate::support::kedge::Kedge;
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing};
use crate::support::verdict::{Stopwatch, Verdict};
use crate::support::{free_port, metric, try_metric, wait_until};

/// Readings in the burst.
const READINGS: usize = 20_000;
/// Bytes of each payload.
const PAYLOAD: usize = 400;

#[test]
fn a_burst_of_large_uncompressed_readings_with_a_window_of_one_arrives_whole() {
    burst("max_in_flight = 1");
}

#[test]
fn full_uncompressed_batches_fit_the_brokers_default_limit() {
    burst("max_in_flight = 5");
}

/// Publishes the burst with `kafka_extra` in `[kafka]` and checks that all of it arrives.
fn burst(kafka_extra: &str) {
    let _stopwatch = Stopwatch::start("faults::burst");
    let broker = SimBroker::start(
        Cluster::new()
            .with_topic(TOPIC, 3)
            .with_topic("kedge-dead-letter", 1),
    );
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut kedge_config = config(
        mosquitto.port(),
        &broker.addr().to_string(),
        &format!("compression = \"none\"\n{kafka_extra}"),
    );
    kedge_config.push_str(&format!("\n[metrics]\nlisten = \"{metrics}\"\n"));
    // Large commits, so that one journal chunk needs several batches per partition.
    kedge_config = kedge_config
        .replace(
            "commit_window = \"5ms\"",
            "commit_window = \"200ms\"\ncommit_max_records = 20000\ncommit_max_bytes = \"16MiB\"",
        )
        .replace("receive_maximum = 2048", "receive_maximum = 20000");
    let kedge = Kedge::start(&kedge_config);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published: Vec<Message> = (0..READINGS)
        .map(|i| {
            let mut payload = format!("{{\"n\":{i},\"pad\":\"").into_bytes();
            payload.resize(PAYLOAD - 2, b'x');
            payload.extend_from_slice(b"\"}");
            Message {
                topic: format!("sensors/dev-{}/reading", i % 3),
                payload: Bytes::from(payload),
                user_properties: Vec::new(),
            }
        })
        .collect();
    Publishing::start(mosquitto.port(), published.clone(), None)
        .wait_acked(Duration::from_secs(120));
    wait_until("every reading delivered", Duration::from_secs(120), || {
        try_metric(metrics, "kedge_records_delivered_total", "").is_ok_and(|v| v >= READINGS as f64)
    });
    let verdict = Verdict::of(&published, &sim_records(&broker, TOPIC, 3));
    verdict.report(&format!("burst ({kafka_extra})"), READINGS);
    verdict.assert_exactly_once();
    assert_eq!(broker.produce_answers(10), 0, "a batch was too large");
    for reason in ["kafka_refused", "dead_letter_refused"] {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            metric(metrics, "kedge_records_dead_lettered_total", &label)
                + metric(metrics, "kedge_records_dropped_total", &label),
            0.0,
            "{reason}"
        );
    }
    drop(kedge);
}
