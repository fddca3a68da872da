//! e2e-bench: the real kedge binary end to end (ARCHITECTURE.md §7, issue 8 item 2).
//!
//! MQTT 5 QoS 1 publishers (a separate process, several connections) → mosquitto → kedge (release
//! binary, `durability = "fsync"` on the real disk, optionally the `rust-units` plugin) → tansu.
//! Everything on 127.0.0.1, fresh brokers and a fresh queue per run. Two modes:
//!
//! - `throughput`: publish N readings as fast as mosquitto takes them; report kedge's sustained
//!   ingest (journaled, acknowledged to MQTT) and delivery (acknowledged by Kafka) rates, its CPU,
//!   RSS (median of 100 ms samples, and peak), and bytes written per ingested payload byte:
//!   those that reached the data dir's block device (`/sys/dev/block/M:m/stat`, every writer's,
//!   so give `--data-dir` a filesystem of its own to count kedge's alone, bench/README.md), and
//!   the page-cache bytes kedge dirtied (`/proc/PID/io` write_bytes, which counts whole folios:
//!   one small write into a large folio counts all of it).
//! - `latency`: publish at a fixed rate (10,000/s) for a while; an independent consumer
//!   (`bench/latency_consumer.py`) reports publish-to-consumer latency P50/P95/P99, which bounds
//!   publish-to-Kafka-ack from above; kedge's own receive-to-ack histogram
//!   (`kedge_delivery_latency_seconds`, quantiles interpolated within its buckets) measures the
//!   hop the budget names; plus RSS and write amplification at that rate.
//! - `backlog` (issue 8 item 3): publish at a fixed rate with Kafka down for `--backlog-seconds`
//!   (tansu not yet started on the port kedge is given), then start it and keep publishing at
//!   the same rate as long again; report the drain rate while ingest continues, the time from
//!   the broker's start to the first acknowledgement, and RSS and disk during the backlog.
//!
//! After every run the topics are read back (`kedge::audit`): every reading exactly once.
//!
//! Usage: e2e-bench [--mode throughput|latency|both|backlog] [--records N] [--rate R]
//!        [--seconds S] [--backlog-seconds S] [--connections K] [--rounds R]
//!        [--plugin PATH|none] [--kedge PATH] [--data-dir DIR]

use kedge_bench as support;

#[path = "e2e/backlog.rs"]
mod backlog;
#[path = "e2e/publisher.rs"]
mod publisher;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::agent::{Agent, ProcSample};
use support::child::run_measured;
use support::mosquitto::Mosquitto;
use support::stats;
use support::tansu::Tansu;

const TOPIC: &str = "readings";
const DEAD_LETTER: &str = "kedge-dead-letter";
const DEVICE: &str = "bench-e2e";
const PAYLOAD: usize = 200;
const DEVICES: u64 = 50;

