//! `kedge audit`: an independent reader that checks what reached Kafka, by the `kedge-device`
//! and `kedge-seq` headers every kedge record carries.

pub mod analysis;

use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;
use analysis::{Auditor, Report, TopicId};
use kedge_wire::KafkaError;
use kedge_wire::batch;
use kedge_wire::client::{Cluster, ClusterSettings};

/// How long the broker may wait for data on each Fetch (see [`kedge_wire::client::read_tail`]).
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// What to read.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// How to reach the cluster.
    pub cluster: ClusterSettings,
    /// Topics read together: a device's sequence spans every topic its kedge writes to.
    pub topics: Vec<String>,
    /// Only this device is judged when set.
    pub device: Option<String>,
    /// Offset to start every partition at; the earliest offset when `None`.
    pub from_offset: Option<i64>,
    /// Topics the cluster does not have are skipped and named in the report instead of failing
    /// the audit: set for topics taken from a config, which a kedge may never have written to
    /// (the dead-letter topic, typically). The audit still fails when none exists.
    pub skip_absent: bool,
}

impl AuditSettings {
    /// An audit of what a kedge running `config` wrote, read over `cluster`: `topics` when
    /// given, else every topic it can write to; `device` when given, else the config's own
    /// device unless `all_devices`.
    pub fn for_config(
        config: &Config,
        cluster: ClusterSettings,
        topics: Vec<String>,
        device: Option<String>,
        all_devices: bool,
        from_offset: Option<i64>,
    ) -> Self {
        let skip_absent = topics.is_empty();
        let topics = if skip_absent {
            config_topics(config)
        } else {
            topics
        };
        let device = match device {
            Some(d) => Some(d),
            None if all_devices => None,
            // Already the hostname-derived id when the file sets none, as `kedge run` has it.
            None => Some(config.agent.device_id.clone()),
        };
        AuditSettings {
            cluster,
            topics,
            device,
            from_offset,
            skip_absent,
        }
    }
}

/// A plaintext, unauthenticated connection to the cluster at `bootstrap` (`host:port`).
pub fn plaintext(bootstrap: String) -> ClusterSettings {
    ClusterSettings {
        bootstrap: vec![bootstrap],
        client_id: "kedge-audit".into(),
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        tls: None,
        sasl: None,
        // Without a config, any topic of any kedge: batches up to kedge's largest setting.
        max_batch_bytes: crate::config::MAX_BATCH_BYTES.bytes() as usize,
    }
}

/// Every topic a kedge running `config` routes records to, in config order without repeats:
/// the routing rules' topics, the default topic, the dead-letter topic. Topics that plugins
/// pick themselves appear nowhere in a config and are not included.
pub fn config_topics(config: &Config) -> Vec<String> {
    let routing = &config.routing;
    let mut topics: Vec<String> = Vec::new();
    let named = routing.rules.iter().map(|r| &r.topic);
    for topic in named
        .chain(&routing.default_topic)
        .chain([&routing.dead_letter_topic])
    {
        if !topics.contains(topic) {
            topics.push(topic.clone());
        }
    }
    topics
}

/// Why an audit could not be done.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The cluster could not be reached or answered with an error.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The topic is unknown to the cluster.
    #[error("topic {0} does not exist (or has no partitions)")]
    NoTopic(String),
    /// The cluster answered another error for the topic (e.g. `TOPIC_AUTHORIZATION_FAILED`).
    #[error("Kafka answers {1} for topic {0}")]
    TopicRefused(String, String),
    /// None of the topics taken from a config is known to the cluster.
    #[error("none of the topics {} exists (or has partitions)", .0.join(", "))]
    NoTopics(Vec<String>),
}

/// Reads every partition of the topics up to their current end and judges what it found.
pub async fn audit(settings: &AuditSettings) -> Result<Report, AuditError> {
    let mut cluster = Cluster::new(settings.cluster.clone());
    let refused = cluster.describe_topics(&settings.topics).await?;
    let mut auditor = Auditor::new(settings.device.clone());
    let mut absent = Vec::new();
    for topic in &settings.topics {
        let partitions = cluster
            .topics()
            .get(topic)
            .map_or(0, |t| t.leaders.len() as i32);
        if partitions == 0 {
            if let Some((_, error)) = refused
                .iter()
                .find(|(t, e)| t == topic && e != "UNKNOWN_TOPIC_OR_PARTITION")
            {
                return Err(AuditError::TopicRefused(topic.clone(), error.to_string()));
            }
            if !settings.skip_absent {
                return Err(AuditError::NoTopic(topic.clone()));
            }
            absent.push(topic.clone());
            continue;
        }
        let id = auditor.topic(topic);
        for partition in 0..partitions {
            let from = match settings.from_offset {
                Some(n) => n,
                None => cluster.earliest_offset(topic, partition).await?,
            };
            let mut floor = from;
            cluster
                .read_partition(topic, partition, from, FETCH_WAIT, |records| {
                    take(&mut auditor, id, partition, &mut floor, records)
                })
                .await?;
        }
    }
    // Nothing read at all is a wrong cluster or a kedge that never delivered, not a clean audit.
    if !absent.is_empty() && absent.len() == settings.topics.len() {
        return Err(AuditError::NoTopics(absent));
    }
    let mut report = auditor.finish();
    report.absent_topics = absent;
    Ok(report)
}

