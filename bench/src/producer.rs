//! producer-bench: kedge's producer against a librdkafka producer (ARCHITECTURE.md §7, issue 8 item 1).
//!
//! Same broker (a fresh tansu on loopback per run), same 3-partition topic, the same records
//! (1,000,000 of 200 bytes with 8-byte keys, read by every side from one file on tmpfs), the
//! same codec (`--codec`, zstd unless told), idempotence, acks=all, linger 5 ms, batches of at most 10,000 records / 1 MiB. Each side runs as
//! its own process, so its CPU (user + system, all threads) and peak RSS come from the kernel
//! (`wait4`); rounds alternate the order of the sides. After every run the topic is read back
//! from offset 0 (`kedge::audit`, raw Fetch) and must hold every record exactly once.
//!
//! Sides:
//! - `kedge`: records appended to a `kedge_queue::Queue` on tmpfs with relaxed durability in
//!   group commits of 4,096, then `kedge::delivery::Producer` drains them (timed alone);
//! - `kedge-pipelined`: the same, appending while the producer drains (the agent's shape);
//! - `librdkafka-py`: confluent-kafka (librdkafka 2.16) from `.peers/venv`, `bench/librdkafka_producer.py`;
//! - `librdkafka-c`: the same librdkafka library driven from C (`bench/librdkafka_producer.c`),
//!   compiled at start with gcc, to show what the Python interpreter adds.
//!
//! Usage: producer-bench [--records N] [--rounds R] [--partitions P] [--value-bytes B]
//!        [--sides kedge,kedge-pipelined,librdkafka-py,librdkafka-c] [--linger-ms 5]
//!        [--batch-records 10000] [--batch-bytes 1048576] [--codec zstd|lz4|snappy|gzip|none]

use kedge_bench as support;

#[path = "producer/kedge.rs"]
mod kedge_side;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::child::{Outcome, run_measured};
use support::records::{self, KEY_BYTES};
use support::stats;
use support::tansu::Tansu;

const TOPIC: &str = "bench";
const DEVICE: &str = "bench";
const ALL_SIDES: &[&str] = &[
    "kedge",
    "kedge-pipelined",
    "kedge-bounded",
    "librdkafka-py",
    "librdkafka-c",
];

#[derive(Debug, Clone)]
struct Options {
    records: u64,
    rounds: usize,
    partitions: u32,
    value_bytes: usize,
    sides: Vec<String>,
    linger_ms: u64,
    batch_records: u32,
    batch_bytes: u64,
    timeout: Duration,
    /// `kedge-bounded`: most records waiting unsealed in the journal.
    bound: u64,
    /// Kafka codec of every side (`compression.type`).
    codec: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            records: 1_000_000,
            rounds: 3,
            partitions: 3,
            value_bytes: 200,
            sides: ALL_SIDES.iter().map(|s| s.to_string()).collect(),
            // kedge's defaults (config/kedge.toml): linger 5 ms, batch_max_records 10000,
            // batch_max_bytes 1 MiB, max_in_flight 5.
            linger_ms: 5,
            batch_records: 10_000,
            batch_bytes: 1 << 20,
            timeout: Duration::from_secs(900),
            // librdkafka's default queue.buffering.max.messages.
            bound: 100_000,
            codec: "zstd".into(),
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: producer-bench [--records N] [--rounds R] [--partitions P] [--value-bytes B] \
         [--sides {}] [--linger-ms MS] [--batch-records N] [--batch-bytes N] [--timeout-s S] \
         [--codec zstd|lz4|snappy|gzip|none]",
        ALL_SIDES.join(",")
    );
    std::process::exit(2);
}

