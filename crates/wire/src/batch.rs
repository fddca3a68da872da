//! Building and reading Kafka RecordBatch v2 bytes for the idempotent producer.
//!
//! A batch is encoded once and its bytes are kept: a retry must resend exactly the same batch
//! (same producer id, epoch and base sequence) for the broker's duplicate detection to work, so
//! encoding is deterministic.

use bytes::{Buf, Bytes};
use kafka_protocol::records::{Compression, NO_SEQUENCE, RecordBatchDecoder};

use crate::codec;
use crate::record::{HEADER_DEVICE, HEADER_QUEUE, HEADER_SEQ, Origin, SequencedRecord};
use crate::sequence;
use crate::write::{self, Oversized};

/// Batch header size up to and including the magic byte (base offset, length, epoch, magic).
const MAGIC_END: usize = 17;

/// Bytes before the batch-length field's payload: base offset (8) and the length itself (4).
pub(crate) const LOG_OVERHEAD: usize = 12;

/// Smallest possible encoded record: length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each.
const MIN_RECORD_LEN: usize = 7;

/// Bytes of a RecordBatch v2 before its first record: base offset (8), length (4), partition
/// leader epoch (4), magic (1), CRC (4), attributes (2), last offset delta (4), base and max
/// timestamps (8 + 8), producer id (8), epoch (2), base sequence (4), record count (4).
pub const BATCH_OVERHEAD: usize = 61;

/// Longest varint (int32) and varlong (int64) encodings.
const VARINT_MAX: usize = 5;
const VARLONG_MAX: usize = 10;

/// Largest decompressed record section we accept when reading, so that a hostile or corrupt
/// batch cannot make an edge device allocate without bound.
const MAX_DECOMPRESSED_LEN: u64 = 64 * 1024 * 1024;

/// Offsets are non-negative in Kafka; bounding the base lets the decoder add any `i32` delta,
/// and a reader add one more to the last offset for the offset after an entry.
const MAX_BASE_OFFSET: i64 = i64::MAX - i32::MAX as i64 - 1;

/// The idempotent producer's identity, as granted by InitProducerId.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
}

/// Compression of a batch's record section (framed as [`crate::codec`] says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchCompression {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy, in snappy-java's stream framing.
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard (needs Produce v7+, Kafka 2.1+).
    Zstd,
}

impl BatchCompression {
    /// kafka-protocol's name for it, which is also the attribute bits it is written as.
    pub fn wire(self) -> Compression {
        match self {
            BatchCompression::None => Compression::None,
            BatchCompression::Gzip => Compression::Gzip,
            BatchCompression::Snappy => Compression::Snappy,
            BatchCompression::Lz4 => Compression::Lz4,
            BatchCompression::Zstd => Compression::Zstd,
        }
    }
}

/// One record read back from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Record key.
    pub key: Option<Bytes>,
    /// Record value (`None` is a tombstone; kedge never writes one).
    pub value: Option<Bytes>,
    /// Headers in wire order; a null header value (never written by kedge) reads as empty.
    pub headers: Vec<(String, Bytes)>,
    /// Record timestamp in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Offset relative to the batch's base offset.
    pub offset_delta: i64,
    /// Producer sequence of this record, or -1 when the batch has none (non-idempotent writer).
    pub sequence: i32,
}

/// Header fields of one batch, read without decompressing its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Offset of the first record (0 in a batch we build; assigned by the broker in the log).
    pub base_offset: i64,
    /// Producer id (-1 for non-idempotent writers).
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record (-1 for non-idempotent writers).
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
    /// Compression of the record section.
    pub compression: Compression,
}

/// Why a batch could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Kafka has no empty record batches.
    #[error("a record batch needs at least one record")]
    Empty,
    /// The record count does not fit the batch's int32 record-count field.
    #[error("{0} records do not fit in one record batch")]
    TooManyRecords(usize),
    /// Sequence numbers are non-negative; -1 means "no sequence".
    #[error("invalid base sequence {0}")]
    InvalidBaseSequence(i32),
    /// The batch's sequences would wrap from i32::MAX to 0 inside it; cut it at the wrap.
    #[error(
        "{record_count} records from base sequence {base_sequence} would wrap past i32::MAX; cut the batch at the wrap"
    )]
    SequenceWrap {
        /// Requested base sequence.
        base_sequence: i32,
        /// Requested record count.
        record_count: usize,
    },
    /// Timestamp deltas are computed in i64 and this batch's span overflows it.
    #[error("record timestamps {min} and {max} are too far apart for one batch")]
    TimestampSpread {
        /// Smallest timestamp in the batch.
        min: i64,
        /// Largest timestamp in the batch.
        max: i64,
    },
    /// A length or count does not fit the int32 Kafka writes it as.
    #[error("{what} of {len} does not fit in a record batch")]
    Oversized {
        /// What it is ("a value", "the header count", ...).
        what: &'static str,
        /// Its length in bytes, or the count.
        len: usize,
    },
    /// The codec failed. The cause is part of the message (not a `source`): callers put errors
    /// into strings with `{e}`, which would drop it.
    #[error("compressing the record batch failed: {0}")]
    Compress(codec::CodecError),
    /// The bytes end in the middle of a batch.
    #[error("batch at byte {at} needs {needed} bytes, only {available} left")]
    Truncated {
        /// Byte position of the batch.
        at: usize,
        /// Bytes the batch claims or its header needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The batch length field is negative.
    #[error("batch at byte {at} has negative length {length}")]
    NegativeLength {
        /// Byte position of the batch.
        at: usize,
        /// The length field.
        length: i32,
    },
    /// Only RecordBatch v2 (magic 2) is supported; v0/v1 message sets predate idempotence.
    #[error("batch at byte {at} has unsupported magic {magic}")]
    UnsupportedMagic {
        /// Byte position of the batch.
        at: usize,
        /// The magic byte.
        magic: i8,
    },
    /// The base offset is out of Kafka's range.
    #[error("batch base offset {0} is out of range")]
    InvalidBaseOffset(i64),
    /// kafka-protocol (or our decompression guard) rejected the bytes; the cause is part of
    /// the message, as for [`BatchError::Compress`].
    #[error("decoding the record batch failed: {0:#}")]
    Decode(anyhow::Error),
}

