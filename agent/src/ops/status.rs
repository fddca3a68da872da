//! `kedge status` for a running agent: the [`Report`] its listener serves at `/status.json`,
//! and a human summary of two of them (a second apart, for rates) with its `/status/queue` and
//! `/status/log`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kedge_queue::tools::human;
use serde::{Deserialize, Deserializer, Serialize};

use super::exposition::{Readiness, Snapshot};
use crate::telemetry::Stats;

/// What `/status.json` answers and `kedge status` reads: the agent at one moment. Every field
/// must be present to be read, a value the agent could not measure as `null`: an agent that
/// leaves one out is an error, never a 0. Fields it does not know are ignored, so that an
/// older `kedge status` reads a newer agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Records through the pipeline since the start.
    pub records: Records,
    /// What waits for Kafka.
    pub queue: QueueState,
    /// The link to Kafka.
    pub kafka: KafkaState,
    /// Whether the MQTT session is up.
    pub mqtt_connected: bool,
    /// Each plugin, in config order.
    pub plugins: Vec<PluginState>,
    /// The process itself.
    pub process: ProcessState,
    /// Why the agent is not ready (what `/health/ready` answers); empty when it is.
    pub unready: Vec<String>,
}

/// Records through the pipeline since the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Records {
    /// Received from the source.
    pub received: u64,
    /// Committed to the journal.
    pub journaled: u64,
    /// Acknowledged by Kafka.
    pub delivered: u64,
    /// Sent to the dead-letter topic, every reason.
    pub dead_lettered: u64,
    /// Dropped by kedge, every reason (`kedge_records_dropped_total`: the full-queue policy,
    /// or refused even by the dead-letter topic); what plugins drop is not in it.
    pub dropped: u64,
    /// Dropped by plugins (their `drop` verdicts), all plugins together: filtered out, not
    /// lost.
    pub dropped_by_plugins: u64,
}

/// What waits for Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueState {
    /// Records in the journal, not yet sealed into batches (`null`: the journal cannot be read).
    #[serde(deserialize_with = "required")]
    pub journal_records: Option<u64>,
    /// Records in sealed batches Kafka has not acknowledged.
    pub unacknowledged_records: u64,
    /// Age of the oldest record waiting, in seconds (`null`: none waits).
    #[serde(deserialize_with = "required")]
    pub oldest_pending_age_seconds: Option<f64>,
    /// Bytes of journal chunks and sealed batches waiting.
    pub live_bytes: u64,
    /// The byte budget (`null`: none).
    #[serde(deserialize_with = "required")]
    pub max_bytes: Option<u64>,
    /// Bytes of the queue's files (`null`: they cannot be measured).
    #[serde(deserialize_with = "required")]
    pub disk_bytes: Option<u64>,
}

/// The link to Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaState {
    /// Whether the last exchange with Kafka succeeded.
    pub connected: bool,
    /// Open broker connections.
    pub connections: u64,
    /// Partitions whose leader is known.
    pub leaders_known: u64,
    /// Partitions whose leader is not.
    pub leaders_unknown: u64,
    /// Produce requests waiting for their response.
    pub requests_in_flight: u64,
    /// Seconds since Kafka last acknowledged a batch (`null`: none since the start).
    #[serde(deserialize_with = "required")]
    pub last_ack_age_seconds: Option<f64>,
    /// Failed partitions of Produce requests by Kafka error name, or `network`.
    pub produce_errors: BTreeMap<String, u64>,
    /// Batches Kafka acknowledged.
    pub batches_delivered: u64,
    /// Batches sent again.
    pub batch_retries: u64,
    /// Batches Kafka answered as duplicates.
    pub batches_duplicate: u64,
}

/// One plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginState {
    /// Its name from the config.
    pub name: String,
    /// Whether its circuit is open.
    pub circuit_open: bool,
    /// Events given to it.
    pub events: u64,
    /// Events it dropped (its `drop` verdicts).
    pub dropped: u64,
    /// Events dead-lettered because it faulted, every fault.
    pub faulted: u64,
    /// Instances replaced.
    pub recycles: u64,
}

