//! kedge's durable queue: the journal of what was received, the outbox of sealed Kafka batches
//! and the producer state, kept so that a crash or power cut loses nothing acknowledged. It
//! depends only on `kedge-wire`'s codec types, and nothing outside it names sled: its store
//! layer (`store/`) opens and repairs the database, makes flushes durable and names errors in
//! kedge's terms.
//!
//! The entries live in one sled database, with the bodies of chunks and batches in segment
//! files beside it, except small bodies, which sled holds in the entry itself (see
//! [`INLINE_MAX`]).
//!
//! Trees: `journal` (first kedge-seq, big-endian → chunk header and its body or where it
//! lies), `outbox` (batch number → sealed batch header and its bytes or where they lie) and
//! `meta` (device id, producer identity, per-partition next sequence, counters). A seal moves records from the
//! journal to the outbox in one sled transaction across the three trees. Bodies in
//! [`segments`] are made durable before the entries that point to them (see there for why).
//! Tree `inbound` holds what the source received ([`inbound`]), committed with the journal.

pub mod budget;
pub mod chunk;
#[cfg(test)]
mod defect_tests;
pub mod inbound;
pub mod outbox;
mod recovery;
mod segments;
mod store;
pub mod tools;
// One counting allocator for the tests of every crate that needs it, kept in one file.
#[cfg(test)]
#[path = "../../base/test_heap.rs"]
mod test_heap;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kedge_wire::batch::ProducerIdentity;
use kedge_wire::record::{Origin, Record, SequencedRecord};
use outbox::{BatchMeta, SealedBatch};
pub use recovery::Recovery;
use segments::{Location, Segments};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use store::Store;
pub use store::StoreError;

const META_DEVICE: &[u8] = b"device";
const META_QUEUE_ID: &[u8] = b"queue_id";
const META_QUEUE_CREATED: &[u8] = b"queue_created_ms";
const META_PRODUCER: &[u8] = b"producer";
const META_SEQ_FLOOR: &[u8] = b"seq_floor";
const META_BATCH_NO: &[u8] = b"batch_no";
const META_NEXT_SEQUENCE: &[u8] = b"nextseq\0";
const META_ACKED_OFFSET: &[u8] = b"acked\0";

/// First byte of the journal keys of records set aside for a stuck partition
/// ([`Seal::parked`]). A commit's key is its first kedge-seq in 8 bytes, far below this, so
/// every set-aside chunk sorts after every commit, grouped by partition.
const PARKED: u8 = 0xFF;

/// Largest sled entry that holds its chunk or batch body (the body and its header) instead of
/// pointing to it in a segment file. A body in a segment must be fdatasynced before the entry
/// that points to it is written, and then sled is flushed and synced: two syncs, each writing
/// at least a page. A body in its entry needs the second only, so small commits and seals
/// (compressible readings: about a hundred fit) wait for one sync. sled writes the body
/// with its leaf, though, whenever it rewrites the whole leaf (at every tenth change to it, and
/// at a split), so the bytes written fall by less than the syncs. Not larger: a sled leaf
/// splits past 16 entries (a merge can leave about 20), and 20 such entries (about 85 KiB)
/// stay below the size at which sled writes a page to a blob file of its own (a quarter of
/// its 512 KiB segment): sled deletes a replaced blob before the page that replaces it is
/// durable, so a power cut can lose both (README, limits). A test checks that no blob is
/// written.
pub const INLINE_MAX: usize = 4096;

/// About the most bytes of entries holding their bodies at once (a commit and a seal may both
/// pass the check before either is counted; entries of older queues count from the open).
/// Above it bodies go to segment files again, so that a backlog (an outage at a low rate is
/// all small commits) lives in segment files and not in sled, whose cache would hold it
/// (ARCHITECTURE.md §6).
pub const INLINE_BUDGET: u64 = 1 << 20;

/// What kedge acknowledges on: see `queue.durability` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// sled flush, then `fdatasync` of the data file: survives power loss.
    Fsync,
    /// sled flush only (`sync_file_range`): survives a crash of kedge, not a power cut.
    Relaxed,
}

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database failed (I/O, a full disk, damage).
    #[error("queue database at {path}: {source}")]
    Db {
        /// Directory of the database.
        path: PathBuf,
        /// What failed, in kedge's terms.
        source: StoreError,
    },
    /// An I/O error outside sled (the fdatasync of the data file).
    #[error("queue data file {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The queue belongs to another device: its producer state must not be shared.
    #[error(
        "the queue at {path} belongs to device {stored:?}, not {configured:?}; a copied data \
         directory would duplicate or lose records. Use the original device id, or move the \
         directory away to start a fresh queue"
    )]
    WrongDevice {
        /// Directory of the database.
        path: PathBuf,
        /// Device id stored in the queue.
        stored: String,
        /// Device id in the config.
        configured: String,
    },
    /// A chunk the seal was built from is gone: the full-queue policy `drop-oldest` dropped it
    /// (and counted its records) after it was read. Nothing was written; plan the seal again.
    #[error("journal chunk {first_seq} was dropped while a seal was being built from it")]
    ChunkGone {
        /// First sequence number of the missing chunk.
        first_seq: u64,
    },
    /// Another process holds the queue open: sled locks its data file.
    #[error(
        "the queue at {path} is in use by a running kedge{}; stop it first",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// Directory of the database.
        path: PathBuf,
        /// The process holding the lock, when `/proc/locks` tells.
        pid: Option<u32>,
    },
    /// A chunk or batch could not be encoded or decoded.
    #[error("{0}")]
    Codec(String),
    /// A sealed batch's bytes are damaged: it was quarantined and its records counted as lost.
    #[error("sealed batch {batch_no} is damaged and was set aside; its records are lost")]
    BatchLost {
        /// The batch.
        batch_no: u64,
    },
}

/// Why a seal (or a resequence) did not fully happen.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Nothing was written: the queue is as it was.
    #[error(transparent)]
    NotWritten(QueueError),
    /// The transaction committed, so every later read and write builds on it, but the sync that
    /// makes it durable failed: a crash may still undo it. Its batches must not be sent before
    /// a later [`Queue::sync`] succeeds (a batch is durable before its first send).
    #[error("committed but not durable: {0}")]
    NotDurable(QueueError),
}

/// A decoded journal chunk.
#[derive(Debug)]
pub struct JournalChunk {
    /// Journal key (first kedge-seq).
    pub first_seq: u64,
    /// One past the last kedge-seq.
    pub end_seq: u64,
    /// The records, in commit order.
    pub records: Vec<SequencedRecord>,
}

/// A chunk of records set aside for a stuck partition (see [`Seal::parked`]).
#[derive(Debug)]
pub struct Parked {
    /// Its journal key.
    pub key: Vec<u8>,
    /// The records, in journal order, each with its own kedge-seq.
    pub records: Vec<SequencedRecord>,
}

/// The journal key of a chunk set aside for `topic`/`partition` whose first record is
/// `first_seq`: [`PARKED`], the topic (which cannot hold NUL: Kafka topic names are
/// `[a-zA-Z0-9._-]`), NUL, the partition and the sequence.
fn parked_key(topic: &str, partition: i32, first_seq: u64) -> Vec<u8> {
    let mut k = parked_prefix(topic, partition);
    k.extend_from_slice(&first_seq.to_be_bytes());
    k
}

fn parked_prefix(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 14);
    k.push(PARKED);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The topic and partition of a set-aside chunk's key.
fn parse_parked_key(key: &[u8]) -> Option<(String, i32)> {
    let rest = key.strip_prefix(&[PARKED])?;
    let (front, _seq) = rest.split_at(rest.len().checked_sub(8)?);
    let (front, partition) = front.split_at(front.len().checked_sub(4)?);
    let topic = front.strip_suffix(&[0])?;
    Some((
        String::from_utf8(topic.to_vec()).ok()?,
        i32::from_be_bytes(partition.try_into().ok()?),
    ))
}

