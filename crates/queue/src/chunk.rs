//! Journal chunk codec: one zstd-compressed, checksummed group of records per commit.
//!
//! Chunks rather than a key per record keep sled's per-key overhead, memory and write
//! amplification small (ARCHITECTURE.md §8: per-record keys cost 1.8× space and >100 MiB RSS for a
//! 1M-record backlog).

use bytes::{Buf, BufMut, Bytes};

use super::segments::Location;
use kedge_wire::record::{Header, Record, SequencedRecord};

const MAGIC: u8 = b'K';
const VERSION: u8 = 1;
/// A journal entry that holds a chunk's header and where its body lies in a segment file.
const POINTER_VERSION: u8 = 2;
/// A chunk whose records carry their own `kedge-seq`s, not a run from the first: the records of
/// one stuck partition set aside from several commits (see `Queue::seal`).
const SPARSE_VERSION: u8 = 3;
/// A journal entry pointing to a sparse chunk's body.
const SPARSE_POINTER_VERSION: u8 = 4;
/// magic, version, first seq, count, raw length, crc32c.
const HEADER_LEN: usize = 1 + 1 + 8 + 4 + 4 + 4;
/// Sensor payloads are small and repetitive; level 1 already gets most of the gain on a slow CPU.
const ZSTD_LEVEL: i32 = 1;
const NO_KEY: u32 = u32::MAX;

/// Why a chunk could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The stored bytes do not start with a known chunk header.
    #[error("not a kedge journal chunk (bad magic or version)")]
    BadHeader,
    /// The checksum does not match: the chunk was damaged on disk.
    #[error("chunk checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes found.
        computed: u32,
    },
    /// The body is truncated or inconsistent with its header.
    #[error("chunk body is malformed: {0}")]
    Malformed(&'static str),
    /// The body could not be read from its segment file.
    #[error("chunk body unreadable: {0}")]
    Unreadable(std::io::Error),
    /// The body found where the journal points is another chunk's.
    #[error("the segment file holds another chunk where the journal points")]
    Misplaced,
    /// Only zeros where the journal points: the body's write never reached the disk (a power
    /// cut with a disk that lied about its cache, or relaxed durability).
    #[error("the segment file holds zeros where the journal points: the body was never written")]
    Missing,
    /// zstd could not compress or decompress.
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
}

/// A decoded chunk header, readable without decompressing the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Sequence number of the first record.
    pub first_seq: u64,
    /// Number of records in the chunk.
    pub count: u32,
    /// The records carry their own sequence numbers (not `first_seq`, `first_seq + 1`, …).
    pub sparse: bool,
}

impl ChunkHeader {
    /// One past the sequence number of the last record of a chunk numbered as one run.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }
}

/// Encodes `records`, numbered from `first_seq`, into one chunk.
pub fn encode(first_seq: u64, records: &[Record]) -> Result<Vec<u8>, ChunkError> {
    let mut raw = Vec::with_capacity(records.iter().map(raw_len).sum());
    for r in records {
        put_record(&mut raw, r)?;
    }
    seal_body(VERSION, first_seq, records.len(), &raw)
}

/// Encodes `records`, each with its own sequence number, into one sparse chunk.
pub fn encode_sparse(records: &[SequencedRecord]) -> Result<Vec<u8>, ChunkError> {
    let first = records
        .first()
        .ok_or(ChunkError::Malformed("a chunk needs at least one record"))?
        .seq;
    let mut raw = Vec::with_capacity(records.iter().map(|r| 8 + raw_len(&r.record)).sum());
    for r in records {
        raw.put_u64(r.seq);
        put_record(&mut raw, &r.record)?;
    }
    seal_body(SPARSE_VERSION, first, records.len(), &raw)
}

