//! Every Kafka codec (gzip, snappy, lz4, zstd, none), both ways: kedge writes each, and
//! librdkafka reads every record back exactly once; librdkafka writes each, and `kedge audit`
//! reads it. Each time the batches as the broker holds them are read raw to check that they
//! are in the codec asked for, so that an agent or a producer that silently wrote another codec
//! (or none) could not pass.

use std::time::Duration;

use kedge_wire::batch::fetched_entries;
use kedge_wire::client::Cluster;
use kedge_wire::codec;

use crate::audit::{kedge_audit, produce_batched};
use crate::support::consume::{consume, tally};
use crate::support::kedge::{Kedge, READINGS_ROUTING, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;

const CODECS: [&str; 5] = ["gzip", "snappy", "lz4", "zstd", "none"];

/// Messages kedge carries per codec.
const MESSAGES: usize = 400;

/// The codec of every RecordBatch in partition 0 of `topic`, in offset order.
pub fn batch_codecs(bootstrap: &str, topic: &str) -> Vec<&'static str> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut codecs = Vec::new();
    runtime.block_on(async {
        let mut cluster = Cluster::new(kedge::audit::plaintext(bootstrap.to_owned()));
        cluster
            .describe_topics(&[topic.to_owned()])
            .await
            .expect("metadata");
        cluster
            .read_partition(topic, 0, 0, Duration::from_millis(200), |records| {
                let mut next = None;
                for entry in fetched_entries(records)? {
                    next = Some(entry.last_offset + 1);
                    codecs.push(entry.compression.map_or("old format", codec::name));
                }
                Ok(next)
            })
            .await
            .expect("read the partition");
    });
    codecs
}

#[test]
fn kedge_writes_every_codec_and_librdkafka_reads_each_record_once() {
    let tansu = Tansu::start();
    let bootstrap = tansu.bootstrap();
    for codec in CODECS {
        let topic = format!("readings-{codec}");
        tansu.create_topic(&topic, 1);
        let mosquitto = Mosquitto::start();
        let routing =
            READINGS_ROUTING.replace("topic = \"readings\"", &format!("topic = \"{topic}\""));
        let config = pipeline_config(mosquitto.port(), &bootstrap, &routing).replace(
            "linger = \"5ms\"",
            &format!("linger = \"5ms\"\ncompression = \"{codec}\""),
        );
        let mut kedge = Kedge::start(&config);
        mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

        let published = readings(MESSAGES, 5);
        let publishing = Publishing::start(mosquitto.port(), published.clone(), None);
        publishing.wait_acked(Duration::from_secs(60));
        let records = consume(&bootstrap, &topic, MESSAGES, Duration::from_secs(60));
        let tally = tally(&published, &records);
        assert!(
            tally.missing.is_empty() && tally.duplicates == 0 && tally.unknown == 0,
            "{codec}: {tally:?}"
        );
        assert_eq!(records.len(), MESSAGES, "{codec}");

        let codecs = batch_codecs(&bootstrap, &topic);
        assert!(
            !codecs.is_empty() && codecs.iter().all(|c| *c == codec),
            "{codec}: the batches in Kafka are {codecs:?}"
        );
        // Several records share a batch, so the codec compressed more than one record at once.
        assert!(codecs.len() < MESSAGES, "{codec}: {} batches", codecs.len());

        let config_path = kedge.config_path();
        let (code, out, err) = kedge_audit(&[
            "--config",
            config_path.to_str().expect("UTF-8 path"),
            "--topic",
            &topic,
        ]);
        assert_eq!(code, 0, "{codec}: stdout:\n{out}\nstderr:\n{err}");
        let last = MESSAGES - 1;
        assert!(
            out.contains(&format!(
                ": {MESSAGES} records, kedge-seq 0..={last}, 0 missing, 0 duplicates, 0 backwards"
            )) && out.ends_with(&format!("topic {topic}: clean\n")),
            "{codec}: {out}"
        );
        kedge.terminate(Duration::from_secs(10));
    }
}

#[test]
fn audit_reads_what_librdkafka_wrote_in_every_codec() {
    let tansu = Tansu::start();
    let bootstrap = tansu.bootstrap();
    // dev-a 1..=60 with 17 lost and 30 written again at the end.
    let specs: Vec<String> = (1..=60)
        .filter(|&seq| seq != 17)
        .chain([30])
        .map(|seq| format!("0:dev-a:{seq}"))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    for codec in CODECS {
        let topic = format!("crafted-{codec}");
        tansu.create_topic(&topic, 1);
        produce_batched(&bootstrap, &topic, &specs, codec, 200);

        let codecs = batch_codecs(&bootstrap, &topic);
        assert!(
            !codecs.is_empty() && codecs.iter().all(|c| *c == codec),
            "{codec}: the batches in Kafka are {codecs:?}"
        );
        assert!(
            codecs.len() < specs.len(),
            "{codec}: {} batches",
            codecs.len()
        );

        let (code, out, err) = kedge_audit(&["--bootstrap", &bootstrap, "--topic", &topic]);
        assert_eq!(code, 1, "{codec}: stdout:\n{out}\nstderr:\n{err}");
        assert!(
            out.contains(
                "device dev-a: 60 records, kedge-seq 1..=60, 1 missing, 1 duplicates, 1 backwards"
            ),
            "{codec}: {out}"
        );
        assert!(
            out.contains(&format!("  missing from topic {topic}: 17\n")),
            "{out}"
        );
        assert!(!out.contains("do not decode"), "{codec}: {out}");
    }
}
