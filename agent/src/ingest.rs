//! The ingest stage: what the source received goes through the plugins and the router, is
//! appended as one journal chunk per group commit and made durable, and only then are the
//! source's acknowledgements released, in arrival order (ARCHITECTURE.md §2, steps 2 to 4).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::delivery::Committed;
use crate::route::{Event, Router};
use crate::telemetry::{DeadLetter, Dropped, add};
use kedge_plugin_host::chain::{Applied, Chain};
use kedge_queue::budget::{Budget, FullPolicy, Room};
use kedge_queue::chunk;
use kedge_queue::{Queue, QueueError};
use kedge_wire::record::{HEADER_ERROR, Header, Record};

pub use crate::source::Incoming;
pub use stats::IngestStats;

pub(crate) mod stats;

/// What turns events into records: the plugin chain, then routing.
pub struct Stages {
    /// The plugins, in config order (possibly none).
    pub chain: Chain,
    /// Topic and key per event.
    pub router: Router,
    /// Enforces the plugins' call deadlines while it lives, so it lives as long as the chain.
    pub _ticker: Option<kedge_plugin_host::engine::Ticker>,
}

/// What a config reload hands the commit stage: it takes them between two commits, so that no
/// event is half through the old stages and half through the new.
pub struct Reconfigure {
    /// The new plugins and routing.
    pub stages: Stages,
    /// The new limits.
    pub settings: CommitSettings,
}

/// Group commit limits.
#[derive(Debug, Clone)]
pub struct CommitSettings {
    /// How long to gather events after the first one before committing, when busy
    /// ([`gather_window`]).
    pub window: Duration,
    /// Commit early at this many events.
    pub max_records: usize,
    /// Commit early at this many payload bytes.
    pub max_bytes: usize,
    /// Disk budget and what to do when the queue is full.
    pub budget: Budget,
}

/// Why the commit stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitEnd {
    /// The source closed and everything received is durable.
    Drained,
    /// Asked to stop while a plugin held the pipeline or the queue was full: the events of the
    /// batch in hand stay unacknowledged, and the source's broker redelivers them.
    Abandoned,
    /// The database failed an I/O (ENOSPC, EIO): it refuses every later write until it is
    /// reopened (ARCHITECTURE.md §8), so the pipeline must reopen the queue.
    QueuePoisoned {
        /// First kedge-seq never acknowledged to the source: chunks from here on may have
        /// reached the disk anyway, and the source redelivers their events.
        unacked_from: Option<u64>,
    },
}

/// Whether `e` leaves the database handle (or the data file's page cache) unusable until
/// reopened.
fn poisons(e: &QueueError) -> bool {
    match e {
        QueueError::Db { source, .. } => source.is_io(),
        QueueError::Io { .. } => true,
        _ => false,
    }
}

/// The commit stage's channels.
pub struct Links<A> {
    /// Events from the source; closed when the source stops.
    pub rx: mpsc::Receiver<Incoming<A>>,
    /// Acknowledgements released to the source, in arrival order.
    pub acks: mpsc::UnboundedSender<Vec<A>>,
    /// Bumped after every commit.
    pub committed: watch::Sender<Committed>,
    /// Turns true when the agent stops: a batch that cannot be committed (held by a plugin,
    /// or waiting for room in a full queue) is then given up rather than waited for.
    pub stop: watch::Receiver<bool>,
    /// New stages and limits from a config reload.
    pub reconfigure: mpsc::Receiver<Reconfigure>,
}

