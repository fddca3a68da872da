//! kill -9 mid-stream, twice: after restarts on the same data dir nothing published is missing.

use std::time::{Duration, Instant};

use crate::support::consume::{Tally, consume, tally};
use crate::support::kedge::{Kedge, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::wait_until;

/// Messages published.
const MESSAGES: usize = 20_000;
/// Publishing pace, messages per second (the whole run takes about four seconds).
const PER_SECOND: u32 = 5_000;

use crate::support::kedge::READINGS_ROUTING as ROUTING;

#[test]
fn sigkill_mid_stream_loses_nothing() {
    let tansu = Tansu::start();
    tansu.create_topic("readings", 3);
    let mosquitto = Mosquitto::start();
    let mut kedge = Kedge::start(&pipeline_config(
        mosquitto.port(),
        &tansu.bootstrap(),
        ROUTING,
    ));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published = readings(MESSAGES, 50);
    let publishing = Publishing::start(mosquitto.port(), published.clone(), Some(PER_SECOND));
    for thirds in 1..=2 {
        let at = MESSAGES * thirds / 3;
        wait_until(&format!("{at} publishes"), Duration::from_secs(60), || {
            publishing.acked() >= at
        });
        kedge.kill9();
        eprintln!(
            "crash_restart: SIGKILL after {} publishes",
            publishing.acked()
        );
        std::thread::sleep(Duration::from_millis(500));
        kedge.restart();
    }
    publishing.wait_acked(Duration::from_secs(60));

    let tally = consume_all(&tansu.bootstrap(), &published, Duration::from_secs(180));
    eprintln!(
        "crash_restart: {MESSAGES} published, {} missing, {} duplicates after two SIGKILLs",
        tally.missing.len(),
        tally.duplicates
    );
    assert_nothing_lost(&tally);
}

/// Fails unless every published message is in Kafka and every record is one of them.
pub(crate) fn assert_nothing_lost(tally: &Tally) {
    assert_eq!(tally.unknown, 0, "records whose value was never published");
    assert!(
        tally.missing.is_empty(),
        "{} messages lost, e.g. #{:?}",
        tally.missing.len(),
        &tally.missing[..tally.missing.len().min(10)]
    );
}

/// Re-reads `readings` from the start until every published message is there or `timeout` passes
/// (duplicates count towards `--expect`, so one read may stop before the stragglers arrive).
pub(crate) fn consume_all(bootstrap: &str, published: &[Message], timeout: Duration) -> Tally {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = left.clamp(Duration::from_secs(5), Duration::from_secs(60));
        let records = consume(bootstrap, "readings", published.len(), attempt);
        let tally = tally(published, &records);
        if tally.missing.is_empty() || Instant::now() >= deadline {
            return tally;
        }
        eprintln!(
            "crash_restart: {} still missing, reading again",
            tally.missing.len()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}
