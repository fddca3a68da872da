//! The Kafka path goes silent (connections stay open, nothing flows) for 2.5× kedge's
//! `kafka.request_timeout`, twice, during a stream: kedge times out, reconnects into the silence,
//! and once the path heals delivers everything; requests held in the network reach the broker
//! late, after kedge gave up on them, and must not be written twice.

use std::time::Duration;

use super::{ProxiedTansu, TOPIC, config};
use crate::support::kedge::Kedge;
use crate::support::mosquitto::Mosquitto;
use crate::support::proxy::Mode;
use crate::support::publish::{Publishing, readings};
use crate::support::verdict::{Stopwatch, read_back};

/// Messages published.
const MESSAGES: usize = 20_000;
/// Publishing pace, messages per second (about ten seconds in all).
const PER_SECOND: u32 = 2_000;
/// kedge's `kafka.request_timeout` in this test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long each blackhole lasts.
const SILENCE: Duration = Duration::from_millis(5_000);
/// Blackholes during the stream.
const BLACKHOLES: usize = 2;

#[test]
fn blackhole_longer_than_request_timeout_then_heal() {
    let _stopwatch = Stopwatch::start("faults::blackhole");
    let broker = ProxiedTansu::start();
    let mosquitto = Mosquitto::start();
    let kedge_config = config(
        mosquitto.port(),
        &broker.proxy.addr(),
        &format!("request_timeout = \"{}s\"", REQUEST_TIMEOUT.as_secs()),
    );
    let mut kedge = Kedge::start(&kedge_config);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published = readings(MESSAGES, 50);
    let publishing = Publishing::start(mosquitto.port(), published.clone(), Some(PER_SECOND));
    let proxy = &broker.proxy;
    for round in 1..=BLACKHOLES {
        std::thread::sleep(Duration::from_secs(1));
        let (accepted, up, acked) = (proxy.accepted(), proxy.bytes_up(), publishing.acked());
        proxy.set_mode(Mode::Blackhole);
        std::thread::sleep(SILENCE);
        assert_eq!(proxy.bytes_up(), up, "nothing passes a blackhole");
        eprintln!(
            "blackhole {round}: {SILENCE:?} of silence from publish {acked} to {}; kedge opened {} \
             connections into it",
            publishing.acked(),
            proxy.accepted() - accepted
        );
        kedge.assert_running();
        proxy.set_mode(Mode::Pass);
    }
    publishing.wait_acked(Duration::from_secs(60));

    let verdict = read_back(
        &broker.tansu.bootstrap(),
        TOPIC,
        &published,
        Duration::from_secs(90),
    );
    verdict.report(&format!("blackhole ({BLACKHOLES} × {SILENCE:?})"), MESSAGES);
    eprintln!(
        "blackhole: kedge logged {} failed produce requests, {} verify scans",
        kedge.log_count("produce request failed"),
        kedge.log_count("verified before resending")
    );
    kedge.assert_running();
    assert!(
        kedge.log_count("produce request failed") > 0,
        "kedge never noticed the silence (request_timeout not applied?)"
    );
    assert_eq!(
        verdict.unknown, 0,
        "records whose value was never published"
    );
    verdict.assert_exactly_once();
}
