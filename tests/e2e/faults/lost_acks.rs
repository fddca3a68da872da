//! The verify step proven: Kafka wrote the batches, its answers were lost, kedge was killed.
//! After the restart kedge must find those batches in the log and not send them again.
//!
//! Against tansu the broker's own duplicate check would hide a blind resend (it answers
//! DUPLICATE_SEQUENCE_NUMBER), so the test asserts on kedge's evidence too: its verify counter
//! says the batches were found, and no resend was answered as a duplicate. Against kafka-sim
//! with Kafka's rules the broker also forgets the producer id meanwhile (an expiry, as after a
//! day offline): a blind resend would then be written a second time, and the broker's own log
//! is the judge.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use kafka_sim::{Cluster, SimBroker};

use super::{ProxiedTansu, TOPIC, config};
use crate::support::consume::Consumed;
use crate::support::kedge::Kedge;
use crate::support::mosquitto::Mosquitto;
use crate::support::proxy::Mode;
use crate::support::publish::{Publishing, readings};
use crate::support::verdict::{Stopwatch, Verdict, read_back};
use crate::support::{free_port, metric, try_metric, wait_until};

/// Readings published while the answers are lost.
const SILENT: usize = 600;

/// The fault config with a metrics listener on `metrics`, in Kafka codec `codec`.
fn with_metrics(mqtt_port: u16, bootstrap: &str, metrics: SocketAddr, codec: &str) -> String {
    let kafka = format!("batch_max_records = 40\ncompression = \"{codec}\"");
    let mut c = config(mqtt_port, bootstrap, &kafka);
    c.push_str(&format!("\n[metrics]\nlisten = \"{metrics}\"\n"));
    c
}

/// What kedge's verify reported after the restart: (batches found in Kafka, resent).
fn verify_figures(metrics: SocketAddr) -> (f64, f64) {
    let name = "kedge_verify_batches_total";
    (
        metric(metrics, name, "result=\"in_kafka\""),
        metric(metrics, name, "result=\"resent\""),
    )
}

#[test]
fn acknowledgements_lost_after_the_write_are_found_by_the_verify_on_tansu() {
    lost_acks_on_tansu("zstd");
}

/// The verify reads the log in the codec kedge wrote it (snappy: the codec with framing of its
/// own, snappy-java's).
#[test]
fn acknowledgements_lost_after_the_write_are_found_in_snappy_batches() {
    lost_acks_on_tansu("snappy");
}

fn lost_acks_on_tansu(codec: &str) {
    let _stopwatch = Stopwatch::start("faults::lost_acks (tansu)");
    let broker = ProxiedTansu::start();
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut kedge = Kedge::start(&with_metrics(
        mosquitto.port(),
        &broker.proxy.addr(),
        metrics,
        codec,
    ));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    let warmup = readings(60, 20);
    Publishing::start(mosquitto.port(), warmup.clone(), None).wait_acked(Duration::from_secs(30));
    wait_until(
        "the warm-up to be delivered",
        Duration::from_secs(30),
        || {
            try_metric(metrics, "kedge_records_delivered_total", "")
                .is_ok_and(|v| v >= warmup.len() as f64)
        },
    );

    // From here the broker writes what it gets, and kedge hears nothing back.
    broker.proxy.set_mode(Mode::SwallowReplies);
    let silent: Vec<_> = readings(SILENT + warmup.len(), 20).split_off(warmup.len());
    Publishing::start(mosquitto.port(), silent.clone(), Some(300))
        .wait_acked(Duration::from_secs(60));
    let sent = metric(metrics, "kedge_batches_sent_total", "");
    std::thread::sleep(Duration::from_secs(1));
    kedge.kill9();
    assert!(
        broker.proxy.bytes_swallowed() > 0,
        "the broker answered nothing while silent"
    );
    broker.proxy.set_mode(Mode::Pass);
    kedge.restart();

    let mut published = warmup;
    published.extend(silent);
    let verdict = read_back(
        &broker.tansu.bootstrap(),
        TOPIC,
        &published,
        Duration::from_secs(90),
    );
    verdict.report(&format!("lost_acks (tansu, {codec})"), published.len());
    verdict.assert_exactly_once();
    wait_until(
        "delivery after the restart",
        Duration::from_secs(30),
        || try_metric(metrics, "kedge_records_unacknowledged", "").is_ok_and(|v| v == 0.0),
    );
    let (found, resent) = verify_figures(metrics);
    eprintln!(
        "lost_acks (tansu, {codec}): {sent} batches sent before the kill; after the restart the verify found {found} in Kafka and resent {resent}"
    );
    assert!(
        found > 0.0,
        "the verify found none of the batches the broker wrote (it resent {resent})"
    );
    assert_eq!(
        metric(metrics, "kedge_batches_duplicate_total", ""),
        0.0,
        "a resend was caught by tansu's own duplicate check: the verify missed a landed batch"
    );
}

