//! Helpers shared by the fuzz targets: structured values drawn from the fuzzer's bytes, and the
//! journal chunk round trip every target ends with.

use bytes::Bytes;
use kedge_queue::chunk;
use kedge_wire::record::{Header, Record};

/// Reads structured values from the fuzzer's bytes; past the end everything is zero or empty,
/// so that every input means something.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A length-prefixed (one byte) byte string; 255 means "a long one" (two more bytes).
    pub fn blob(&mut self) -> &'a [u8] {
        let n = match self.u8() {
            255 => usize::from(self.u16()),
            n => usize::from(n),
        };
        self.bytes(n)
    }

    /// A length-prefixed string, made valid UTF-8 lossily.
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.blob()).into_owned()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// A record drawn from the input, with `headers` headers at most.
pub fn record(input: &mut Input<'_>, headers: usize) -> Record {
    let topic = input.string();
    let key = input.bool().then(|| Bytes::copy_from_slice(input.blob()));
    let value = Bytes::copy_from_slice(input.blob());
    let timestamp_ms = input.u64() as i64;
    let n = usize::from(input.u8()).min(headers);
    let headers = (0..n)
        .map(|_| Header {
            name: input.string(),
            value: Bytes::copy_from_slice(input.blob()),
        })
        .collect();
    Record {
        topic,
        key,
        value,
        headers,
        timestamp_ms,
    }
}

/// Journals `records` as one chunk numbered from `first_seq` and reads it back: an encode
/// error is allowed (the caller learns of it), anything decoded must be what was encoded.
pub fn round_trip(first_seq: u64, records: &[Record]) -> Result<(), chunk::ChunkError> {
    let bytes = chunk::encode(first_seq, records)?;
    let head = chunk::header(&bytes).expect("header of a chunk just encoded");
    assert_eq!(head.first_seq, first_seq);
    assert_eq!(head.count as usize, records.len());
    assert!(!head.sparse);
    let (head2, decoded) = chunk::decode(&bytes).expect("decode of a chunk just encoded");
    assert_eq!(head, head2);
    assert_eq!(decoded.len(), records.len());
    for (i, (d, r)) in decoded.iter().zip(records).enumerate() {
        assert_eq!(d.seq, first_seq.wrapping_add(i as u64));
        assert_eq!(&d.record, r);
    }
    Ok(())
}

/// Why a record cannot be journaled, if it cannot: the limits of the chunk format
/// (crates/queue/src/chunk.rs `put_record`).
pub fn unjournalable(r: &Record) -> Option<&'static str> {
    if r.topic.len() > usize::from(u16::MAX) {
        return Some("topic longer than 65535 bytes");
    }
    if r.headers.len() > usize::from(u16::MAX) {
        return Some("more than 65535 headers");
    }
    if r.headers
        .iter()
        .any(|h| h.name.len() > usize::from(u16::MAX))
    {
        return Some("header name longer than 65535 bytes");
    }
    None
}

/// The commit of routed `records`: encoded as one chunk and read back. The router
/// dead-letters whatever the chunk cannot hold (`Record::defect`), so an encode error here is
/// a record that would stall the commit stage (fuzz/README.md, finding 1).
pub fn commit(first_seq: u64, records: &[Record]) {
    if let Err(e) = round_trip(first_seq, records) {
        let why = records.iter().find_map(unjournalable);
        panic!("chunk::encode failed on routed records: {e} ({why:?})");
    }
}