impl From<Oversized> for BatchError {
    fn from(e: Oversized) -> Self {
        BatchError::Oversized {
            what: e.what,
            len: e.len,
        }
    }
}

/// At least the bytes `r` takes in an uncompressed batch encoded by [`encode_batch`] for
/// `origin`, kedge's own headers and the record framing included: what the dispatcher cuts
/// batches by, so that a full batch stays within its byte limit (Kafka refuses a batch above
/// its `message.max.bytes`, 1 MiB + 12 by default, and counts the framing too).
pub fn record_size_bound(r: &SequencedRecord, origin: &Origin) -> usize {
    let record = &r.record;
    let own: usize = record
        .headers
        .iter()
        .map(|h| 2 * VARINT_MAX + h.name.len() + h.value.len())
        .sum();
    let kedge = 3 * 2 * VARINT_MAX
        + HEADER_DEVICE.len()
        + origin.device.len()
        + HEADER_QUEUE.len()
        + 16
        + HEADER_SEQ.len()
        + 20;
    // length, attributes, timestamp delta, offset delta, key length, value length, header count
    let framing = VARINT_MAX + 1 + VARLONG_MAX + 3 * VARINT_MAX + VARINT_MAX;
    framing + record.key.as_ref().map_or(0, |k| k.len()) + record.value.len() + own + kedge
}

/// Encode `records` as exactly one idempotent RecordBatch v2 starting at `base_sequence`.
///
/// Record `i` gets offset delta `i` and sequence `base_sequence + i`; the batch carries
/// CreateTime timestamps from `timestamp_ms`. Each record's own headers come first, then
/// kedge's `kedge-device`, `kedge-queue` (from `origin`) and `kedge-seq` (= `seq` in decimal
/// ASCII).
///
/// Header names are unique, as in the record model of kafka-protocol (an `IndexMap`), which
/// reads kedge's batches back to split and rebuild them: when a record repeats a header name
/// (MQTT user properties may), the LAST value is kept at the position of the FIRST occurrence
/// and the earlier values are lost. A record header named like one of
/// kedge's own is dropped so that kedge's values cannot be spoofed.
///
/// The batch must not straddle the sequence wrap ([`sequence::fits_before_wrap`]): the
/// dispatcher cuts batches there. Output is a pure function of the inputs.
pub fn encode_batch(
    producer: ProducerIdentity,
    base_sequence: i32,
    origin: &Origin,
    records: &[SequencedRecord],
    compression: BatchCompression,
) -> Result<Bytes, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    if i32::try_from(records.len()).is_err() {
        return Err(BatchError::TooManyRecords(records.len()));
    }
    if base_sequence < 0 {
        return Err(BatchError::InvalidBaseSequence(base_sequence));
    }
    // Kafka accepts a batch across the wrap at i32::MAX (`DefaultRecordBatch.incrementSequence`),
    // but the dispatcher cuts batches there, a rule from when kedge used kafka-protocol's
    // encoder, which split such a batch in two: a batch across it is a caller's mistake.
    if !sequence::fits_before_wrap(base_sequence, records.len()) {
        return Err(BatchError::SequenceWrap {
            base_sequence,
            record_count: records.len(),
        });
    }
    let (min_timestamp, max_timestamp) = timestamp_span(records)?;

    let device = origin.device.as_bytes();
    let queue = origin.queue_header();
    let reserved = [HEADER_DEVICE, HEADER_QUEUE, HEADER_SEQ];
    // Uncompressed, the records are written behind the header's room; compressed, the codec
    // appends its section there.
    let mut section = Vec::with_capacity(
        BATCH_OVERHEAD
            + records
                .iter()
                .map(|r| r.record.value.len() + device.len() + 64)
                .sum::<usize>(),
    );
    if compression == BatchCompression::None {
        section.resize(BATCH_OVERHEAD, 0);
    }
    let mut unique = write::UniqueHeaders::new();
    let mut seq_text = [0; 20];
    for (i, sequenced) in (0..).zip(records) {
        let record = &sequenced.record;
        let kedge = [
            (HEADER_DEVICE.as_bytes(), device),
            (HEADER_QUEUE.as_bytes(), queue.as_bytes()),
            (
                HEADER_SEQ.as_bytes(),
                write::decimal(sequenced.seq, &mut seq_text),
            ),
        ];
        let parts = write::RecordParts {
            timestamp_delta: record.timestamp_ms - min_timestamp,
            offset_delta: i,
            key: record.key.as_deref(),
            value: &record.value,
            headers: unique.of(&record.headers, &reserved),
            more_headers: &kedge,
        };
        write::put_record(&mut section, &parts)?;
    }
    let mut batch = if compression == BatchCompression::None {
        section
    } else {
        let mut batch = vec![0; BATCH_OVERHEAD];
        codec::compress(&section, compression.wire(), &mut batch).map_err(BatchError::Compress)?;
        batch
    };
    let fields = write::BatchFields {
        attributes: compression.wire() as i16,
        last_offset_delta: (records.len() - 1) as i32,
        base_timestamp: min_timestamp,
        max_timestamp,
        producer_id: producer.producer_id,
        producer_epoch: producer.producer_epoch,
        base_sequence,
        record_count: records.len() as i32,
    };
    write::finish_batch(&mut batch, &fields)?;
    Ok(Bytes::from(batch))
}

