//! Disk budget: how many bytes the queue may hold, and what a full queue does.
//!
//! sled never returns space to the filesystem and its files carry garbage awaiting reuse, so
//! the size of its directory says little about what is pending. The queue therefore counts the
//! bytes it really holds (journal chunks plus sealed batches, kept in memory and measured once
//! at open) against `max_bytes`, and also treats the filesystem as full when less than
//! `min_free` is left: sled poisons itself on ENOSPC (ARCHITECTURE.md §8), so it must never get there.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{META_SEQ_FLOOR, Queue, QueueError, chunk, segments, tx_u64};
use kedge_wire::record::Record;

/// Meta key prefix of the per-topic drop counters (`dropped\0<topic>` → u64 big-endian).
pub(super) const META_DROPPED: &[u8] = b"dropped\0";

/// What a full queue does with new records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Commit nothing until there is room: the source's acknowledgements stop.
    Backpressure,
    /// Delete the oldest records not yet sealed into a batch.
    DropOldest,
    /// Acknowledge and discard the new records.
    DropNewest,
}

/// The queue's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most bytes of chunks and sealed batches the queue may hold.
    pub max_bytes: u64,
    /// The queue is full while its filesystem has less than this free.
    pub min_free: u64,
    /// What to do when full.
    pub policy: FullPolicy,
}

/// The outcome of [`Queue::make_room`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Whether the records (what is left of them) may be committed now.
    pub admitted: bool,
    /// Records dropped to make room (or instead of committing), per topic.
    pub dropped: BTreeMap<String, u64>,
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between 32- and 64-bit targets
    Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// Bytes the files in `dir` and its subdirectories (sled's `blobs/`) occupy on disk.
pub fn dir_size(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // sled deletes blob files as it rewrites pages: a vanished file counts as nothing.
        let Ok(m) = entry.metadata() else {
            continue;
        };
        if m.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += m.blocks() * 512;
        }
    }
    Ok(total)
}

/// The default `max_bytes`: half of what the queue could use (free space plus its own files),
/// and never more than that minus `min_free`.
pub fn default_max_bytes(free: u64, queue_on_disk: u64, min_free: u64) -> u64 {
    let usable = free.saturating_add(queue_on_disk);
    (usable / 2).min(usable.saturating_sub(min_free))
}

impl Queue {
    /// Bytes of journal chunks and sealed batches the queue holds.
    pub fn live_bytes(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Decides whether `records` may be committed under `budget`, dropping records as its
    /// policy says when the queue is full. Under drop-newest `records` is emptied.
    pub fn make_room(
        &self,
        budget: &Budget,
        records: &mut Vec<Record>,
    ) -> Result<Room, QueueError> {
        let incoming: u64 = records.iter().map(approx_size).sum();
        let mut room = Room::default();
        if self.fits(budget, incoming) {
            room.admitted = true;
            return Ok(room);
        }
        match budget.policy {
            FullPolicy::Backpressure => {}
            FullPolicy::DropNewest => {
                for r in records.drain(..) {
                    *room.dropped.entry(r.topic).or_default() += 1;
                }
                self.count_dropped(&room.dropped)?;
                room.admitted = true;
            }
            FullPolicy::DropOldest => {
                while !self.fits(budget, incoming) {
                    if !self.drop_oldest_chunk(&mut room.dropped)? {
                        // Everything left is sealed: those batches carry producer sequences,
                        // and deleting one would leave a gap Kafka rejects. Wait instead.
                        break;
                    }
                }
                room.admitted = self.fits(budget, incoming);
            }
        }
        Ok(room)
    }

    /// Records dropped by the full-queue policy since the queue was created, per topic.
    pub fn dropped_records(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        let mut out = BTreeMap::new();
        for item in self.meta.scan_prefix(META_DROPPED) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let n = <[u8; 8]>::try_from(v.as_ref()).map_or(0, u64::from_be_bytes);
            let topic = String::from_utf8_lossy(&k[META_DROPPED.len()..]).into_owned();
            out.insert(topic, n);
        }
        Ok(out)
    }