/// The header and compressed body of a chunk of `count` records whose raw form is `raw`.
fn seal_body(version: u8, first_seq: u64, count: usize, raw: &[u8]) -> Result<Vec<u8>, ChunkError> {
    let body = zstd::bulk::compress(raw, ZSTD_LEVEL)?;
    let count = u32::try_from(count).map_err(|_| ChunkError::Malformed("too many records"))?;
    if first_seq.checked_add(u64::from(count)).is_none() {
        return Err(ChunkError::Malformed("sequence range overflows u64"));
    }
    let raw_len = u32::try_from(raw.len()).map_err(|_| ChunkError::Malformed("chunk too large"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC);
    out.push(version);
    out.put_u64(first_seq);
    out.put_u32(count);
    out.put_u32(raw_len);
    out.put_u32(crc32c::crc32c(&body));
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the header of a stored chunk, or of a pointer to one, without touching the body.
pub fn header(bytes: &[u8]) -> Result<ChunkHeader, ChunkError> {
    let known = [
        VERSION,
        POINTER_VERSION,
        SPARSE_VERSION,
        SPARSE_POINTER_VERSION,
    ];
    if bytes.len() < HEADER_LEN || bytes[0] != MAGIC || !known.contains(&bytes[1]) {
        return Err(ChunkError::BadHeader);
    }
    let sparse = bytes[1] == SPARSE_VERSION || bytes[1] == SPARSE_POINTER_VERSION;
    let mut b = &bytes[2..];
    let head = ChunkHeader {
        first_seq: b.get_u64(),
        count: b.get_u32(),
        sparse,
    };
    // The header is outside the checksum: a damaged one must not make `end_seq` overflow.
    if head.first_seq.checked_add(u64::from(head.count)).is_none() {
        return Err(ChunkError::Malformed("sequence range overflows u64"));
    }
    Ok(head)
}

/// The journal entry for `chunk` (from [`encode`] or [`encode_sparse`]) stored at `loc`: its
/// header and `loc`.
pub(super) fn pointer(chunk: &[u8], loc: Location) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + Location::ENCODED_LEN);
    out.extend_from_slice(&chunk[..HEADER_LEN.min(chunk.len())]);
    out[1] = if chunk[1] == SPARSE_VERSION {
        SPARSE_POINTER_VERSION
    } else {
        POINTER_VERSION
    };
    loc.put(&mut out);
    out
}

/// Where the body of a pointer entry lies; `None` for a chunk stored whole in the entry (a
/// small one, or any in a queue written before segment files).
pub(super) fn location(entry: &[u8]) -> Option<Location> {
    if entry.len() != HEADER_LEN + Location::ENCODED_LEN
        || entry[0] != MAGIC
        || (entry[1] != POINTER_VERSION && entry[1] != SPARSE_POINTER_VERSION)
    {
        return None;
    }
    Location::get(&entry[HEADER_LEN..])
}

/// Whether `chunk`, read from where `entry` points, is the chunk the entry describes.
pub(super) fn matches_pointer(entry: &[u8], chunk: &[u8]) -> bool {
    let kind = match entry.get(1) {
        Some(&POINTER_VERSION) => VERSION,
        Some(&SPARSE_POINTER_VERSION) => SPARSE_VERSION,
        _ => return false,
    };
    chunk.len() >= HEADER_LEN
        && entry.len() >= HEADER_LEN
        && chunk[0] == MAGIC
        && chunk[1] == kind
        && chunk[2..HEADER_LEN] == entry[2..HEADER_LEN]
}

/// Decodes a stored chunk, verifying its checksum.
pub fn decode(bytes: &[u8]) -> Result<(ChunkHeader, Vec<SequencedRecord>), ChunkError> {
    if bytes.get(1) != Some(&VERSION) && bytes.get(1) != Some(&SPARSE_VERSION) {
        return Err(ChunkError::BadHeader);
    }
    let head = header(bytes)?;
    let mut b = &bytes[14..HEADER_LEN];
    let raw_len = b.get_u32() as usize;
    let stored = b.get_u32();
    let body = &bytes[HEADER_LEN..];
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(ChunkError::Checksum { stored, computed });
    }
    // The header's raw length is outside the checksum and would be the capacity allocated: it
    // must agree with the size the zstd frame records, which the checksum covers.
    match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(n)) if n == raw_len as u64 => {}
        _ => {
            return Err(ChunkError::Malformed(
                "raw length differs from the compressed frame's",
            ));
        }
    }
    let raw = Bytes::from(zstd::bulk::decompress(body, raw_len)?);
    if raw.len() != raw_len {
        return Err(ChunkError::Malformed(
            "decompressed length differs from header",
        ));
    }
    let mut cur = raw;
    // Bounded by the bytes present: a damaged count must not reserve memory.
    let mut out = Vec::with_capacity((head.count as usize).min(cur.len() / 16));
    for i in 0..u64::from(head.count) {
        let seq = if head.sparse {
            if cur.remaining() < 8 {
                return Err(ChunkError::Malformed("record truncated"));
            }
            cur.get_u64()
        } else {
            head.first_seq + i
        };
        out.push(SequencedRecord {
            seq,
            record: get_record(&mut cur)?,
        });
    }
    if cur.has_remaining() {
        return Err(ChunkError::Malformed(
            "trailing bytes after the last record",
        ));
    }
    Ok((head, out))
}