fn parse_options(args: &[String]) -> (Options, Vec<(String, String)>) {
    let mut o = Options::default();
    let mut extra = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { usage() };
        let num = |v: &str| -> u64 { v.parse().unwrap_or_else(|_| usage()) };
        match flag.as_str() {
            "--records" => o.records = num(value),
            "--rounds" => o.rounds = num(value) as usize,
            "--partitions" => o.partitions = num(value) as u32,
            "--value-bytes" => o.value_bytes = num(value) as usize,
            "--sides" => o.sides = value.split(',').map(str::to_owned).collect(),
            "--linger-ms" => o.linger_ms = num(value),
            "--batch-records" => o.batch_records = num(value) as u32,
            "--batch-bytes" => o.batch_bytes = num(value),
            "--timeout-s" => o.timeout = Duration::from_secs(num(value)),
            "--bound" => o.bound = num(value),
            "--codec" if ["zstd", "lz4", "snappy", "gzip", "none"].contains(&value.as_str()) => {
                o.codec = value.clone()
            }
            f if f.starts_with("--") => extra.push((f.to_owned(), value.clone())),
            _ => usage(),
        }
    }
    for s in &o.sides {
        if !ALL_SIDES.contains(&s.as_str()) {
            eprintln!("unknown side {s:?}");
            usage();
        }
    }
    (o, extra)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (options, extra) = parse_options(&args);
    let get = |name: &str| {
        extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // A side run as a child of this program (`--side kedge ...`).
    if let Some(side) = get("--side") {
        let need = |name: &str| get(name).unwrap_or_else(|| usage());
        match side.as_str() {
            "kedge" | "kedge-pipelined" | "kedge-bounded" => {
                kedge_side::run(kedge_side::KedgeArgs {
                    bootstrap: need("--bootstrap"),
                    topic: TOPIC.into(),
                    records_file: PathBuf::from(need("--records-file")),
                    count: options.records,
                    value_bytes: options.value_bytes,
                    dir: PathBuf::from(need("--dir")),
                    linger_ms: options.linger_ms,
                    codec: options.codec.clone(),
                    batch_records: options.batch_records,
                    batch_bytes: options.batch_bytes,
                    mode: match side.as_str() {
                        "kedge" => kedge_side::Mode::Prefill,
                        "kedge-pipelined" => kedge_side::Mode::Pipelined,
                        _ => kedge_side::Mode::Bounded(options.bound),
                    },
                })
            }
            _ => usage(),
        }
        return;
    }
    if let Some((k, _)) = extra.first() {
        eprintln!("unknown option {k}");
        usage();
    }
    bench(&options);
}

/// One measured run of one side.
struct Run {
    side: String,
    round: usize,
    outcome: Outcome,
    broker_cpu_s: f64,
    broker_rss_kib: u64,
    verified: Result<u64, String>,
}

impl Run {
    /// Records/s, CPU s per million records and peak RSS (MiB) of the timed interval: the
    /// producer alone for `kedge` (the drain), everything for the other sides.
    fn figures(&self, n: u64) -> (f64, f64, f64) {
        let o = &self.outcome;
        let (secs, cpu, rss) = if self.side == "kedge" {
            (
                o.num("drain_s"),
                o.num("drain_user_s") + o.num("drain_sys_s"),
                o.num("drain_peak_rss_kib"),
            )
        } else {
            (
                o.num("total_s"),
                o.num("total_user_s") + o.num("total_sys_s"),
                o.max_rss_kib as f64,
            )
        };
        (n as f64 / secs, cpu / n as f64 * 1e6, rss / 1024.0)
    }

    /// For `kedge` (prefill): append + drain together, and the peak of the whole process.
    fn queue_and_producer(&self, n: u64) -> Option<(f64, f64, f64)> {
        (self.side == "kedge").then(|| {
            let o = &self.outcome;
            let secs = o.num("total_s");
            let cpu = o.num("total_user_s") + o.num("total_sys_s");
            let rss = (o.max_rss_kib as f64)
                .max(o.num("append_peak_rss_kib"))
                .max(o.num("drain_peak_rss_kib"));
            (n as f64 / secs, cpu / n as f64 * 1e6, rss / 1024.0)
        })
    }
}