/// The process itself, as /proc tells it (`null` where it does not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessState {
    /// Resident set size in bytes.
    #[serde(deserialize_with = "required")]
    pub resident_bytes: Option<u64>,
    /// Open file descriptors.
    #[serde(deserialize_with = "required")]
    pub open_fds: Option<u64>,
    /// The process id (`kedge reload` signals it).
    pub pid: u32,
    /// Its pid namespace (`/proc/self/ns/pid`, e.g. `pid:[4026531836]`): `kedge reload`
    /// signals `pid` only from the same one.
    #[serde(deserialize_with = "required")]
    pub pid_namespace: Option<String>,
    /// When it started, in clock ticks since boot (`/proc/self/stat`): with `pid`, which
    /// process it is even once the pid is reused.
    #[serde(deserialize_with = "required")]
    pub start_ticks: Option<u64>,
    /// Config reloads applied since the start.
    pub reloads_applied: u64,
    /// Config reloads refused since the start.
    pub reloads_refused: u64,
    /// Times the config file was read on SIGHUP; each read is numbered, from 1.
    pub reloads_read: u64,
    /// The number of the read the last verdict (applied or refused) was on; 0 before any.
    pub reload_answered: u64,
    /// Why the last reload was refused, unless one was applied since.
    #[serde(deserialize_with = "required")]
    pub reload_refused: Option<String>,
    /// The config file the agent re-reads on SIGHUP.
    pub config_file: String,
}

/// An `Option` field that must be present, as `null` when empty: serde reads a missing
/// `Option` as `None` unless a field has its own deserializer.
fn required<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::deserialize(d)
}

impl Report {
    /// The report of an agent whose counters are `stats` and whose queue, process and plugins
    /// `snapshot` read.
    pub fn of(stats: &Stats, snapshot: &Snapshot, readiness: &Readiness) -> Report {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sum = |v: Vec<(&'static str, u64)>| v.iter().map(|(_, n)| n).sum();
        let own = super::procfs::Identity::own();
        let delivery = &stats.delivery;
        let k = &delivery.kafka;
        let s = snapshot;
        let plugins: Vec<PluginState> = s
            .plugins
            .iter()
            .map(|p| PluginState {
                name: p.name.clone(),
                circuit_open: p.circuit_open,
                events: p.events,
                dropped: p
                    .verdicts
                    .iter()
                    .find(|(verdict, _)| *verdict == "drop")
                    .map_or(0, |(_, n)| *n),
                faulted: p.faults.iter().map(|(_, n)| n).sum(),
                recycles: p.recycles,
            })
            .collect();
        Report {
            records: Records {
                received: g(&stats.source.received),
                journaled: g(&stats.ingest.journaled),
                delivered: g(&delivery.delivered),
                dead_lettered: sum(stats.dead_lettered_by_reason()),
                dropped: sum(stats.dropped_by_reason()),
                // A record one plugin dropped reaches no later plugin, so none counts twice;
                // the records counted include those earlier plugins made (splits, `tick`).
                dropped_by_plugins: plugins.iter().map(|p| p.dropped).sum(),
            },
            queue: QueueState {
                journal_records: s.journal_records,
                unacknowledged_records: g(&k.records_unacknowledged),
                oldest_pending_age_seconds: s.oldest_pending_age,
                live_bytes: s.queue_live_bytes,
                max_bytes: (s.queue_max_bytes != u64::MAX).then_some(s.queue_max_bytes),
                disk_bytes: s.queue_disk_bytes,
            },
            kafka: KafkaState {
                connected: k.connected.load(Ordering::Relaxed),
                connections: g(&k.connections),
                leaders_known: g(&k.leaders_known),
                leaders_unknown: g(&k.leaders_unknown),
                requests_in_flight: g(&k.requests_in_flight),
                last_ack_age_seconds: s.last_ack_age,
                produce_errors: delivery
                    .produce_errors()
                    .into_iter()
                    .map(|(e, n)| (e.to_owned(), n))
                    .collect(),
                batches_delivered: g(&delivery.batches_delivered),
                batch_retries: g(&delivery.retries),
                batches_duplicate: g(&delivery.duplicates_detected),
            },
            mqtt_connected: s.mqtt_connected,
            plugins,
            process: ProcessState {
                resident_bytes: s.resident_bytes,
                open_fds: s.open_fds,
                pid: std::process::id(),
                pid_namespace: own.namespace,
                start_ticks: own.start_ticks,
                reloads_applied: g(&stats.reload.applied),
                reloads_refused: g(&stats.reload.refused),
                reloads_read: g(&stats.reload.read),
                reload_answered: s.reload_answered,
                reload_refused: s.reload_refused.clone(),
                // Known to the listener, not to the counters: it fills this in.
                config_file: String::new(),
            },
            unready: s.unready(readiness),
        }
    }
}

/// What `kedge status` read from a running agent.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// A `/status.json` report.
    pub first: &'a Report,
    /// Another, `interval` later, for rates; the summary is of this one.
    pub second: &'a Report,
    /// Time between the two.
    pub interval: Duration,
    /// The `/status/queue` report, if it could be read.
    pub queue: Option<&'a str>,
    /// The `/status/log` lines, if they could be read.
    pub log: Option<&'a str>,
}

