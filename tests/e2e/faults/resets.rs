//! Kafka connections reset (RST both ways) 50 times right after Produce bytes went upstream, and
//! cut 10 times in the middle of an upstream-bound request, while kedge ships one stream (faults
//! are paced by kedge's reconnects, so most land while it drains its backlog): kedge reconnects
//! and resends the same batches; the broker's sequence check must make every resend of a batch it
//! already wrote a no-op.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ProxiedTansu, TOPIC, config, seed};
use crate::support::kedge::Kedge;
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::verdict::{Stopwatch, read_back};

/// Messages published.
const MESSAGES: usize = 60_000;
/// Publishing pace, messages per second (about twenty seconds in all).
const PER_SECOND: u32 = 3_000;
/// Connection resets while requests are in flight.
const RESETS: usize = 50;
/// Upstream cuts in the middle of a request.
const CUTS: usize = 10;

#[test]
fn connection_resets_mid_produce_neither_lose_nor_duplicate() {
    let _stopwatch = Stopwatch::start("faults::resets");
    let mut rng = StdRng::seed_from_u64(seed());
    let broker = ProxiedTansu::start();
    let mosquitto = Mosquitto::start();
    let kedge = Kedge::start(&config(mosquitto.port(), &broker.proxy.addr(), ""));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published = readings(MESSAGES, 50);
    let publishing =
        Publishing::start_split(mosquitto.port(), published.clone(), 2, Some(PER_SECOND));
    let proxy = &broker.proxy;
    let (mut in_flight, mut cuts) = (0, 0);
    let started = Instant::now();
    // Every third of the first 30 faults is a cut (early, while the publisher still feeds kedge
    // and cuts find upstream traffic), the others resets.
    for fault in 1..=RESETS + CUTS {
        std::thread::sleep(Duration::from_millis(rng.random_range(40..=160)));
        if fault % 3 == 0 && fault <= 3 * CUTS {
            let killed = proxy.killed();
            proxy.cut_after(rng.random_range(0..=4096));
            if wait_for_change(killed, || proxy.killed(), Duration::from_secs(3)) {
                cuts += 1;
            } else {
                proxy.cut_after(u64::MAX);
            }
        } else {
            // Reset just after request bytes went upstream, i.e. while a response is outstanding.
            if wait_for_change(
                proxy.bytes_up(),
                || proxy.bytes_up(),
                Duration::from_secs(1),
            ) {
                in_flight += 1;
            }
            proxy.reset();
        }
        if fault % 12 == 0 {
            eprintln!(
                "resets: fault {fault}/{} at {:.1?}, {} publishes acknowledged",
                RESETS + CUTS,
                started.elapsed(),
                publishing.acked()
            );
        }
    }
    publishing.wait_acked(Duration::from_secs(60));

    let verdict = read_back(
        &broker.tansu.bootstrap(),
        TOPIC,
        &published,
        Duration::from_secs(120),
    );
    verdict.report(
        &format!("resets ({RESETS} resets, {in_flight} right after request bytes; {cuts} cuts)"),
        MESSAGES,
    );
    eprintln!(
        "resets: proxy saw {} connections, {} killed; kedge logged {} failed produce requests, \
         {} verify scans ({} OUT_OF_ORDER_SEQUENCE_NUMBER)",
        proxy.accepted(),
        proxy.killed(),
        kedge.log_count("produce request failed"),
        kedge.log_count("verified before resending"),
        kedge.log_count("OUT_OF_ORDER_SEQUENCE_NUMBER")
    );
    assert_eq!(
        cuts, CUTS,
        "only {cuts} of {CUTS} armed cuts met upstream traffic within 3 s: kedge stopped sending \
         during the stream (see its log)"
    );
    assert_eq!(
        verdict.unknown, 0,
        "records whose value was never published"
    );
    verdict.assert_exactly_once();
}

/// Waits up to `timeout` for a proxy counter to move past `before`; false if it did not.
fn wait_for_change(before: u64, counter: impl Fn() -> u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while counter() == before {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}
