//! Verify before resend: what a scan of a partition's tail proves about this queue's batches.
//!
//! A batch is in the log exactly when a record carrying this queue's `kedge-device`,
//! `kedge-queue` and one of the batch's `kedge-seq` numbers is: kedge writes each record in one
//! batch only, and a broker appends a batch whole. The device id alone is not enough (a fleet
//! may share the default hostname), nor is `kedge-seq` (a fresh or quarantined queue numbers
//! from 0 again): the queue id, drawn when the queue was created, makes the pair unique. Batch
//! headers (producer id, base sequence) are not used as proof: a broker that re-batches loses
//! them, and a producer id is only unique within one broker's memory.
//!
//! Batches sealed before queues had an id carry no `kedge-queue` ([`BatchMeta::legacy`]); they
//! match records of this device without one. Records of this device under another queue id,
//! written after this queue's own, are another agent using the same device id: reported, never
//! matched.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use bytes::Bytes;

use kedge_queue::outbox::BatchMeta;
use kedge_wire::batch::{self, BatchError};
use kedge_wire::record::{HEADER_DEVICE, HEADER_QUEUE, HEADER_SEQ, Origin, parse_queue_id};

/// A set of `kedge-seq` numbers kept as disjoint, non-adjacent inclusive ranges: a scan over
/// thousands of this device's records holds one entry per run of consecutive numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeqRanges {
    /// Start → end (inclusive).
    runs: BTreeMap<u64, u64>,
}

impl SeqRanges {
    /// Adds `seq`.
    pub fn insert(&mut self, seq: u64) {
        if let Some((&start, &end)) = self.runs.range(..=seq).next_back() {
            if seq <= end {
                return;
            }
            if end.checked_add(1) == Some(seq) {
                let next_end = seq
                    .checked_add(1)
                    .and_then(|n| self.runs.remove(&n))
                    .unwrap_or(seq);
                self.runs.insert(start, next_end);
                return;
            }
        }
        let end = seq
            .checked_add(1)
            .and_then(|n| self.runs.remove(&n))
            .unwrap_or(seq);
        self.runs.insert(seq, end);
    }

    /// Whether any number in `range` is in the set.
    pub fn intersects(&self, range: RangeInclusive<u64>) -> bool {
        let (first, last) = (*range.start(), *range.end());
        if first > last {
            return false;
        }
        self.runs
            .range(..=last)
            .next_back()
            .is_some_and(|(_, &end)| end >= first)
    }

    /// Number of runs held.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

/// What a scan of one partition found of this queue's records.
#[derive(Debug, Clone)]
pub struct Found {
    origin: Origin,
    /// Only numbers in this range are kept: the span of the batches being verified.
    window: RangeInclusive<u64>,
    /// `kedge-seq` of this device's records carrying this queue's id.
    mine: SeqRanges,
    /// `kedge-seq` of this device's records carrying no queue id (written before queues had one).
    legacy: SeqRanges,
    /// Whether one of this queue's own records was read yet (anything in the window or not).
    seen_mine: bool,
    /// When this queue was created: a record of another queue stamped later is not the past.
    created_ms: Option<i64>,
    /// Records of this device's id under another queue id, read after one of this queue's
    /// own: another agent writes with the same device id. By queue id.
    twins: BTreeMap<u64, u64>,
    /// Old-format message-set entries, skipped: kedge never writes one.
    pub skipped: u64,
    /// RecordBatches whose records do not decode (a CRC-valid batch another producer wrote
    /// that way), skipped: every batch kedge writes decodes (its codecs are tested both ways).
    pub undecodable: u64,
    /// Why the first of them did not.
    pub undecodable_reason: Option<String>,
}

impl Found {
    /// An empty finding for `origin`'s batches numbered within `window`.
    pub fn new(origin: Origin, window: RangeInclusive<u64>) -> Self {
        Found {
            origin,
            window,
            mine: SeqRanges::default(),
            legacy: SeqRanges::default(),
            seen_mine: false,
            created_ms: None,
            twins: BTreeMap::new(),
            skipped: 0,
            undecodable: 0,
            undecodable_reason: None,
        }
    }