/// The records kafka-sim's log holds for `topic`, as the independent consumer would read them.
pub fn sim_records(broker: &SimBroker, topic: &str, partitions: i32) -> Vec<Consumed> {
    let model = broker.model();
    (0..partitions)
        .flat_map(|p| {
            model
                .records(topic, p)
                .expect("topic exists")
                .into_iter()
                .map(move |r| Consumed {
                    partition: p as u32,
                    offset: r.offset,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(n, v)| (n, v.map(|v| v.to_vec()).unwrap_or_default()))
                        .collect(),
                    received_at: 0.0,
                })
        })
        .collect()
}

#[test]
fn acknowledgements_lost_after_the_write_are_found_when_the_broker_forgot_the_producer() {
    let _stopwatch = Stopwatch::start("faults::lost_acks (kafka-sim, producer forgotten)");
    let broker = SimBroker::start(Cluster::new().with_topic(TOPIC, 3));
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut kedge = Kedge::start(&with_metrics(
        mosquitto.port(),
        &broker.addr().to_string(),
        metrics,
        "zstd",
    ));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    let warmup = readings(60, 20);
    Publishing::start(mosquitto.port(), warmup.clone(), None).wait_acked(Duration::from_secs(30));
    wait_until(
        "the warm-up to be delivered",
        Duration::from_secs(30),
        || {
            try_metric(metrics, "kedge_records_delivered_total", "")
                .is_ok_and(|v| v >= warmup.len() as f64)
        },
    );

    broker.lose_responses(true);
    let silent: Vec<_> = readings(SILENT + warmup.len(), 20).split_off(warmup.len());
    Publishing::start(mosquitto.port(), silent.clone(), Some(300))
        .wait_acked(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    kedge.kill9();
    let written = sim_records(&broker, TOPIC, 3).len();
    assert!(
        written > warmup.len(),
        "the broker wrote nothing while its answers were lost"
    );
    // A day offline: the broker no longer knows the producer id and takes any sequence.
    broker.model().forget_all_producers();
    broker.lose_responses(false);
    kedge.restart();

    let mut published = warmup;
    published.extend(silent);
    wait_until("every reading in the log", Duration::from_secs(90), || {
        Verdict::of(&published, &sim_records(&broker, TOPIC, 3))
            .missing
            .is_empty()
    });
    wait_until(
        "delivery after the restart",
        Duration::from_secs(30),
        || try_metric(metrics, "kedge_records_unacknowledged", "").is_ok_and(|v| v == 0.0),
    );
    let verdict = Verdict::of(&published, &sim_records(&broker, TOPIC, 3));
    verdict.report("lost_acks (kafka-sim)", published.len());
    verdict.assert_exactly_once();
    let (found, resent) = verify_figures(metrics);
    eprintln!(
        "lost_acks (kafka-sim): {written} records written while the answers were lost; the verify found {found} batches and resent {resent}"
    );
    assert!(found > 0.0, "the verify found nothing");
}
