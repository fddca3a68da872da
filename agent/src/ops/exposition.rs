//! The Prometheus text format (version 0.0.4) of kedge's counters and gauges, and the
//! readiness verdict: pure functions of a [`Snapshot`], so both are tested without a server.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::telemetry::Stats;
use crate::transform::stats::PluginSnapshot;

/// Everything a scrape reports, read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Counters, in exposition order: (name, help, value).
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// Commit latency: cumulative (bound, count) per bucket, count, sum in seconds.
    pub commit_latency: (Vec<(f64, u64)>, u64, f64),
    /// Bytes of journal chunks and sealed batches the queue holds.
    pub queue_live_bytes: u64,
    /// The queue's byte budget (`u64::MAX` when unknown).
    pub queue_max_bytes: u64,
    /// Age of the oldest record waiting for Kafka, in seconds; `None` when nothing waits.
    pub oldest_pending_age: Option<f64>,
    /// Records lost to damaged journal chunks since the queue was created.
    pub lost_records: u64,
    /// Where an unopenable queue database was moved at a start, if ever.
    pub quarantined: Option<String>,
    /// Whether the MQTT session is up.
    pub mqtt_connected: bool,
    /// Resident set size of the process in bytes, when /proc tells it.
    pub resident_bytes: Option<u64>,
    /// Per-plugin counters, in config order.
    pub plugins: Vec<PluginSnapshot>,
}

