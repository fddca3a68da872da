//! `kedge queue stats | inspect | export`: look into a stopped kedge's queue, and rescue its
//! records. A running kedge holds sled's file lock, so opening fails with
//! [`QueueError::InUse`] naming its pid.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Queue, QueueError, Sync, budget, chunk};
use kedge_wire::batch::decode_batch;
use kedge_wire::record::HEADER_SEQ;

/// Opens an existing queue for a tool; refuses to create one where there is none.
pub fn open_existing(dir: &Path, device_id: &str) -> Result<Queue, QueueError> {
    if !dir.join("db").exists() {
        return Err(QueueError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no kedge queue here (no sled `db` file)",
            ),
        });
    }
    // A small cache: the tools read every chunk once.
    Queue::open(dir, 4 << 20, Sync::Relaxed, device_id)
}

/// Where the body of the journal chunk that starts at `first_seq` lies: its segment file, the
/// byte offset and the length; `None` when there is no such chunk or it is stored inline. For
/// fault injection (the `journal` fuzz target damages exactly this range).
pub fn chunk_body(q: &Queue, first_seq: u64) -> Result<Option<(PathBuf, u64, u32)>, QueueError> {
    let entry = q
        .journal
        .get(first_seq.to_be_bytes())
        .map_err(|e| q.db_err(e))?;
    Ok(entry
        .as_deref()
        .and_then(chunk::location)
        .map(|loc| (q.segments.path_of(loc.segment), loc.offset, loc.len)))
}

#[derive(Default)]
struct Pending {
    records: u64,
    bytes: u64,
    batches: u64,
}

