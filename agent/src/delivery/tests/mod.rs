//! The delivery driver against a model of Kafka's idempotence rules (kafka-sim) and a real
//! queue, under paused time: one test per way the exactly-once promise could break, and a
//! property test over random event sequences.

mod fake;
mod property;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Committed, DeliveryStats, Drain, Producer, ProducerSettings, seal_due};
use crate::dispatcher::{Dispatcher, SealSettings};
use crate::telemetry::DeadLetter;
use fake::{Broker, FakeLink, Fate, Faulty};
use kedge_queue::{Queue, Sync};
use kedge_wire::batch::BatchCompression;
use kedge_wire::partitioner::StickyPartitioner;
use kedge_wire::record::Record;

/// The topic the records go to.
const TOPIC: &str = "t";
/// The dead-letter topic.
const DLQ: &str = "dlq";

/// How a test sets up delivery.
#[derive(Clone, Copy)]
struct Setup {
    partitions: i32,
    max_in_flight: usize,
    max_records: usize,
    compression: BatchCompression,
    seed: u64,
    value_len: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            partitions: 3,
            max_in_flight: 5,
            max_records: 20,
            compression: BatchCompression::Zstd,
            seed: 7,
            value_len: 20,
        }
    }
}

/// Delivery running over a fake broker and a real queue.
struct Run {
    setup: Setup,
    _dir: tempfile::TempDir,
    outbox: Arc<Faulty>,
    broker: Arc<Mutex<Broker>>,
    stats: Arc<DeliveryStats>,
    journal: watch::Sender<Committed>,
    drain: watch::Sender<Drain>,
    task: Option<tokio::task::JoinHandle<()>>,
    next_seq: u64,
}

impl Run {
    fn start(setup: Setup) -> Run {
        Run::start_with(setup, |_, _| {})
    }

    /// Starts with `prepare` applied to the broker and the queue first.
    fn start_with(setup: Setup, prepare: impl FnOnce(&mut Broker, &Queue)) -> Run {
        let dir = tempfile::tempdir().expect("temp dir");
        let queue = Queue::open(dir.path(), 1 << 20, Sync::Relaxed, "dev").expect("queue");
        let broker = Broker::new(TOPIC, setup.partitions, setup.seed, queue.origin());
        {
            let mut b = broker.lock().unwrap();
            b.model.create_topic(DLQ, 1).expect("dlq topic");
            prepare(&mut b, &queue);
        }
        let (journal, _) = watch::channel(Committed::none());
        let (drain, _) = watch::channel(Drain::Run);
        let mut run = Run {
            setup,
            _dir: dir,
            outbox: Arc::new(Faulty::new(queue)),
            broker,
            stats: Arc::new(DeliveryStats::default()),
            journal,
            drain,
            task: None,
            next_seq: 0,
        };
        run.spawn();
        run
    }

    fn spawn(&mut self) {
        let s = self.setup;
        let dispatcher = Dispatcher::new(
            SealSettings {
                origin: self.outbox.queue.origin().clone(),
                compression: s.compression,
                max_records: s.max_records,
                max_bytes: 1 << 20,
            },
            StickyPartitioner::new(rand::rngs::StdRng::seed_from_u64(s.seed)),
        );
        let settings = ProducerSettings {
            max_in_flight: s.max_in_flight,
            linger: Duration::from_millis(5),
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(1),
            metadata_refresh: Duration::from_secs(60),
            compression: s.compression,
            dead_letter_topic: DLQ.into(),
        };
        let producer = Producer::new(
            self.outbox.clone(),
            FakeLink::new(self.broker.clone()),
            dispatcher,
            settings,
            self.stats.clone(),
        )
        .expect("producer");
        let journal = self.journal.subscribe();
        let drain = self.drain.subscribe();
        self.task = Some(tokio::spawn(producer.run(journal, drain)));
    }

