//! plugin-bench: what a plugin costs the host (ARCHITECTURE.md §7): time per record in batches of 500
//! records of 200 bytes, for `keep` and `replace`, per example plugin; plus compile time,
//! instantiation (with `init`) time and resident memory per instance. A program that prints
//! figures, not a timed test.
//!
//! Usage: plugin-bench [PLUGINS_DIR] (default target/plugins); plugins that are not built are
//! listed as missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kedge_plugin_host::engine::{self, Target};
use kedge_plugin_host::host::{self, BatchInfo, Event, Grants, Header, Verdict};
use kedge_plugin_host::load;
use kedge_plugin_host::plugin::{Limits, Plugin, Settings};
use kedge_plugin_host::stats::PluginStats;

/// Events per `process` call.
const BATCH: usize = 500;
/// Payload size.
const PAYLOAD: usize = 200;
/// Time spent measuring each case.
const MEASURE: Duration = Duration::from_secs(2);

/// One measured case: which plugin, with what config, on which payloads, expecting which verdict.
struct Case {
    plugin: &'static str,
    language: &'static str,
    config: &'static [(&'static str, &'static str)],
    verdict: &'static str,
    subject: &'static str,
    payload: fn(usize) -> String,
}

fn pad(mut s: String) -> String {
    // Pads inside a trailing JSON string field so every payload stays valid JSON of PAYLOAD bytes.
    // The closing brace goes, `,"pad":"` and `"}` come: 9 bytes more than `s`, then the fill.
    let fill = PAYLOAD.saturating_sub(s.len() + 9);
    s.pop();
    s.push_str(&format!(",\"pad\":\"{}\"}}", "x".repeat(fill)));
    s
}

const CASES: &[Case] = &[
    Case {
        plugin: "hostile",
        language: "Rust (minimal)",
        config: &[("mode", "keep")],
        verdict: "keep",
        subject: "sensors/t1/temp",
        payload: |i| pad(format!("{{\"n\":{i}}}")),
    },
    Case {
        plugin: "hostile",
        language: "Rust (minimal)",
        config: &[("mode", "replace")],
        verdict: "replace",
        subject: "sensors/t1/temp",
        payload: |i| pad(format!("{{\"n\":{i}}}")),
    },
    Case {
        plugin: "rust-units",
        language: "Rust",
        config: &[("min_c", "-40"), ("max_c", "85")],
        verdict: "replace",
        subject: "sensors/t1/temp",
        payload: |i| {
            pad(format!(
                "{{\"sensor\":\"t{}\",\"temp_f\":{}.5}}",
                i % 10,
                60 + i % 20
            ))
        },
    },
    Case {
        plugin: "c-filter",
        language: "C",
        config: &[("max_bytes", "1000")],
        verdict: "keep",
        subject: "sensors/t1/temp",
        payload: |i| pad(format!("{{\"n\":{i}}}")),
    },
    Case {
        plugin: "python-enrich",
        language: "Python",
        config: &[("sites", "{\"t1\":{\"site\":\"plant-a\",\"floor\":2}}")],
        verdict: "keep",
        subject: "sensors/t9/temp",
        payload: |i| pad(format!("{{\"sensor\":\"t9\",\"n\":{i}}}")),
    },
    Case {
        plugin: "python-enrich",
        language: "Python",
        config: &[("sites", "{\"t1\":{\"site\":\"plant-a\",\"floor\":2}}")],
        verdict: "replace",
        subject: "sensors/t1/temp",
        payload: |i| pad(format!("{{\"sensor\":\"t1\",\"n\":{i}}}")),
    },
    Case {
        plugin: "js-redact",
        language: "JavaScript",
        config: &[("fields", "password,ssn")],
        verdict: "keep",
        subject: "sensors/t1/temp",
        payload: |i| pad(format!("{{\"user\":\"u{i}\"}}")),
    },
    Case {
        plugin: "js-redact",
        language: "JavaScript",
        config: &[("fields", "password,ssn")],
        verdict: "replace",
        subject: "sensors/t1/temp",
        payload: |i| pad(format!("{{\"user\":\"u{i}\",\"password\":\"p{i}\"}}")),
    },
    Case {
        plugin: "go-route",
        language: "Go",
        config: &[("field", "kind"), ("prefix", "readings.")],
        verdict: "keep",
        subject: "sensors/t1/temp",
        payload: |i| pad(format!("{{\"n\":{i}}}")),
    },
    Case {
        plugin: "go-route",
        language: "Go",
        config: &[("field", "kind"), ("prefix", "readings.")],
        verdict: "route",
        subject: "sensors/t1/temp",
        payload: |i| pad(format!("{{\"kind\":\"temp\",\"n\":{i}}}")),
    },
];

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/plugins"));
    let engine = engine::build(&Target::Host).expect("engine");
    let fingerprint = engine::fingerprint(&Target::Host).expect("fingerprint");
    let linker = host::linker(&engine).expect("linker");
    let _ticker = engine::Ticker::start(&engine).expect("ticker");
    println!(
        "plugin-bench: batches of {BATCH} records of {PAYLOAD} bytes, {}s per case, {}",
        MEASURE.as_secs(),
        std::env::consts::ARCH
    );
    println!(
        "{:<16} {:<14} {:<8} {:>10} {:>11} {:>10} {:>10} {:>9}",
        "plugin", "language", "verdict", "µs/record", "records/s", "compile", "start", "RSS/inst"
    );
    let mut compiled: Vec<(&str, kedge_plugin_host::Component, Duration)> = Vec::new();
    for case in CASES {
        let path = dir.join(format!("{}.wasm", case.plugin));
        if !path.is_file() {
            println!(
                "{:<16} {:<14} not built ({})",
                case.plugin,
                case.language,
                path.display()
            );
            continue;
        }
        let (component, compile) = match compiled.iter().find(|(n, _, _)| *n == case.plugin) {
            Some((_, c, t)) => (c.clone(), *t),
            None => {
                let started = Instant::now();
                let c = load::component(&engine, &fingerprint, &path, case.plugin, None)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let t = started.elapsed();
                compiled.push((case.plugin, c.clone(), t));
                (c, t)
            }
        };
        let rss_before = rss_kib();
        let started = Instant::now();
        let mut plugin = Plugin::load(
            &engine,
            &linker,
            &component,
            false,
            Settings {
                limits: Limits::new(256 << 20, Duration::from_secs(10), 256 << 20),
                grants: Grants::default(),
                config: case
                    .config
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
            Arc::new(PluginStats::new(case.plugin)),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.plugin));
        let start = started.elapsed();
        let (per_record, rss_after) = measure(&mut plugin, case);
        println!(
            "{:<16} {:<14} {:<8} {:>10.3} {:>11.0} {:>9.0?} {:>9.1?} {:>7.1}MiB",
            case.plugin,
            case.language,
            case.verdict,
            per_record * 1e6,
            1.0 / per_record,
            compile,
            start,
            rss_after.saturating_sub(rss_before) as f64 / 1024.0
        );
    }
    println!("peak RSS {:.1} MiB", peak_rss_kib() as f64 / 1024.0);
}

