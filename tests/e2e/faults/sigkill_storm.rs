//! kill -9 at 32 seeded-random moments of a 100,000-message stream, kedge restarted each time on
//! the same data dir: the journal, the producer state and the sealed batches must carry every
//! acknowledged message into Kafka exactly once per `kedge-seq`.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{TOPIC, config, seed};
use crate::support::kedge::Kedge;
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::verdict::{Stopwatch, read_back};

/// Messages published.
const MESSAGES: usize = 100_000;
/// Publishing pace over all connections, messages per second (about ten seconds in all).
const PER_SECOND: u32 = 10_000;
/// MQTT connections the publisher spreads the messages over.
const CONNECTIONS: usize = 4;
/// SIGKILLs delivered.
const KILLS: usize = 32;
/// Range of the time kedge runs between two kills, in milliseconds.
const RUN_MS: std::ops::RangeInclusive<u64> = 80..=550;
/// Range of the time kedge stays dead after a kill, in milliseconds.
const DOWN_MS: std::ops::RangeInclusive<u64> = 0..=150;

#[test]
fn sigkill_at_random_moments_neither_loses_nor_duplicates() {
    let _stopwatch = Stopwatch::start("faults::sigkill_storm");
    let mut rng = StdRng::seed_from_u64(seed());
    let tansu = Tansu::start();
    tansu.create_topic(TOPIC, 3);
    let mosquitto = Mosquitto::start();
    let mut kedge = Kedge::start(&config(mosquitto.port(), &tansu.bootstrap(), ""));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published = readings(MESSAGES, 50);
    let publishing = Publishing::start_split(
        mosquitto.port(),
        published.clone(),
        CONNECTIONS,
        Some(PER_SECOND),
    );
    for kill in 1..=KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(RUN_MS)));
        kedge.kill9();
        if kill % 8 == 0 {
            eprintln!(
                "sigkill_storm: kill {kill}/{KILLS} after {} publishes",
                publishing.acked()
            );
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(DOWN_MS)));
        kedge.restart();
    }
    publishing.wait_acked(Duration::from_secs(60));

    let verdict = read_back(
        &tansu.bootstrap(),
        TOPIC,
        &published,
        Duration::from_secs(150),
    );
    verdict.report(&format!("sigkill_storm ({KILLS} kills)"), MESSAGES);
    eprintln!(
        "sigkill_storm: kedge logged {} failed produce requests, {} resumptions of sealed \
         batches, {} verify scans",
        kedge.log_count("produce request failed"),
        kedge.log_count("resuming delivery of sealed batches"),
        kedge.log_count("verified before resending")
    );
    kedge.assert_running();
    assert_eq!(
        verdict.unknown, 0,
        "records whose value was never published"
    );
    verdict.assert_exactly_once();
}
