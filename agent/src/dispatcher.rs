//! Dispatcher: turns journal chunks into sealed Kafka batches (ARCHITECTURE.md §2, step 4).
//!
//! Planning is pure: partition each record, cut per-partition batches within the size limits and
//! the per-partition window of unacknowledged batches, encode them, and describe the atomic seal.
//! The caller persists the result with [`kedge_queue::Queue::seal`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;

use kedge_queue::outbox::SealedBatch;
use kedge_queue::{JournalChunk, Parked, Seal};
use kedge_wire::batch::{self, BatchCompression, ProducerIdentity};
use kedge_wire::partitioner::{StickyPartitioner, partition_for_key};
use kedge_wire::record::{HEADER_ERROR, HEADER_TOPIC, Header, Origin, SequencedRecord};
use kedge_wire::sequence;

/// Limits and identity for sealing.
#[derive(Debug, Clone)]
pub struct SealSettings {
    /// Device and queue incarnation, written into every record's `kedge-device` and
    /// `kedge-queue` headers.
    pub origin: Origin,
    /// Compression of the batches.
    pub compression: BatchCompression,
    /// Most records in one batch.
    pub max_records: usize,
    /// Most bytes of one batch before compression, framing and kedge's headers included.
    pub max_bytes: usize,
}

/// What the dispatcher can do with the head of the journal.
#[derive(Debug)]
pub enum Plan {
    /// Nothing to seal.
    Empty,
    /// The first chunk has records for topics whose partition count is unknown.
    NeedMetadata(Vec<String>),
    /// The first chunk needs more batches on some partition than its window has room for while
    /// older batches of that partition wait for Kafka.
    Blocked,
    /// Seal these batches and consume these chunks.
    Seal(Seal),
}

/// `r` rerouted to the dead-letter topic: its topic does not exist in Kafka.
fn to_dead_letter(mut r: SequencedRecord, dead_letter_topic: &str) -> SequencedRecord {
    let topic = std::mem::replace(&mut r.record.topic, dead_letter_topic.to_owned());
    r.record.headers.push(Header {
        name: HEADER_ERROR.to_owned(),
        value: bytes::Bytes::from(format!("topic {topic} does not exist in Kafka")),
    });
    r.record.headers.push(Header {
        name: HEADER_TOPIC.to_owned(),
        value: bytes::Bytes::from(topic),
    });
    r
}

/// The records' timestamps as (ms, records) runs: a batch gathered over a few milliseconds
/// has a few runs, however many records it holds.
fn timestamp_runs(records: &[SequencedRecord]) -> Vec<(i64, u32)> {
    let mut runs: Vec<(i64, u32)> = Vec::new();
    for r in records {
        match runs.last_mut() {
            Some((ts, n)) if *ts == r.record.timestamp_ms => *n += 1,
            _ => runs.push((r.record.timestamp_ms, 1)),
        }
    }
    runs
}

/// Sealing state that outlives one plan.
pub struct Dispatcher {
    settings: SealSettings,
    sticky: StickyPartitioner,
}

/// Everything one plan reads.
pub struct PlanInput<'a> {
    /// Chunks from the head of the journal, in order; read only as far as the windows allow.
    pub chunks: &'a mut dyn Iterator<Item = JournalChunk>,
    /// Known partition counts per topic.
    pub partition_counts: &'a HashMap<String, NonZeroU32>,
    /// Batches that may still be sealed per partition (window minus unacknowledged batches);
    /// absent partitions have the full window.
    pub room: &'a HashMap<(String, i32), usize>,
    /// The full per-partition window.
    pub window: usize,
    /// Next producer sequence per partition.
    pub next_sequences: &'a BTreeMap<(String, i32), i32>,
    /// Producer identity to seal under.
    pub producer: ProducerIdentity,
    /// First batch number to use.
    pub next_batch_no: u64,
    /// Partitions that have been stuck too long to wait for: their records are set aside
    /// (parked) instead of holding up the journal for every other partition.
    pub stuck: &'a HashSet<Tp>,
    /// Partitions with records set aside: their new records are set aside behind them, to keep
    /// the partition's order.
    pub parked: &'a HashSet<Tp>,
    /// Set-aside chunks to seal now (their partitions can take them again), oldest first.
    pub unpark: Vec<Unpark>,
    /// Topics Kafka does not have (and will not create): their records go to the dead-letter
    /// topic with the reason.
    pub missing_topics: &'a HashSet<String>,
    /// The dead-letter topic.
    pub dead_letter_topic: &'a str,
}

