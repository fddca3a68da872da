//! e2e-bench `--mode backlog` (issue 8 item 3): ingest at a fixed rate while Kafka is down, then
//! bring Kafka up and keep ingesting; how fast does kedge drain the backlog, and what does the
//! backlog cost in memory and disk?

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::agent::{Agent, ProcSample};
use super::support::child::run_measured;
use super::support::mosquitto::Mosquitto;
use super::support::stats;
use super::support::tansu::Tansu;
use super::{DEAD_LETTER, Options, TOPIC, config, verify, version};

/// Counters and `/proc` at one moment.
#[derive(Debug, Clone, Copy)]
struct Tick {
    at: f64,
    journaled: f64,
    delivered: f64,
    disk_bytes: f64,
    proc: ProcSample,
}

/// One backlog run's figures.
#[derive(Debug, Clone)]
struct Figures {
    records: u64,
    /// Journaled records/s while Kafka was down.
    ingest_rate: f64,
    /// Records waiting when Kafka came up.
    backlog: f64,
    /// From the broker's start to Kafka's first acknowledgement, s.
    first_ack_s: f64,
    /// Records/s acknowledged from the first acknowledgement until kedge caught up.
    drain_rate: f64,
    /// From the first acknowledgement until kedge caught up, s.
    drain_s: f64,
    /// Whether it caught up while the publisher was still publishing.
    caught_up_under_load: bool,
    rss_outage_mib: f64,
    rss_peak_mib: f64,
    disk_peak_mib: f64,
    cpu_s: f64,
    verified: Result<(), String>,
}

pub(super) fn bench(o: &Options) {
    eprintln!(
        "e2e-bench backlog: kedge {} ({}), {:.0} records/s, Kafka down for {:.0} s then up for {:.0} s, plugin {}, {} rounds; load average {}",
        o.kedge.display(),
        version(&o.kedge),
        o.rate,
        o.backlog_seconds,
        o.backlog_seconds,
        o.plugin
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
        o.rounds,
        super::support::load_average()
    );
    let runs: Vec<Figures> = (0..o.rounds)
        .map(|round| {
            let f = run_once(o);
            print_run(round, &f);
            f
        })
        .collect();
    report(o, &runs);
    if runs.iter().any(|f| f.verified.is_err()) {
        std::process::exit(1);
    }
}

