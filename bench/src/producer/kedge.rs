//! The kedge side: records from the records file are appended to a `kedge_queue::Queue` (on
//! tmpfs, `durability = "relaxed"`) in group commits as the commit stage makes them, and
//! `kedge::delivery::Producer` delivers them, wired as `kedge::pipeline` wires it, from a
//! config parsed by kedge itself (so every setting not named here is kedge's default).
//!
//! Three modes: `prefill` appends everything first, then times the producer draining the queue
//! (the producer alone); `pipelined` appends while the producer drains (the agent's shape, as
//! fast as the commit stage can go); `bounded` appends while the producer drains but lets at most
//! `bound` records wait unsealed in the journal (librdkafka's `queue.buffering.max.messages` is
//! 100,000 by default): the producer's cost when it is not working through a backlog.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kedge::config::Config;
use kedge::delivery::DeliveryStats;
use kedge::delivery::{Committed, Drain, Producer};
use kedge_queue::Queue;
use kedge_wire::record::Record;
use tokio::sync::watch;

use crate::support::child::{peak_rss_kib, reset_peak_rss, self_cpu};
use crate::support::records::{BLOCK_RECORDS, KEY_BYTES};

/// What the kedge side is told by the parent.
#[derive(Clone)]
pub struct KedgeArgs {
    pub bootstrap: String,
    pub topic: String,
    pub records_file: PathBuf,
    pub count: u64,
    pub value_bytes: usize,
    pub dir: PathBuf,
    pub linger_ms: u64,
    pub codec: String,
    pub batch_records: u32,
    pub batch_bytes: u64,
    pub mode: Mode,
}

/// How records reach the queue; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Prefill,
    Pipelined,
    Bounded(u64),
}

