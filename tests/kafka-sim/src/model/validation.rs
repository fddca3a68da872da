//! The checks Kafka makes on a produced partition's records before it looks at producer state,
//! in Kafka's order:
//!
//! 1. `ProduceRequest.validateRecords` (v3+) with `ByteBufferLogInputStream.nextBatchSize`:
//!    exactly one batch, magic 2 → else INVALID_RECORD (87); a length field below 14 or a magic
//!    byte outside 0–2 → CORRUPT_MESSAGE (2). Bytes after the batch that do not form a complete
//!    second batch are cut off by `UnifiedLog.trimInvalidBytes` → CORRUPT_MESSAGE.
//! 2. `UnifiedLog.analyzeAndValidateRecords`: batch size above the topic's `max.message.bytes`
//!    → MESSAGE_TOO_LARGE (10); then `isValid` (at least a full header, CRC-32C matches) →
//!    CORRUPT_MESSAGE.
//! 3. `LogValidator.validateBatch` for client appends: base offset 0 (Kafka 4), record count
//!    positive and equal to last offset delta + 1, no control batch, no negative base
//!    sequence with a producer id → INVALID_RECORD. Records that do not parse → INVALID_RECORD
//!    (the validator iterates them; checked here for the codecs this crate decodes).
//!
//! Transactions are not modelled: a transactional batch gets INVALID_TXN_STATE (48).

use kafka_protocol::ResponseError;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD, MAGIC_AT, MIN_LENGTH_FIELD};

/// Validates the records of one produced partition, returning the header of its only batch.
pub(crate) fn validate_produced(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<BatchHeader, ResponseError> {
    let size = match batch_size(records)? {
        Some(size) if size <= records.len() => size,
        _ => return Err(ResponseError::InvalidRecord),
    };
    if records[MAGIC_AT] != 2 {
        return Err(ResponseError::InvalidRecord);
    }
    let rest = &records[size..];
    if !rest.is_empty() {
        return Err(match batch_size(rest)? {
            Some(next) if next <= rest.len() => ResponseError::InvalidRecord,
            _ => ResponseError::CorruptMessage,
        });
    }
    if size > max_message_bytes {
        return Err(ResponseError::MessageTooLarge);
    }
    let header = BatchHeader::read(records).ok_or(ResponseError::CorruptMessage)?;
    if size < HEADER_LEN || !batch::crc_matches(records, &header) {
        return Err(ResponseError::CorruptMessage);
    }
    let count_from_offsets = i64::from(header.last_offset_delta) + 1;
    if header.base_offset != 0
        || header.record_count <= 0
        || count_from_offsets != i64::from(header.record_count)
        || header.is_control()
        || (header.producer_id >= 0 && header.base_sequence < 0)
    {
        return Err(ResponseError::InvalidRecord);
    }
    if header.is_transactional() {
        return Err(ResponseError::InvalidTxnState);
    }
    match header.compression() {
        None => Err(ResponseError::CorruptMessage),
        Some(Compression::None | Compression::Zstd) => records_parse(records, &header),
        // gzip, snappy and lz4 are not compiled into kafka-protocol here: accepted unread.
        Some(_) => Ok(header),
    }
}

/// `ByteBufferLogInputStream.nextBatchSize`: the size of the batch at the start of `bytes`,
/// `None` when too few bytes are there to tell, an error for an impossible length or magic.
fn batch_size(bytes: &[u8]) -> Result<Option<usize>, ResponseError> {
    if bytes.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let length = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let length = usize::try_from(length).unwrap_or(0);
    if length < MIN_LENGTH_FIELD {
        return Err(ResponseError::CorruptMessage);
    }
    if bytes.len() <= MAGIC_AT {
        return Ok(None);
    }
    if bytes[MAGIC_AT] > 2 {
        return Err(ResponseError::CorruptMessage);
    }
    Ok(Some(LOG_OVERHEAD + length))
}

/// Whether all `record_count` records decode.
fn records_parse(records: &[u8], header: &BatchHeader) -> Result<BatchHeader, ResponseError> {
    let mut buf = bytes::Bytes::copy_from_slice(records);
    match RecordBatchDecoder::decode(&mut buf) {
        Ok(set) if set.records.len() == header.record_count as usize => Ok(*header),
        _ => Err(ResponseError::InvalidRecord),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Codec, NewRecord, encode_batch};

    fn batch() -> Vec<u8> {
        encode_batch(None, &[NewRecord::value(1, "v")], Codec::None).to_vec()
    }

    #[test]
    fn accepts_one_valid_batch() {
        let b = batch();
        assert_eq!(validate_produced(&b, 1 << 20).map(|h| h.size), Ok(b.len()));
    }

    #[test]
    fn framing_errors() {
        let b = batch();
        assert_eq!(
            validate_produced(&[], 1 << 20),
            Err(ResponseError::InvalidRecord)
        );
        assert_eq!(
            validate_produced(&b[..b.len() - 1], 1 << 20),
            Err(ResponseError::InvalidRecord)
        );
        let two = [b.clone(), b.clone()].concat();
        assert_eq!(
            validate_produced(&two, 1 << 20),
            Err(ResponseError::InvalidRecord)
        );
        let trailing = [b.clone(), vec![0; 3]].concat();
        assert_eq!(
            validate_produced(&trailing, 1 << 20),
            Err(ResponseError::CorruptMessage)
        );
        let mut short_length = b.clone();
        short_length[8..12].copy_from_slice(&5i32.to_be_bytes());
        assert_eq!(
            validate_produced(&short_length, 1 << 20),
            Err(ResponseError::CorruptMessage)
        );
        let mut magic1 = b.clone();
        magic1[MAGIC_AT] = 1;
        assert_eq!(
            validate_produced(&magic1, 1 << 20),
            Err(ResponseError::InvalidRecord)
        );
    }

    #[test]
    fn size_is_checked_before_crc() {
        let mut b = batch();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert_eq!(
            validate_produced(&b, 10),
            Err(ResponseError::MessageTooLarge)
        );
        assert_eq!(
            validate_produced(&b, 1 << 20),
            Err(ResponseError::CorruptMessage)
        );
    }

    #[test]
    fn never_panics_on_truncated_or_flipped_bytes() {
        let b = encode_batch(
            None,
            &[NewRecord::value(1, "v"), NewRecord::value(2, "w")],
            Codec::Zstd,
        );
        for len in 0..b.len() {
            assert!(validate_produced(&b[..len], 1 << 20).is_err());
        }
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut flipped = b.to_vec();
                flipped[i] ^= 1 << bit;
                let _ = validate_produced(&flipped, 1 << 20);
            }
        }
    }

    #[test]
    fn header_rules() {
        let mut b = batch();
        b[0..8].copy_from_slice(&5i64.to_be_bytes());
        assert_eq!(
            validate_produced(&b, 1 << 20),
            Err(ResponseError::InvalidRecord)
        );

        let mut b = batch();
        b[57..61].copy_from_slice(&2i32.to_be_bytes());
        batch::seal_crc(&mut b);
        assert_eq!(
            validate_produced(&b, 1 << 20),
            Err(ResponseError::InvalidRecord)
        );

        let mut b = batch();
        b[43..51].copy_from_slice(&9i64.to_be_bytes());
        batch::seal_crc(&mut b);
        assert_eq!(
            validate_produced(&b, 1 << 20),
            Err(ResponseError::InvalidRecord)
        );

        let mut b = batch();
        b[22] |= 1 << 4;
        batch::seal_crc(&mut b);
        assert_eq!(
            validate_produced(&b, 1 << 20),
            Err(ResponseError::InvalidTxnState)
        );
    }
}
