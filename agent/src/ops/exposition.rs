//! The Prometheus text format (version 0.0.4) of kedge's counters and gauges, and the
//! readiness verdict: pure functions of a [`Snapshot`], so both are tested without a server.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::telemetry::{HistogramSnapshot, Stats};
use kedge_plugin_host::stats::PluginSnapshot;

/// One metric family: its samples as (labels without braces, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// Samples; a family without samples is left out.
    pub rows: Vec<(String, String)>,
}

impl Family {
    fn one(name: &'static str, help: &'static str, kind: &'static str, value: String) -> Self {
        Family {
            name,
            help,
            kind,
            rows: vec![(String::new(), value)],
        }
    }

    fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self::one(name, help, "counter", value.to_string())
    }

    fn gauge(name: &'static str, help: &'static str, value: impl ToString) -> Self {
        Self::one(name, help, "gauge", value.to_string())
    }

    fn labelled(
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        label: &str,
        rows: impl IntoIterator<Item = (impl AsRef<str>, u64)>,
    ) -> Self {
        Family {
            name,
            help,
            kind,
            rows: rows
                .into_iter()
                .map(|(k, v)| (format!("{label}=\"{}\"", escape(k.as_ref())), v.to_string()))
                .collect(),
        }
    }
}

/// Everything a scrape reports, read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Counters and gauges of the pipeline stages, in exposition order.
    pub families: Vec<Family>,
    /// Latency histograms: (name, help, histogram).
    pub histograms: Vec<(&'static str, &'static str, HistogramSnapshot)>,
    /// Bytes of journal chunks and sealed batches the queue holds.
    pub queue_live_bytes: u64,
    /// The queue's byte budget (`u64::MAX` when unknown).
    pub queue_max_bytes: u64,
    /// Bytes of the queue's files on disk, when they can be measured.
    pub queue_disk_bytes: Option<u64>,
    /// Free bytes on the queue's filesystem, when statvfs tells.
    pub queue_free_bytes: Option<u64>,
    /// Records in the journal, not yet sealed into batches (the span of their `kedge-seq`).
    pub journal_records: Option<u64>,
    /// Age of the oldest record waiting for Kafka, in seconds; `None` when nothing waits.
    pub oldest_pending_age: Option<f64>,
    /// Records lost to damaged journal chunks since the queue was created.
    pub lost_records: u64,
    /// Records the full-queue policy dropped since the queue was created, per topic.
    pub dropped_by_topic: Vec<(String, u64)>,
    /// Where an unopenable queue database was moved at a start, if ever.
    pub quarantined: Option<String>,
    /// Seconds since Kafka last acknowledged a batch; `None` before the first.
    pub last_ack_age: Option<f64>,
    /// Whether the MQTT session is up.
    pub mqtt_connected: bool,
    /// Resident set size of the process in bytes, when /proc tells it.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors of the process, when /proc tells it.
    pub open_fds: Option<u64>,
    /// Per-plugin counters, in config order.
    pub plugins: Vec<PluginSnapshot>,
    /// Connections the metrics listener closed without a full answer, by reason.
    pub http_refused: Vec<(&'static str, u64)>,
}

