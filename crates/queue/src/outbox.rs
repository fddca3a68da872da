//! Sealed batches: Kafka RecordBatches cut once, persisted before their first send, and resent
//! byte for byte until Kafka acknowledges them.

use bytes::{Buf, BufMut, Bytes};

use super::segments::Location;
use kedge_wire::batch::ProducerIdentity;

/// An entry holding the batch's bytes, whose records carry no `kedge-queue` header (queues
/// written before segment files).
const LEGACY_INLINE_VERSION: u8 = 1;
/// An entry holding where the batch's bytes lie in a segment file, and their checksum; its
/// records carry no `kedge-queue` header (sealed before queues had an id).
const LEGACY_POINTER_VERSION: u8 = 2;
/// As [`LEGACY_POINTER_VERSION`], for a batch whose records carry `kedge-queue`.
const POINTER_VERSION: u8 = 3;
/// An entry holding a small batch's bytes and their checksum; its records carry `kedge-queue`.
const INLINE_VERSION: u8 = 4;
/// Version, partition, producer id and epoch, base sequence, record count, first and last
/// kedge-seq, topic length: what precedes the topic in every entry.
const HEADER_LEN: usize = 1 + 4 + 8 + 2 + 4 + 4 + 8 + 8 + 2;

/// A Kafka RecordBatch as persisted in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBatch {
    /// Outbox key: a global counter, so seal order is key order.
    pub batch_no: u64,
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Producer id and epoch the batch was sealed under.
    pub producer: ProducerIdentity,
    /// Sequence number of the first record in the batch.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
    /// `kedge-seq` of the first record.
    pub first_seq: u64,
    /// `kedge-seq` of the last record.
    pub last_seq: u64,
    /// The encoded RecordBatch v2, exactly as it is sent.
    pub bytes: Bytes,
    /// Its records carry no `kedge-queue` header: sealed by a kedge before queues had an id.
    pub legacy: bool,
}

/// A sealed batch without its bytes: what delivery keeps in memory per batch, reading the
/// bytes (from their segment file or their entry) only to send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMeta {
    /// Outbox key.
    pub batch_no: u64,
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Producer id and epoch the batch was sealed under.
    pub producer: ProducerIdentity,
    /// Sequence number of the first record in the batch.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
    /// `kedge-seq` of the first record.
    pub first_seq: u64,
    /// `kedge-seq` of the last record.
    pub last_seq: u64,
    /// Bytes of the encoded batch.
    pub len: u32,
    /// Its records carry no `kedge-queue` header (see [`SealedBatch::legacy`]).
    pub legacy: bool,
}

/// Where a sealed batch's bytes lie, and their CRC-32C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BodyRef {
    /// Where the bytes lie.
    pub loc: Location,
    /// Checksum of the bytes.
    pub crc: u32,
}

/// Why a stored batch could not be read.
#[derive(Debug, thiserror::Error)]
#[error("sealed batch {batch_no} is malformed: {what}")]
pub struct OutboxError {
    /// Key of the batch.
    pub batch_no: u64,
    /// What is wrong.
    pub what: &'static str,
}

impl SealedBatch {
    /// Everything but the bytes.
    pub fn meta(&self) -> BatchMeta {
        BatchMeta {
            batch_no: self.batch_no,
            topic: self.topic.clone(),
            partition: self.partition,
            producer: self.producer,
            base_sequence: self.base_sequence,
            record_count: self.record_count,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            len: u32::try_from(self.bytes.len()).unwrap_or(u32::MAX),
            legacy: self.legacy,
        }
    }

    /// The outbox key of this batch.
    pub fn key(&self) -> [u8; 8] {
        self.batch_no.to_be_bytes()
    }

    /// The outbox entry for this batch, its bytes stored at `loc`.
    pub(super) fn encode_pointer(&self, loc: Location) -> Vec<u8> {
        let version = if self.legacy {
            LEGACY_POINTER_VERSION
        } else {
            POINTER_VERSION
        };
        let mut out = self.put_header(version, Location::ENCODED_LEN + 4);
        loc.put(&mut out);
        out.put_u32(crc32c::crc32c(&self.bytes));
        out
    }

