//! `kedge audit` against a topic a third-party producer (confluent-kafka) filled with crafted
//! `kedge-seq` headers: it finds exactly the injected gap and duplicate, and its exit codes.

use std::process::Command;
use std::time::Duration;

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
    let mut command = Command::new(python_bin());
    command
        .arg(repo_root().join("tests/peers/produce.py"))
        .args(["--bootstrap", bootstrap, "--topic", topic]);
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

#[test]
fn audit_finds_exactly_the_injected_gap_and_duplicate() {
    let tansu = Tansu::start();
    tansu.create_topic("crafted", 2);
    let bootstrap = tansu.bootstrap();
    produce(
        &bootstrap,
        "crafted",
        &[
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
        ],
    );

    let (code, out, err) = kedge_audit(&["--bootstrap", &bootstrap, "--topic", "crafted"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(
            "device dev-a: 7 records, kedge-seq 1..=8, 2 missing, 1 duplicates, 0 backwards"
        ),
        "{out}"
    );
    assert!(out.contains("  missing: 4-5\n"), "{out}");
    assert!(out.contains("  duplicated: 8\n"), "{out}");
    assert!(
        out.contains(
            "device dev-b: 4 records, kedge-seq 1..=4, 0 missing, 0 duplicates, 1 backwards"
        ),
        "{out}"
    );
    assert!(out.contains("backwards: partition 1 offset "), "{out}");

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