/// The per-plugin families, each labelled by plugin (and verdict, fault kind or counter name).
fn plugin_families(plugins: &[PluginSnapshot]) -> Vec<Family> {
    let each = |name, help, kind, f: &dyn Fn(&PluginSnapshot) -> u64| Family {
        name,
        help,
        kind,
        rows: plugins
            .iter()
            .map(|p| (format!("plugin=\"{}\"", escape(&p.name)), f(p).to_string()))
            .collect(),
    };
    let by = |name, help, label: &str, f: &dyn Fn(&PluginSnapshot) -> Vec<(String, u64)>| Family {
        name,
        help,
        kind: "counter",
        rows: plugins
            .iter()
            .flat_map(|p| {
                f(p).into_iter().map(move |(k, v)| {
                    (
                        format!("plugin=\"{}\",{label}=\"{}\"", escape(&p.name), escape(&k)),
                        v.to_string(),
                    )
                })
            })
            .collect(),
    };
    let owned = |v: &[(&'static str, u64)]| v.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
    vec![
        each(
            "kedge_plugin_events_total",
            "Events given to the plugin.",
            "counter",
            &|p| p.events,
        ),
        each(
            "kedge_plugin_calls_total",
            "process calls, including bisection re-runs.",
            "counter",
            &|p| p.calls,
        ),
        by(
            "kedge_plugin_verdicts_total",
            "Verdicts the plugin returned, by kind.",
            "verdict",
            &|p| owned(&p.verdicts),
        ),
        each(
            "kedge_plugin_outputs_total",
            "Records the plugin made (replacements and tick emissions).",
            "counter",
            &|p| p.outputs,
        ),
        by(
            "kedge_plugin_faulted_events_total",
            "Events dead-lettered because the plugin faulted, by fault.",
            "fault",
            &|p| owned(&p.faults),
        ),
        each(
            "kedge_plugin_recycles_total",
            "Instances replaced after a trap, timeout or memory overrun.",
            "counter",
            &|p| p.recycles,
        ),
        each(
            "kedge_plugin_circuit_open",
            "1 while the plugin's circuit is open.",
            "gauge",
            &|p| u64::from(p.circuit_open),
        ),
        each(
            "kedge_plugin_circuit_opened_total",
            "Times the plugin's circuit opened.",
            "counter",
            &|p| p.circuit_opened,
        ),
        each(
            "kedge_plugin_logs_suppressed_total",
            "Plugin log lines dropped by the rate limit.",
            "counter",
            &|p| p.logs_suppressed,
        ),
        by(
            "kedge_plugin_counter_total",
            "The plugin's own counters (counter-add).",
            "name",
            &|p| p.counters.clone(),
        ),
    ]
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What makes `/health/ready` fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readiness {
    /// Oldest pending record older than this (seconds) is a reason.
    pub max_pending_age: f64,
    /// Queue beyond this percentage of its budget is a reason.
    pub max_queue_percent: u8,
}

impl Snapshot {
    /// The families of `stats`, named as the README lists them; `source` labels the source's.
    pub fn families_of(stats: &Stats, source: &str) -> Vec<Family> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let k = &stats.kafka;
        let v = &stats.verify;
        vec![
            Family::labelled(
                "kedge_records_received_total",
                "Events received, by source.",
                "counter",
                "source",
                [(source, g(&stats.received))],
            ),
            Family::labelled(
                "kedge_records_acknowledged_total",
                "Events acknowledged to their source after the journal made them durable.",
                "counter",
                "source",
                [(source, g(&stats.source_acked))],
            ),
            Family::counter(
                "kedge_records_journaled_total",
                "Records committed to the journal.",
                g(&stats.journaled),
            ),
            Family::counter(
                "kedge_mqtt_redelivered_total",
                "MQTT messages recognised as redeliveries of journaled ones: acknowledged, not journaled again.",
                g(&stats.mqtt_redelivered),
            ),
            Family::counter(
                "kedge_mqtt_dup_journaled_total",
                "MQTT messages with the DUP flag that were journaled: possible duplicates kedge could not tell.",
                g(&stats.mqtt_dup_journaled),
            ),
            Family::counter(
                "kedge_mqtt_oversized_total",
                "MQTT messages larger than mqtt.max_packet_size: skipped, acknowledged, not journaled.",
                g(&stats.mqtt_oversized),
            ),
            Family::counter(
                "kedge_mqtt_id_collisions_total",
                "New QoS 2 messages under a packet id still in use for an earlier one (a broker defect): that one's resends cannot be recognised.",
                g(&stats.mqtt_id_collisions),
            ),
            Family::labelled(
                "kedge_records_routed_total",
                "Records committed to the journal, by Kafka topic.",
                "counter",
                "topic",
                stats.routed_by_topic(),
            ),
            Family::labelled(
                "kedge_records_dead_lettered_total",
                "Records routed to the dead-letter topic, by reason.",
                "counter",
                "reason",
                stats.dead_lettered_by_reason(),
            ),
            Family::labelled(
                "kedge_records_dropped_total",
                "Records dropped, by reason (full-queue policy, or refused even by the dead-letter topic).",
                "counter",
                "reason",
                stats.dropped_by_reason(),
            ),
            Family::counter(
                "kedge_journal_commits_total",
                "Journal group commits.",
                g(&stats.commits),
            ),
            Family::counter(
                "kedge_records_sealed_total",
                "Records sealed into Kafka batches.",
                g(&stats.sealed),
            ),
            Family::counter(
                "kedge_batches_sent_total",
                "Batches put into Produce requests, resends included.",
                g(&stats.batches_sent),
            ),
            Family::counter(
                "kedge_records_sent_total",
                "Records in the batches sent, resends included.",
                g(&stats.records_sent),
            ),
            Family::counter(
                "kedge_records_delivered_total",
                "Records Kafka acknowledged.",
                g(&stats.delivered),
            ),
            Family::counter(
                "kedge_batches_delivered_total",
                "Batches Kafka acknowledged.",
                g(&stats.batches_delivered),
            ),
            Family::counter(
                "kedge_batches_duplicate_total",
                "Batches Kafka answered DUPLICATE_SEQUENCE_NUMBER: a resend its own check caught.",
                g(&stats.duplicates_detected),
            ),
            Family::counter(
                "kedge_records_parked_total",
                "Records set aside because their partition was stuck, so that the others went on.",
                g(&stats.parked),
            ),
            Family::counter(
                "kedge_batches_split_total",
                "Batches split in two after Kafka refused them as too large or for some record.",
                g(&stats.batches_split),
            ),
            Family::counter(
                "kedge_batch_retries_total",
                "Batches sent again after an error or a lost response.",
                g(&stats.retries),
            ),
            Family::labelled(
                "kedge_produce_errors_total",
                "Partitions of Produce requests that failed, by Kafka error name (network: no answer).",
                "counter",
                "error",
                stats.produce_errors(),
            ),
            Family::labelled(
                "kedge_verify_total",
                "Verifications of what Kafka holds before a resend, by outcome.",
                "counter",
                "outcome",
                [("tail_scan", g(&v.by_tail_scan)), ("failed", g(&v.failed))],
            ),
            Family::labelled(
                "kedge_verify_batches_total",
                "Unacknowledged batches a verification judged, by result.",
                "counter",
                "result",
                [
                    ("in_kafka", g(&v.batches_found)),
                    ("resent", g(&v.batches_missing)),
                    ("unverifiable", g(&v.batches_unverifiable)),
                ],
            ),
            Family::counter(
                "kedge_verify_scanned_bytes_total",
                "Bytes of the log the verify scans read.",
                g(&v.bytes_read),
            ),
            Family::counter(
                "kedge_device_id_conflict_records_total",
                "Records of this device id written by another queue after this one's, found by scans: another agent uses the same device id.",
                g(&v.twin_records),
            ),
            Family::gauge(
                "kedge_kafka_connected",
                "1 while the last exchange with Kafka (metadata, connect, produce) succeeded.",
                u8::from(k.connected.load(Ordering::Relaxed)),
            ),
            Family::gauge(
                "kedge_kafka_connections",
                "Open broker connections.",
                g(&k.connections),
            ),
            Family::gauge(
                "kedge_kafka_partitions_stuck",
                "Partitions without progress for 30 s while others made some: their records are set aside.",
                g(&k.partitions_stuck),
            ),
            Family::gauge(
                "kedge_kafka_partitions_stalled",
                "Partitions that wait until something changes: Kafka does not allow the writes (authorization, broker settings), or the log cannot be read to verify.",
                g(&k.partitions_stalled),
            ),
            Family::labelled(
                "kedge_kafka_partitions",
                "Partitions of the topics kedge writes to, by whether their leader is known.",
                "gauge",
                "leader",
                [
                    ("known", g(&k.leaders_known)),
                    ("unknown", g(&k.leaders_unknown)),
                ],
            ),
            Family::gauge(
                "kedge_produce_requests_in_flight",
                "Produce requests waiting for their response.",
                g(&k.requests_in_flight),
            ),
            Family::gauge(
                "kedge_batches_unacknowledged",
                "Sealed batches Kafka has not acknowledged yet.",
                g(&k.batches_unacknowledged),
            ),
            Family::gauge(
                "kedge_records_unacknowledged",
                "Records in the sealed batches Kafka has not acknowledged yet.",
                g(&k.records_unacknowledged),
            ),
        ]
    }

    /// The latency histograms of `stats`.
    pub fn histograms_of(stats: &Stats) -> Vec<(&'static str, &'static str, HistogramSnapshot)> {
        vec![
            (
                "kedge_journal_commit_seconds",
                "Time of a durable journal commit (append, flush, fdatasync).",
                stats.commit_latency.read(),
            ),
            (
                "kedge_journal_fsync_seconds",
                "Time of the fdatasync calls of a journal commit.",
                stats.fsync_latency.read(),
            ),
            (
                "kedge_delivery_latency_seconds",
                "Per record, from its timestamp (receive time unless a plugin set one) to Kafka's acknowledgement.",
                stats.delivery_latency.read(),
            ),
        ]
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for f in &self.families {
            family(&mut o, f);
        }
        for (name, help, h) in &self.histograms {
            histogram(&mut o, name, help, &[(String::new(), h)]);
        }
        let optional = |v: Option<u64>| v.map(|n| n.to_string());
        let gauges: [(&str, &str, Option<String>); 10] = [
            (
                "kedge_queue_live_bytes",
                "Bytes of journal chunks and sealed batches waiting for Kafka.",
                Some(self.queue_live_bytes.to_string()),
            ),
            (
                "kedge_queue_max_bytes",
                "The queue's byte budget.",
                (self.queue_max_bytes != u64::MAX).then(|| self.queue_max_bytes.to_string()),
            ),
            (
                "kedge_queue_disk_bytes",
                "Bytes of the queue's files on disk (sled's file never shrinks).",
                optional(self.queue_disk_bytes),
            ),
            (
                "kedge_queue_filesystem_free_bytes",
                "Free bytes on the queue's filesystem.",
                optional(self.queue_free_bytes),
            ),
            (
                "kedge_journal_records",
                "Records in the journal, not yet sealed into Kafka batches.",
                optional(self.journal_records),
            ),
            (
                "kedge_queue_oldest_pending_age_seconds",
                "Age of the oldest record waiting for Kafka (0 when none waits).",
                Some(self.oldest_pending_age.unwrap_or(0.0).to_string()),
            ),
            (
                "kedge_queue_lost_records",
                "Records lost to damaged journal chunks since the queue was created.",
                Some(self.lost_records.to_string()),
            ),
            (
                "kedge_queue_quarantined",
                "1 when an unopenable queue database was set aside at a start.",
                Some(u8::from(self.quarantined.is_some()).to_string()),
            ),
            (
                "kedge_kafka_last_ack_age_seconds",
                "Seconds since Kafka last acknowledged a batch (absent before the first).",
                self.last_ack_age.map(|a| a.to_string()),
            ),
            (
                "kedge_mqtt_connected",
                "1 while the MQTT session is up.",
                Some(u8::from(self.mqtt_connected).to_string()),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                metric(&mut o, name, help, "gauge", &value);
            }
        }
        family(
            &mut o,
            &Family::labelled(
                "kedge_queue_dropped_records",
                "Records the full-queue policy dropped since the queue was created, by topic.",
                "gauge",
                "topic",
                self.dropped_by_topic.iter().map(|(t, n)| (t.as_str(), *n)),
            ),
        );
        family(
            &mut o,
            &Family::labelled(
                "kedge_http_connections_refused_total",
                "Connections to the metrics listener closed without a full answer, by reason.",
                "counter",
                "reason",
                self.http_refused.iter().copied(),
            ),
        );
        if let Some(rss) = self.resident_bytes {
            metric(
                &mut o,
                "kedge_process_resident_memory_bytes",
                "Resident set size of the kedge process.",
                "gauge",
                &rss.to_string(),
            );
        }
        if let Some(fds) = self.open_fds {
            metric(
                &mut o,
                "kedge_process_open_fds",
                "Open file descriptors of the kedge process.",
                "gauge",
                &fds.to_string(),
            );
        }
        if !self.plugins.is_empty() {
            for f in plugin_families(&self.plugins) {
                family(&mut o, &f);
            }
            let rows: Vec<(String, &HistogramSnapshot)> = self
                .plugins
                .iter()
                .map(|p| (format!("plugin=\"{}\"", escape(&p.name)), &p.call_time))
                .collect();
            histogram(
                &mut o,
                "kedge_plugin_call_seconds",
                "Time of one process call that returned (traps and timeouts excluded).",
                &rows,
            );
        }
        o
    }

    /// Why the agent is not ready; empty when it is.
    pub fn unready(&self, r: &Readiness) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(age) = self.oldest_pending_age
            && age > r.max_pending_age
        {
            reasons.push(format!(
                "oldest pending record is {age:.0}s old (limit {:.0}s): Kafka is not taking records",
                r.max_pending_age
            ));
        }
        let limit = self.queue_max_bytes as f64 * f64::from(r.max_queue_percent) / 100.0;
        if self.queue_max_bytes != u64::MAX && self.queue_live_bytes as f64 > limit {
            reasons.push(format!(
                "queue holds {} bytes, beyond {}% of its budget of {} bytes",
                self.queue_live_bytes, r.max_queue_percent, self.queue_max_bytes
            ));
        }
        if let Some(path) = &self.quarantined {
            reasons.push(format!(
                "queue database was quarantined at a start (set aside at {path}); see `kedge queue stats`"
            ));
        }
        for p in self.plugins.iter().filter(|p| p.circuit_open) {
            reasons.push(format!(
                "plugin {} keeps failing: its circuit is open (plugin.on_failure decides what happens to its events)",
                p.name
            ));
        }
        reasons
    }
}

fn family(o: &mut String, f: &Family) {
    if f.rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "# HELP {} {}\n# TYPE {} {}",
        f.name, f.help, f.name, f.kind
    );
    for (labels, value) in &f.rows {
        if labels.is_empty() {
            let _ = writeln!(o, "{} {value}", f.name);
        } else {
            let _ = writeln!(o, "{}{{{labels}}} {value}", f.name);
        }
    }
}