fn raw_len(r: &Record) -> usize {
    2 + r.topic.len()
        + 4
        + r.key.as_ref().map_or(0, Bytes::len)
        + 4
        + r.value.len()
        + 8
        + 2
        + r.headers
            .iter()
            .map(|h| 2 + h.name.len() + 4 + h.value.len())
            .sum::<usize>()
}

fn put_record(out: &mut Vec<u8>, r: &Record) -> Result<(), ChunkError> {
    put_short(out, r.topic.as_bytes())?;
    match &r.key {
        Some(k) => put_long(out, k)?,
        None => out.put_u32(NO_KEY),
    }
    put_long(out, &r.value)?;
    out.put_i64(r.timestamp_ms);
    let n =
        u16::try_from(r.headers.len()).map_err(|_| ChunkError::Malformed("too many headers"))?;
    out.put_u16(n);
    for h in &r.headers {
        put_short(out, h.name.as_bytes())?;
        put_long(out, &h.value)?;
    }
    Ok(())
}

fn put_short(out: &mut Vec<u8>, b: &[u8]) -> Result<(), ChunkError> {
    let n = u16::try_from(b.len())
        .map_err(|_| ChunkError::Malformed("name longer than 65535 bytes"))?;
    out.put_u16(n);
    out.extend_from_slice(b);
    Ok(())
}

fn put_long(out: &mut Vec<u8>, b: &[u8]) -> Result<(), ChunkError> {
    match u32::try_from(b.len()) {
        Ok(n) if n != NO_KEY => {
            out.put_u32(n);
            out.extend_from_slice(b);
            Ok(())
        }
        _ => Err(ChunkError::Malformed("value larger than 4 GiB")),
    }
}

fn get_record(cur: &mut Bytes) -> Result<Record, ChunkError> {
    let topic = get_string(cur)?;
    let key = match get_u32(cur)? {
        NO_KEY => None,
        n => Some(take(cur, n as usize)?),
    };
    let n = get_u32(cur)? as usize;
    let value = take(cur, n)?;
    if cur.remaining() < 10 {
        return Err(ChunkError::Malformed("record truncated"));
    }
    let timestamp_ms = cur.get_i64();
    let count = cur.get_u16();
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let name = get_string(cur)?;
        let n = get_u32(cur)? as usize;
        headers.push(Header {
            name,
            value: take(cur, n)?,
        });
    }
    Ok(Record {
        topic,
        key,
        value,
        headers,
        timestamp_ms,
    })
}

fn get_u32(cur: &mut Bytes) -> Result<u32, ChunkError> {
    if cur.remaining() < 4 {
        return Err(ChunkError::Malformed("record truncated"));
    }
    Ok(cur.get_u32())
}

fn get_string(cur: &mut Bytes) -> Result<String, ChunkError> {
    if cur.remaining() < 2 {
        return Err(ChunkError::Malformed("record truncated"));
    }
    let n = usize::from(cur.get_u16());
    let b = take(cur, n)?;
    String::from_utf8(b.to_vec()).map_err(|_| ChunkError::Malformed("name is not UTF-8"))
}

