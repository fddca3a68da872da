//! Recovery: keep delivering around a damaged journal chunk instead of stalling on it, and say
//! what opening the database had to repair.
//!
//! Never crash-loop (issue #4): a database that cannot be opened is moved aside by the store
//! layer (`store::open`) and a fresh queue is started; a chunk that fails its checksum is moved
//! to the `quarantine` tree and its records counted as lost.

use std::convert::Infallible;
use std::ops::Bound;
use std::path::PathBuf;

use sled::Transactional;
use sled::transaction::TransactionError;

use super::{META_SEQ_FLOOR, Queue, QueueError, chunk, tx_u64};

/// Meta key: records lost to damaged chunks (u64, big-endian).
pub(super) const META_LOST_RECORDS: &[u8] = b"lost_records";
/// Meta key: where the last unopenable database was moved to (UTF-8 path).
pub(super) const META_QUARANTINED: &[u8] = b"quarantined";
/// Tree holding damaged journal chunks, key and raw bytes as found.
pub(super) const QUARANTINE_TREE: &str = "quarantine";
/// Key prefix, in the quarantine tree, of sealed batches that could not be read.
const QUARANTINED_BATCH: &[u8] = b"batch\0";

/// What recovery had to do while opening the queue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Interrupted snapshots moved aside before the database would open.
    pub moved_snapshots: Vec<PathBuf>,
    /// Blob files a power cut left incomplete, moved aside before the database would open.
    pub moved_blobs: Vec<PathBuf>,
    /// Where the whole database was moved because it could not be opened at all.
    pub quarantined_db: Option<PathBuf>,
}

