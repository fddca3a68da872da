//! Every metric kedge exposes, defined once: name, type, labels and help text. `/metrics`
//! renders from these definitions ([`super::exposition`]), and a test holds the README's table
//! of metrics to them, so that the names a dashboard is built from cannot drift apart.

/// The `# TYPE` of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows (from 0 with each process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Latency buckets, with `_bucket`, `_sum` and `_count` series.
    Histogram,
}

impl Kind {
    /// The name in the text format.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    /// The family's name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The names of its labels, in the order a sample carries them (a histogram's `le` aside).
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

impl Metric {
    /// The metric a series name belongs to: the family itself, or a histogram's `_bucket`,
    /// `_sum` or `_count` series.
    pub fn of_series(series: &str) -> Option<&'static Metric> {
        ALL.iter().find(|m| {
            series == m.name
                || m.kind == Kind::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| series.strip_suffix(s) == Some(m.name))
        })
    }
}

/// A constant per metric, each documented by its help text, and [`ALL`] listing every one: a
/// metric cannot be defined without being listed.
macro_rules! metrics {
    ($($id:ident: $kind:ident $name:literal [$($label:literal),*] $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: Metric = Metric {
                name: $name,
                kind: Kind::$kind,
                labels: &[$($label),*],
                help: $help,
            };
        )*
        /// Every metric, in exposition order.
        pub const ALL: &[Metric] = &[$($id),*];
    };
}