fn bench(o: &Options) {
    let scratch = support::scratch_dir("kedge-producer-bench-");
    let records_file = scratch.path().join("records.bin");
    eprintln!(
        "producer-bench: {} records of {} bytes (keys of {KEY_BYTES} bytes), {} partitions, {} rounds, sides {}",
        o.records,
        o.value_bytes,
        o.partitions,
        o.rounds,
        o.sides.join(", ")
    );
    records::generate(&records_file, o.records, o.value_bytes);
    let c_program = if o.sides.iter().any(|s| s == "librdkafka-c") {
        match compile_c_peer(scratch.path()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("librdkafka-c: cannot build the C peer, skipping it: {e}");
                None
            }
        }
    } else {
        None
    };
    let sides: Vec<String> = o
        .sides
        .iter()
        .filter(|s| *s != "librdkafka-c" || c_program.is_some())
        .cloned()
        .collect();
    let load_before = support::load_average();
    let mut runs = Vec::new();
    for round in 0..o.rounds {
        // Rotate the order every round, so that no side always runs first or last.
        let mut order = sides.clone();
        order.rotate_left(round % sides.len().max(1));
        for side in order {
            let run = run_side(o, &side, round, scratch.path(), &records_file, &c_program);
            print_run(o, &run);
            runs.push(run);
        }
    }
    let load_after = support::load_average();
    report(o, &sides, &runs, &load_before, &load_after);
    if runs.iter().any(|r| r.verified.is_err()) {
        std::process::exit(1);
    }
}

fn run_side(
    o: &Options,
    side: &str,
    round: usize,
    scratch: &Path,
    records_file: &Path,
    c_program: &Option<PathBuf>,
) -> Run {
    let tansu = Tansu::start();
    tansu.create_topic(TOPIC, o.partitions);
    let bootstrap = tansu.bootstrap();
    let command = match side {
        "kedge" | "kedge-pipelined" | "kedge-bounded" => {
            let dir = scratch.join(format!("queue-{side}-{round}"));
            let exe = std::env::current_exe().expect("own path");
            // PRODUCER_BENCH_WRAP="valgrind --tool=massif" runs the kedge side under a tool.
            let wrap = std::env::var("PRODUCER_BENCH_WRAP").unwrap_or_default();
            let mut wrap = wrap.split_whitespace();
            let mut c = match wrap.next() {
                Some(tool) => {
                    let mut c = Command::new(tool);
                    c.args(wrap).arg(exe);
                    c
                }
                None => Command::new(exe),
            };
            c.args(["--side", side, "--bootstrap", &bootstrap])
                .arg("--records-file")
                .arg(records_file)
                .arg("--dir")
                .arg(&dir);
            common_args(&mut c, o);
            c
        }
        "librdkafka-py" => {
            let mut c = Command::new(support::python_bin());
            c.arg(support::repo_root().join("bench/librdkafka_producer.py"))
                .args(["--bootstrap", &bootstrap, "--topic", TOPIC])
                .arg("--records-file")
                .arg(records_file)
                .args(["--count", &o.records.to_string()])
                .args(["--key-bytes", &KEY_BYTES.to_string()])
                .args(["--value-bytes", &o.value_bytes.to_string()])
                .args(["--device", DEVICE])
                .args(["--linger-ms", &o.linger_ms.to_string()])
                .args(["--batch-records", &o.batch_records.to_string()])
                .args(["--batch-bytes", &o.batch_bytes.to_string()])
                .args(["--compression", &o.codec]);
            c
        }
        "librdkafka-c" => {
            let mut c = Command::new(c_program.as_ref().expect("built"));
            c.arg(&bootstrap)
                .arg(TOPIC)
                .arg(records_file)
                .arg(o.records.to_string())
                .arg(KEY_BYTES.to_string())
                .arg(o.value_bytes.to_string())
                .arg(o.linger_ms.to_string())
                .arg(o.batch_records.to_string())
                .arg(o.batch_bytes.to_string())
                .arg(&o.codec);
            c
        }
        _ => unreachable!("sides are checked"),
    };
    let broker_cpu0 = tansu.cpu_seconds();
    let outcome = run_measured(command, scratch, &format!("{side}-{round}"), o.timeout);
    let broker_cpu_s = tansu.cpu_seconds() - broker_cpu0;
    let broker_rss_kib = tansu.rss_kib();
    let _ = std::fs::remove_dir_all(scratch.join(format!("queue-{side}-{round}")));
    let verified = if outcome.code != Some(0) {
        Err(format!(
            "{side} exited with {:?}:\n{}",
            outcome.code, outcome.stderr_tail
        ))
    } else {
        verify(&bootstrap, o.records)
    };
    Run {
        side: side.to_owned(),
        round,
        outcome,
        broker_cpu_s,
        broker_rss_kib,
        verified,
    }
}