/// The smallest and largest timestamp, or an error when the deltas from the smallest would
/// overflow i64.
fn timestamp_span(records: &[SequencedRecord]) -> Result<(i64, i64), BatchError> {
    let stamps = records.iter().map(|r| r.record.timestamp_ms);
    let (min, max) = stamps.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    match max.checked_sub(min) {
        Some(_) => Ok((min, max)),
        None => Err(BatchError::TimestampSpread { min, max }),
    }
}

/// Header fields of every batch in `bytes` (one or more concatenated v2 batches).
pub fn batch_info(bytes: &[u8]) -> Result<Vec<BatchInfo>, BatchError> {
    split(Bytes::copy_from_slice(bytes))?
        .into_iter()
        .map(|batch| info_of(&batch))
        .collect()
}

/// Every record of every batch in `bytes`, in order.
///
/// Strict: a trailing partial batch (as a Fetch response may end with) is an error, so a tail
/// scan must hand over whole batches only. Decompressed record sections are capped at 64 MiB.
/// A crafted batch (with a valid CRC) is an error, never an abort or a panic: kedge's
/// kafka-protocol (vendor/kafka-protocol/KEDGE.md) reserves no more than the bytes present for
/// the records and headers a batch claims, and refuses timestamps that overflow i64.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
    decode_batches(Bytes::copy_from_slice(bytes))
}

/// [`decode_batch`] on bytes already shared: keys, values and headers are slices of them.
fn decode_batches(bytes: Bytes) -> Result<Vec<DecodedRecord>, BatchError> {
    let mut decoded = Vec::new();
    for batch in split(bytes)? {
        let info = info_of(&batch)?;
        let record_count = usize::try_from(info.record_count).unwrap_or(usize::MAX);
        // A count the bytes cannot hold is refused up front with an error that says so (the
        // patched kafka-protocol no longer allocates for it, but would only fail at the first
        // record missing, after decoding every one before it).
        let guard = move |section: &mut Bytes, compression: Compression| {
            let plain = decompress(section, compression)?;
            if record_count.saturating_mul(MIN_RECORD_LEN) > plain.len() {
                anyhow::bail!(
                    "batch claims {record_count} records in {} bytes",
                    plain.len()
                );
            }
            Ok(plain)
        };
        let set =
            RecordBatchDecoder::decode_with_custom_compression(&mut batch.clone(), Some(guard))
                .map_err(BatchError::Decode)?;
        for record in set.records {
            let offset_delta = record.offset - info.base_offset;
            let sequence = match i32::try_from(offset_delta) {
                // Derived with Kafka's wrap rule, not kafka-protocol's two's-complement one.
                Ok(delta) if info.base_sequence >= 0 => {
                    sequence::increment(info.base_sequence, delta)
                }
                _ => NO_SEQUENCE,
            };
            decoded.push(DecodedRecord {
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(name, value)| (name.as_str().to_owned(), value.unwrap_or_default()))
                    .collect(),
                timestamp_ms: record.timestamp,
                offset_delta,
                sequence,
            });
        }
    }
    Ok(decoded)
}

/// The plain record section of a batch, decompressed within [`MAX_DECOMPRESSED_LEN`].
fn decompress(section: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    Ok(codec::decompress(
        std::mem::take(section),
        compression,
        MAX_DECOMPRESSED_LEN,
    )?)
}

/// One complete entry of a Fetch response's record set, in whatever format the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Offset of the entry's first record (for an old-format entry, its own offset).
    pub base_offset: i64,
    /// Offset of the entry's last record (for an old-format compressed wrapper, its own offset,
    /// which is that of its last inner message).
    pub last_offset: i64,
    /// The format: 2 for a RecordBatch, 0 or 1 for an old message set entry.
    pub magic: i8,
    /// Compression of a RecordBatch's records (`None` for old formats, which kedge never reads).
    pub compression: Option<Compression>,
    /// The entry's bytes: a slice of the Fetch response, not a copy.
    pub bytes: Bytes,
}