/// Runs the kedge side and prints its `RESULT` line.
pub fn run(args: KedgeArgs) {
    let toml = format!(
        r#"[agent]
device_id = "bench"
data_dir = "{dir}"

[mqtt]
host = "127.0.0.1"
[[mqtt.subscriptions]]
filter = "unused/#"

[routing]
default_topic = "{topic}"

[kafka]
bootstrap = ["{bootstrap}"]
linger = "{linger}ms"
compression = "{codec}"
batch_max_records = {records}
batch_max_bytes = "{bytes}B"

[queue]
durability = "relaxed"
"#,
        dir = args.dir.display(),
        topic = args.topic,
        bootstrap = args.bootstrap,
        linger = args.linger_ms,
        codec = args.codec,
        records = args.batch_records,
        bytes = args.batch_bytes,
    );
    let mut config = Config::parse(&toml, Path::new("producer-bench.toml"))
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    // kedge's own log, on stderr, when asked for (e.g. RUST_LOG=info).
    if let Ok(level) = std::env::var("RUST_LOG") {
        config.log.level = level;
        kedge::telemetry::init_logging(&config.log).expect("log setup");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(drive(&config, &args));
}

/// Reads the records file in blocks and appends group commits of `max_records` (and at most
/// `max_bytes` of values), as the commit stage does; `committed` is bumped after each.
fn feed(
    queue: &Queue,
    args: &KedgeArgs,
    max_records: usize,
    max_bytes: usize,
    committed: &watch::Sender<Committed>,
    sealed: &AtomicU64,
) {
    let entry = KEY_BYTES + args.value_bytes;
    let mut file = std::fs::File::open(&args.records_file).expect("open the records file");
    let mut seq = 0u64;
    let mut commit: Vec<Record> = Vec::with_capacity(max_records);
    let mut commit_bytes = 0;
    let topic = args.topic.clone();
    let flush = |commit: &mut Vec<Record>, seq: &mut u64| {
        if let Mode::Bounded(bound) = args.mode {
            while *seq - sealed.load(Ordering::Relaxed) + commit.len() as u64 > bound {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        queue.append(*seq, commit).expect("append");
        queue.sync().expect("sync");
        *seq += commit.len() as u64;
        let n = commit.len() as u64;
        commit.clear();
        // Read from the file just now: the linger starts here.
        committed.send_modify(|c| c.add(n, tokio::time::Instant::now()));
    };
    let mut left = args.count;
    while left > 0 {
        let n = (BLOCK_RECORDS as u64).min(left) as usize;
        let mut block = vec![0u8; n * entry];
        file.read_exact(&mut block).expect("read the records file");
        let block = Bytes::from(block);
        let now = now_ms();
        for i in 0..n {
            let at = i * entry;
            if commit.len() >= max_records || commit_bytes + args.value_bytes > max_bytes {
                flush(&mut commit, &mut seq);
                commit_bytes = 0;
            }
            commit.push(Record {
                topic: topic.clone(),
                key: Some(block.slice(at..at + KEY_BYTES)),
                value: block.slice(at + KEY_BYTES..at + entry),
                headers: Vec::new(),
                timestamp_ms: now,
            });
            commit_bytes += args.value_bytes;
        }
        left -= n as u64;
    }
    if !commit.is_empty() {
        flush(&mut commit, &mut seq);
    }
}

async fn drive(config: &Config, args: &KedgeArgs) {
    let dir = config.queue.effective_dir(&config.agent);
    let queue = Arc::new(
        tokio::task::block_in_place(|| {
            Queue::open(
                &dir,
                config.queue.cache.bytes(),
                kedge_queue::Sync::Relaxed,
                &config.agent.device_id,
            )
        })
        .expect("open the queue"),
    );
    let (committed_tx, committed_rx) = watch::channel(Committed::none());
    let (drain_tx, drain_rx) = watch::channel(Drain::Run);
    let max_records = config.queue.commit_max_records;
    let max_bytes = config.queue.commit_max_bytes.bytes() as usize;

    let stats = Arc::new(DeliveryStats::default());
    let cpu0 = self_cpu();
    let t0 = Instant::now();
    let mut append = None;
    let feeder = if args.mode == Mode::Prefill {
        tokio::task::block_in_place(|| {
            feed(
                &queue,
                args,
                max_records,
                max_bytes,
                &committed_tx,
                &stats.sealed,
            )
        });
        append = Some((t0.elapsed().as_secs_f64(), self_cpu(), peak_rss_kib()));
        None
    } else {
        let (q, tx, a, st) = (queue.clone(), committed_tx, args.clone(), stats.clone());
        Some(std::thread::spawn(move || {
            feed(&q, &a, max_records, max_bytes, &tx, &st.sealed);
            Instant::now()
        }))
    };
    let rss_reset = args.mode == Mode::Prefill && reset_peak_rss();
    let cpu1 = self_cpu();
    let t1 = Instant::now();

    let producer = producer(config, queue.clone(), stats.clone());
    let delivery = tokio::spawn(producer.run(committed_rx, drain_rx));
    let fed_at = match feeder {
        Some(f) => tokio::task::spawn_blocking(move || f.join().expect("feeder"))
            .await
            .expect("feeder join"),
        None => t1,
    };
    // Everything is in the journal: the producer stops once all of it is delivered.
    let _ = drain_tx.send(Drain::Deliver(
        tokio::time::Instant::now() + Duration::from_secs(3600),
    ));
    delivery.await.expect("producer task");
    let t2 = Instant::now();
    let cpu2 = self_cpu();
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let peak_drain = peak_rss_kib();
    let journal_empty = queue.journal_is_empty();
    let outbox_left = queue.sealed_batches().map_or(u64::MAX, |b| b.len() as u64);

    let cpu = |a: (f64, f64), b: (f64, f64)| (b.0 - a.0, b.1 - a.1);
    let (du, ds) = cpu(cpu1, cpu2);
    let mut line = format!(
        "RESULT mode={} delivered={delivered} journal_empty={journal_empty} outbox_left={outbox_left} \
         drain_s={:.4} drain_user_s={du:.4} drain_sys_s={ds:.4} drain_peak_rss_kib={peak_drain} \
         rss_reset={rss_reset} batches={} retries={} duplicates={}",
        match args.mode {
            Mode::Prefill => "prefill".to_owned(),
            Mode::Pipelined => "pipelined".to_owned(),
            Mode::Bounded(b) => format!("bounded-{b}"),
        },
        (t2 - t1).as_secs_f64(),
        stats.batches_delivered.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
        stats.duplicates_detected.load(Ordering::Relaxed),
    );
    let (tu, ts) = cpu(cpu0, cpu2);
    line.push_str(&format!(
        " total_s={:.4} total_user_s={tu:.4} total_sys_s={ts:.4} fed_s={:.4}",
        (t2 - t0).as_secs_f64(),
        (fed_at - t0).as_secs_f64()
    ));
    if let Some((secs, cpu_a, peak)) = append {
        let (au, asys) = cpu(cpu0, cpu_a);
        line.push_str(&format!(
            " append_s={secs:.4} append_user_s={au:.4} append_sys_s={asys:.4} append_peak_rss_kib={peak}"
        ));
    }
    println!("{line}");
}

/// The producer as `kedge::pipeline::run` builds it.
fn producer(
    config: &Config,
    queue: Arc<Queue>,
    stats: Arc<DeliveryStats>,
) -> Producer<kedge_wire::client::Cluster, Queue> {
    kedge::pipeline::producer(config, queue, stats).expect("producer over the queue")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
