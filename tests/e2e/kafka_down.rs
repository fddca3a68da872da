//! Kafka down at start: kedge journals and acknowledges MQTT traffic, then delivers it all once
//! the broker appears; unroutable messages go to the dead-letter topic with a reason.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;

use crate::support::consume::{consume, tally};
use crate::support::free_port;
use crate::support::kedge::{DEVICE_ID, Kedge, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing, readings};
use crate::support::tansu::Tansu;

/// Readings published while Kafka is down.
const READINGS: usize = 2_000;
/// Messages no routing rule matches (and there is no default topic).
const STRAYS: usize = 25;

use crate::support::kedge::READINGS_ROUTING as ROUTING;

#[test]
fn messages_published_while_kafka_is_down_arrive_once_it_is_up() {
    let kafka_port = free_port();
    let mosquitto = Mosquitto::start();
    let config = pipeline_config(
        mosquitto.port(),
        &format!("127.0.0.1:{kafka_port}"),
        ROUTING,
    );
    let mut kedge = Kedge::start(&config);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let readings = readings(READINGS, 10);
    let strays: Vec<Message> = (0..STRAYS)
        .map(|i| Message {
            topic: format!("sensors/dev-{i}/status"),
            payload: Bytes::from(format!("status {i}: no rule routes me")),
            user_properties: Vec::new(),
        })
        .collect();
    let mut all = readings.clone();
    all.extend(strays.iter().cloned());
    let publishing = Publishing::start(mosquitto.port(), all, None);
    publishing.wait_acked(Duration::from_secs(60));

    // Let kedge run into the missing broker for a while: it must keep retrying, not exit.
    std::thread::sleep(Duration::from_secs(3));
    kedge.assert_running();

    let tansu = Tansu::start_on(kafka_port);
    tansu.create_topic("readings", 3);
    tansu.create_topic("kedge-dead-letter", 1);

    let records = consume(
        &tansu.bootstrap(),
        "readings",
        READINGS,
        Duration::from_secs(120),
    );
    let readings_tally = tally(&readings, &records);
    assert_eq!(
        readings_tally.unknown, 0,
        "records in `readings` that are not readings"
    );
    assert_eq!(
        readings_tally.missing.len(),
        0,
        "readings missing: {:?}",
        readings_tally.missing
    );
    assert_eq!(readings_tally.duplicates, 0, "duplicated readings");
    assert_eq!(records.len(), READINGS);

    let dead = consume(
        &tansu.bootstrap(),
        "kedge-dead-letter",
        STRAYS,
        Duration::from_secs(60),
    );
    let dead_tally = tally(&strays, &dead);
    assert_eq!(
        dead_tally.unknown, 0,
        "dead letters that are not the stray messages"
    );
    assert_eq!(
        dead_tally.missing.len(),
        0,
        "strays missing from the dead-letter topic: {:?}",
        dead_tally.missing
    );
    assert_eq!(dead_tally.duplicates, 0, "duplicated dead letters");
    let mut seqs = HashSet::new();
    for record in &dead {
        let reason = record
            .header("kedge-error")
            .unwrap_or_else(|| panic!("no kedge-error header: {record:?}"));
        assert!(!reason.trim().is_empty(), "empty kedge-error header");
        assert_eq!(record.header("kedge-device").as_deref(), Some(DEVICE_ID));
        assert!(
            seqs.insert(record.seq()),
            "kedge-seq {} appears twice",
            record.seq()
        );
    }
    kedge.assert_running();
}