/// The summary of a running agent.
pub fn running(addr: SocketAddr, seen: &Observed<'_>) -> String {
    let (before, now) = (seen.first, seen.second);
    let secs = seen.interval.as_secs_f64().max(1e-3);
    let rate =
        |f: fn(&Records) -> u64| f(&now.records).saturating_sub(f(&before.records)) as f64 / secs;
    let r = &now.records;
    let mut o = String::new();
    let _ = writeln!(o, "kedge is running (metrics at http://{addr}/metrics)");
    // What plugins drop is filtering, kept apart from what kedge dropped; said only when
    // there are plugins.
    let by_plugins = if now.plugins.is_empty() {
        String::new()
    } else {
        format!(" + {} by plugins", r.dropped_by_plugins)
    };
    let _ = writeln!(
        o,
        "records          received {} journaled {} delivered {} dead-lettered {} dropped {}{by_plugins}",
        r.received, r.journaled, r.delivered, r.dead_lettered, r.dropped,
    );
    let (journaled, delivered) = (rate(|r| r.journaled), rate(|r| r.delivered));
    let _ = writeln!(
        o,
        "throughput       received {:.0}/s, journaled {journaled:.0}/s, delivered {delivered:.0}/s (over {:.1} s)",
        rate(|r| r.received),
        secs
    );
    let q = &now.queue;
    let unacknowledged = q.unacknowledged_records;
    let oldest = q.oldest_pending_age_seconds.unwrap_or(0.0);
    match q.journal_records {
        Some(journal) => {
            let pending = journal + unacknowledged;
            let drain = if pending == 0 {
                "nothing pending".to_owned()
            } else if delivered > journaled {
                format!(
                    "drains in about {}",
                    human_secs(pending as f64 / (delivered - journaled))
                )
            } else {
                "not shrinking".to_owned()
            };
            let _ = writeln!(
                o,
                "backlog          {pending} records ({journal} in the journal, {unacknowledged} in unacknowledged batches), oldest {oldest:.0}s; {drain}",
            );
        }
        None => {
            let _ = writeln!(
                o,
                "backlog          unknown: the journal cannot be read ({unacknowledged} records in unacknowledged batches), oldest {oldest:.0}s",
            );
        }
    }
    let budget = q
        .max_bytes
        .map_or_else(|| "no limit".to_owned(), |b| format!("budget {}", human(b)));
    let disk = q.disk_bytes.map_or_else(
        || "disk use unknown".to_owned(),
        |b| format!("{} on disk", human(b)),
    );
    let _ = writeln!(
        o,
        "queue            {} pending ({budget}), {disk}",
        human(q.live_bytes),
    );
    let k = &now.kafka;
    let last_ack = k
        .last_ack_age_seconds
        .map_or_else(|| "none yet".to_owned(), |a| format!("{a:.1}s ago"));
    let _ = writeln!(
        o,
        "kafka            {}, open connections {}, partition leaders {} known {} unknown, {} requests in flight, last ack {last_ack}",
        if k.connected {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        k.connections,
        k.leaders_known,
        k.leaders_unknown,
        k.requests_in_flight,
    );
    let errors: Vec<String> = k
        .produce_errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(e, n)| format!("{e} {n}"))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(o, "                 produce errors: {}", errors.join(", "));
    }
    let _ = writeln!(
        o,
        "batches          delivered {} retried {} duplicates {}",
        k.batches_delivered, k.batch_retries, k.batches_duplicate,
    );
    let _ = writeln!(
        o,
        "mqtt             {}",
        if now.mqtt_connected {
            "connected"
        } else {
            "disconnected"
        }
    );
    for (i, p) in now.plugins.iter().enumerate() {
        let _ = writeln!(
            o,
            "{}{}: circuit {}, {} events, {} dropped, {} faulted, {} recycles",
            if i == 0 {
                "plugins          "
            } else {
                "                 "
            },
            p.name,
            if p.circuit_open { "OPEN" } else { "closed" },
            p.events,
            p.dropped,
            p.faulted,
            p.recycles,
        );
    }
    let unknown = || "unknown".to_owned();
    let _ = writeln!(
        o,
        "memory           {} resident, {} open files",
        now.process
            .resident_bytes
            .map_or_else(unknown, |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        now.process.open_fds.map_or_else(unknown, |n| n.to_string()),
    );
    let _ = writeln!(
        o,
        "config reloads   {} applied, {} refused",
        now.process.reloads_applied, now.process.reloads_refused
    );
    block(&mut o, "ready", &Snapshot::ready_text(&now.unready));
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
    use crate::telemetry::add;

    /// An agent that delivered 650 records, 1,500 waiting; one plugin with its circuit open.
    fn after() -> Report {
        Report {
            records: Records {
                received: 300,
                journaled: 300,
                delivered: 650,
                dead_lettered: 5,
                dropped: 0,
                dropped_by_plugins: 3,
            },
            queue: QueueState {
                journal_records: Some(1200),
                unacknowledged_records: 300,
                oldest_pending_age_seconds: None,
                live_bytes: 2048,
                max_bytes: None,
                disk_bytes: Some(1 << 20),
            },
            kafka: KafkaState {
                connected: true,
                connections: 0,
                leaders_known: 3,
                leaders_unknown: 0,
                requests_in_flight: 0,
                last_ack_age_seconds: Some(0.5),
                produce_errors: [("NOT_LEADER_OR_FOLLOWER", 0), ("network", 2)]
                    .map(|(e, n)| (e.to_owned(), n))
                    .into(),
                batches_delivered: 7,
                batch_retries: 1,
                batches_duplicate: 0,
            },
            mqtt_connected: true,
            plugins: vec![PluginState {
                name: "units".into(),
                circuit_open: true,
                events: 9,
                dropped: 3,
                faulted: 5,
                recycles: 0,
            }],
            process: ProcessState {
                resident_bytes: Some(12 << 20),
                open_fds: Some(23),
                pid: 4242,
                pid_namespace: Some("pid:[4026531836]".into()),
                start_ticks: Some(987_654),
                reloads_applied: 1,
                reloads_refused: 2,
                reloads_read: 3,
                reload_answered: 3,
                reload_refused: Some("mqtt cannot change while kedge runs".into()),
                config_file: "/etc/kedge/kedge.toml".into(),
            },
            unready: vec!["a".into(), "b".into()],
        }
    }

    /// [`after`] two seconds earlier: 200 records journaled and 600 delivered since.
    fn before() -> Report {
        let mut r = after();
        r.records = Records {
            received: 0,
            journaled: 100,
            delivered: 50,
            ..r.records
        };
        r
    }

    #[test]
    fn summarises_two_reports() {
        let (first, second) = (before(), after());
        let seen = Observed {
            first: &first,
            second: &second,
            interval: Duration::from_secs(2),
            queue: Some("queue            /var/lib/kedge/queue\n"),
            log: Some("3s ago WARN Kafka unreachable\n"),
        };
        let s = running(([127, 0, 0, 1], 9464).into(), &seen);
        assert_eq!(
            s,
            "kedge is running (metrics at http://127.0.0.1:9464/metrics)
records          received 300 journaled 300 delivered 650 dead-lettered 5 dropped 0 + 3 by plugins
throughput       received 150/s, journaled 100/s, delivered 300/s (over 2.0 s)
backlog          1500 records (1200 in the journal, 300 in unacknowledged batches), oldest 0s; drains in about 8 s
queue            2.0 KiB pending (no limit), 1.0 MiB on disk
kafka            connected, open connections 0, partition leaders 3 known 0 unknown, 0 requests in flight, last ack 0.5s ago
                 produce errors: network 2
batches          delivered 7 retried 1 duplicates 0
mqtt             connected
plugins          units: circuit OPEN, 9 events, 3 dropped, 5 faulted, 0 recycles
memory           12.0 MiB resident, 23 open files
config reloads   1 applied, 2 refused
ready            a
                 b
last problems    3s ago WARN Kafka unreachable

queue            /var/lib/kedge/queue
"
        );
    }

    #[test]
    fn a_growing_backlog_is_not_given_a_drain_time() {
        let first = after();
        let mut second = after();
        second.records.journaled = 900;
        second.unready.clear();
        second.plugins.clear();
        let seen = Observed {
            first: &first,
            second: &second,
            interval: Duration::from_secs(1),
            queue: None,
            log: Some(""),
        };
        let s = running(([127, 0, 0, 1], 9464).into(), &seen);
        assert!(s.contains("; not shrinking"), "{s}");
        // Without plugins, nothing is said about them.
        assert!(s.contains(" dropped 0\n"), "{s}");
        assert!(s.contains("\nready            ready\n"), "{s}");
        assert!(s.contains("last problems    none"), "{s}");
    }

    /// What the agent could not measure is said so, not shown as 0.
    #[test]
    fn unknown_values_are_not_zeros() {
        let mut r = after();
        r.queue.journal_records = None;
        r.queue.disk_bytes = None;
        r.process.resident_bytes = None;
        r.process.open_fds = None;
        let seen = Observed {
            first: &r,
            second: &r,
            interval: Duration::from_secs(1),
            queue: None,
            log: None,
        };
        let s = running(([127, 0, 0, 1], 9464).into(), &seen);
        for want in [
            "\nbacklog          unknown: the journal cannot be read (300 records in unacknowledged batches), oldest 0s\n",
            "\nqueue            2.0 KiB pending (no limit), disk use unknown\n",
            "\nmemory           unknown resident, unknown open files\n",
        ] {
            assert!(s.contains(want), "{want:?} not in\n{s}");
        }
    }

    /// Every field, `Option`s included, must be there: one left out fails the whole report.
    #[test]
    fn a_report_missing_any_field_is_an_error() {
        let json = serde_json::to_value(after()).unwrap();
        let back: Report = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, after());
        let mut fields = Vec::new();
        collect_fields(&json, &mut Vec::new(), &mut fields);
        assert!(fields.len() > 30, "{fields:?}");
        for path in &fields {
            let mut lacking = json.clone();
            let (last, parents) = path.split_last().unwrap();
            let mut object = &mut lacking;
            for p in parents {
                object = match p.parse::<usize>() {
                    Ok(i) => &mut object[i],
                    Err(_) => &mut object[p.as_str()],
                };
            }
            object.as_object_mut().unwrap().remove(last);
            let read = serde_json::from_value::<Report>(lacking);
            let e = read.expect_err(&format!("read without {}", path.join(".")));
            assert!(e.to_string().contains("missing field"), "{e}");
        }
        // Unknown values are `null`, and fields this build does not know are ignored.
        let mut json = json;
        json["queue"]["max_bytes"] = serde_json::Value::Null;
        json["kafka"]["last_ack_age_seconds"] = serde_json::Value::Null;
        json["a_field_of_a_newer_agent"] = 1.into();
        let read: Report = serde_json::from_value(json).unwrap();
        assert_eq!(read.kafka.last_ack_age_seconds, None);
    }

    /// The path of every field of `v`'s objects, array elements included, but not a map's
    /// entries (`produce_errors`: any error names may be there).
    fn collect_fields(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Object(o) if at.last().is_none_or(|l| l != "produce_errors") => {
                for (k, v) in o {
                    at.push(k.clone());
                    out.push(at.clone());
                    collect_fields(v, at, out);
                    at.pop();
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    at.push(i.to_string());
                    collect_fields(v, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    #[test]
    fn a_report_is_read_from_the_counters_and_a_snapshot() {
        let stats = Stats::default();
        add(&stats.source.received, 4);
        let discards = &stats.ingest.discards;
        discards.dead_lettered(crate::telemetry::DeadLetter::Plugin, 2);
        discards.dead_lettered(crate::telemetry::DeadLetter::Unroutable, 1);
        stats.delivery.produce_error("network");
        discards.dropped(crate::telemetry::Dropped::DropNewest, 1);
        use kedge_plugin_host::stats::PluginStats;
        let plugin = PluginStats::new("units");
        plugin.fault("trap");
        plugin.fault("timeout");
        PluginStats::add(&plugin.dropped, 2);
        let next = PluginStats::new("avg10");
        PluginStats::add(&next.dropped, 3);
        let snapshot = Snapshot {
            queue_max_bytes: u64::MAX,
            oldest_pending_age: Some(120.0),
            plugins: vec![plugin.snapshot(), next.snapshot()],
            ..Snapshot::default()
        };
        let readiness = Readiness {
            max_pending_age: 60.0,
            max_queue_percent: 90,
        };
        let r = Report::of(&stats, &snapshot, &readiness);
        assert_eq!(r.records.received, 4);
        assert_eq!(r.records.dead_lettered, 3);
        assert_eq!(r.kafka.produce_errors["network"], 1);
        assert_eq!(r.queue.max_bytes, None);
        assert_eq!(r.plugins[0].faulted, 2);
        // What plugins drop is theirs, per plugin and together, and not kedge's.
        assert_eq!((r.plugins[0].dropped, r.plugins[1].dropped), (2, 3));
        assert_eq!((r.records.dropped, r.records.dropped_by_plugins), (1, 5));
        assert_eq!(r.unready, snapshot.unready(&readiness));
        assert_eq!(r.unready.len(), 1);
    }

    /// A verdict recorded between the snapshot and the report must not lend the report its
    /// number while the refusal is the snapshot's: `kedge reload` would print the wrong verdict.
    #[test]
    fn the_reload_verdict_and_its_number_come_from_one_moment() {
        let stats = Stats::default();
        let read = stats.reload.begin_read();
        let last = stats.reload.last();
        let snapshot = Snapshot {
            reload_refused: last.refusal,
            reload_answered: last.read,
            ..Snapshot::default()
        };
        stats
            .reload
            .refused(read, &crate::reload::Refused::Invalid("bad".into()));
        let readiness = Readiness {
            max_pending_age: 60.0,
            max_queue_percent: 90,
        };
        let r = Report::of(&stats, &snapshot, &readiness);
        assert_eq!(
            (r.process.reload_answered, r.process.reload_refused),
            (0, None)
        );
        assert_eq!(r.process.reloads_read, 1);
    }
}