    /// The process dies (kill -9): requests in flight are abandoned, nothing is flushed.
    async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        // The next process connects afresh.
        self.broker.lock().unwrap().drop_connection();
    }

    /// Hands the queue over to a new producer, as a config reload does: the old one stops
    /// sealing and sending, and stops once its requests in flight have answered (or after
    /// `wait`).
    async fn handover(&mut self, wait: Duration) {
        self.drain
            .send_replace(Drain::Handover(Instant::now() + wait));
        let task = self.task.take().expect("running");
        task.await.expect("delivery task");
        self.drain.send_replace(Drain::Run);
        self.spawn();
    }

    /// Kills and starts delivery again over the same queue.
    async fn restart(&mut self) {
        self.kill().await;
        self.spawn();
    }

    /// Journals `n` records in one chunk, as a commit does.
    fn journal(&mut self, n: u64) {
        self.journal_to(TOPIC, n);
    }

    /// Journals `n` records for `topic` in one chunk.
    fn journal_to(&mut self, topic: &str, n: u64) {
        self.journal_at(topic, n, Instant::now());
    }

    /// Journals `n` records for `topic` in one chunk whose first event the commit stage took at
    /// `since`.
    fn journal_at(&mut self, topic: &str, n: u64, since: Instant) {
        let records: Vec<Record> = (self.next_seq..self.next_seq + n)
            .map(|seq| Record {
                topic: topic.into(),
                key: Some(Bytes::from(format!("k{}", seq % 7))),
                value: Bytes::from(format!("{seq:0width$}", width = self.setup.value_len)),
                headers: Vec::new(),
                timestamp_ms: 1_700_000_000_000 + seq as i64,
            })
            .collect();
        let q = &self.outbox.queue;
        q.append(self.next_seq, &records).expect("append");
        q.sync().expect("sync");
        self.next_seq += n;
        self.journal.send_modify(|c| c.add(n, since));
    }

    /// Lets delivery run for `d` of (paused) time.
    async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Asks delivery to stop once everything is delivered, and waits (an hour of paused time
    /// at most).
    async fn finish(&mut self) {
        self.drain
            .send_replace(Drain::Deliver(Instant::now() + Duration::from_secs(3600)));
        let task = self.task.take().expect("running");
        task.await.expect("delivery task");
        assert!(
            self.outbox.queue.sealed_metas().unwrap().is_empty()
                && self.outbox.queue.journal_is_empty(),
            "delivery stopped with records left: it gave up before the drain deadline"
        );
    }

    /// Every journaled record was appended exactly once (dead-lettered ones in the
    /// dead-letter topic), and each partition holds this queue's records in journal order.
    fn assert_exactly_once_in_order(&self) {
        let b = self.broker.lock().unwrap();
        let counts = b.seq_counts();
        let missing: Vec<u64> = (0..self.next_seq)
            .filter(|s| !counts.contains_key(s))
            .collect();
        let twice: Vec<(u64, u32)> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, n)| (*s, *n))
            .collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        assert!(twice.is_empty(), "written more than once: {twice:?}");
        assert_in_order(&b);
    }

    fn verify_found(&self) -> u64 {
        self.stats
            .verify
            .batches_found
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn stat(&self, c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Within each partition, this queue's records were appended in journal order.
fn assert_in_order(b: &Broker) {
    let mut last: std::collections::HashMap<&(String, i32), u64> = Default::default();
    for (tp, seqs) in &b.appended {
        for &s in seqs {
            if let Some(prev) = last.insert(tp, s) {
                assert!(prev < s, "{tp:?}: {s} appended after {prev}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn everything_arrives_once_without_faults() {
    let mut run = Run::start(Setup::default());
    for _ in 0..20 {
        run.journal(37);
        run.run_for(Duration::from_millis(3)).await;
    }
    run.finish().await;
    run.assert_exactly_once_in_order();
    assert_eq!(run.stat(&run.stats.delivered), run.next_seq);
    assert_eq!(run.verify_found(), 0);
}

/// Finding 1: a seal whose transaction committed but whose sync failed was taken for "not
/// sealed"; the retry sealed the next chunk under the same batch number and overwrote the
/// first batch: its records vanished and its sequences were reused.
#[tokio::test(start_paused = true)]
async fn a_seal_that_commits_but_fails_its_sync_is_kept_and_synced_before_sending() {
    let mut run = Run::start(Setup::default());
    run.run_for(Duration::from_millis(50)).await;
    run.outbox
        .seals_not_durable
        .store(1, std::sync::atomic::Ordering::Relaxed);
    run.outbox
        .syncs_failing
        .store(3, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..6 {
        run.journal(25);
        run.run_for(Duration::from_millis(20)).await;
    }
    run.finish().await;
    run.assert_exactly_once_in_order();
}

/// The verify step must find batches that landed although their answers were lost, also when
/// the broker no longer deduplicates (an expired producer id): a blind resend would write them
/// twice.
#[tokio::test(start_paused = true)]
async fn lost_answers_are_found_in_the_log_not_resent() {
    let mut run = Run::start(Setup::default());
    {
        let mut b = run.broker.lock().unwrap();
        b.forget_always = true;
        b.scripted = vec![Fate::Answer, Fate::LoseAnswer, Fate::LoseAnswer];
    }
    for _ in 0..5 {
        run.journal(30);
        run.run_for(Duration::from_millis(10)).await;
    }
    run.finish().await;
    run.assert_exactly_once_in_order();
    assert!(
        run.verify_found() >= 1,
        "the verify never found a landed batch"
    );
}

/// After a kill, every sealed batch may have been sent: it is looked for before it is resent.
#[tokio::test(start_paused = true)]
async fn a_restart_finds_what_landed_before_the_kill() {
    let mut run = Run::start(Setup::default());
    run.broker.lock().unwrap().forget_always = true;
    run.journal(100);
    run.run_for(Duration::from_millis(100)).await;
    // Answers go missing from here on; the batches land.
    run.broker.lock().unwrap().plan.lose_answer = 1.0;
    run.journal(100);
    run.run_for(Duration::from_millis(40)).await;
    run.broker.lock().unwrap().plan.lose_answer = 0.0;
    run.restart().await;
    run.finish().await;
    run.assert_exactly_once_in_order();
    assert!(run.verify_found() >= 1);
}

/// The gauges of a new producer count the batches it resumes before its first round.
#[tokio::test(start_paused = true)]
async fn resumed_batches_are_counted_as_unacknowledged_at_once() {
    let mut run = Run::start(Setup::default());
    run.broker.lock().unwrap().plan.lose_answer = 1.0;
    run.journal(100);
    run.run_for(Duration::from_millis(100)).await;
    run.kill().await;
    let sealed = run.outbox.queue.sealed_metas().unwrap();
    assert!(!sealed.is_empty(), "nothing was sealed before the kill");
    let records: u64 = sealed.iter().map(|m| m.record_count as u64).sum();
    // A new process starts with fresh figures; its task has not run yet, only its constructor.
    run.stats = Arc::new(DeliveryStats::default());
    run.spawn();
    assert_eq!(run.stat(&run.stats.kafka.records_unacknowledged), records);
    assert_eq!(
        run.stat(&run.stats.kafka.batches_unacknowledged),
        sealed.len() as u64
    );
    run.broker.lock().unwrap().plan.lose_answer = 0.0;
    run.finish().await;
    run.assert_exactly_once_in_order();
}

/// A config reload hands the queue to a new producer while records keep coming: handed over
/// between its requests, the new one resumes what was sealed, and nothing is lost or written
/// twice even by a broker that never deduplicates.
#[tokio::test(start_paused = true)]
async fn a_producer_handed_over_mid_stream_loses_and_duplicates_nothing() {
    let mut run = Run::start(Setup::default());
    run.broker.lock().unwrap().forget_always = true;
    for round in 0..12 {
        for _ in 0..4 {
            run.journal(23);
            run.run_for(Duration::from_millis(2)).await;
        }
        // The old producer is asked to stop while its requests are in flight.
        run.handover(Duration::from_secs(30)).await;
        if round % 3 == 0 {
            run.broker.lock().unwrap().plan.lose_answer = 0.2;
        } else {
            run.broker.lock().unwrap().plan.lose_answer = 0.0;
        }
    }
    run.broker.lock().unwrap().plan.lose_answer = 0.0;
    run.finish().await;
    run.assert_exactly_once_in_order();
    assert_eq!(run.stat(&run.stats.delivered), run.next_seq);
}

/// The linger counts from when the commit stage took the records: records that already waited
/// the commit window are sealed as soon as they are committed, not a whole linger later.
#[tokio::test(start_paused = true)]
async fn the_linger_counts_from_when_the_commit_stage_took_the_records() {
    let mut run = Run::start(Setup::default());
    // The topic's first records wait for its metadata.
    run.journal(10);
    run.run_for(Duration::from_millis(100)).await;
    assert_eq!(run.stat(&run.stats.sealed), 10);
    // Taken 5 ms ago (the commit window): the 5 ms linger is over.
    run.journal_at(TOPIC, 10, Instant::now() - Duration::from_millis(5));
    run.run_for(Duration::from_millis(1)).await;
    assert_eq!(run.stat(&run.stats.sealed), 20, "sealed at once");
    // Taken just now: they wait for company.
    run.journal_at(TOPIC, 10, Instant::now());
    run.run_for(Duration::from_millis(4)).await;
    assert_eq!(
        run.stat(&run.stats.sealed),
        20,
        "the chunk waits its linger"
    );
    run.run_for(Duration::from_millis(2)).await;
    assert_eq!(
        run.stat(&run.stats.sealed),
        30,
        "and is sealed when it is over"
    );
    run.finish().await;
    run.assert_exactly_once_in_order();
}

#[test]
fn a_commit_without_records_does_not_move_the_linger() {
    let t0 = Instant::now();
    let mut c = Committed::none();
    c.add(3, t0);
    c.add(0, t0 + Duration::from_millis(4));
    assert_eq!((c.records, c.since), (3, t0));
    c.add(2, t0 + Duration::from_millis(6));
    assert_eq!((c.records, c.since), (5, t0 + Duration::from_millis(6)));
}

#[test]
fn a_seal_is_due_a_linger_after_the_records_were_taken_never_in_the_past() {
    let now = Instant::now();
    let linger = Duration::from_millis(5);
    let ms = Duration::from_millis;
    assert_eq!(seal_due(now, linger, now), now + ms(5));
    assert_eq!(seal_due(now - ms(2), linger, now), now + ms(3));
    assert_eq!(seal_due(now - ms(5), linger, now), now);
    assert_eq!(seal_due(now - ms(40), linger, now), now);
    assert_eq!(seal_due(now, Duration::ZERO, now), now);
}

/// A handover waits for the answers to what is in flight, so that the next producer is not left
/// guessing: without lost answers, it finds nothing it must look for in the log.
#[tokio::test(start_paused = true)]
async fn a_handover_waits_for_the_answers_in_flight() {
    let mut run = Run::start(Setup::default());
    run.broker.lock().unwrap().forget_always = true;
    for _ in 0..5 {
        run.journal(50);
        // Sealed after the 5 ms linger, sent, and answered 1 to 20 ms later.
        run.run_for(Duration::from_millis(7)).await;
        run.handover(Duration::from_secs(30)).await;
    }
    run.finish().await;
    run.assert_exactly_once_in_order();
    assert_eq!(run.verify_found(), 0);
    let answers: u64 = run.broker.lock().unwrap().answers.values().sum();
    assert_eq!(
        run.stat(&run.stats.batches_sent),
        answers,
        "every batch sent was answered and recorded, none abandoned in flight"
    );
}

/// A seal that committed but could not be made durable must not be sent before a sync succeeds,
/// by the producer that sealed it nor by the one it hands the queue over to (a reload).
#[tokio::test(start_paused = true)]
async fn a_handover_does_not_send_a_seal_that_is_not_durable() {
    let mut run = Run::start(Setup::default());
    // Steady state first: the producer id is taken, floors are set, everything delivered.
    run.journal(20);
    run.run_for(Duration::from_millis(200)).await;
    let sent_before = run.stat(&run.stats.batches_sent);
    // Now the next seal commits but its sync fails, and so does every sync after it.
    run.outbox
        .seals_not_durable
        .store(1, std::sync::atomic::Ordering::Relaxed);
    run.outbox
        .syncs_failing
        .store(1_000_000, std::sync::atomic::Ordering::Relaxed);
    run.journal(20);
    run.run_for(Duration::from_millis(500)).await;
    assert_eq!(
        run.stat(&run.stats.batches_sent),
        sent_before,
        "the old producer holds the non-durable seal back (as designed)"
    );
    // A config reload with a changed [kafka] hands the queue over.
    run.handover(Duration::from_secs(30)).await;
    run.run_for(Duration::from_millis(500)).await;
    assert_eq!(
        run.stat(&run.stats.batches_sent),
        sent_before,
        "after the handover a batch whose seal was never made durable was sent"
    );
}

/// Finding 3: a batch stranded on a dead connection and applied late must not be overtaken by
/// a later batch sent on a new connection (with no producer state the broker appends both, in
/// the wrong order; a "covered" check would then take the stranded one for delivered).
#[tokio::test(start_paused = true)]
async fn a_batch_stranded_on_a_dead_connection_is_never_overtaken() {
    let mut run = Run::start(Setup {
        partitions: 1,
        max_records: 5,
        ..Setup::default()
    });
    {
        let mut b = run.broker.lock().unwrap();
        b.forget_always = true;
        b.scripted = vec![Fate::Answer, Fate::ApplyLate, Fate::Answer, Fate::Answer];
    }
    for _ in 0..8 {
        run.journal(5);
        run.run_for(Duration::from_millis(2)).await;
    }
    run.finish().await;
    run.assert_exactly_once_in_order();
}

/// Finding 5: ambiguous errors (REQUEST_TIMED_OUT after the write, NOT_LEADER, unknown) were
/// retried without a verify; with the broker's state gone the retry is a second copy.
#[tokio::test(start_paused = true)]
async fn ambiguous_errors_are_verified_before_anything_is_resent() {
    for code in [7, 20, 6, -1, 13, 56, 1234] {
        let mut run = Run::start(Setup::default());
        {
            let mut b = run.broker.lock().unwrap();
            b.forget_always = true;
            b.scripted = vec![Fate::Error(code, true), Fate::Error(code, true)];
        }
        run.journal(40);
        run.finish().await;
        run.assert_exactly_once_in_order();
        assert!(run.verify_found() >= 1, "code {code}: nothing was verified");
    }
}

/// Finding 4: full uncompressed batches over the broker's size limit were dead-lettered, then
/// refused there too and dropped. Now they are split until they fit.
#[tokio::test(start_paused = true)]
async fn batches_too_large_for_the_broker_are_split_not_dropped() {
    let mut run = Run::start_with(
        Setup {
            compression: BatchCompression::None,
            max_records: 64,
            value_len: 300,
            ..Setup::default()
        },
        |b, _| {
            b.model.set_max_message_bytes(TOPIC, 4_000).unwrap();
        },
    );
    run.journal(200);
    run.finish().await;
    run.assert_exactly_once_in_order();
    assert!(run.stat(&run.stats.batches_split) > 0);
    let dead: u64 = run
        .stats
        .discards
        .dead_lettered_by_reason()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(dead, 0, "nothing fits the dead-letter topic better");
}

/// A single record larger than the topic accepts goes to the dead-letter topic, counted, and
/// the records after it are delivered.
#[tokio::test(start_paused = true)]
async fn a_record_too_large_alone_is_dead_lettered_and_the_rest_delivered() {
    let mut run = Run::start_with(
        Setup {
            partitions: 1,
            compression: BatchCompression::None,
            max_records: 4,
            value_len: 20,
            ..Setup::default()
        },
        |b, _| {
            b.model.set_max_message_bytes(TOPIC, 400).unwrap();
        },
    );
    run.journal(3);
    // One record of 1,000 bytes among small ones.
    let big = Record {
        topic: TOPIC.into(),
        key: None,
        value: Bytes::from(vec![b'x'; 1_000]),
        headers: Vec::new(),
        timestamp_ms: 1,
    };
    run.outbox.queue.append(run.next_seq, &[big]).unwrap();
    run.next_seq += 1;
    run.journal(3);
    run.finish().await;
    run.assert_exactly_once_in_order();
    let dead = run
        .stats
        .discards
        .dead_lettered_by_reason()
        .into_iter()
        .find(|(r, _)| *r == DeadLetter::KafkaRefused.label())
        .map_or(0, |(_, n)| n);
    assert_eq!(dead, 1);
    let b = run.broker.lock().unwrap();
    assert!(
        b.appended
            .iter()
            .any(|(tp, s)| tp.0 == DLQ && s == &vec![3])
    );
}

/// Finding 4: authorization errors were permanent; the batch was dead-lettered. They are
/// retried until an operator grants the permission.
#[tokio::test(start_paused = true)]
async fn authorization_errors_are_retried_not_dead_lettered() {
    let mut run = Run::start(Setup::default());
    run.broker.lock().unwrap().scripted = vec![Fate::Error(29, false); 6];
    run.journal(30);
    run.finish().await;
    run.assert_exactly_once_in_order();
    let dead: u64 = run
        .stats
        .discards
        .dead_lettered_by_reason()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(dead, 0);
}

/// Finding 6: a throttled (empty) Fetch ended the scan, and the batches it had not reached
/// were taken for absent.
#[tokio::test(start_paused = true)]
async fn throttled_fetches_do_not_end_a_scan() {
    let mut run = Run::start(Setup {
        partitions: 1,
        max_records: 2,
        ..Setup::default()
    });
    {
        let mut b = run.broker.lock().unwrap();
        b.forget_always = true;
        b.plan.throttle = 0.6;
        b.scripted = vec![Fate::Answer, Fate::LoseAnswer];
    }
    for _ in 0..6 {
        run.journal(2);
        run.run_for(Duration::from_millis(1)).await;
    }
    run.finish().await;
    run.assert_exactly_once_in_order();
    assert!(run.verify_found() >= 1);
}

/// Finding 6: a retention gap was taken as proof of absence. A batch that landed and was
/// removed by retention before the scan cannot be found: it is resent, and counted as
/// unverifiable.
#[tokio::test(start_paused = true)]
async fn a_retention_gap_is_counted_as_unverifiable() {
    let mut run = Run::start(Setup {
        partitions: 1,
        ..Setup::default()
    });
    run.broker.lock().unwrap().forget_always = true;
    run.journal(10);
    run.run_for(Duration::from_millis(100)).await;
    run.kill().await;
    {
        let mut b = run.broker.lock().unwrap();
        b.plan.lose_answer = 1.0;
    }
    run.spawn();
    run.journal(10);
    run.run_for(Duration::from_millis(30)).await;
    run.kill().await;
    {
        let mut b = run.broker.lock().unwrap();
        b.plan.lose_answer = 0.0;
        let end = b.model.log_end_offset(TOPIC, 0).unwrap();
        b.model.delete_records_before(TOPIC, 0, end).unwrap();
    }
    run.spawn();
    run.finish().await;
    assert!(run.stat(&run.stats.verify.batches_unverifiable) >= 1);
}

/// Finding 7: other producers' gzip/snappy/lz4 batches and old-format messages in the
/// partition made every scan fail, and the partition stalled for good.
#[tokio::test(start_paused = true)]
async fn foreign_codecs_and_old_formats_in_the_log_do_not_stop_a_scan() {
    use kafka_sim::{Foreign, ForeignCodec};
    let mut run = Run::start_with(
        Setup {
            partitions: 1,
            ..Setup::default()
        },
        |b, _| {
            for f in [
                Foreign::Compressed {
                    codec: ForeignCodec::Gzip,
                },
                Foreign::LegacyMagic1,
                Foreign::Compressed {
                    codec: ForeignCodec::Lz4,
                },
                Foreign::Compressed {
                    codec: ForeignCodec::Snappy,
                },
            ] {
                b.model.append_foreign(TOPIC, 0, f).unwrap();
            }
            b.forget_always = true;
            b.scripted = vec![Fate::LoseAnswer];
        },
    );
    run.journal(10);
    run.finish().await;
    run.assert_exactly_once_in_order();
    assert!(run.verify_found() >= 1);
}

/// Finding 7: without READ on the topic the verify cannot run; the partition waits (it must
/// not resend blind) and says why, and goes on once the permission is there.
#[tokio::test(start_paused = true)]
async fn a_denied_read_stalls_the_partition_until_it_is_allowed() {
    let mut run = Run::start_with(
        Setup {
            partitions: 1,
            ..Setup::default()
        },
        |b, _| {
            b.model.deny_read(TOPIC, true).unwrap();
            b.forget_always = true;
            b.scripted = vec![Fate::LoseAnswer];
        },
    );
    run.journal(10);
    run.run_for(Duration::from_secs(20)).await;
    assert!(run.stat(&run.stats.verify.failed) >= 2);
    assert_eq!(run.stat(&run.stats.kafka.partitions_stalled), 1);
    assert_eq!(run.stat(&run.stats.delivered), 0);
    run.broker
        .lock()
        .unwrap()
        .model
        .deny_read(TOPIC, false)
        .unwrap();
    run.finish().await;
    run.assert_exactly_once_in_order();
}

/// Finding 8: a first chunk that needs more batches than the window (here max_in_flight = 1)
/// was blocked forever, without a log line.
#[tokio::test(start_paused = true)]
async fn a_chunk_larger_than_the_window_is_delivered() {
    let mut run = Run::start(Setup {
        partitions: 1,
        max_in_flight: 1,
        max_records: 10,
        ..Setup::default()
    });
    run.journal(95);
    run.finish().await;
    run.assert_exactly_once_in_order();
}

/// Finding 11: batches acknowledged behind a dead-lettered one stayed in the queue for good.
#[tokio::test(start_paused = true)]
async fn acknowledged_batches_behind_a_dead_lettered_one_leave_the_queue() {
    let mut run = Run::start(Setup {
        partitions: 1,
        max_records: 5,
        ..Setup::default()
    });
    run.run_for(Duration::from_millis(20)).await;
    {
        let mut b = run.broker.lock().unwrap();
        // No producer state: the broker takes the second batch although the first is refused.
        b.forget_always = true;
        b.scripted = vec![Fate::Error(17, false), Fate::Answer];
    }
    run.journal(10);
    run.finish().await;
    run.assert_exactly_once_in_order_allowing_dead_letters();
}

/// Finding 11: the dead-letter rebuild ignored the sequence wrap and failed for good.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_rebuild_cuts_at_the_sequence_wrap() {
    let mut run = Run::start_with(
        Setup {
            partitions: 1,
            max_records: 10,
            ..Setup::default()
        },
        |b, q| {
            // A producer id already held, so that no new one resets the sequences.
            q.set_producer(kedge_wire::batch::ProducerIdentity {
                producer_id: 999,
                producer_epoch: 0,
            })
            .unwrap();
            q.seal(&kedge_queue::Seal {
                next_sequences: vec![((DLQ.into(), 0), i32::MAX - 2)],
                ..kedge_queue::Seal::default()
            })
            .unwrap();
            b.scripted = vec![Fate::Error(17, false)];
        },
    );
    run.run_for(Duration::from_millis(5)).await;
    run.journal(8);
    run.finish().await;
    run.assert_exactly_once_in_order_allowing_dead_letters();
    let b = run.broker.lock().unwrap();
    let dlq_batches = b.appended.iter().filter(|(tp, _)| tp.0 == DLQ).count();
    assert_eq!(dlq_batches, 2, "cut at i32::MAX: {:?}", b.appended);
}

impl Run {
    /// As [`Run::assert_exactly_once_in_order`], where dead-lettered records may come before
    /// others of their partition in the dead-letter topic.
    fn assert_exactly_once_in_order_allowing_dead_letters(&self) {
        let b = self.broker.lock().unwrap();
        let counts = b.seq_counts();
        for s in 0..self.next_seq {
            assert_eq!(counts.get(&s), Some(&1), "kedge-seq {s}");
        }
    }
}

/// Finding 11: the maps of topics grew for the life of the process (plugins may route to ever
/// new topics). A topic nothing was sealed for in ten minutes, with nothing waiting, is
/// forgotten; one with records is asked for again.
#[tokio::test(start_paused = true)]
async fn topics_idle_for_ten_minutes_are_forgotten() {
    let mut run = Run::start_with(Setup::default(), |b, _| {
        b.model.create_topic("once", 1).unwrap();
    });
    run.journal_to("once", 5);
    run.journal(5);
    run.run_for(Duration::from_secs(1)).await;
    assert_eq!(run.stat(&run.stats.delivered), 10);
    // Metadata is refreshed every minute; "t" keeps getting records.
    for _ in 0..12 {
        run.journal(1);
        run.run_for(Duration::from_secs(60)).await;
    }
    let asked = run.broker.lock().unwrap().last_refresh.clone();
    assert!(asked.contains(&TOPIC.to_owned()), "{asked:?}");
    assert!(!asked.contains(&"once".to_owned()), "{asked:?}");
    run.journal_to("once", 1);
    run.finish().await;
    run.assert_exactly_once_in_order();
}

/// Finding 9: one stuck partition (its leader away for good) stopped all sealing: the journal
/// chunk at the head held records for it, and every partition behind waited. Now a partition
/// stuck for 30 s while others deliver has its records set aside, and only it waits.
#[tokio::test(start_paused = true)]
async fn a_stuck_partition_delays_only_itself() {
    let mut run = Run::start(Setup {
        max_records: 10,
        ..Setup::default()
    });
    run.journal(30);
    run.run_for(Duration::from_secs(1)).await;
    let stuck = (TOPIC.to_owned(), 0);
    run.broker.lock().unwrap().leaderless.insert(stuck.clone());
    let before = run.next_seq;
    for _ in 0..90 {
        run.journal(12);
        run.run_for(Duration::from_secs(1)).await;
    }
    {
        let b = run.broker.lock().unwrap();
        // Keys k0..k6 spread over the 3 partitions: the late records of the other two arrived.
        let late_elsewhere = b
            .appended
            .iter()
            .filter(|(tp, _)| *tp != stuck)
            .flat_map(|(_, seqs)| seqs)
            .filter(|s| **s >= run.next_seq - 200)
            .count();
        assert!(
            late_elsewhere > 0,
            "the other partitions waited for the stuck one"
        );
        assert!(
            !b.appended
                .iter()
                .any(|(tp, seqs)| *tp == stuck && seqs.iter().any(|s| *s >= before))
        );
    }
    assert!(run.stat(&run.stats.parked) > 0);
    assert_eq!(run.stat(&run.stats.kafka.partitions_stuck), 1);
    // The leader comes back: what was set aside goes first, in order, and nothing is lost.
    run.broker.lock().unwrap().leaderless.clear();
    run.journal(12);
    run.finish().await;
    run.assert_exactly_once_in_order();
}

/// Finding 9: a topic Kafka does not have (auto-creation off) stopped all sealing for good. Its
/// records go to the dead-letter topic with the reason after a minute, and the rest go on.
#[tokio::test(start_paused = true)]
async fn records_for_a_missing_topic_are_dead_lettered_after_a_minute() {
    let mut run = Run::start(Setup::default());
    run.journal_to("nowhere", 5);
    run.journal(10);
    run.run_for(Duration::from_secs(30)).await;
    assert_eq!(run.stat(&run.stats.delivered), 0, "a minute's grace first");
    run.run_for(Duration::from_secs(60)).await;
    run.finish().await;
    run.assert_exactly_once_in_order_allowing_dead_letters();
    let dead = run
        .stats
        .discards
        .dead_lettered_by_reason()
        .into_iter()
        .find(|(r, _)| *r == DeadLetter::TopicMissing.label())
        .map_or(0, |(_, n)| n);
    assert_eq!(dead, 5);
}

/// Finding 11: batches of a partition that no longer exists (the topic recreated with fewer
/// partitions) waited for a leader forever. They move to the partitions the topic has now.
#[tokio::test(start_paused = true)]
async fn batches_of_a_vanished_partition_move_to_the_partitions_there_are() {
    let mut run = Run::start(Setup {
        max_records: 5,
        ..Setup::default()
    });
    let gone = (TOPIC.to_owned(), 2);
    run.broker.lock().unwrap().leaderless.insert(gone.clone());
    run.journal(40);
    run.run_for(Duration::from_secs(2)).await;
    {
        let mut b = run.broker.lock().unwrap();
        b.partitions_reported.insert(TOPIC.to_owned(), 2);
    }
    run.run_for(Duration::from_secs(120)).await;
    run.journal(10);
    run.finish().await;
    run.assert_exactly_once_in_order_allowing_dead_letters();
    let b = run.broker.lock().unwrap();
    assert!(b.appended.iter().all(|(tp, _)| *tp != gone));
}