/// A human-readable report: pending records and bytes per topic and partition, the oldest
/// record's age, disk use, sealed batches, losses and drops.
pub fn stats(q: &Queue) -> Result<String, QueueError> {
    let now_ms = now_ms();
    let mut journal: BTreeMap<String, Pending> = BTreeMap::new();
    let (mut chunks, mut bad_chunks, mut chunk_bytes) = (0u64, 0u64, 0u64);
    let mut oldest: Option<(i64, u64)> = None;
    for item in q.journal.iter() {
        let (_, v) = item.map_err(|e| q.db_err(e))?;
        chunks += 1;
        chunk_bytes += body_len(&v);
        match q.decode_chunk(&v) {
            Ok((_, records)) => {
                for r in records {
                    let p = journal.entry(r.record.topic.clone()).or_default();
                    p.records += 1;
                    p.bytes += r.record.value.len() as u64;
                    oldest = older(oldest, (r.record.timestamp_ms, r.seq));
                }
            }
            Err(_) => bad_chunks += 1,
        }
    }
    let mut outbox: BTreeMap<(String, i32), Pending> = BTreeMap::new();
    let mut bad_batches = 0u64;
    for item in q.outbox.iter() {
        let (k, v) = item.map_err(|e| q.db_err(e))?;
        // Counted, not quarantined (as `sealed_batches` would): the running agent serves this
        // report beside delivery, and a report must not write to the queue it reports on.
        let b = match q.decode_batch(&k, &v) {
            Ok(b) => b,
            Err(QueueError::Codec(_)) => {
                bad_batches += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let p = outbox.entry((b.topic.clone(), b.partition)).or_default();
        p.batches += 1;
        p.records += u64::try_from(b.record_count).unwrap_or(0);
        p.bytes += b.bytes.len() as u64;
        if let Some(ts) = base_timestamp(&b.bytes) {
            oldest = older(oldest, (ts, b.first_seq));
        }
    }
    let mut o = String::new();
    let _ = writeln!(o, "queue            {}", q.path().display());
    let on_disk = budget::dir_size(q.path()).unwrap_or(0);
    let free = budget::free_bytes(q.path())
        .map(human)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let _ = writeln!(
        o,
        "disk             {} on disk (sled and segment files), {} live (chunks + batches), {} free",
        human(on_disk),
        human(q.live_bytes()),
        free
    );
    let _ = writeln!(
        o,
        "journal          {chunks} chunks, {} compressed, {} records not yet sealed{}",
        human(chunk_bytes),
        journal.values().map(|p| p.records).sum::<u64>(),
        if bad_chunks > 0 {
            format!(", {bad_chunks} DAMAGED chunks (quarantined when delivery reaches them)")
        } else {
            String::new()
        }
    );
    for (topic, p) in &journal {
        let _ = writeln!(
            o,
            "  {topic:<30} {:>10} records {:>12} payload",
            p.records,
            human(p.bytes)
        );
    }
    let _ = writeln!(
        o,
        "sealed batches   {} batches, {} records, {}{}",
        outbox.values().map(|p| p.batches).sum::<u64>(),
        outbox.values().map(|p| p.records).sum::<u64>(),
        human(outbox.values().map(|p| p.bytes).sum()),
        if bad_batches > 0 {
            format!(", {bad_batches} DAMAGED batches (quarantined when delivery reaches them)")
        } else {
            String::new()
        }
    );
    for ((topic, partition), p) in &outbox {
        let _ = writeln!(
            o,
            "  {:<30} {:>10} records {:>12} in {} batches",
            format!("{topic}/{partition}"),
            p.records,
            human(p.bytes),
            p.batches
        );
    }
    match oldest {
        Some((ts, seq)) => {
            let age = (now_ms - ts).max(0) as u64;
            let _ = writeln!(
                o,
                "oldest record    kedge-seq {seq}, {} old",
                human_age(age / 1000)
            );
        }
        None => {
            let _ = writeln!(o, "oldest record    none pending");
        }
    }
    let _ = writeln!(
        o,
        "lost records     {} (damaged chunks and batches; {} kept in the quarantine tree)",
        q.lost_records()?,
        q.quarantined_chunks()?
    );
    let dropped = q.dropped_records()?;
    if dropped.is_empty() {
        let _ = writeln!(o, "dropped records  0 (queue.when_full)");
    } else {
        for (topic, n) in dropped {
            let _ = writeln!(o, "dropped records  {topic}: {n} (queue.when_full)");
        }
    }
    if let Some(p) = q.quarantined_db()? {
        let _ = writeln!(
            o,
            "QUARANTINED      an unopenable queue was moved to {} and a fresh one started; what it \
             still held is not delivered from it (how much is unknown: its index could not be read)",
            p.display()
        );
    }
    Ok(o)
}

/// One line per journal chunk and per sealed batch.
pub fn inspect(q: &Queue) -> Result<String, QueueError> {
    let mut o = String::new();
    let _ = writeln!(o, "journal chunks (key = first kedge-seq):");
    for item in q.journal.iter() {
        let (k, v) = item.map_err(|e| q.db_err(e))?;
        let key = match super::parse_parked_key(&k) {
            Some((topic, partition)) => format!("set aside for {topic}/{partition}"),
            None => <[u8; 8]>::try_from(k.as_ref())
                .map_or(u64::MAX, u64::from_be_bytes)
                .to_string(),
        };
        match q.decode_chunk(&v) {
            Ok((h, records)) => {
                let mut topics: BTreeMap<&str, u64> = BTreeMap::new();
                for r in &records {
                    *topics.entry(r.record.topic.as_str()).or_default() += 1;
                }
                let last = records.last().map_or(h.first_seq, |r| r.seq);
                let _ = writeln!(
                    o,
                    "  chunk {key:>12}  seq {}..={last}  {} records  {} bytes  topics {topics:?}",
                    h.first_seq,
                    h.count,
                    body_len(&v)
                );
            }
            Err(e) => {
                let _ = writeln!(
                    o,
                    "  chunk {key:>12}  DAMAGED ({e})  {} bytes",
                    body_len(&v)
                );
            }
        }
    }
    let _ = writeln!(o, "sealed batches:");
    for b in q.sealed_batches()? {
        let _ = writeln!(
            o,
            "  batch {:>8}  {}/{}  producer {}/{}  sequence {}  {} records  seq {}..={}  {} bytes",
            b.batch_no,
            b.topic,
            b.partition,
            b.producer.producer_id,
            b.producer.producer_epoch,
            b.base_sequence,
            b.record_count,
            b.first_seq,
            b.last_seq,
            b.bytes.len()
        );
    }
    Ok(o)
}

/// Writes every pending record as one JSON object per line, sealed batches first (they are
/// older), then the journal: topic, partition (sealed only), key and value in base64, headers,
/// kedge-seq, timestamp. Returns how many records were written.
pub fn export_jsonl(q: &Queue, out: &mut dyn Write) -> Result<u64, ExportError> {
    let mut n = 0u64;
    for b in q.sealed_batches()? {
        let records = decode_batch(&b.bytes).map_err(|e| ExportError::Batch {
            batch_no: b.batch_no,
            message: e.to_string(),
        })?;
        for r in records {
            let seq = r
                .headers
                .iter()
                .find(|(k, _)| k == HEADER_SEQ)
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
            let line = serde_json::json!({
                "topic": b.topic,
                "partition": b.partition,
                "key": r.key.as_deref().map(base64),
                "value": r.value.as_deref().map(base64),
                "headers": r.headers.iter().map(|(k, v)| serde_json::json!({"name": k, "value": base64(v)})).collect::<Vec<_>>(),
                "kedge_seq": seq,
                "timestamp_ms": r.timestamp_ms,
                "sealed": true,
            });
            writeln!(out, "{line}")?;
            n += 1;
        }
    }
    for item in q.journal.iter() {
        let (k, v) = item.map_err(|e| q.db_err(e))?;
        let (_, records) = match q.decode_chunk(&v) {
            Ok(d) => d,
            Err(e) => {
                let key = <[u8; 8]>::try_from(k.as_ref()).map_or(u64::MAX, u64::from_be_bytes);
                tracing::error!(chunk = key, error = %e, "damaged journal chunk skipped");
                continue;
            }
        };
        for r in records {
            let line = serde_json::json!({
                "topic": r.record.topic,
                "partition": null,
                "key": r.record.key.as_deref().map(base64),
                "value": base64(&r.record.value),
                "headers": r.record.headers.iter().map(|h| serde_json::json!({"name": h.name, "value": base64(&h.value)})).collect::<Vec<_>>(),
                "kedge_seq": r.seq,
                "timestamp_ms": r.record.timestamp_ms,
                "sealed": false,
            });
            writeln!(out, "{line}")?;
            n += 1;
        }
    }
    Ok(n)
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The queue could not be read.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A sealed batch could not be decoded.
    #[error("sealed batch {batch_no}: {message}")]
    Batch {
        /// The batch.
        batch_no: u64,
        /// The decoder's error.
        message: String,
    },
    /// The output could not be written.
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
}

/// Compressed size of a journal chunk, wherever its body is.
fn body_len(entry: &[u8]) -> u64 {
    chunk::location(entry).map_or(entry.len() as u64, |l| u64::from(l.len))
}

/// The older of two (timestamp, kedge-seq) pairs.
fn older(a: Option<(i64, u64)>, b: (i64, u64)) -> Option<(i64, u64)> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Timestamp (ms since the epoch) of the oldest record waiting for Kafka, if any; cheap
/// enough for every metrics scrape: it reads only the first sealed batch, the first journal
/// chunk and the first chunk set aside for each stuck partition.
pub fn oldest_pending_ms(q: &Queue) -> Result<Option<i64>, QueueError> {
    let batch = match q.outbox.first().map_err(|e| q.db_err(e))? {
        Some((k, v)) => q
            .decode_batch(&k, &v)
            .ok()
            .and_then(|b| base_timestamp(&b.bytes)),
        None => None,
    };
    // The first commit, and the first chunk set aside for each stuck partition.
    let mut heads: Vec<sled::IVec> = q
        .journal
        .first()
        .map_err(|e| q.db_err(e))?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    for key in q.parked_partitions()?.into_values() {
        heads.extend(q.journal.get(key).map_err(|e| q.db_err(e))?);
    }
    let chunks = heads.iter().filter_map(|v| {
        q.decode_chunk(v)
            .ok()
            .and_then(|(_, records)| records.iter().map(|r| r.record.timestamp_ms).min())
    });
    Ok(batch.into_iter().chain(chunks).min())
}

/// Base timestamp of a v2 record batch (bytes 27..35), without decoding it.
fn base_timestamp(batch: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(batch.get(27..35)?.try_into().ok()?))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `bytes` in B, KiB, MiB, GiB or TiB, one decimal.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{}s", s / 60, s % 60),
        s if s < 172_800 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Seal;
    use crate::outbox::SealedBatch;
    use bytes::Bytes;
    use kedge_wire::batch::{BatchCompression, ProducerIdentity, encode_batch};
    use kedge_wire::record::{Header, Record, SequencedRecord};

    fn record(topic: &str, i: u64) -> Record {
        Record {
            topic: topic.into(),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Bytes::from(format!("value {i}")),
            headers: vec![Header {
                name: "unit".into(),
                value: Bytes::from_static(b"C"),
            }],
            timestamp_ms: 1_000,
        }
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    /// A queue with one sealed batch of 2 records of "a" (seq 0, 1) and a chunk of 3 of "b",
    /// their bodies small enough to be held in their entries.
    fn queue(dir: &Path) -> Queue {
        queue_with(dir, crate::INLINE_MAX)
    }

    /// [`queue`], holding entries of up to `inline_max` bytes inline (0: every body in a
    /// segment file).
    fn queue_with(dir: &Path, inline_max: usize) -> Queue {
        let q = Queue::open(dir, 1 << 20, Sync::Relaxed, "dev").unwrap();
        q.set_inline_max(inline_max);
        q.append(0, &[record("a", 0), record("a", 1)]).unwrap();
        q.append(2, &[record("b", 2), record("b", 3), record("b", 4)])
            .unwrap();
        let producer = ProducerIdentity {
            producer_id: 7,
            producer_epoch: 0,
        };
        let sealed: Vec<SequencedRecord> = (0..2)
            .map(|i| SequencedRecord {
                seq: i,
                record: record("a", i),
            })
            .collect();
        let bytes = encode_batch(producer, 0, q.origin(), &sealed, BatchCompression::Zstd).unwrap();
        q.seal(&Seal {
            consumed_chunks: vec![0],
            seq_floor: 2,
            batches: vec![SealedBatch {
                batch_no: 0,
                topic: "a".into(),
                partition: 3,
                producer,
                base_sequence: 0,
                record_count: 2,
                first_seq: 0,
                last_seq: 1,
                bytes,
                legacy: false,
            }],
            next_sequences: vec![(("a".into(), 3), 2)],
            next_batch_no: 1,
            ..Seal::default()
        })
        .unwrap();
        q
    }

    #[test]
    fn stats_and_inspect_show_pending_records_per_topic_and_partition() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path());
        let s = stats(&q).unwrap();
        assert!(s.contains("3 records not yet sealed"), "{s}");
        assert!(s.contains("1 batches, 2 records"), "{s}");
        assert!(s.contains("a/3"), "{s}");
        assert!(s.contains("oldest record    kedge-seq 0"), "{s}");
        assert!(s.contains("lost records     0"), "{s}");
        let i = inspect(&q).unwrap();
        assert!(i.contains("seq 2..=4  3 records"), "{i}");
        assert!(
            i.contains("a/3  producer 7/0  sequence 0  2 records  seq 0..=1"),
            "{i}"
        );
    }

    #[test]
    fn stats_reports_a_damaged_batch_without_quarantining_it() {
        // `GET /status/queue` runs this while delivery owns the queue: it must only read.
        let dir = tempfile::tempdir().unwrap();
        let q = queue_with(dir.path(), 0);
        let batch = q.sealed_batches().unwrap().remove(0).bytes;
        let (seg, mut bytes, at) = std::fs::read_dir(dir.path().join(crate::segments::DIR))
            .unwrap()
            .find_map(|f| {
                let path = f.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                let at = bytes.windows(batch.len()).position(|w| w == batch)?;
                Some((path, bytes, at))
            })
            .expect("the batch's bytes in a segment file");
        bytes[at + 10] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let s = stats(&q).unwrap();
        assert!(s.contains("1 DAMAGED batches"), "{s}");
        assert_eq!(q.quarantined_chunks().unwrap(), 0);
        assert_eq!(q.lost_records().unwrap(), 0);
        assert_eq!(q.outbox.len(), 1, "the batch is still in the outbox");
    }

    #[test]
    fn stats_reports_a_damaged_inline_batch_without_quarantining_it() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path());
        let (key, entry) = q.outbox.iter().next().unwrap().unwrap();
        assert!(
            crate::batch_location(&key, &entry).is_none(),
            "held in its entry"
        );
        let mut bad = entry.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        q.outbox.insert(key, bad).unwrap();
        let s = stats(&q).unwrap();
        assert!(s.contains("1 DAMAGED batches"), "{s}");
        assert_eq!(q.quarantined_chunks().unwrap(), 0);
        assert_eq!(q.lost_records().unwrap(), 0);
        assert_eq!(q.outbox.len(), 1, "the batch is still in the outbox");
    }

    #[test]
    fn export_writes_every_pending_record_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path());
        let mut out = Vec::new();
        assert_eq!(export_jsonl(&q, &mut out).unwrap(), 5);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seqs: Vec<u64> = lines
            .iter()
            .map(|l| l["kedge_seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        assert_eq!(lines[0]["topic"], "a");
        assert_eq!(lines[0]["partition"], 3);
        assert_eq!(lines[0]["value"], base64(b"value 0"));
        assert_eq!(lines[4]["topic"], "b");
        assert_eq!(lines[4]["key"], base64(b"k4"));
        assert_eq!(lines[4]["headers"][0]["name"], "unit");
    }

    #[test]
    fn a_missing_queue_is_an_error_not_a_new_queue() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_existing(&dir.path().join("queue"), "dev")
            .err()
            .expect("no queue");
        assert!(err.to_string().contains("no kedge queue here"), "{err}");
        assert!(!dir.path().join("queue").exists());
    }
}

#[cfg(test)]
mod oldest_tests {
    use super::*;
    use bytes::Bytes;
    use kedge_wire::record::Record;

    fn record(ts: i64) -> Record {
        Record {
            topic: "t".into(),
            key: None,
            value: Bytes::from_static(b"v"),
            headers: vec![],
            timestamp_ms: ts,
        }
    }

    #[test]
    fn oldest_pending_is_the_earliest_record_of_the_first_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 1 << 20, Sync::Relaxed, "dev").unwrap();
        assert_eq!(oldest_pending_ms(&q).unwrap(), None);
        q.append(0, &[record(5_000), record(4_000)]).unwrap();
        q.append(2, &[record(3_000)]).unwrap();
        assert_eq!(oldest_pending_ms(&q).unwrap(), Some(4_000));
    }
}