    fn fits(&self, budget: &Budget, incoming: u64) -> bool {
        let under_max = self.live_bytes().saturating_add(incoming) <= budget.max_bytes;
        // A failing statvfs must not stop the queue; the byte budget still holds.
        let disk_ok = free_bytes(&self.path).map_or(true, |f| f >= budget.min_free);
        under_max && disk_ok
    }

    fn count_dropped(&self, dropped: &BTreeMap<String, u64>) -> Result<(), QueueError> {
        let result: Result<(), TransactionError<Infallible>> = self.meta.transaction(|meta| {
            for (topic, n) in dropped {
                let key = dropped_key(topic);
                let old = tx_u64(meta, &key)?;
                meta.insert(key, &(old + n).to_be_bytes())?;
            }
            Ok::<(), ConflictableTransactionError<Infallible>>(())
        });
        self.infallible(result)
    }

    /// Deletes the oldest journal chunk, counting its records per topic into `dropped`; false
    /// when the journal is empty. A seal that read the chunk before it went is refused
    /// ([`QueueError::ChunkGone`]); a seal that took it first leaves nothing to count.
    fn drop_oldest_chunk(&self, dropped: &mut BTreeMap<String, u64>) -> Result<bool, QueueError> {
        // The oldest of the first commit and the first chunk set aside for each stuck partition:
        // a partition stuck for days must not make the queue drop newer records instead.
        let mut oldest: Option<(u64, sled::IVec, sled::IVec)> = None;
        let first_commit = self
            .journal
            .range(..[super::PARKED].as_slice())
            .next()
            .transpose()
            .map_err(|e| self.db_err(e))?;
        let parked_heads = self.parked_partitions()?.into_values().filter_map(|k| {
            let v = self.journal.get(&k).ok()??;
            Some((sled::IVec::from(k), v))
        });
        for (k, v) in first_commit.into_iter().chain(parked_heads) {
            // A damaged header is dropped first: it is lost anyway.
            let first = chunk::header(&v).map_or(0, |h| h.first_seq);
            if oldest.as_ref().is_none_or(|(o, _, _)| first < *o) {
                oldest = Some((first, k, v));
            }
        }
        let Some((_, k, v)) = oldest else {
            return Ok(false);
        };
        let (head, records) = match self.decode_chunk(&v) {
            Ok(d) => d,
            Err(chunk::ChunkError::Unreadable(e)) if !segments::means_damage(&e) => {
                return Err(self.segment_err(e));
            }
            Err(e) => {
                // Damaged anyway: quarantining it frees its space and counts it as lost.
                self.quarantine_chunk(&k, &v, &e)?;
                return Ok(true);
            }
        };
        let mut by_topic: BTreeMap<String, u64> = BTreeMap::new();
        for r in records {
            *by_topic.entry(r.record.topic).or_default() += 1;
        }
        // A seal may have taken the chunk meanwhile; only what this removal took counts.
        let taken = std::cell::RefCell::new(None);
        let result: Result<(), TransactionError<Infallible>> = (&self.journal, &self.meta)
            .transaction(|(journal, meta)| {
                let removed = journal.remove(&k)?;
                let gone = removed.is_none();
                *taken.borrow_mut() = removed;
                if gone {
                    return Ok(());
                }
                // Dropped numbers stay retired, also when this was the last chunk (a set-aside
                // chunk's numbers were retired when it was set aside).
                if !head.sparse {
                    let floor = tx_u64(meta, META_SEQ_FLOOR)?;
                    meta.insert(META_SEQ_FLOOR, &floor.max(head.end_seq()).to_be_bytes())?;
                }
                for (topic, n) in &by_topic {
                    let key = dropped_key(topic);
                    let old = tx_u64(meta, &key)?;
                    meta.insert(key, &(old + n).to_be_bytes())?;
                }
                Ok::<(), ConflictableTransactionError<Infallible>>(())
            });
        self.infallible(result)?;
        let Some(removed) = taken.into_inner() else {
            // Sealed meanwhile: delivered, not dropped; the next chunk is looked at next.
            return Ok(true);
        };
        self.release_chunk(&removed);
        tracing::warn!(
            first_seq = head.first_seq,
            records = head.count,
            "queue full: dropped the oldest journal chunk (queue.when_full = drop-oldest)"
        );
        for (topic, n) in by_topic {
            *dropped.entry(topic).or_default() += n;
        }
        Ok(true)
    }
}

