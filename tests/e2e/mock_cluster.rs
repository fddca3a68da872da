//! Faults a real Kafka cluster produces, injected by librdkafka's mock cluster while QoS 1 traffic
//! flows through kedge: leadership errors and moves, timeouts, a broker going down, a slow
//! leader, and an old broker's API versions. Every message must arrive, in `kedge-seq` order
//! within each partition; duplicates are counted and printed.
//!
//! The mock does not validate idempotent sequences: after a batch fails, a pipelined later batch
//! of the same partition is appended where Kafka would refuse it (OUT_OF_ORDER_SEQUENCE_NUMBER).
//! kedge then resends the failed batch, so nothing is lost, but it lands after the later one. Real
//! Kafka keeps the order through the sequence check; against the mock, the tests that inject
//! Produce errors run with `max_in_flight = 1` so that they can assert the order too.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::support::consume::{Consumed, consume, tally};
use crate::support::kedge::{Kedge, pipeline_config};
use crate::support::mock_cluster::MockCluster;
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing, readings};
use crate::support::wait_until;

/// Messages published per test.
const MESSAGES: usize = 2_000;
/// Distinct keys (`sensors/dev-N/reading`).
const DEVICES: usize = 20;
/// Publishing rate, so that faults land while messages flow (about 4 s of traffic).
const PER_SECOND: u32 = 500;
/// Brokers in the mock cluster; partition leaders are spread over them.
const BROKERS: u32 = 3;
/// Partitions of `readings`.
const PARTITIONS: u32 = 3;
/// Produce error codes.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const NOT_ENOUGH_REPLICAS: i16 = 19;

use crate::support::kedge::READINGS_ROUTING as ROUTING;

/// What one run delivered, as the independent consumer read it back.
#[derive(Debug)]
struct Outcome {
    published: usize,
    delivered: usize,
    missing: usize,
    duplicates: usize,
    out_of_order: usize,
}

/// Runs mosquitto and kedge against a fresh mock cluster (after the `before_start` commands),
/// publishes [`MESSAGES`] readings at [`PER_SECOND`], calls `fault` while they flow, then reads
/// everything back and checks it.
fn run_with_fault(
    name: &str,
    before_start: &[&str],
    kafka_settings: &str,
    fault: impl FnOnce(&mut MockCluster, &Publishing),
) -> Outcome {
    let mut mock = MockCluster::start(BROKERS, &[("readings", PARTITIONS)]);
    for command in before_start {
        mock.command(command);
    }
    let mosquitto = Mosquitto::start();
    let mut kedge = Kedge::start(&config(mosquitto.port(), mock.brokers(), kafka_settings));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published = readings(MESSAGES, DEVICES);
    let started = Instant::now();
    let publishing = Publishing::start(mosquitto.port(), published.clone(), Some(PER_SECOND));
    fault(&mut mock, &publishing);
    publishing.wait_acked(Duration::from_secs(30));
    kedge.assert_running();

    let records = consume(
        &mock.bootstrap(),
        "readings",
        MESSAGES,
        Duration::from_secs(20),
    );
    eprintln!(
        "mock_cluster {name}: read back {} records {:.1?} after the first publish",
        records.len(),
        started.elapsed()
    );
    let outcome = check(name, &published, &records);
    kedge.assert_running();
    outcome
}

/// kedge's config for the mock: every broker as bootstrap, short timeouts and backoff, and
/// `kafka_settings` (lines for the `[kafka]` section).
fn config(mqtt_port: u16, brokers: &[String], kafka_settings: &str) -> String {
    let base = pipeline_config(mqtt_port, &brokers[0], ROUTING);
    let list = brokers
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = base
        .replace(
            &format!("bootstrap = [\"{}\"]", brokers[0]),
            &format!("bootstrap = [{list}]\nrequest_timeout = \"3s\"\n{kafka_settings}"),
        )
        .replace(
            "retry_backoff = { initial = \"100ms\", max = \"1s\" }",
            "retry_backoff = { initial = \"50ms\", max = \"500ms\" }",
        );
    assert!(
        config.contains("request_timeout") && config.contains("\"500ms\""),
        "pipeline_config changed shape; adjust mock_cluster::config:\n{base}"
    );
    config
}

