//! Journal chunks and segment files (crates/queue/src/chunk.rs, segments.rs, recovery.rs).
//!
//! The first byte picks a mode:
//! - 0: the bytes as a stored chunk: `chunk::header` and `chunk::decode`, as found and again
//!   with the checksum made to match (else nearly every input stops at the checksum);
//! - 1: the bytes as a chunk's *raw* record section, compressed and sealed by hand with a valid
//!   checksum, so that the record parser sees arbitrary records;
//! - 2: records built from the bytes: `encode` → `decode` (and `encode_sparse`) must round trip;
//! - 3: a real queue (sled + segment files, every body in them) whose newest segment body is
//!   overwritten with damaged bytes, then read through `Queue::journal_head`: decoded or
//!   quarantined, no panic.

#![no_main]

use std::sync::{Mutex, OnceLock};

use kedge_fuzz::{Input, record, round_trip};
use kedge_queue::{Queue, Sync as Durability, chunk};
use kedge_wire::record::SequencedRecord;
use libfuzzer_sys::fuzz_target;

const HEADER_LEN: usize = 22;

fn check_decoded(bytes: &[u8]) {
    let Ok(head) = chunk::header(bytes) else {
        assert!(chunk::decode(bytes).is_err());
        return;
    };
    let _ = head.end_seq();
    if let Ok((head2, records)) = chunk::decode(bytes)
        // A sparse chunk of no records decodes, but encode_sparse makes none.
        && !(head.sparse && records.is_empty())
    {
        assert_eq!(head, head2);
        assert_eq!(records.len(), head.count as usize);
        // What decodes encodes again to the same records.
        let again = if head.sparse {
            chunk::encode_sparse(&records)
        } else {
            let plain: Vec<_> = records.iter().map(|r| r.record.clone()).collect();
            chunk::encode(head.first_seq, &plain)
        }
        .expect("decoded records encode again");
        let (_, records2) = chunk::decode(&again).expect("re-encoded chunk decodes");
        assert_eq!(records, records2);
    }
}

/// `bytes` with the checksum set to the one of its body.
fn fix_crc(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.len() >= HEADER_LEN {
        let crc = crc32c::crc32c(&v[HEADER_LEN..]);
        v[18..22].copy_from_slice(&crc.to_be_bytes());
    }
    v
}

fn sealed(version: u8, first_seq: u64, count: u32, raw_len: u32, raw: &[u8]) -> Vec<u8> {
    let body = zstd::bulk::compress(raw, 1).expect("zstd compress");
    let mut out = vec![b'K', version];
    out.extend_from_slice(&first_seq.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&raw_len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

struct Scratch {
    _dir: std::path::PathBuf,
    queue: Queue,
}

/// One queue for the whole run, in a fresh directory under /dev/shm or the temp dir.
fn scratch() -> &'static Mutex<Scratch> {
    static Q: OnceLock<Mutex<Scratch>> = OnceLock::new();
    Q.get_or_init(|| {
        // Queues of earlier runs whose process is gone: libFuzzer runs end with exit().
        // On tmpfs when there is one: the queue's syncs are then cheap.
        let shm = std::path::Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("kedge-fuzz-journal-"))
            else {
                continue;
            };
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("kedge-fuzz-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let queue = Queue::open(&dir, 8 << 20, Durability::Relaxed, "fuzz").expect("open queue");
        // Every body in a segment file, where this mode damages it: small ones would be kept in
        // their sled entries.
        queue.set_inline_max(0);
        Mutex::new(Scratch { _dir: dir, queue })
    })
}

fn segment_mode(input: &mut Input<'_>) {
    use std::os::unix::fs::FileExt;
    let s = scratch().lock().unwrap_or_else(|p| p.into_inner());
    let q = &s.queue;
    let n = 1 + usize::from(input.u8() % 3);
    let records: Vec<_> = (0..n).map(|_| record(input, 4)).collect();
    if records
        .iter()
        .any(|r| kedge_fuzz::unjournalable(r).is_some())
    {
        return;
    }
    let seq = q.next_seq().expect("next_seq");
    q.append(seq, &records).expect("append");
    // From the journal, not from the file's length: segment files are written with zeros ahead
    // of their bodies.
    let (path, start, body_len) = kedge_queue::tools::chunk_body(q, seq)
        .expect("journal")
        .expect("the chunk's body is in a segment file");
    let body_len = u64::from(body_len);
    // Damage: overwrite bytes of the body, or cut the file short.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open segment");
    match input.u8() % 3 {
        0 => {
            let at = u64::from(input.u16()) % body_len.max(1);
            let patch = input.blob();
            let room = (body_len - at) as usize;
            f.write_all_at(&patch[..patch.len().min(room)], start + at)
                .expect("write");
        }
        1 => {
            let keep = u64::from(input.u16()) % body_len.max(1);
            f.set_len(start + keep).expect("truncate");
        }
        _ => {
            let patch = input.rest();
            let patch = &patch[..patch.len().min(body_len as usize)];
            f.write_all_at(patch, start).expect("write");
        }
    }
    drop(f);
    let read = q.journal_head(1);
    match read {
        Ok(chunks) => {
            for c in &chunks {
                assert_eq!(c.records.len() as u64, c.end_seq - c.first_seq);
            }
        }
        Err(e) => panic!("journal_head on a damaged segment: {e}"),
    }
    // Forget it for the next input (a truncated file would fail the next appends' reads).
    q.discard_unacknowledged(0).expect("discard");
    // A truncated active file: the next append writes at its old end, leaving a hole; fine.
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.u8() % 4 {
        0 => {
            let bytes = input.rest();
            check_decoded(bytes);
            check_decoded(&fix_crc(bytes));
        }
        1 => {
            let version = [1, 3, 2, 4][usize::from(input.u8() % 4)];
            let first_seq = input.u64() >> (input.u8() % 64);
            let count = u32::from(input.u16());
            let exact = input.bool();
            let claimed = input.u32();
            let raw = input.rest();
            let raw_len = if exact { raw.len() as u32 } else { claimed };
            let bytes = sealed(version, first_seq, count, raw_len, raw);
            check_decoded(&bytes);
        }
        2 => {
            let first_seq = input.u64() >> (input.u8() % 64);
            let n = usize::from(input.u8() % 8);
            let records: Vec<_> = (0..n).map(|_| record(&mut input, 8)).collect();
            let _ = round_trip(first_seq, &records);
            // Sparse: each record its own seq, ascending as Queue::seal writes them.
            let mut seq = first_seq;
            let sparse: Vec<_> = records
                .into_iter()
                .map(|record| {
                    seq = seq.saturating_add(1 + u64::from(input.u8()));
                    SequencedRecord { seq, record }
                })
                .collect();
            if let Ok(bytes) = chunk::encode_sparse(&sparse) {
                let (head, decoded) = chunk::decode(&bytes).expect("sparse chunk decodes");
                assert!(head.sparse);
                assert_eq!(decoded, sparse);
            }
        }
        _ => segment_mode(&mut input),
    }
});
