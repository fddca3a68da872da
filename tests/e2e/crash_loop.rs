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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kedge_queue::outbox::SealedBatch;
use kedge_queue::{Queue, Seal, Sync};
use kedge_wire::batch::ProducerIdentity;
use kedge_wire::record::Record;
use rand::Rng;

const ENV_DIR: &str = "KEDGE_CRASH_LOOP_DIR";
/// Where the child's queue is (the power-loss test puts it on its FUSE filesystem).
const ENV_QUEUE: &str = "KEDGE_CRASH_LOOP_QUEUE";
/// Kills the parent must survive.
const MIN_KILLS: usize = 50;
/// Wall-clock budget for the kill loop.
const BUDGET: Duration = Duration::from_secs(30);
const DEVICE: &str = "crash-loop";
const PRODUCER: ProducerIdentity = ProducerIdentity {
    producer_id: 1,
    producer_epoch: 0,
};

/// 150 hex digits drawn from `seq`: they compress only to about half, so that a large append
/// makes a chunk big enough for sled to store it as a blob file.
fn value(seq: u64) -> Bytes {
    let mut x = seq;
    let mut v = format!("record {seq} ");
    while v.len() < 160 {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    Bytes::from(v)
}

/// A sealed batch's bytes: mostly small, now and then as large and incompressible as a full
/// Kafka batch, which sled stores as a blob file of its own.
fn batch_bytes(rng: &mut impl Rng) -> Bytes {
    let mut bytes = vec![0u8; if rng.random_bool(0.2) { 200_000 } else { 64 }];
    rng.fill_bytes(&mut bytes);
    Bytes::from(bytes)
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
    let queue = std::env::var_os(ENV_QUEUE).expect("the queue directory");
    let q = Queue::open(Path::new(&queue), 1 << 20, Sync::Fsync, DEVICE).expect("open");
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
        // Now and then a chunk large enough to become a sled blob file, which sled never syncs.
        let n = if rng.random_bool(0.05) {
            2_000
        } else {
            rng.random_range(1..200u64)
        };
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
                    bytes: batch_bytes(&mut rng),
                    legacy: false,
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

/// Opens the queue after a kill and checks it against the steps log in `dir`; returns acked
/// records.
pub(crate) fn verify(dir: &Path, queue: &Path, kill: usize) -> (u64, usize) {
    let q = Queue::open(queue, 1 << 20, Sync::Fsync, DEVICE)
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

/// Starts [`child_process`] on the queue in `queue`, logging to `dir/steps.log`.
pub(crate) fn spawn_child(dir: &Path, queue: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash_loop::child_process", "--exact", "--test-threads=1"])
        .env(ENV_DIR, dir)
        .env(ENV_QUEUE, queue)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// SIGKILLs a child and checks it did not exit on its own first.
pub(crate) fn kill(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let status = child.wait().expect("wait child");
    assert!(
        status.code().is_none(),
        "the child exited on its own ({status}) instead of being killed"
    );
}

#[test]
fn sigkill_at_random_moments_never_loses_or_resurrects_a_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = dir.path().join("queue");
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
        let child = spawn_child(dir.path(), &queue);
        // Early kills land during open and recovery, later ones during appends and seals.
        let delay = if rng.random_bool(0.2) {
            rng.random_range(0..15)
        } else {
            rng.random_range(15..150)
        };
        std::thread::sleep(Duration::from_millis(delay));
        kill(child);
        kills += 1;
        (acked, sealed) = verify(dir.path(), &queue, kills);
    }
    eprintln!(
        "crash_loop: {kills} SIGKILLs in {:.1?}; {acked} acknowledged records all present, \
         {sealed} seals",
        started.elapsed()
    );
    assert!(acked > 0, "the child never acknowledged anything");
}