/// Feeds one Fetch's complete batches to the auditor; the offset after the last one.
///
/// A Fetch returns whole batches, so the first may begin before the offset asked for: records
/// below `floor` were either not asked for or already counted, and are skipped.
fn take(
    auditor: &mut Auditor,
    topic: TopicId,
    partition: i32,
    floor: &mut i64,
    records: &Bytes,
) -> Result<Option<i64>, batch::BatchError> {
    let mut next = None;
    for entry in batch::fetched_entries(records)? {
        let last_offset = entry.last_offset;
        next = Some(last_offset + 1);
        // Old-format message sets hold no kedge record.
        if !entry.readable() {
            continue;
        }
        let records = match entry.records() {
            Ok(records) => records,
            Err(e) => {
                let at = entry.base_offset;
                auditor.undecodable(topic, || format!("partition {partition} offset {at}: {e}"));
                continue;
            }
        };
        for r in records {
            let offset = entry.base_offset + r.offset_delta;
            if offset < *floor {
                continue;
            }
            *floor = offset + 1;
            auditor.record(
                topic,
                partition,
                offset,
                r.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())),
            );
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A config with `agent` and `routing` (whole sections, or nothing).
    fn config(agent: &str, routing: &str) -> Config {
        let text = format!(
            "{agent}\n{}\n{routing}\n",
            config_text("[kafka]\nbootstrap = [\"127.0.0.1:9092\"]\n")
        );
        Config::parse(&text, Path::new("kedge.toml")).expect("valid config")
    }

    /// A config text with the `kafka` section given (`[kafka]` and its subtables).
    fn config_text(kafka: &str) -> String {
        format!("{kafka}\n[mqtt]\nsubscriptions = [{{ filter = \"sensors/#\" }}]\n")
    }

    fn settings(
        config: &Config,
        topics: &[&str],
        device: Option<&str>,
        all_devices: bool,
    ) -> AuditSettings {
        AuditSettings::for_config(
            config,
            plaintext("127.0.0.1:1".into()),
            topics.iter().map(|t| t.to_string()).collect(),
            device.map(str::to_owned),
            all_devices,
            None,
        )
    }

    /// Batches of kedge's in any codec are read; one that does not decode is counted and
    /// named, and the reading goes on past it.
    #[test]
    fn every_codec_is_read_and_an_undecodable_batch_is_reported_not_fatal() {
        use batch::{BatchCompression, ProducerIdentity, encode_batch};
        use kedge_wire::record::{Origin, Record, SequencedRecord};
        let origin = Origin {
            device: "d".into(),
            queue: 1,
        };
        let producer = ProducerIdentity {
            producer_id: 1,
            producer_epoch: 0,
        };
        let one = |seq: u64, codec| {
            let record = SequencedRecord {
                seq,
                record: Record {
                    topic: "t".into(),
                    key: None,
                    value: Bytes::from_static(b"v"),
                    headers: vec![],
                    timestamp_ms: 1,
                },
            };
            let mut bytes = encode_batch(producer, seq as i32, &origin, &[record], codec)
                .unwrap()
                .to_vec();
            bytes[..8].copy_from_slice(&(seq as i64).to_be_bytes());
            bytes
        };
        let codecs = [
            BatchCompression::Gzip,
            BatchCompression::Snappy,
            BatchCompression::Lz4,
            BatchCompression::Zstd,
            BatchCompression::None,
        ];
        let mut log = Vec::new();
        for (seq, codec) in (0..).zip(codecs) {
            log.extend(one(seq, codec));
        }
        // Offset 5: an lz4 batch whose body does not decode, with a valid CRC.
        let mut broken = one(5, BatchCompression::Lz4);
        broken[61..].fill(0xAB);
        let crc = crc32c::crc32c(&broken[21..]);
        broken[17..21].copy_from_slice(&crc.to_be_bytes());
        log.extend(broken);
        log.extend(one(6, BatchCompression::Gzip));

        let mut auditor = Auditor::new(None);
        let t = auditor.topic("t");
        let mut floor = 0;
        let next = take(&mut auditor, t, 0, &mut floor, &Bytes::from(log)).unwrap();
        assert_eq!(next, Some(7));
        let report = auditor.finish();
        assert_eq!(report.devices[0].records, 6);
        assert_eq!(report.devices[0].missing, 1);
        let [(topic, 1, first)] = report.undecodable.as_slice() else {
            panic!("{:?}", report.undecodable);
        };
        assert_eq!(topic, "t");
        assert!(first.starts_with("partition 0 offset 5: "), "{first}");
        assert!(
            report
                .to_string()
                .contains("1 batches in topic t do not decode, their records not counted"),
            "{report}"
        );
    }

    const ROUTING: &str = r#"[routing]
default_topic = "other"
dead_letter_topic = "dlq"

[[routing.rules]]
filter = "sensors/+/reading"
topic = "readings"

[[routing.rules]]
filter = "sensors/+/status"
topic = "status"

[[routing.rules]]
filter = "sensors/+/alarm"
topic = "readings"
"#;

    #[test]
    fn topics_default_to_every_routed_topic_once() {
        let c = config("", ROUTING);
        assert_eq!(config_topics(&c), ["readings", "status", "other", "dlq"]);
        let s = settings(&c, &[], None, false);
        assert_eq!(s.topics, ["readings", "status", "other", "dlq"]);
        assert!(s.skip_absent, "a config's topics may not all exist yet");
        // A rule may route to the dead-letter topic itself: still read once.
        let c = config(
            "",
            "[routing]\n[[routing.rules]]\nfilter = \"#\"\ntopic = \"kedge-dead-letter\"\n",
        );
        assert_eq!(config_topics(&c), ["kedge-dead-letter"]);
    }

    #[test]
    fn without_routing_only_the_dead_letter_topic_is_written() {
        assert_eq!(config_topics(&config("", "")), ["kedge-dead-letter"]);
    }

    #[test]
    fn topics_given_replace_the_config_ones_and_must_exist() {
        let s = settings(&config("", ROUTING), &["x", "y"], None, false);
        assert_eq!(s.topics, ["x", "y"]);
        assert!(!s.skip_absent);
    }

    #[test]
    fn device_defaults_to_the_configs_own() {
        let c = config("[agent]\ndevice_id = \"gw-17\"\n", ROUTING);
        assert_eq!(
            settings(&c, &[], None, false).device.as_deref(),
            Some("gw-17")
        );
        assert_eq!(
            settings(&c, &[], Some("gw-2"), false).device.as_deref(),
            Some("gw-2")
        );
        assert_eq!(settings(&c, &[], None, true).device, None);
    }

    #[test]
    fn device_without_agent_device_id_is_the_one_kedge_run_would_use() {
        let c = config("", ROUTING);
        let device = settings(&c, &[], None, false).device.expect("a device");
        assert!(!device.is_empty());
        assert_eq!(device, c.agent.device_id);
    }

    #[test]
    fn the_connection_is_the_producers() {
        let kafka = "[kafka]\nbootstrap = [\"127.0.0.1:9092\"]\n";
        let c = config("", ROUTING);
        let plain = crate::pipeline::cluster_settings(&c).expect("settings");
        assert_eq!(plain.client_id, c.kafka.client_id);
        assert!(plain.tls.is_none() && plain.sasl.is_none());

        let sasl = format!(
            "{kafka}client_id = \"gw\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\n\
             username = \"edge\"\npassword = \"pw\"\n"
        );
        let c = Config::parse(&config_text(&sasl), Path::new("kedge.toml")).expect("config");
        let s = crate::pipeline::cluster_settings(&c).expect("settings");
        assert_eq!(s.client_id, "gw");
        let credentials = s.sasl.expect("SASL");
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("edge", "pw")
        );

        let tls = format!("{kafka}[kafka.tls]\nca_file = \"/nonexistent/ca.pem\"\n");
        let c = Config::parse(&config_text(&tls), Path::new("kedge.toml")).expect("config");
        let e = crate::pipeline::cluster_settings(&c).expect_err("no CA file");
        assert!(
            e.to_string()
                .starts_with("kafka.tls: /nonexistent/ca.pem: "),
            "{e}"
        );
    }
}