#[derive(Debug, Clone)]
struct Options {
    modes: Vec<String>,
    records: u64,
    rate: f64,
    seconds: f64,
    backlog_seconds: f64,
    connections: usize,
    rounds: usize,
    plugin: Option<PathBuf>,
    kedge: PathBuf,
    data_dir: PathBuf,
    partitions: u32,
    /// QoS of the publishers and of kedge's subscription.
    qos: u8,
    /// `mqtt.redelivery_window`, when not the default.
    redelivery_window: Option<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: e2e-bench [--mode throughput|latency|both|backlog] [--records N] [--rate R] \
         [--seconds S] [--backlog-seconds S] [--connections K] [--rounds R] [--plugin PATH|none] \
         [--kedge PATH] [--data-dir DIR] [--qos 1|2] [--redelivery-window N]"
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pairs = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { usage() };
        pairs.push((flag.as_str(), value.clone()));
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let num = |name: &str, default: f64| -> f64 {
        get(name).map_or(default, |v| v.parse().unwrap_or_else(|_| usage()))
    };
    if get("--side").as_deref() == Some("publisher") {
        publisher::run(publisher::PublishArgs {
            port: num("--port", 0.0) as u16,
            count: num("--count", 0.0) as u64,
            rate: get("--rate").map(|r| r.parse().unwrap_or_else(|_| usage())),
            connections: num("--connections", 4.0) as usize,
            qos: num("--qos", 1.0) as u8,
            devices: DEVICES,
            payload_bytes: PAYLOAD,
        });
        return;
    }
    let root = support::repo_root();
    let default_plugin = root.join("target/plugins/rust-units.wasm");
    let plugin = match get("--plugin").as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None if default_plugin.is_file() => Some(default_plugin),
        None => {
            eprintln!(
                "note: {} not built (scripts/build-plugins.sh); measuring without a plugin",
                default_plugin.display()
            );
            None
        }
    };
    let options = Options {
        modes: match get("--mode").as_deref().unwrap_or("both") {
            "both" => vec!["throughput".into(), "latency".into()],
            m @ ("throughput" | "latency" | "backlog") => vec![m.to_owned()],
            _ => usage(),
        },
        records: num("--records", 500_000.0) as u64,
        rate: num("--rate", 10_000.0),
        seconds: num("--seconds", 30.0),
        backlog_seconds: num("--backlog-seconds", 300.0),
        connections: num("--connections", 4.0) as usize,
        rounds: num("--rounds", 3.0) as usize,
        plugin,
        kedge: get("--kedge").map_or_else(|| root.join("target/release/kedge"), PathBuf::from),
        data_dir: get("--data-dir").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
        partitions: num("--partitions", 3.0) as u32,
        redelivery_window: get("--redelivery-window"),
        qos: match num("--qos", 1.0) as u8 {
            q @ (1 | 2) => q,
            _ => usage(),
        },
    };
    for (k, _) in &pairs {
        if ![
            "--mode",
            "--records",
            "--rate",
            "--seconds",
            "--backlog-seconds",
            "--connections",
            "--rounds",
            "--plugin",
            "--kedge",
            "--data-dir",
            "--partitions",
            "--qos",
            "--redelivery-window",
        ]
        .contains(k)
        {
            eprintln!("unknown option {k}");
            usage();
        }
    }
    if !options.kedge.is_file() {
        eprintln!(
            "error: {} not found; build it with `cargo build --release -p kedge`",
            options.kedge.display()
        );
        std::process::exit(2);
    }
    if options.modes == ["backlog"] {
        backlog::bench(&options);
    } else {
        bench(&options);
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Figures {
    records: u64,
    /// Records/s journaled (and acknowledged to MQTT) between 10 % and 90 % of the run.
    ingest_rate: f64,
    /// Records/s acknowledged by Kafka between 10 % and 90 % of the run.
    delivery_rate: f64,
    /// From the first publish to the last Kafka acknowledgement.
    overall_rate: f64,
    /// kedge's CPU seconds over the run.
    cpu_s: f64,
    /// kedge's CPU seconds per million records.
    cpu_per_m: f64,
    /// Records per second of kedge CPU: the rate one core would sustain.
    per_core_rate: f64,
    rss_median_mib: f64,
    rss_peak_mib: f64,
    write_amp: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max_latency: f64,
    /// Receive → Kafka ack P50, P95, P99 from kedge's own histogram, ms.
    ack_latency: [f64; 3],
    publisher_rate: f64,
    /// CPU seconds of the publisher process.
    publisher_cpu_s: f64,
    /// CPU seconds of tansu and mosquitto over the run.
    other_cpu_s: f64,
    /// Mean time of one journal commit (append + flush + fdatasync), ms.
    commit_ms: f64,
    /// Journal commits and Kafka batches sent over the run: with fsync, each commit and each
    /// seal rewrites at least one 4 KiB page of a segment file and one of sled's.
    commits: f64,
    batches_sent: f64,
    /// Bytes that reached the data dir's block device per payload byte, from every writer.
    device_amp: f64,
    verified: Result<(), String>,
}

fn bench(o: &Options) {
    eprintln!(
        "e2e-bench: kedge {} ({}), plugin {}, {} MQTT connections, {} rounds; load average {}",
        o.kedge.display(),
        version(&o.kedge),
        o.plugin
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
        o.connections,
        o.rounds,
        support::load_average()
    );
    let load_before = support::load_average();
    let mut results: Vec<(String, Figures)> = Vec::new();
    let mut baselines = Vec::new();
    for round in 0..o.rounds {
        for mode in &o.modes {
            let f = run_once(o, mode, round);
            print_run(mode, round, &f);
            results.push((mode.clone(), f));
            if mode == "latency" {
                let b = baseline(o);
                eprintln!(
                    "round {} baseline   librdkafka → tansu → consumer P50 {:.1} P95 {:.1} P99 {:.1} max {:.1} ms; produce → ack P50 {:.1} P95 {:.1} P99 {:.1} ms",
                    round + 1,
                    b[0],
                    b[1],
                    b[2],
                    b[3],
                    b[4],
                    b[5],
                    b[6]
                );
                baselines.push(b);
            }
        }
    }
    report(
        o,
        &results,
        &baselines,
        &load_before,
        &support::load_average(),
    );
    if results.iter().any(|(_, f)| f.verified.is_err()) {
        std::process::exit(1);
    }
}

fn version(kedge: &Path) -> String {
    Command::new(kedge)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn config(o: &Options, mqtt_port: u16, bootstrap: &str, data_dir: &Path, metrics: u16) -> String {
    let mut c = format!(
        r#"[agent]
device_id = "{DEVICE}"
data_dir = "{data}"
shutdown_timeout = "10s"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
protocol = "5"

{window}
[[mqtt.subscriptions]]
filter = "sensors/#"
qos = {qos}

[routing]
dead_letter_topic = "{DEAD_LETTER}"

[[routing.rules]]
filter = "sensors/+/reading"
topic = "{TOPIC}"
key_level = 1

[kafka]
bootstrap = ["{bootstrap}"]

[queue]
durability = "fsync"

[metrics]
listen = "127.0.0.1:{metrics}"

[log]
level = "info"
"#,
        data = data_dir.display(),
        qos = o.qos,
        window = o
            .redelivery_window
            .as_ref()
            .map_or(String::new(), |w| format!("redelivery_window = {w}\n")),
    );
    if let Some(p) = &o.plugin {
        c.push_str(&format!(
            "\n[[plugin]]\nname = \"units\"\npath = \"{}\"\nsubjects = [\"sensors/+/reading\"]\n",
            p.display()
        ));
    }
    c
}

/// A metrics and `/proc` sample at one moment of the run.
#[derive(Debug, Clone, Copy)]
struct Tick {
    at: f64,
    journaled: f64,
    delivered: f64,
    proc: ProcSample,
    /// Bytes written to the data dir's block device so far (every writer's).
    device_written: u64,
}

fn run_once(o: &Options, mode: &str, round: usize) -> Figures {
    let count = if mode == "latency" {
        (o.rate * o.seconds) as u64
    } else {
        o.records
    };
    let tansu = Tansu::start();
    tansu.create_topic(TOPIC, o.partitions);
    tansu.create_topic(DEAD_LETTER, 1);
    let mosquitto = Mosquitto::start();
    let work = tempfile::Builder::new()
        .prefix("kedge-e2e-bench-")
        .tempdir_in(&o.data_dir)
        .expect("data dir on the real disk");
    let data = work.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let metrics_port = support::free_port();
    let agent = Agent::start(
        &o.kedge,
        work.path(),
        &config(o, mosquitto.port(), &tansu.bootstrap(), &data, metrics_port),
        metrics_port,
    );
    assert!(
        mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30)),
        "kedge did not subscribe:\n{}",
        agent.log_tail(30)
    );
    // The latency consumer starts first and reads from offset 0, so it misses nothing.
    let consumer = (mode == "latency")
        .then(|| start_latency_consumer(&tansu.bootstrap(), count, o.seconds, work.path()));

    // Sample kedge's counters and /proc every 100 ms while the run lasts.
    let ticks: Arc<Mutex<Vec<Tick>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let agent = Arc::new(agent);
    let started = Instant::now();
    let other_cpu0 = tansu.cpu_seconds() + mosquitto.cpu_seconds();
    let sampler = {
        let (ticks, stop, agent) = (ticks.clone(), stop.clone(), agent.clone());
        let data = data.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let m = agent.metrics().unwrap_or_default();
                let tick = Tick {
                    at: started.elapsed().as_secs_f64(),
                    journaled: m
                        .get("kedge_records_journaled_total")
                        .copied()
                        .unwrap_or(0.0),
                    delivered: m
                        .get("kedge_records_delivered_total")
                        .copied()
                        .unwrap_or(0.0),
                    proc: agent.sample(),
                    device_written: support::device_written_bytes(&data),
                };
                ticks.lock().expect("ticks").push(tick);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut publish = Command::new(std::env::current_exe().expect("own path"));
    publish
        .args(["--side", "publisher"])
        .args(["--port", &mosquitto.port().to_string()])
        .args(["--count", &count.to_string()])
        .args(["--connections", &o.connections.to_string()])
        .args(["--qos", &o.qos.to_string()]);
    if mode == "latency" {
        publish.args(["--rate", &o.rate.to_string()]);
    }
    let published = run_measured(publish, work.path(), "publisher", Duration::from_secs(900));
    // Then until Kafka has acknowledged every record.
    let deadline = Instant::now() + Duration::from_secs(900);
    while agent.counter("kedge_records_delivered_total") < count as f64 {
        if Instant::now() > deadline {
            eprintln!("timeout waiting for delivery:\n{}", agent.log_tail(20));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let other_cpu_s = tansu.cpu_seconds() + mosquitto.cpu_seconds() - other_cpu0;
    let latency = consumer.map(|(mut child, out)| {
        let _ = child.wait();
        std::fs::read_to_string(out).unwrap_or_default()
    });
    let mut agent = Arc::try_unwrap(agent).unwrap_or_else(|_| panic!("sampler holds the agent"));
    let ticks = ticks.lock().expect("ticks").clone();
    let verified = verify(&tansu.bootstrap(), count);
    let metrics = agent.metrics().unwrap_or_default();
    let commit_ms = metrics
        .get("kedge_journal_commit_seconds_sum")
        .zip(metrics.get("kedge_journal_commit_seconds_count"))
        .map_or(f64::NAN, |(s, c)| s / c * 1e3);
    let ack_latency = [0.5, 0.95, 0.99]
        .map(|q| stats::histogram_quantile(&metrics, "kedge_delivery_latency_seconds", q) * 1e3);
    agent.stop(Duration::from_secs(15));

    let mut f = figures(&ticks, count);
    f.publisher_rate = count as f64 / published.num("acked_s");
    f.publisher_cpu_s = published.user_s + published.sys_s;
    f.other_cpu_s = other_cpu_s;
    f.commit_ms = commit_ms;
    f.commits = metrics
        .get("kedge_journal_commits_total")
        .copied()
        .unwrap_or(f64::NAN);
    f.batches_sent = metrics
        .get("kedge_batches_sent_total")
        .copied()
        .unwrap_or(f64::NAN);
    f.ack_latency = ack_latency;
    f.verified = verified;
    if let Some(text) = latency {
        f.p50 = kv(&text, "p50_ms");
        f.p95 = kv(&text, "p95_ms");
        f.p99 = kv(&text, "p99_ms");
        f.max_latency = kv(&text, "max_ms");
    }
    let _ = round;
    f
}

/// A number from the `RESULT key=value ...` line of a helper's output; NaN when absent.
fn kv(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|p| p.strip_prefix(&format!("{key}=")))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Starts `bench/latency_consumer.py` on the readings topic and waits until it is assigned.
fn start_latency_consumer(
    bootstrap: &str,
    count: u64,
    seconds: f64,
    dir: &Path,
) -> (std::process::Child, PathBuf) {
    let out = dir.join("consumer.out");
    let child = Command::new(support::python_bin())
        .arg(support::repo_root().join("bench/latency_consumer.py"))
        .args(["--bootstrap", bootstrap, "--topic", TOPIC])
        .args(["--expect", &count.to_string()])
        .args(["--timeout", &(seconds + 120.0).to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("consumer out"))
        .stderr(std::fs::File::create(dir.join("consumer.err")).expect("consumer err"))
        .spawn()
        .expect("spawn latency consumer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("READY")
    {
        assert!(Instant::now() < deadline, "latency consumer not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, out)
}

/// Latency of the same readings produced by librdkafka straight to a fresh tansu, read by the
/// same consumer: (consumer P50, P95, P99, max; librdkafka produce-to-ack P50, P95, P99), ms.
fn baseline(o: &Options) -> [f64; 7] {
    let count = (o.rate * o.seconds) as u64;
    let tansu = Tansu::start();
    tansu.create_topic(TOPIC, o.partitions);
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut consumer, out) =
        start_latency_consumer(&tansu.bootstrap(), count, o.seconds, dir.path());
    let mut produce = Command::new(support::python_bin());
    produce
        .arg(support::repo_root().join("bench/librdkafka_latency.py"))
        .args(["--bootstrap", &tansu.bootstrap(), "--topic", TOPIC])
        .args(["--count", &count.to_string()])
        .args(["--rate", &o.rate.to_string()]);
    let produced = run_measured(produce, dir.path(), "baseline", Duration::from_secs(900));
    let _ = consumer.wait();
    let text = std::fs::read_to_string(out).unwrap_or_default();
    [
        kv(&text, "p50_ms"),
        kv(&text, "p95_ms"),
        kv(&text, "p99_ms"),
        kv(&text, "max_ms"),
        produced
            .result
            .get("ack_p50_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
        produced
            .result
            .get("ack_p95_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
        produced
            .result
            .get("ack_p99_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
    ]
}

/// Rates between 10 % and 90 % of the records, CPU, RSS and write amplification from the ticks.
fn figures(ticks: &[Tick], count: u64) -> Figures {
    let n = count as f64;
    let at = |key: fn(&Tick) -> f64, share: f64| -> Option<f64> {
        ticks.iter().find(|t| key(t) >= share * n).map(|t| t.at)
    };
    let rate = |key: fn(&Tick) -> f64| -> f64 {
        match (at(key, 0.1), at(key, 0.9)) {
            (Some(a), Some(b)) if b > a => 0.8 * n / (b - a),
            _ => f64::NAN,
        }
    };
    let none = Tick {
        at: 0.0,
        journaled: 0.0,
        delivered: 0.0,
        proc: ProcSample::default(),
        device_written: 0,
    };
    let first = ticks.first().unwrap_or(&none);
    let last = ticks.last().unwrap_or(&none);
    let cpu_s = last.proc.cpu_s - first.proc.cpu_s;
    let done = at(|t| t.delivered, 1.0).unwrap_or(last.at);
    let mut rss: Vec<f64> = ticks
        .iter()
        .filter(|t| t.journaled > 0.0)
        .map(|t| t.proc.rss_kib as f64 / 1024.0)
        .collect();
    if rss.is_empty() {
        rss.push(last.proc.rss_kib as f64 / 1024.0);
    }
    Figures {
        records: count,
        ingest_rate: rate(|t| t.journaled),
        delivery_rate: rate(|t| t.delivered),
        overall_rate: n / done,
        cpu_s,
        cpu_per_m: cpu_s / n * 1e6,
        per_core_rate: n / cpu_s,
        rss_median_mib: stats::summary(&rss).map_or(f64::NAN, |s| s.0),
        rss_peak_mib: last.proc.hwm_kib as f64 / 1024.0,
        write_amp: (last.proc.write_bytes - first.proc.write_bytes) as f64 / (n * PAYLOAD as f64),
        // No block device under the data dir (tmpfs, overlay): nothing to tell.
        device_amp: match last.device_written {
            0 => f64::NAN,
            end => end.saturating_sub(first.device_written) as f64 / (n * PAYLOAD as f64),
        },
        p50: f64::NAN,
        p95: f64::NAN,
        p99: f64::NAN,
        max_latency: f64::NAN,
        ack_latency: [f64::NAN; 3],
        publisher_rate: f64::NAN,
        publisher_cpu_s: f64::NAN,
        other_cpu_s: f64::NAN,
        commit_ms: f64::NAN,
        commits: f64::NAN,
        batches_sent: f64::NAN,
        verified: Ok(()),
    }
}

/// Every reading exactly once (by kedge-seq) across the readings and dead-letter topics.
fn verify(bootstrap: &str, n: u64) -> Result<(), String> {
    let report = support::audit_from_start(bootstrap, &[TOPIC, DEAD_LETTER])?;
    let [d] = report.devices.as_slice() else {
        return Err(format!("{} devices in the topics", report.devices.len()));
    };
    if d.records != n || d.missing != 0 || d.duplicates != 0 || !report.unmarked.is_empty() {
        return Err(format!(
            "{} records (missing {}, duplicates {}, unmarked {:?}), expected {n}",
            d.records, d.missing, d.duplicates, report.unmarked
        ));
    }
    Ok(())
}

fn print_run(mode: &str, round: usize, f: &Figures) {
    let verified = match &f.verified {
        Ok(()) => format!("verified {} records", f.records),
        Err(e) => format!("NOT VERIFIED: {e}"),
    };
    eprintln!(
        "round {} {mode:<10} ingest {:>7.0}/s  delivery {:>7.0}/s  overall {:>7.0}/s  kedge CPU {:.2} s ({:.2} s/M, {:.0} records per CPU-s)  RSS {:.1} MiB median, {:.1} peak  dirtied {:.3} device {:.3} per payload byte  latency P50 {:.1} P95 {:.1} P99 {:.1} max {:.1} ms  receive → ack P50 {:.1} P95 {:.1} P99 {:.1} ms  commit {:.2} ms  publisher {:.0}/s (CPU {:.2} s)  brokers CPU {:.2} s  {verified}",
        round + 1,
        f.ingest_rate,
        f.delivery_rate,
        f.overall_rate,
        f.cpu_s,
        f.cpu_per_m,
        f.per_core_rate,
        f.rss_median_mib,
        f.rss_peak_mib,
        f.write_amp,
        f.device_amp,
        f.p50,
        f.p95,
        f.p99,
        f.max_latency,
        f.ack_latency[0],
        f.ack_latency[1],
        f.ack_latency[2],
        f.commit_ms,
        f.publisher_rate,
        f.publisher_cpu_s,
        f.other_cpu_s,
    );
}

fn report(
    o: &Options,
    results: &[(String, Figures)],
    baselines: &[[f64; 7]],
    before: &str,
    after: &str,
) {
    println!(
        "\ne2e-bench: 200-byte readings, MQTT 5 QoS {} over {} connections → mosquitto → kedge (fsync, plugin {}) → tansu ({} partitions); load average {before} → {after}",
        o.qos,
        o.connections,
        o.plugin
            .as_ref()
            .and_then(|p| p.file_name())
            .map_or("none".into(), |n| n.to_string_lossy().into_owned()),
        o.partitions
    );
    println!("median [min–max] of the verified runs\n");
    println!(
        "| figure | throughput run | latency run ({:.0}/s) | budget |",
        o.rate
    );
    println!("| --- | --- | --- | --- |");
    let col = |mode: &str, f: fn(&Figures) -> f64, digits: usize| -> String {
        let v: Vec<f64> = results
            .iter()
            .filter(|(m, r)| m == mode && r.verified.is_ok())
            .map(|(_, r)| f(r))
            .filter(|x| x.is_finite())
            .collect();
        stats::format(&v, digits)
    };
    type Row = (&'static str, fn(&Figures) -> f64, usize, &'static str);
    let rows: [Row; 23] = [
        ("records", |f| f.records as f64, 0, ""),
        (
            "ingest records/s (journaled, acked to MQTT)",
            |f| f.ingest_rate,
            0,
            "≥ 50,000",
        ),
        (
            "delivery records/s (acked by Kafka)",
            |f| f.delivery_rate,
            0,
            "≥ 50,000",
        ),
        (
            "first publish → last Kafka ack, records/s",
            |f| f.overall_rate,
            0,
            "",
        ),
        ("kedge CPU s per million records", |f| f.cpu_per_m, 2, ""),
        (
            "records per kedge CPU-second (one core)",
            |f| f.per_core_rate,
            0,
            "≥ 150,000 at full speed",
        ),
        (
            "kedge RSS MiB, median while running",
            |f| f.rss_median_mib,
            1,
            "≤ 20 at 10,000/s",
        ),
        ("kedge RSS MiB, peak", |f| f.rss_peak_mib, 1, ""),
        (
            "bytes reaching the data dir's disk per payload byte (every writer to it, ext4's journal too)",
            |f| f.device_amp,
            3,
            "≤ 1.2 at 10,000/s",
        ),
        (
            "page-cache bytes kedge dirtied per payload byte (/proc write_bytes, whole folios)",
            |f| f.write_amp,
            3,
            "",
        ),
        (
            "records per journal commit",
            |f| f.records as f64 / f.commits,
            1,
            "",
        ),
        (
            "records per Kafka batch sent",
            |f| f.records as f64 / f.batches_sent,
            1,
            "",
        ),
        (
            "KiB reaching the disk per journal commit + batch sent",
            |f| {
                f.device_amp * f.records as f64 * PAYLOAD as f64
                    / 1024.0
                    / (f.commits + f.batches_sent)
            },
            2,
            "",
        ),
        (
            "receive → Kafka ack P50 ms (kedge histogram)",
            |f| f.ack_latency[0],
            1,
            "",
        ),
        (
            "receive → Kafka ack P95 ms (kedge histogram)",
            |f| f.ack_latency[1],
            1,
            "≤ 1.5 × librdkafka's produce → ack P95",
        ),
        (
            "receive → Kafka ack P99 ms (kedge histogram)",
            |f| f.ack_latency[2],
            1,
            "",
        ),
        ("publish → consumer P50 ms", |f| f.p50, 1, ""),
        ("publish → consumer P95 ms", |f| f.p95, 1, ""),
        ("publish → consumer P99 ms", |f| f.p99, 1, ""),
        (
            "mean journal commit (append + flush + fdatasync) ms",
            |f| f.commit_ms,
            2,
            "",
        ),
        (
            "publisher records/s (acked by mosquitto)",
            |f| f.publisher_rate,
            0,
            "",
        ),
        ("publisher CPU s", |f| f.publisher_cpu_s, 2, ""),
        ("mosquitto + tansu CPU s", |f| f.other_cpu_s, 2, ""),
    ];
    for (label, f, digits, budget) in rows {
        println!(
            "| {label} | {} | {} | {budget} |",
            col("throughput", f, digits),
            col("latency", f, digits)
        );
    }
    if !baselines.is_empty() {
        let lat = |f: fn(&Figures) -> f64| -> Vec<f64> {
            results
                .iter()
                .filter(|(m, r)| m == "latency" && r.verified.is_ok())
                .map(|(_, r)| f(r))
                .collect()
        };
        let base = |i: usize| -> Vec<f64> { baselines.iter().map(|b| b[i]).collect() };
        println!(
            "\nlatency at {:.0} records/s, ms, median [min–max]\n",
            o.rate
        );
        println!("| path | P50 | P95 | P99 | max |");
        println!("| --- | --- | --- | --- | --- |");
        println!(
            "| MQTT publish → kedge → Kafka → consumer | {} | {} | {} | {} |",
            stats::format(&lat(|f| f.p50), 1),
            stats::format(&lat(|f| f.p95), 1),
            stats::format(&lat(|f| f.p99), 1),
            stats::format(&lat(|f| f.max_latency), 1)
        );
        println!(
            "| librdkafka produce → Kafka → consumer (baseline) | {} | {} | {} | {} |",
            stats::format(&base(0), 1),
            stats::format(&base(1), 1),
            stats::format(&base(2), 1),
            stats::format(&base(3), 1)
        );
        println!(
            "| librdkafka produce → Kafka ack (baseline) | {} | {} | {} | — |",
            stats::format(&base(4), 1),
            stats::format(&base(5), 1),
            stats::format(&base(6), 1)
        );
        // Each latency round is followed by its baseline run, under the same load: pair them.
        let kedge_p95 = lat(|f| f.ack_latency[1]);
        if kedge_p95.len() == baselines.len() {
            let ratios: Vec<f64> = kedge_p95.iter().zip(base(5)).map(|(k, b)| k / b).collect();
            println!(
                "
kedge receive → Kafka ack P95 ÷ librdkafka produce → ack P95, same round: {} (budget ≤ 1.5)",
                stats::format(&ratios, 2)
            );
        }
    }
    let failed = results.iter().filter(|(_, f)| f.verified.is_err()).count();
    if failed > 0 {
        println!("\n{failed} run(s) failed verification and are left out");
    }
}