fn common_args(c: &mut Command, o: &Options) {
    c.args(["--records", &o.records.to_string()])
        .args(["--value-bytes", &o.value_bytes.to_string()])
        .args(["--linger-ms", &o.linger_ms.to_string()])
        .args(["--batch-records", &o.batch_records.to_string()])
        .args(["--batch-bytes", &o.batch_bytes.to_string()])
        .args(["--bound", &o.bound.to_string()])
        .args(["--codec", &o.codec]);
}

/// Reads the topic back from offset 0 on every partition (raw Fetch, `kedge::audit`) and checks
/// that it holds records 0..n of device `bench`, each exactly once. tansu's ListOffsets(latest)
/// is wrong for multi-record batches, so nothing here trusts the high watermark for a count.
fn verify(bootstrap: &str, n: u64) -> Result<u64, String> {
    let report = support::audit_from_start(bootstrap, &[TOPIC])?;
    let [d] = report.devices.as_slice() else {
        return Err(format!(
            "expected one device, found {}",
            report.devices.len()
        ));
    };
    let expected_span = 0..=n.saturating_sub(1);
    if d.device != DEVICE
        || d.records != n
        || d.missing != 0
        || d.duplicates != 0
        || d.span != expected_span
        || !report.unmarked.is_empty()
        || !report.malformed.is_empty()
    {
        return Err(format!(
            "topic holds {} records of {:?} (span {:?}, missing {}, duplicates {}, unmarked {:?}, malformed {:?}); expected {n}",
            d.records, d.device, d.span, d.missing, d.duplicates, report.unmarked, report.malformed
        ));
    }
    Ok(d.records)
}

/// Builds `librdkafka_producer.c` against Debian's header and the librdkafka of the
/// confluent-kafka wheel in `.peers/venv`.
fn compile_c_peer(dir: &Path) -> Result<PathBuf, String> {
    if !Path::new("/usr/include/librdkafka/rdkafka.h").is_file() {
        return Err("no /usr/include/librdkafka/rdkafka.h (apt-get install librdkafka-dev)".into());
    }
    let libs = std::fs::read_dir(support::peers_dir().join("venv/lib"))
        .map_err(|e| format!("{}: {e}", support::peers_dir().join("venv/lib").display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/confluent_kafka.libs"))
        .find(|p| p.is_dir())
        .ok_or("no confluent_kafka.libs in .peers/venv")?;
    let lib = std::fs::read_dir(&libs)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("librdkafka"))
        })
        .ok_or("no librdkafka in confluent_kafka.libs")?;
    let out = dir.join("librdkafka_producer");
    let status = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(support::repo_root().join("bench/librdkafka_producer.c"))
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", libs.display()))
        .status()
        .map_err(|e| format!("gcc: {e}"))?;
    if !status.success() {
        return Err(format!("gcc failed: {status}"));
    }
    Ok(out)
}

fn print_run(o: &Options, run: &Run) {
    let (rate, cpu, rss) = run.figures(o.records);
    let status = match &run.verified {
        Ok(n) => format!("verified {n} records"),
        Err(e) => format!("NOT VERIFIED: {e}"),
    };
    eprintln!(
        "round {} {:<16} {:>9.0} records/s  {:>5.2} CPU s/M  peak RSS {:>6.1} MiB  process CPU {:.2} s  broker CPU {:.2} s, RSS {:.0} MiB  {status}",
        run.round + 1,
        run.side,
        rate,
        cpu,
        rss,
        run.outcome.user_s + run.outcome.sys_s,
        run.broker_cpu_s,
        run.broker_rss_kib as f64 / 1024.0,
    );
    if let Some((rate, cpu, rss)) = run.queue_and_producer(o.records) {
        eprintln!(
            "        {:<16} {:>9.0} records/s  {:>5.2} CPU s/M  peak RSS {:>6.1} MiB  (append + drain)",
            "", rate, cpu, rss
        );
    }
}

