//! The Prometheus text format (version 0.0.4) of kedge's counters and gauges, and the
//! readiness verdict: pure functions of a [`Snapshot`], so both are tested without a server.
//! Every family is one of [`metrics::ALL`](super::metrics::ALL).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::metrics::{self as m, Metric};
use crate::telemetry::{HistogramSnapshot, Stats};
use kedge_plugin_host::stats::PluginSnapshot;

/// One metric family's samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Its definition.
    pub metric: &'static Metric,
    /// Samples: the values of the metric's labels, in its order, and the sample's value. A
    /// family without samples is left out.
    pub rows: Vec<(Vec<String>, String)>,
}

impl Family {
    /// The one sample of an unlabelled metric.
    fn value(metric: &'static Metric, value: impl ToString) -> Self {
        Family {
            metric,
            rows: vec![(Vec::new(), value.to_string())],
        }
    }

    /// The samples of a metric with one label, as (label value, value).
    fn by(
        metric: &'static Metric,
        rows: impl IntoIterator<Item = (impl Into<String>, u64)>,
    ) -> Self {
        Family {
            metric,
            rows: rows
                .into_iter()
                .map(|(k, v)| (vec![k.into()], v.to_string()))
                .collect(),
        }
    }
}

/// Everything a scrape reports, read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Counters and gauges of the pipeline stages, in exposition order.
    pub families: Vec<Family>,
    /// Latency histograms.
    pub histograms: Vec<(&'static Metric, HistogramSnapshot)>,
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
    /// Records lost to damaged journal chunks or sealed batches since the queue was created.
    pub lost_records: u64,
    /// Records the full-queue policy dropped since the queue was created, per topic.
    pub dropped_by_topic: Vec<(String, u64)>,
    /// Where an unopenable queue database was moved at a start, if ever.
    pub quarantined: Option<String>,
    /// Why the last config reload was refused, unless one was applied since.
    pub reload_refused: Option<String>,
    /// The read number of the last config reload's verdict (0 before any).
    pub reload_answered: u64,
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
    let each = |metric, f: &dyn Fn(&PluginSnapshot) -> u64| Family {
        metric,
        rows: plugins
            .iter()
            .map(|p| (vec![p.name.clone()], f(p).to_string()))
            .collect(),
    };
    let by = |metric, f: &dyn Fn(&PluginSnapshot) -> Vec<(String, u64)>| Family {
        metric,
        rows: plugins
            .iter()
            .flat_map(|p| {
                f(p).into_iter()
                    .map(move |(k, v)| (vec![p.name.clone(), k], v.to_string()))
            })
            .collect(),
    };
    let owned = |v: &[(&'static str, u64)]| v.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
    vec![
        each(&m::PLUGIN_EVENTS, &|p| p.events),
        each(&m::PLUGIN_CALLS, &|p| p.calls),
        by(&m::PLUGIN_VERDICTS, &|p| owned(&p.verdicts)),
        each(&m::PLUGIN_OUTPUTS, &|p| p.outputs),
        by(&m::PLUGIN_FAULTED_EVENTS, &|p| owned(&p.faults)),
        each(&m::PLUGIN_RECYCLES, &|p| p.recycles),
        each(&m::PLUGIN_CIRCUIT_OPEN, &|p| u64::from(p.circuit_open)),
        each(&m::PLUGIN_CIRCUIT_OPENED, &|p| p.circuit_opened),
        each(&m::PLUGIN_LOGS_SUPPRESSED, &|p| p.logs_suppressed),
        by(&m::PLUGIN_COUNTER, &|p| p.counters.clone()),
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
    /// The families of `stats`; `source_name` labels the source's.
    pub fn families_of(stats: &Stats, source_name: &str) -> Vec<Family> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (source, ingest, delivery) = (&stats.source, &stats.ingest, &stats.delivery);
        let k = &delivery.kafka;
        let v = &delivery.verify;
        vec![
            Family::by(&m::RECORDS_RECEIVED, [(source_name, g(&source.received))]),
            Family::by(&m::RECORDS_ACKNOWLEDGED, [(source_name, g(&source.acked))]),
            Family::value(&m::RECORDS_JOURNALED, g(&ingest.journaled)),
            Family::value(&m::MQTT_REDELIVERED, g(&source.mqtt_redelivered)),
            Family::value(&m::MQTT_CONNECTIONS, g(&source.mqtt_connections)),
            Family::by(
                &m::CONFIG_RELOADS,
                [
                    ("applied", g(&stats.reload.applied)),
                    ("refused", g(&stats.reload.refused)),
                ],
            ),
            Family::value(&m::MQTT_DUP_JOURNALED, g(&source.mqtt_dup_journaled)),
            Family::value(&m::MQTT_OVERSIZED, g(&source.mqtt_oversized)),
            Family::value(&m::MQTT_ID_COLLISIONS, g(&source.mqtt_id_collisions)),
            Family::by(&m::RECORDS_ROUTED, ingest.routed_by_topic()),
            Family::by(&m::RECORDS_DEAD_LETTERED, stats.dead_lettered_by_reason()),
            Family::by(&m::RECORDS_DROPPED, stats.dropped_by_reason()),
            Family::value(&m::JOURNAL_COMMITS, g(&ingest.commits)),
            Family::value(&m::RECORDS_SEALED, g(&delivery.sealed)),
            Family::value(&m::BATCHES_SENT, g(&delivery.batches_sent)),
            Family::value(&m::RECORDS_SENT, g(&delivery.records_sent)),
            Family::value(&m::RECORDS_DELIVERED, g(&delivery.delivered)),
            Family::value(&m::BATCHES_DELIVERED, g(&delivery.batches_delivered)),
            Family::value(&m::BATCHES_DUPLICATE, g(&delivery.duplicates_detected)),
            Family::value(&m::RECORDS_PARKED, g(&delivery.parked)),
            Family::value(&m::BATCHES_SPLIT, g(&delivery.batches_split)),
            Family::value(&m::BATCH_RETRIES, g(&delivery.retries)),
            Family::by(&m::PRODUCE_ERRORS, delivery.produce_errors()),
            Family::by(
                &m::VERIFY,
                [("tail_scan", g(&v.by_tail_scan)), ("failed", g(&v.failed))],
            ),
            Family::by(
                &m::VERIFY_BATCHES,
                [
                    ("in_kafka", g(&v.batches_found)),
                    ("resent", g(&v.batches_missing)),
                    ("unverifiable", g(&v.batches_unverifiable)),
                ],
            ),
            Family::value(&m::VERIFY_SCANNED_BYTES, g(&v.bytes_read)),
            Family::value(&m::DEVICE_ID_CONFLICT_RECORDS, g(&v.twin_records)),
            Family::value(
                &m::KAFKA_CONNECTED,
                u8::from(k.connected.load(Ordering::Relaxed)),
            ),
            Family::value(&m::KAFKA_CONNECTIONS, g(&k.connections)),
            Family::value(&m::KAFKA_PARTITIONS_STUCK, g(&k.partitions_stuck)),
            Family::value(&m::KAFKA_PARTITIONS_STALLED, g(&k.partitions_stalled)),
            Family::by(
                &m::KAFKA_PARTITIONS,
                [
                    ("known", g(&k.leaders_known)),
                    ("unknown", g(&k.leaders_unknown)),
                ],
            ),
            Family::value(&m::PRODUCE_REQUESTS_IN_FLIGHT, g(&k.requests_in_flight)),
            Family::value(&m::BATCHES_UNACKNOWLEDGED, g(&k.batches_unacknowledged)),
            Family::value(&m::RECORDS_UNACKNOWLEDGED, g(&k.records_unacknowledged)),
        ]
    }

    /// The latency histograms of `stats`.
    pub fn histograms_of(stats: &Stats) -> Vec<(&'static Metric, HistogramSnapshot)> {
        vec![
            (
                &m::JOURNAL_COMMIT_SECONDS,
                stats.ingest.commit_latency.read(),
            ),
            (&m::JOURNAL_FSYNC_SECONDS, stats.ingest.fsync_latency.read()),
            (
                &m::DELIVERY_LATENCY_SECONDS,
                stats.delivery.delivery_latency.read(),
            ),
        ]
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for f in &self.families {
            family(&mut o, f);
        }
        for (metric, h) in &self.histograms {
            histogram(&mut o, metric, &[(Vec::new(), h)]);
        }
        let optional = |v: Option<u64>| v.map(|n| n.to_string());
        let gauges: [(&Metric, Option<String>); 10] = [
            (
                &m::QUEUE_LIVE_BYTES,
                Some(self.queue_live_bytes.to_string()),
            ),
            (
                &m::QUEUE_MAX_BYTES,
                (self.queue_max_bytes != u64::MAX).then(|| self.queue_max_bytes.to_string()),
            ),
            (&m::QUEUE_DISK_BYTES, optional(self.queue_disk_bytes)),
            (
                &m::QUEUE_FILESYSTEM_FREE_BYTES,
                optional(self.queue_free_bytes),
            ),
            (&m::JOURNAL_RECORDS, optional(self.journal_records)),
            (
                &m::QUEUE_OLDEST_PENDING_AGE_SECONDS,
                Some(self.oldest_pending_age.unwrap_or(0.0).to_string()),
            ),
            (&m::QUEUE_LOST_RECORDS, Some(self.lost_records.to_string())),
            (
                &m::QUEUE_QUARANTINED,
                Some(u8::from(self.quarantined.is_some()).to_string()),
            ),
            (
                &m::KAFKA_LAST_ACK_AGE_SECONDS,
                self.last_ack_age.map(|a| a.to_string()),
            ),
            (
                &m::MQTT_CONNECTED,
                Some(u8::from(self.mqtt_connected).to_string()),
            ),
        ];
        for (metric, value) in gauges {
            if let Some(value) = value {
                family(&mut o, &Family::value(metric, value));
            }
        }
        family(
            &mut o,
            &Family::by(
                &m::QUEUE_DROPPED_RECORDS,
                self.dropped_by_topic.iter().map(|(t, n)| (t.as_str(), *n)),
            ),
        );
        family(
            &mut o,
            &Family::by(
                &m::HTTP_CONNECTIONS_REFUSED,
                self.http_refused.iter().copied(),
            ),
        );
        if let Some(rss) = self.resident_bytes {
            family(
                &mut o,
                &Family::value(&m::PROCESS_RESIDENT_MEMORY_BYTES, rss),
            );
        }
        if let Some(fds) = self.open_fds {
            family(&mut o, &Family::value(&m::PROCESS_OPEN_FDS, fds));
        }
        if !self.plugins.is_empty() {
            for f in plugin_families(&self.plugins) {
                family(&mut o, &f);
            }
            let rows: Vec<(Vec<String>, &HistogramSnapshot)> = self
                .plugins
                .iter()
                .map(|p| (vec![p.name.clone()], &p.call_time))
                .collect();
            histogram(&mut o, &m::PLUGIN_CALL_SECONDS, &rows);
        }
        o
    }

    /// The text of a readiness verdict (`/health/ready`, `kedge status`): `ready`, or one line
    /// per reason.
    pub fn ready_text(reasons: &[String]) -> String {
        if reasons.is_empty() {
            "ready\n".to_owned()
        } else {
            reasons.iter().map(|r| format!("{r}\n")).collect()
        }
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
        if let Some(why) = &self.reload_refused {
            reasons.push(format!(
                "config reload refused, kedge runs the config it had: {why}"
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
    let Metric {
        name, help, kind, ..
    } = f.metric;
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
    for (values, value) in &f.rows {
        let labels = labels(f.metric, values);
        if labels.is_empty() {
            let _ = writeln!(o, "{name} {value}");
        } else {
            let _ = writeln!(o, "{name}{{{labels}}} {value}");
        }
    }
}

/// A histogram family; each row's labels (possibly none) go before `le`.
fn histogram(o: &mut String, metric: &Metric, rows: &[(Vec<String>, &HistogramSnapshot)]) {
    let Metric { name, help, .. } = metric;
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (values, h) in rows {
        let labels = labels(metric, values);
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

/// `name="value",…` of a sample of `metric`, without braces; empty without labels.
fn labels(metric: &Metric, values: &[String]) -> String {
    // Every family is rendered by the unit tests, so a sample built with the wrong number of
    // values fails there rather than on a device.
    debug_assert_eq!(metric.labels.len(), values.len(), "{}", metric.name);
    metric
        .labels
        .iter()
        .zip(values)
        .map(|(label, value)| format!("{label}=\"{}\"", escape(value)))
        .collect::<Vec<_>>()
        .join(",")
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
    use crate::telemetry::add;

    const READY: Readiness = Readiness {
        max_pending_age: 60.0,
        max_queue_percent: 90,
    };

    #[test]
    fn renders_counters_and_gauges_in_text_format() {
        let stats = Stats::default();
        add(&stats.source.received, 3);
        stats.ingest.routed([("readings", 2), ("x\"y", 1)]);
        stats.delivery.produce_error("NOT_LEADER_OR_FOLLOWER");
        stats
            .ingest
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

    /// A scrape with every family present: every optional value known, a plugin with faults
    /// and counters of its own, a dropped topic and refused connections.
    fn everything() -> Snapshot {
        let stats = Stats::default();
        add(&stats.source.received, 3);
        add(&stats.delivery.delivered, 9);
        stats.ingest.routed([("readings", 2), ("x\"y", 1)]);
        stats.delivery.produce_error("NOT_LEADER_OR_FOLLOWER");
        stats
            .ingest
            .discards
            .dead_lettered(crate::telemetry::DeadLetter::Plugin, 2);
        stats
            .ingest
            .commit_latency
            .observe(std::time::Duration::from_millis(2));
        stats
            .delivery
            .delivery_latency
            .observe(std::time::Duration::from_millis(30));
        let plugin = kedge_plugin_host::stats::PluginStats::new("units");
        kedge_plugin_host::stats::PluginStats::add(&plugin.events, 5);
        plugin
            .call_time
            .observe(std::time::Duration::from_micros(30));
        plugin.counter_add("bad readings", 2);
        plugin.fault("trap");
        Snapshot {
            families: Snapshot::families_of(&stats, "mqtt"),
            histograms: Snapshot::histograms_of(&stats),
            queue_live_bytes: 10,
            queue_max_bytes: 1000,
            queue_disk_bytes: Some(20),
            queue_free_bytes: Some(30),
            journal_records: Some(4),
            oldest_pending_age: Some(1.5),
            lost_records: 2,
            dropped_by_topic: vec![("readings".into(), 4)],
            quarantined: Some("/q".into()),
            reload_refused: None,
            reload_answered: 0,
            last_ack_age: Some(0.25),
            mqtt_connected: true,
            resident_bytes: Some(1234),
            open_fds: Some(7),
            plugins: vec![
                plugin.snapshot(),
                kedge_plugin_host::stats::PluginStats::new("idle").snapshot(),
            ],
            http_refused: vec![("limit", 7), ("slow_reader", 1)],
        }
    }

    /// A scrape holds exactly the defined families, each with its defined type and labels.
    #[test]
    fn every_defined_metric_is_rendered_as_defined() {
        let text = everything().render();
        assert_well_formed(&text);
        let mut rendered = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let metric = m::ALL.iter().find(|d| d.name == name);
                let metric = metric.unwrap_or_else(|| panic!("{name} is not defined"));
                assert_eq!(kind, metric.kind.as_str(), "{name}");
                rendered.insert(name, metric);
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, _) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let metric = Metric::of_series(name).unwrap_or_else(|| panic!("{line}"));
            let mut names: Vec<&str> = labels
                .strip_suffix('}')
                .unwrap()
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| l.split_once('=').unwrap().0)
                .collect();
            if name.ends_with("_bucket") {
                assert_eq!(names.pop(), Some("le"), "{line}");
            }
            assert_eq!(names, metric.labels, "{line}");
        }
        let missing: Vec<&str> = m::ALL
            .iter()
            .filter(|d| !rendered.contains_key(d.name))
            .map(|d| d.name)
            .collect();
        assert!(missing.is_empty(), "defined, never rendered: {missing:?}");
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
            reload_refused: Some("mqtt cannot change while kedge runs".into()),
            ..ok
        };
        let reasons = bad.unready(&READY);
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].starts_with("oldest pending record is 61s old"));
        assert!(reasons[1].contains("beyond 90%"));
        assert!(reasons[2].contains("/q.quarantined"));
        assert_eq!(
            reasons[3],
            "config reload refused, kedge runs the config it had: mqtt cannot change while kedge runs"
        );

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