metrics! {
    // The source.
    RECORDS_RECEIVED: Counter "kedge_records_received_total" ["source"]
        "Events received, by source.";
    RECORDS_ACKNOWLEDGED: Counter "kedge_records_acknowledged_total" ["source"]
        "Events acknowledged to their source after the journal made them durable.";
    // The journal.
    RECORDS_JOURNALED: Counter "kedge_records_journaled_total" []
        "Records committed to the journal.";
    MQTT_REDELIVERED: Counter "kedge_mqtt_redelivered_total" []
        "MQTT messages recognised as redeliveries of journaled ones: acknowledged, not journaled again.";
    MQTT_DUP_JOURNALED: Counter "kedge_mqtt_dup_journaled_total" []
        "MQTT messages with the DUP flag that were journaled: possible duplicates kedge could not tell.";
    MQTT_OVERSIZED: Counter "kedge_mqtt_oversized_total" []
        "MQTT messages larger than mqtt.max_packet_size: skipped, acknowledged, not journaled.";
    MQTT_ID_COLLISIONS: Counter "kedge_mqtt_id_collisions_total" []
        "New QoS 2 messages under a packet id still in use for an earlier one (a broker defect): that one's resends cannot be recognised.";
    RECORDS_ROUTED: Counter "kedge_records_routed_total" ["topic"]
        "Records committed to the journal, by Kafka topic.";
    RECORDS_DEAD_LETTERED: Counter "kedge_records_dead_lettered_total" ["reason"]
        "Records routed to the dead-letter topic, by reason.";
    RECORDS_DROPPED: Counter "kedge_records_dropped_total" ["reason"]
        "Records dropped, by reason (full-queue policy, or refused even by the dead-letter topic).";
    JOURNAL_COMMITS: Counter "kedge_journal_commits_total" []
        "Journal group commits.";
    // Delivery.
    RECORDS_SEALED: Counter "kedge_records_sealed_total" []
        "Records sealed into Kafka batches.";
    BATCHES_SENT: Counter "kedge_batches_sent_total" []
        "Batches put into Produce requests, resends included.";
    RECORDS_SENT: Counter "kedge_records_sent_total" []
        "Records in the batches sent, resends included.";
    RECORDS_DELIVERED: Counter "kedge_records_delivered_total" []
        "Records Kafka acknowledged.";
    BATCHES_DELIVERED: Counter "kedge_batches_delivered_total" []
        "Batches Kafka acknowledged.";
    BATCHES_DUPLICATE: Counter "kedge_batches_duplicate_total" []
        "Batches Kafka answered DUPLICATE_SEQUENCE_NUMBER: a resend its own check caught.";
    RECORDS_PARKED: Counter "kedge_records_parked_total" []
        "Records set aside because their partition was stuck, so that the others went on.";
    BATCHES_SPLIT: Counter "kedge_batches_split_total" []
        "Batches split in two after Kafka refused them as too large or for some record.";
    BATCH_RETRIES: Counter "kedge_batch_retries_total" []
        "Batches sent again after an error or a lost response.";
    PRODUCE_ERRORS: Counter "kedge_produce_errors_total" ["error"]
        "Partitions of Produce requests that failed, by Kafka error name (network: no answer).";
    VERIFY: Counter "kedge_verify_total" ["outcome"]
        "Verifications of what Kafka holds before a resend, by outcome.";
    VERIFY_BATCHES: Counter "kedge_verify_batches_total" ["result"]
        "Unacknowledged batches a verification judged, by result.";
    VERIFY_SCANNED_BYTES: Counter "kedge_verify_scanned_bytes_total" []
        "Bytes of the log the verify scans read.";
    DEVICE_ID_CONFLICT_RECORDS: Counter "kedge_device_id_conflict_records_total" []
        "Records of this device id written by another queue after this one's, found by scans: another agent uses the same device id.";
    KAFKA_CONNECTED: Gauge "kedge_kafka_connected" []
        "1 while the last exchange with Kafka (metadata, connect, produce) succeeded.";
    KAFKA_CONNECTIONS: Gauge "kedge_kafka_connections" []
        "Open broker connections.";
    KAFKA_PARTITIONS_STUCK: Gauge "kedge_kafka_partitions_stuck" []
        "Partitions without progress for 30 s while others made some: their records are set aside.";
    KAFKA_PARTITIONS_STALLED: Gauge "kedge_kafka_partitions_stalled" []
        "Partitions that wait until something changes: Kafka does not allow the writes (authorization, broker settings), or the log cannot be read to verify.";
    KAFKA_PARTITIONS: Gauge "kedge_kafka_partitions" ["leader"]
        "Partitions of the topics kedge writes to, by whether their leader is known.";
    PRODUCE_REQUESTS_IN_FLIGHT: Gauge "kedge_produce_requests_in_flight" []
        "Produce requests waiting for their response.";
    BATCHES_UNACKNOWLEDGED: Gauge "kedge_batches_unacknowledged" []
        "Sealed batches Kafka has not acknowledged yet.";
    RECORDS_UNACKNOWLEDGED: Gauge "kedge_records_unacknowledged" []
        "Records in the sealed batches Kafka has not acknowledged yet.";
    // Latencies.
    JOURNAL_COMMIT_SECONDS: Histogram "kedge_journal_commit_seconds" []
        "Time of a durable journal commit (append, flush, fdatasync).";
    JOURNAL_FSYNC_SECONDS: Histogram "kedge_journal_fsync_seconds" []
        "Time of the fdatasync calls of a journal commit.";
    DELIVERY_LATENCY_SECONDS: Histogram "kedge_delivery_latency_seconds" []
        "Per record, from its timestamp (receive time unless a plugin set one) to Kafka's acknowledgement.";
    // The queue, the links and the process, read when scraped.
    QUEUE_LIVE_BYTES: Gauge "kedge_queue_live_bytes" []
        "Bytes of journal chunks and sealed batches waiting for Kafka.";
    QUEUE_MAX_BYTES: Gauge "kedge_queue_max_bytes" []
        "The queue's byte budget.";
    QUEUE_DISK_BYTES: Gauge "kedge_queue_disk_bytes" []
        "Bytes of the queue's files on disk (sled's file never shrinks).";
    QUEUE_FILESYSTEM_FREE_BYTES: Gauge "kedge_queue_filesystem_free_bytes" []
        "Free bytes on the queue's filesystem.";
    JOURNAL_RECORDS: Gauge "kedge_journal_records" []
        "Records in the journal, not yet sealed into Kafka batches.";
    QUEUE_OLDEST_PENDING_AGE_SECONDS: Gauge "kedge_queue_oldest_pending_age_seconds" []
        "Age of the oldest record waiting for Kafka (0 when none waits).";
    QUEUE_LOST_RECORDS: Gauge "kedge_queue_lost_records" []
        "Records lost to damaged journal chunks or sealed batches since the queue was created.";
    QUEUE_QUARANTINED: Gauge "kedge_queue_quarantined" []
        "1 when an unopenable queue database was set aside at a start.";
    KAFKA_LAST_ACK_AGE_SECONDS: Gauge "kedge_kafka_last_ack_age_seconds" []
        "Seconds since Kafka last acknowledged a batch (absent before the first).";
    MQTT_CONNECTED: Gauge "kedge_mqtt_connected" []
        "1 while the MQTT session is up.";
    MQTT_CONNECTIONS: Counter "kedge_mqtt_connections_total" []
        "MQTT connections established (CONNACKs received), the first included.";
    CONFIG_RELOADS: Counter "kedge_config_reloads_total" ["result"]
        "Config reloads, by result (applied or refused).";
    QUEUE_DROPPED_RECORDS: Gauge "kedge_queue_dropped_records" ["topic"]
        "Records the full-queue policy dropped since the queue was created, by topic.";
    HTTP_CONNECTIONS_REFUSED: Counter "kedge_http_connections_refused_total" ["reason"]
        "Connections to the metrics listener closed without a full answer, by reason.";
    PROCESS_RESIDENT_MEMORY_BYTES: Gauge "kedge_process_resident_memory_bytes" []
        "Resident set size of the kedge process.";
    PROCESS_OPEN_FDS: Gauge "kedge_process_open_fds" []
        "Open file descriptors of the kedge process.";
    // Plugins, one series per plugin.
    PLUGIN_EVENTS: Counter "kedge_plugin_events_total" ["plugin"]
        "Events given to the plugin.";
    PLUGIN_CALLS: Counter "kedge_plugin_calls_total" ["plugin"]
        "process calls, including bisection re-runs.";
    PLUGIN_VERDICTS: Counter "kedge_plugin_verdicts_total" ["plugin", "verdict"]
        "Verdicts the plugin returned, by kind.";
    PLUGIN_OUTPUTS: Counter "kedge_plugin_outputs_total" ["plugin"]
        "Records the plugin made (replacements and tick emissions).";
    PLUGIN_FAULTED_EVENTS: Counter "kedge_plugin_faulted_events_total" ["plugin", "fault"]
        "Events dead-lettered because the plugin faulted, by fault.";
    PLUGIN_RECYCLES: Counter "kedge_plugin_recycles_total" ["plugin"]
        "Instances replaced after a trap, timeout or memory overrun.";
    PLUGIN_CIRCUIT_OPEN: Gauge "kedge_plugin_circuit_open" ["plugin"]
        "1 while the plugin's circuit is open.";
    PLUGIN_CIRCUIT_OPENED: Counter "kedge_plugin_circuit_opened_total" ["plugin"]
        "Times the plugin's circuit opened.";
    PLUGIN_LOGS_SUPPRESSED: Counter "kedge_plugin_logs_suppressed_total" ["plugin"]
        "Plugin log lines dropped by the rate limit.";
    PLUGIN_COUNTER: Counter "kedge_plugin_counter_total" ["plugin", "name"]
        "The plugin's own counters (counter-add).";
    PLUGIN_CALL_SECONDS: Histogram "kedge_plugin_call_seconds" ["plugin"]
        "Time of one process call that returned (traps and timeouts excluded).";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} defined twice", m.name);
            assert!(m.name.starts_with("kedge_"), "{}", m.name);
            let valid = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(valid(m.name), "{}", m.name);
            assert!(m.labels.iter().all(|l| valid(l) && *l != "le"), "{m:?}");
            // Prometheus' convention: a counter's name ends in `_total`, nothing else's does.
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty() && !m.help.contains('\n'), "{}", m.name);
        }
    }

    /// The README's table of metrics, row by row: each metric of a row (some rows have two) as
    /// (name, labels), and the row's type.
    fn readme_table(readme: &str) -> Vec<(String, Vec<String>, String)> {
        let mut lines = readme.lines().map(str::trim);
        lines
            .find(|l| *l == "| metric | type | meaning |")
            .expect("the README's table of metrics, under `| metric | type | meaning |`");
        let mut rows = Vec::new();
        for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
            let mut cells = line.trim_matches('|').split('|').map(str::trim);
            let (names, kind) = (cells.next().unwrap(), cells.next().unwrap_or(""));
            // The metrics are the backquoted parts, such as `kedge_plugin_verdicts_total{plugin,verdict}`.
            for quoted in names.split('`').skip(1).step_by(2) {
                let (name, labels) = quoted.split_once('{').unwrap_or((quoted, "}"));
                let labels = labels.trim_end_matches('}').split(',');
                let labels = labels.filter(|l| !l.is_empty()).map(str::to_owned);
                rows.push((name.to_owned(), labels.collect(), kind.to_owned()));
            }
        }
        rows
    }

    /// Where `readme` and [`ALL`] disagree, one line each: a metric missing from either side, a
    /// different type or labels, and a metric the text names that is not defined.
    fn disagreements(readme: &str) -> Vec<String> {
        let table = readme_table(readme);
        let mut out = Vec::new();
        for (name, labels, kind) in &table {
            let Some(m) = ALL.iter().find(|m| m.name == name) else {
                out.push(format!("{name}: in the README's table, not defined"));
                continue;
            };
            if kind != m.kind.as_str() {
                out.push(format!(
                    "{name}: the README says {kind}, defined as {}",
                    m.kind.as_str()
                ));
            }
            if labels != m.labels {
                out.push(format!(
                    "{name}: the README's labels {labels:?}, defined {:?}",
                    m.labels
                ));
            }
            if table.iter().filter(|(n, _, _)| n == name).count() > 1 {
                out.push(format!("{name}: more than once in the README's table"));
            }
        }
        for m in ALL {
            if !table.iter().any(|(n, _, _)| n == m.name) {
                out.push(format!("{}: defined, not in the README's table", m.name));
            }
        }
        // Names in the prose, such as (`kedge_records_parked_total`), must exist too.
        for (at, _) in readme.match_indices("kedge_") {
            if readme[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &readme[at..];
            let name = &rest[..rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len())];
            if Metric::of_series(name).is_none() {
                out.push(format!("{name}: named in the README, not defined"));
            }
        }
        out.dedup();
        out
    }

    /// The README's table is written by hand (its meanings say more than the help texts), and
    /// held here to the definitions.
    #[test]
    fn the_readme_lists_every_metric_as_defined() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let wrong = disagreements(&readme);
        assert!(
            wrong.is_empty(),
            "README.md and agent/src/ops/metrics.rs disagree:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn the_readme_check_finds_each_kind_of_disagreement() {
        let row = |m: &Metric| {
            let labels = if m.labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", m.labels.join(","))
            };
            format!("  | `{}{labels}` | {} | … |\n", m.name, m.kind.as_str())
        };
        let table = |rows: &str| {
            format!("text\n\n  | metric | type | meaning |\n  |---|---|---|\n{rows}\nmore")
        };
        let all: String = ALL.iter().map(row).collect();
        assert_eq!(disagreements(&table(&all)), Vec::<String>::new());
        // Two metrics in one row, as the README has some.
        let joined = all.replace(
            "` | counter | … |\n  | `kedge_records_sent_total` ",
            "`, `kedge_records_sent_total` ",
        );
        assert_ne!(joined, all);
        assert_eq!(disagreements(&table(&joined)), Vec::<String>::new());

        let wrong = all
            .replace(&row(&RECORDS_PARKED), "")
            .replace(
                "`kedge_kafka_connections` | gauge",
                "`kedge_kafka_connections` | counter",
            )
            .replace(
                "kedge_plugin_counter_total{plugin,name}",
                "kedge_plugin_counter_total{plugin}",
            )
            .replace(
                "kedge_records_journaled_total",
                "kedge_records_journalled_total",
            )
            + "\nThe `kedge_records_parked_totl` counter; `kedge_journal_commit_seconds_sum`.";
        assert_eq!(
            disagreements(&table(&wrong)),
            [
                "kedge_records_journalled_total: in the README's table, not defined",
                "kedge_kafka_connections: the README says counter, defined as gauge",
                "kedge_plugin_counter_total: the README's labels [\"plugin\"], defined [\"plugin\", \"name\"]",
                "kedge_records_journaled_total: defined, not in the README's table",
                "kedge_records_parked_total: defined, not in the README's table",
                "kedge_records_journalled_total: named in the README, not defined",
                "kedge_records_parked_totl: named in the README, not defined",
            ]
        );
    }

    #[test]
    fn series_are_found_by_family() {
        assert_eq!(
            Metric::of_series("kedge_records_received_total"),
            Some(&RECORDS_RECEIVED)
        );
        assert_eq!(
            Metric::of_series("kedge_plugin_call_seconds_count"),
            Some(&PLUGIN_CALL_SECONDS)
        );
        assert_eq!(Metric::of_series("kedge_records_received_total_sum"), None);
        assert_eq!(Metric::of_series("kedge_records_recieved_total"), None);
    }
}