fn report(o: &Options, sides: &[String], runs: &[Run], load_before: &str, load_after: &str) {
    let n = o.records;
    let ok: Vec<&Run> = runs.iter().filter(|r| r.verified.is_ok()).collect();
    let col = |side: &str, f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
        ok.iter().filter(|r| r.side == side).map(|r| f(r)).collect()
    };
    let version = runs
        .iter()
        .find_map(|r| r.outcome.result.get("librdkafka").cloned())
        .unwrap_or_else(|| "?".into());
    println!(
        "\nproducer-bench: {n} records, {}-byte values, {KEY_BYTES}-byte keys, {} partitions, {}, idempotent, acks=all, \
         linger {} ms, batches ≤ {} records / {} bytes; {} rounds; librdkafka {version}; load average {load_before} → {load_after}",
        o.value_bytes, o.partitions, o.codec, o.linger_ms, o.batch_records, o.batch_bytes, o.rounds
    );
    println!("median [min–max] of the verified runs\n");
    println!(
        "| side | records/s | CPU s per M records | peak RSS MiB | broker CPU s per M records | runs |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    /// Label, then records/s, CPU s per M, peak RSS MiB and broker CPU s per M of each run.
    type Row = (String, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut rows: Vec<Row> = Vec::new();
    for side in sides {
        let label = match side.as_str() {
            "kedge" => "kedge producer (drains a pre-filled queue)",
            "kedge-pipelined" => "kedge queue + producer (append while draining)",
            "kedge-bounded" => "kedge queue + producer, journal ≤ bound records",
            "librdkafka-py" => "librdkafka via confluent-kafka (Python)",
            "librdkafka-c" => "librdkafka from C",
            s => s,
        };
        rows.push((
            label.into(),
            col(side, &|r| r.figures(n).0),
            col(side, &|r| r.figures(n).1),
            col(side, &|r| r.figures(n).2),
            col(side, &|r| r.broker_cpu_s / n as f64 * 1e6),
        ));
        if side == "kedge" {
            rows.push((
                "kedge queue + producer (append, then drain)".into(),
                col(side, &|r| r.queue_and_producer(n).map_or(f64::NAN, |f| f.0)),
                col(side, &|r| r.queue_and_producer(n).map_or(f64::NAN, |f| f.1)),
                col(side, &|r| r.queue_and_producer(n).map_or(f64::NAN, |f| f.2)),
                col(side, &|r| r.broker_cpu_s / n as f64 * 1e6),
            ));
        }
    }
    for (label, rate, cpu, rss, broker) in &rows {
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            stats::format(rate, 0),
            stats::format(cpu, 2),
            stats::format(rss, 1),
            stats::format(broker, 2),
            rate.len()
        );
    }
    // Ratios per round (same broker build, adjacent in time), then their median.
    println!(
        "\nratios kedge ÷ librdkafka, per round, median [min–max] (goal: records/s ≥ 1.0, CPU ≤ 0.7, RSS ≤ 0.5)\n"
    );
    println!("| kedge | peer | records/s | CPU per record | peak RSS |");
    println!("| --- | --- | --- | --- | --- |");
    type Figures = fn(&Run, u64) -> Option<(f64, f64, f64)>;
    let kedge_variants: [(&str, &str, Figures); 4] = [
        ("producer alone", "kedge", |r, n| Some(r.figures(n))),
        ("append, then drain", "kedge", |r, n| {
            r.queue_and_producer(n)
        }),
        ("pipelined", "kedge-pipelined", |r, n| Some(r.figures(n))),
        ("journal bounded", "kedge-bounded", |r, n| {
            Some(r.figures(n))
        }),
    ];
    for (kedge_label, kedge_side, kedge_figures) in kedge_variants {
        for peer in ["librdkafka-py", "librdkafka-c"] {
            let mut ratios = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..o.rounds {
                let find = |side: &str| ok.iter().find(|r| r.side == side && r.round == round);
                if let (Some(k), Some(p)) = (find(kedge_side), find(peer))
                    && let Some(kf) = kedge_figures(k, n)
                {
                    let pf = p.figures(n);
                    ratios.0.push(kf.0 / pf.0);
                    ratios.1.push(kf.1 / pf.1);
                    ratios.2.push(kf.2 / pf.2);
                }
            }
            if !ratios.0.is_empty() {
                println!(
                    "| {kedge_label} | {peer} | {} | {} | {} |",
                    stats::format(&ratios.0, 2),
                    stats::format(&ratios.1, 2),
                    stats::format(&ratios.2, 2)
                );
            }
        }
    }
    let failed = runs.len() - ok.len();
    if failed > 0 {
        println!("\n{failed} run(s) failed verification and are left out");
    }
}