/// Matches records to published messages, prints the counts, and asserts nothing is missing or
/// foreign and every record carries a `kedge-seq`.
fn check(name: &str, published: &[Message], records: &[Consumed]) -> Outcome {
    let tally = tally(published, records);
    let mut by_partition: BTreeMap<u32, Vec<&Consumed>> = BTreeMap::new();
    for record in records {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    let (mut out_of_order, mut seq_duplicates) = (0, 0);
    for partition in by_partition.values_mut() {
        partition.sort_by_key(|r| r.offset);
        let (mut seen, mut highest) = (HashSet::new(), None);
        for record in partition.iter() {
            let seq = record.seq();
            if !seen.insert(seq) {
                seq_duplicates += 1;
            } else if highest.is_some_and(|h| seq < h) {
                out_of_order += 1;
            }
            highest = highest.max(Some(seq));
        }
    }
    let outcome = Outcome {
        published: published.len(),
        delivered: records.len(),
        missing: tally.missing.len(),
        duplicates: tally.duplicates,
        out_of_order,
    };
    eprintln!(
        "mock_cluster {name}: published {}, delivered {}, missing {}, duplicates {} \
         (kedge-seq duplicates {seq_duplicates}), out of order {}",
        outcome.published,
        outcome.delivered,
        outcome.missing,
        outcome.duplicates,
        outcome.out_of_order
    );
    assert_eq!(tally.unknown, 0, "{name}: records never published");
    assert_eq!(
        tally.duplicates, seq_duplicates,
        "{name}: payload and kedge-seq duplicates disagree"
    );
    assert!(
        tally.missing.is_empty(),
        "{name}: {} messages missing, e.g. #{:?}",
        tally.missing.len(),
        &tally.missing[..tally.missing.len().min(10)]
    );
    outcome
}

/// Waits (bounded) until mosquitto acknowledged `count` publishes, so a fault lands mid-stream.
fn after_acked(publishing: &Publishing, count: usize) {
    wait_until(
        &format!("{count} publishes acknowledged"),
        Duration::from_secs(30),
        || publishing.acked() >= count,
    );
}

/// One request in flight per broker: the mock cannot refuse a pipelined batch after a failed one.
const UNPIPELINED: &str = "max_in_flight = 1";

#[test]
fn not_leader_errors_and_a_leadership_move_lose_nothing() {
    let outcome = run_with_fault("not_leader", &[], UNPIPELINED, |mock, publishing| {
        after_acked(publishing, 300);
        mock.command(&format!(
            "errors produce {NOT_LEADER_OR_FOLLOWER} {NOT_LEADER_OR_FOLLOWER} {NOT_LEADER_OR_FOLLOWER}"
        ));
        after_acked(publishing, 800);
        // A real move: the old leader now answers NOT_LEADER_OR_FOLLOWER by itself.
        mock.command("leader readings 0 2");
        after_acked(publishing, 1300);
        mock.command(&format!(
            "errors produce {NOT_LEADER_OR_FOLLOWER} {NOT_LEADER_OR_FOLLOWER}"
        ));
        mock.command("leader readings 1 3");
    });
    assert_eq!(outcome.out_of_order, 0, "not_leader: {outcome:?}");
}

#[test]
fn request_timeouts_and_not_enough_replicas_lose_nothing() {
    let outcome = run_with_fault("timeouts", &[], UNPIPELINED, |mock, publishing| {
        after_acked(publishing, 300);
        mock.command(&format!(
            "errors produce {REQUEST_TIMED_OUT} {NOT_ENOUGH_REPLICAS} {REQUEST_TIMED_OUT}"
        ));
        after_acked(publishing, 1000);
        mock.command(&format!(
            "errors produce {NOT_ENOUGH_REPLICAS} {NOT_ENOUGH_REPLICAS} {REQUEST_TIMED_OUT} {NOT_ENOUGH_REPLICAS}"
        ));
    });
    assert_eq!(outcome.out_of_order, 0, "timeouts: {outcome:?}");
}

#[test]
fn a_broker_down_for_seconds_then_up_loses_nothing() {
    let outcome = run_with_fault("broker_down", &[], "", |mock, publishing| {
        after_acked(publishing, 300);
        mock.command("down 1");
        std::thread::sleep(Duration::from_secs(3));
        mock.command("up 1");
    });
    assert_eq!(outcome.out_of_order, 0, "broker_down: {outcome:?}");
}

#[test]
fn a_slow_leader_loses_nothing() {
    let outcome = run_with_fault("slow_leader", &[], "", |mock, publishing| {
        after_acked(publishing, 300);
        mock.command("rtt 1 500");
        publishing.wait_acked(Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(3));
        // The consumer fetches one batch per round trip from the mock: let it read at full speed.
        mock.command("rtt 1 0");
    });
    assert_eq!(outcome.out_of_order, 0, "slow_leader: {outcome:?}");
}

#[test]
fn an_old_broker_gets_zstd_at_produce_v7_and_metadata_v1() {
    // zstd needs Produce v7, the only version left; kedge needs Metadata v1+. (The mock's own
    // defaults are already old: ApiVersions ≤ 2, Metadata ≤ 2, Produce ≤ 7.)
    let outcome = run_with_fault(
        "old_broker",
        &[
            "version apiversions 0 1",
            "version metadata 0 1",
            "version produce 7 7",
        ],
        "",
        |_, _| {},
    );
    assert_eq!(outcome.out_of_order, 0, "old_broker: {outcome:?}");
}

/// Produce error code MESSAGE_TOO_LARGE: the broker will not take the batch as it is.
const MESSAGE_TOO_LARGE: i16 = 10;
/// Produce error code INVALID_TOPIC_EXCEPTION: the broker will never take the batch.
const INVALID_TOPIC_EXCEPTION: i16 = 17;

#[test]
fn a_batch_too_large_is_split_and_delivered_not_dead_lettered() {
    let mut mock = MockCluster::start(
        BROKERS,
        &[("readings", PARTITIONS), ("kedge-dead-letter", 1)],
    );
    let mosquitto = Mosquitto::start();
    let kedge = Kedge::start(&config(mosquitto.port(), mock.brokers(), UNPIPELINED));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    // The first Produce is refused as too large; the readings come in a burst, so that its
    // batch holds many of them.
    mock.command(&format!("errors produce {MESSAGE_TOO_LARGE}"));
    let published = readings(MESSAGES, DEVICES);
    Publishing::start(mosquitto.port(), published.clone(), None)
        .wait_acked(Duration::from_secs(30));
    let delivered = consume(
        &mock.bootstrap(),
        "readings",
        MESSAGES,
        Duration::from_secs(30),
    );
    let tally = tally(&published, &delivered);
    assert!(tally.missing.is_empty(), "{} missing", tally.missing.len());
    assert_eq!(tally.duplicates, 0);
    assert!(
        kedge.log_count("Kafka refused a batch; split it in two") >= 1,
        "the refused batch was not split"
    );
    assert_eq!(kedge.log_count("batch moved to the dead-letter topic"), 0);
}

#[test]
fn a_batch_refused_for_good_goes_to_the_dead_letter_topic() {
    let mut mock = MockCluster::start(
        BROKERS,
        &[("readings", PARTITIONS), ("kedge-dead-letter", 1)],
    );
    let mosquitto = Mosquitto::start();
    let _kedge = Kedge::start(&config(mosquitto.port(), mock.brokers(), UNPIPELINED));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    let published = readings(MESSAGES, DEVICES);
    let publishing = Publishing::start(mosquitto.port(), published.clone(), Some(PER_SECOND));
    after_acked(&publishing, 300);
    mock.command(&format!("errors produce {INVALID_TOPIC_EXCEPTION}"));
    publishing.wait_acked(Duration::from_secs(30));

    let delivered = consume(
        &mock.bootstrap(),
        "readings",
        MESSAGES,
        Duration::from_secs(10),
    );
    let dead = consume(
        &mock.bootstrap(),
        "kedge-dead-letter",
        1,
        Duration::from_secs(10),
    );
    eprintln!(
        "mock_cluster dead_letter: {} records in readings, {} in kedge-dead-letter",
        delivered.len(),
        dead.len()
    );
    assert!(
        !dead.is_empty(),
        "the refused batch reached the dead-letter topic"
    );
    for record in &dead {
        let why = record.header("kedge-error").expect("kedge-error header");
        assert!(
            why.contains("INVALID_TOPIC_EXCEPTION"),
            "reason names the error: {why}"
        );
        assert_eq!(record.header("kedge-topic").as_deref(), Some("readings"));
    }
    // Every message is in exactly one of the two topics, under its own kedge-seq.
    let all: Vec<Consumed> = delivered.into_iter().chain(dead).collect();
    let tally = tally(&published, &all);
    assert_eq!(tally.unknown, 0, "records never published");
    assert!(
        tally.missing.is_empty(),
        "{} messages missing",
        tally.missing.len()
    );
    assert_eq!(
        tally.duplicates, 0,
        "messages in both topics or twice in one"
    );
    let seqs: HashSet<u64> = all.iter().map(Consumed::seq).collect();
    assert_eq!(seqs.len(), all.len(), "kedge-seq duplicates");
}
