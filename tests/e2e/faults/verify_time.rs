//! What a restart costs when every partition has a full window of unacknowledged batches: the
//! Kafka path goes silent while readings keep coming, so kedge seals 5 batches per partition that
//! it cannot get acknowledged; it is SIGKILLed, the path heals (the requests held in it reach the
//! broker late, so some batches land and some do not), and kedge restarts. Before resending it
//! scans each partition's tail; the figure is the time those scans take.

use std::time::Duration;

use super::{ProxiedTansu, TOPIC, config};
use crate::support::kedge::Kedge;
use crate::support::mosquitto::Mosquitto;
use crate::support::proxy::Mode;
use crate::support::publish::{Publishing, readings};
use crate::support::verdict::{Stopwatch, read_back};

/// Messages published while the path is silent: enough for many commits per partition.
const MESSAGES: usize = 3_000;
/// Publishing pace while the path is silent.
const PER_SECOND: u32 = 1_000;
/// kedge's per-partition window of unacknowledged batches.
const WINDOW: usize = 5;

#[test]
fn restart_verifies_three_partitions_of_five_batches() {
    let _stopwatch = Stopwatch::start("faults::verify_time");
    let broker = ProxiedTansu::start();
    let mosquitto = Mosquitto::start();
    // Small batches, so that the window fills with few records.
    let kedge_config = config(
        mosquitto.port(),
        &broker.proxy.addr(),
        "batch_max_records = 50",
    );
    let mut kedge = Kedge::start(&kedge_config);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    // Let kedge connect and learn the partitions, then silence the path.
    let warmup = readings(30, 50);
    Publishing::start(mosquitto.port(), warmup.clone(), None).wait_acked(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    broker.proxy.set_mode(Mode::Blackhole);
    let silent: Vec<_> = readings(MESSAGES + warmup.len(), 50).split_off(warmup.len());
    Publishing::start(mosquitto.port(), silent.clone(), Some(PER_SECOND))
        .wait_acked(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    kedge.kill9();
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
    verdict.report("verify_time", published.len());

    let scans: Vec<(u64, u64, f64)> = kedge
        .log_text()
        .lines()
        .filter(|l| l.contains("verified before resending"))
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let f = &v["fields"];
            let took = f["took"].as_str()?;
            Some((
                f["unacknowledged"].as_u64()?,
                f["already_in_kafka"].as_u64()?,
                millis(took)?,
            ))
        })
        .collect();
    for (unacked, landed, ms) in &scans {
        eprintln!(
            "verify_time: one partition, {unacked} unacknowledged batches, {landed} already in Kafka, scan took {ms:.2} ms"
        );
    }
    let total: f64 = scans.iter().map(|s| s.2).sum();
    eprintln!(
        "verify_time: {} partitions verified after the restart in {total:.2} ms in all",
        scans.len()
    );
    assert_eq!(
        scans.len(),
        3,
        "every partition is verified once after the restart"
    );
    // A seal takes whole journal chunks, and a chunk whose records would overflow one
    // partition's window waits: the other partitions may stop a batch or two short of it.
    assert!(
        scans
            .iter()
            .all(|s| (WINDOW - 2..=WINDOW).contains(&(s.0 as usize))),
        "each partition had (nearly) a full window of {WINDOW} unacknowledged batches: {scans:?}"
    );
    assert_eq!(
        verdict.unknown, 0,
        "records whose value was never published"
    );
    verdict.assert_exactly_once();
}

/// Milliseconds in a Rust `Duration` debug string such as "1.234567ms", "850µs" or "2.1s".
fn millis(debug: &str) -> Option<f64> {
    for (suffix, scale) in [("ns", 1e-6), ("µs", 1e-3), ("ms", 1.0), ("s", 1e3)] {
        if let Some(n) = debug.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    None
}