    /// Also reports as another agent's the records of this device under another queue id that
    /// are stamped after `created_ms`, when this queue was created.
    pub fn created_at(mut self, created_ms: Option<i64>) -> Self {
        self.created_ms = created_ms;
        self
    }

    /// The window that covers every batch in `batches`, or `None` for none.
    pub fn window_of<'a>(
        batches: impl IntoIterator<Item = &'a BatchMeta>,
    ) -> Option<RangeInclusive<u64>> {
        batches
            .into_iter()
            .map(|b| (b.first_seq, b.last_seq))
            .reduce(|(lo, hi), (f, l)| (lo.min(f), hi.max(l)))
            .map(|(lo, hi)| lo..=hi)
    }

    /// Adds the complete entries of one Fetch response's record set; returns the offset after
    /// the last complete entry, if any.
    pub fn add_fetched(&mut self, records: &Bytes) -> Result<Option<i64>, BatchError> {
        let mut next = None;
        for entry in batch::fetched_entries(records)? {
            next = Some(entry.last_offset + 1);
            if !entry.readable() {
                self.skipped += 1;
                continue;
            }
            // One undecodable batch must not stop every later scan of the partition: it
            // cannot be one of kedge's, so it holds nothing a scan looks for.
            match entry.records() {
                Ok(records) => self.add_records(records),
                Err(e) => {
                    self.undecodable += 1;
                    self.undecodable_reason.get_or_insert_with(|| e.to_string());
                }
            }
        }
        Ok(next)
    }

    fn add_records(&mut self, records: Vec<batch::DecodedRecord>) {
        for r in records {
            let (mut device, mut queue, mut seq) = (None, None, None);
            for (name, value) in &r.headers {
                match name.as_str() {
                    HEADER_DEVICE => device = Some(value),
                    HEADER_QUEUE => queue = Some(value),
                    HEADER_SEQ => seq = Some(value),
                    _ => {}
                }
            }
            if device.is_none_or(|d| d.as_ref() != self.origin.device.as_bytes()) {
                continue;
            }
            let seq = seq.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
            match queue.map(|q| parse_queue_id(q)) {
                None => {
                    if let Some(seq) = seq.filter(|s| self.window.contains(s)) {
                        self.legacy.insert(seq);
                    }
                }
                Some(Some(id)) if id == self.origin.queue => {
                    self.seen_mine = true;
                    if let Some(seq) = seq.filter(|s| self.window.contains(s)) {
                        self.mine.insert(seq);
                    }
                }
                // Another incarnation of this device's queue wrote it. Before any record of
                // ours, and stamped before this queue existed, that is the past (a data
                // directory started afresh); otherwise another agent writes under the same
                // device id now.
                Some(Some(id)) => {
                    let later = self.created_ms.is_some_and(|c| r.timestamp_ms > c);
                    if self.seen_mine || later {
                        *self.twins.entry(id).or_default() += 1;
                    }
                }
                Some(None) => {}
            }
        }
    }

    /// Whether `b` is proven to be in the log.
    pub fn holds(&self, b: &BatchMeta) -> bool {
        let set = if b.legacy { &self.legacy } else { &self.mine };
        set.intersects(b.first_seq..=b.last_seq)
    }

    /// Records `seq` as found, as if read from the log: for tests of what uses a finding.
    #[cfg(test)]
    pub fn mark_mine(&mut self, seq: u64) {
        self.seen_mine = true;
        self.mine.insert(seq);
    }

    /// Other agents found writing under this device id: their queue ids, with the records read.
    pub fn twins(&self) -> &BTreeMap<u64, u64> {
        &self.twins
    }

