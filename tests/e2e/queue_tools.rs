//! `kedge queue stats | inspect | export` through the real binary, and the clear error while
//! another process holds the queue.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use kedge_queue::{Queue, Sync};
use kedge_wire::record::Record;

use crate::support::run;

fn config(data_dir: &std::path::Path) -> String {
    format!(
        r#"[agent]
device_id = "tools-dev"
data_dir = "{}"

[mqtt]
subscriptions = [{{ filter = "sensors/#" }}]

[kafka]
bootstrap = ["127.0.0.1:9"]
"#,
        data_dir.display()
    )
}

fn kedge(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kedge"));
    c.args(args);
    run(c, Duration::from_secs(30))
}

#[test]
fn queue_tools_read_a_stopped_queue_and_refuse_a_held_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("kedge.toml");
    std::fs::write(&cfg, config(&data)).expect("write config");
    let cfg = cfg.to_str().expect("UTF-8");

    let q = Queue::open(&data.join("queue"), 1 << 20, Sync::Fsync, "tools-dev").expect("open");
    let records: Vec<Record> = (0..10)
        .map(|i| Record {
            topic: "readings".into(),
            key: None,
            value: Bytes::from(format!("reading {i}")),
            headers: vec![],
            timestamp_ms: 0,
        })
        .collect();
    q.append(0, &records).expect("append");
    q.sync().expect("sync");

    // Held open (as by a running kedge): a clear error naming the holder.
    let held = kedge(&["queue", "stats", "--config", cfg]);
    assert_eq!(held.status.code(), Some(2));
    let err = String::from_utf8_lossy(&held.stderr);
    let want = format!("in use by a running kedge (pid {})", std::process::id());
    assert!(err.contains(&want), "{err}");
    drop(q);

    let stats = kedge(&["queue", "stats", "--config", cfg]);
    let out = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stats.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    assert!(out.contains("10 records not yet sealed"), "{out}");
    assert!(out.contains("readings"), "{out}");

    let inspect = kedge(&["queue", "inspect", "--config", cfg]);
    assert!(inspect.status.success());
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("seq 0..=9  10 records"));

    let export = kedge(&["queue", "export", "--format", "jsonl", "--config", cfg]);
    assert!(export.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 10);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["kedge_seq"].as_u64(), Some(i as u64));
        assert_eq!(l["topic"], "readings");
    }
}