fn take(cur: &mut Bytes, n: usize) -> Result<Bytes, ChunkError> {
    if cur.remaining() < n {
        return Err(ChunkError::Malformed("record truncated"));
    }
    Ok(cur.split_to(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(topic: &str, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> Record {
        Record {
            topic: topic.into(),
            key: key.map(Bytes::copy_from_slice),
            value: Bytes::copy_from_slice(value),
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: Bytes::copy_from_slice(v),
                })
                .collect(),
            timestamp_ms: 1_700_000_000_123,
        }
    }

    /// The header lies outside the checksum: a flipped bit there must be found before it
    /// becomes an allocation (found by `fuzz/` target `journal`).
    #[test]
    fn a_damaged_raw_length_is_refused_before_allocating() {
        let mut bytes = encode(7, &[rec("t", None, b"v", &[])]).unwrap();
        bytes[14..18].copy_from_slice(&u32::MAX.to_be_bytes());
        let (result, peak) = crate::test_heap::peak_heap(|| decode(&bytes));
        assert!(
            matches!(result, Err(ChunkError::Malformed(_))),
            "{result:?}"
        );
        assert!(peak < 1 << 20, "decoding held {peak} bytes at once");
    }

    #[test]
    fn a_sequence_range_past_u64_is_refused() {
        let mut bytes = encode(7, &[rec("t", None, b"v", &[]), rec("t", None, b"w", &[])]).unwrap();
        bytes[2..10].copy_from_slice(&(u64::MAX - 1).to_be_bytes());
        assert!(matches!(header(&bytes), Err(ChunkError::Malformed(_))));
        assert!(matches!(decode(&bytes), Err(ChunkError::Malformed(_))));
        bytes[2..10].copy_from_slice(&(u64::MAX - 2).to_be_bytes());
        assert_eq!(header(&bytes).unwrap().end_seq(), u64::MAX);
        let (_, records) = decode(&bytes).unwrap();
        assert_eq!(records[1].seq, u64::MAX - 1);
    }

    #[test]
    fn sparse_chunks_keep_each_records_own_number() {
        let records: Vec<SequencedRecord> = [5u64, 9, 10, 1_000_000]
            .iter()
            .map(|&seq| SequencedRecord {
                seq,
                record: rec(
                    "t",
                    Some(b"k"),
                    format!("v{seq}").as_bytes(),
                    &[("h", b"x")],
                ),
            })
            .collect();
        let bytes = encode_sparse(&records).unwrap();
        let (head, got) = decode(&bytes).unwrap();
        assert_eq!(
            head,
            ChunkHeader {
                first_seq: 5,
                count: 4,
                sparse: true
            }
        );
        assert_eq!(got, records);
        let entry = pointer(
            &bytes,
            Location {
                segment: 1,
                offset: 0,
                len: bytes.len() as u32,
            },
        );
        assert!(matches_pointer(&entry, &bytes));
        assert!(header(&entry).unwrap().sparse);
        assert!(location(&entry).is_some());
        // A sparse body is not the run-numbered chunk an ordinary pointer describes.
        let plain = encode(5, &[rec("t", None, b"", &[])]).unwrap();
        assert!(!matches_pointer(&entry, &plain));
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn round_trip_keeps_every_field_and_numbers_records() {
        let records = vec![
            rec("a", Some(b"k1"), b"v1", &[("unit", b"C")]),
            rec("b", None, b"", &[]),
            rec("a", Some(b""), &[0xff; 300], &[("x", b""), ("x", b"dup")]),
        ];
        let bytes = encode(41, &records).unwrap();
        let (head, got) = decode(&bytes).unwrap();
        assert_eq!(
            head,
            ChunkHeader {
                first_seq: 41,
                count: 3,
                sparse: false
            }
        );
        assert_eq!(head.end_seq(), 44);
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![41, 42, 43]
        );
        assert_eq!(
            got.into_iter().map(|r| r.record).collect::<Vec<_>>(),
            records
        );
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_checksum() {
        let mut bytes = encode(0, &[rec("t", None, b"hello", &[])]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(decode(&bytes), Err(ChunkError::Checksum { .. })));
    }

    #[test]
    fn truncated_and_garbage_chunks_are_errors_not_panics() {
        let bytes = encode(7, &[rec("t", Some(b"k"), b"hello", &[("h", b"v")])]).unwrap();
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        assert!(matches!(
            decode(b"garbage garbage garbage"),
            Err(ChunkError::BadHeader)
        ));
    }

    #[test]
    fn a_pointer_keeps_the_header_and_names_its_body() {
        let chunk = encode(40, &[rec("t", None, b"a", &[]), rec("t", None, b"b", &[])]).unwrap();
        let loc = Location {
            segment: 2,
            offset: 99,
            len: chunk.len() as u32,
        };
        let entry = pointer(&chunk, loc);
        assert_eq!(header(&entry).unwrap(), header(&chunk).unwrap());
        assert_eq!(location(&entry), Some(loc));
        assert_eq!(location(&chunk), None, "a whole chunk is no pointer");
        assert!(matches!(decode(&entry), Err(ChunkError::BadHeader)));
        assert!(matches_pointer(&entry, &chunk));
        let other = encode(41, &[rec("t", None, b"a", &[]), rec("t", None, b"b", &[])]).unwrap();
        assert!(!matches_pointer(&entry, &other));
    }

    proptest! {
        #[test]
        fn random_records_round_trip(
            first in 0u64..u64::MAX / 2,
            items in proptest::collection::vec(
                ("[a-z.]{1,12}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                 proptest::collection::vec(any::<u8>(), 0..64), any::<i64>()),
                1..20),
        ) {
            let records: Vec<Record> = items.into_iter().map(|(t, k, v, ts)| Record {
                topic: t, key: k.map(Bytes::from), value: Bytes::from(v), headers: vec![], timestamp_ms: ts,
            }).collect();
            let (head, got) = decode(&encode(first, &records).unwrap()).unwrap();
            prop_assert_eq!(head.first_seq, first);
            prop_assert_eq!(got.into_iter().map(|r| r.record).collect::<Vec<_>>(), records);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
