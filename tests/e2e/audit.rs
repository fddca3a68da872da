//! `kedge audit` against a topic a third-party producer (confluent-kafka) filled with crafted
//! `kedge-seq` headers: it finds exactly the injected gap and duplicate, and its exit codes;
//! with `--config`, it takes the topics and the device from a kedge config; records in a topic
//! the config does not name (a plugin's choice) look missing, and the report says how to read
//! them too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::support::kedge::{DEVICE_ID, READINGS_ROUTING, pipeline_config};
use crate::support::tansu::Tansu;
use crate::support::{free_port, python_bin, repo_root, run};

/// Runs `kedge audit` with `args`; (exit code, stdout, stderr).
pub fn kedge_audit(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kedge"));
    command.arg("audit").args(args);
    let output = run(command, Duration::from_secs(120));
    (
        output.status.code().expect("kedge audit exited normally"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Writes `records` (`PARTITION:DEVICE:SEQ`) in order with confluent-kafka.
fn produce(bootstrap: &str, topic: &str, records: &[&str]) {
    produce_batched(bootstrap, topic, records, "none", 0);
}

/// [`produce`] in batches gathered for `linger_ms` and compressed with `compression`.
pub fn produce_batched(
    bootstrap: &str,
    topic: &str,
    records: &[&str],
    compression: &str,
    linger_ms: u32,
) {
    let mut command = Command::new(python_bin());
    command
        .arg(repo_root().join("tests/peers/produce.py"))
        .args(["--bootstrap", bootstrap, "--topic", topic])
        .args(["--compression", compression])
        .args(["--linger-ms", &linger_ms.to_string()]);
    for r in records {
        command.args(["--record", r]);
    }
    let output = run(command, Duration::from_secs(90));
    assert!(
        output.status.success(),
        "produce.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What [`crafted`] writes.
const CRAFTED: &[&str] = &[
    // dev-a: 4 and 5 are lost, 8 is written twice.
    "0:dev-a:1",
    "0:dev-a:2",
    "1:dev-a:3",
    "0:dev-a:6",
    "1:dev-a:7",
    "1:dev-a:8",
    "1:dev-a:8",
    // dev-b: complete, but 2 lands after 3 in partition 1 (reported, not judged).
    "0:dev-b:1",
    "1:dev-b:3",
    "1:dev-b:2",
    "0:dev-b:4",
];

/// A tansu whose topic `crafted` (2 partitions) holds [`CRAFTED`].
fn crafted() -> Tansu {
    let tansu = Tansu::start();
    tansu.create_topic("crafted", 2);
    produce(&tansu.bootstrap(), "crafted", CRAFTED);
    tansu
}

/// A kedge config file for Kafka at `bootstrap` with `routing`, as device `device`.
pub fn config_file(bootstrap: &str, routing: &str, device: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("kedge-e2e-audit-")
        .tempdir()
        .expect("temp dir");
    let text = pipeline_config(free_port(), bootstrap, routing)
        .replace("@DATA_DIR@", dir.path().to_str().expect("UTF-8 temp path"))
        .replace(
            &format!("device_id = \"{DEVICE_ID}\""),
            &format!("device_id = \"{device}\""),
        );
    let path = dir.path().join("kedge.toml");
    std::fs::write(&path, text).expect("write kedge.toml");
    (dir, path)
}

/// A path as an argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn audit_finds_exactly_the_injected_gap_and_duplicate() {
    let tansu = crafted();
    let bootstrap = tansu.bootstrap();

    let (code, out, err) = kedge_audit(&["--bootstrap", &bootstrap, "--topic", "crafted"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(
            "device dev-a: 7 records, kedge-seq 1..=8, 2 missing, 1 duplicates, 0 backwards"
        ),
        "{out}"
    );
    assert!(out.contains("  missing from topic crafted: 4-5\n"), "{out}");
    assert!(out.contains("  duplicated in topic crafted: 8\n"), "{out}");
    assert!(
        out.contains(
            "device dev-b: 4 records, kedge-seq 1..=4, 0 missing, 0 duplicates, 1 backwards"
        ),
        "{out}"
    );
    assert!(
        out.contains("  backwards in topic crafted: partition 1 offset "),
        "{out}"
    );

    let (code, out, _) = kedge_audit(&[
        "--bootstrap",
        &bootstrap,
        "--topic",
        "crafted",
        "--device",
        "dev-b",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("clean\n"), "{out}");

    // From offset 2 on, partition 0 holds dev-a 6 and partition 1 holds dev-a 8 twice.
    let (code, out, _) = kedge_audit(&[
        "--bootstrap",
        &bootstrap,
        "--topic",
        "crafted",
        "--device",
        "dev-a",
        "--from-offset",
        "2",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("device dev-a: 3 records, kedge-seq 6..=8, 1 missing, 1 duplicates"),
        "{out}"
    );

    let (code, _, err) = kedge_audit(&["--bootstrap", &bootstrap, "--topic", "no-such-topic"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-topic"), "{err}");

    let closed = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = kedge_audit(&["--bootstrap", &closed, "--topic", "crafted"]);
    assert_eq!(code, 2, "{err}");

    let (code, _, _) = kedge_audit(&["--topic", "crafted"]);
    assert_eq!(code, 2, "a usage error");
}

/// Routes to `crafted` twice (a rule and the default) and dead-letters to a topic that does not
/// exist.
const CRAFTED_ROUTING: &str = r#"[routing]
default_topic = "crafted"
dead_letter_topic = "kedge-dead-letter"

[[routing.rules]]
filter = "sensors/+/reading"
topic = "crafted"
"#;

#[test]
fn audit_with_a_config_reads_its_topics_for_its_own_device() {
    let tansu = crafted();
    let (_dir, config) = config_file(&tansu.bootstrap(), CRAFTED_ROUTING, "dev-b");

    // dev-b is clean; dev-a's loss is not its business, and no topic is read twice.
    let (code, out, err) = kedge_audit(&["--config", arg(&config)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(
            "device dev-b: 4 records, kedge-seq 1..=4, 0 missing, 0 duplicates, 1 backwards"
        ),
        "{out}"
    );
    assert!(!out.contains("device dev-a"), "{out}");
    assert!(
        out.contains("7 records without kedge headers (or of other devices) in topic crafted\n"),
        "{out}"
    );
    assert!(
        out.contains("topic kedge-dead-letter skipped: the cluster does not have it"),
        "{out}"
    );
    assert!(out.ends_with("clean\n"), "{out}");

    let (code, out, _) = kedge_audit(&["--config", arg(&config), "--all-devices"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("device dev-a: 7 records"), "{out}");
    assert!(out.contains("device dev-b: 4 records"), "{out}");

    let (code, out, _) = kedge_audit(&["--config", arg(&config), "--device", "dev-a"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("device dev-a: 7 records"), "{out}");

    // Topics named on the command line replace the config's, and must exist.
    let (code, out, err) = kedge_audit(&[
        "--config",
        arg(&config),
        "--topic",
        "crafted",
        "--topic",
        "kedge-dead-letter",
    ]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("topic kedge-dead-letter does not exist"),
        "{err}"
    );

    // --bootstrap replaces kafka.bootstrap.
    let closed = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = kedge_audit(&["--config", arg(&config), "--bootstrap", &closed]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("cannot connect to Kafka broker {closed}")),
        "{err}"
    );

    // A device with nothing on the topics: clean, with a hint that the default may be wrong.
    let (_dir, elsewhere) = config_file(&tansu.bootstrap(), CRAFTED_ROUTING, "dev-z");
    let (code, out, err) = kedge_audit(&["--config", arg(&elsewhere)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("no kedge records found in topic crafted\n"),
        "{out}"
    );
    assert!(
        err.contains("no records of device \"dev-z\" (the config's agent.device_id)"),
        "{err}"
    );

    // Not one of the config's topics exists: nothing could be audited.
    let nowhere = "[routing]\ndefault_topic = \"nothing-here\"\n";
    let (_dir, nowhere) = config_file(&tansu.bootstrap(), nowhere, "dev-b");
    let (code, _, err) = kedge_audit(&["--config", arg(&nowhere)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("none of the topics nothing-here, kedge-dead-letter exists"),
        "{err}"
    );
}

/// The issue's user: a plugin routed `lab-*` devices' records to topic `lab`, which no routing
/// rule names. `readings` holds dev-c's 0, 1, 4 and 3 (reordered), `lab` its 2.
#[test]
fn records_in_a_topic_the_config_does_not_name_look_missing_and_the_report_says_so() {
    let tansu = Tansu::start();
    tansu.create_topic("readings", 1);
    tansu.create_topic("lab", 1);
    let bootstrap = tansu.bootstrap();
    produce(
        &bootstrap,
        "readings",
        &["0:dev-c:0", "0:dev-c:1", "0:dev-c:4", "0:dev-c:3"],
    );
    produce(&bootstrap, "lab", &["0:dev-c:2"]);
    // The rules name `readings` and the dead-letter topic, which does not exist: skipped.
    let (_dir, config) = config_file(&bootstrap, READINGS_ROUTING, "dev-c");

    let (code, out, err) = kedge_audit(&["--config", arg(&config)]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    for line in [
        "device dev-c: 4 records, kedge-seq 0..=4, 1 missing, 0 duplicates, 1 backwards \
         (topic readings)\n",
        "  missing from topic readings: 2\n",
        "  backwards in topic readings: partition 0 offset 3: 3 after 4\n",
        "missing records may be in a topic not read here, such as one a plugin routes to: \
         name every topic the device writes to, e.g. --topic readings --topic OTHER\n",
        "topic readings: NOT CLEAN: loss or duplicates\n",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }

    // Read together, nothing is missing; `lab` read after `readings` is not a reordering.
    let (code, out, err) = kedge_audit(&[
        "--config",
        arg(&config),
        "--topic",
        "readings",
        "--topic",
        "lab",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.starts_with(
            "device dev-c: 5 records, kedge-seq 0..=4, 0 missing, 0 duplicates, 1 backwards \
             (topics readings 4, lab 1)\n"
        ),
        "{out}"
    );
    assert!(!out.contains("--topic"), "{out}");
    assert!(out.ends_with("topics readings, lab: clean\n"), "{out}");
}

#[test]
fn audit_with_a_bad_config_exits_2_naming_file_line_and_column() {
    // No broker is needed: the config is read before anything connects.
    let (dir, config) = config_file("127.0.0.1:9", CRAFTED_ROUTING, "dev-b");
    let text = std::fs::read_to_string(&config)
        .expect("read config")
        .replace(r#"linger = "5ms""#, r#"linger = "5 parsecs""#);
    std::fs::write(&config, &text).expect("write config");
    let at = text.find(r#""5 parsecs""#).expect("the bad value");
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;

    let (code, out, err) = kedge_audit(&["--config", arg(&config)]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    let expected = format!(
        "error: {}:{line}:{column}: kafka.linger: ",
        config.display()
    );
    assert!(
        err.starts_with(&expected),
        "expected {expected:?}, got:\n{err}"
    );
    assert!(out.is_empty(), "{out}");

    let missing = dir.path().join("missing.toml");
    let (code, _, err) = kedge_audit(&["--config", arg(&missing)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with(&format!("error: {}:1:1: cannot read: ", missing.display())),
        "{err}"
    );

    // Without --config, the broker and the topic stay required.
    let (code, _, err) = kedge_audit(&["--bootstrap", "127.0.0.1:9"]);
    assert_eq!(code, 2, "a usage error: {err}");
}