impl Queue {
    /// Moves a journal chunk that cannot be decoded to the `quarantine` tree and counts its
    /// records as lost, so that delivery goes on with the next chunk.
    pub(super) fn quarantine_chunk(
        &self,
        key: &[u8],
        value: &[u8],
        why: &chunk::ChunkError,
    ) -> Result<(), QueueError> {
        let key_seq = <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes);
        // The header may be intact when only the body is damaged; otherwise the key gives the
        // first sequence and the next chunk bounds the range.
        let first = chunk::header(value).ok().map(|h| h.first_seq).or(key_seq);
        let end = match chunk::header(value) {
            Ok(h) => Some(h.end_seq()),
            Err(_) => self
                .journal
                .range::<&[u8], _>((Bound::Excluded(key), Bound::Unbounded))
                .next()
                .transpose()
                .map_err(|e| self.db_err(e))?
                .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
                .map(u64::from_be_bytes),
        };
        let lost = match (first, end) {
            (Some(f), Some(e)) => e.saturating_sub(f),
            _ => 0,
        };
        let floor = end.or(first.map(|f| f + 1)).unwrap_or(0);
        let quarantine = self
            .store
            .db()
            .open_tree(QUARANTINE_TREE)
            .map_err(|e| self.db_err(e))?;
        // The damaged body itself, for a human to look at, rather than a pointer to a file that
        // is deleted once nothing else points to it.
        let found = self.chunk_as_found(value);
        // A seal or drop-oldest may have removed the chunk after it was read, and then its segment
        // file went with the last pointer to it: the read failed because the chunk is gone, not
        // damaged. Only a chunk this removal takes is quarantined and counted.
        let taken = std::cell::RefCell::new(None);
        let result: Result<(), TransactionError<Infallible>> =
            (&self.journal, &self.meta, &quarantine).transaction(|(journal, meta, quarantine)| {
                let removed = journal.remove(key)?;
                let gone = removed.is_none();
                *taken.borrow_mut() = removed;
                if gone {
                    return Ok(());
                }
                quarantine.insert(key, found.as_slice())?;
                let total = tx_u64::<Infallible>(meta, META_LOST_RECORDS)? + lost;
                meta.insert(META_LOST_RECORDS, &total.to_be_bytes())?;
                // Never hand out the lost records' sequence numbers again.
                let old_floor = tx_u64(meta, META_SEQ_FLOOR)?;
                meta.insert(META_SEQ_FLOOR, &old_floor.max(floor).to_be_bytes())?;
                Ok(())
            });
        self.infallible(result)?;
        let Some(removed) = taken.into_inner() else {
            return Ok(());
        };
        self.release_chunk(&removed);
        self.sync()?;
        tracing::error!(
            error = %why,
            first_seq = ?first,
            end_seq = ?end,
            lost_records = lost,
            "QUEUE DAMAGE: a journal chunk could not be decoded; moved it to the quarantine tree, \
             its records are lost, delivering the rest"
        );
        Ok(())
    }

    /// Moves an outbox entry whose batch cannot be read to the `quarantine` tree and counts its
    /// records as lost. Kafka then sees a gap in the partition's sequence numbers, which the
    /// producer answers as after any lost batch: verify, then re-sequence under a new producer id.
    pub(super) fn quarantine_batch(
        &self,
        key: &[u8],
        entry: &[u8],
        why: &QueueError,
    ) -> Result<(), QueueError> {
        let header = super::outbox::SealedBatch::decode_header(key, entry)
            .ok()
            .map(|(b, _)| b);
        let lost = header
            .as_ref()
            .map_or(0, |b| u64::try_from(b.record_count).unwrap_or(0));
        // Apart from chunk keys, which are bare sequence numbers.
        let mut qkey = QUARANTINED_BATCH.to_vec();
        qkey.extend_from_slice(key);
        let quarantine = self
            .store
            .db()
            .open_tree(QUARANTINE_TREE)
            .map_err(|e| self.db_err(e))?;
        // As for chunks: a batch removed meanwhile (acknowledged) is not lost.
        let taken = std::cell::RefCell::new(None);
        let result: Result<(), TransactionError<Infallible>> =
            (&self.outbox, &self.meta, &quarantine).transaction(|(outbox, meta, quarantine)| {
                let removed = outbox.remove(key)?;
                let gone = removed.is_none();
                *taken.borrow_mut() = removed;
                if gone {
                    return Ok(());
                }
                quarantine.insert(qkey.as_slice(), entry)?;
                let total = tx_u64::<Infallible>(meta, META_LOST_RECORDS)? + lost;
                meta.insert(META_LOST_RECORDS, &total.to_be_bytes())?;
                Ok(())
            });
        self.infallible(result)?;
        let Some(removed) = taken.into_inner() else {
            return Ok(());
        };
        self.release_batch(key, &removed);
        self.sync()?;
        tracing::error!(
            error = %why,
            batch = ?header.as_ref().map(|b| b.batch_no),
            topic = ?header.as_ref().map(|b| &b.topic),
            partition = ?header.as_ref().map(|b| b.partition),
            lost_records = lost,
            "QUEUE DAMAGE: a sealed batch could not be read; moved it to the quarantine tree, \
             its records are lost, delivering the rest"
        );
        Ok(())
    }

    /// Deletes journal chunks from kedge-seq `from` on: a commit that failed on I/O may have
    /// reached the disk although its events were never acknowledged, and the source redelivers
    /// them; keeping the chunk would deliver them twice.
    pub fn discard_unacknowledged(&self, from: u64) -> Result<(), QueueError> {
        let mut removed = 0u64;
        // Chunks set aside for stuck partitions sort after every commit and were acknowledged
        // long before: not part of the failed commit.
        let commits = from.to_be_bytes().to_vec()..vec![super::PARKED];
        for k in self.journal.range(commits).keys() {
            let k = k.map_err(|e| self.db_err(e))?;
            if let Some(old) = self.journal.remove(&k).map_err(|e| self.db_err(e))? {
                self.release_chunk(&old);
                removed += 1;
            }
        }
        // What those commits recorded of the source goes with them: their messages come
        // again and must be journaled then, not taken for redeliveries.
        let keys = self
            .ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .discard_from(from);
        for k in &keys {
            self.inbound.remove(k).map_err(|e| self.db_err(e))?;
        }
        if removed > 0 || !keys.is_empty() {
            self.sync()?;
            tracing::warn!(
                from_seq = from,
                chunks = removed,
                "discarded journal chunks of a failed commit; their events are redelivered by the source"
            );
        }
        Ok(())
    }

    /// Records lost to damaged journal chunks since the queue was created.
    pub fn lost_records(&self) -> Result<u64, QueueError> {
        Ok(self.meta_u64(META_LOST_RECORDS)?.unwrap_or(0))
    }

    /// Damaged journal chunks and sealed batches kept in the quarantine tree.
    pub fn quarantined_chunks(&self) -> Result<usize, QueueError> {
        Ok(self
            .store
            .db()
            .open_tree(QUARANTINE_TREE)
            .map_err(|e| self.db_err(e))?
            .len())
    }

    /// Where an unopenable database was moved when this queue was started fresh, if ever.
    pub fn quarantined_db(&self) -> Result<Option<PathBuf>, QueueError> {
        let v = self
            .meta
            .get(META_QUARANTINED)
            .map_err(|e| self.db_err(e))?;
        Ok(v.map(|v| PathBuf::from(String::from_utf8_lossy(&v).into_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sync;
    use crate::store::open::{REASON_FILE, damaged_blobs};
    use bytes::Bytes;
    use kedge_wire::record::Record;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                topic: "t".into(),
                key: None,
                value: Bytes::from(format!("v{i}")),
                headers: vec![],
                timestamp_ms: 0,
            })
            .collect()
    }

    /// A data dir with the queue in `data/queue`, so quarantine folders land in the temp dir.
    fn layout() -> (tempfile::TempDir, PathBuf) {
        let data = tempfile::tempdir().unwrap();
        let q = data.path().join("queue");
        (data, q)
    }

    /// Two chunks (seqs 0..3 and 3..5) with their bodies in a segment file, where the tests
    /// damage them.
    fn filled(dir: &Path) {
        let q = Queue::open(dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        q.set_inline_max(0);
        q.append(0, &records(3)).unwrap();
        q.append(3, &records(2)).unwrap();
        q.sync().unwrap();
    }

    fn seqs(q: &Queue) -> Vec<u64> {
        q.journal_head(100)
            .unwrap()
            .iter()
            .flat_map(|c| c.records.iter().map(|r| r.seq))
            .collect()
    }

    #[test]
    fn a_leftover_generating_snapshot_is_moved_aside_and_nothing_is_lost() {
        let (data, dir) = layout();
        filled(&dir);
        // Sorts after every real snapshot, so sled reads it first and reports corruption.
        std::fs::write(dir.join("snap.FFFFFFFFFFFFFFFF.generating"), [7u8; 64]).unwrap();
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        assert_eq!(q.recovery().moved_snapshots.len(), 1);
        assert!(q.recovery().moved_snapshots[0].exists());
        assert!(q.recovery().moved_snapshots[0].starts_with(data.path().join("quarantine")));
        assert_eq!(q.recovery().quarantined_db, None);
        assert_eq!(seqs(&q), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn blob_files_a_power_cut_left_incomplete_are_found_and_intact_ones_kept() {
        let (_data, dir) = layout();
        {
            let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
            // Chunk bodies live in segment files or in small entries, but a queue written by an
            // older kedge, or a large damaged chunk kept in the quarantine tree, still makes sled
            // write a blob.
            let mut noise = vec![0u8; 300_000];
            rand::RngCore::fill_bytes(
                &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7),
                &mut noise,
            );
            let quarantine = q.store.db().open_tree(QUARANTINE_TREE).unwrap();
            quarantine.insert(0u64.to_be_bytes(), noise).unwrap();
            q.sync().unwrap();
        }
        let blobs = dir.join("blobs");
        let intact: Vec<PathBuf> = std::fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!intact.is_empty(), "the big record made no blob file");
        assert_eq!(damaged_blobs(&dir).unwrap(), Vec::<PathBuf>::new());
        let bytes = std::fs::read(&intact[0]).unwrap();
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        let damaged = [
            ("1", Vec::new()),
            ("2", bytes[..3].to_vec()),
            ("3", bytes[..bytes.len() - 1].to_vec()),
            ("4", flipped),
        ];
        for (name, content) in &damaged {
            std::fs::write(blobs.join(name), content).unwrap();
        }
        let mut found = damaged_blobs(&dir).unwrap();
        found.sort();
        let want: Vec<PathBuf> = damaged.iter().map(|(n, _)| blobs.join(n)).collect();
        assert_eq!(found, want);
    }

    #[test]
    fn an_unopenable_database_is_quarantined_and_a_fresh_queue_starts() {
        let (data, dir) = layout();
        filled(&dir);
        // A damaged finished snapshot is not a leftover: only quarantining the whole queue helps.
        std::fs::write(dir.join("snap.FFFFFFFFFFFFFFFF"), [7u8; 64]).unwrap();
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        let moved = q.recovery().quarantined_db.clone().expect("quarantined");
        assert!(moved.join("db").exists());
        assert!(moved.starts_with(data.path().join("quarantine")));
        assert!(moved.parent().unwrap().join(REASON_FILE).exists());
        assert!(q.journal_is_empty());
        drop(q);
        // The marker outlives a restart, for a later health check.
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        assert_eq!(q.quarantined_db().unwrap(), Some(moved));
        assert_eq!(q.recovery(), &Recovery::default());
    }

    #[test]
    fn a_garbage_chunk_is_quarantined_and_the_rest_delivered() {
        let (_data, dir) = layout();
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        q.append(0, &records(3)).unwrap();
        q.journal
            .insert(3u64.to_be_bytes(), vec![0xAB; 100])
            .unwrap();
        q.append(10, &records(2)).unwrap();
        q.sync().unwrap();
        assert_eq!(seqs(&q), vec![0, 1, 2, 10, 11]);
        // The garbage header gives no count: the next chunk bounds the range 3..10.
        assert_eq!(q.lost_records().unwrap(), 7);
        assert_eq!(q.quarantined_chunks().unwrap(), 1);
        let kept = q
            .store
            .db()
            .open_tree(QUARANTINE_TREE)
            .unwrap()
            .get(3u64.to_be_bytes())
            .unwrap();
        assert_eq!(kept.as_deref(), Some(&[0xAB; 100][..]));
    }

    #[test]
    fn a_chunk_failing_its_checksum_counts_its_records_and_keeps_its_numbers_retired() {
        let (_data, dir) = layout();
        {
            let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
            q.append(0, &records(3)).unwrap();
            let mut bad = chunk::encode(3, &records(4)).unwrap();
            let last = bad.len() - 1;
            bad[last] ^= 0xFF;
            q.journal.insert(3u64.to_be_bytes(), bad).unwrap();
            q.sync().unwrap();
            assert_eq!(seqs(&q), vec![0, 1, 2]);
            assert_eq!(q.lost_records().unwrap(), 4);
        }
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        assert_eq!(q.lost_records().unwrap(), 4);
        assert_eq!(q.next_seq().unwrap(), 7);
    }

    #[test]
    fn a_truncated_data_file_never_panics_and_always_opens() {
        for keep in [0u64, 13, 100, 4096, 20_000] {
            let (_data, dir) = layout();
            {
                let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
                for i in 0..200u64 {
                    q.append(i * 10, &records(10)).unwrap();
                }
                q.sync().unwrap();
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("db"))
                .unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(keep.min(len)).unwrap();
            drop(f);
            let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev")
                .unwrap_or_else(|e| panic!("truncated to {keep}: {e}"));
            // Whatever survived decodes, in order.
            let got = seqs(&q);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "{keep}: {got:?}");
        }
    }

    /// The segment file and the end of the second chunk's body in it, of a [`filled`] queue.
    fn second_body_end(dir: &Path) -> (PathBuf, u64) {
        let q = Queue::open(dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        let entry = q.journal.get(3u64.to_be_bytes()).unwrap().unwrap();
        let loc = chunk::location(&entry).unwrap();
        let seg = dir
            .join(super::super::segments::DIR)
            .join(format!("{:016x}.seg", loc.segment));
        (seg, loc.offset + u64::from(loc.len))
    }

    /// What reopening a [`filled`] queue whose second body was damaged must give: the first
    /// chunk delivered, the second quarantined and counted lost, its sequence numbers not reused.
    fn second_chunk_is_lost_and_the_rest_kept(dir: &Path) {
        let q = Queue::open(dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        assert_eq!(seqs(&q), vec![0, 1, 2]);
        assert_eq!(q.lost_records().unwrap(), 2);
        assert_eq!(q.quarantined_chunks().unwrap(), 1);
        assert_eq!(q.next_seq().unwrap(), 5);
    }

    #[test]
    fn a_chunk_whose_body_is_cut_short_is_quarantined_and_the_rest_delivered() {
        let (_data, dir) = layout();
        filled(&dir);
        // The entries survived, the end of the second body did not: what a power cut leaves when
        // sled's pages reached the disk before the segment's (never for an acknowledged chunk),
        // in a file that grew with its bodies.
        let (seg, end) = second_body_end(&dir);
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(end - 10).unwrap();
        drop(f);
        second_chunk_is_lost_and_the_rest_kept(&dir);
    }

    #[test]
    fn a_body_never_written_is_named_missing_and_its_pointer_quarantined_not_the_zeros() {
        let (_data, dir) = layout();
        filled(&dir);
        let (seg, end) = second_body_end(&dir);
        let (entry, len) = {
            let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
            let entry = q.journal.get(3u64.to_be_bytes()).unwrap().unwrap().to_vec();
            let len = chunk::location(&entry).unwrap().len;
            (entry, len)
        };
        // The whole body reads as the zeros written ahead of it.
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&vec![0u8; len as usize], end - u64::from(len))
            .unwrap();
        drop(f);
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        assert!(matches!(
            q.decode_chunk(&entry),
            Err(chunk::ChunkError::Missing)
        ));
        assert_eq!(seqs(&q), vec![0, 1, 2]);
        assert_eq!(q.lost_records().unwrap(), 2);
        let quarantine = q.store.db().open_tree(QUARANTINE_TREE).unwrap();
        let kept: Vec<_> = quarantine.iter().values().map(|v| v.unwrap()).collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0].as_ref(),
            entry.as_slice(),
            "the pointer, not the zeros"
        );
    }

    #[test]
    fn a_chunk_whose_body_ends_in_zeros_is_quarantined_and_the_rest_delivered() {
        let (_data, dir) = layout();
        filled(&dir);
        // The same power cut in a file written with zeros ahead of its bodies
        // (`segments::FILL_STEP`): the end of the body reads as the zeros it never replaced.
        let (seg, end) = second_body_end(&dir);
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        assert!(f.metadata().unwrap().len() > end, "zeros follow the bodies");
        f.write_all_at(&[0u8; 10], end - 10).unwrap();
        drop(f);
        second_chunk_is_lost_and_the_rest_kept(&dir);
    }

    #[test]
    fn a_segment_that_fails_to_read_for_another_reason_is_an_error_not_a_loss() {
        let (_data, dir) = layout();
        filled(&dir);
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        // Something other than a file where the segment should be: an I/O failure to report,
        // not a body a power cut took.
        let seg = dir
            .join(super::super::segments::DIR)
            .join("0000000000000000.seg");
        let aside = dir.join("aside");
        std::fs::rename(&seg, &aside).unwrap();
        std::fs::create_dir(&seg).unwrap();
        let err = q.journal_head(10).expect_err("unreadable");
        assert!(matches!(err, QueueError::Io { .. }), "{err}");
        assert_eq!(q.lost_records().unwrap(), 0);
        std::fs::remove_dir(&seg).unwrap();
        std::fs::rename(&aside, &seg).unwrap();
        assert_eq!(seqs(&q), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_sealed_batch_that_cannot_be_read_is_quarantined_and_the_rest_delivered() {
        let (_data, dir) = layout();
        {
            let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
            q.set_inline_max(0);
            let batch = |no: u64, fill: u8| crate::outbox::SealedBatch {
                batch_no: no,
                topic: "t".into(),
                partition: 0,
                producer: kedge_wire::batch::ProducerIdentity {
                    producer_id: 1,
                    producer_epoch: 0,
                },
                base_sequence: no as i32 * 4,
                record_count: 4,
                first_seq: no * 4,
                last_seq: no * 4 + 3,
                bytes: Bytes::from(vec![fill; 100]),
                legacy: false,
            };
            q.seal(&crate::Seal {
                batches: vec![batch(0, 1), batch(1, 2)],
                next_batch_no: 2,
                ..crate::Seal::default()
            })
            .unwrap();
        }
        // Flip a byte of the first batch's bytes, at the start of the only segment file.
        let seg = dir
            .join(super::super::segments::DIR)
            .join("0000000000000000.seg");
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        let left: Vec<u64> = q
            .sealed_batches()
            .unwrap()
            .iter()
            .map(|b| b.batch_no)
            .collect();
        assert_eq!(left, vec![1]);
        assert_eq!(q.lost_records().unwrap(), 4);
        assert_eq!(q.quarantined_chunks().unwrap(), 1);
        assert_eq!(q.live_bytes(), q.batch_stored_len(1));
        drop(q);
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        assert_eq!(q.sealed_batches().unwrap().len(), 1, "quarantined for good");
    }

    #[test]
    fn a_chunk_or_batch_removed_before_its_failed_read_is_neither_lost_nor_quarantined() {
        let (_data, dir) = layout();
        filled(&dir);
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        let key = 0u64.to_be_bytes();
        let entry = q.journal.get(key).unwrap().unwrap();
        // A seal takes the chunk after the reader got its entry, and its file goes.
        q.seal(&crate::Seal {
            consumed_chunks: vec![0],
            seq_floor: 3,
            next_batch_no: 1,
            ..crate::Seal::default()
        })
        .unwrap();
        let gone = chunk::ChunkError::Unreadable(std::io::ErrorKind::NotFound.into());
        q.quarantine_chunk(&key, &entry, &gone).unwrap();
        let why = QueueError::Codec("unreadable".into());
        q.quarantine_batch(&7u64.to_be_bytes(), b"whatever", &why)
            .unwrap();
        assert_eq!(q.lost_records().unwrap(), 0);
        assert_eq!(q.quarantined_chunks().unwrap(), 0);
        assert_eq!(seqs(&q), vec![3, 4]);
    }

    #[test]
    fn chunks_of_a_failed_commit_are_discarded_and_the_acknowledged_kept() {
        let (_data, dir) = layout();
        let q = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        q.append(0, &records(3)).unwrap();
        q.append(3, &records(2)).unwrap();
        let before = q.live_bytes();
        let failed = q.chunk_stored_len(3);
        q.discard_unacknowledged(3).unwrap();
        assert_eq!(seqs(&q), vec![0, 1, 2]);
        assert_eq!(q.live_bytes(), before - failed);
        q.discard_unacknowledged(100).unwrap();
        assert_eq!(seqs(&q), vec![0, 1, 2]);
    }

    #[test]
    fn a_queue_held_by_another_opener_is_reported_in_use_with_its_pid() {
        let (_data, dir) = layout();
        let _held = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev").unwrap();
        let err = Queue::open(&dir, 1 << 20, Sync::Fsync, "dev")
            .err()
            .expect("in use");
        assert!(
            matches!(err, QueueError::InUse { pid: Some(p), .. } if p == std::process::id()),
            "{err}"
        );
        assert!(err.to_string().contains("in use by a running kedge"));
    }
}