/// A seal: batches to persist, the journal chunks they consume, and the sequence state after it.
#[derive(Debug, Default)]
pub struct Seal {
    /// Journal chunk keys (first kedge-seq) whose records are all in `batches`.
    pub consumed_chunks: Vec<u64>,
    /// One past the last kedge-seq consumed: the floor for sequence numbers after a restart
    /// (written only when chunks are consumed).
    pub seq_floor: u64,
    /// The sealed batches.
    pub batches: Vec<SealedBatch>,
    /// Next producer sequence per (topic, partition) after these batches.
    pub next_sequences: Vec<((String, i32), i32)>,
    /// Next batch number after these batches.
    pub next_batch_no: u64,
    /// Sealed batches these batches replace (a batch Kafka refused, moved to the dead-letter topic).
    pub removed_batches: Vec<u64>,
    /// Records of consumed chunks set aside, per partition, because that partition is stuck:
    /// kept in the journal (under keys of their own) until it can take them, so that the
    /// chunks behind them do not wait. Each becomes one chunk.
    pub parked: Vec<((String, i32), Vec<SequencedRecord>)>,
    /// Set-aside chunks whose records are in `batches` now, by journal key ([`Parked::key`]).
    pub unparked: Vec<Vec<u8>>,
    /// Per batch, in order: its record timestamps as (ms, records) runs. Not persisted: only
    /// the delivery latency histogram reads them.
    pub received: Vec<Vec<(i64, u32)>>,
    /// Records among `batches` rerouted to the dead-letter topic because their topic does not
    /// exist. Not persisted: for the counters.
    pub dead_lettered: u64,
    /// The topics they were meant for. Not persisted.
    pub missing_topics: Vec<String>,
}

/// Where a [`Queue::sync_timed`] spent its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTimes {
    /// In fdatasync of the segment files, the data file and the blob files (zero with relaxed
    /// durability).
    pub fsync: std::time::Duration,
}

