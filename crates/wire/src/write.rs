//! A RecordBatch v2 written byte by byte, in the layout of Kafka's `DefaultRecordBatch` and
//! `DefaultRecord`.
//!
//! kafka-protocol's encoder takes each record as a struct of its own with its headers in an
//! `IndexMap`; kedge's compressor for it copied the compressed section once more, and kedge
//! then copied the whole batch to check that the encoder had not split it. At full speed
//! that was 4.4 % of kedge's CPU, 29 % of sealing's; written here it is 1.3 % (bench/README.md,
//! "Where kedge's CPU goes at full speed"). Here the records go straight into one buffer, the
//! codec appends its section behind a reserved header, and the header and CRC are filled in
//! last. kafka-protocol still reads batches; the tests hold this writer to its decoder, and to
//! its encoder byte for byte.

use std::collections::HashMap;

use kafka_protocol::records::NO_PARTITION_LEADER_EPOCH;

use crate::batch::LOG_OVERHEAD;
use crate::record::Header;

/// Bytes from the batch's start to its attributes field, which the CRC covers to the end: base
/// offset (8), length (4), partition leader epoch (4), magic (1), CRC (4).
pub(crate) const CRC_START: usize = 21;

/// A length or count Kafka writes as an int32 and this one does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Oversized {
    /// What it is.
    pub what: &'static str,
    /// Its length or count.
    pub len: usize,
}

/// `len` as Kafka's int32, or what it is.
fn int32(what: &'static str, len: usize) -> Result<i32, Oversized> {
    i32::try_from(len).map_err(|_| Oversized { what, len })
}

fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes of `u` as an unsigned LEB128 varint.
fn unsigned_len(u: u64) -> usize {
    (64 - (u | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_unsigned(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push(u as u8 | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

/// Kafka's `varint`: zigzag, then LEB128.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_unsigned(out, zigzag32(v));
}

/// Kafka's `varlong`: zigzag, then LEB128.
pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, zigzag64(v));
}

pub(crate) fn varint_len(v: i32) -> usize {
    unsigned_len(zigzag32(v))
}

pub(crate) fn varlong_len(v: i64) -> usize {
    unsigned_len(zigzag64(v))
}

/// A byte string with its varint length before it (`None` is length -1).
fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(b.len() as i32) + b.len(),
        None => varint_len(-1),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// One record as it goes into the records section.
pub(crate) struct RecordParts<'a> {
    /// Timestamp minus the batch's smallest.
    pub timestamp_delta: i64,
    /// Offset minus the batch's base offset.
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Headers in wire order, each name and value: these, then `more_headers`.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    pub more_headers: &'a [(&'a [u8], &'a [u8])],
}

/// Appends `r` to a records section: its length, attributes 0, the deltas, key, value, headers.
pub(crate) fn put_record(out: &mut Vec<u8>, r: &RecordParts<'_>) -> Result<(), Oversized> {
    int32("a key", r.key.map_or(0, <[u8]>::len))?;
    int32("a value", r.value.len())?;
    let count = int32("the header count", r.headers.len() + r.more_headers.len())?;
    let mut headers = varint_len(count);
    for (name, value) in r.headers.iter().chain(r.more_headers) {
        int32("a header name", name.len())?;
        int32("a header value", value.len())?;
        headers += bytes_len(Some(name)) + bytes_len(Some(value));
    }
    let size = 1
        + varlong_len(r.timestamp_delta)
        + varint_len(r.offset_delta)
        + bytes_len(r.key)
        + bytes_len(Some(r.value))
        + headers;
    let size = int32("a record", size)?;
    out.reserve(varint_len(size) + size as usize);
    put_varint(out, size);
    out.push(0);
    put_varlong(out, r.timestamp_delta);
    put_varint(out, r.offset_delta);
    put_bytes(out, r.key);
    put_bytes(out, Some(r.value));
    put_varint(out, count);
    for (name, value) in r.headers.iter().chain(r.more_headers) {
        put_bytes(out, Some(name));
        put_bytes(out, Some(value));
    }
    Ok(())
}

/// `n` in decimal ASCII, written into the end of `buf`.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Header names a record may have only once, as kafka-protocol's record model (an `IndexMap`)
/// has them: a repeated name keeps its first position and takes its last value.
pub(crate) struct UniqueHeaders<'a> {
    headers: Vec<(&'a [u8], &'a [u8])>,
    /// Position of each name in `headers`, kept only for records with many headers: a linear
    /// search per header would make a record of 65,535 headers cost billions of comparisons.
    index: HashMap<&'a [u8], usize>,
}

/// Above this many headers a record's names are looked up in a map.
const LINEAR_SEARCH_MAX: usize = 16;