    /// Queue ids of [`Found::twins`], for a log line.
    pub fn twin_ids(&self) -> BTreeSet<String> {
        self.twins
            .keys()
            .map(|&q| kedge_wire::record::format_queue_id(q))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kedge_wire::batch::{BatchCompression, ProducerIdentity, encode_batch};
    use kedge_wire::record::{Record, SequencedRecord};
    use proptest::prelude::*;

    const P: ProducerIdentity = ProducerIdentity {
        producer_id: 7,
        producer_epoch: 0,
    };

    fn origin(device: &str, queue: u64) -> Origin {
        Origin {
            device: device.into(),
            queue,
        }
    }

    /// A batch of `n` records from `first_seq` written by `o`, with its metadata.
    fn batch(o: &Origin, no: u64, base: i32, first_seq: u64, n: u64) -> (BatchMeta, Bytes) {
        batch_in(BatchCompression::Zstd, o, no, base, first_seq, n)
    }

    /// [`batch`] in `codec`.
    fn batch_in(
        codec: BatchCompression,
        o: &Origin,
        no: u64,
        base: i32,
        first_seq: u64,
        n: u64,
    ) -> (BatchMeta, Bytes) {
        let recs: Vec<SequencedRecord> = (first_seq..first_seq + n)
            .map(|seq| SequencedRecord {
                seq,
                record: Record {
                    topic: "t".into(),
                    key: None,
                    value: Bytes::from(format!("v{seq}")),
                    headers: vec![],
                    timestamp_ms: 1,
                },
            })
            .collect();
        let bytes = encode_batch(P, base, o, &recs, codec).unwrap();
        let meta = BatchMeta {
            batch_no: no,
            topic: "t".into(),
            partition: 0,
            producer: P,
            base_sequence: base,
            record_count: n as i32,
            first_seq,
            last_seq: first_seq + n - 1,
            len: bytes.len() as u32,
            legacy: false,
        };
        (meta, bytes)
    }

    /// A log as a broker returns it: entries back to back with offsets assigned.
    fn log_of(batches: &[&Bytes]) -> Bytes {
        let mut out = Vec::new();
        let mut offset = 0i64;
        for b in batches {
            let mut bytes = b.to_vec();
            let count = i32::from_be_bytes(bytes[57..61].try_into().unwrap());
            bytes[..8].copy_from_slice(&offset.to_be_bytes());
            offset += i64::from(count);
            out.extend_from_slice(&bytes);
        }
        Bytes::from(out)
    }

    #[test]
    fn seq_ranges_merge_runs_and_answer_intersections() {
        let mut s = SeqRanges::default();
        for seq in [5, 7, 6, 1, 2, 10, u64::MAX, 0] {
            s.insert(seq);
        }
        assert_eq!(s.runs(), 4, "0..=2, 5..=7, 10, MAX: {s:?}");
        assert!(s.intersects(3..=5) && s.intersects(7..=9) && s.intersects(0..=0));
        assert!(!s.intersects(3..=4) && !s.intersects(8..=9) && !s.intersects(11..=100));
        assert!(s.intersects(u64::MAX..=u64::MAX));
        let (first, last) = (9, 8);
        assert!(
            !s.intersects(first..=last),
            "an empty range intersects nothing"
        );
    }

    proptest! {
        #[test]
        fn seq_ranges_agree_with_a_plain_set(
            seqs in proptest::collection::vec(0u64..200, 0..100),
            probes in proptest::collection::vec((0u64..210, 0u64..20), 1..30),
        ) {
            let mut ranges = SeqRanges::default();
            let mut plain = std::collections::BTreeSet::new();
            for s in seqs {
                ranges.insert(s);
                plain.insert(s);
            }
            for (first, len) in probes {
                let last = first + len;
                prop_assert_eq!(
                    ranges.intersects(first..=last),
                    plain.range(first..=last).next().is_some()
                );
            }
        }
    }

    #[test]
    fn a_scan_finds_this_queues_batches_and_nothing_else() {
        let me = origin("dev", 1);
        let (a, a_bytes) = batch(&me, 1, 0, 100, 3);
        let (b, b_bytes) = batch(&me, 2, 3, 103, 2);
        let (c, _) = batch(&me, 3, 5, 105, 4);
        let mut found = Found::new(me.clone(), 100..=108);
        let next = found.add_fetched(&log_of(&[&a_bytes, &b_bytes])).unwrap();
        assert_eq!(next, Some(5));
        assert!(found.holds(&a) && found.holds(&b) && !found.holds(&c));
        assert!(found.twins().is_empty());
    }

    #[test]
    fn the_same_device_and_seq_from_another_queue_or_device_prove_nothing() {
        let me = origin("raspberrypi", 1);
        let (mine, _) = batch(&me, 1, 0, 0, 3);
        // An earlier incarnation of this device's queue numbered from 0 as well, and another
        // board with the default hostname did too.
        let (_, old) = batch(&origin("raspberrypi", 2), 1, 0, 0, 3);
        let (_, other) = batch(&origin("raspberrypi-2", 1), 1, 0, 0, 3);
        let mut found = Found::new(me, 0..=2);
        found.add_fetched(&log_of(&[&old, &other])).unwrap();
        assert!(
            !found.holds(&mine),
            "another queue's records acknowledged ours"
        );
        assert!(found.twins().is_empty(), "records before ours are history");
    }

    #[test]
    fn another_queue_writing_after_this_one_is_a_twin() {
        let me = origin("raspberrypi", 1);
        let (first, first_bytes) = batch(&me, 1, 0, 0, 2);
        let (_, twin) = batch(&origin("raspberrypi", 9), 1, 0, 40, 2);
        let mut found = Found::new(me, 0..=10);
        found.add_fetched(&log_of(&[&first_bytes, &twin])).unwrap();
        assert!(found.holds(&first));
        assert_eq!(found.twins(), &BTreeMap::from([(9, 2)]));
    }

    /// A batch as a kedge before queue ids wrote it: `kedge-device` and `kedge-seq` only.
    fn legacy_batch(device: &str, first_seq: u64, n: u64) -> Bytes {
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{
            Compression, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<KRecord> = (0..n)
            .map(|i| KRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: P.producer_id,
                producer_epoch: P.producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1,
                key: None,
                value: Some(Bytes::new()),
                headers: [
                    (HEADER_DEVICE, Bytes::copy_from_slice(device.as_bytes())),
                    (HEADER_SEQ, Bytes::from((first_seq + i).to_string())),
                ]
                .into_iter()
                .map(|(n, v)| (StrBytes::from_static_str(n), Some(v)))
                .collect(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf.freeze()
    }

    #[test]
    fn another_queue_stamped_after_this_one_was_created_is_a_twin() {
        // The test batches are stamped at 1 ms.
        let me = origin("raspberrypi", 1);
        let (_, twin) = batch(&origin("raspberrypi", 9), 1, 0, 40, 2);
        let mut found = Found::new(me.clone(), 0..=10).created_at(Some(0));
        found.add_fetched(&log_of(&[&twin])).unwrap();
        assert_eq!(found.twins(), &BTreeMap::from([(9, 2)]));
        let mut found = Found::new(me, 0..=10).created_at(Some(5));
        found.add_fetched(&log_of(&[&twin])).unwrap();
        assert!(
            found.twins().is_empty(),
            "stamped before this queue existed"
        );
    }

    #[test]
    fn legacy_batches_match_records_without_a_queue_id_only() {
        let me = origin("dev", 1);
        let (mut old, mine_bytes) = batch(&me, 1, 0, 0, 2);
        old.legacy = true;
        let mut found = Found::new(me.clone(), 0..=5);
        found.add_fetched(&log_of(&[&mine_bytes])).unwrap();
        assert!(
            !found.holds(&old),
            "a record with a queue id is no legacy record"
        );
        let mut found = Found::new(me, 0..=5);
        found
            .add_fetched(&log_of(&[&legacy_batch("dev", 0, 2)]))
            .unwrap();
        assert!(found.holds(&old));
        let current = BatchMeta {
            legacy: false,
            ..old
        };
        assert!(
            !found.holds(&current),
            "a legacy record proves no current batch"
        );
    }

    #[test]
    fn records_outside_the_window_are_not_kept() {
        let me = origin("dev", 1);
        let (_, bytes) = batch(&me, 1, 0, 0, 50);
        let mut found = Found::new(me, 10..=12);
        found.add_fetched(&log_of(&[&bytes])).unwrap();
        assert_eq!(found.mine.runs(), 1);
        assert!(!found.mine.intersects(0..=9) && !found.mine.intersects(13..=49));
    }

    #[test]
    fn undecodable_batches_and_old_formats_are_skipped_not_fatal() {
        let me = origin("dev", 1);
        let (a, a_bytes) = batch(&me, 1, 0, 0, 2);
        // Another producer's batch claiming gzip (attributes = 1) with a body nobody decodes,
        // its CRC made valid as a broker would have checked it.
        let mut gzip = a_bytes.to_vec();
        gzip[22] = 1;
        gzip[61..].fill(0xAB);
        let crc = crc32c::crc32c(&gzip[21..]);
        gzip[17..21].copy_from_slice(&crc.to_be_bytes());
        // An old-format (magic 1) message set entry: offset, size, crc, magic, attributes...
        let mut v1 = Vec::new();
        v1.extend_from_slice(&0i64.to_be_bytes());
        let body = [
            0u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ];
        v1.extend_from_slice(&(body.len() as i32).to_be_bytes());
        v1.extend_from_slice(&body);
        let mut log = log_of(&[&Bytes::from(gzip)]).to_vec();
        log.extend_from_slice(&v1);
        log.extend_from_slice(&log_of(&[&a_bytes]));
        let mut found = Found::new(me, 0..=1);
        found.add_fetched(&Bytes::from(log)).unwrap();
        assert_eq!((found.skipped, found.undecodable), (1, 1));
        assert!(found.undecodable_reason.as_ref().unwrap().contains("gzip"));
        assert!(found.holds(&a));
    }

    /// A queue that changed `kafka.compression` has batches of several codecs in the log.
    #[test]
    fn batches_are_found_in_every_codec() {
        let me = origin("dev", 1);
        let codecs = [
            BatchCompression::None,
            BatchCompression::Gzip,
            BatchCompression::Snappy,
            BatchCompression::Lz4,
            BatchCompression::Zstd,
        ];
        let batches: Vec<_> = (0..)
            .zip(codecs)
            .map(|(i, codec)| batch_in(codec, &me, i, 2 * i as i32, 2 * i, 2))
            .collect();
        let log = log_of(&batches.iter().map(|(_, b)| b).collect::<Vec<_>>());
        let mut found = Found::new(me, 0..=9);
        found.add_fetched(&log).unwrap();
        for (meta, _) in &batches {
            assert!(found.holds(meta), "batch {}", meta.batch_no);
        }
        assert_eq!((found.skipped, found.undecodable), (0, 0));
    }

    /// A broker's base offset at the top of the range with a last offset delta of i32::MAX
    /// put the entry's last offset at i64::MAX, and "the offset after it" overflowed: a panic
    /// with overflow checks, a wrap to i64::MIN without.
    #[test]
    fn an_entry_ending_at_the_largest_offset_is_an_error() {
        let me = origin("dev", 1);
        let (_, bytes) = batch(&me, 1, 0, 0, 2);
        let mut entry = bytes.to_vec();
        entry[..8].copy_from_slice(&(i64::MAX - i64::from(i32::MAX)).to_be_bytes());
        entry[23..27].copy_from_slice(&i32::MAX.to_be_bytes()); // last offset delta
        let e = Found::new(me, 0..=1)
            .add_fetched(&Bytes::from(entry))
            .unwrap_err();
        assert!(matches!(e, BatchError::InvalidBaseOffset(_)), "{e}");
    }

    #[test]
    fn a_partial_trailing_entry_is_left_for_the_next_fetch() {
        let me = origin("dev", 1);
        let (a, a_bytes) = batch(&me, 1, 0, 0, 2);
        let (b, b_bytes) = batch(&me, 2, 2, 2, 2);
        let log = log_of(&[&a_bytes, &b_bytes]);
        let cut = log.slice(..log.len() - 5);
        let mut found = Found::new(me.clone(), 0..=3);
        assert_eq!(found.add_fetched(&cut).unwrap(), Some(2));
        assert!(found.holds(&a) && !found.holds(&b));
        assert_eq!(
            Found::new(me, 0..=3).add_fetched(&log.slice(..10)).unwrap(),
            None
        );
    }
}