/// A histogram family; each row's labels (possibly none) go before `le`.
fn histogram(o: &mut String, name: &str, help: &str, rows: &[(String, &HistogramSnapshot)]) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, h) in rows {
        let (with, alone) = if labels.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("{labels},"), format!("{{{labels}}}"))
        };
        for (le, n) in &h.buckets {
            let _ = writeln!(o, "{name}_bucket{{{with}le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "{name}_bucket{{{with}le=\"+Inf\"}} {count}\n{name}_sum{alone} {sum}\n{name}_count{alone} {count}",
            count = h.count,
            sum = h.sum
        );
    }
}

fn metric(o: &mut String, name: &str, help: &str, kind: &str, value: &str) {
    let _ = writeln!(
        o,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Open file descriptors, from the entries of /proc/self/fd.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// Resident set size from /proc/self/statm (second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: Readiness = Readiness {
        max_pending_age: 60.0,
        max_queue_percent: 90,
    };

    #[test]
    fn renders_counters_and_gauges_in_text_format() {
        let stats = Stats::default();
        Stats::add(&stats.received, 3);
        stats.routed([("readings", 2), ("x\"y", 1)]);
        stats.produce_error("NOT_LEADER_OR_FOLLOWER");
        stats
            .commit_latency
            .observe(std::time::Duration::from_millis(2));
        let s = Snapshot {
            families: Snapshot::families_of(&stats, "mqtt"),
            histograms: Snapshot::histograms_of(&stats),
            queue_live_bytes: 10,
            queue_max_bytes: u64::MAX,
            oldest_pending_age: Some(1.5),
            resident_bytes: resident_bytes(),
            open_fds: open_fds(),
            dropped_by_topic: vec![("readings".into(), 4)],
            http_refused: vec![("limit", 7)],
            ..Snapshot::default()
        };
        let text = s.render();
        for want in [
            "# HELP kedge_records_received_total Events received, by source.\n\
             # TYPE kedge_records_received_total counter\n\
             kedge_records_received_total{source=\"mqtt\"} 3\n",
            "\nkedge_records_routed_total{topic=\"readings\"} 2\n",
            "\nkedge_records_routed_total{topic=\"x\\\"y\"} 1\n",
            "\nkedge_records_dead_lettered_total{reason=\"kafka_refused\"} 0\n",
            "\nkedge_produce_errors_total{error=\"NOT_LEADER_OR_FOLLOWER\"} 1\n",
            "\nkedge_kafka_partitions{leader=\"unknown\"} 0\n",
            "\nkedge_queue_live_bytes 10\n",
            "\nkedge_journal_commit_seconds_bucket{le=\"+Inf\"} 1\n",
            "\nkedge_delivery_latency_seconds_count 0\n",
            "\nkedge_queue_oldest_pending_age_seconds 1.5\n",
            "\nkedge_queue_dropped_records{topic=\"readings\"} 4\n",
            "\nkedge_http_connections_refused_total{reason=\"limit\"} 7\n",
            "\nkedge_process_resident_memory_bytes ",
            "\nkedge_process_open_fds ",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        // Absent until known: the budget, and the last acknowledgement.
        assert!(!text.contains("kedge_queue_max_bytes"), "{text}");
        assert!(!text.contains("kedge_kafka_last_ack_age_seconds"), "{text}");
        // No plugins, no plugin families.
        assert!(!text.contains("kedge_plugin_"), "{text}");
        assert_well_formed(&text);
    }

    #[test]
    fn plugin_families_carry_the_plugin_label_and_a_call_histogram() {
        let stats = kedge_plugin_host::stats::PluginStats::new("units");
        kedge_plugin_host::stats::PluginStats::add(&stats.events, 5);
        stats
            .call_time
            .observe(std::time::Duration::from_micros(30));
        stats.counter_add("bad readings", 2);
        let s = Snapshot {
            plugins: vec![stats.snapshot()],
            ..Snapshot::default()
        };
        let text = s.render();
        for want in [
            "\nkedge_plugin_events_total{plugin=\"units\"} 5\n",
            "\nkedge_plugin_verdicts_total{plugin=\"units\",verdict=\"keep\"} 0\n",
            "\nkedge_plugin_counter_total{plugin=\"units\",name=\"bad readings\"} 2\n",
            "\nkedge_plugin_call_seconds_bucket{plugin=\"units\",le=\"0.00005\"} 1\n",
            "\nkedge_plugin_call_seconds_count{plugin=\"units\"} 1\n",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        assert_well_formed(&text);
    }

    /// Every sample is `name[{labels}] number`, every name has a HELP and TYPE, and no family
    /// is declared twice.
    fn assert_well_formed(text: &str) {
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("kedge_"), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(name);
            assert!(declared.contains(family), "{line}: no TYPE before it");
        }
    }

    #[test]
    fn readiness_reasons() {
        let ok = Snapshot {
            queue_live_bytes: 90,
            queue_max_bytes: 100,
            oldest_pending_age: Some(60.0),
            ..Snapshot::default()
        };
        assert_eq!(ok.unready(&READY), Vec::<String>::new());
        let bad = Snapshot {
            queue_live_bytes: 91,
            oldest_pending_age: Some(61.0),
            quarantined: Some("/q.quarantined".into()),
            ..ok
        };
        let reasons = bad.unready(&READY);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].starts_with("oldest pending record is 61s old"));
        assert!(reasons[1].contains("beyond 90%"));
        assert!(reasons[2].contains("/q.quarantined"));

        let mut tripped = kedge_plugin_host::stats::PluginStats::new("units").snapshot();
        tripped.circuit_open = true;
        let plugin = Snapshot {
            plugins: vec![tripped],
            ..Snapshot::default()
        };
        assert_eq!(
            plugin.unready(&READY),
            vec![
                "plugin units keeps failing: its circuit is open (plugin.on_failure decides what happens to its events)"
            ]
        );
    }
}