/// The open queue.
pub struct Queue {
    path: PathBuf,
    store: Store,
    journal: sled::Tree,
    outbox: sled::Tree,
    meta: sled::Tree,
    inbound: sled::Tree,
    /// The `inbound` tree mirrored; locked across a commit that changes it.
    ledger: std::sync::Mutex<inbound::Ledger>,
    segments: Segments,
    /// One sync at a time: a sync must not return while another still syncs a body it covers.
    sync_lock: std::sync::Mutex<()>,
    /// Time spent syncing bodies since the last [`Queue::sync_timed`], which reports it.
    body_fsync_nanos: std::sync::atomic::AtomicU64,
    recovery: recovery::Recovery,
    /// Bytes of chunks and sealed batches held: what the disk budget counts.
    live: std::sync::atomic::AtomicU64,
    /// Bytes of entries that hold their bodies (see [`INLINE_BUDGET`]).
    inline: std::sync::atomic::AtomicU64,
    /// The largest entry that holds its body: [`INLINE_MAX`] unless set.
    inline_max: std::sync::atomic::AtomicUsize,
    /// The device and this queue's incarnation.
    origin: Origin,
    /// When this queue was created (wall clock, ms), if it was created by a kedge that noted it.
    created_ms: Option<i64>,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, bound to `device_id`.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
        sync: Sync,
        device_id: &str,
    ) -> Result<Self, QueueError> {
        let path = dir.to_path_buf();
        let db_err = |source: sled::Error| QueueError::Db {
            path: dir.to_path_buf(),
            source: source.into(),
        };
        let (store, recovery) = Store::open(dir, cache_bytes, sync == Sync::Fsync)?;
        let db = store.db();
        let journal = db.open_tree("journal").map_err(db_err)?;
        let outbox = db.open_tree("outbox").map_err(db_err)?;
        let meta = db.open_tree("meta").map_err(db_err)?;
        let inbound = db.open_tree("inbound").map_err(db_err)?;
        let ledger = inbound::Ledger::load(&inbound).map_err(db_err)?;
        let (mut live, mut inline) = (0u64, 0u64);
        let mut bodies = Vec::new();
        for item in journal.iter().values() {
            let v = item.map_err(db_err)?;
            let body = chunk::location(&v);
            live += stored_len(&v, body);
            inline += inline_len(&v, body);
            bodies.extend(body);
        }
        for item in outbox.iter() {
            let (k, v) = item.map_err(db_err)?;
            let body = batch_location(&k, &v);
            live += stored_len(&v, body);
            inline += inline_len(&v, body);
            bodies.extend(body);
        }
        let segments = Segments::open(dir, bodies).map_err(|source| QueueError::Io {
            path: dir.join(segments::DIR),
            source,
        })?;
        let mut q = Queue {
            path,
            store,
            journal,
            outbox,
            meta,
            inbound,
            ledger: std::sync::Mutex::new(ledger),
            segments,
            sync_lock: std::sync::Mutex::new(()),
            body_fsync_nanos: 0.into(),
            recovery,
            live: live.into(),
            inline: inline.into(),
            inline_max: INLINE_MAX.into(),
            origin: Origin {
                device: device_id.to_owned(),
                queue: 0,
            },
            created_ms: None,
        };
        match q.meta.get(META_DEVICE).map_err(db_err)? {
            Some(stored) if stored.as_ref() != device_id.as_bytes() => {
                return Err(QueueError::WrongDevice {
                    path: q.path.clone(),
                    stored: String::from_utf8_lossy(&stored).into_owned(),
                    configured: device_id.to_owned(),
                });
            }
            Some(_) => {}
            None => {
                q.meta
                    .insert(META_DEVICE, device_id.as_bytes())
                    .map_err(db_err)?;
            }
        }
        q.origin.queue = match q.meta_u64(META_QUEUE_ID)? {
            Some(id) => id,
            None => {
                // Drawn once per queue: records numbered by another incarnation (a fresh data
                // directory, a quarantined database) must never be taken for this one's.
                let id = rand::random::<u64>();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                q.meta
                    .insert(META_QUEUE_CREATED, &now.to_be_bytes())
                    .map_err(db_err)?;
                q.meta
                    .insert(META_QUEUE_ID, &id.to_be_bytes())
                    .map_err(db_err)?;
                id
            }
        };
        q.created_ms = q.meta_u64(META_QUEUE_CREATED)?.map(|ms| ms as i64);
        // What a killed process wrote may still be only in the page cache: make everything
        // this queue starts from durable before anything new is acknowledged on top of it.
        q.sync()?;
        Ok(q)
    }

    /// The outcome of a transaction that never aborts.
    fn infallible(
        &self,
        result: Result<(), TransactionError<std::convert::Infallible>>,
    ) -> Result<(), QueueError> {
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(self.db_err(e)),
            Err(TransactionError::Abort(never)) => match never {},
        }
    }

    fn db_err(&self, source: sled::Error) -> QueueError {
        QueueError::Db {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    /// Directory of the queue.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device and queue incarnation the queue's records carry.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// When this queue was created (wall-clock milliseconds), if known: records of this device
    /// under another queue id with later timestamps are another agent's, not a past queue's.
    pub fn created_ms(&self) -> Option<i64> {
        self.created_ms
    }

    /// What had to be repaired to open the queue.
    pub fn recovery(&self) -> &recovery::Recovery {
        &self.recovery
    }

    /// The next kedge-seq to assign: past every record ever journaled, also after a restart.
    pub fn next_seq(&self) -> Result<u64, QueueError> {
        let floor = self.meta_u64(META_SEQ_FLOOR)?.unwrap_or(0);
        let last = match self
            .commits()
            .next_back()
            .transpose()
            .map_err(|e| self.db_err(e))?
        {
            Some((_, v)) => chunk::header(&v).map(|h| h.end_seq()).unwrap_or(0),
            None => 0,
        };
        Ok(floor.max(last))
    }

    /// Appends one chunk of records numbered from `first_seq`; durable only after [`Queue::sync`].
    /// With fsync durability the body is on stable storage before its journal entry is written,
    /// so that no entry sled writes back early can point to a body a power cut took.
    pub fn append(&self, first_seq: u64, records: &[Record]) -> Result<usize, QueueError> {
        self.append_with(first_seq, records, &[])
    }

    /// [`Queue::append`] together with what the source received ([`inbound`]), in one sled
    /// transaction: after a crash both are there or neither is. `records` may be empty (the
    /// plugins dropped every event) while `changes` still has to be made durable.
    pub fn append_with(
        &self,
        first_seq: u64,
        records: &[Record],
        changes: &[inbound::Change],
    ) -> Result<usize, QueueError> {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let writes = ledger.plan(first_seq, changes);
        let body = if records.is_empty() {
            None
        } else {
            Some(self.write_chunk_body(first_seq, records)?)
        };
        let key = first_seq.to_be_bytes();
        let old = if writes.is_empty() {
            match &body {
                Some((entry, _, _)) => self.journal.insert(key, entry.as_slice()),
                None => Ok(None),
            }
            .map_err(|e| self.db_err(e))
        } else {
            let tx = (&self.journal, &self.inbound).transaction(|(journal, tree)| {
                let old = match &body {
                    Some((entry, _, _)) => journal.insert(&key, entry.as_slice())?,
                    None => None,
                };
                for k in &writes.removes {
                    tree.remove(k.as_slice())?;
                }
                for (k, v) in &writes.puts {
                    tree.insert(k.as_slice(), v.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(old)
            });
            match tx {
                Ok(old) => Ok(old),
                Err(TransactionError::Storage(e)) => Err(self.db_err(e)),
                Err(TransactionError::Abort(never)) => match never {},
            }
        };
        let old = match old {
            Ok(old) => old,
            Err(e) => {
                if let Some((_, Some(loc), _)) = body {
                    self.segments.release(loc);
                }
                return Err(e);
            }
        };
        ledger.apply(writes);
        let Some((entry, loc, len)) = body else {
            return Ok(0);
        };
        self.held(&entry, loc);
        if let Some(old) = old {
            self.release_chunk(&old);
        }
        Ok(len)
    }

    /// A chunk's journal entry, where its body lies and its length. A small body is the entry
    /// itself ([`INLINE_MAX`]); a larger one is written to a segment (synced with fsync
    /// durability) and the entry points to it.
    fn write_chunk_body(
        &self,
        first_seq: u64,
        records: &[Record],
    ) -> Result<(Vec<u8>, Option<Location>, usize), QueueError> {
        let bytes =
            chunk::encode(first_seq, records).map_err(|e| QueueError::Codec(e.to_string()))?;
        let len = bytes.len();
        if self.inline_fits(0, len) {
            return Ok((bytes, None, len));
        }
        let loc = self
            .segments
            .append(&bytes)
            .map_err(|e| self.segment_err(e))?;
        if let Err(e) = self.sync_bodies() {
            self.segments.release(loc);
            return Err(e);
        }
        Ok((chunk::pointer(&bytes, loc), Some(loc), len))
    }

    /// Sets the largest entry that holds its body from now on ([`INLINE_MAX`] by default); 0 puts
    /// every new body in a segment file, as the tests and fuzzers that damage segment files
    /// need.
    pub fn set_inline_max(&self, bytes: usize) {
        self.inline_max.store(bytes, Ordering::Relaxed);
    }

    /// Whether an entry of `len` bytes may hold its body, with `pending` bytes of such entries
    /// already planned and not yet committed.
    fn inline_fits(&self, pending: u64, len: usize) -> bool {
        len <= self.inline_max.load(Ordering::Relaxed)
            && self.inline.load(Ordering::Relaxed) + pending + len as u64 <= INLINE_BUDGET
    }

    /// Accounts for a committed entry: its bytes and its body's.
    fn held(&self, entry: &[u8], body: Option<Location>) {
        self.live
            .fetch_add(stored_len(entry, body), Ordering::Relaxed);
        self.inline
            .fetch_add(inline_len(entry, body), Ordering::Relaxed);
    }

    /// How many of the newest receipts [`Queue::append_with`] keeps (none until set), and
    /// never fewer than are stored. The returned handle widens it.
    pub fn set_receipt_window(&self, keep: usize) -> inbound::ReceiptWindow {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        ledger.set_keep(keep);
        ledger.window()
    }

    /// What the source received, as committed: the newest receipts (up to the window set by
    /// [`Queue::set_receipt_window`]), read from disk, and the held QoS 2 packet ids.
    pub fn inbound(&self) -> Result<inbound::Inbound, QueueError> {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state(&self.inbound)
            .map_err(|e| self.db_err(e))
    }

    pub(crate) fn segment_err(&self, source: std::io::Error) -> QueueError {
        QueueError::Io {
            path: self.path.join(segments::DIR),
            source,
        }
    }

    /// Forgets a journal entry that was removed: its bytes and its pointer into a segment.
    fn release_chunk(&self, entry: &[u8]) {
        let body = chunk::location(entry);
        self.live
            .fetch_sub(stored_len(entry, body), Ordering::Relaxed);
        self.inline
            .fetch_sub(inline_len(entry, body), Ordering::Relaxed);
        if let Some(loc) = body {
            self.segments.release(loc);
        }
    }

    /// Forgets an outbox entry that was removed, as [`Queue::release_chunk`].
    fn release_batch(&self, key: &[u8], entry: &[u8]) {
        let body = batch_location(key, entry);
        self.live
            .fetch_sub(stored_len(entry, body), Ordering::Relaxed);
        self.inline
            .fetch_sub(inline_len(entry, body), Ordering::Relaxed);
        if let Some(loc) = body {
            self.segments.release(loc);
        }
    }

    /// Decodes a journal entry, reading its body from its segment file when it points to one.
    pub(crate) fn decode_chunk(
        &self,
        entry: &[u8],
    ) -> Result<(chunk::ChunkHeader, Vec<SequencedRecord>), chunk::ChunkError> {
        match chunk::location(entry) {
            None => chunk::decode(entry),
            Some(loc) => {
                let body = self
                    .segments
                    .read(loc)
                    .map_err(chunk::ChunkError::Unreadable)?;
                if !chunk::matches_pointer(entry, &body) {
                    return Err(if body.iter().all(|b| *b == 0) {
                        chunk::ChunkError::Missing
                    } else {
                        chunk::ChunkError::Misplaced
                    });
                }
                chunk::decode(&body)
            }
        }
    }

    /// The stored form of a journal entry as found: its body when it points to one that can
    /// be read and is this chunk's, however damaged; else the entry itself (not the zeros or
    /// another chunk's bytes found there, which could be megabytes in sled).
    fn chunk_as_found(&self, entry: &[u8]) -> Vec<u8> {
        chunk::location(entry)
            .and_then(|loc| self.segments.read(loc).ok())
            .filter(|body| chunk::matches_pointer(entry, body))
            .unwrap_or_else(|| entry.to_vec())
    }

    /// Decodes an outbox entry, reading and checking its bytes when they are in a segment.
    pub(crate) fn decode_batch(&self, key: &[u8], entry: &[u8]) -> Result<SealedBatch, QueueError> {
        let (mut batch, body) =
            SealedBatch::decode(key, entry).map_err(|e| QueueError::Codec(e.to_string()))?;
        if let Some(body) = body {
            let bytes = self.segments.read(body.loc).map_err(|e| {
                if segments::means_damage(&e) {
                    QueueError::Codec(format!(
                        "sealed batch {}: bytes unreadable: {e}",
                        batch.batch_no
                    ))
                } else {
                    self.segment_err(e)
                }
            })?;
            if crc32c::crc32c(&bytes) != body.crc {
                return Err(QueueError::Codec(format!(
                    "sealed batch {}: checksum mismatch in its segment file",
                    batch.batch_no
                )));
            }
            batch.bytes = bytes.into();
        }
        Ok(batch)
    }

    /// The outbox entries of `batches`: small ones hold their bytes ([`INLINE_MAX`]), the others
    /// point to them in segment files, where, with fsync durability, they are on stable storage
    /// when this returns, so that no committed entry (and no journal trim behind it) ever
    /// points to bytes a power cut could take. `pending`: bytes planned inline before these.
    fn write_batches(
        &self,
        batches: &[SealedBatch],
        pending: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, QueueError> {
        let mut out = Vec::with_capacity(batches.len());
        let mut pending = pending;
        let mut appended = false;
        for b in batches {
            if !b.legacy && self.inline_fits(pending, b.inline_entry_len()) {
                let entry = b.encode_inline();
                pending += entry.len() as u64;
                out.push((b.batch_no, entry));
                continue;
            }
            match self.segments.append(&b.bytes) {
                Ok(loc) => {
                    appended = true;
                    out.push((b.batch_no, b.encode_pointer(loc)));
                }
                Err(e) => {
                    self.forget_written(&out);
                    return Err(self.segment_err(e));
                }
            }
        }
        if appended && let Err(e) = self.sync_bodies() {
            self.forget_written(&out);
            return Err(e);
        }
        Ok(out)
    }

    /// With fsync durability, fdatasyncs the bodies written so far; the time goes into the next
    /// [`SyncTimes`].
    fn sync_bodies(&self) -> Result<(), QueueError> {
        if !self.store.durable() {
            return Ok(());
        }
        let _one = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let result = self.segments.sync_written();
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.body_fsync_nanos.fetch_add(took, Ordering::Relaxed);
        result.map_err(|e| self.segment_err(e))
    }

    /// Writes each partition's set-aside records as one sparse chunk and returns the journal
    /// entries for them, kept and made durable as [`Queue::write_batches`] keeps batches.
    fn write_parked(
        &self,
        parked: &[((String, i32), Vec<SequencedRecord>)],
    ) -> Result<Vec<KeyedEntry>, QueueError> {
        let mut out = Vec::with_capacity(parked.len());
        let mut pending = 0u64;
        let mut appended = false;
        for ((topic, partition), records) in parked {
            let Some(first) = records.first() else {
                continue;
            };
            let written = chunk::encode_sparse(records)
                .map_err(|e| QueueError::Codec(e.to_string()))
                .and_then(|bytes| {
                    if self.inline_fits(pending, bytes.len()) {
                        pending += bytes.len() as u64;
                        return Ok(bytes);
                    }
                    let loc = self
                        .segments
                        .append(&bytes)
                        .map_err(|e| self.segment_err(e))?;
                    appended = true;
                    Ok(chunk::pointer(&bytes, loc))
                });
            match written {
                Ok(entry) => out.push((parked_key(topic, *partition, first.seq), entry)),
                Err(e) => {
                    self.forget_parked(&out);
                    return Err(e);
                }
            }
        }
        if appended && let Err(e) = self.sync_bodies() {
            self.forget_parked(&out);
            return Err(e);
        }
        Ok(out)
    }

    /// Gives back the segment space of set-aside chunks that were never committed.
    fn forget_parked(&self, entries: &[KeyedEntry]) {
        for (_, entry) in entries {
            if let Some(loc) = chunk::location(entry) {
                self.segments.release(loc);
            }
        }
    }

    /// Gives back the segment space of outbox entries that were never committed.
    fn forget_written(&self, entries: &[(u64, Vec<u8>)]) {
        for (no, entry) in entries {
            if let Some(loc) = batch_location(&no.to_be_bytes(), entry) {
                self.segments.release(loc);
            }
        }
    }

    /// Makes everything written so far durable: sled flush, then fdatasync of its data file.
    pub fn sync(&self) -> Result<(), QueueError> {
        self.sync_timed().map(|_| ())
    }

    /// [`Queue::sync`], telling how long the fdatasync calls took.
    pub fn sync_timed(&self) -> Result<SyncTimes, QueueError> {
        let _one = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Taken before the flush, so that every file deleted after it is named by no flushed
        // entry. Bodies are normally synced already (see `sync_bodies`); those written under
        // relaxed durability are not synced at all.
        let pending = self.segments.take_pending();
        let mut fsync =
            std::time::Duration::from_nanos(self.body_fsync_nanos.swap(0, Ordering::Relaxed));
        let result = (|| {
            if self.store.durable() {
                let started = std::time::Instant::now();
                self.segments
                    .sync(&pending)
                    .map_err(|e| self.segment_err(e))?;
                fsync += started.elapsed();
            }
            fsync += self.store.flush()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.segments.delete(pending);
                Ok(SyncTimes { fsync })
            }
            Err(e) => {
                self.segments.restore(pending);
                Err(e)
            }
        }
    }

    /// Reads up to `max_chunks` chunks from the head of the journal (see [`Queue::journal_iter`]).
    pub fn journal_head(&self, max_chunks: usize) -> Result<Vec<JournalChunk>, QueueError> {
        self.journal_iter().take(max_chunks).collect()
    }

    /// The journal's chunks from its head, each decoded only when it is asked for, so that a
    /// seal that fits a few chunks decompresses a few. A chunk that cannot be decoded is
    /// quarantined (see [`recovery`]) rather than stalling delivery forever.
    pub fn journal_iter(&self) -> impl Iterator<Item = Result<JournalChunk, QueueError>> + '_ {
        self.commits().filter_map(|item| {
            let decoded =
                item.map_err(|e| self.db_err(e))
                    .and_then(|(k, v)| match self.decode_chunk(&v) {
                        Ok((head, records)) => Ok(Some(JournalChunk {
                            first_seq: head.first_seq,
                            end_seq: head.end_seq(),
                            records,
                        })),
                        Err(chunk::ChunkError::Unreadable(e)) if !segments::means_damage(&e) => {
                            Err(self.segment_err(e))
                        }
                        Err(e) => self.quarantine_chunk(&k, &v, &e).map(|()| None),
                    });
            decoded.transpose()
        })
    }

    /// The journal's chunks in commit order, without those set aside for stuck partitions.
    fn commits(&self) -> sled::Iter {
        self.journal.range(..[PARKED].as_slice())
    }

    /// Records in the journal: the `kedge-seq` span of its first and last commits (two reads,
    /// no decompression; a damaged chunk in between is still counted), and the records set aside
    /// for stuck partitions.
    pub fn journal_records(&self) -> Result<u64, QueueError> {
        let head = |item: Option<sled::Result<(sled::IVec, sled::IVec)>>| {
            let found = item.transpose().map_err(|e| self.db_err(e))?;
            Ok::<_, QueueError>(found.and_then(|(_, v)| chunk::header(&v).ok()))
        };
        let mut commits = self.commits();
        let span = match (head(commits.next())?, head(commits.next_back())?) {
            (Some(first), Some(last)) => last.end_seq().saturating_sub(first.first_seq),
            (Some(only), None) => u64::from(only.count),
            _ => 0,
        };
        let mut parked = 0;
        for item in self.journal.range([PARKED].as_slice()..).values() {
            let v = item.map_err(|e| self.db_err(e))?;
            parked += chunk::header(&v).map_or(0, |h| u64::from(h.count));
        }
        Ok(span + parked)
    }

    /// Whether the journal holds no records (set-aside ones included).
    pub fn journal_is_empty(&self) -> bool {
        self.journal.is_empty()
    }

    /// The partitions with records set aside, and the first key of each.
    pub fn parked_partitions(&self) -> Result<BTreeMap<(String, i32), Vec<u8>>, QueueError> {
        let mut out = BTreeMap::new();
        let mut from = vec![PARKED];
        while let Some(item) = self.journal.range(from.as_slice()..).next() {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            let Some((topic, partition)) = parse_parked_key(&k) else {
                // Not a key kedge writes: step over it.
                from = k.to_vec();
                from.push(0);
                continue;
            };
            // Past every key of this partition: its prefix, then more than 8 bytes of 0xFF.
            from = parked_prefix(&topic, partition);
            from.extend_from_slice(&[0xFF; 9]);
            out.insert((topic, partition), k.to_vec());
        }
        Ok(out)
    }

    /// Up to `max` chunks set aside for `topic`/`partition`, oldest first. A chunk that cannot
    /// be decoded is quarantined, as in [`Queue::journal_iter`].
    pub fn parked_chunks(
        &self,
        topic: &str,
        partition: i32,
        max: usize,
    ) -> Result<Vec<Parked>, QueueError> {
        let mut out = Vec::new();
        for item in self.journal.scan_prefix(parked_prefix(topic, partition)) {
            if out.len() >= max {
                break;
            }
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            match self.decode_chunk(&v) {
                Ok((_, records)) => out.push(Parked {
                    key: k.to_vec(),
                    records,
                }),
                Err(chunk::ChunkError::Unreadable(e)) if !segments::means_damage(&e) => {
                    return Err(self.segment_err(e));
                }
                Err(e) => self.quarantine_chunk(&k, &v, &e)?,
            }
        }
        Ok(out)
    }

    /// Every sealed batch, in seal order. A batch that cannot be read is quarantined (see
    /// [`recovery`]) rather than stopping delivery of the others.
    pub fn sealed_batches(&self) -> Result<Vec<SealedBatch>, QueueError> {
        let mut out = Vec::new();
        for item in self.outbox.iter() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            match self.decode_batch(&k, &v) {
                Ok(b) => out.push(b),
                Err(e @ QueueError::Codec(_)) => self.quarantine_batch(&k, &v, &e)?,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every sealed batch without its bytes, in seal order: what delivery starts from. The
    /// bytes are read (and checked) when a batch is sent, see [`Queue::read_batch`]; an entry
    /// that cannot be read at all is quarantined here.
    pub fn sealed_metas(&self) -> Result<Vec<BatchMeta>, QueueError> {
        let mut out = Vec::new();
        for item in self.outbox.iter() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            match SealedBatch::decode_header(&k, &v) {
                Ok((b, stored)) => {
                    let mut meta = b.meta();
                    meta.len = stored.len();
                    out.push(meta);
                }
                Err(e) => {
                    let e = QueueError::Codec(e.to_string());
                    self.quarantine_batch(&k, &v, &e)?;
                }
            }
        }
        Ok(out)
    }

    /// The bytes of sealed batch `batch_no`, checked against their checksum. A batch whose bytes
    /// are damaged is quarantined, its records counted as lost: [`QueueError::BatchLost`].
    pub fn read_batch(&self, batch_no: u64) -> Result<bytes::Bytes, QueueError> {
        let key = batch_no.to_be_bytes();
        let Some(v) = self.outbox.get(key).map_err(|e| self.db_err(e))? else {
            return Err(QueueError::Codec(format!(
                "sealed batch {batch_no} is not in the outbox"
            )));
        };
        match self.decode_batch(&key, &v) {
            Ok(b) => Ok(b.bytes),
            Err(e @ QueueError::Codec(_)) => {
                self.quarantine_batch(&key, &v, &e)?;
                Err(QueueError::BatchLost { batch_no })
            }
            Err(e) => Err(e),
        }
    }

    /// Persists a seal atomically (outbox, sequences, journal trim) and makes it durable;
    /// [`QueueError::ChunkGone`] without writing anything if a consumed chunk was dropped.
    pub fn seal(&self, seal: &Seal) -> Result<(), SealError> {
        let parked = self
            .write_parked(&seal.parked)
            .map_err(SealError::NotWritten)?;
        let parked_inline: u64 = parked
            .iter()
            .map(|(_, entry)| inline_len(entry, chunk::location(entry)))
            .sum();
        let encoded = match self.write_batches(&seal.batches, parked_inline) {
            Ok(e) => e,
            Err(e) => {
                self.forget_parked(&parked);
                return Err(SealError::NotWritten(e));
            }
        };
        // Entries the seal removes, reset on each attempt: sled may rerun the closure.
        let removed = std::cell::RefCell::new(Removed::default());
        let result: Result<(), TransactionError<u64>> = (&self.journal, &self.outbox, &self.meta)
            .transaction(|(journal, outbox, meta)| {
                *removed.borrow_mut() = Removed::default();
                // Records must not be both delivered and counted as dropped.
                for first in &seal.consumed_chunks {
                    if journal.get(first.to_be_bytes())?.is_none() {
                        return Err(ConflictableTransactionError::Abort(*first));
                    }
                }
                for key in &seal.unparked {
                    if journal.get(key.as_slice())?.is_none() {
                        let first = key.len().checked_sub(8).map_or(0, |at| {
                            u64::from_be_bytes(key[at..].try_into().expect("8 bytes"))
                        });
                        return Err(ConflictableTransactionError::Abort(first));
                    }
                }
                for (no, bytes) in &encoded {
                    outbox.insert(&no.to_be_bytes(), bytes.as_slice())?;
                }
                for ((topic, partition), next) in &seal.next_sequences {
                    meta.insert(next_sequence_key(topic, *partition), &next.to_be_bytes())?;
                }
                meta.insert(META_BATCH_NO, &seal.next_batch_no.to_be_bytes())?;
                // Never lower the floor: a drop or a quarantine may have raised it past this seal.
                let floor = tx_u64(meta, META_SEQ_FLOOR)?;
                if !seal.consumed_chunks.is_empty() && seal.seq_floor > floor {
                    meta.insert(META_SEQ_FLOOR, &seal.seq_floor.to_be_bytes())?;
                }
                for no in &seal.removed_batches {
                    let key = no.to_be_bytes();
                    if let Some(old) = outbox.remove(&key)? {
                        removed.borrow_mut().batches.push((key, old));
                    }
                }
                for first in &seal.consumed_chunks {
                    if let Some(old) = journal.remove(&first.to_be_bytes())? {
                        removed.borrow_mut().chunks.push(old);
                    }
                }
                for key in &seal.unparked {
                    if let Some(old) = journal.remove(key.as_slice())? {
                        removed.borrow_mut().chunks.push(old);
                    }
                }
                for (key, entry) in &parked {
                    journal.insert(key.as_slice(), entry.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<u64>>(())
            });
        match result {
            Ok(()) => {
                for (_, entry) in &parked {
                    self.held(entry, chunk::location(entry));
                }
                self.committed(&encoded, removed.into_inner());
                self.sync().map_err(SealError::NotDurable)
            }
            Err(e) => {
                self.forget_parked(&parked);
                self.forget_written(&encoded);
                Err(SealError::NotWritten(match e {
                    TransactionError::Storage(e) => self.db_err(e),
                    TransactionError::Abort(first_seq) => QueueError::ChunkGone { first_seq },
                }))
            }
        }
    }

    /// Accounts for a committed transaction: the outbox entries it added, the entries it removed.
    fn committed(&self, added: &[(u64, Vec<u8>)], removed: Removed) {
        for (no, entry) in added {
            self.held(entry, batch_location(&no.to_be_bytes(), entry));
        }
        for (key, old) in removed.batches {
            self.release_batch(&key, &old);
        }
        for old in removed.chunks {
            self.release_chunk(&old);
        }
    }

    /// Removes a batch Kafka has acknowledged. Not synced: if the removal is lost in a crash, the
    /// batch comes back, and the tail scan at the next start finds it in Kafka.
    pub fn remove_batch(&self, batch_no: u64) -> Result<(), QueueError> {
        let old = self
            .outbox
            .remove(batch_no.to_be_bytes())
            .map_err(|e| self.db_err(e))?;
        if let Some(old) = old {
            self.release_batch(&batch_no.to_be_bytes(), &old);
        }
        Ok(())
    }

    /// The persisted producer identity, if one was ever obtained.
    pub fn producer(&self) -> Result<Option<ProducerIdentity>, QueueError> {
        let v = self.meta.get(META_PRODUCER).map_err(|e| self.db_err(e))?;
        Ok(v.and_then(|v| {
            let b: [u8; 10] = v.as_ref().try_into().ok()?;
            Some(ProducerIdentity {
                producer_id: i64::from_be_bytes(b[..8].try_into().ok()?),
                producer_epoch: i16::from_be_bytes(b[8..].try_into().ok()?),
            })
        }))
    }

    /// Persists a new producer identity; sequences of every partition restart at 0 under it.
    pub fn set_producer(&self, p: ProducerIdentity) -> Result<(), SealError> {
        self.resequence(p, &[], &[])
    }

    /// Records a partition's scan floor: an offset at or before every batch of the partition in
    /// the outbox that may have been sent, where a tail scan for them starts. Raised after each
    /// acknowledgement without a sync: sled loses only a suffix of its writes in a crash, so the
    /// floor that survives is never past a batch that survives. Set before the first send to a
    /// partition with `durable`, so that it exists whatever happens next.
    pub fn set_scan_floor(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        durable: bool,
    ) -> Result<(), QueueError> {
        self.meta
            .insert(
                partition_key(META_ACKED_OFFSET, topic, partition),
                &offset.to_be_bytes(),
            )
            .map_err(|e| self.db_err(e))?;
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    /// The offset recorded by [`Queue::set_scan_floor`], if any.
    pub fn scan_floor(&self, topic: &str, partition: i32) -> Result<Option<i64>, QueueError> {
        let v = self
            .meta
            .get(partition_key(META_ACKED_OFFSET, topic, partition))
            .map_err(|e| self.db_err(e))?;
        Ok(v.and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Moves every sealed batch to a new producer id in one transaction: the batches (same
    /// numbers, same records, new producer and sequences) replace the old ones, and the
    /// per-partition sequences restart from `next_sequences`.
    pub fn resequence(
        &self,
        producer: ProducerIdentity,
        batches: &[SealedBatch],
        next_sequences: &[((String, i32), i32)],
    ) -> Result<(), SealError> {
        let stale: Vec<sled::IVec> = self
            .meta
            .scan_prefix(META_NEXT_SEQUENCE)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| SealError::NotWritten(self.db_err(e)))?;
        let mut pid = producer.producer_id.to_be_bytes().to_vec();
        pid.extend_from_slice(&producer.producer_epoch.to_be_bytes());
        let encoded = self
            .write_batches(batches, 0)
            .map_err(SealError::NotWritten)?;
        // Entries replaced, reset on each attempt: sled may rerun the closure.
        let replaced = std::cell::RefCell::new(Removed::default());
        let result: Result<(), TransactionError<()>> =
            (&self.outbox, &self.meta).transaction(|(outbox, meta)| {
                *replaced.borrow_mut() = Removed::default();
                for k in &stale {
                    meta.remove(k)?;
                }
                for ((topic, partition), next) in next_sequences {
                    meta.insert(next_sequence_key(topic, *partition), &next.to_be_bytes())?;
                }
                meta.insert(META_PRODUCER, pid.as_slice())?;
                for (no, bytes) in &encoded {
                    let key = no.to_be_bytes();
                    if let Some(old) = outbox.insert(&key, bytes.as_slice())? {
                        replaced.borrow_mut().batches.push((key, old));
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match result {
            Ok(()) => {
                self.committed(&encoded, replaced.into_inner());
                self.sync().map_err(SealError::NotDurable)
            }
            Err(e) => {
                self.forget_written(&encoded);
                match e {
                    TransactionError::Storage(e) => Err(SealError::NotWritten(self.db_err(e))),
                    TransactionError::Abort(()) => {
                        unreachable!("the resequence transaction never aborts")
                    }
                }
            }
        }
    }

    /// Next producer sequence of every partition that has one.
    pub fn next_sequences(&self) -> Result<BTreeMap<(String, i32), i32>, QueueError> {
        let mut out = BTreeMap::new();
        for item in self.meta.scan_prefix(META_NEXT_SEQUENCE) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let rest = &k[META_NEXT_SEQUENCE.len()..];
            if rest.len() < 5 || v.len() != 4 {
                return Err(QueueError::Codec("malformed sequence entry in meta".into()));
            }
            let (topic, part) = rest.split_at(rest.len() - 4);
            let topic = String::from_utf8_lossy(&topic[..topic.len() - 1]).into_owned();
            let partition = i32::from_be_bytes(part.try_into().expect("4 bytes"));
            out.insert(
                (topic, partition),
                i32::from_be_bytes(v.as_ref().try_into().expect("4 bytes")),
            );
        }
        Ok(out)
    }

    /// The next batch number to use.
    pub fn next_batch_no(&self) -> Result<u64, QueueError> {
        let stored = self.meta_u64(META_BATCH_NO)?.unwrap_or(0);
        let last = self
            .outbox
            .last()
            .map_err(|e| self.db_err(e))?
            .and_then(|(k, _)| {
                k.as_ref()
                    .try_into()
                    .ok()
                    .map(u64::from_be_bytes)
                    .map(|n| n + 1)
            })
            .unwrap_or(0);
        Ok(stored.max(last))
    }

    /// Bytes the journal entry under `first_seq` holds against the budget.
    #[cfg(test)]
    fn chunk_stored_len(&self, first_seq: u64) -> u64 {
        let v = self.journal.get(first_seq.to_be_bytes()).unwrap().unwrap();
        stored_len(&v, chunk::location(&v))
    }

    /// Bytes the outbox entry `batch_no` holds against the budget.
    #[cfg(test)]
    fn batch_stored_len(&self, batch_no: u64) -> u64 {
        let key = batch_no.to_be_bytes();
        let v = self.outbox.get(key).unwrap().unwrap();
        stored_len(&v, batch_location(&key, &v))
    }

    /// Where the outbox entry `batch_no`'s bytes lie; `None` when the entry holds them.
    #[cfg(test)]
    fn batch_location(&self, batch_no: u64) -> Option<Location> {
        let key = batch_no.to_be_bytes();
        let v = self.outbox.get(key).unwrap().unwrap();
        batch_location(&key, &v)
    }

    fn meta_u64(&self, key: &[u8]) -> Result<Option<u64>, QueueError> {
        let v = self.meta.get(key).map_err(|e| self.db_err(e))?;
        Ok(v.and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }
}

/// A big-endian u64 in a tree inside a transaction; 0 when absent or malformed.
fn tx_u64<E>(
    tree: &sled::transaction::TransactionalTree,
    key: &[u8],
) -> Result<u64, ConflictableTransactionError<E>> {
    Ok(tree
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// A journal key and the entry to store under it.
type KeyedEntry = (Vec<u8>, Vec<u8>);

/// Entries a transaction removed, released once it has committed.
#[derive(Default)]
struct Removed {
    chunks: Vec<sled::IVec>,
    batches: Vec<([u8; 8], sled::IVec)>,
}

/// Bytes an entry holds against the disk budget: itself, and the body it points to.
fn stored_len(entry: &[u8], body: Option<Location>) -> u64 {
    entry.len() as u64 + body.map_or(0, |l| u64::from(l.len))
}

/// The bytes of an entry that holds its body; 0 for one that points to it.
fn inline_len(entry: &[u8], body: Option<Location>) -> u64 {
    if body.is_some() {
        0
    } else {
        entry.len() as u64
    }
}

/// Where an outbox entry's bytes lie, if in a segment.
fn batch_location(key: &[u8], entry: &[u8]) -> Option<Location> {
    SealedBatch::decode_header(key, entry)
        .ok()
        .and_then(|(_, stored)| stored.segment())
        .map(|b| b.loc)
}

fn next_sequence_key(topic: &str, partition: i32) -> Vec<u8> {
    partition_key(META_NEXT_SEQUENCE, topic, partition)
}

/// `prefix`, topic, NUL, partition: topic names cannot hold NUL (config validation).
fn partition_key(prefix: &[u8], topic: &str, partition: i32) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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

    fn batch(no: u64) -> SealedBatch {
        SealedBatch {
            batch_no: no,
            topic: "t".into(),
            partition: 1,
            producer: ProducerIdentity {
                producer_id: 1,
                producer_epoch: 0,
            },
            base_sequence: 0,
            record_count: 3,
            first_seq: 0,
            last_seq: 2,
            bytes: Bytes::from_static(b"batch"),
            legacy: false,
        }
    }

    #[test]
    fn journal_seal_and_producer_state_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
            assert_eq!(q.next_seq().unwrap(), 0);
            q.append(0, &records(3)).unwrap();
            q.append(3, &records(2)).unwrap();
            q.sync().unwrap();
            assert_eq!(q.next_seq().unwrap(), 5);
            q.set_producer(ProducerIdentity {
                producer_id: 9,
                producer_epoch: 2,
            })
            .unwrap();
            q.seal(&Seal {
                consumed_chunks: vec![0],
                seq_floor: 3,
                batches: vec![batch(4)],
                next_sequences: vec![(("t".into(), 1), 3)],
                next_batch_no: 5,
                ..Seal::default()
            })
            .unwrap();
        }
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        let head = q.journal_head(10).unwrap();
        assert_eq!(head.len(), 1);
        assert_eq!((head[0].first_seq, head[0].end_seq), (3, 5));
        assert_eq!(q.next_seq().unwrap(), 5);
        assert_eq!(q.sealed_batches().unwrap(), vec![batch(4)]);
        assert_eq!(q.next_batch_no().unwrap(), 5);
        assert_eq!(
            q.next_sequences().unwrap().get(&("t".to_owned(), 1)),
            Some(&3)
        );
        assert_eq!(
            q.producer().unwrap(),
            Some(ProducerIdentity {
                producer_id: 9,
                producer_epoch: 2
            })
        );
        q.remove_batch(4).unwrap();
        assert!(q.sealed_batches().unwrap().is_empty());
    }

    #[test]
    fn the_sequence_floor_outlives_a_fully_trimmed_journal() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 1 << 20, Sync::Relaxed, "dev").unwrap();
        q.append(0, &records(4)).unwrap();
        q.seal(&Seal {
            consumed_chunks: vec![0],
            seq_floor: 4,
            next_batch_no: 1,
            ..Seal::default()
        })
        .unwrap();
        assert!(q.journal_is_empty());
        assert_eq!(q.next_seq().unwrap(), 4);
    }

    #[test]
    fn a_new_producer_id_resets_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 1 << 20, Sync::Relaxed, "dev").unwrap();
        q.seal(&Seal {
            next_sequences: vec![(("t".into(), 0), 42)],
            ..Seal::default()
        })
        .unwrap();
        assert_eq!(q.next_sequences().unwrap().len(), 1);
        q.set_producer(ProducerIdentity {
            producer_id: 2,
            producer_epoch: 0,
        })
        .unwrap();
        assert!(q.next_sequences().unwrap().is_empty());
    }

    #[test]
    fn entries_written_before_segment_files_are_still_read_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
            let whole = chunk::encode(0, &records(3)).unwrap();
            q.journal.insert(0u64.to_be_bytes(), whole).unwrap();
            q.outbox
                .insert(4u64.to_be_bytes(), batch(4).encode_legacy_inline())
                .unwrap();
            q.sync().unwrap();
        }
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        let stored = q.live_bytes();
        assert_eq!(stored, q.chunk_stored_len(0) + q.batch_stored_len(4));
        let head = q.journal_head(10).unwrap();
        assert_eq!((head[0].first_seq, head[0].records.len()), (0, 3));
        let legacy = SealedBatch {
            legacy: true,
            ..batch(4)
        };
        assert_eq!(q.sealed_batches().unwrap(), vec![legacy]);
        q.append(3, &records(2)).unwrap();
        q.seal(&Seal {
            consumed_chunks: vec![0],
            seq_floor: 3,
            next_batch_no: 5,
            ..Seal::default()
        })
        .unwrap();
        q.remove_batch(4).unwrap();
        assert_eq!(q.live_bytes(), q.chunk_stored_len(3));
    }

    /// One record whose value is `len` incompressible bytes.
    fn noisy(seed: u64, len: usize) -> Record {
        let mut v = vec![0u8; len];
        rand::RngCore::fill_bytes(
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed),
            &mut v,
        );
        Record {
            value: Bytes::from(v),
            ..records(1).remove(0)
        }
    }

    #[test]
    fn small_bodies_are_kept_in_their_entries_and_large_ones_in_segment_files() {
        let dir = tempfile::tempdir().unwrap();
        let small = batch(0);
        let large = SealedBatch {
            bytes: Bytes::from(vec![7u8; INLINE_MAX + 1]),
            ..batch(1)
        };
        {
            let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
            q.append(0, &records(3)).unwrap();
            q.sync().unwrap();
            assert_eq!(
                q.segments.files(),
                0,
                "a small chunk writes no segment file"
            );
            let entry = q.journal.get(0u64.to_be_bytes()).unwrap().unwrap();
            assert_eq!(chunk::location(&entry), None);
            q.append(3, &[noisy(3, INLINE_MAX)]).unwrap();
            q.sync().unwrap();
            assert_eq!(q.segments.files(), 1);
            let entry = q.journal.get(3u64.to_be_bytes()).unwrap().unwrap();
            assert!(chunk::location(&entry).is_some());
            q.seal(&Seal {
                consumed_chunks: vec![0],
                seq_floor: 3,
                batches: vec![small.clone(), large.clone()],
                next_batch_no: 2,
                ..Seal::default()
            })
            .unwrap();
            assert_eq!(q.batch_location(0), None);
            assert!(q.batch_location(1).is_some());
            assert_eq!(q.inline.load(Ordering::Relaxed), q.batch_stored_len(0));
        }
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        let head = q.journal_head(10).unwrap();
        assert_eq!(head.len(), 1);
        assert_eq!(head[0].records[0].record, noisy(3, INLINE_MAX));
        assert_eq!(q.sealed_batches().unwrap(), vec![small.clone(), large]);
        assert_eq!(q.read_batch(0).unwrap(), small.bytes);
        assert_eq!(
            q.live_bytes(),
            q.chunk_stored_len(3) + q.batch_stored_len(0) + q.batch_stored_len(1)
        );
        assert_eq!(q.inline.load(Ordering::Relaxed), q.batch_stored_len(0));
        q.remove_batch(0).unwrap();
        q.remove_batch(1).unwrap();
        q.seal(&Seal {
            consumed_chunks: vec![3],
            seq_floor: 4,
            next_batch_no: 2,
            ..Seal::default()
        })
        .unwrap();
        assert_eq!(q.live_bytes(), 0);
        assert_eq!(q.inline.load(Ordering::Relaxed), 0);
    }

    /// Files sled wrote under `blobs/`.
    fn blob_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("blobs")).map_or(0, |d| d.count())
    }

    #[test]
    fn bodies_go_to_segment_files_while_the_entries_hold_the_inline_budget() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 1 << 20, Sync::Relaxed, "dev").unwrap();
        // Chunks of nearly INLINE_MAX, each kept in its entry until the budget is reached.
        let body = INLINE_MAX - 100;
        let mut seq = 0;
        while q.segments.files() == 0 {
            q.append(seq, &[noisy(seq, body)]).unwrap();
            seq += 1;
            assert!(
                seq < 1_000,
                "the budget never sent a body to a segment file"
            );
        }
        let held = q.inline.load(Ordering::Relaxed);
        assert!(held <= INLINE_BUDGET, "{held}");
        assert!(held + INLINE_MAX as u64 > INLINE_BUDGET, "{held}");
        let first = q.journal.get(0u64.to_be_bytes()).unwrap().unwrap();
        assert!(first.len() > INLINE_MAX - 64, "{}", first.len());
        let last = q.journal.get((seq - 1).to_be_bytes()).unwrap().unwrap();
        assert!(chunk::location(&last).is_some());
        // No leaf of such entries is large enough for sled to write it as a blob file.
        q.sync().unwrap();
        assert_eq!(blob_files(dir.path()), 0, "a leaf of inline chunks");
        // Delivered, the inline chunks free the budget: small bodies are kept inline again.
        q.seal(&Seal {
            consumed_chunks: (0..seq).collect(),
            seq_floor: seq,
            next_batch_no: 0,
            ..Seal::default()
        })
        .unwrap();
        assert_eq!(q.inline.load(Ordering::Relaxed), 0);
        q.append(seq, &records(2)).unwrap();
        let entry = q.journal.get(seq.to_be_bytes()).unwrap().unwrap();
        assert_eq!(chunk::location(&entry), None);
        // Batches of nearly INLINE_MAX, the same: inline up to the budget, and no blob.
        let batches: Vec<SealedBatch> = (0..300)
            .map(|no| SealedBatch {
                bytes: noisy(no, INLINE_MAX - 300).value,
                ..batch(no)
            })
            .collect();
        assert!(batches[0].inline_entry_len() <= INLINE_MAX);
        q.seal(&Seal {
            batches,
            next_batch_no: 300,
            ..Seal::default()
        })
        .unwrap();
        assert_eq!(q.batch_location(0), None);
        assert!(q.batch_location(299).is_some());
        q.sync().unwrap();
        assert_eq!(blob_files(dir.path()), 0, "a leaf of inline batches");
    }

    #[test]
    fn a_damaged_inline_batch_is_quarantined_and_its_records_counted_lost() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        q.seal(&Seal {
            batches: vec![batch(0), batch(1)],
            next_batch_no: 2,
            ..Seal::default()
        })
        .unwrap();
        let key = 0u64.to_be_bytes();
        let mut entry = q.outbox.get(key).unwrap().unwrap().to_vec();
        let last = entry.len() - 1;
        entry[last] ^= 0x01;
        q.outbox.insert(key, entry).unwrap();
        // Loaded as any batch is, its bytes checked only when read to be sent.
        let metas: Vec<BatchMeta> = q.sealed_metas().unwrap();
        assert_eq!(metas, vec![batch(0).meta(), batch(1).meta()]);
        assert_eq!(q.lost_records().unwrap(), 0);
        assert!(matches!(
            q.read_batch(0),
            Err(QueueError::BatchLost { batch_no: 0 })
        ));
        assert_eq!(q.lost_records().unwrap(), 3);
        let left: Vec<u64> = q
            .sealed_metas()
            .unwrap()
            .iter()
            .map(|b| b.batch_no)
            .collect();
        assert_eq!(left, vec![1]);
        assert_eq!(q.read_batch(1).unwrap(), batch(1).bytes);
    }

    #[test]
    fn segment_files_are_deleted_once_everything_in_them_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        // Incompressible values, so that a few chunks fill several segment files.
        for seq in 0..40 {
            q.append(seq, &[noisy(seq, 300_000)]).unwrap();
        }
        q.sync().unwrap();
        assert!(q.segments.files() >= 3, "{} files", q.segments.files());
        let mut b = batch(0);
        b.bytes = Bytes::from(vec![1u8; 1000]);
        q.seal(&Seal {
            consumed_chunks: (0..40).collect(),
            seq_floor: 40,
            batches: vec![b.clone()],
            next_batch_no: 1,
            ..Seal::default()
        })
        .unwrap();
        assert_eq!(q.sealed_batches().unwrap(), vec![b]);
        q.remove_batch(0).unwrap();
        q.sync().unwrap();
        assert_eq!(q.segments.files(), 1, "only the file being written stays");
        assert_eq!(q.live_bytes(), 0);
        drop(q);
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        assert!(q.journal_is_empty());
        assert_eq!(q.next_seq().unwrap(), 40);
        assert_eq!(
            q.segments.files(),
            0,
            "nothing points to the last file either"
        );
    }

    #[test]
    fn what_the_source_received_is_committed_with_the_journal_and_survives_a_reopen() {
        use inbound::{Change, Receipt};
        let dir = tempfile::tempdir().unwrap();
        let r = |pkid: u16, qos: u8| Receipt {
            pkid,
            qos,
            digest: u64::from(pkid) << 8 | u64::from(qos),
        };
        {
            let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
            q.set_receipt_window(3);
            let rx = |p, qos| Change::Received(r(p, qos));
            q.append_with(0, &records(2), &[rx(1, 1), rx(2, 2)])
                .unwrap();
            // Plugins dropped this commit's events: the receipts are stored all the same.
            q.append_with(2, &[], &[rx(3, 2)]).unwrap();
            q.append_with(2, &records(1), &[rx(4, 1), Change::Released(2)])
                .unwrap();
            q.sync().unwrap();
            assert_eq!(q.next_seq().unwrap(), 3);
        }
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        // Commits are kept whole (the first still held one needed receipt) and a reopened
        // queue never narrows below what is stored: the window may have been widened.
        q.set_receipt_window(3);
        let state = q.inbound().unwrap();
        assert_eq!(state.recent, vec![r(1, 1), r(2, 2), r(3, 2), r(4, 1)]);
        assert_eq!(state.held, vec![(3, r(3, 2).digest)]);
        // The commit from kedge-seq 2 on failed and is discarded: its receipts go with it.
        q.discard_unacknowledged(2).unwrap();
        drop(q);
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        q.set_receipt_window(3);
        assert_eq!(q.inbound().unwrap().recent, vec![r(1, 1), r(2, 2)]);
        assert!(q.inbound().unwrap().held.is_empty());
        assert_eq!(q.next_seq().unwrap(), 2);
    }

    #[test]
    fn records_set_aside_for_a_stuck_partition_stay_until_sealed_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let seq = |seq: u64| SequencedRecord {
            seq,
            record: records(1).remove(0),
        };
        {
            let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
            q.append(0, &records(5)).unwrap();
            q.append(5, &records(5)).unwrap();
            let live = q.live_bytes();
            // The first commit is consumed: 0 and 3 are set aside for t/1.
            q.seal(&Seal {
                consumed_chunks: vec![0],
                seq_floor: 5,
                next_batch_no: 1,
                parked: vec![(("t".into(), 1), vec![seq(0), seq(3)])],
                ..Seal::default()
            })
            .unwrap();
            assert!(
                q.live_bytes() < live,
                "the consumed commit's bytes are freed"
            );
            assert!(
                q.live_bytes() > q.chunk_stored_len(5),
                "the set-aside chunk holds bytes"
            );
            assert_eq!(q.journal_records().unwrap(), 5 + 2);
            assert_eq!(q.next_seq().unwrap(), 10);
            // Run-numbered commits are read as before; the set-aside chunk is not among them.
            let heads: Vec<u64> = q
                .journal_head(10)
                .unwrap()
                .iter()
                .map(|c| c.first_seq)
                .collect();
            assert_eq!(heads, vec![5]);
            q.append(10, &records(1)).unwrap();
            q.sync().unwrap();
        }
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        let parked = q.parked_partitions().unwrap();
        assert_eq!(
            parked.keys().cloned().collect::<Vec<_>>(),
            vec![("t".to_owned(), 1)]
        );
        let chunks = q.parked_chunks("t", 1, 10).unwrap();
        assert_eq!(chunks.len(), 1);
        let seqs: Vec<u64> = chunks[0].records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![0, 3]);
        assert_eq!(q.next_seq().unwrap(), 11);
        // A failed commit's chunks are discarded; the set-aside one, acknowledged long before, stays.
        q.discard_unacknowledged(10).unwrap();
        assert_eq!(q.parked_partitions().unwrap().len(), 1);
        // Sealed at last.
        q.seal(&Seal {
            unparked: vec![chunks[0].key.clone()],
            next_batch_no: 1,
            ..Seal::default()
        })
        .unwrap();
        assert!(q.parked_partitions().unwrap().is_empty());
        assert_eq!(q.journal_records().unwrap(), 5);
        // Sealing it twice is refused: the chunk is gone.
        assert!(matches!(
            q.seal(&Seal {
                unparked: vec![chunks[0].key.clone()],
                ..Seal::default()
            }),
            Err(SealError::NotWritten(QueueError::ChunkGone {
                first_seq: 0
            }))
        ));
    }

    #[test]
    fn parked_keys_round_trip_and_sort_after_every_commit() {
        let k = parked_key("readings.v2", 7, 42);
        assert_eq!(parse_parked_key(&k), Some(("readings.v2".to_owned(), 7)));
        // Every kedge-seq below 2^56 (centuries of records) keys a commit below every parked key.
        assert!(k.as_slice() > ((1u64 << 56) - 1).to_be_bytes().as_slice());
        assert_eq!(parse_parked_key(&7u64.to_be_bytes()), None);
    }

    #[test]
    fn a_queue_keeps_its_id_and_a_new_queue_draws_another() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = Queue::open(a.path(), 1 << 20, Sync::Relaxed, "dev")
            .unwrap()
            .origin()
            .clone();
        let again = Queue::open(a.path(), 1 << 20, Sync::Relaxed, "dev")
            .unwrap()
            .origin()
            .clone();
        assert_eq!(first, again);
        assert_eq!(first.device, "dev");
        let other = Queue::open(b.path(), 1 << 20, Sync::Relaxed, "dev").unwrap();
        assert_ne!(other.origin().queue, first.queue);
    }

    #[test]
    fn batches_are_loaded_without_their_bytes_and_read_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev").unwrap();
        let mut b = batch(7);
        // In a segment file: the meta's length is then the body's there.
        b.bytes = Bytes::from(vec![9u8; INLINE_MAX + 1]);
        q.seal(&Seal {
            batches: vec![b.clone()],
            next_batch_no: 8,
            ..Seal::default()
        })
        .unwrap();
        assert_eq!(q.sealed_metas().unwrap(), vec![b.meta()]);
        assert_eq!(q.read_batch(7).unwrap(), b.bytes);
        assert!(q.read_batch(8).is_err(), "no such batch");
    }

    #[test]
    fn a_queue_copied_to_another_device_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev-a").unwrap());
        let err = Queue::open(dir.path(), 1 << 20, Sync::Fsync, "dev-b")
            .err()
            .expect("refused");
        assert!(matches!(err, QueueError::WrongDevice { .. }), "{err}");
        assert!(err.to_string().contains("dev-a"));
    }
}
