//! `kedge status` for a running agent: a human summary of its `/metrics`, `/health/ready`,
//! `/status/queue` and `/status/log`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use kedge_queue::tools::human;

/// Every sample of a Prometheus text exposition: (name, labels without braces, value).
fn series(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = value.trim().parse().ok()?;
            match series.split_once('{') {
                Some((name, labels)) => Some((name, labels.strip_suffix('}')?, value)),
                None => Some((series, "", value)),
            }
        })
}

/// The samples of a scrape by name, labelled series of one name summed.
pub fn samples(text: &str) -> HashMap<&str, f64> {
    let mut out = HashMap::new();
    for (name, _, value) in series(text) {
        *out.entry(name).or_insert(0.0) += value;
    }
    out
}

/// The value of `label` in a label set such as `plugin="units",verdict="keep"`.
fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{label}=\""))? + label.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// What `kedge status` read from a running agent.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// A `/metrics` scrape.
    pub first: &'a str,
    /// Another, `interval` later, for rates.
    pub second: &'a str,
    /// Time between the two scrapes.
    pub interval: Duration,
    /// The `/health/ready` body.
    pub ready: &'a str,
    /// The `/status/queue` report, if it could be read.
    pub queue: Option<&'a str>,
    /// The `/status/log` lines, if they could be read.
    pub log: Option<&'a str>,
}

/// The summary of a running agent.
pub fn running(addr: SocketAddr, seen: &Observed<'_>) -> String {
    let before = samples(seen.first);
    let m = samples(seen.second);
    let g = |name: &str| m.get(name).copied().unwrap_or(0.0);
    let secs = seen.interval.as_secs_f64().max(1e-3);
    let rate = |name: &str| (g(name) - before.get(name).copied().unwrap_or(0.0)).max(0.0) / secs;
    let mut o = String::new();
    let _ = writeln!(o, "kedge is running (metrics at http://{addr}/metrics)");
    let _ = writeln!(
        o,
        "records          received {} journaled {} delivered {} dead-lettered {} dropped {}",
        g("kedge_records_received_total"),
        g("kedge_records_journaled_total"),
        g("kedge_records_delivered_total"),
        g("kedge_records_dead_lettered_total"),
        g("kedge_records_dropped_total"),
    );
    let (journaled, delivered) = (
        rate("kedge_records_journaled_total"),
        rate("kedge_records_delivered_total"),
    );
    let _ = writeln!(
        o,
        "throughput       received {:.0}/s, journaled {journaled:.0}/s, delivered {delivered:.0}/s (over {:.1} s)",
        rate("kedge_records_received_total"),
        secs
    );
    let pending = g("kedge_journal_records") + g("kedge_records_unacknowledged");
    let drain = if pending == 0.0 {
        "nothing pending".to_owned()
    } else if delivered > journaled {
        format!(
            "drains in about {}",
            human_secs(pending / (delivered - journaled))
        )
    } else {
        "not shrinking".to_owned()
    };
    let _ = writeln!(
        o,
        "backlog          {pending} records ({} in the journal, {} in unacknowledged batches), oldest {:.0}s; {drain}",
        g("kedge_journal_records"),
        g("kedge_records_unacknowledged"),
        g("kedge_queue_oldest_pending_age_seconds"),
    );
    let bytes = |v: f64| human(v as u64);
    let budget = m.get("kedge_queue_max_bytes").map_or_else(
        || "no limit".to_owned(),
        |b| format!("budget {}", bytes(*b)),
    );
    let _ = writeln!(
        o,
        "queue            {} pending ({budget}), {} on disk",
        bytes(g("kedge_queue_live_bytes")),
        bytes(g("kedge_queue_disk_bytes")),
    );
    let last_ack = m
        .get("kedge_kafka_last_ack_age_seconds")
        .map_or_else(|| "none yet".to_owned(), |a| format!("{a:.1}s ago"));
    let _ = writeln!(
        o,
        "kafka            {}, open connections {}, partition leaders {} known {} unknown, {} requests in flight, last ack {last_ack}",
        if g("kedge_kafka_connected") == 1.0 {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        g("kedge_kafka_connections"),
        labelled(seen.second, "kedge_kafka_partitions", "leader", "known"),
        labelled(seen.second, "kedge_kafka_partitions", "leader", "unknown"),
        g("kedge_produce_requests_in_flight"),
    );
    let errors: Vec<String> = series(seen.second)
        .filter(|(n, _, v)| *n == "kedge_produce_errors_total" && *v > 0.0)
        .filter_map(|(_, l, v)| Some(format!("{} {v}", label(l, "error")?)))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(o, "                 produce errors: {}", errors.join(", "));
    }
    let _ = writeln!(
        o,
        "batches          delivered {} retried {} duplicates {}",
        g("kedge_batches_delivered_total"),
        g("kedge_batch_retries_total"),
        g("kedge_batches_duplicate_total"),
    );
    let _ = writeln!(
        o,
        "mqtt             {}",
        if g("kedge_mqtt_connected") == 1.0 {
            "connected"
        } else {
            "disconnected"
        }
    );
    plugins(&mut o, seen.second);
    let _ = writeln!(
        o,
        "memory           {:.1} MiB resident, {} open files",
        g("kedge_process_resident_memory_bytes") / 1048576.0,
        g("kedge_process_open_fds"),
    );
    block(&mut o, "ready", seen.ready);
    match seen.log {
        Some(log) if !log.trim().is_empty() => block(&mut o, "last problems", log),
        Some(_) => block(&mut o, "last problems", "none\n"),
        None => {}
    }
    if let Some(queue) = seen.queue {
        let _ = write!(o, "\n{queue}");
    }
    o
}

