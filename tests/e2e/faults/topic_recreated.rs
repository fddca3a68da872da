//! The topic is deleted and created again while kedge runs (an operator's clean-up, a broker
//! migration): everything published after the recreation must arrive exactly once, and nothing
//! from before it may reappear. On Apache Kafka the new partitions know nothing of kedge's
//! producer; tansu 0.6 keeps the producer's sequence state across the recreation and accepts the
//! next batches as they are (the test prints what kedge had to do: verifications, rejections,
//! re-sequencings), so here this guards the plain path, and the forgotten-producer tests cover
//! the rejection path.

use std::time::Duration;

use super::{ProxiedTansu, TOPIC, config};
use crate::support::kedge::Kedge;
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::verdict::{Stopwatch, read_back};

/// Messages per phase.
const MESSAGES: usize = 2_000;

#[test]
fn a_recreated_topic_gets_everything_published_after_it_once() {
    let _stopwatch = Stopwatch::start("faults::topic_recreated");
    let broker = ProxiedTansu::start();
    let mosquitto = Mosquitto::start();
    let mut kedge = Kedge::start(&config(mosquitto.port(), &broker.proxy.addr(), ""));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let all = readings(2 * MESSAGES, 50);
    let (before, after) = all.split_at(MESSAGES);
    Publishing::start(mosquitto.port(), before.to_vec(), Some(2_000))
        .wait_acked(Duration::from_secs(30));
    let first = read_back(
        &broker.tansu.bootstrap(),
        TOPIC,
        before,
        Duration::from_secs(60),
    );
    first.report("topic_recreated, before", MESSAGES);
    first.assert_exactly_once();

    broker.tansu.delete_topic(TOPIC);
    broker.tansu.create_topic(TOPIC, 3);
    Publishing::start(mosquitto.port(), after.to_vec(), Some(2_000))
        .wait_acked(Duration::from_secs(30));
    let second = read_back(
        &broker.tansu.bootstrap(),
        TOPIC,
        after,
        Duration::from_secs(90),
    );
    second.report("topic_recreated, after", MESSAGES);
    kedge.assert_running();
    eprintln!(
        "topic_recreated: kedge logged {} producer-id rejections, {} verifications, {} re-sequencings",
        kedge.log_count("no longer accepts our producer id"),
        kedge.log_count("verified before resending"),
        kedge.log_count("re-sequenced the undelivered batches")
    );
    assert_eq!(
        second.unknown, 0,
        "records from before the recreation reappeared"
    );
    second.assert_exactly_once();
}