/// Upper bound of a record's share of a chunk before compression: what admission charges.
fn approx_size(r: &Record) -> u64 {
    (r.topic.len()
        + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.len()
        + r.headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 6)
            .sum::<usize>()
        + 20) as u64
}

fn dropped_key(topic: &str) -> Vec<u8> {
    let mut k = META_DROPPED.to_vec();
    k.extend_from_slice(topic.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Seal, Sync};
    use bytes::Bytes;

    fn records(topic: &str, n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                topic: topic.into(),
                key: None,
                value: Bytes::from(vec![b'a' + (i % 26) as u8; 100]),
                headers: vec![],
                timestamp_ms: 0,
            })
            .collect()
    }

    fn budget(max_bytes: u64, policy: FullPolicy) -> Budget {
        Budget {
            max_bytes,
            min_free: 0,
            policy,
        }
    }

    /// A queue holding two chunks: 10 records of "a" (seq 0..10) and 5 of "b" (10..15).
    fn two_chunks(dir: &Path) -> Queue {
        let q = Queue::open(dir, 1 << 20, Sync::Relaxed, "dev").unwrap();
        q.append(0, &records("a", 10)).unwrap();
        q.append(10, &records("b", 5)).unwrap();
        q
    }

    /// The seal of [`two_chunks`]'s first chunk (records 0..10 of topic `a`) into one batch.
    fn seal_of_first_chunk() -> Seal {
        Seal {
            consumed_chunks: vec![0],
            seq_floor: 10,
            next_batch_no: 1,
            batches: vec![crate::outbox::SealedBatch {
                batch_no: 0,
                topic: "a".into(),
                partition: 0,
                producer: kedge_wire::batch::ProducerIdentity {
                    producer_id: 1,
                    producer_epoch: 0,
                },
                base_sequence: 0,
                record_count: 10,
                first_seq: 0,
                last_seq: 9,
                bytes: Bytes::from(vec![0u8; 300]),
                legacy: false,
            }],
            ..Seal::default()
        }
    }

    #[test]
    fn live_bytes_follow_appends_seals_removals_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = two_chunks(dir.path());
        let chunks = q.live_bytes();
        assert!(chunks > 0);
        assert_eq!(q.journal_records().unwrap(), 15);
        let first = q.chunk_stored_len(0);
        q.seal(&seal_of_first_chunk()).unwrap();
        let batch = q.batch_stored_len(0);
        assert_eq!(q.live_bytes(), chunks - first + batch);
        assert_eq!(q.journal_records().unwrap(), 5);
        drop(q);
        let q = Queue::open(dir.path(), 1 << 20, Sync::Relaxed, "dev").unwrap();
        assert_eq!(q.live_bytes(), chunks - first + batch);
        q.remove_batch(0).unwrap();
        assert_eq!(q.live_bytes(), chunks - first);
    }

    #[test]
    fn backpressure_admits_nothing_and_drops_nothing_while_full() {
        let dir = tempfile::tempdir().unwrap();
        let q = two_chunks(dir.path());
        let mut new = records("c", 3);
        let room = q
            .make_room(&budget(q.live_bytes(), FullPolicy::Backpressure), &mut new)
            .unwrap();
        assert_eq!(room, Room::default());
        assert_eq!(new.len(), 3);
        assert_eq!(q.journal.len(), 2);
        // Room again once delivery has freed space.
        let room = q
            .make_room(&budget(u64::MAX, FullPolicy::Backpressure), &mut new)
            .unwrap();
        assert!(room.admitted);
    }

    #[test]
    fn drop_newest_discards_and_counts_the_new_records_by_topic() {
        let dir = tempfile::tempdir().unwrap();
        let q = two_chunks(dir.path());
        let mut new = records("c", 3);
        new.extend(records("d", 2));
        let room = q
            .make_room(&budget(q.live_bytes(), FullPolicy::DropNewest), &mut new)
            .unwrap();
        assert!(room.admitted);
        assert!(new.is_empty());
        let want = BTreeMap::from([("c".to_owned(), 3), ("d".to_owned(), 2)]);
        assert_eq!(room.dropped, want);
        assert_eq!(q.dropped_records().unwrap(), want);
        assert_eq!(q.journal.len(), 2);
    }

    #[test]
    fn drop_oldest_takes_records_set_aside_for_a_stuck_partition_when_they_are_older() {
        let dir = tempfile::tempdir().unwrap();
        let q = two_chunks(dir.path());
        // The first commit (a × 10) is consumed and 3 of its records set aside for a/0, stuck.
        let aside: Vec<kedge_wire::record::SequencedRecord> = q.journal_head(1).unwrap()[0]
            .records
            .iter()
            .take(3)
            .cloned()
            .collect();
        q.seal(&Seal {
            consumed_chunks: vec![0],
            seq_floor: 10,
            next_batch_no: 1,
            parked: vec![(("a".into(), 0), aside)],
            ..Seal::default()
        })
        .unwrap();
        let mut dropped = BTreeMap::new();
        assert!(q.drop_oldest_chunk(&mut dropped).unwrap());
        assert_eq!(
            dropped,
            BTreeMap::from([("a".to_owned(), 3)]),
            "kedge-seq 0..2 were the oldest"
        );
        assert!(q.parked_partitions().unwrap().is_empty());
        assert_eq!(
            q.journal_records().unwrap(),
            5,
            "the second commit is still there"
        );
        assert_eq!(q.next_seq().unwrap(), 15);
    }

    #[test]
    fn drop_oldest_deletes_head_chunks_counts_them_and_retires_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = two_chunks(dir.path());
            let second = q.chunk_stored_len(10);
            let mut new = records("c", 1);
            let incoming: u64 = new.iter().map(approx_size).sum();
            // Room for the second chunk plus the new record: only the first chunk goes.
            let room = q
                .make_room(&budget(second + incoming, FullPolicy::DropOldest), &mut new)
                .unwrap();
            assert!(room.admitted);
            assert_eq!(new.len(), 1);
            assert_eq!(room.dropped, BTreeMap::from([("a".to_owned(), 10)]));
            assert_eq!(q.live_bytes(), second);
            // Not even an empty journal makes room: everything goes, then it waits.
            let mut big = records("c", 1);
            let room = q
                .make_room(&budget(1, FullPolicy::DropOldest), &mut big)
                .unwrap();
            assert!(!room.admitted);
            assert_eq!(room.dropped, BTreeMap::from([("b".to_owned(), 5)]));
            assert!(q.journal_is_empty());
            assert_eq!(
                q.dropped_records().unwrap(),
                BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 5)])
            );
        }
        let q = Queue::open(dir.path(), 1 << 20, Sync::Relaxed, "dev").unwrap();
        assert_eq!(
            q.next_seq().unwrap(),
            15,
            "dropped numbers are never reused"
        );
    }

    #[test]
    fn a_seal_of_a_chunk_dropped_after_it_was_read_is_refused_and_nothing_counts_twice() {
        let dir = tempfile::tempdir().unwrap();
        let q = two_chunks(dir.path());
        let seal = seal_of_first_chunk();
        // The queue fills between the producer's read and its seal.
        let mut dropped = BTreeMap::new();
        assert!(q.drop_oldest_chunk(&mut dropped).unwrap());
        assert_eq!(dropped, BTreeMap::from([("a".to_owned(), 10)]));
        let live = q.live_bytes();
        assert!(matches!(
            q.seal(&seal),
            Err(crate::SealError::NotWritten(QueueError::ChunkGone {
                first_seq: 0
            }))
        ));
        assert!(q.sealed_batches().unwrap().is_empty(), "nothing was sealed");
        assert_eq!(q.live_bytes(), live);
        assert_eq!(q.journal_records().unwrap(), 5);
        assert_eq!(
            q.dropped_records().unwrap(),
            BTreeMap::from([("a".to_owned(), 10)])
        );
    }

    #[test]
    fn the_default_budget_is_half_the_usable_space_and_keeps_the_reserve() {
        assert_eq!(default_max_bytes(1000, 0, 100), 500);
        assert_eq!(default_max_bytes(100, 20, 100), 20);
        assert_eq!(default_max_bytes(50, 0, 100), 0);
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
    }
}