/// The value of one labelled series, 0 when absent.
fn labelled(text: &str, name: &str, key: &str, value: &str) -> f64 {
    series(text)
        .find(|(n, l, _)| *n == name && label(l, key) == Some(value))
        .map_or(0.0, |(_, _, v)| v)
}

/// One line per plugin: its circuit, events and faults.
fn plugins(o: &mut String, text: &str) {
    let mut names: Vec<&str> = series(text)
        .filter(|(n, _, _)| *n == "kedge_plugin_events_total")
        .filter_map(|(_, l, _)| label(l, "plugin"))
        .collect();
    names.dedup();
    for (i, name) in names.iter().enumerate() {
        let of = |family: &str| -> f64 {
            series(text)
                .filter(|(n, l, _)| *n == family && label(l, "plugin") == Some(name))
                // `sum` of nothing is −0.0 for floats.
                .fold(0.0, |a, (_, _, v)| a + v)
        };
        let _ = writeln!(
            o,
            "{}{name}: circuit {}, {} events, {} faulted, {} recycles",
            if i == 0 {
                "plugins          "
            } else {
                "                 "
            },
            if of("kedge_plugin_circuit_open") == 1.0 {
                "OPEN"
            } else {
                "closed"
            },
            of("kedge_plugin_events_total"),
            of("kedge_plugin_faulted_events_total"),
            of("kedge_plugin_recycles_total"),
        );
    }
}

/// `title` before the first line of `body`, the others aligned under it.
fn block(o: &mut String, title: &str, body: &str) {
    for (i, line) in body.lines().enumerate() {
        let head = if i == 0 { title } else { "" };
        let _ = writeln!(o, "{head:<17}{line}");
    }
}

fn human_secs(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "kedge_records_journaled_total 100\nkedge_records_delivered_total 50\n";
    const AFTER: &str = "# HELP x y\n# TYPE x counter\n\
        kedge_records_received_total{source=\"mqtt\"} 300\n\
        kedge_records_journaled_total 300\n\
        kedge_records_delivered_total 650\n\
        kedge_records_dead_lettered_total{reason=\"unroutable\"} 2\n\
        kedge_records_dead_lettered_total{reason=\"plugin\"} 3\n\
        kedge_journal_records 1200\n\
        kedge_records_unacknowledged 300\n\
        kedge_kafka_connected 1\n\
        kedge_kafka_partitions{leader=\"known\"} 3\n\
        kedge_kafka_partitions{leader=\"unknown\"} 0\n\
        kedge_produce_errors_total{error=\"network\"} 2\n\
        kedge_produce_errors_total{error=\"NOT_LEADER_OR_FOLLOWER\"} 0\n\
        kedge_plugin_events_total{plugin=\"units\"} 9\n\
        kedge_plugin_circuit_open{plugin=\"units\"} 1\n\
        kedge_plugin_faulted_events_total{plugin=\"units\",fault=\"trap\"} 4\n\
        kedge_plugin_faulted_events_total{plugin=\"units\",fault=\"timeout\"} 1\n\
        kedge_mqtt_connected 1\n";

    #[test]
    fn summarises_two_scrapes() {
        let seen = Observed {
            first: BEFORE,
            second: AFTER,
            interval: Duration::from_secs(2),
            ready: "a\nb\n",
            queue: Some("queue            /var/lib/kedge/queue\n"),
            log: Some("3s ago WARN Kafka unreachable\n"),
        };
        let s = running(([127, 0, 0, 1], 9464).into(), &seen);
        for want in [
            "delivered 650 dead-lettered 5 dropped 0",
            "journaled 100/s, delivered 300/s (over 2.0 s)",
            // 1,500 pending, shrinking by 200/s.
            "backlog          1500 records (1200 in the journal, 300 in unacknowledged batches), oldest 0s; drains in about 8 s",
            "kafka            connected, open connections 0, partition leaders 3 known 0 unknown",
            "produce errors: network 2\n",
            "mqtt             connected",
            "plugins          units: circuit OPEN, 9 events, 5 faulted, 0 recycles",
            "ready            a\n                 b\n",
            "last problems    3s ago WARN Kafka unreachable\n",
            "\nqueue            /var/lib/kedge/queue\n",
            "no limit",
        ] {
            assert!(s.contains(want), "{want:?} not in\n{s}");
        }
    }

    #[test]
    fn a_growing_backlog_is_not_given_a_drain_time() {
        let seen = Observed {
            first: AFTER,
            second: &AFTER.replace("journaled_total 300", "journaled_total 900"),
            interval: Duration::from_secs(1),
            ready: "ready\n",
            queue: None,
            log: Some(""),
        };
        let s = running(([127, 0, 0, 1], 9464).into(), &seen);
        assert!(s.contains("; not shrinking"), "{s}");
        assert!(s.contains("last problems    none"), "{s}");
    }

    #[test]
    fn labels_are_read_by_name() {
        assert_eq!(label("plugin=\"a\",fault=\"trap\"", "fault"), Some("trap"));
        assert_eq!(label("plugin=\"a\"", "fault"), None);
        assert_eq!(samples(AFTER)["kedge_records_dead_lettered_total"], 5.0);
    }
}