    /// The outbox entry for this batch, holding its bytes and their checksum. Not for a
    /// legacy batch: the version says its records carry `kedge-queue`.
    pub(super) fn encode_inline(&self) -> Vec<u8> {
        debug_assert!(
            !self.legacy,
            "an inline entry says its records carry kedge-queue"
        );
        let mut out = self.put_header(INLINE_VERSION, 4 + self.bytes.len());
        out.put_u32(crc32c::crc32c(&self.bytes));
        out.extend_from_slice(&self.bytes);
        out
    }

    /// The entry of an outbox as queues written before segment files hold it: bytes inline.
    #[cfg(test)]
    pub(super) fn encode_legacy_inline(&self) -> Vec<u8> {
        let mut out = self.put_header(LEGACY_INLINE_VERSION, self.bytes.len());
        out.extend_from_slice(&self.bytes);
        out
    }

    fn put_header(&self, version: u8, rest: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.topic.len() + rest);
        out.put_u8(version);
        out.put_i32(self.partition);
        out.put_i64(self.producer.producer_id);
        out.put_i16(self.producer.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.record_count);
        out.put_u64(self.first_seq);
        out.put_u64(self.last_seq);
        // Topic names are at most 249 bytes (Kafka's limit), checked by config validation.
        out.put_u16(self.topic.len() as u16);
        out.extend_from_slice(self.topic.as_bytes());
        out
    }

    /// Reads an entry stored under `key`: the whole batch, or the batch with empty `bytes` and
    /// where they lie. Bytes held in the entry are checked against their checksum.
    pub(super) fn decode(key: &[u8], value: &[u8]) -> Result<(Self, Option<BodyRef>), OutboxError> {
        let (mut batch, stored) = Self::decode_header(key, value)?;
        match stored {
            Stored::Segment(body) => Ok((batch, Some(body))),
            Stored::Inline { bytes, crc } => {
                if crc.is_some_and(|crc| crc != crc32c::crc32c(bytes)) {
                    return Err(OutboxError {
                        batch_no: batch.batch_no,
                        what: "the bytes do not match their checksum",
                    });
                }
                batch.bytes = Bytes::copy_from_slice(bytes);
                Ok((batch, None))
            }
        }
    }

    /// The entry without its bytes (`bytes` empty), and where they are, unchecked: what
    /// delivery loads (the bytes are checked when read to be sent), where a body lies, and
    /// what is known of a damaged batch (its records, to count them lost).
    pub(super) fn decode_header<'a>(
        key: &[u8],
        value: &'a [u8],
    ) -> Result<(Self, Stored<'a>), OutboxError> {
        let batch_no = key
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| OutboxError {
                batch_no: 0,
                what: "key is not 8 bytes",
            })?;
        let err = |what| OutboxError { batch_no, what };
        let mut b = value;
        if b.remaining() < HEADER_LEN {
            return Err(err("truncated header"));
        }
        let version = b.get_u8();
        if ![
            LEGACY_INLINE_VERSION,
            LEGACY_POINTER_VERSION,
            POINTER_VERSION,
            INLINE_VERSION,
        ]
        .contains(&version)
        {
            return Err(err("unknown version"));
        }
        let partition = b.get_i32();
        let producer = ProducerIdentity {
            producer_id: b.get_i64(),
            producer_epoch: b.get_i16(),
        };
        let base_sequence = b.get_i32();
        let record_count = b.get_i32();
        let first_seq = b.get_u64();
        let last_seq = b.get_u64();
        let n = usize::from(b.get_u16());
        if b.remaining() < n {
            return Err(err("truncated topic"));
        }
        let topic = String::from_utf8(b[..n].to_vec()).map_err(|_| err("topic is not UTF-8"))?;
        b.advance(n);
        let stored = if version == LEGACY_INLINE_VERSION {
            Stored::Inline {
                bytes: b,
                crc: None,
            }
        } else if version == INLINE_VERSION {
            if b.remaining() < 4 {
                return Err(err("truncated checksum"));
            }
            let crc = b.get_u32();
            Stored::Inline {
                bytes: b,
                crc: Some(crc),
            }
        } else {
            if b.remaining() != Location::ENCODED_LEN + 4 {
                return Err(err("malformed location"));
            }
            let loc = Location::get(b).ok_or_else(|| err("malformed location"))?;
            b.advance(Location::ENCODED_LEN);
            let crc = b.get_u32();
            Stored::Segment(BodyRef { loc, crc })
        };
        let batch = SealedBatch {
            batch_no,
            topic,
            partition,
            producer,
            base_sequence,
            record_count,
            first_seq,
            last_seq,
            bytes: Bytes::new(),
            legacy: !matches!(version, POINTER_VERSION | INLINE_VERSION),
        };
        Ok((batch, stored))
    }

    /// Bytes of this batch's entry were it kept inline ([`SealedBatch::encode_inline`]).
    pub(super) fn inline_entry_len(&self) -> usize {
        HEADER_LEN + self.topic.len() + 4 + self.bytes.len()
    }
}

