//! SIGKILL at random moments, over and over: a child process appends, seals and deletes under
//! load through `Queue` (as the commit stage and the producer do), logging each step only once
//! it is durable. After every kill the queue must open, hold every acknowledged record exactly
//! once and in order, and never bring back a deleted batch.
//!
//! The child is this same test binary, re-run with `KEDGE_CRASH_LOOP_DIR` set (see
//! [`child_process`]); without it that test does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kedge::kafka::batch::ProducerIdentity;
use kedge::queue::outbox::SealedBatch;
use kedge::queue::{Queue, Seal, Sync};
use kedge::record::Record;
use rand::Rng;

const ENV_DIR: &str = "KEDGE_CRASH_LOOP_DIR";
/// Kills the parent must survive.
const MIN_KILLS: usize = 50;
/// Wall-clock budget for the kill loop.
const BUDGET: Duration = Duration::from_secs(30);
const DEVICE: &str = "crash-loop";
const PRODUCER: ProducerIdentity = ProducerIdentity {
    producer_id: 1,
    producer_epoch: 0,
};

fn value(seq: u64) -> Bytes {
    Bytes::from(format!("record {seq} {}", "x".repeat(150)))
}

/// Appends one line with a single write: a kill leaves it whole or absent.
fn log(path: &Path, line: String) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open step log");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write step log");
}

/// The child: appends chunks (logging `A first end` once synced), seals the head of the journal
/// (`S batch first last` once the seal transaction is durable) and deletes the oldest batch
/// (`R batch first last` before, `D batch` once synced), until it is killed.
#[test]
fn child_process() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let steps = dir.join("steps.log");
    let q = Queue::open(&dir.join("queue"), 1 << 20, Sync::Fsync, DEVICE).expect("open");
    let mut rng = rand::rng();
    let mut next_seq = q.next_seq().expect("next seq");
    let mut next_batch = q.next_batch_no().expect("next batch");
    let mut kafka_seq = q
        .next_sequences()
        .expect("sequences")
        .get(&("t".to_owned(), 0))
        .copied()
        .unwrap_or(0);
    loop {
        let n = rng.random_range(1..200u64);
        let records: Vec<Record> = (next_seq..next_seq + n)
            .map(|s| Record {
                topic: "t".into(),
                key: None,
                value: value(s),
                headers: vec![],
                timestamp_ms: 0,
            })
            .collect();
        q.append(next_seq, &records).expect("append");
        q.sync().expect("sync");
        log(&steps, format!("A {next_seq} {}", next_seq + n));
        next_seq += n;
        if rng.random_bool(0.5) {
            let chunks = q.journal_head(rng.random_range(1..4)).expect("head");
            if let (Some(first), Some(last)) = (chunks.first(), chunks.last()) {
                let count = (last.end_seq - first.first_seq) as i32;
                let batch = SealedBatch {
                    batch_no: next_batch,
                    topic: "t".into(),
                    partition: 0,
                    producer: PRODUCER,
                    base_sequence: kafka_seq,
                    record_count: count,
                    first_seq: first.first_seq,
                    last_seq: last.end_seq - 1,
                    bytes: Bytes::from(vec![0u8; 64]),
                };
                q.seal(&Seal {
                    consumed_chunks: chunks.iter().map(|c| c.first_seq).collect(),
                    seq_floor: last.end_seq,
                    batches: vec![batch],
                    next_sequences: vec![(("t".into(), 0), kafka_seq + count)],
                    next_batch_no: next_batch + 1,
                    ..Seal::default()
                })
                .expect("seal");
                log(
                    &steps,
                    format!("S {next_batch} {} {}", first.first_seq, last.end_seq - 1),
                );
                next_batch += 1;
                kafka_seq += count;
            }
        }
        if rng.random_bool(0.3)
            && let Some(oldest) = q.sealed_batches().expect("batches").first()
        {
            // Before the removal: a kill right after it must not count its records as lost.
            log(
                &steps,
                format!(
                    "R {} {} {}",
                    oldest.batch_no, oldest.first_seq, oldest.last_seq
                ),
            );
            q.remove_batch(oldest.batch_no).expect("remove");
            q.sync().expect("sync");
            log(&steps, format!("D {}", oldest.batch_no));
        }
    }
}

