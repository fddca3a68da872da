//! Appends and drains 1,000,000 records of 200 bytes through the queue, as the commit stage and
//! the producer do, and prints records/s, peak RSS, disk bytes written per payload byte and the
//! on-disk size at peak and after the drain (ARCHITECTURE.md §7). A program, not a timed test.
//!
//! Usage: `queue-bench [DIR] [RECORDS]`; DIR defaults to a temp dir (put it on the device's
//! real disk: tmpfs makes fsync free).

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use kedge_bench::child::peak_rss_kib;
use kedge_bench::proc_field;
use kedge_queue::outbox::SealedBatch;
use kedge_queue::{Queue, Seal, Sync, budget};
use kedge_wire::batch::{BatchCompression, ProducerIdentity, encode_batch};
use kedge_wire::record::Record;

/// Records per group commit: the default `queue.commit_max_records`.
const COMMIT: usize = 4096;
/// Records per seal: at least this many, in whole journal chunks.
const SEAL_RECORDS: usize = 4 * COMMIT;
/// Sealed batches kept before the oldest is "acknowledged": the producer's window.
const WINDOW: usize = 5;
const PAYLOAD: usize = 200;
/// The default `queue.cache`.
const CACHE: u64 = 8 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let temp;
    let dir: PathBuf = match args.get(1) {
        Some(d) => PathBuf::from(d),
        None => {
            temp = tempfile::tempdir().expect("temp dir");
            temp.path().to_path_buf()
        }
    };
    let total: usize = args
        .get(2)
        .map_or(1_000_000, |n| n.parse().expect("RECORDS is a number"));
    let qdir = dir.join("queue-bench");
    let _ = std::fs::remove_dir_all(&qdir);
    let q = Queue::open(&qdir, CACHE, Sync::Fsync, "bench").expect("open the queue");

    let io_start = write_bytes();
    let start = Instant::now();
    let mut seq = 0u64;
    let mut payload_bytes = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    while (seq as usize) < total {
        let n = COMMIT.min(total - seq as usize);
        let records: Vec<Record> = (0..n as u64)
            .map(|i| {
                let value = reading(seq + i, &mut rng);
                payload_bytes += value.len() as u64;
                Record {
                    topic: "readings".into(),
                    key: Some(Bytes::from(format!("dev-{}", (seq + i) % 50))),
                    value,
                    headers: vec![],
                    timestamp_ms: 1_700_000_000_000 + (seq + i) as i64,
                }
            })
            .collect();
        q.append(seq, &records).expect("append");
        q.sync().expect("sync");
        seq += n as u64;
    }
    let append_s = start.elapsed().as_secs_f64();
    let io_append = write_bytes() - io_start;
    let disk_peak = budget::dir_size(&qdir).unwrap_or(0);
    let live_peak = q.live_bytes();
    let rss_append = peak_rss_kib();
    if std::env::var_os("QUEUE_BENCH_LS").is_some() {
        for e in std::fs::read_dir(&qdir).expect("ls") {
            let e = e.expect("entry");
            eprintln!("{:?} {:?}", e.path(), e.metadata().map(|m| m.len()));
        }
    }

    let drain_start = Instant::now();
    let drained = drain(&q);
    let drain_s = drain_start.elapsed().as_secs_f64();
    let io_total = write_bytes() - io_start;
    q.sync().expect("sync");
    let disk_after = budget::dir_size(&qdir).unwrap_or(0);
    let rss = peak_rss_kib();
    drop(q);
    let _ = std::fs::remove_dir_all(&qdir);

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("queue-bench: {total} records of {PAYLOAD} bytes, commits of {COMMIT}, fsync on");
    println!(
        "append          {:>10.0} records/s  ({append_s:.2} s)",
        total as f64 / append_s
    );
    println!(
        "drain           {:>10.0} records/s  ({drain_s:.2} s, {drained} records sealed as zstd Kafka batches and deleted)",
        drained as f64 / drain_s
    );
    println!(
        "peak RSS        {:>10.1} MiB ({:.1} MiB by the end of the append)",
        rss as f64 / 1024.0,
        rss_append as f64 / 1024.0
    );
    println!(
        "write amp.      {:>10.3} disk bytes per payload byte while appending, {:.3} for append + drain",
        io_append as f64 / payload_bytes as f64,
        io_total as f64 / payload_bytes as f64
    );
    println!(
        "on disk         {:>10.1} MiB at peak ({:.1} MiB live chunks), {:.1} MiB after the drain (sled's file does not shrink; delivered segment files are deleted)",
        mib(disk_peak),
        mib(live_peak),
        mib(disk_after)
    );
    println!("payload         {:>10.1} MiB", mib(payload_bytes));
}

/// Seals the journal into zstd Kafka batches and deletes them, as the producer does when Kafka
/// acknowledges at once. Returns the records drained.
fn drain(q: &Queue) -> u64 {
    let producer = ProducerIdentity {
        producer_id: 1,
        producer_epoch: 0,
    };
    let mut next_batch = 0u64;
    let mut kafka_seq = 0i32;
    let mut in_flight = std::collections::VecDeque::new();
    let mut drained = 0u64;
    loop {
        let mut consumed = Vec::new();
        let mut records = Vec::new();
        let mut end = 0;
        for chunk in q.journal_iter() {
            let chunk = chunk.expect("journal chunk");
            consumed.push(chunk.first_seq);
            end = chunk.end_seq;
            records.extend(chunk.records);
            if records.len() >= SEAL_RECORDS {
                break;
            }
        }
        let Some(first) = records.first().map(|r| r.seq) else {
            break;
        };
        let count = records.len() as i32;
        let bytes = encode_batch(
            producer,
            kafka_seq,
            q.origin(),
            &records,
            BatchCompression::Zstd,
        )
        .expect("encode batch");
        q.seal(&Seal {
            consumed_chunks: consumed,
            seq_floor: end,
            batches: vec![SealedBatch {
                batch_no: next_batch,
                topic: "readings".into(),
                partition: 0,
                producer,
                base_sequence: kafka_seq,
                record_count: count,
                first_seq: first,
                last_seq: end - 1,
                bytes,
                legacy: false,
            }],
            next_sequences: vec![(("readings".into(), 0), kafka_seq + count)],
            next_batch_no: next_batch + 1,
            ..Seal::default()
        })
        .expect("seal");
        in_flight.push_back(next_batch);
        next_batch += 1;
        kafka_seq += count;
        drained += count as u64;
        if in_flight.len() >= WINDOW {
            q.remove_batch(in_flight.pop_front().expect("one in flight"))
                .expect("remove");
        }
    }
    for no in in_flight {
        q.remove_batch(no).expect("remove");
    }
    drained
}

/// A 200-byte sensor reading: JSON with changing numbers, compressible like real telemetry.
fn reading(n: u64, rng: &mut u64) -> Bytes {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let mut s = format!(
        r#"{{"n":{n},"device":"dev-{}","temp":{}.{},"hum":{},"volt":3.{},"status":"ok","note":""#,
        n % 50,
        15 + *rng % 20,
        *rng % 10,
        30 + (*rng >> 8) % 60,
        (*rng >> 16) % 1000
    );
    while s.len() < PAYLOAD - 2 {
        s.push(char::from(b'a' + ((*rng >> (s.len() % 50)) % 26) as u8));
    }
    s.push_str(r#""}"#);
    Bytes::from(s)
}

/// Bytes this process caused to be written to storage (`/proc/self/io` write_bytes).
fn write_bytes() -> u64 {
    proc_field(Path::new("/proc/self/io"), "write_bytes:")
}