/// Where an entry's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored<'a> {
    /// In a segment file.
    Segment(BodyRef),
    /// In the entry, with their checksum when the version has one.
    Inline {
        /// The bytes.
        bytes: &'a [u8],
        /// Their CRC-32C.
        crc: Option<u32>,
    },
}

impl Stored<'_> {
    /// Where the bytes lie in a segment file, if they do.
    pub(super) fn segment(&self) -> Option<BodyRef> {
        match self {
            Stored::Segment(body) => Some(*body),
            Stored::Inline { .. } => None,
        }
    }

    /// Bytes of the encoded batch.
    pub(super) fn len(&self) -> u32 {
        match self {
            Stored::Segment(body) => body.loc.len,
            Stored::Inline { bytes, .. } => u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b = SealedBatch {
            batch_no: 9,
            topic: "readings".into(),
            partition: 2,
            producer: ProducerIdentity {
                producer_id: 77,
                producer_epoch: 3,
            },
            base_sequence: i32::MAX - 4,
            record_count: 5,
            first_seq: 100,
            last_seq: 104,
            bytes: Bytes::from_static(b"\x00\x01batch"),
            legacy: true,
        };
        assert_eq!(
            SealedBatch::decode(&b.key(), &b.encode_legacy_inline()).unwrap(),
            (b.clone(), None)
        );
        let enc = b.encode_legacy_inline();
        for n in 0..enc.len() - b.bytes.len() {
            assert!(SealedBatch::decode(&b.key(), &enc[..n]).is_err());
        }
        let loc = Location {
            segment: 1,
            offset: 2,
            len: b.bytes.len() as u32,
        };
        let enc = b.encode_pointer(loc);
        let (head, body) = SealedBatch::decode(&b.key(), &enc).unwrap();
        assert_eq!(
            body,
            Some(BodyRef {
                loc,
                crc: crc32c::crc32c(&b.bytes)
            })
        );
        assert_eq!(
            head,
            SealedBatch {
                bytes: Bytes::new(),
                ..b.clone()
            }
        );
        for n in 0..enc.len() {
            assert!(SealedBatch::decode(&b.key(), &enc[..n]).is_err());
        }
        // Whether the records carry kedge-queue survives the round trip.
        let current = SealedBatch {
            legacy: false,
            ..b.clone()
        };
        let (head, _) = SealedBatch::decode(&b.key(), &current.encode_pointer(loc)).unwrap();
        assert!(!head.legacy);
    }

    #[test]
    fn an_inline_entry_round_trips_and_damage_to_its_bytes_is_found() {
        let b = SealedBatch {
            batch_no: 3,
            topic: "readings".into(),
            partition: 0,
            producer: ProducerIdentity {
                producer_id: 7,
                producer_epoch: 1,
            },
            base_sequence: 10,
            record_count: 2,
            first_seq: 40,
            last_seq: 41,
            bytes: Bytes::from_static(b"\x00\x01a small batch"),
            legacy: false,
        };
        let enc = b.encode_inline();
        assert_eq!(enc.len(), b.inline_entry_len());
        assert_eq!(
            SealedBatch::decode(&b.key(), &enc).unwrap(),
            (b.clone(), None)
        );
        for n in 0..enc.len() - b.bytes.len() {
            assert!(SealedBatch::decode(&b.key(), &enc[..n]).is_err(), "{n}");
        }
        // Any byte of the batch changed, or one lost from its end, is found.
        for at in enc.len() - b.bytes.len()..enc.len() {
            let mut bad = enc.clone();
            bad[at] ^= 0x40;
            assert!(SealedBatch::decode(&b.key(), &bad).is_err(), "{at}");
            // What it was is still known, to count its records lost.
            let (header, stored) = SealedBatch::decode_header(&b.key(), &bad).unwrap();
            assert_eq!(header.record_count, 2);
            assert_eq!(stored.len(), b.bytes.len() as u32);
        }
        assert!(SealedBatch::decode(&b.key(), &enc[..enc.len() - 1]).is_err());
    }
}