impl<'a> UniqueHeaders<'a> {
    pub(crate) fn new() -> Self {
        UniqueHeaders {
            headers: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// `own` without the names in `skip`, each repeated name once; reuses its buffers.
    pub(crate) fn of(&mut self, own: &'a [Header], skip: &[&str]) -> &[(&'a [u8], &'a [u8])] {
        self.headers.clear();
        self.index.clear();
        let indexed = own.len() > LINEAR_SEARCH_MAX;
        for h in own {
            if skip.contains(&h.name.as_str()) {
                continue;
            }
            let (name, value) = (h.name.as_bytes(), &h.value[..]);
            let found = if indexed {
                self.index.get(name).copied()
            } else {
                self.headers.iter().position(|(n, _)| *n == name)
            };
            match found {
                Some(i) => self.headers[i].1 = value,
                None => {
                    if indexed {
                        self.index.insert(name, self.headers.len());
                    }
                    self.headers.push((name, value));
                }
            }
        }
        &self.headers
    }
}

/// The fields of a batch's header that are not lengths or the CRC.
pub(crate) struct BatchFields {
    /// The codec's attribute bits (CreateTime, not transactional, not control).
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// Fills the first [`crate::batch::BATCH_OVERHEAD`] bytes of `batch`, whose records section
/// follows them, and the CRC over everything from the attributes on. Base offset 0; the
/// partition leader epoch is -1, which the leader stamps on append.
pub(crate) fn finish_batch(batch: &mut [u8], fields: &BatchFields) -> Result<(), Oversized> {
    let length = int32("a batch", batch.len() - LOG_OVERHEAD)?;
    let mut at = 0;
    let mut put = |b: &[u8]| {
        batch[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    put(&0_i64.to_be_bytes());
    put(&length.to_be_bytes());
    put(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
    put(&[2]);
    put(&[0; 4]);
    put(&fields.attributes.to_be_bytes());
    put(&fields.last_offset_delta.to_be_bytes());
    put(&fields.base_timestamp.to_be_bytes());
    put(&fields.max_timestamp.to_be_bytes());
    put(&fields.producer_id.to_be_bytes());
    put(&fields.producer_epoch.to_be_bytes());
    put(&fields.base_sequence.to_be_bytes());
    put(&fields.record_count.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_START - 4..CRC_START].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// Reads an unsigned LEB128 varint and undoes the zigzag.
    fn read_zigzag(bytes: &[u8]) -> (i64, usize) {
        let mut u = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            u |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return ((u >> 1) as i64 ^ -((u & 1) as i64), i + 1);
            }
        }
        panic!("unterminated varint {bytes:?}");
    }

    proptest! {
        #[test]
        fn varints_round_trip(v in any::<i32>(), w in any::<i64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(read_zigzag(&out), (i64::from(v), varint_len(v)));
            prop_assert_eq!(out.len(), varint_len(v));
            let mut out = Vec::new();
            put_varlong(&mut out, w);
            prop_assert_eq!(read_zigzag(&out), (w, varlong_len(w)));
            prop_assert_eq!(out.len(), varlong_len(w));
        }
    }

    /// Kafka's own vectors (`ByteUtilsTest.testVarintSerde`).
    #[test]
    fn varints_as_kafka_writes_them() {
        for (v, bytes) in [
            (0, &[0x00][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (-65, &[0x81, 0x01]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
        }
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 1_234_567_890, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn varint_edges() {
        for (v, len) in [
            (0, 1),
            (-1, 1),
            (63, 1),
            (64, 2),
            (-65, 2),
            (i32::MAX, 5),
            (i32::MIN, 5),
        ] {
            assert_eq!(varint_len(v), len, "{v}");
        }
        assert_eq!(varlong_len(i64::MIN), 10);
        assert_eq!(varlong_len(i64::MAX), 10);
    }

    fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    #[test]
    fn a_repeated_name_keeps_its_first_place_and_last_value() {
        let own = vec![
            header("a", "1"),
            header("kedge-seq", "spoof"),
            header("b", "2"),
            header("a", "3"),
        ];
        let mut unique = UniqueHeaders::new();
        let got: Vec<_> = unique.of(&own, &["kedge-seq"]).to_vec();
        assert_eq!(got, vec![(&b"a"[..], &b"3"[..]), (&b"b"[..], &b"2"[..])]);
    }

    #[test]
    fn many_headers_are_made_unique_by_the_map_alike() {
        let mut own: Vec<Header> = (0..40)
            .map(|i| header(&format!("h{}", i % 25), &i.to_string()))
            .collect();
        own.push(header("skip", "x"));
        let mut unique = UniqueHeaders::new();
        let got = unique.of(&own, &["skip"]);
        assert_eq!(got.len(), 25);
        for (i, (name, value)) in got.iter().enumerate() {
            assert_eq!(*name, format!("h{i}").as_bytes());
            let last = if i < 15 { i + 25 } else { i };
            assert_eq!(*value, last.to_string().as_bytes());
        }
    }

    /// Best of five timings of making `n` distinct header names unique.
    fn unique_time(n: usize) -> std::time::Duration {
        let own: Vec<Header> = (0..n).map(|i| header(&format!("name-{i}"), "v")).collect();
        let mut unique = UniqueHeaders::new();
        (0..5)
            .map(|_| {
                let started = std::time::Instant::now();
                assert_eq!(unique.of(&own, &[]).len(), n);
                started.elapsed()
            })
            .min()
            .unwrap()
    }

    #[test]
    fn many_headers_take_linear_time() {
        // 16 times the headers: about 16 times the time when linear, 256 when quadratic (a
        // record of 65,535 headers would then cost about two billion comparisons).
        let (small, large) = (unique_time(4_096), unique_time(65_536));
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
        assert!(
            ratio < 64.0,
            "{small:?} for 4,096 headers, {large:?} for 65,536"
        );
    }
}
