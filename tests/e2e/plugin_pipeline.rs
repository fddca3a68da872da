//! The whole pipeline with a real plugin: sensor readings over MQTT QoS 1 → kedge running the
//! `rust-units` example plugin → tansu, read back by the independent consumer. Each kept reading
//! arrives once, converted to °C and keyed by its sensor; the out-of-range ones are dropped and
//! counted.
//!
//! With `KEDGE_TARGET=<triple>` (cross/e2e.sh sets it with `KEDGE_BIN` and `KEDGE_RUNNER`) the
//! plugin is compiled ahead of time for that triple by the host's kedge and configured as a
//! `.cwasm`, since device builds have no compiler: on armv7 the device binary then runs Pulley
//! bytecode, under qemu here. Without it, the host kedge compiles the `.wasm` at start.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::Value;

use crate::plugins::{config_with, plugin};
use crate::support::consume::consume;
use crate::support::kedge::{DEVICE_ID, Kedge, kedge_bin};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing};
use crate::support::tansu::Tansu;
use crate::support::verdict::Stopwatch;
use crate::support::{free_port, metric, run, wait_until};

/// Readings published.
const READINGS: usize = 5_000;
/// Distinct MQTT topics (`sensors/dev-N/reading`): the plugin is called per topic.
const DEVICES: usize = 10;
/// Distinct sensor ids inside the payloads.
const SENSORS: usize = 40;

/// What the plugin must make of one reading: the record key and value, or nothing (dropped).
type Expected = Option<(String, String)>;