impl Fetched {
    /// Whether [`decode_batch`] can read its records: a RecordBatch in any of Kafka's codecs.
    /// Old-format message sets can hold no record of kedge's and are skipped by readers.
    pub fn readable(&self) -> bool {
        self.compression.is_some()
    }

    /// The records of a [`Fetched::readable`] entry, as [`decode_batch`] reads them but
    /// without copying the entry: keys, values and headers share the Fetch response's memory.
    pub fn records(&self) -> Result<Vec<DecodedRecord>, BatchError> {
        decode_batches(self.bytes.clone())
    }
}

/// The complete entries at the start of `bytes` (a Fetch response's record set, which a size
/// limit may cut mid-entry: a trailing partial entry is left out rather than an error). Old
/// message-set entries (magic 0 and 1) share the offset-and-length framing, so they are walked
/// over too; their contents are not read. The entries are slices of `bytes`.
pub fn fetched_entries(bytes: &Bytes) -> Result<Vec<Fetched>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= MAGIC_END {
        let rest = &bytes[at..];
        let mut header = &rest[..MAGIC_END];
        let base_offset = header.get_i64();
        let length = header.get_i32();
        header.advance(4); // partition leader epoch (v2); CRC (v0/v1)
        let magic = header.get_i8();
        let Ok(body) = usize::try_from(length) else {
            return Err(BatchError::NegativeLength { at, length });
        };
        let needed = LOG_OVERHEAD.saturating_add(body);
        if rest.len() < needed {
            break;
        }
        if !(0..=MAX_BASE_OFFSET).contains(&base_offset) {
            return Err(BatchError::InvalidBaseOffset(base_offset));
        }
        let entry = bytes.slice(at..at + needed);
        at += needed;
        if magic != 2 {
            out.push(Fetched {
                base_offset,
                last_offset: base_offset,
                magic,
                compression: None,
                bytes: entry,
            });
            continue;
        }
        // baseOffset (8) + batchLength (4) + partitionLeaderEpoch (4) + magic (1) + crc (4)
        // + attributes (2), then lastOffsetDelta: compaction can remove records, so the
        // record count does not give the last offset.
        if entry.len() < 27 {
            return Err(BatchError::Truncated {
                at: at - needed,
                needed: 27,
                available: entry.len(),
            });
        }
        let mut fields = &entry[21..27];
        let attributes = fields.get_i16();
        let delta = fields.get_i32();
        let compression = match attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            // A codec Kafka does not define: nothing anyone can read.
            _ => {
                out.push(Fetched {
                    base_offset,
                    last_offset: base_offset.saturating_add(i64::from(delta)),
                    magic,
                    compression: None,
                    bytes: entry,
                });
                continue;
            }
        };
        out.push(Fetched {
            base_offset,
            last_offset: base_offset.saturating_add(i64::from(delta)),
            magic,
            compression: Some(compression),
            bytes: entry,
        });
    }
    Ok(out)
}

/// Splits concatenated batches by their length fields, checking what kafka-protocol would not.
fn split(bytes: Bytes) -> Result<Vec<Bytes>, BatchError> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < MAGIC_END {
            return Err(BatchError::Truncated {
                at,
                needed: MAGIC_END,
                available: rest.len(),
            });
        }
        let mut header = &rest[..MAGIC_END];
        let base_offset = header.get_i64();
        let length = header.get_i32();
        header.advance(4); // partition leader epoch
        let magic = header.get_i8();
        let Ok(body) = usize::try_from(length) else {
            return Err(BatchError::NegativeLength { at, length });
        };
        let needed = LOG_OVERHEAD + body;
        if rest.len() < needed {
            return Err(BatchError::Truncated {
                at,
                needed,
                available: rest.len(),
            });
        }
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic { at, magic });
        }
        if !(0..=MAX_BASE_OFFSET).contains(&base_offset) {
            return Err(BatchError::InvalidBaseOffset(base_offset));
        }
        batches.push(bytes.slice(at..at + needed));
        at += needed;
    }
    Ok(batches)
}

