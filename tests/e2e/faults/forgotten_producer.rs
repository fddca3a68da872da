//! A broker that no longer knows kedge's producer id.
//!
//! `tansu_producer_id_probe` records what tansu 0.6 (memory storage) answers to Produce requests
//! from producer ids it never issued, or issued before a restart, with sequences > 0, and to an
//! exact duplicate; it pins those answers so that a tansu upgrade that changes them is noticed.
//!
//! The two `forgotten_producer_id_*` tests are end to end: kedge delivers through the proxy, the
//! proxy blackholes (the requests of the last batches and any acknowledgements are held), kedge
//! is SIGKILLed (or not) with sealed, unacknowledged batches whose sequences are > 0, and the
//! broker is replaced by a fresh one on the same address (memory storage: it lost both the data
//! and the producer state). kedge then resends under a producer id the new broker never issued
//! (tansu answers 59 UNKNOWN_PRODUCER_ID, see the probe) — and which, since a restarted tansu
//! counts producer ids from 1 again, the new broker may hand out anew.
//!
//! What it proves: every message mosquitto acknowledged after the last record the old broker
//! confirmed arrives at the new broker, with no `kedge-seq` written twice, i.e. kedge recovers
//! from UNKNOWN_PRODUCER_ID / OUT_OF_ORDER_SEQUENCE-style answers instead of retrying forever.
//! What it cannot prove: that kedge avoids duplicates when the broker kept the data but forgot
//! the producer (real Kafka after `producer.id.expiration.ms`, or a broker with durable storage):
//! here the old records are gone, so a blind re-init-and-resequence would also pass. Records the
//! old broker had confirmed are lost with its memory; that is the broker's loss, not kedge's,
//! and they are not counted.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;
use kedge_wire::batch::{BatchCompression, ProducerIdentity, encode_batch};
use kedge_wire::client::{Cluster, ClusterSettings};
use kedge_wire::record::{Record, SequencedRecord};

use super::{ProxiedTansu, TOPIC, config};
use crate::support::consume::{Consumed, consume};
use crate::support::kedge::Kedge;
use crate::support::mosquitto::Mosquitto;
use crate::support::proxy::Mode;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::verdict::{Stopwatch, Verdict, read_back};

/// Topic the probe writes to (1 partition).
const PROBE_TOPIC: &str = "probe";
/// Records in each probe batch.
const PROBE_RECORDS: usize = 2;

/// Messages delivered to the first broker before the fault.
const BEFORE: usize = 3_000;
/// Messages published while the Kafka path is blackholed (kedge seals but gets no answer).
const DURING: usize = 3_000;
/// Messages published after kedge restarted against the new broker.
const AFTER: usize = 2_000;