/// The per-plugin families, each labelled by plugin (and verdict, fault kind or counter name).
fn plugin_metrics(o: &mut String, plugins: &[PluginSnapshot]) {
    if plugins.is_empty() {
        return;
    }
    type Rows<'a> = Vec<(String, String)>;
    let family = |o: &mut String, name: &str, help: &str, kind: &str, rows: Rows<'_>| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(o, "{name}{{{labels}}} {value}");
        }
    };
    let each = |f: &dyn Fn(&PluginSnapshot) -> u64| -> Rows<'_> {
        plugins
            .iter()
            .map(|p| (format!("plugin=\"{}\"", escape(&p.name)), f(p).to_string()))
            .collect()
    };
    let by = |label: &str, f: &dyn Fn(&PluginSnapshot) -> Vec<(String, u64)>| -> Rows<'_> {
        plugins
            .iter()
            .flat_map(|p| {
                f(p).into_iter().map(move |(k, v)| {
                    (
                        format!("plugin=\"{}\",{label}=\"{}\"", escape(&p.name), escape(&k)),
                        v.to_string(),
                    )
                })
            })
            .collect()
    };
    let owned = |v: &[(&'static str, u64)]| v.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
    family(
        o,
        "kedge_plugin_events_total",
        "Events given to the plugin.",
        "counter",
        each(&|p| p.events),
    );
    family(
        o,
        "kedge_plugin_calls_total",
        "process calls, including bisection re-runs.",
        "counter",
        each(&|p| p.calls),
    );
    family(
        o,
        "kedge_plugin_verdicts_total",
        "Verdicts the plugin returned, by kind.",
        "counter",
        by("verdict", &|p| owned(&p.verdicts)),
    );
    family(
        o,
        "kedge_plugin_outputs_total",
        "Records the plugin made (replacements and tick emissions).",
        "counter",
        each(&|p| p.outputs),
    );
    family(
        o,
        "kedge_plugin_faulted_events_total",
        "Events dead-lettered because the plugin faulted, by fault.",
        "counter",
        by("fault", &|p| owned(&p.faults)),
    );
    family(
        o,
        "kedge_plugin_recycles_total",
        "Instances replaced after a trap, timeout or memory overrun.",
        "counter",
        each(&|p| p.recycles),
    );
    family(
        o,
        "kedge_plugin_circuit_open",
        "1 while the plugin's circuit is open.",
        "gauge",
        each(&|p| u64::from(p.circuit_open)),
    );
    family(
        o,
        "kedge_plugin_circuit_opened_total",
        "Times the plugin's circuit opened.",
        "counter",
        each(&|p| p.circuit_opened),
    );
    family(
        o,
        "kedge_plugin_logs_suppressed_total",
        "Plugin log lines dropped by the rate limit.",
        "counter",
        each(&|p| p.logs_suppressed),
    );
    family(
        o,
        "kedge_plugin_counter_total",
        "The plugin's own counters (counter-add).",
        "counter",
        by("name", &|p| p.counters.clone()),
    );
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
    /// The counters of `stats`, named as the README lists them.
    pub fn counters_of(stats: &Stats) -> Vec<(&'static str, &'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "kedge_records_received_total",
                "Events received from MQTT.",
                g(&stats.received),
            ),
            (
                "kedge_records_acknowledged_total",
                "Events acknowledged to MQTT after the journal made them durable.",
                g(&stats.source_acked),
            ),
            (
                "kedge_records_journaled_total",
                "Records committed to the journal.",
                g(&stats.journaled),
            ),
            (
                "kedge_records_dead_lettered_total",
                "Records routed to the dead-letter topic.",
                g(&stats.dead_lettered),
            ),
            (
                "kedge_records_dropped_total",
                "Records dropped (full queue policy, or refused even by the dead-letter topic).",
                g(&stats.dropped),
            ),
            (
                "kedge_journal_commits_total",
                "Journal group commits.",
                g(&stats.commits),
            ),
            (
                "kedge_records_sealed_total",
                "Records sealed into Kafka batches.",
                g(&stats.sealed),
            ),
            (
                "kedge_records_delivered_total",
                "Records Kafka acknowledged.",
                g(&stats.delivered),
            ),
            (
                "kedge_batches_delivered_total",
                "Batches Kafka acknowledged.",
                g(&stats.batches_delivered),
            ),
            (
                "kedge_batches_duplicate_total",
                "Resent batches Kafka already held (deduplicated, or found by verify).",
                g(&stats.duplicates_detected),
            ),
            (
                "kedge_batch_retries_total",
                "Batches sent again after an error or a lost response.",
                g(&stats.retries),
            ),
        ]
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for (name, help, value) in &self.counters {
            metric(&mut o, name, help, "counter", &value.to_string());
        }
        let (buckets, count, sum) = &self.commit_latency;
        let name = "kedge_journal_commit_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Time of a durable journal commit (append, flush, fdatasync).\n# TYPE {name} histogram"
        );
        for (le, n) in buckets {
            let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        metric(
            &mut o,
            "kedge_queue_live_bytes",
            "Bytes of journal chunks and sealed batches waiting for Kafka.",
            "gauge",
            &self.queue_live_bytes.to_string(),
        );
        if self.queue_max_bytes != u64::MAX {
            metric(
                &mut o,
                "kedge_queue_max_bytes",
                "The queue's byte budget.",
                "gauge",
                &self.queue_max_bytes.to_string(),
            );
        }
        metric(
            &mut o,
            "kedge_queue_oldest_pending_age_seconds",
            "Age of the oldest record waiting for Kafka (0 when none waits).",
            "gauge",
            &self.oldest_pending_age.unwrap_or(0.0).to_string(),
        );
        metric(
            &mut o,
            "kedge_queue_lost_records",
            "Records lost to damaged journal chunks since the queue was created.",
            "gauge",
            &self.lost_records.to_string(),
        );
        metric(
            &mut o,
            "kedge_queue_quarantined",
            "1 when an unopenable queue database was set aside at a start.",
            "gauge",
            if self.quarantined.is_some() { "1" } else { "0" },
        );
        metric(
            &mut o,
            "kedge_mqtt_connected",
            "1 while the MQTT session is up.",
            "gauge",
            if self.mqtt_connected { "1" } else { "0" },
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
        plugin_metrics(&mut o, &self.plugins);
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
        reasons
    }
}

fn metric(o: &mut String, name: &str, help: &str, kind: &str, value: &str) {
    let _ = writeln!(
        o,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
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
        stats
            .commit_latency
            .observe(std::time::Duration::from_millis(2));
        let s = Snapshot {
            counters: Snapshot::counters_of(&stats),
            commit_latency: stats.commit_latency.read(),
            queue_live_bytes: 10,
            queue_max_bytes: u64::MAX,
            oldest_pending_age: Some(1.5),
            resident_bytes: resident_bytes(),
            ..Snapshot::default()
        };
        let text = s.render();
        assert!(
            text.contains(
                "# HELP kedge_records_received_total Events received from MQTT.\n\
                 # TYPE kedge_records_received_total counter\n\
                 kedge_records_received_total 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nkedge_queue_live_bytes 10\n"), "{text}");
        assert!(
            text.contains("kedge_journal_commit_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nkedge_queue_oldest_pending_age_seconds 1.5\n"),
            "{text}"
        );
        assert!(!text.contains("kedge_queue_max_bytes"), "{text}");
        assert!(
            text.contains("\nkedge_process_resident_memory_bytes "),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').expect("name value");
            assert!(name.starts_with("kedge_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
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
    }
}
