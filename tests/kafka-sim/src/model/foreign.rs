//! Batches other writers leave in a partition, which a reader of kedge's partitions must read or
//! skip on its own: another producer's plain batch, a batch in a codec the reader does not
//! decompress, and an entry in the message format before v2.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{self, HEADER_LEN, LOG_OVERHEAD, NewRecord};

/// A batch written directly into a partition, bypassing produce validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreign {
    /// A valid uncompressed v2 batch of these records. With a producer id ≥ 0 it continues that
    /// producer's state on the partition (its epoch, or 0; the next sequence, or 0) and updates
    /// it, as a replicated append would; −1 writes a non-idempotent batch.
    Plain {
        /// Producer id, or −1.
        producer_id: i64,
        /// The records; must not be empty.
        records: Vec<NewRecord>,
    },
    /// A v2 batch of three records whose attributes claim `codec`, with a valid CRC and a body
    /// that is not compressed data at all: a reader must skip it by its header alone.
    Compressed {
        /// The codec its attributes name.
        codec: ForeignCodec,
    },
    /// One message in the message format v1 (magic 1, Kafka 0.10): offset, size, CRC-32
    /// (IEEE), magic, attributes, timestamp −1, null key, value `legacy`.
    LegacyMagic1,
}

/// Codecs kedge does not write and this crate does not decompress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignCodec {
    /// Attribute codec id 1.
    Gzip,
    /// Attribute codec id 2.
    Snappy,
    /// Attribute codec id 3.
    Lz4,
}

/// Records claimed by a [`Foreign::Compressed`] batch.
const OPAQUE_RECORDS: i32 = 3;

/// The bytes of a [`Foreign::Compressed`] batch with base offset 0.
pub(crate) fn compressed_batch(codec: ForeignCodec) -> Bytes {
    let body: &[u8] = b"opaque: these bytes are not compressed records";
    let length = HEADER_LEN - LOG_OVERHEAD + body.len();
    let codec_id: i16 = match codec {
        ForeignCodec::Gzip => 1,
        ForeignCodec::Snappy => 2,
        ForeignCodec::Lz4 => 3,
    };
    let mut b = BytesMut::with_capacity(LOG_OVERHEAD + length);
    b.put_i64(0); // base offset
    b.put_i32(i32::try_from(length).expect("small batch"));
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // CRC, sealed below
    b.put_i16(codec_id);
    b.put_i32(OPAQUE_RECORDS - 1); // last offset delta
    b.put_i64(-1); // first timestamp
    b.put_i64(-1); // max timestamp
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(OPAQUE_RECORDS);
    b.put_slice(body);
    batch::seal_crc(&mut b);
    b.freeze()
}

/// The bytes of a [`Foreign::LegacyMagic1`] entry with offset 0.
pub(crate) fn legacy_magic1() -> Bytes {
    let value: &[u8] = b"legacy";
    // From the magic byte on: magic, attributes, timestamp, key length, value length, value.
    let mut covered = BytesMut::new();
    covered.put_i8(1);
    covered.put_i8(0);
    covered.put_i64(-1);
    covered.put_i32(-1);
    covered.put_i32(i32::try_from(value.len()).expect("small value"));
    covered.put_slice(value);
    let crc = kafka_protocol::records::IEEE.checksum(&covered);
    let mut b = BytesMut::new();
    b.put_i64(0);
    b.put_i32(i32::try_from(4 + covered.len()).expect("small entry"));
    b.put_u32(crc);
    b.put_slice(&covered);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchHeader;

    #[test]
    fn compressed_batch_has_a_valid_header_and_crc() {
        let b = compressed_batch(ForeignCodec::Lz4);
        let h = BatchHeader::read(&b).expect("header");
        assert_eq!(h.size, b.len());
        assert_eq!(h.record_count, OPAQUE_RECORDS);
        assert_eq!(
            h.compression(),
            Some(kafka_protocol::records::Compression::Lz4)
        );
        assert!(batch::crc_matches(&b, &h));
    }

    #[test]
    fn legacy_entry_layout() {
        let b = legacy_magic1();
        assert_eq!(b[crate::batch::MAGIC_AT], 1);
        let size = i32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
        assert_eq!(LOG_OVERHEAD + size, b.len());
        // kafka-protocol refuses to decode message sets before v2.
        let mut buf = b.clone();
        assert!(kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).is_err());
    }
}