#[test]
fn tansu_producer_id_probe() {
    let _stopwatch = Stopwatch::start("faults::producer_id_probe");
    let mut tansu = Tansu::start();
    tansu.create_topic(PROBE_TOPIC, 1);
    let port = tansu.port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (issued, answers) = runtime.block_on(async {
        let mut cluster = cluster(&tansu.bootstrap()).await;
        let issued = cluster.init_producer_id().await.expect("InitProducerId");
        let stranger = ProducerIdentity {
            producer_id: issued.producer_id + 1_000,
            producer_epoch: 0,
        };
        let mut answers = Vec::new();
        for (what, producer, sequence) in [
            ("issued id, sequence 0", issued, 0),
            ("issued id, same batch again", issued, 0),
            ("issued id, next sequence", issued, 2),
            ("issued id, sequence gap (10 after 4)", issued, 10),
            ("never-issued id, sequence 0", stranger, 0),
            ("never-issued id, sequence 6", stranger, 6),
        ] {
            answers.push((what, produce(&mut cluster, producer, sequence).await));
        }
        (issued, answers)
    });
    let kept = consume(&tansu.bootstrap(), PROBE_TOPIC, 4, Duration::from_secs(5));
    tansu.stop();
    let tansu = Tansu::start_on(port);
    tansu.create_topic(PROBE_TOPIC, 1);
    let (reissued, after_restart) = runtime.block_on(async {
        let mut cluster = cluster(&tansu.bootstrap()).await;
        let code = produce(&mut cluster, issued, 4).await;
        let reissued = cluster.init_producer_id().await.expect("InitProducerId");
        (reissued, code)
    });
    eprintln!("probe: issued {issued:?}");
    for (what, (code, offset)) in &answers {
        eprintln!("probe: {what}: error code {code}, base offset {offset}");
    }
    eprintln!(
        "probe: after a restart, id issued before it, sequence 4: error code {}, base offset {}; \
         the restarted broker then issued {reissued:?}",
        after_restart.0, after_restart.1
    );
    let seqs = |records: &[Consumed]| records.iter().map(Consumed::seq).collect::<Vec<_>>();
    let stored = consume(&tansu.bootstrap(), PROBE_TOPIC, 100, Duration::from_secs(5));
    eprintln!(
        "probe: the first broker kept kedge-seq {:?}; the restarted one holds {:?}",
        seqs(&kept),
        seqs(&stored)
    );
    // tansu 0.6 as observed: 46 for an exact duplicate, 45 for a gap, 59 for any producer id it
    // does not know (whatever the sequence, also one it issued before a restart), nothing
    // appended for any of those; and after a restart it issues the same producer id again.
    let codes: Vec<i16> = answers.iter().map(|(_, (code, _))| *code).collect();
    assert_eq!(codes, [0, 46, 0, 45, 59, 59], "tansu's answers changed");
    assert_eq!(
        after_restart.0, 59,
        "tansu's answer after a restart changed"
    );
    assert_eq!(
        seqs(&kept),
        [0, 1, 2, 3],
        "only the accepted batches are in the log"
    );
    assert!(stored.is_empty(), "memory storage starts empty");
    assert_eq!(reissued, issued, "tansu restarts its producer id counter");
}

/// A cluster view of the broker at `bootstrap` that knows the probe topic.
async fn cluster(bootstrap: &str) -> Cluster {
    let mut cluster = Cluster::new(ClusterSettings {
        bootstrap: vec![bootstrap.to_owned()],
        client_id: "kedge-e2e-probe".to_owned(),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        tls: None,
        sasl: None,
        max_batch_bytes: 1 << 20,
    });
    cluster
        .refresh_metadata(&[PROBE_TOPIC.to_owned()])
        .await
        .expect("metadata");
    cluster
}

/// Produces one batch of [`PROBE_RECORDS`] records at `base_sequence` to the probe topic;
/// returns the partition's error code and base offset.
async fn produce(
    cluster: &mut Cluster,
    producer: ProducerIdentity,
    base_sequence: i32,
) -> (i16, i64) {
    let first = u64::try_from(base_sequence).expect("sequence ≥ 0");
    let records: Vec<SequencedRecord> = (0..PROBE_RECORDS as u64)
        .map(|i| SequencedRecord {
            seq: first + i,
            record: Record {
                topic: PROBE_TOPIC.to_owned(),
                key: None,
                value: Bytes::from(format!("probe {} seq {}", producer.producer_id, first + i)),
                headers: Vec::new(),
                timestamp_ms: 1_700_000_000_000,
            },
        })
        .collect();
    let batch = encode_batch(
        producer,
        base_sequence,
        &kedge_wire::record::Origin {
            device: "probe-dev".into(),
            queue: 1,
        },
        &records,
        BatchCompression::None,
    )
    .expect("encode batch");
    let leader = cluster.leader(PROBE_TOPIC, 0).expect("probe leader");
    let broker = cluster.broker(leader).await.expect("connect to leader");
    let version = broker
        .version(ApiKey::Produce, 3..=12)
        .expect("Produce v3..v12");
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(PROBE_TOPIC)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ]);
    let response = broker
        .conn
        .call(&request, version, Duration::from_secs(5))
        .await
        .expect("Produce response");
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