/// Header fields of one batch produced by [`split`].
fn info_of(batch: &Bytes) -> Result<BatchInfo, BatchError> {
    let infos =
        RecordBatchDecoder::decode_batch_info(&mut batch.clone()).map_err(BatchError::Decode)?;
    let [info] = infos.as_slice() else {
        return Err(BatchError::Decode(anyhow::anyhow!(
            "expected one batch header, found {}",
            infos.len()
        )));
    };
    Ok(BatchInfo {
        base_offset: info.min_offset,
        producer_id: info.producer_id,
        producer_epoch: info.producer_epoch,
        base_sequence: info.base_sequence,
        record_count: info.record_count,
        compression: info.compression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Header, Record};
    use proptest::prelude::*;

    const PRODUCER: ProducerIdentity = ProducerIdentity {
        producer_id: 4242,
        producer_epoch: 7,
    };

    /// The origin the tests encode under: device `device`, queue 0x5eed.
    fn origin(device: &str) -> Origin {
        Origin {
            device: device.to_owned(),
            queue: 0x5eed,
        }
    }

    fn record(
        seq: u64,
        key: Option<&str>,
        value: &str,
        headers: &[(&str, &str)],
    ) -> SequencedRecord {
        SequencedRecord {
            seq,
            record: Record {
                topic: "sensors".to_owned(),
                key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value: Bytes::copy_from_slice(value.as_bytes()),
                headers: headers
                    .iter()
                    .map(|&(name, value)| Header {
                        name: name.to_owned(),
                        value: Bytes::copy_from_slice(value.as_bytes()),
                    })
                    .collect(),
                timestamp_ms: 1_700_000_000_000 + seq as i64,
            },
        }
    }

    fn sample() -> Vec<SequencedRecord> {
        vec![
            record(100, Some("dev-1"), "{\"t\":21.5}", &[("unit", "C")]),
            record(101, None, "", &[]),
            record(102, Some(""), "x", &[("a", "1"), ("b", "")]),
        ]
    }

    fn expected_headers(r: &SequencedRecord, device: &str) -> Vec<(String, Bytes)> {
        let mut headers: Vec<(String, Bytes)> = r
            .record
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        headers.push((
            HEADER_DEVICE.to_owned(),
            Bytes::copy_from_slice(device.as_bytes()),
        ));
        headers.push((HEADER_QUEUE.to_owned(), Bytes::from("0000000000005eed")));
        headers.push((HEADER_SEQ.to_owned(), Bytes::from(r.seq.to_string())));
        headers
    }

    fn assert_round_trip(records: &[SequencedRecord], base: i32, decoded: &[DecodedRecord]) {
        assert_eq!(decoded.len(), records.len());
        for (i, (r, d)) in records.iter().zip(decoded).enumerate() {
            assert_eq!(d.key, r.record.key);
            assert_eq!(d.value.as_ref(), Some(&r.record.value));
            assert_eq!(d.headers, expected_headers(r, "dev-α"));
            assert_eq!(d.timestamp_ms, r.record.timestamp_ms);
            assert_eq!(d.offset_delta, i as i64);
            assert_eq!(d.sequence, sequence::increment(base, i as i32));
        }
    }

    const EVERY_CODEC: [BatchCompression; 5] = [
        BatchCompression::None,
        BatchCompression::Gzip,
        BatchCompression::Snappy,
        BatchCompression::Lz4,
        BatchCompression::Zstd,
    ];

    #[test]
    fn round_trip_in_every_codec() {
        let records = sample();
        for compression in EVERY_CODEC {
            let bytes = encode_batch(PRODUCER, 5, &origin("dev-α"), &records, compression)
                .expect("encodes");
            let infos = batch_info(&bytes).expect("reads header");
            assert_eq!(infos[0].compression, compression.wire());
            let decoded = decode_batch(&bytes).expect("decodes");
            assert_round_trip(&records, 5, &decoded);
            let fetched = fetched_entries(&bytes).expect("walks");
            assert!(fetched[0].readable(), "{compression:?}");
            assert_eq!(fetched[0].records().expect("reads"), decoded);
        }
    }

    #[test]
    fn batch_info_reports_producer_fields() {
        let bytes = encode_batch(
            PRODUCER,
            77,
            &origin("d"),
            &sample(),
            BatchCompression::Zstd,
        )
        .expect("encodes");
        let infos = batch_info(&bytes).expect("reads header");
        assert_eq!(
            infos,
            vec![BatchInfo {
                base_offset: 0,
                producer_id: 4242,
                producer_epoch: 7,
                base_sequence: 77,
                record_count: 3,
                compression: Compression::Zstd,
            }]
        );
    }

    #[test]
    fn encoding_is_deterministic() {
        for compression in EVERY_CODEC {
            let a =
                encode_batch(PRODUCER, 9, &origin("d"), &sample(), compression).expect("encodes");
            let b = encode_batch(PRODUCER, 9, &origin("d"), &sample().clone(), compression)
                .expect("encodes");
            assert_eq!(a, b);
        }
    }

    #[test]
    fn every_codec_shrinks_repetitive_payloads() {
        let records: Vec<_> = (0..200)
            .map(|i| {
                record(
                    i,
                    Some("k"),
                    "temperature=21.5;humidity=40",
                    &[("unit", "C")],
                )
            })
            .collect();
        let plain = encode_batch(PRODUCER, 0, &origin("d"), &records, BatchCompression::None)
            .expect("plain");
        assert_eq!(
            batch_info(&plain).expect("info")[0].compression,
            Compression::None
        );
        for codec in EVERY_CODEC.into_iter().skip(1) {
            let packed = encode_batch(PRODUCER, 0, &origin("d"), &records, codec).expect("encodes");
            assert!(
                packed.len() * 4 < plain.len(),
                "{codec:?}: {} vs {}",
                packed.len(),
                plain.len()
            );
            assert_eq!(
                decode_batch(&plain).expect("plain decodes"),
                decode_batch(&packed).expect("compressed decodes")
            );
        }
    }

    #[test]
    fn ten_thousand_records_make_one_batch() {
        let records: Vec<_> = (0..10_000).map(|i| record(i, None, "v", &[])).collect();
        let bytes = encode_batch(
            PRODUCER,
            1_000,
            &origin("d"),
            &records,
            BatchCompression::Zstd,
        )
        .expect("encodes");
        let infos = batch_info(&bytes).expect("info");
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].record_count, 10_000);
        let decoded = decode_batch(&bytes).expect("decodes");
        assert_eq!(decoded.len(), 10_000);
        assert_eq!(decoded[9_999].sequence, 10_999);
    }

    #[test]
    fn sequence_wrap_is_refused_and_the_cut_fits() {
        let records: Vec<_> = (0..5).map(|i| record(i, None, "v", &[])).collect();
        let base = i32::MAX - 2;
        assert!(matches!(
            encode_batch(PRODUCER, base, &origin("d"), &records, BatchCompression::None),
            Err(BatchError::SequenceWrap { base_sequence, record_count: 5 }) if base_sequence == base
        ));
        // The dispatcher's cut: as many as fit, then the rest from sequence 0.
        let room = sequence::room_before_wrap(base) as usize;
        assert_eq!(room, 3);
        let head = encode_batch(
            PRODUCER,
            base,
            &origin("d"),
            &records[..room],
            BatchCompression::None,
        )
        .expect("head fits");
        let decoded = decode_batch(&head).expect("decodes");
        assert_eq!(
            decoded.iter().map(|d| d.sequence).collect::<Vec<_>>(),
            vec![i32::MAX - 2, i32::MAX - 1, i32::MAX]
        );
        let next = sequence::increment(sequence::last_sequence(base, room as i32), 1);
        assert_eq!(next, 0);
        let tail = encode_batch(
            PRODUCER,
            next,
            &origin("d"),
            &records[room..],
            BatchCompression::None,
        )
        .expect("tail fits");
        assert_eq!(batch_info(&tail).expect("info")[0].base_sequence, 0);
    }

    #[test]
    fn single_record_at_max_sequence() {
        let bytes = encode_batch(
            PRODUCER,
            i32::MAX,
            &origin("d"),
            &sample()[..1],
            BatchCompression::Zstd,
        )
        .expect("encodes");
        assert_eq!(decode_batch(&bytes).expect("decodes")[0].sequence, i32::MAX);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            encode_batch(PRODUCER, 0, &origin("d"), &[], BatchCompression::None),
            Err(BatchError::Empty)
        ));
        assert!(matches!(
            encode_batch(
                PRODUCER,
                -1,
                &origin("d"),
                &sample(),
                BatchCompression::None
            ),
            Err(BatchError::InvalidBaseSequence(-1))
        ));
        let mut spread = sample();
        spread[0].record.timestamp_ms = i64::MIN;
        spread[1].record.timestamp_ms = i64::MAX;
        assert!(matches!(
            encode_batch(PRODUCER, 0, &origin("d"), &spread, BatchCompression::None),
            Err(BatchError::TimestampSpread { .. })
        ));
    }

    #[test]
    fn duplicate_and_reserved_header_names() {
        let records = vec![record(
            9,
            None,
            "v",
            &[
                ("p", "first"),
                ("q", "only"),
                ("p", "last"),
                (HEADER_SEQ, "spoofed"),
                (HEADER_DEVICE, "spoofed"),
                (HEADER_QUEUE, "spoofed"),
            ],
        )];
        let bytes = encode_batch(
            PRODUCER,
            0,
            &origin("dev"),
            &records,
            BatchCompression::None,
        )
        .expect("encodes");
        let decoded = decode_batch(&bytes).expect("decodes");
        let headers: Vec<(&str, &[u8])> = decoded[0]
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_ref()))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("p", &b"last"[..]),
                ("q", b"only"),
                (HEADER_DEVICE, b"dev"),
                (HEADER_QUEUE, b"0000000000005eed"),
                (HEADER_SEQ, b"9"),
            ]
        );
    }

    #[test]
    fn concatenated_batches_decode_in_order() {
        let a =
            encode_batch(PRODUCER, 0, &origin("d"), &sample(), BatchCompression::None).expect("a");
        let b =
            encode_batch(PRODUCER, 3, &origin("d"), &sample(), BatchCompression::Zstd).expect("b");
        let both = [a.as_ref(), b.as_ref()].concat();
        assert_eq!(batch_info(&both).expect("info").len(), 2);
        let sequences: Vec<i32> = decode_batch(&both)
            .expect("decodes")
            .iter()
            .map(|d| d.sequence)
            .collect();
        assert_eq!(sequences, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let good = encode_batch(PRODUCER, 0, &origin("d"), &sample(), BatchCompression::Zstd)
            .expect("good");
        assert!(matches!(
            decode_batch(&good[..10]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            decode_batch(&good[..good.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        let mut bad_magic = good.to_vec();
        bad_magic[16] = 1;
        assert!(matches!(
            batch_info(&bad_magic),
            Err(BatchError::UnsupportedMagic { magic: 1, .. })
        ));
        let mut bad_crc = good.to_vec();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        assert!(matches!(decode_batch(&bad_crc), Err(BatchError::Decode(_))));
        let mut negative = good.to_vec();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            batch_info(&negative),
            Err(BatchError::NegativeLength { .. })
        ));
        assert_eq!(decode_batch(&[]).expect("nothing to decode"), vec![]);
    }

    /// A tail scan's record set (4 MiB a Fetch) was copied whole into each entry, and each
    /// entry again to decode it; now entries and records are slices of the response.
    #[test]
    fn fetched_entries_and_their_records_share_the_responses_memory() {
        let batch = encode_batch(PRODUCER, 0, &origin("d"), &sample(), BatchCompression::None)
            .expect("encodes");
        let response = Bytes::from(batch.to_vec());
        let within = response.as_ptr_range();
        let entries = fetched_entries(&response).expect("entries");
        assert!(within.contains(&entries[0].bytes.as_ptr()), "entry copied");
        let records = entries[0].records().expect("records");
        let value = records[0].value.as_ref().expect("a value");
        assert!(within.contains(&value.as_ptr()), "record copied");
        assert_eq!(records, decode_batch(&batch).expect("decodes"));
    }

    #[test]
    fn decode_errors_carry_their_cause() {
        let good = encode_batch(PRODUCER, 0, &origin("d"), &sample(), BatchCompression::None)
            .expect("good");
        let mut bad_crc = good.to_vec();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        let e = decode_batch(&bad_crc).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("decoding the record batch failed: Cyclic redundancy check failed"),
            "{e}"
        );
    }

    #[test]
    fn inflated_record_count_is_rejected_before_allocation() {
        let good = encode_batch(PRODUCER, 0, &origin("d"), &sample(), BatchCompression::None)
            .expect("good");
        let mut bytes = good.to_vec();
        // Record count sits at byte 57; the CRC (bytes 17..21) covers bytes 21.. (crc32c).
        bytes[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_batch(&bytes),
            Err(BatchError::Decode(e)) if format!("{e:#}").contains("claims 2147483647 records")
        ));
    }

    /// A RecordBatch v2 with a valid CRC around `records` (already framed), as a hostile
    /// writer or broker could send it: nothing in it is checked but the CRC.
    fn crafted_batch(base_timestamp: i64, record_count: i32, records: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes()); // base offset
        b.extend_from_slice(&0i32.to_be_bytes()); // length, filled in below
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // CRC, filled in below
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes: uncompressed
        b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
        b.extend_from_slice(&base_timestamp.to_be_bytes());
        b.extend_from_slice(&base_timestamp.to_be_bytes()); // max timestamp
        b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        b.extend_from_slice(&record_count.to_be_bytes());
        b.extend_from_slice(records);
        let length = i32::try_from(b.len() - LOG_OVERHEAD).unwrap();
        b[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// One record: attributes 0, the given zigzag varlong timestamp delta, offset delta 0, null
    /// key and value, and `headers` as the header-count varint.
    fn crafted_record(timestamp_delta: &[u8], headers: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(timestamp_delta);
        body.extend_from_slice(&[0, 1, 1]); // offset delta 0, key -1, value -1 (zigzag)
        body.extend_from_slice(headers);
        let mut record = vec![u8::try_from(body.len() * 2).unwrap()]; // zigzag length < 64
        record.extend_from_slice(&body);
        record
    }

    /// kafka-protocol 0.18.0 reserved room for the claimed header count before reading one:
    /// 2^31 - 1 headers aborted the process ("memory allocation of ... bytes failed").
    #[test]
    fn a_record_claiming_two_billion_headers_is_an_error() {
        // zigzag(i32::MAX) = 0xFFFF_FFFE as a varint.
        let record = crafted_record(&[0], &[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        let bytes = crafted_batch(1_700_000_000_000, 1, &record);
        let e = decode_batch(&bytes).unwrap_err();
        assert!(matches!(e, BatchError::Decode(_)), "{e}");
    }

    /// A base timestamp of i64::MAX and a delta of 1 overflowed a plain `+` in kafka-protocol:
    /// a panic in builds with overflow checks, a wrapped timestamp otherwise.
    #[test]
    fn a_timestamp_beyond_i64_is_an_error() {
        let record = crafted_record(&[2], &[0]); // zigzag(1) = 2
        let bytes = crafted_batch(i64::MAX, 1, &record);
        let e = decode_batch(&bytes).unwrap_err();
        assert!(
            e.to_string().contains("timestamp"),
            "the cause is named: {e}"
        );
        // The same record one below the limit reads.
        let bytes = crafted_batch(i64::MAX - 1, 1, &record);
        assert_eq!(decode_batch(&bytes).unwrap()[0].timestamp_ms, i64::MAX);
    }

    /// The batch as kafka-protocol's encoder wrote it (kedge's encoder until it was written by
    /// hand), with kedge's codecs: the reference the hand-written one is held to.
    fn kafka_protocol_batch(
        producer: ProducerIdentity,
        base_sequence: i32,
        origin: &Origin,
        records: &[SequencedRecord],
        compression: BatchCompression,
    ) -> Vec<u8> {
        use bytes::BytesMut;
        use kafka_protocol::indexmap::IndexMap;
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{
            NO_PARTITION_LEADER_EPOCH, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions,
            TimestampType,
        };
        let krecords: Vec<KRecord> = (0..)
            .zip(records)
            .map(|(i, sequenced): (i32, &SequencedRecord)| {
                let mut headers = IndexMap::new();
                for h in &sequenced.record.headers {
                    if ![HEADER_DEVICE, HEADER_QUEUE, HEADER_SEQ].contains(&h.name.as_str()) {
                        headers
                            .insert(StrBytes::from_string(h.name.clone()), Some(h.value.clone()));
                    }
                }
                headers.insert(
                    StrBytes::from_static_str(HEADER_DEVICE),
                    Some(Bytes::copy_from_slice(origin.device.as_bytes())),
                );
                headers.insert(
                    StrBytes::from_static_str(HEADER_QUEUE),
                    Some(Bytes::from(origin.queue_header())),
                );
                headers.insert(
                    StrBytes::from_static_str(HEADER_SEQ),
                    Some(Bytes::from(sequenced.seq.to_string())),
                );
                KRecord {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                    producer_id: producer.producer_id,
                    producer_epoch: producer.producer_epoch,
                    timestamp_type: TimestampType::Creation,
                    offset: i64::from(i),
                    sequence: sequence::increment(base_sequence, i),
                    timestamp: sequenced.record.timestamp_ms,
                    key: sequenced.record.key.clone(),
                    value: Some(sequenced.record.value.clone()),
                    headers,
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: compression.wire(),
        };
        let compressor = |plain: &mut BytesMut, out: &mut BytesMut, codec: Compression| {
            let mut section = Vec::new();
            codec::compress(plain, codec, &mut section)?;
            out.extend_from_slice(&section);
            Ok(())
        };
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            &krecords,
            &options,
            Some(compressor),
        )
        .expect("kafka-protocol encodes");
        buf.to_vec()
    }

    /// Up to 24 headers from few names, so that names repeat, kedge's own among them.
    fn arb_headers() -> impl Strategy<Value = Vec<Header>> {
        let name = prop_oneof![
            4 => "[a-e]",
            1 => Just(HEADER_SEQ.to_owned()),
            1 => Just(HEADER_DEVICE.to_owned()),
            1 => Just(HEADER_QUEUE.to_owned()),
        ];
        proptest::collection::vec((name, proptest::collection::vec(any::<u8>(), 0..6)), 0..24)
            .prop_map(|headers| {
                headers
                    .into_iter()
                    .map(|(name, value)| Header {
                        name,
                        value: Bytes::from(value),
                    })
                    .collect()
            })
    }

    fn arb_record() -> impl Strategy<Value = SequencedRecord> {
        (
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec(
                ("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..16)),
                0..4,
            ),
            0i64..=4_102_444_800_000,
        )
            .prop_map(|(seq, key, value, headers, timestamp_ms)| {
                // Distinct names only: duplicates collapse by design (see encode_batch).
                let mut seen = std::collections::HashSet::new();
                SequencedRecord {
                    seq,
                    record: Record {
                        topic: "t".to_owned(),
                        key: key.map(Bytes::from),
                        value: Bytes::from(value),
                        headers: headers
                            .into_iter()
                            .filter(|(name, _)| seen.insert(name.clone()))
                            .map(|(name, value)| Header {
                                name,
                                value: Bytes::from(value),
                            })
                            .collect(),
                        timestamp_ms,
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn random_batches_round_trip(
            records in proptest::collection::vec(arb_record(), 1..40),
            base in prop_oneof![0..1_000i32, (i32::MAX - 1_000)..=i32::MAX],
            zstd in any::<bool>(),
        ) {
            let compression = if zstd { BatchCompression::Zstd } else { BatchCompression::None };
            match encode_batch(PRODUCER, base, &origin("dev-α"), &records, compression) {
                Ok(bytes) => {
                    prop_assert!(sequence::fits_before_wrap(base, records.len()));
                    let decoded = decode_batch(&bytes).expect("own batch decodes");
                    assert_round_trip(&records, base, &decoded);
                    prop_assert_eq!(batch_info(&bytes).expect("info")[0].base_sequence, base);
                }
                Err(BatchError::SequenceWrap { .. }) => {
                    prop_assert!(!sequence::fits_before_wrap(base, records.len()));
                }
                Err(other) => prop_assert!(false, "unexpected error: {other}"),
            }
        }

        /// The hand-written batch is byte for byte what kafka-protocol's encoder wrote before it:
        /// repeated header names (up to 24 a record, past where they are looked up in a map),
        /// kedge's own names spoofed anywhere, null keys, timestamps out of order and far from
        /// 1970 either way, any producer fields, every codec.
        #[test]
        fn batches_are_kafka_protocols_byte_for_byte(
            records in proptest::collection::vec(
                (arb_record(), arb_headers(), -(1i64 << 61)..(1i64 << 61)),
                1..24,
            ),
            far_timestamps in any::<bool>(),
            base in 0..1_000_000i32,
            producer_id in any::<i64>(),
            producer_epoch in any::<i16>(),
            codec in 0..EVERY_CODEC.len(),
        ) {
            let records: Vec<SequencedRecord> = records
                .into_iter()
                .map(|(mut r, headers, far)| {
                    r.record.headers = headers;
                    if far_timestamps {
                        r.record.timestamp_ms = far;
                    }
                    r
                })
                .collect();
            let producer = ProducerIdentity { producer_id, producer_epoch };
            let compression = EVERY_CODEC[codec];
            let ours = encode_batch(producer, base, &origin("dev-α"), &records, compression)
                .expect("encodes");
            let theirs = kafka_protocol_batch(producer, base, &origin("dev-α"), &records, compression);
            prop_assert_eq!(&ours[..], &theirs[..]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = batch_info(&bytes);
            let _ = decode_batch(&bytes);
        }
    }
}
