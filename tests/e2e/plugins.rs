//! WebAssembly plugins through the real binary: every example plugin against its expected
//! output (`kedge plugin test`), hostile plugins contained, and plugins in a running pipeline
//! with real mosquitto and tansu — the guilty events dead-lettered, the rest delivered, a
//! failing plugin holding the pipeline without losing anything.
//!
//! The plugins are built from source by `scripts/build-plugins.sh` into `target/plugins`
//! (or `$KEDGE_PLUGINS_DIR`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::support::consume::{Consumed, consume};
use crate::support::kedge::{Kedge, kedge_command, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing};
use crate::support::tansu::Tansu;
use crate::support::{free_port, metric, repo_root, run, wait_until};

/// Examples the default test run builds and must check.
const REQUIRED: &[&str] = &["rust-units", "rust-downsample", "c-filter"];

fn plugins_dir() -> PathBuf {
    std::env::var_os("KEDGE_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/plugins"))
}

/// A built plugin, which must exist.
pub fn plugin(name: &str) -> PathBuf {
    let path = plugins_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh (scripts/test does)",
        path.display()
    );
    path
}

/// Runs `kedge plugin test` and returns (success, stdout lines as JSON, stderr).
fn plugin_test(plugin: &Path, input: &Path, args: &[String]) -> (bool, Vec<Value>, String) {
    let mut command = kedge_command();
    command
        .args(["plugin", "test"])
        .arg(plugin)
        .arg("--input")
        .arg(input)
        .args(args);
    let out = run(command, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// The example's `test.args`: words as a POSIX shell splits them (quotes and backslashes).
fn test_args(example: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(example.join("test.args")).unwrap_or_default();
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[test]
fn every_example_plugin_produces_its_expected_output() {
    let mut checked = Vec::new();
    let mut skipped = Vec::new();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo_root().join("plugins"))
        .expect("plugins/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("expected.jsonl").is_file())
        .collect();
    examples.sort();
    for dir in examples {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let wasm = plugins_dir().join(format!("{name}.wasm"));
        if !wasm.is_file() {
            assert!(
                !REQUIRED.contains(&name.as_str())
                    && std::env::var_os("KEDGE_ALL_PLUGINS").is_none(),
                "{} is missing: run scripts/build-plugins.sh{}",
                wasm.display(),
                if REQUIRED.contains(&name.as_str()) {
                    ""
                } else {
                    " --all"
                }
            );
            skipped.push(name);
            continue;
        }
        let args = test_args(&dir);
        let started = std::time::Instant::now();
        let (ok, got, stderr) = plugin_test(&wasm, &dir.join("input.jsonl"), &args);
        assert!(ok, "{name}: kedge plugin test failed:\n{stderr}");
        let want = jsonl(&dir.join("expected.jsonl"));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{name}: line {} differs\n{stderr}", i + 1);
        }
        assert_eq!(got.len(), want.len(), "{name}: number of lines\n{stderr}");
        eprintln!(
            "plugins: {name}: {} lines as expected ({:.1?})",
            got.len(),
            started.elapsed()
        );
        checked.push(name);
    }
    for name in REQUIRED {
        assert!(
            checked.iter().any(|c| c == name),
            "{name} has no expected.jsonl"
        );
    }
    if !skipped.is_empty() {
        eprintln!(
            "plugins: NOTE: not built, so not checked: {} (scripts/build-plugins.sh --all builds them)",
            skipped.join(", ")
        );
    }
}

/// Writes `values` as sample events on one subject.
fn samples(dir: &Path, values: &[&str]) -> PathBuf {
    let path = dir.join("input.jsonl");
    let text: String = values
        .iter()
        .map(|v| {
            format!(
                "{}\n",
                serde_json::json!({"subject": "sensors/a/reading", "value": v})
            )
        })
        .collect();
    std::fs::write(&path, text).expect("write samples");
    path
}

fn faults(lines: &[Value]) -> Vec<Option<String>> {
    lines
        .iter()
        .map(|l| l.get("fault").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

#[test]
fn hostile_plugins_fail_only_their_events_and_never_the_host() {
    let hostile = plugin("hostile");
    let dir = tempfile::tempdir().expect("temp dir");
    let input = samples(
        dir.path(),
        &["a", "b", "boom", "c", "d", "e", "boom", "f", "g", "h"],
    );
    let args = |extra: &[&str]| extra.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    // A trap on one event: only the poisoned events fail, the rest are kept.
    let (ok, lines, stderr) = plugin_test(
        &hostile,
        &input,
        &args(&["--config", "mode=trap-on", "--config", "poison=boom"]),
    );
    assert!(ok, "{stderr}");
    let f = faults(&lines);
    assert_eq!(lines.len(), 10, "{stderr}");
    for (i, fault) in f.iter().enumerate() {
        if i == 2 || i == 6 {
            assert_eq!(fault.as_deref(), Some("trap"), "event {i}: {}", lines[i]);
            assert_eq!(lines[i]["verdict"], "fail");
        } else {
            assert_eq!(lines[i], serde_json::json!({"input": i, "verdict": "keep"}));
        }
    }
    assert!(stderr.contains("instance recycles"), "{stderr}");
    // The calls that trapped are re-run in halves; only the 8 kept events count, once each.
    assert!(stderr.contains("; counters: kept 8\n"), "{stderr}");

    // Whole-batch faults fail every event, each with its own reason.
    for (mode, extra, want) in [
        ("loop", vec!["--timeout", "50ms"], "timeout"),
        ("memory", vec!["--memory", "4MiB"], "memory"),
        ("fail-batch", vec![], "plugin_error"),
        ("wrong-count", vec![], "wrong_count"),
        (
            "huge-output",
            // 2,000 one-byte copies per event: each event alone is over the limit.
            vec!["--config", "copies=2000", "--max-output", "1KiB"],
            "output_too_large",
        ),
    ] {
        let mut a = args(&["--config", &format!("mode={mode}")]);
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        let started = std::time::Instant::now();
        let (ok, lines, stderr) = plugin_test(&hostile, &input, &a);
        assert!(ok, "{mode}: {stderr}");
        assert_eq!(lines.len(), 10, "{mode}: {stderr}");
        assert!(
            faults(&lines).iter().all(|f| f.as_deref() == Some(want)),
            "{mode}: expected every event to fail with {want}: {lines:?}"
        );
        eprintln!(
            "plugins: hostile {mode}: contained in {:.1?}",
            started.elapsed()
        );
    }

    // A plugin whose init fails is refused with the plugin's own reason.
    let (ok, _, stderr) = plugin_test(&hostile, &input, &args(&["--config", "mode=init-fail"]));
    assert!(!ok);
    assert!(stderr.contains("plugin init failed"), "{stderr}");
}

/// A pipeline config with the `readings` routing and `plugins` appended.
/// The `[[plugin]]` section of the `hostile` plugin in `mode`, failing its circuit after one
/// fault and holding the pipeline (`on_failure = "backpressure"`) while it is open.
pub fn backpressure_section(hostile: &Path, mode: &str) -> String {
    format!(
        "[[plugin]]\nname = \"hostile\"\npath = \"{}\"\ntimeout = \"20ms\"\non_failure = \"backpressure\"\nmax_failures = 1\ncircuit_backoff = {{ initial = \"200ms\", max = \"1s\" }}\n[plugin.config]\nmode = \"{mode}\"\n",
        hostile.display()
    )
}

/// Every one of `values` is the value of exactly one of `records`, and nothing else is.
pub fn assert_each_value_once(records: &[Consumed], values: &[String]) {
    let mut got: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
    got.sort_unstable();
    let mut want: Vec<&[u8]> = values.iter().map(String::as_bytes).collect();
    want.sort_unstable();
    assert_eq!(got, want, "each held event once in Kafka, and nothing else");
}

pub fn config_with(
    mosquitto: &Mosquitto,
    tansu: &Tansu,
    metrics: SocketAddr,
    plugins: &str,
) -> String {
    pipeline_config(
        mosquitto.port(),
        &tansu.bootstrap(),
        &format!(
            "{}\n\n[metrics]\nlisten = \"{metrics}\"\n\n{plugins}",
            crate::support::kedge::READINGS_ROUTING
        ),
    )
}

pub fn messages(values: &[String]) -> Vec<Message> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Message {
            topic: format!("sensors/dev-{}/reading", i % 5),
            payload: Bytes::from(v.clone()),
            user_properties: Vec::new(),
        })
        .collect()
}

#[test]
fn a_trapping_plugin_in_the_pipeline_dead_letters_only_the_guilty_events() {
    let hostile = plugin("hostile");
    let tansu = Tansu::start();
    tansu.create_topic("readings", 3);
    tansu.create_topic("kedge-dead-letter", 1);
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let plugins = format!(
        // Ten traps would open the circuit at the default max_failures: this test is about
        // the bisection alone.
        "[[plugin]]\nname = \"hostile\"\npath = \"{}\"\nmax_failures = 50\n[plugin.config]\nmode = \"trap-on\"\npoison = \"boom\"\n",
        hostile.display()
    );
    let mut kedge = Kedge::start(&config_with(&mosquitto, &tansu, metrics, &plugins));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let values: Vec<String> = (0..1000)
        .map(|i| {
            if i % 100 == 37 {
                "boom".to_owned()
            } else {
                format!("reading {i}")
            }
        })
        .collect();
    let publishing = Publishing::start(mosquitto.port(), messages(&values), None);
    publishing.wait_acked(Duration::from_secs(60));

    let good = consume(&tansu.bootstrap(), "readings", 990, Duration::from_secs(60));
    let dead = consume(
        &tansu.bootstrap(),
        "kedge-dead-letter",
        10,
        Duration::from_secs(60),
    );
    assert_eq!(good.len(), 990, "delivered records");
    assert!(good.iter().all(|r| r.value != b"boom"));
    let mut seen: Vec<&[u8]> = good.iter().map(|r| r.value.as_slice()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 990, "each good record once");
    assert_eq!(dead.len(), 10, "dead-lettered records");
    for r in &dead {
        assert_eq!(r.value, b"boom");
        let why = r.header("kedge-error").expect("kedge-error header");
        assert!(why.starts_with("plugin hostile: plugin trapped"), "{why}");
    }
    let label = r#"plugin="hostile",fault="trap""#;
    assert_eq!(
        metric(metrics, "kedge_plugin_faulted_events_total", label),
        10.0
    );
    assert!(
        metric(
            metrics,
            "kedge_plugin_recycles_total",
            r#"plugin="hostile""#
        ) >= 10.0
    );
    assert_eq!(
        metric(
            metrics,
            "kedge_plugin_verdicts_total",
            r#"plugin="hostile",verdict="keep""#
        ),
        990.0
    );
    assert_eq!(
        metric(
            metrics,
            "kedge_records_dead_lettered_total",
            r#"reason="plugin""#
        ),
        10.0
    );
    assert_eq!(
        metric(
            metrics,
            "kedge_records_routed_total",
            r#"topic="kedge-dead-letter""#
        ),
        10.0
    );
    assert!(
        metric(
            metrics,
            "kedge_plugin_call_seconds_count",
            r#"plugin="hostile""#
        ) >= 1.0
    );
    kedge.assert_running();
    let status = kedge.terminate(Duration::from_secs(15));
    assert!(status.success(), "kedge exited with {status}");
}

#[test]
fn a_failing_plugin_with_backpressure_holds_events_until_it_is_fixed() {
    let hostile = plugin("hostile");
    let tansu = Tansu::start();
    tansu.create_topic("readings", 3);
    tansu.create_topic("kedge-dead-letter", 1);
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let section = |mode: &str| backpressure_section(&hostile, mode);
    let mut kedge = Kedge::start(&config_with(&mosquitto, &tansu, metrics, &section("loop")));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let values: Vec<String> = (0..200).map(|i| format!("reading {i}")).collect();
    let publishing = Publishing::start(mosquitto.port(), messages(&values), None);
    wait_until("the circuit to open", Duration::from_secs(30), || {
        metric(metrics, "kedge_plugin_circuit_open", r#"plugin="hostile""#) == 1.0
    });
    publishing.wait_acked(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let (code, why) =
        kedge::ops::get(metrics, "/health/ready", Duration::from_secs(5)).expect("readiness");
    assert_eq!(code, 503, "{why}");
    assert!(
        why.contains("plugin hostile keeps failing: its circuit is open"),
        "{why}"
    );
    assert_eq!(
        metric(metrics, "kedge_records_journaled_total", ""),
        0.0,
        "nothing may be journalled while the plugin holds the pipeline"
    );
    assert!(
        kedge.log_count("holding the pipeline") >= 1,
        "{}",
        kedge.log_text()
    );
    drop(publishing);

    // The operator stops kedge, which must not hang on the held events, fixes the plugin's config
    // and starts it again; the broker redelivers every held event.
    let stopping = std::time::Instant::now();
    let status = kedge.terminate(Duration::from_secs(15));
    assert!(status.success(), "kedge exited with {status} while holding");
    // Well before shutdown_timeout (10 s): a held batch cannot be committed, so it is not waited for.
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        kedge.log_count("stopping while a plugin holds the pipeline"),
        1,
        "{}",
        kedge.log_text()
    );
    std::fs::write(
        kedge.config_path(),
        config_with(&mosquitto, &tansu, metrics, &section("keep")),
    )
    .expect("rewrite config");
    kedge.restart();
    let good = consume(
        &tansu.bootstrap(),
        "readings",
        values.len(),
        Duration::from_secs(60),
    );
    assert_each_value_once(&good, &values);
    let dead = consume(
        &tansu.bootstrap(),
        "kedge-dead-letter",
        0,
        Duration::from_secs(3),
    );
    assert!(
        dead.is_empty(),
        "backpressure must not dead-letter: {dead:?}"
    );
    let status = kedge.terminate(Duration::from_secs(15));
    assert!(status.success(), "kedge exited with {status}");
}

#[test]
fn a_plugin_that_cannot_load_stops_kedge_at_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_wasm = dir.path().join("plugin.wasm");
    std::fs::write(&not_wasm, b"not a component").expect("write");
    let config = dir.path().join("kedge.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ndata_dir = \"{}\"\n[mqtt]\nsubscriptions = [{{ filter = \"a\" }}]\n[kafka]\nbootstrap = [\"127.0.0.1:1\"]\n[[plugin]]\nname = \"p\"\npath = \"plugin.wasm\"\n",
            dir.path().display()
        ),
    )
    .expect("write config");
    let mut command = kedge_command();
    command.args(["run", "--config"]).arg(&config);
    let out = run(command, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("plugin[0] (p):")
            && stderr.contains("is neither a WebAssembly component nor an artifact"),
        "{stderr}"
    );

    // `plugin compile` refuses it the same way, and an artifact for another target is refused
    // at load with both settings named.
    let units = plugin("rust-units");
    let cwasm = dir.path().join("units.cwasm");
    let mut compile = kedge_command();
    compile
        .args(["plugin", "compile"])
        .arg(&units)
        .args(["--target", "aarch64-unknown-linux-musl", "-o"])
        .arg(&cwasm);
    let out = run(compile, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _, stderr) = plugin_test(&cwasm, &samples(dir.path(), &["x"]), &[]);
    if std::env::consts::ARCH == "aarch64" {
        assert!(ok, "{stderr}");
    } else {
        assert!(!ok);
        assert!(
            stderr.contains("compiled for other settings") && stderr.contains("code=aarch64"),
            "{stderr}"
        );
    }

    // For this machine, the artifact runs like the component it came from.
    let host_cwasm = dir.path().join("units-host.cwasm");
    let mut compile = kedge_command();
    compile
        .args(["plugin", "compile"])
        .arg(&units)
        .arg("-o")
        .arg(&host_cwasm);
    let out = run(compile, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = repo_root().join("plugins/rust-units");
    let args = test_args(&example);
    let (ok, got, stderr) = plugin_test(&host_cwasm, &example.join("input.jsonl"), &args);
    assert!(ok, "{stderr}");
    assert_eq!(got, jsonl(&example.join("expected.jsonl")));
}

/// The issue's user saw `dropped 0` in `kedge status` while the plugin had dropped 2: what
/// plugins drop is filtering, not loss, and is counted apart from kedge's own drops.
#[test]
fn status_counts_the_records_plugins_drop() {
    let units = plugin("rust-units");
    let tansu = Tansu::start();
    tansu.create_topic("readings", 1);
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let plugins = format!(
        "[[plugin]]\nname = \"units\"\npath = \"{}\"\n",
        units.display()
    );
    let mut kedge = Kedge::start(&config_with(&mosquitto, &tansu, metrics, &plugins));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    // Two readings above the default max_c of 85 °C.
    let values: Vec<String> = (0..10)
        .map(|i| {
            let celsius = if i % 5 == 2 { 200 } else { 20 };
            format!(r#"{{"sensor":"t-{i}","temp_c":{celsius}}}"#)
        })
        .collect();
    let publishing = Publishing::start(mosquitto.port(), messages(&values), None);
    publishing.wait_acked(Duration::from_secs(60));
    wait_until("8 records delivered", Duration::from_secs(60), || {
        metric(metrics, "kedge_records_delivered_total", "") == 8.0
    });

    let text = crate::ops::status(&kedge, 0);
    for want in [
        "received 10 journaled 8 delivered 8 dead-lettered 0 dropped 0 + 2 by plugins\n",
        "plugins          units: circuit closed, 10 events, 2 dropped, 0 faulted, 0 recycles\n",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    let (code, json) =
        kedge::ops::get(metrics, "/status.json", Duration::from_secs(5)).expect("/status.json");
    assert_eq!(code, 200, "{json}");
    let json: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["records"]["dropped"], 0, "{json}");
    assert_eq!(json["records"]["dropped_by_plugins"], 2, "{json}");
    assert_eq!(json["plugins"][0]["dropped"], 2, "{json}");

    let status = kedge.terminate(Duration::from_secs(15));
    assert!(status.success(), "kedge exited with {status}");
}
