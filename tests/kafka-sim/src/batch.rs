//! RecordBatch v2 (magic 2) as it travels in Produce and Fetch: the fixed 61-byte header read
//! in place (the broker never needs to decompress to enforce idempotence), its CRC-32C, and an
//! encoder for tests.
//!
//! Layout (Kafka's `DefaultRecordBatch`): base offset i64 @0, batch length i32 @8 (bytes after
//! this field), partition leader epoch i32 @12, magic i8 @16, CRC u32 @17 (CRC-32C of bytes 21..),
//! attributes i16 @21, last offset delta i32 @23, first timestamp i64 @27, max timestamp i64
//! @35, producer id i64 @43, producer epoch i16 @51, base sequence i32 @53, record count i32
//! @57, records @61.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

/// Base offset and batch length: the part of every batch (and legacy entry) before its
/// "length" bytes.
pub(crate) const LOG_OVERHEAD: usize = 12;
/// Size of the v2 header up to the first record.
pub(crate) const HEADER_LEN: usize = 61;
/// Smallest legal value of the length field (`LegacyRecord.RECORD_OVERHEAD_V0`); Kafka calls
/// anything smaller corrupt before looking further.
pub(crate) const MIN_LENGTH_FIELD: usize = 14;
/// Where the magic byte sits in a batch and in a legacy entry alike.
pub(crate) const MAGIC_AT: usize = 16;
/// Where the partition leader epoch sits (not covered by the CRC: the leader stamps it).
pub(crate) const LEADER_EPOCH_AT: usize = 12;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// The header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (0 as a producer sends it; the log's offset once stored).
    pub base_offset: i64,
    /// Size of the whole batch in bytes, header included.
    pub size: usize,
    /// Stored CRC-32C.
    pub crc: u32,
    /// Codec (bits 0–2), timestamp type (bit 3), transactional (bit 4), control (bit 5).
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// −1 for a non-idempotent producer.
    pub producer_id: i64,
    /// The producer's epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record (−1 without a producer id).
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `bytes`: `None` when fewer than 61 bytes are there or
    /// the magic byte is not 2. Says nothing about whether the whole batch is present.
    pub fn read(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < HEADER_LEN || bytes[MAGIC_AT] != 2 {
            return None;
        }
        let length = i32_at(bytes, 8);
        Some(BatchHeader {
            base_offset: i64_at(bytes, 0),
            size: LOG_OVERHEAD + usize::try_from(length).ok()?,
            crc: u32::from_be_bytes(bytes[CRC_AT..CRC_AT + 4].try_into().ok()?),
            attributes: i16::from_be_bytes(
                bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].try_into().ok()?,
            ),
            last_offset_delta: i32_at(bytes, 23),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16::from_be_bytes(bytes[51..53].try_into().ok()?),
            base_sequence: i32_at(bytes, 53),
            record_count: i32_at(bytes, 57),
        })
    }

    /// The codec named by the attributes, `None` for an id Kafka does not know (5–7).
    pub fn compression(&self) -> Option<Compression> {
        Some(match self.attributes & 0x7 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Whether the batch belongs to a transaction (attribute bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & (1 << 4) != 0
    }

    /// Whether the batch holds control records (attribute bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & (1 << 5) != 0
    }

    /// Sequence of the last record: Kafka's `DefaultRecordBatch.lastSequence`, which wraps
    /// from `i32::MAX` to 0.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `sequence + increment` as Kafka counts sequences (`DefaultRecordBatch.incrementSequence`):
/// after `i32::MAX` comes 0, never a negative number.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Whether the CRC-32C stored in a complete batch matches its bytes from the attributes on.
pub(crate) fn crc_matches(batch: &[u8], header: &BatchHeader) -> bool {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..]) == header.crc
}

/// Stores a fresh CRC-32C into a complete batch (after editing CRC-covered bytes).
pub(crate) fn seal_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(b)
}

/// A record to encode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// Create time, in milliseconds since the epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value, if any.
    pub value: Option<Bytes>,
    /// Header names and values, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl NewRecord {
    /// A record with a value and nothing else.
    pub fn value(timestamp: i64, value: impl Into<Bytes>) -> NewRecord {
        NewRecord {
            timestamp,
            value: Some(value.into()),
            ..NewRecord::default()
        }
    }
}

/// The producer fields of an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idempotence {
    /// Producer id from InitProducerId.
    pub producer_id: i64,
    /// Producer epoch from InitProducerId.
    pub producer_epoch: i16,
    /// Sequence of the batch's first record.
    pub base_sequence: i32,
}

/// Codecs the encoder can write (the others are not compiled into kafka-protocol here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// zstd, as kedge sends.
    Zstd,
}

/// Encodes `records` as one v2 batch with base offset 0, as a producer sends it.
///
/// kafka-protocol's encoder starts a new batch whenever `offset − sequence` changes, so records
/// get `offset = i` and `sequence = base + i` (non-idempotent: `sequence = offset − 1`, which
/// makes the base sequence −1).
///
/// # Panics
/// When `records` is empty or the encoder fails (it does not for these inputs).
pub fn encode_batch(
    idempotence: Option<Idempotence>,
    records: &[NewRecord],
    codec: Codec,
) -> Bytes {
    assert!(
        !records.is_empty(),
        "a record batch needs at least one record"
    );
    let (producer_id, producer_epoch, base_sequence) = match idempotence {
        Some(i) => (i.producer_id, i.producer_epoch, i.base_sequence),
        None => (-1, -1, -1),
    };
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let i = i32::try_from(i).expect("fewer than 2^31 records");
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: i64::from(i),
                sequence: base_sequence.wrapping_add(i),
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                    .collect::<IndexMap<_, _>>(),
            }
        })
        .collect();
    let options = RecordEncodeOptions {
        version: 2,
        compression: match codec {
            Codec::None => Compression::None,
            Codec::Zstd => Compression::Zstd,
        },
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode a record batch");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_of_an_encoded_batch() {
        let records = [NewRecord::value(7, "a"), NewRecord::value(9, "b")];
        let idem = Idempotence {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 10,
        };
        let batch = encode_batch(Some(idem), &records, Codec::None);
        let h = BatchHeader::read(&batch).expect("header");
        assert_eq!(h.size, batch.len());
        assert_eq!((h.producer_id, h.producer_epoch), (42, 3));
        assert_eq!((h.base_sequence, h.last_sequence()), (10, 11));
        assert_eq!((h.record_count, h.last_offset_delta), (2, 1));
        assert_eq!(h.max_timestamp, 9);
        assert_eq!(h.compression(), Some(Compression::None));
        assert!(crc_matches(&batch, &h));
    }

    #[test]
    fn non_idempotent_batch_has_no_sequence() {
        let records: Vec<_> = (0..3).map(|_| NewRecord::value(1, "x")).collect();
        let batch = encode_batch(None, &records, Codec::Zstd);
        let h = BatchHeader::read(&batch).expect("header");
        assert_eq!(
            (h.producer_id, h.base_sequence, h.record_count),
            (-1, -1, 3)
        );
        assert_eq!(h.compression(), Some(Compression::Zstd));
    }

    #[test]
    fn sequences_wrap_to_zero() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
    }
}