/// One partition's set-aside chunks offered to a plan.
#[derive(Debug)]
pub struct Unpark {
    /// The partition.
    pub tp: Tp,
    /// Its oldest set-aside chunks.
    pub chunks: Vec<Parked>,
    /// These are all the partition's set-aside chunks.
    pub all: bool,
}

/// Why a plan failed: a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a batch for {topic}/{partition}: {source}")]
pub struct PlanError {
    topic: String,
    partition: i32,
    source: batch::BatchError,
}

type Tp = (String, i32);

impl Dispatcher {
    /// A dispatcher with the given settings and a sticky partitioner for null keys.
    pub fn new(settings: SealSettings, sticky: StickyPartitioner) -> Self {
        Dispatcher { settings, sticky }
    }

    /// The partition a record goes to among `count`: by its key, else the sticky choice.
    pub fn partition_of(&mut self, record: &kedge_wire::record::Record, count: NonZeroU32) -> u32 {
        match &record.key {
            Some(k) => partition_for_key(k, count),
            None => self.sticky.partition(&record.topic, count),
        }
    }

    /// Plans the largest prefix of `input.chunks` that fits the windows, taking from it at most
    /// one chunk beyond that prefix; set-aside chunks of `input.unpark` come first.
    pub fn plan(&mut self, input: PlanInput<'_>) -> Result<Plan, PlanError> {
        let room = |tp: &Tp| input.room.get(tp).copied().unwrap_or(input.window);
        let next_of = |tp: &Tp| input.next_sequences.get(tp).copied().unwrap_or(0);
        let mut pending: BTreeMap<Tp, Vec<SequencedRecord>> = BTreeMap::new();
        let mut parked: BTreeMap<Tp, Vec<SequencedRecord>> = BTreeMap::new();
        let mut still_parked: HashSet<Tp> = input.parked.clone();
        let mut unparked: Vec<Vec<u8>> = Vec::new();
        // Set-aside records are older than anything among the commits: they go first, whole
        // chunks at a time, as far as the partition's window takes them.
        for u in input.unpark {
            let mut all_taken = u.all;
            for chunk in u.chunks {
                let recs = pending.entry(u.tp.clone()).or_default();
                let before = recs.len();
                recs.extend(chunk.records);
                let fits = self.cut(next_of(&u.tp), recs).len() <= room(&u.tp)
                    || (before == 0 && room(&u.tp) >= input.window);
                if !fits {
                    recs.truncate(before);
                    all_taken = false;
                    break;
                }
                unparked.push(chunk.key);
            }
            if all_taken {
                still_parked.remove(&u.tp);
            } else {
                still_parked.insert(u.tp);
            }
        }
        pending.retain(|_, recs| !recs.is_empty());
        let mut chunks = input.chunks.peekable();
        if chunks.peek().is_none() && unparked.is_empty() {
            return Ok(Plan::Empty);
        }
        let mut consumed: Vec<(u64, u64)> = Vec::new();
        let mut dead_lettered = 0u64;
        let mut rerouted_from: Vec<String> = Vec::new();
        for chunk in chunks {
            // Topics without metadata yet: ask, unless Kafka already said they do not exist
            // (then their records go to the dead-letter topic, which needs its own).
            let mut unknown: Vec<String> = chunk
                .records
                .iter()
                .map(|r| &r.record.topic)
                .filter(|t| !input.partition_counts.contains_key(*t))
                .map(|t| {
                    if input.missing_topics.contains(t) {
                        input.dead_letter_topic.to_owned()
                    } else {
                        t.clone()
                    }
                })
                .filter(|t| !input.partition_counts.contains_key(t))
                .collect();
            if !unknown.is_empty() {
                if consumed.is_empty() && unparked.is_empty() {
                    unknown.sort();
                    unknown.dedup();
                    return Ok(Plan::NeedMetadata(unknown));
                }
                break;
            }
            let mut before: HashMap<Tp, usize> = HashMap::new();
            let mut parked_before: HashMap<Tp, usize> = HashMap::new();
            let mut dead = 0u64;
            for mut r in chunk.records {
                if !input.partition_counts.contains_key(&r.record.topic) {
                    if !rerouted_from.contains(&r.record.topic) {
                        rerouted_from.push(r.record.topic.clone());
                    }
                    r = to_dead_letter(r, input.dead_letter_topic);
                    dead += 1;
                }
                let topic = r.record.topic.clone();
                let count = input.partition_counts[&topic];
                let p = match &r.record.key {
                    Some(k) => partition_for_key(k, count),
                    // A null key may go anywhere: not to a stuck partition.
                    None => self.sticky.partition_avoiding(&topic, count, |p| {
                        input.stuck.contains(&(topic.clone(), p as i32))
                    }),
                };
                let tp = (topic, p as i32);
                if input.stuck.contains(&tp) || still_parked.contains(&tp) {
                    let recs = parked.entry(tp.clone()).or_default();
                    parked_before.entry(tp).or_insert(recs.len());
                    recs.push(r);
                } else {
                    let recs = pending.entry(tp.clone()).or_default();
                    before.entry(tp).or_insert(recs.len());
                    recs.push(r);
                }
            }
            let fits = before
                .keys()
                .all(|tp| self.cut(next_of(tp), &pending[tp]).len() <= room(tp));
            // A chunk that alone needs more batches than a window (a small window, a burst of
            // large records, the sequence wrap) would wait forever: once its partitions hold
            // nothing unacknowledged it is sealed whole. The window bounds what is held per
            // partition; what is in flight stays bounded by `max_in_flight` per broker.
            let alone = before
                .iter()
                .all(|(tp, &len)| len == 0 && room(tp) >= input.window);
            if !fits && !alone {
                for (tp, len) in before {
                    if let Some(recs) = pending.get_mut(&tp) {
                        recs.truncate(len);
                    }
                }
                for (tp, len) in parked_before {
                    if let Some(recs) = parked.get_mut(&tp) {
                        recs.truncate(len);
                    }
                }
                pending.retain(|_, recs| !recs.is_empty());
                parked.retain(|_, recs| !recs.is_empty());
                break;
            }
            dead_lettered += dead;
            consumed.push((chunk.first_seq, chunk.end_seq));
        }
        if consumed.is_empty() && unparked.is_empty() {
            return Ok(Plan::Blocked);
        }
        let seq_floor = consumed.last().map_or(0, |&(_, end)| end);
        let mut seal = Seal {
            consumed_chunks: consumed.iter().map(|(first, _)| *first).collect(),
            seq_floor,
            next_batch_no: input.next_batch_no,
            parked: parked.into_iter().collect(),
            unparked,
            dead_lettered,
            missing_topics: if dead_lettered > 0 {
                rerouted_from
            } else {
                Vec::new()
            },
            ..Seal::default()
        };
        for ((topic, partition), recs) in pending {
            let mut next = input
                .next_sequences
                .get(&(topic.clone(), partition))
                .copied()
                .unwrap_or(0);
            for range in self.cut(next, &recs) {
                let slice = &recs[range];
                let bytes = batch::encode_batch(
                    input.producer,
                    next,
                    &self.settings.origin,
                    slice,
                    self.settings.compression,
                )
                .map_err(|source| PlanError {
                    topic: topic.clone(),
                    partition,
                    source,
                })?;
                let count = slice.len() as i32;
                seal.batches.push(SealedBatch {
                    batch_no: seal.next_batch_no,
                    topic: topic.clone(),
                    partition,
                    producer: input.producer,
                    base_sequence: next,
                    record_count: count,
                    first_seq: slice[0].seq,
                    last_seq: slice[slice.len() - 1].seq,
                    bytes,
                    legacy: false,
                });
                seal.received.push(timestamp_runs(slice));
                seal.next_batch_no += 1;
                next = sequence::increment(next, count);
            }
            seal.next_sequences.push(((topic.clone(), partition), next));
            self.sticky.next_batch(&topic);
        }
        Ok(Plan::Seal(seal))
    }