fn run_once(o: &Options) -> Figures {
    let count = (o.rate * o.backlog_seconds * 2.0) as u64;
    // kedge is told about this port while nothing listens on it: Kafka is down.
    let kafka_port = super::support::free_port();
    let bootstrap = format!("127.0.0.1:{kafka_port}");
    let mosquitto = Mosquitto::start();
    let work = tempfile::Builder::new()
        .prefix("kedge-backlog-bench-")
        .tempdir_in(&o.data_dir)
        .expect("data dir on the real disk");
    let data = work.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let metrics_port = super::support::free_port();
    let agent = Arc::new(Agent::start(
        &o.kedge,
        work.path(),
        &config(o, mosquitto.port(), &bootstrap, &data, metrics_port),
        metrics_port,
    ));
    assert!(
        mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30)),
        "kedge did not subscribe:\n{}",
        agent.log_tail(30)
    );

    let ticks: Arc<Mutex<Vec<Tick>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = {
        let (ticks, stop, agent) = (ticks.clone(), stop.clone(), agent.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let m = agent.metrics().unwrap_or_default();
                let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
                ticks.lock().expect("ticks").push(Tick {
                    at: started.elapsed().as_secs_f64(),
                    journaled: g("kedge_records_journaled_total"),
                    delivered: g("kedge_records_delivered_total"),
                    disk_bytes: g("kedge_queue_disk_bytes"),
                    proc: agent.sample(),
                });
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let publishing = {
        let mut publish = Command::new(std::env::current_exe().expect("own path"));
        publish
            .args(["--side", "publisher"])
            .args(["--port", &mosquitto.port().to_string()])
            .args(["--count", &count.to_string()])
            .args(["--connections", &o.connections.to_string()])
            .args(["--qos", &o.qos.to_string()])
            .args(["--rate", &o.rate.to_string()]);
        let dir = work.path().to_owned();
        std::thread::spawn(move || {
            run_measured(publish, &dir, "publisher", Duration::from_secs(7200))
        })
    };
    std::thread::sleep(Duration::from_secs_f64(o.backlog_seconds));
    let up_at = started.elapsed().as_secs_f64();
    let tansu = Tansu::start_on(kafka_port);
    tansu.create_topic(TOPIC, o.partitions);
    tansu.create_topic(DEAD_LETTER, 1);
    publishing.join().expect("publisher thread");
    let published_at = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while agent.counter("kedge_records_delivered_total") < count as f64 {
        if Instant::now() > deadline {
            eprintln!("timeout waiting for delivery:\n{}", agent.log_tail(20));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let verified = verify(&tansu.bootstrap(), count);
    let mut agent = Arc::try_unwrap(agent).unwrap_or_else(|_| panic!("sampler holds the agent"));
    agent.stop(Duration::from_secs(15));
    let ticks = ticks.lock().expect("ticks").clone();
    let mut f = figures(&ticks, count, o.rate, up_at, published_at);
    f.verified = verified;
    f
}

/// The figures of one run from its ticks; `up_at` is when the broker started, `published_at`
/// when the publisher finished.
fn figures(ticks: &[Tick], count: u64, rate: f64, up_at: f64, published_at: f64) -> Figures {
    let waiting = |t: &Tick| t.journaled - t.delivered;
    let outage: Vec<&Tick> = ticks.iter().filter(|t| t.at <= up_at).collect();
    // The first ticks carry the subscription and the publisher's start: measure from 10 %.
    let ingest_rate = match (outage.get(outage.len() / 10), outage.last()) {
        (Some(a), Some(b)) if b.at > a.at => (b.journaled - a.journaled) / (b.at - a.at),
        _ => f64::NAN,
    };
    let first_ack = ticks.iter().find(|t| t.at > up_at && t.delivered > 0.0);
    // Caught up: no more than a second of ingest waits.
    let caught = first_ack.and_then(|first| {
        ticks
            .iter()
            .find(|t| t.at > first.at && waiting(t) <= rate.max(1.0))
    });
    let (drain_rate, drain_s) = match (first_ack, caught) {
        (Some(a), Some(b)) => ((b.delivered - a.delivered) / (b.at - a.at), b.at - a.at),
        _ => (f64::NAN, f64::NAN),
    };
    let max = |v: Vec<f64>| v.into_iter().fold(f64::NAN, f64::max);
    let first = ticks.first().map_or(0.0, |t| t.proc.cpu_s);
    let last = ticks.last();
    Figures {
        records: count,
        ingest_rate,
        backlog: outage.last().map_or(f64::NAN, |t| waiting(t)),
        first_ack_s: first_ack.map_or(f64::NAN, |t| t.at - up_at),
        drain_rate,
        drain_s,
        caught_up_under_load: caught.is_some_and(|t| t.at < published_at),
        rss_outage_mib: max(outage
            .iter()
            .map(|t| t.proc.rss_kib as f64 / 1024.0)
            .collect()),
        rss_peak_mib: last.map_or(f64::NAN, |t| t.proc.hwm_kib as f64 / 1024.0),
        disk_peak_mib: max(ticks.iter().map(|t| t.disk_bytes / 1048576.0).collect()),
        cpu_s: last.map_or(f64::NAN, |t| t.proc.cpu_s - first),
        verified: Ok(()),
    }
}

fn print_run(round: usize, f: &Figures) {
    let verified = match &f.verified {
        Ok(()) => format!("verified {} records", f.records),
        Err(e) => format!("NOT VERIFIED: {e}"),
    };
    eprintln!(
        "round {} backlog  ingest {:.0}/s  backlog {:.0} records  first ack {:.1} s after the broker  drain {:.0}/s over {:.1} s ({:.1}× ingest{})  RSS {:.1} MiB in the outage, {:.1} peak  disk {:.1} MiB peak  kedge CPU {:.1} s  {verified}",
        round + 1,
        f.ingest_rate,
        f.backlog,
        f.first_ack_s,
        f.drain_rate,
        f.drain_s,
        f.drain_rate / f.ingest_rate,
        if f.caught_up_under_load {
            ""
        } else {
            "; NOT caught up before ingest ended"
        },
        f.rss_outage_mib,
        f.rss_peak_mib,
        f.disk_peak_mib,
        f.cpu_s,
    );
}

fn report(o: &Options, runs: &[Figures]) {
    println!(
        "\ne2e-bench backlog: {:.0} readings/s of 200 bytes, MQTT 5 QoS 1 → mosquitto → kedge (fsync, plugin {}) → tansu ({} partitions); Kafka down {:.0} s, then up while ingest continues {:.0} s",
        o.rate,
        o.plugin
            .as_ref()
            .and_then(|p| p.file_name())
            .map_or("none".into(), |n| n.to_string_lossy().into_owned()),
        o.partitions,
        o.backlog_seconds,
        o.backlog_seconds,
    );
    println!("median [min–max] of the verified runs\n");
    println!("| figure | value | budget |");
    println!("| --- | --- | --- |");
    let ok: Vec<&Figures> = runs.iter().filter(|f| f.verified.is_ok()).collect();
    let col = |f: fn(&Figures) -> f64, digits: usize| -> String {
        let v: Vec<f64> = ok.iter().map(|r| f(r)).filter(|x| x.is_finite()).collect();
        stats::format(&v, digits)
    };
    type Row = (&'static str, fn(&Figures) -> f64, usize, &'static str);
    let rows: [Row; 9] = [
        (
            "ingest records/s while Kafka is down",
            |f| f.ingest_rate,
            0,
            "",
        ),
        ("records waiting when Kafka comes up", |f| f.backlog, 0, ""),
        (
            "broker start → first Kafka ack, s",
            |f| f.first_ack_s,
            1,
            "",
        ),
        (
            "drain records/s while ingest continues",
            |f| f.drain_rate,
            0,
            "",
        ),
        ("drain ÷ ingest", |f| f.drain_rate / f.ingest_rate, 1, "≥ 5"),
        ("first ack → caught up, s", |f| f.drain_s, 1, ""),
        (
            "kedge RSS MiB, peak during the outage",
            |f| f.rss_outage_mib,
            1,
            "",
        ),
        (
            "kedge RSS MiB, peak over the run",
            |f| f.rss_peak_mib,
            1,
            "",
        ),
        ("queue on disk MiB, peak", |f| f.disk_peak_mib, 1, ""),
    ];
    for (label, f, digits, budget) in rows {
        println!("| {label} | {} | {budget} |", col(f, digits));
    }
    let late = ok.iter().filter(|f| !f.caught_up_under_load).count();
    if late > 0 {
        println!("\n{late} run(s) caught up only after ingest had ended");
    }
    let failed = runs.len() - ok.len();
    if failed > 0 {
        println!("\n{failed} run(s) failed verification and are left out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(at: f64, journaled: f64, delivered: f64) -> Tick {
        Tick {
            at,
            journaled,
            delivered,
            disk_bytes: 1048576.0 * at,
            proc: ProcSample::default(),
        }
    }

    #[test]
    fn drain_is_measured_from_the_first_ack_until_caught_up() {
        // 100/s ingest; Kafka up at 10 s, first ack at 11 s, caught up at 13 s.
        let mut ticks: Vec<Tick> = (0..=10)
            .map(|s| tick(f64::from(s), 100.0 * f64::from(s), 0.0))
            .collect();
        ticks.push(tick(10.5, 1050.0, 0.0));
        ticks.push(tick(11.0, 1100.0, 200.0));
        ticks.push(tick(12.0, 1200.0, 700.0));
        ticks.push(tick(13.0, 1300.0, 1250.0));
        ticks.push(tick(14.0, 1400.0, 1400.0));
        let f = figures(&ticks, 1400, 100.0, 10.0, 20.0);
        assert!((f.ingest_rate - 100.0).abs() < 1e-9, "{}", f.ingest_rate);
        assert_eq!(f.backlog, 1000.0);
        assert_eq!(f.first_ack_s, 1.0);
        assert_eq!((f.drain_rate, f.drain_s), (525.0, 2.0));
        assert!(f.caught_up_under_load);
        assert_eq!(f.disk_peak_mib, 14.0);
    }
}