#[test]
fn forgotten_producer_id_after_sigkill_loses_nothing() {
    forgotten_producer("faults::forgotten_producer_after_sigkill", true);
}

#[test]
fn forgotten_producer_id_while_kedge_runs_loses_nothing() {
    forgotten_producer("faults::forgotten_producer_while_running", false);
}

/// The end-to-end scenario of the module docs; with `sigkill` kedge dies during the silence and
/// resumes from its data dir, without it kedge lives through the broker's replacement.
fn forgotten_producer(name: &'static str, sigkill: bool) {
    let _stopwatch = Stopwatch::start(name);
    let mut broker = ProxiedTansu::start();
    let mosquitto = Mosquitto::start();
    let kedge_config = config(
        mosquitto.port(),
        &broker.proxy.addr(),
        "request_timeout = \"2s\"",
    );
    let mut kedge = Kedge::start(&kedge_config);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    // Phase 1: delivered and confirmed by the first broker (so kedge's sequences are > 0).
    let all = readings(BEFORE + DURING + AFTER, 50);
    let (before, rest) = all.split_at(BEFORE);
    let (during, after) = rest.split_at(DURING);
    let publishing = Publishing::start(mosquitto.port(), before.to_vec(), Some(5_000));
    publishing.wait_acked(Duration::from_secs(60));
    drop(publishing);
    let first = read_back(
        &broker.tansu.bootstrap(),
        TOPIC,
        before,
        Duration::from_secs(60),
    );
    first.report(&format!("{name}, first broker"), BEFORE);
    first.assert_exactly_once();

    // Phase 2: the path goes silent; kedge journals, seals and sends into it (and maybe dies).
    broker.proxy.set_mode(Mode::Blackhole);
    let held_from = broker.proxy.bytes_up();
    let publishing = Publishing::start(mosquitto.port(), during.to_vec(), Some(5_000));
    publishing.wait_acked(Duration::from_secs(60));
    drop(publishing);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(broker.proxy.bytes_up(), held_from, "the blackhole held");
    if sigkill {
        kedge.kill9();
    }
    let sealed_before_restart = kedge.log_count("resuming delivery of sealed batches");

    // The broker is replaced by one that never heard of kedge's producer id.
    broker.tansu.stop();
    broker.tansu = Tansu::start_advertising(broker.tansu_port, broker.proxy.port());
    broker.tansu.create_topic(TOPIC, 3);
    broker.proxy.set_mode(Mode::Pass);
    if sigkill {
        kedge.restart();
    }

    // Phase 3: new traffic after the fault.
    let publishing = Publishing::start(mosquitto.port(), after.to_vec(), Some(5_000));
    publishing.wait_acked(Duration::from_secs(60));
    let expected: Vec<_> = during.iter().chain(after).cloned().collect();
    let verdict = read_back(
        &broker.tansu.bootstrap(),
        TOPIC,
        &expected,
        Duration::from_secs(30),
    );
    verdict.report(&format!("{name}, second broker"), expected.len());
    let earlier = Verdict::of(before, &consume_quick(&broker.tansu));
    let confirmed_earlier = earlier.records - earlier.unknown;
    eprintln!(
        "{name}: kedge resumed sealed batches {} time(s) after the fault; {} producer ids \
         granted in all; {} produce requests failed; {} verify scans; {confirmed_earlier} \
         records of the first broker's era reappeared",
        kedge.log_count("resuming delivery of sealed batches") - sealed_before_restart,
        kedge.log_count("new idempotent producer id"),
        kedge.log_count("produce request failed"),
        kedge.log_count("verified before resending")
    );
    kedge.assert_running();
    verdict.assert_exactly_once();
}

/// Whatever the broker holds in `readings` now (a short read, for reporting only).
fn consume_quick(tansu: &Tansu) -> Vec<Consumed> {
    consume(&tansu.bootstrap(), TOPIC, BEFORE, Duration::from_secs(5))
}
