//! The cluster moves to another address listed in kedge's bootstrap (a broker replaced by a new
//! one elsewhere): kedge loses its broker, falls back to the bootstrap list, finds the new one,
//! learns that it does not know kedge's producer id, and delivers everything published after the
//! move exactly once.

use std::time::Duration;

use super::{ROUTING, TOPIC};
use crate::support::free_port;
use crate::support::kedge::{Kedge, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::verdict::{Stopwatch, read_back};

/// Messages per phase.
const MESSAGES: usize = 2_000;

#[test]
fn a_cluster_that_moves_within_the_bootstrap_list_gets_everything_once() {
    let _stopwatch = Stopwatch::start("faults::bootstrap_move");
    let (old_port, new_port) = (free_port(), free_port());
    let mut old = Tansu::start_on(old_port);
    old.create_topic(TOPIC, 3);
    let mosquitto = Mosquitto::start();
    // pipeline_config quotes its bootstrap argument: this makes it a list of two addresses.
    let bootstrap = format!("127.0.0.1:{old_port}\", \"127.0.0.1:{new_port}");
    let mut kedge = Kedge::start(&pipeline_config(mosquitto.port(), &bootstrap, ROUTING));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let all = readings(2 * MESSAGES, 50);
    let (before, after) = all.split_at(MESSAGES);
    Publishing::start(mosquitto.port(), before.to_vec(), Some(2_000))
        .wait_acked(Duration::from_secs(30));
    read_back(&old.bootstrap(), TOPIC, before, Duration::from_secs(60)).assert_exactly_once();

    old.stop();
    let new = Tansu::start_on(new_port);
    new.create_topic(TOPIC, 3);
    Publishing::start(mosquitto.port(), after.to_vec(), Some(2_000))
        .wait_acked(Duration::from_secs(30));
    let verdict = read_back(&new.bootstrap(), TOPIC, after, Duration::from_secs(90));
    verdict.report("bootstrap_move", MESSAGES);
    kedge.assert_running();
    eprintln!(
        "bootstrap_move: kedge logged {} producer-id rejections, {} re-sequencings",
        kedge.log_count("no longer accepts our producer id"),
        kedge.log_count("re-sequenced the undelivered batches")
    );
    assert_eq!(
        verdict.unknown, 0,
        "records from before the move reappeared"
    );
    verdict.assert_exactly_once();
}