/// What the steps log says must hold.
#[derive(Default)]
struct Expected {
    acked: Vec<(u64, u64)>,
    sealed: usize,
    removing: Vec<(u64, u64)>,
    deleted: BTreeSet<u64>,
}

fn read_steps(path: &Path) -> Expected {
    let mut e = Expected::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<u64> = line[2..]
            .split(' ')
            .map(|n| n.parse().expect("number"))
            .collect();
        match &line[..1] {
            "A" => e.acked.push((f[0], f[1])),
            "S" => e.sealed += 1,
            "R" => e.removing.push((f[1], f[2])),
            "D" => {
                e.deleted.insert(f[0]);
            }
            other => panic!("unknown step {other}"),
        }
    }
    e
}

/// Opens the queue after a kill and checks it against the steps log; returns acked records.
fn verify(dir: &Path, kill: usize) -> (u64, usize) {
    let q = Queue::open(&dir.join("queue"), 1 << 20, Sync::Fsync, DEVICE)
        .unwrap_or_else(|e| panic!("kill {kill}: the queue does not open: {e}"));
    let e = read_steps(&dir.join("steps.log"));
    let mut present: BTreeMap<u64, &'static str> = BTreeMap::new();
    let batches = q.sealed_batches().expect("batches");
    let mut last_batch_end = None;
    for b in &batches {
        assert!(
            !e.deleted.contains(&b.batch_no),
            "kill {kill}: deleted batch {} came back",
            b.batch_no
        );
        for s in b.first_seq..=b.last_seq {
            assert!(
                present.insert(s, "outbox").is_none(),
                "kill {kill}: seq {s} twice"
            );
        }
        assert!(
            last_batch_end < Some(b.first_seq),
            "kill {kill}: batches out of order"
        );
        last_batch_end = Some(b.last_seq);
    }
    let mut last_journal = None;
    for c in q.journal_head(usize::MAX).expect("journal") {
        for r in c.records {
            assert_eq!(
                r.record.value,
                value(r.seq),
                "kill {kill}: seq {} damaged",
                r.seq
            );
            assert!(
                last_journal < Some(r.seq),
                "kill {kill}: journal out of order"
            );
            last_journal = Some(r.seq);
            assert!(
                present.insert(r.seq, "journal").is_none(),
                "kill {kill}: seq {} in both the outbox and the journal",
                r.seq
            );
        }
    }
    assert_eq!(
        q.lost_records().expect("lost"),
        0,
        "kill {kill}: records lost"
    );
    let deleted: BTreeSet<u64> = e.removing.iter().flat_map(|&(f, l)| f..=l).collect();
    let mut acked = 0;
    for &(first, end) in &e.acked {
        for s in first..end {
            acked += 1;
            if !deleted.contains(&s) {
                assert!(
                    present.contains_key(&s),
                    "kill {kill}: acknowledged seq {s} is missing"
                );
            }
        }
    }
    (acked, e.sealed)
}

#[test]
fn sigkill_at_random_moments_never_loses_or_resurrects_a_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut kills = 0;
    let mut acked = 0;
    let mut sealed = 0;
    while kills < MIN_KILLS || (started.elapsed() < BUDGET && kills < 200) {
        assert!(
            started.elapsed() < BUDGET + Duration::from_secs(15),
            "only {kills} kills within the time budget"
        );
        let mut child = Command::new(&exe)
            .args(["crash_loop::child_process", "--exact", "--test-threads=1"])
            .env(ENV_DIR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        // Early kills land during open and recovery, later ones during appends and seals.
        let delay = if rng.random_bool(0.2) {
            rng.random_range(0..15)
        } else {
            rng.random_range(15..150)
        };
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let status = child.wait().expect("wait child");
        assert!(
            status.code().is_none(),
            "the child exited on its own ({status}) instead of being killed"
        );
        kills += 1;
        (acked, sealed) = verify(dir.path(), kills);
    }
    eprintln!(
        "crash_loop: {kills} SIGKILLs in {:.1?}; {acked} acknowledged records all present, \
         {sealed} seals",
        started.elapsed()
    );
    assert!(acked > 0, "the child never acknowledged anything");
}