/// Seconds per record over [`MEASURE`], and the RSS after the run.
fn measure(plugin: &mut Plugin, case: &Case) -> (f64, u64) {
    let info = BatchInfo {
        source: "mqtt".to_owned(),
        subject: case.subject.to_owned(),
        default_topic: Some("readings".to_owned()),
        topic: Some("readings".to_owned()),
        now_ms: 1_700_000_000_000,
    };
    let events: Vec<Event> = (0..BATCH)
        .map(|i| Event {
            key: None,
            value: (case.payload)(i).into_bytes(),
            headers: vec![Header {
                name: "unit".to_owned(),
                value: b"F".to_vec(),
            }],
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect();
    assert!(
        events.iter().all(|e| e.value.len() == PAYLOAD),
        "payloads of {PAYLOAD} bytes"
    );
    // Warm up, and check the plugin does what the case says.
    let verdicts = plugin.process(&info, &events).expect("process");
    let kind = |v: &Verdict| match v {
        Verdict::Keep => "keep",
        Verdict::Drop => "drop",
        Verdict::Route(_) => "route",
        Verdict::Replace(_) => "replace",
        Verdict::Fail(_) => "fail",
    };
    assert!(
        verdicts.iter().all(|v| kind(v) == case.verdict),
        "{}: expected {} for every record, got e.g. {:?}",
        case.plugin,
        case.verdict,
        verdicts.first()
    );
    let started = Instant::now();
    let mut records = 0usize;
    while started.elapsed() < MEASURE {
        let verdicts = plugin.process(&info, &events).expect("process");
        std::hint::black_box(verdicts);
        records += BATCH;
    }
    (started.elapsed().as_secs_f64() / records as f64, rss_kib())
}

fn rss_kib() -> u64 {
    proc_status("VmRSS:")
}

fn peak_rss_kib() -> u64 {
    proc_status("VmHWM:")
}

fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string(Path::new("/proc/self/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}