    /// Cuts one partition's records into batch ranges: within the record and byte limits, and
    /// never across the int32 sequence wrap (a Kafka batch's sequences must be contiguous).
    /// The byte limit counts the batch as it is encoded, kedge's headers and the framing
    /// included, so that a full uncompressed batch stays within it.
    fn cut(&self, mut next: i32, recs: &[SequencedRecord]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < recs.len() {
            let until_wrap = (i32::MAX - next) as usize + 1;
            let limit = self.settings.max_records.min(until_wrap);
            let mut end = start;
            let mut bytes = batch::BATCH_OVERHEAD;
            let (mut earliest, mut latest) = (i64::MAX, i64::MIN);
            while end < recs.len() && end - start < limit {
                let size = batch::record_size_bound(&recs[end], &self.settings.origin);
                if end > start && bytes + size > self.settings.max_bytes {
                    break;
                }
                // A batch's timestamps are i64 deltas from its earliest: records journaled by
                // an older kedge may lie too far apart for one batch (the router now keeps
                // timestamps within 1970..=9999), and a batch that cannot be encoded would be
                // planned again forever.
                let t = recs[end].record.timestamp_ms;
                let (lo, hi) = (earliest.min(t), latest.max(t));
                if end > start && hi.checked_sub(lo).is_none() {
                    break;
                }
                (earliest, latest) = (lo, hi);
                bytes += size;
                end += 1;
            }
            next = sequence::increment(next, (end - start) as i32);
            out.push(start..end);
            start = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kedge_wire::batch::batch_info;
    use kedge_wire::record::Record;
    use rand::SeedableRng;

    const PRODUCER: ProducerIdentity = ProducerIdentity {
        producer_id: 5,
        producer_epoch: 0,
    };

    fn chunk(first: u64, keys: &[Option<&str>]) -> JournalChunk {
        JournalChunk {
            first_seq: first,
            end_seq: first + keys.len() as u64,
            records: keys
                .iter()
                .enumerate()
                .map(|(i, k)| SequencedRecord {
                    seq: first + i as u64,
                    record: Record {
                        topic: "t".into(),
                        key: k.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                        value: Bytes::from(vec![b'v'; 100]),
                        headers: vec![],
                        timestamp_ms: 1,
                    },
                })
                .collect(),
        }
    }

    fn dispatcher(max_records: usize) -> Dispatcher {
        Dispatcher::new(
            SealSettings {
                origin: Origin {
                    device: "dev".into(),
                    queue: 1,
                },
                compression: BatchCompression::None,
                max_records,
                max_bytes: 1 << 20,
            },
            StickyPartitioner::new(rand::rngs::StdRng::seed_from_u64(1)),
        )
    }

    fn counts(n: u32) -> HashMap<String, NonZeroU32> {
        HashMap::from([("t".to_owned(), NonZeroU32::new(n).unwrap())])
    }

    #[test]
    fn timestamps_too_far_apart_for_one_batch_are_cut_into_two() {
        // Journaled by an older kedge, before the router kept timestamps in 1970..=9999: one
        // batch cannot hold both, and before the cut the plan failed on every attempt.
        let mut c = chunk(0, &[Some("k"), Some("k"), Some("k")]);
        c.records[0].record.timestamp_ms = i64::MIN;
        c.records[1].record.timestamp_ms = i64::MAX;
        c.records[2].record.timestamp_ms = 5;
        let plan = dispatcher(100)
            .plan(PlanInput {
                chunks: &mut vec![c].into_iter(),
                partition_counts: &counts(1),
                room: &HashMap::new(),
                window: 5,
                next_sequences: &BTreeMap::new(),
                producer: PRODUCER,
                next_batch_no: 0,
                stuck: &HashSet::new(),
                parked: &HashSet::new(),
                unpark: Vec::new(),
                missing_topics: &HashSet::new(),
                dead_letter_topic: "dlq",
            })
            .expect("a plan, not an encoding error");
        let Plan::Seal(seal) = plan else {
            panic!("expected a seal, got {plan:?}")
        };
        let stamps: Vec<Vec<i64>> = seal
            .batches
            .iter()
            .map(|b| {
                kedge_wire::batch::decode_batch(&b.bytes)
                    .unwrap()
                    .iter()
                    .map(|r| r.timestamp_ms)
                    .collect()
            })
            .collect();
        assert_eq!(stamps, vec![vec![i64::MIN], vec![i64::MAX, 5]]);
    }

    #[test]
    fn keyed_records_land_on_their_murmur2_partition_with_contiguous_sequences() {
        let keys = ["a", "b", "c", "d", "e", "f"].map(Some);
        let mut d = dispatcher(100);
        let next = BTreeMap::from([(("t".to_owned(), 0), 7)]);
        let plan = d
            .plan(PlanInput {
                chunks: &mut vec![chunk(10, &keys[..3]), chunk(13, &keys[3..])].into_iter(),
                partition_counts: &counts(3),
                room: &HashMap::new(),
                window: 5,
                next_sequences: &next,
                producer: PRODUCER,
                next_batch_no: 100,
                stuck: &HashSet::new(),
                parked: &HashSet::new(),
                unpark: Vec::new(),
                missing_topics: &HashSet::new(),
                dead_letter_topic: "dlq",
            })
            .unwrap();
        let Plan::Seal(seal) = plan else {
            panic!("expected a seal, got {plan:?}")
        };
        assert_eq!(seal.consumed_chunks, vec![10, 13]);
        assert_eq!(seal.seq_floor, 16);
        let mut seen = 0;
        for b in &seal.batches {
            let info = &batch_info(&b.bytes).unwrap()[0];
            assert_eq!(info.producer_id, 5);
            assert_eq!(info.base_sequence, b.base_sequence);
            assert_eq!(info.record_count, b.record_count);
            let want_base = if b.partition == 0 { 7 } else { 0 };
            assert_eq!(b.base_sequence, want_base, "partition {}", b.partition);
            for r in kedge_wire::batch::decode_batch(&b.bytes).unwrap() {
                let key = r.key.unwrap();
                assert_eq!(
                    partition_for_key(&key, NonZeroU32::new(3).unwrap()) as i32,
                    b.partition
                );
                seen += 1;
            }
        }
        assert_eq!(seen, 6);
        let nexts: HashMap<_, _> = seal.next_sequences.iter().cloned().collect();
        for b in &seal.batches {
            assert_eq!(
                nexts[&(b.topic.clone(), b.partition)],
                b.base_sequence + b.record_count
            );
        }
        assert_eq!(seal.next_batch_no, 100 + seal.batches.len() as u64);
        // Every batch carries its records' timestamps (all 1 ms here) for the latency histogram.
        assert_eq!(seal.received.len(), seal.batches.len());
        for (b, runs) in seal.batches.iter().zip(&seal.received) {
            assert_eq!(runs, &vec![(1, b.record_count as u32)]);
        }
    }

    #[test]
    fn timestamp_runs_group_equal_neighbours() {
        let mut recs = chunk(0, &[None; 5]).records;
        for (r, ts) in recs.iter_mut().zip([5, 5, 6, 5, 5]) {
            r.record.timestamp_ms = ts;
        }
        assert_eq!(timestamp_runs(&recs), vec![(5, 2), (6, 1), (5, 2)]);
        assert_eq!(timestamp_runs(&[]), vec![]);
    }

    /// Plans `chunks` with a window of 5 and fresh sequences; also how many chunks it read.
    fn plan_window(
        d: &mut Dispatcher,
        chunks: Vec<JournalChunk>,
        counts: &HashMap<String, NonZeroU32>,
        room: &HashMap<(String, i32), usize>,
    ) -> (Plan, usize) {
        let mut read = 0;
        let plan = d
            .plan(PlanInput {
                chunks: &mut chunks.into_iter().inspect(|_| read += 1),
                partition_counts: counts,
                room,
                window: 5,
                next_sequences: &BTreeMap::new(),
                producer: PRODUCER,
                next_batch_no: 0,
                stuck: &HashSet::new(),
                parked: &HashSet::new(),
                unpark: Vec::new(),
                missing_topics: &HashSet::new(),
                dead_letter_topic: "dlq",
            })
            .unwrap();
        (plan, read)
    }

    #[test]
    fn stops_at_the_chunk_that_overflows_the_window() {
        let mut d = dispatcher(2);
        let room = HashMap::from([(("t".to_owned(), 0), 2usize)]);
        let counts = counts(1);
        // 3 records → 2 batches of ≤ 2 fit the room of 2; the next chunk would need a third.
        // The chunks after that one are never read (decompressed, in the producer).
        let (plan, read) = plan_window(
            &mut d,
            vec![
                chunk(0, &[None; 3]),
                chunk(3, &[None; 2]),
                chunk(5, &[None; 2]),
                chunk(7, &[None; 2]),
            ],
            &counts,
            &room,
        );
        assert_eq!(read, 2);
        let Plan::Seal(seal) = plan else {
            panic!("expected a seal")
        };
        assert_eq!(seal.consumed_chunks, vec![0]);
        assert_eq!(
            seal.batches
                .iter()
                .map(|b| b.record_count)
                .collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(seal.batches[1].base_sequence, 2);
        // A first chunk that alone needs more than the room waits for the older batches.
        let (plan, _) = plan_window(&mut d, vec![chunk(0, &[None; 5])], &counts, &room);
        assert!(matches!(plan, Plan::Blocked));
        // Once they are gone it is sealed whole, however many batches it needs: else a window
        // of 1 (max_in_flight = 1) or a burst of large records would wait forever.
        let (plan, _) = plan_window(
            &mut d,
            vec![chunk(0, &[None; 15])],
            &counts,
            &HashMap::new(),
        );
        let Plan::Seal(seal) = plan else {
            panic!("a lone chunk with an empty window is sealed")
        };
        assert_eq!(seal.batches.len(), 8);
        assert_eq!(seal.consumed_chunks, vec![0]);
    }

    #[test]
    fn full_uncompressed_batches_stay_within_the_byte_limit() {
        // 20,000 readings of ~400 bytes with 3 small headers each: the old estimate (payload +
        // 32) left out kedge's own headers and the record framing, and full batches came to
        // ~1.15 MB against Kafka's default limit of 1 MiB + 12 bytes.
        let limit = 1 << 20;
        let mut d = Dispatcher::new(
            SealSettings {
                origin: Origin {
                    device: "a-rather-long-device-identifier-0042".into(),
                    queue: u64::MAX,
                },
                compression: BatchCompression::None,
                max_records: 10_000,
                max_bytes: limit,
            },
            StickyPartitioner::new(rand::rngs::StdRng::seed_from_u64(1)),
        );
        let mut big = chunk(u64::MAX / 2, &[None; 20_000]);
        for r in &mut big.records {
            r.record.value = Bytes::from(vec![b'x'; 400]);
            r.record.headers = (0..3)
                .map(|i| kedge_wire::record::Header {
                    name: format!("prop-{i}"),
                    value: Bytes::from_static(b"value"),
                })
                .collect();
        }
        let (plan, _) = plan_window(&mut d, vec![big], &counts(1), &HashMap::new());
        let Plan::Seal(seal) = plan else {
            panic!("expected a seal")
        };
        assert!(seal.batches.len() > 1);
        for b in &seal.batches {
            assert!(
                b.bytes.len() <= limit,
                "a batch of {} records encodes to {} bytes",
                b.record_count,
                b.bytes.len()
            );
        }
        // And the cut is not wasteful: full batches use most of the limit.
        assert!(seal.batches[0].bytes.len() > limit * 4 / 5);
    }

    /// Plans `chunks` for a topic of 3 partitions with `stuck`/`parked` partitions and `unpark`.
    fn plan_isolated(
        d: &mut Dispatcher,
        chunks: Vec<JournalChunk>,
        room: &HashMap<Tp, usize>,
        stuck: &HashSet<Tp>,
        parked: &HashSet<Tp>,
        unpark: Vec<Unpark>,
    ) -> Plan {
        d.plan(PlanInput {
            chunks: &mut chunks.into_iter(),
            partition_counts: &counts(3),
            room,
            window: 5,
            next_sequences: &BTreeMap::new(),
            producer: PRODUCER,
            next_batch_no: 0,
            stuck,
            parked,
            unpark,
            missing_topics: &HashSet::new(),
            dead_letter_topic: "dlq",
        })
        .unwrap()
    }

    /// Keys that land on partitions 0, 1 and 2 of 3 (murmur2).
    fn key_on(partition: u32) -> &'static str {
        ["a", "b", "c", "d", "e", "f", "g", "h"]
            .into_iter()
            .find(|k| partition_for_key(k.as_bytes(), NonZeroU32::new(3).unwrap()) == partition)
            .expect("a key for each partition")
    }

    #[test]
    fn a_stuck_partition_is_set_aside_and_holds_up_no_other() {
        let mut d = dispatcher(100);
        let stuck_tp = ("t".to_owned(), 0);
        // Partition 0's window is full and it makes no progress: before, the chunk at the head
        // (records for all three partitions) waited for it, and everything behind it too.
        let room = HashMap::from([(stuck_tp.clone(), 0usize)]);
        let keys = [key_on(0), key_on(1), key_on(2), key_on(0)].map(Some);
        let blocked = plan_isolated(
            &mut d,
            vec![chunk(0, &keys)],
            &room,
            &HashSet::new(),
            &HashSet::new(),
            Vec::new(),
        );
        assert!(matches!(blocked, Plan::Blocked));
        let stuck = HashSet::from([stuck_tp.clone()]);
        let Plan::Seal(seal) = plan_isolated(
            &mut d,
            vec![chunk(0, &keys), chunk(4, &keys)],
            &room,
            &stuck,
            &HashSet::new(),
            Vec::new(),
        ) else {
            panic!("expected a seal")
        };
        assert_eq!(seal.consumed_chunks, vec![0, 4]);
        assert!(seal.batches.iter().all(|b| b.partition != 0));
        assert_eq!(seal.batches.iter().map(|b| b.record_count).sum::<i32>(), 4);
        assert_eq!(seal.parked.len(), 1);
        let (tp, records) = &seal.parked[0];
        assert_eq!(tp, &stuck_tp);
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![0, 3, 4, 7], "in journal order");
    }

    #[test]
    fn set_aside_records_go_first_and_new_ones_queue_behind_them() {
        let mut d = dispatcher(100);
        let tp = ("t".to_owned(), 0);
        let old = Parked {
            key: b"parked-0".to_vec(),
            records: chunk(0, &[Some(key_on(0)); 2]).records,
        };
        // Not all of the partition's set-aside chunks are offered: the journal's records for
        // it must wait behind the rest.
        let Plan::Seal(seal) = plan_isolated(
            &mut d,
            vec![chunk(10, &[Some(key_on(0)), Some(key_on(1))])],
            &HashMap::new(),
            &HashSet::new(),
            &HashSet::from([tp.clone()]),
            vec![Unpark {
                tp: tp.clone(),
                chunks: vec![old],
                all: false,
            }],
        ) else {
            panic!("expected a seal")
        };
        assert_eq!(seal.unparked, vec![b"parked-0".to_vec()]);
        let on_0: Vec<u64> = seal
            .batches
            .iter()
            .filter(|b| b.partition == 0)
            .flat_map(|b| b.first_seq..=b.last_seq)
            .collect();
        assert_eq!(on_0, vec![0, 1], "the set-aside records first");
        assert_eq!(seal.parked.len(), 1, "kedge-seq 10 waits behind the rest");
        assert_eq!(seal.parked[0].1[0].seq, 10);
        // With all of them offered, the journal's records follow them in the same seal.
        let old = Parked {
            key: b"parked-0".to_vec(),
            records: chunk(0, &[Some(key_on(0)); 2]).records,
        };
        let Plan::Seal(seal) = plan_isolated(
            &mut d,
            vec![chunk(10, &[Some(key_on(0))])],
            &HashMap::new(),
            &HashSet::new(),
            &HashSet::from([tp.clone()]),
            vec![Unpark {
                tp,
                chunks: vec![old],
                all: true,
            }],
        ) else {
            panic!("expected a seal")
        };
        assert!(seal.parked.is_empty());
        let seqs: Vec<u64> = seal
            .batches
            .iter()
            .flat_map(|b| kedge_wire::batch::decode_batch(&b.bytes).unwrap())
            .map(|r| {
                let (_, v) = r.headers.iter().find(|(n, _)| n == "kedge-seq").unwrap();
                std::str::from_utf8(v).unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![0, 1, 10]);
    }

    #[test]
    fn unkeyed_records_avoid_a_stuck_partition() {
        let mut d = dispatcher(100);
        let stuck: HashSet<Tp> = [("t".to_owned(), 0), ("t".to_owned(), 1)].into();
        for first in 0..20 {
            let Plan::Seal(seal) = plan_isolated(
                &mut d,
                vec![chunk(first * 3, &[None; 3])],
                &HashMap::new(),
                &stuck,
                &HashSet::new(),
                Vec::new(),
            ) else {
                panic!("expected a seal")
            };
            assert!(seal.parked.is_empty());
            assert!(seal.batches.iter().all(|b| b.partition == 2));
        }
    }

    #[test]
    fn records_of_a_missing_topic_go_to_the_dead_letter_topic_with_the_reason() {
        let mut d = dispatcher(100);
        let mut c = chunk(0, &[None, Some("k")]);
        c.records[0].record.topic = "gone".into();
        let counts = HashMap::from([
            ("t".to_owned(), NonZeroU32::new(1).unwrap()),
            ("dlq".to_owned(), NonZeroU32::new(1).unwrap()),
        ]);
        let Plan::Seal(seal) = d
            .plan(PlanInput {
                chunks: &mut vec![c].into_iter(),
                partition_counts: &counts,
                room: &HashMap::new(),
                window: 5,
                next_sequences: &BTreeMap::new(),
                producer: PRODUCER,
                next_batch_no: 0,
                stuck: &HashSet::new(),
                parked: &HashSet::new(),
                unpark: Vec::new(),
                missing_topics: &HashSet::from(["gone".to_owned()]),
                dead_letter_topic: "dlq",
            })
            .unwrap()
        else {
            panic!("expected a seal")
        };
        assert_eq!(seal.dead_lettered, 1);
        let dlq = seal
            .batches
            .iter()
            .find(|b| b.topic == "dlq")
            .expect("dlq batch");
        let r = &kedge_wire::batch::decode_batch(&dlq.bytes).unwrap()[0];
        let header = |n: &str| {
            r.headers
                .iter()
                .find(|(h, _)| h == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("kedge-topic"), Some(Bytes::from_static(b"gone")));
        assert_eq!(
            header("kedge-error"),
            Some(Bytes::from_static(b"topic gone does not exist in Kafka"))
        );
    }

    #[test]
    fn unknown_topics_ask_for_metadata_and_empty_journals_do_nothing() {
        let mut d = dispatcher(10);
        let (counts, room) = (HashMap::new(), HashMap::new());
        let mut plan = |chunks| plan_window(&mut d, chunks, &counts, &room).0;
        let need = plan(vec![chunk(0, &[Some("k")])]);
        assert!(matches!(need, Plan::NeedMetadata(t) if t == vec!["t".to_owned()]));
        assert!(matches!(plan(vec![]), Plan::Empty));
    }

    #[test]
    fn batches_never_straddle_the_sequence_wrap() {
        let mut d = dispatcher(100);
        let next = BTreeMap::from([(("t".to_owned(), 0), i32::MAX - 1)]);
        let plan = d
            .plan(PlanInput {
                chunks: &mut vec![chunk(0, &[None; 5])].into_iter(),
                partition_counts: &counts(1),
                room: &HashMap::new(),
                window: 5,
                next_sequences: &next,
                producer: PRODUCER,
                next_batch_no: 0,
                stuck: &HashSet::new(),
                parked: &HashSet::new(),
                unpark: Vec::new(),
                missing_topics: &HashSet::new(),
                dead_letter_topic: "dlq",
            })
            .unwrap();
        let Plan::Seal(seal) = plan else {
            panic!("expected a seal")
        };
        let cut: Vec<(i32, i32)> = seal
            .batches
            .iter()
            .map(|b| (b.base_sequence, b.record_count))
            .collect();
        assert_eq!(cut, vec![(i32::MAX - 1, 2), (0, 3)]);
        assert_eq!(seal.next_sequences, vec![(("t".to_owned(), 0), 3)]);
    }
}