/// Runs until `rx` closes and everything received is durable, until asked to stop while it
/// cannot commit, or until the database needs a reopen.
pub async fn run<A: Send + 'static>(
    queue: Arc<Queue>,
    mut stages: Stages,
    mut settings: CommitSettings,
    links: Links<A>,
    stats: Arc<IngestStats>,
) -> CommitEnd {
    let Links {
        mut rx,
        acks,
        committed,
        mut stop,
        mut reconfigure,
    } = links;
    let mut next_seq = match tokio::task::block_in_place(|| queue.next_seq()) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the journal's sequence; nothing will be acknowledged");
            return CommitEnd::QueuePoisoned { unacked_from: None };
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut last = Last::default();
    loop {
        let next_tick = stages.chain.next_tick();
        let first = tokio::select! {
            // Before events: a reload applies to everything not yet gathered.
            biased;
            Some(new) = reconfigure.recv() => {
                // The old chain (and its plugins' state) goes here; the new one starts empty.
                stages = new.stages;
                settings = new.settings;
                tracing::info!(plugins = stages.chain.stats().len(), "reloaded plugins, routing and limits are in use");
                continue;
            }
            first = rx.recv() => match first {
                Some(first) => Some(first),
                None => break,
            },
            _ = sleep_until_some(next_tick), if next_tick.is_some() => None,
        };
        let taken = Instant::now();
        let (events, tokens, changes) = match first {
            Some(first) => {
                let batch = gather(first, &mut rx, &settings, &last).await;
                last.items = batch.len();
                let mut events = Vec::with_capacity(batch.len());
                let mut tokens = Vec::with_capacity(batch.len());
                let mut changes = Vec::new();
                for i in batch {
                    events.extend(i.event);
                    tokens.extend(i.ack);
                    changes.extend(i.change);
                }
                let n = events.len();
                let mut control = Control {
                    stop: &mut stop,
                    reconfigure: &mut reconfigure,
                    settings: &mut settings,
                };
                match transform(&mut stages, events, &mut control).await {
                    Some(events) => (events, tokens, changes),
                    None => return abandon(n, "a plugin holds the pipeline"),
                }
            }
            None => {
                let router = &stages.router;
                let topic_for = |s: &str| router.topic_for(s).map(str::to_owned);
                let events =
                    tokio::task::block_in_place(|| stages.chain.tick(&topic_for, now_ms()));
                (events, Vec::new(), Vec::new())
            }
        };
        if events.is_empty() && tokens.is_empty() && changes.is_empty() {
            continue;
        }
        let mut records = Vec::with_capacity(events.len());
        let mut dead = [0; DeadLetter::ALL.len()];
        let now = now_ms();
        for event in events {
            let (record, dead_lettered) = stages.router.route(event, now);
            if let Some(why) = dead_lettered {
                dead[why as usize] += 1;
                tracing::debug!(topic = %record.topic, reason = why.label(), "record dead-lettered");
            }
            records.push(record);
        }
        if records.is_empty() && changes.is_empty() {
            // Redeliveries, or plugins dropped every event: nothing to make durable before
            // acknowledging (what came before is already).
            if acks.send(tokens).is_err() {
                tracing::debug!("source closed before acknowledgements could be released");
            }
            continue;
        }
        // Wait for room: the events are not acknowledged meanwhile, so the source's broker
        // keeps them (backpressure), unless the policy drops records to make room.
        let mut full_since: Option<Instant> = None;
        while !records.is_empty() {
            let room =
                tokio::task::block_in_place(|| queue.make_room(&settings.budget, &mut records));
            if let Ok(room) = &room {
                count_drops(&stats, settings.budget.policy, room);
            }
            match room {
                Ok(room) if room.admitted => {
                    for (topic, n) in &room.dropped {
                        tracing::warn!(%topic, records = n, "queue full: records dropped");
                    }
                    break;
                }
                Ok(room) => {
                    if full_since.is_none() {
                        full_since = Some(Instant::now());
                        tracing::warn!(
                            live_bytes = queue.live_bytes(),
                            max_bytes = settings.budget.max_bytes,
                            min_free = settings.budget.min_free,
                            dropped = ?room.dropped,
                            "queue full: holding acknowledgements until Kafka drains it"
                        );
                    }
                }
                Err(e) if poisons(&e) => {
                    tracing::error!(error = %e, "queue I/O failed while making room; reopening it");
                    return CommitEnd::QueuePoisoned {
                        unacked_from: Some(next_seq),
                    };
                }
                Err(e) => tracing::error!(error = %e, "cannot make room in the queue"),
            }
            match wait(
                &mut stop,
                &mut reconfigure,
                Instant::now() + backoff.next_delay(),
            )
            .await
            {
                Woken::Stop => return abandon(records.len(), "the queue is full"),
                // A reload that raises the queue's limits is what a full queue may be waiting
                // for: the records in hand keep their routing, and get the new budget.
                Woken::Reload(new) => {
                    stages = new.stages;
                    settings = new.settings;
                    tracing::info!(
                        max_bytes = settings.budget.max_bytes,
                        "reloaded limits apply to the records waiting for room"
                    );
                }
                Woken::Due => {}
            }
        }
        if let Some(since) = full_since {
            tracing::info!(waited = ?since.elapsed(), "queue has room again");
        }
        backoff.reset();
        // Retry until the commit is durable: the events are not acknowledged meanwhile, so
        // the source's broker keeps them, and the source stops receiving once its window fills.
        // ENOSPC lands here too when the budget was not enough: same treatment. Changes
        // without records (redeliveries' releases, a new session, events the plugins or a
        // full queue dropped) are committed all the same: they must be durable before the acks.
        if !records.is_empty() || !changes.is_empty() {
            last.synced = Some(Instant::now());
        }
        while !records.is_empty() || !changes.is_empty() {
            let started = Instant::now();
            let result = tokio::task::block_in_place(|| {
                queue.append_with(next_seq, &records, &changes)?;
                queue.sync_timed()
            });
            match result {
                Ok(times) => {
                    stats.commit_latency.observe(started.elapsed());
                    stats.fsync_latency.observe(times.fsync);
                    break;
                }
                Err(e) if poisons(&e) => {
                    // Nothing of this batch is acknowledged: the source's broker redelivers it
                    // after the reopen.
                    tracing::error!(error = %e, "journal commit failed on I/O (disk full?); the queue will be reopened, events stay unacknowledged");
                    return CommitEnd::QueuePoisoned {
                        unacked_from: Some(next_seq),
                    };
                }
                Err(QueueError::Codec(why))
                    if records
                        .iter()
                        .any(|r| chunk::encode(0, std::slice::from_ref(r)).is_err()) =>
                {
                    // Encoding is deterministic: the same records would fail every retry. The
                    // router dead-letters whatever `Record::defect` finds, so reaching here is a
                    // kedge bug; still, set the culprits aside rather than wedge the pipeline.
                    let n = set_aside_unencodable(&mut records, &stages.router, &why);
                    dead[DeadLetter::Unencodable as usize] += n;
                    tracing::error!(error = %why, records = n, "journal chunk could not be encoded; the records it could not hold were dead-lettered (please report this)");
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!(error = %e, retry_in = ?delay, "journal commit failed; events stay unacknowledged");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        backoff.reset();
        let n = records.len() as u64;
        next_seq += n;
        add(&stats.journaled, n);
        for why in DeadLetter::ALL {
            stats.discards.dead_lettered(why, dead[why as usize]);
        }
        stats.routed(topic_counts(&records));
        add(&stats.commits, 1);
        // A commit of receipts alone (QoS 2 releases) gives delivery nothing to seal.
        committed.send_if_modified(|c| {
            c.add(n, taken);
            n > 0
        });
        if !tokens.is_empty() && acks.send(tokens).is_err() {
            // The source is gone; its broker redelivers what was not acknowledged.
            tracing::debug!("source closed before acknowledgements could be released");
        }
    }
    CommitEnd::Drained
}

/// How long to gather after the first event, like a database's group commit. Busy (events
/// queued behind the first, or the last batch had more than one item and its sync began less
/// than a window ago): the whole window, so that many events share each sync. Idle: at once,
/// since company is not coming and holding the event would only add latency; but never sooner
/// than a window after the last sync began, so that syncs stay at most one per window however
/// the events are spaced.
fn gather_window(
    waiting: bool,
    last_items: usize,
    since_last_sync: Duration,
    window: Duration,
) -> Duration {
    if waiting || (last_items > 1 && since_last_sync < window) {
        window
    } else {
        window.saturating_sub(since_last_sync)
    }
}

/// Gathers events after `first` until the commit window closes or a limit is reached; what is
/// already queued is always taken, up to the limits.
async fn gather<A>(
    first: Incoming<A>,
    rx: &mut mpsc::Receiver<Incoming<A>>,
    settings: &CommitSettings,
    last: &Last,
) -> Vec<Incoming<A>> {
    let size = |i: &Incoming<A>| i.event.as_ref().map_or(0, |e| e.payload.len());
    let mut bytes = size(&first);
    let mut batch = vec![first];
    let since = last.synced.map_or(Duration::MAX, |t| t.elapsed());
    let window = gather_window(!rx.is_empty(), last.items, since, settings.window);
    if window.is_zero() {
        while batch.len() < settings.max_records && bytes < settings.max_bytes {
            let Ok(i) = rx.try_recv() else { break };
            bytes += size(&i);
            batch.push(i);
        }
        return batch;
    }
    let deadline = kedge_base::deadline::after(window);
    while batch.len() < settings.max_records && bytes < settings.max_bytes {
        tokio::select! {
            next = rx.recv() => match next {
                Some(i) => {
                    bytes += size(&i);
                    batch.push(i);
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    batch
}

/// What the last commits tell about the load.
#[derive(Default)]
struct Last {
    /// Items (events, redeliveries, releases) of the last batch gathered.
    items: usize,
    /// When the last sync began (of a batch or of a plugin's tick).
    synced: Option<Instant>,
}

/// What may interrupt a batch that a plugin holds: a stop, or a reload that replaces the
/// plugins.
struct Control<'a> {
    stop: &'a mut watch::Receiver<bool>,
    reconfigure: &'a mut mpsc::Receiver<Reconfigure>,
    settings: &'a mut CommitSettings,
}

/// Runs the plugin chain. While a plugin holds the pipeline, waits and offers the batch again:
/// its events stay unacknowledged, so the source's broker keeps them. A reload meanwhile takes
/// effect at once, and the batch goes to the new chain. `None` when asked to stop meanwhile.
async fn transform(
    stages: &mut Stages,
    events: Vec<Event>,
    control: &mut Control<'_>,
) -> Option<Vec<Event>> {
    let mut held_since: Option<Instant> = None;
    loop {
        if stages.chain.is_empty() {
            return Some(events);
        }
        let router = &stages.router;
        let topic_for = |s: &str| router.topic_for(s).map(str::to_owned);
        let chain = &mut stages.chain;
        match tokio::task::block_in_place(|| chain.apply(&events, &topic_for, now_ms())) {
            Applied::Events(out) => {
                if let Some(since) = held_since {
                    tracing::info!(waited = ?since.elapsed(), "plugin works again; pipeline resumed");
                }
                return Some(out);
            }
            Applied::Held { plugin, until } => {
                if held_since.is_none() {
                    held_since = Some(Instant::now());
                    tracing::error!(%plugin, "plugin keeps failing and on_failure = \"backpressure\": holding the pipeline, nothing is acknowledged until it works again");
                }
                match wait(control.stop, control.reconfigure, Instant::from_std(until)).await {
                    Woken::Stop => return None,
                    Woken::Reload(new) => {
                        *stages = new.stages;
                        *control.settings = new.settings;
                        tracing::info!(waited = ?held_since.map(|s| s.elapsed()), "reloaded plugins replace the one holding the pipeline; the batch goes to them");
                    }
                    Woken::Due => {}
                }
            }
        }
    }
}

/// What ended a wait of the commit stage.
enum Woken {
    /// The agent stops.
    Stop,
    /// A config reload arrived.
    Reload(Box<Reconfigure>),
    /// The time waited for came.
    Due,
}

/// Waits until `at`, unless the agent stops or a reload arrives first.
async fn wait(
    stop: &mut watch::Receiver<bool>,
    reconfigure: &mut mpsc::Receiver<Reconfigure>,
    at: Instant,
) -> Woken {
    tokio::select! {
        // First, so that a stop already asked for wins over a deadline already passed.
        biased;
        // An error means the pipeline is gone: stop as well.
        _ = stop.wait_for(|s| *s) => Woken::Stop,
        Some(new) = reconfigure.recv() => Woken::Reload(Box::new(new)),
        _ = tokio::time::sleep_until(at) => Woken::Due,
    }
}

/// Ends the stage with a batch that could not be committed: its events are not acknowledged.
fn abandon(events: usize, why: &str) -> CommitEnd {
    tracing::warn!(
        events,
        "stopping while {why}: the batch in hand stays unacknowledged, the source's broker redelivers it"
    );
    CommitEnd::Abandoned
}

async fn sleep_until_some(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Replaces every record of `records` that cannot be encoded into a journal chunk on its own
/// by a dead-letter record holding its payload and `why`; drops it if even that cannot be
/// encoded. Returns how many were set aside.
fn set_aside_unencodable(records: &mut Vec<Record>, router: &Router, why: &str) -> u64 {
    let encodes = |r: &Record| chunk::encode(0, std::slice::from_ref(r)).is_ok();
    let mut set_aside = 0;
    records.retain_mut(|r| {
        if encodes(r) {
            return true;
        }
        set_aside += 1;
        *r = Record {
            topic: router.dead_letter_topic().to_owned(),
            key: None,
            value: std::mem::take(&mut r.value),
            headers: vec![Header {
                name: HEADER_ERROR.to_owned(),
                value: Bytes::from(format!("kedge could not encode this record: {why}")),
            }],
            timestamp_ms: now_ms(),
        };
        let kept = encodes(r);
        if !kept {
            tracing::error!(
                bytes = r.value.len(),
                "record dropped: not even its dead-letter form can be encoded"
            );
        }
        kept
    });
    set_aside
}

/// Counts what the full-queue policy dropped to make room (or instead of committing).
fn count_drops(stats: &IngestStats, policy: FullPolicy, room: &Room) {
    let why = match policy {
        FullPolicy::DropOldest => Dropped::DropOldest,
        FullPolicy::DropNewest => Dropped::DropNewest,
        FullPolicy::Backpressure => return,
    };
    stats.discards.dropped(why, room.dropped.values().sum());
}

/// Records per Kafka topic in one commit; a commit names a handful of topics, so a linear
/// search beats hashing every record's topic.
fn topic_counts(records: &[Record]) -> Vec<(&str, u64)> {
    let mut counts: Vec<(&str, u64)> = Vec::new();
    for r in records {
        match counts.iter_mut().find(|(t, _)| *t == r.topic) {
            Some((_, n)) => *n += 1,
            None => counts.push((&r.topic, 1)),
        }
    }
    counts
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: usize) -> Record {
        Record {
            topic: "t".into(),
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"payload"),
            headers: vec![
                Header {
                    name: String::new(),
                    value: Bytes::new(),
                };
                headers
            ],
            timestamp_ms: 1,
        }
    }

    #[test]
    fn records_a_chunk_cannot_hold_are_set_aside_and_the_rest_kept() {
        let router = Router::new(Vec::new(), None, "dlq".into());
        let mut records = vec![record(1), record(70_000), record(2)];
        assert!(
            chunk::encode(0, &records).is_err(),
            "the test needs a failing chunk"
        );
        assert_eq!(
            set_aside_unencodable(&mut records, &router, "too many headers"),
            1
        );
        assert_eq!(records.len(), 3);
        assert_eq!(records[0], record(1));
        assert_eq!(records[2], record(2));
        assert_eq!(records[1].topic, "dlq");
        assert_eq!(records[1].value, Bytes::from_static(b"payload"));
        assert_eq!(records[1].headers[0].name, HEADER_ERROR);
        chunk::encode(0, &records).expect("the chunk encodes now");
    }

    #[test]
    fn the_commit_stage_gathers_only_when_busy() {
        let ms = Duration::from_millis;
        let w = ms(5);
        // Idle: nothing queued behind the first event, and the last batch was a lone one (or
        // none, or a busy one whose sync began a window ago or more).
        assert_eq!(gather_window(false, 0, Duration::MAX, w), Duration::ZERO);
        assert_eq!(gather_window(false, 1, ms(5), w), Duration::ZERO);
        assert_eq!(gather_window(false, 1, ms(900), w), Duration::ZERO);
        assert_eq!(gather_window(false, 2, ms(5), w), Duration::ZERO);
        assert_eq!(gather_window(false, 4096, Duration::MAX, w), Duration::ZERO);
        // Idle, but the last sync began less than a window ago: only the rest of the window.
        assert_eq!(gather_window(false, 1, ms(2), w), ms(3));
        assert_eq!(gather_window(false, 1, Duration::ZERO, w), w);
        // Busy: events queued behind it, or the last batch had company and synced just now.
        assert_eq!(gather_window(true, 0, Duration::MAX, w), w);
        assert_eq!(gather_window(true, 1, ms(900), w), w);
        assert_eq!(gather_window(false, 2, ms(4), w), w);
        assert_eq!(gather_window(false, 4096, Duration::ZERO, w), w);
    }

    /// A commit stage with no plugins and a generous budget, fed by `tx`; reports commits on
    /// the returned receiver.
    fn commit_stage(
        window: Duration,
    ) -> (
        mpsc::Sender<Incoming<u32>>,
        watch::Receiver<Committed>,
        tokio::task::JoinHandle<CommitEnd>,
    ) {
        use kedge_plugin_host::chain::Chain;
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(
            Queue::open(dir.path(), 1 << 20, kedge_queue::Sync::Relaxed, "dev").expect("queue"),
        );
        let (tx, rx) = mpsc::channel(16);
        let (acks, acks_rx) = mpsc::unbounded_channel::<Vec<u32>>();
        let (committed, committed_rx) = watch::channel(Committed::none());
        let (stop_tx, stop) = watch::channel(false);
        let (reconfigure_tx, reconfigure) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            // Kept alive while the stage runs.
            let _alive = (dir, acks_rx, stop_tx, reconfigure_tx);
            run(
                queue,
                Stages {
                    chain: Chain::new(Vec::new(), "mqtt".into(), "dlq".into()),
                    router: Router::new(Vec::new(), Some("t".into()), "dlq".into()),
                    _ticker: None,
                },
                CommitSettings {
                    window,
                    max_records: 1000,
                    max_bytes: 1 << 20,
                    budget: Budget {
                        max_bytes: 1 << 30,
                        min_free: 0,
                        policy: FullPolicy::Backpressure,
                    },
                },
                Links {
                    rx,
                    acks,
                    committed,
                    stop,
                    reconfigure,
                },
                Arc::new(IngestStats::default()),
            )
            .await
        });
        (tx, committed_rx, task)
    }

    fn reading(n: u32) -> Incoming<u32> {
        Incoming::event(
            Event::new("s/1".into(), Bytes::from_static(b"x"), Vec::new(), 1),
            Some(n),
            None,
        )
    }

    /// A commit that journals no records (only a QoS 2 release) does not wake delivery: it has
    /// nothing new to seal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_without_records_does_not_wake_delivery() {
        let (tx, mut committed, task) = commit_stage(Duration::from_millis(1));
        tx.send(Incoming {
            event: None,
            ack: Some(1),
            change: Some(kedge_queue::inbound::Change::Released(7)),
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!committed.has_changed().unwrap(), "woken for nothing");
        tx.send(reading(2)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), committed.changed())
            .await
            .expect("a commit with a record wakes delivery")
            .unwrap();
        assert_eq!(committed.borrow_and_update().records, 1);
        drop(tx);
        let _ = task.await;
    }

    /// Events that arrive together and the event right after them wait the window for
    /// company; a lone event right after a sync waits for the rest of the window; a lone event
    /// a window after the last sync is committed at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_event_is_committed_at_once_and_a_busy_stage_gathers() {
        let window = Duration::from_millis(400);
        let (tx, committed_rx, task) = commit_stage(window);
        // Sends readings `ns` together; how long until the stage committed them.
        let commit = |ns: &'static [u32]| {
            let (tx, mut rx) = (tx.clone(), committed_rx.clone());
            async move {
                let sent = Instant::now();
                for &n in ns {
                    tx.send(reading(n)).await.unwrap();
                }
                let total = u64::from(*ns.last().expect("readings"));
                rx.wait_for(|c| c.records >= total)
                    .await
                    .expect("stage alive");
                sent.elapsed()
            }
        };
        let took = commit(&[1, 2]).await;
        assert!(
            took >= window,
            "two queued events waited {took:?}, not the window"
        );
        // The last batch had company and synced just now: the next event waits the window.
        let took = commit(&[3]).await;
        assert!(
            took >= window,
            "after a busy commit, a lone event waited only {took:?}"
        );
        // A lone event right after a lone one's sync: at most one sync per window.
        let took = commit(&[4]).await;
        assert!(
            took >= window / 2,
            "two syncs {took:?} apart with a {window:?} window"
        );
        // A window later, a lone event is committed at once.
        tokio::time::sleep(window).await;
        let took = commit(&[5]).await;
        assert!(
            took < window / 2,
            "an idle stage held a lone event for {took:?}"
        );
        drop(tx);
        assert_eq!(task.await.unwrap(), CommitEnd::Drained);
    }

    /// Lone events spaced between half a window and a window apart: each is a commit of its
    /// own, and still no two syncs begin less than a window apart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn syncs_stay_a_window_apart_however_lone_events_are_spaced() {
        let window = Duration::from_millis(200);
        let (tx, committed_rx, task) = commit_stage(window);
        let mut watcher = committed_rx.clone();
        let commits = tokio::spawn(async move {
            let mut at = Vec::new();
            while watcher.changed().await.is_ok() {
                watcher.borrow_and_update();
                at.push(Instant::now());
            }
            at
        });
        for n in 0..8 {
            tx.send(reading(n)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(130)).await;
        }
        drop(tx);
        assert_eq!(task.await.unwrap(), CommitEnd::Drained);
        let at = commits.await.unwrap();
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 4, "commits: {gaps:?}");
        // The sync itself (no fsync here) takes well under the 20 ms of slack.
        for gap in &gaps {
            assert!(
                *gap + Duration::from_millis(20) >= window,
                "two commits {gap:?} apart with a {window:?} window: {gaps:?}"
            );
        }
    }

    /// While the queue is full under `when_full = "backpressure"`, the commit stage waits for room;
    /// a reload that raises `queue.max_bytes` (the obvious fix for a full queue) must be taken
    /// there, and applied to the records waiting, not left in the channel (where a second reload
    /// would wait behind it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_is_taken_while_the_queue_is_full() {
        use kedge_plugin_host::chain::Chain;
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(
            Queue::open(dir.path(), 1 << 20, kedge_queue::Sync::Relaxed, "dev").expect("queue"),
        );
        let stages = || Stages {
            chain: Chain::new(Vec::new(), "mqtt".into(), "dlq".into()),
            router: Router::new(Vec::new(), Some("t".into()), "dlq".into()),
            _ticker: None,
        };
        let limits = |max_bytes| CommitSettings {
            window: Duration::from_millis(1),
            max_records: 1000,
            max_bytes: 1 << 20,
            budget: Budget {
                max_bytes,
                min_free: 0,
                policy: FullPolicy::Backpressure,
            },
        };
        let (tx, rx) = mpsc::channel(16);
        let (acks, _acks_rx) = mpsc::unbounded_channel::<Vec<u32>>();
        let (committed, committed_rx) = watch::channel(Committed::none());
        let (stop_tx, stop) = watch::channel(false);
        let (reconfigure_tx, reconfigure) = mpsc::channel(1);
        let task = tokio::spawn(run(
            queue.clone(),
            stages(),
            limits(4096),
            Links {
                rx,
                acks,
                committed,
                stop,
                reconfigure,
            },
            Arc::new(IngestStats::default()),
        ));
        // Incompressible: the budget counts stored (compressed) bytes.
        let noise = |seed: u32| {
            let mut x = 0x9E37_79B9u32 ^ seed.wrapping_mul(0x85EB_CA6B);
            Bytes::from(
                (0..3000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect::<Vec<u8>>(),
            )
        };
        let event = |n: u32| {
            Incoming::event(
                Event::new("s/1".into(), noise(n), Vec::new(), 1),
                Some(n),
                None,
            )
        };
        tx.send(event(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(committed_rx.borrow().records, 1, "the first event fits");
        // The queue is full now: the second event waits for room.
        tx.send(event(2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            committed_rx.borrow().records,
            1,
            "the second event waits for room"
        );
        // A reload raises queue.max_bytes: pipeline::reload's send succeeds (buffered).
        assert!(
            reconfigure_tx
                .try_send(Reconfigure {
                    stages: stages(),
                    settings: limits(1 << 30),
                })
                .is_ok(),
            "the first reload is buffered"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let second = reconfigure_tx.try_send(Reconfigure {
            stages: stages(),
            settings: limits(1 << 30),
        });
        let taken = second.is_ok();
        let committed_now = committed_rx.borrow().records;
        let _ = stop_tx.send(true);
        // The source closes: the stage ends once what it holds is committed or given up.
        drop(tx);
        let _ = task.await;
        assert!(
            taken,
            "the commit stage never took the reload while it waited for room"
        );
        assert_eq!(
            committed_now, 2,
            "the raised queue.max_bytes was not applied to the batch waiting for room"
        );
    }
}