/// Reading `i` as published, and what must come out of the plugin for it. The converted values
/// are exact in binary or rounded away from a tie, so the expectation does not depend on
/// floating-point luck and is written without the plugin's own formula.
fn reading(i: usize) -> (Message, Expected) {
    let device = format!("dev-{}", i % DEVICES);
    let sensor = format!("t-{}", i % SENSORS);
    let (payload, expected) = match i % 20 {
        // Rounded to 85.01 °C: over max_c, which applies to the rounded value.
        9 => (
            format!(r#"{{"sensor":"{sensor}","temp_c":85.006,"n":{i}}}"#),
            None,
        ),
        // -40.05 °F is -40.03 °C: under min_c.
        19 => (
            format!(r#"{{"sensor":"{sensor}","temp_f":-40.05,"n":{i}}}"#),
            None,
        ),
        _ => match i % 3 {
            // 32 + 2.25·m °F is exactly 1.25·m °C.
            0 => {
                let m = (i % 97) as f64 - 30.0;
                let celsius = 1.25 * m;
                (
                    format!(
                        r#"{{"sensor":"{sensor}","temp_f":{},"n":{i}}}"#,
                        32.0 + 2.25 * m
                    ),
                    Some((sensor, celsius)),
                )
            }
            // Thousandths of a degree Celsius, -40.000 to 84.999, never on a tie.
            1 => {
                let mut milli = (i * 7919 % 125_000) as i64 - 40_000;
                if milli.rem_euclid(10) == 5 {
                    milli += 1;
                }
                let hundredths = (milli.abs() + 5) / 10 * milli.signum();
                let text = format!(
                    "{}{}.{:03}",
                    if milli < 0 { "-" } else { "" },
                    milli.abs() / 1000,
                    milli.abs() % 1000
                );
                (
                    format!(r#"{{"sensor":"{sensor}","temp_c":{text},"n":{i}}}"#),
                    Some((sensor, hundredths as f64 / 100.0)),
                )
            }
            // No `sensor`: the plugin takes the id from the topic.
            _ => {
                let m = (i % 89) as f64 - 20.0;
                (
                    format!(r#"{{"temp_f":{},"n":{i}}}"#, 32.0 + 2.25 * m),
                    Some((device.clone(), 1.25 * m)),
                )
            }
        },
    };
    // The plugin passes headers through: every 5th reading carries one.
    let user_properties = if i.is_multiple_of(5) {
        vec![("site".to_owned(), "north".to_owned())]
    } else {
        Vec::new()
    };
    let message = Message {
        topic: format!("sensors/{device}/reading"),
        payload: Bytes::from(payload),
        user_properties,
    };
    // The plugin prints numbers in their shortest form, as Rust's Display does for these.
    let expected = expected.map(|(id, celsius)| {
        let value = format!(r#"{{"sensor":"{id}","temp_c":{celsius},"n":{i}}}"#);
        (id, value)
    });
    (message, expected)
}

/// The plugin as the kedge under test loads it: an artifact for `KEDGE_TARGET` compiled by the
/// host's kedge (the binary under test may be a device build without a compiler), else the
/// component.
fn units_plugin(dir: &Path) -> PathBuf {
    let wasm = plugin("rust-units");
    let Ok(target) = std::env::var("KEDGE_TARGET") else {
        return wasm;
    };
    let cwasm = dir.join(format!("rust-units-{target}.cwasm"));
    let mut compile = Command::new(env!("CARGO_BIN_EXE_kedge"));
    compile
        .args(["plugin", "compile"])
        .arg(&wasm)
        .args(["--target", &target, "-o"])
        .arg(&cwasm);
    let out = run(compile, Duration::from_secs(300));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kedge plugin compile: {said}");
    eprint!("plugin_pipeline: {said}");
    cwasm
}

/// The kedge under test, and whether it runs emulated (through `KEDGE_RUNNER`): its speed and
/// RSS are then the emulator's as much as kedge's.
fn how_run() -> String {
    match std::env::var("KEDGE_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => format!(
            "{}, emulated under {runner}: the figures include the emulator",
            kedge_bin()
        ),
        _ => kedge_bin(),
    }
}

/// The plugin's lines of a metrics scrape, for failure messages.
fn units_metrics(addr: SocketAddr) -> String {
    let (_, body) = kedge::ops::get(addr, "/metrics", Duration::from_secs(5)).expect("scrape");
    body.lines()
        .filter(|l| l.contains(r#"plugin="units""#))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn readings_through_the_rust_units_plugin_arrive_once_converted_and_keyed_by_sensor() {
    let _stopwatch = Stopwatch::start("plugin_pipeline");
    let (published, expected): (Vec<Message>, Vec<Expected>) = (0..READINGS).map(reading).unzip();
    let kept = expected.iter().filter(|e| e.is_some()).count();
    let dropped = READINGS - kept;

    let dir = tempfile::tempdir().expect("temp dir");
    let units = units_plugin(dir.path());
    let tansu = Tansu::start();
    tansu.create_topic("readings", 3);
    tansu.create_topic("kedge-dead-letter", 1);
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    // Under qemu, Pulley takes longer than the default 200 ms for a full call of 1,024 events.
    // A timed-out call is re-run in halves, which loses nothing but counts the plugin's own
    // counters twice: this test is about the results (the hostile plugin tests the deadline),
    // so it gives the plugin time and then requires that no call timed out.
    let plugins = format!(
        "[[plugin]]\nname = \"units\"\npath = \"{}\"\ntimeout = \"5s\"\n[plugin.config]\nmin_c = -40\nmax_c = 85\ndecimals = 2\n",
        units.display()
    );
    let mut kedge = Kedge::start(&config_with(&mosquitto, &tansu, metrics, &plugins));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(60));

    let started = SystemTime::now();
    let bootstrap = tansu.bootstrap();
    let consumer =
        thread::spawn(move || consume(&bootstrap, "readings", kept, Duration::from_secs(180)));
    let publishing = Publishing::start(mosquitto.port(), published.clone(), None);
    publishing.wait_acked(Duration::from_secs(120));
    let records = consumer.join().expect("consumer thread");

    let first_publish = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let seconds = records
        .iter()
        .map(|r| r.received_at)
        .fold(first_publish, f64::max)
        - first_publish;
    eprintln!(
        "plugin_pipeline: {READINGS} readings in, {} records out (first publish to last consumed) \
         in {seconds:.2}s = {:.0} readings/s ({})",
        records.len(),
        READINGS as f64 / seconds,
        how_run()
    );

    // A batch of dropped readings after the last kept one can be counted after it arrived.
    let verdicts = |verdict: &str| {
        metric(
            metrics,
            "kedge_plugin_verdicts_total",
            &format!(r#"plugin="units",verdict="{verdict}""#),
        )
    };
    let dead_lettered = || {
        metric(
            metrics,
            "kedge_records_dead_lettered_total",
            r#"reason="plugin""#,
        )
    };
    wait_until(
        "the plugin's verdicts on every reading",
        Duration::from_secs(30),
        || {
            verdicts("replace") + verdicts("drop") + verdicts("fail") >= READINGS as f64
                || dead_lettered() > 0.0
        },
    );
    let scrape = units_metrics(metrics);
    assert_eq!(dead_lettered(), 0.0, "readings dead-lettered:\n{scrape}");
    let units_label = r#"plugin="units""#;
    eprintln!(
        "plugin_pipeline: {} plugin calls, {:.2}s in them ({})",
        metric(metrics, "kedge_plugin_calls_total", units_label),
        metric(metrics, "kedge_plugin_call_seconds_sum", units_label),
        how_run()
    );
    assert_eq!(
        metric(metrics, "kedge_plugin_recycles_total", units_label),
        0.0,
        "plugin instances recycled (a timeout?):\n{scrape}"
    );
    assert_eq!(
        verdicts("replace"),
        kept as f64,
        "readings converted:\n{scrape}"
    );
    assert_eq!(
        verdicts("drop"),
        dropped as f64,
        "readings dropped:\n{scrape}"
    );
    let counter = |name: &str| {
        metric(
            metrics,
            "kedge_plugin_counter_total",
            &format!(r#"plugin="units",name="{name}""#),
        )
    };
    assert_eq!(counter("converted"), kept as f64, "{scrape}");
    assert_eq!(counter("out_of_range"), dropped as f64, "{scrape}");
    assert_eq!(counter("invalid"), 0.0, "{scrape}");

    let by_value: HashMap<&str, usize> = expected
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|(_, value)| (value.as_str(), i)))
        .collect();
    let mut copies = vec![0usize; READINGS];
    for record in &records {
        let value = std::str::from_utf8(&record.value).expect("UTF-8 value");
        let Some(&i) = by_value.get(value) else {
            let n = serde_json::from_str::<Value>(value)
                .ok()
                .and_then(|v| v["n"].as_u64())
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n < READINGS);
            panic!(
                "unexpected record {value:?}; reading #{n:?} was {:?}, expected {:?}",
                n.map(|n| &published[n].payload),
                n.map(|n| &expected[n])
            );
        };
        copies[i] += 1;
        let (sensor, _) = expected[i].as_ref().expect("kept reading");
        assert_eq!(
            record.key.as_deref(),
            Some(sensor.as_bytes()),
            "key of reading #{i}"
        );
        assert_eq!(
            record.header("site").as_deref(),
            i.is_multiple_of(5).then_some("north"),
            "headers of reading #{i}: {:?}",
            record.headers
        );
        assert_eq!(
            record.header("kedge-device").as_deref(),
            Some(DEVICE_ID),
            "reading #{i}"
        );
    }
    let missing: Vec<usize> = (0..READINGS)
        .filter(|&i| expected[i].is_some() && copies[i] == 0)
        .collect();
    assert!(
        missing.is_empty(),
        "{} converted readings missing, e.g. #{:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<usize> = (0..READINGS).filter(|&i| copies[i] > 1).collect();
    assert!(
        twice.is_empty(),
        "readings delivered more than once, e.g. #{:?}",
        &twice[..twice.len().min(10)]
    );
    assert_eq!(records.len(), kept);

    eprintln!(
        "plugin_pipeline: kedge peak RSS {} KiB ({})",
        kedge.peak_rss_kib(),
        how_run()
    );
    let status = kedge.terminate(Duration::from_secs(15));
    assert!(status.success(), "kedge exited with {status} on SIGTERM");
}
