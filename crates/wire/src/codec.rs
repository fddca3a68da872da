//! Kafka's record-section codecs: gzip, snappy, lz4 and zstd, as Kafka's own clients frame them.
//!
//! Written the way the Java producer writes them, read the way any client may have written
//! them:
//! - gzip: one gzip member (RFC 1952); reading accepts concatenated members.
//! - snappy: snappy-java's stream framing (a 16-byte header, then blocks of at most 32 KiB,
//!   each a big-endian length and one raw snappy block), which Kafka's Java client and
//!   librdkafka both read; reading also accepts one raw snappy block without the framing.
//! - lz4: one LZ4 frame with independent blocks and no checksums: Kafka's Java reader
//!   decompresses every block on its own, so linked blocks would not read there.
//! - zstd: one zstd frame.
//!
//! Decompression never produces more than the caller's limit, so that a hostile batch cannot
//! make an edge device allocate without bound: the length a snappy block claims is checked
//! before anything is allocated, the streaming codecs stop reading one byte past the limit.

use std::io::{self, Read, Write};

use bytes::Bytes;
use kafka_protocol::records::Compression;

/// snappy-java's stream header: magic, then the format version and the oldest compatible one.
const SNAPPY_JAVA_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// The first 8 bytes of [`SNAPPY_JAVA_HEADER`]: what tells the framing from a raw block (a raw
/// block starts with a varint length, and 0x82 'S' would claim a length no batch has).
const SNAPPY_JAVA_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";

/// snappy-java's default block size, the one Kafka's Java producer writes.
const SNAPPY_BLOCK: usize = 32 * 1024;

/// zstd's level when the producer has none configured (Kafka's and librdkafka's default).
const ZSTD_LEVEL: i32 = 3;

/// Why a record section could not be compressed or decompressed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The codec's stream was malformed or cut short.
    #[error("{codec} record section is corrupt: {source}")]
    Corrupt {
        /// The codec's name.
        codec: &'static str,
        /// The codec's own error.
        source: io::Error,
    },
    /// The section decompresses to more than the limit.
    #[error("{codec} record section exceeds {limit} bytes")]
    TooLarge {
        /// The codec's name.
        codec: &'static str,
        /// The limit.
        limit: u64,
    },
}

/// The codec's name as Kafka's `compression.type` spells it.
pub fn name(codec: Compression) -> &'static str {
    match codec {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// `plain` compressed with `codec`, appended to `out`.
pub fn compress(plain: &[u8], codec: Compression, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let corrupt = |source| CodecError::Corrupt {
        codec: name(codec),
        source,
    };
    match codec {
        Compression::None => out.extend_from_slice(plain),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            encoder.write_all(plain).map_err(corrupt)?;
            encoder.finish().map_err(corrupt)?;
        }
        Compression::Snappy => {
            out.extend_from_slice(SNAPPY_JAVA_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for block in plain.chunks(SNAPPY_BLOCK) {
                let at = out.len();
                out.resize(at + 4 + snap::raw::max_compress_len(block.len()), 0);
                let written = encoder
                    .compress(block, &mut out[at + 4..])
                    .map_err(|e| corrupt(io::Error::other(e)))?;
                // A block is at most 32 KiB, so its compressed length fits any u32.
                out[at..at + 4].copy_from_slice(&(written as u32).to_be_bytes());
                out.truncate(at + 4 + written);
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder.write_all(plain).map_err(corrupt)?;
            encoder.finish().map_err(|e| corrupt(io::Error::other(e)))?;
        }
        // One shot, not a stream: told the input's size, zstd sizes its context to it (under
        // 100 KiB for a typical batch) instead of the level's full window (about 3.7 MB a batch).
        // The output goes into reserved, untouched capacity: zero-filling the worst-case bound
        // would make a large batch's whole bound resident.
        Compression::Zstd => {
            let at = out.len();
            out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
            let mut tail = io::Cursor::new(&mut *out);
            tail.set_position(at as u64);
            zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .and_then(|mut c| c.compress_to_buffer(plain, &mut tail))
                .map_err(corrupt)?;
        }
    }
    Ok(())
}

/// `section` decompressed with `codec`, refused when it would exceed `limit` bytes.
pub fn decompress(section: Bytes, codec: Compression, limit: u64) -> Result<Bytes, CodecError> {
    let corrupt = |source| CodecError::Corrupt {
        codec: name(codec),
        source,
    };
    let too_large = || CodecError::TooLarge {
        codec: name(codec),
        limit,
    };
    match codec {
        Compression::None => Ok(section),
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(&section[..]), limit)
            .map_err(corrupt)?
            .ok_or_else(too_large),
        Compression::Snappy => snappy_decompress(&section, limit, codec),
        Compression::Lz4 => {
            if !lz4_ends_with_end_mark(&section) {
                return Err(corrupt(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "LZ4 frame has no end mark",
                )));
            }
            read_capped(lz4_flex::frame::FrameDecoder::new(&section[..]), limit)
                .map_err(corrupt)?
                .ok_or_else(too_large)
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&section[..]).map_err(corrupt)?;
            read_capped(decoder, limit)
                .map_err(corrupt)?
                .ok_or_else(too_large)
        }
    }
}

/// Whether an LZ4 section ends as a frame does: an end mark (a zero block size), then the
/// content checksum when the frame descriptor announces one. lz4_flex reads a frame cut at a
/// block boundary as complete; this tells such a cut apart (unless the last block's bytes happen
/// to end in four zeros, which the batch's record count then catches).
fn lz4_ends_with_end_mark(section: &[u8]) -> bool {
    const CONTENT_CHECKSUM: u8 = 0b0000_0100;
    let Some(&flags) = section.get(4) else {
        return false;
    };
    let trailer = if flags & CONTENT_CHECKSUM != 0 { 8 } else { 4 };
    section.len() >= 7 + trailer && section[section.len() - trailer..][..4] == [0, 0, 0, 0]
}

/// Everything `reader` yields, or `None` when that is more than `limit` bytes.
fn read_capped(reader: impl Read, limit: u64) -> io::Result<Option<Bytes>> {
    let mut plain = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut plain)?;
    Ok((plain.len() as u64 <= limit).then(|| Bytes::from(plain)))
}

fn snappy_decompress(section: &[u8], limit: u64, codec: Compression) -> Result<Bytes, CodecError> {
    let corrupt = |message: String| CodecError::Corrupt {
        codec: name(codec),
        source: io::Error::new(io::ErrorKind::InvalidData, message),
    };
    let too_large = || CodecError::TooLarge {
        codec: name(codec),
        limit,
    };
    let mut plain = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    let mut block = |compressed: &[u8], plain: &mut Vec<u8>| {
        let len = snap::raw::decompress_len(compressed).map_err(|e| corrupt(e.to_string()))?;
        if (plain.len() as u64).saturating_add(len as u64) > limit {
            return Err(too_large());
        }
        let at = plain.len();
        plain.resize(at + len, 0);
        let written = decoder
            .decompress(compressed, &mut plain[at..])
            .map_err(|e| corrupt(e.to_string()))?;
        plain.truncate(at + written);
        Ok(())
    };
    let Some(mut rest) = section.strip_prefix(SNAPPY_JAVA_MAGIC.as_slice()) else {
        block(section, &mut plain)?;
        return Ok(Bytes::from(plain));
    };
    // The format version and the oldest compatible one: every version reads the same blocks.
    rest = rest
        .get(8..)
        .ok_or_else(|| corrupt("snappy-java header cut short".into()))?;
    while !rest.is_empty() {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("snappy-java block length cut short".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        let compressed = after
            .get(..len)
            .ok_or_else(|| corrupt(format!("snappy-java block of {len} bytes cut short")))?;
        block(compressed, &mut plain)?;
        rest = &after[len..];
    }
    Ok(Bytes::from(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"temperature=21.5;device=lab-7;"[i % 30] ^ (i / 1000) as u8)
            .collect()
    }

    #[test]
    fn every_codec_round_trips_empty_small_and_multi_block_sections() {
        for codec in ALL {
            for len in [0, 1, 100, SNAPPY_BLOCK, SNAPPY_BLOCK + 1, 200_000] {
                let plain = sample(len);
                let mut out = Vec::new();
                compress(&plain, codec, &mut out).unwrap();
                let back = decompress(Bytes::from(out), codec, 1 << 20).unwrap();
                assert_eq!(back, plain, "{} at {len} bytes", name(codec));
            }
        }
    }

    #[test]
    fn compression_appends_to_what_is_there() {
        for codec in ALL {
            let mut out = b"head".to_vec();
            compress(b"body", codec, &mut out).unwrap();
            assert_eq!(&out[..4], b"head");
            let back = decompress(Bytes::copy_from_slice(&out[4..]), codec, 100).unwrap();
            assert_eq!(back, &b"body"[..]);
        }
    }

    #[test]
    fn every_codec_refuses_a_section_over_the_limit_without_producing_it() {
        let plain = vec![0u8; 1 << 20];
        for codec in ALL.into_iter().filter(|c| *c != Compression::None) {
            let mut out = Vec::new();
            compress(&plain, codec, &mut out).unwrap();
            let out = Bytes::from(out);
            assert!(
                matches!(
                    decompress(out.clone(), codec, (1 << 20) - 1),
                    Err(CodecError::TooLarge { .. })
                ),
                "{}",
                name(codec)
            );
            assert_eq!(decompress(out, codec, 1 << 20).unwrap().len(), 1 << 20);
        }
    }

    #[test]
    fn a_snappy_block_claiming_more_than_the_limit_is_refused_before_it_is_allocated() {
        // A raw block whose varint preamble claims 2^32 - 1 bytes and has nothing behind it.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let mut framed = SNAPPY_JAVA_HEADER.to_vec();
        framed.extend_from_slice(&(claim.len() as u32).to_be_bytes());
        framed.extend_from_slice(&claim);
        for section in [claim.to_vec(), framed] {
            assert!(matches!(
                decompress(Bytes::from(section), Compression::Snappy, 1 << 26),
                Err(CodecError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn snappy_reads_the_java_framing_and_a_raw_block() {
        let plain = sample(70_000);
        let mut framed = Vec::new();
        compress(&plain, Compression::Snappy, &mut framed).unwrap();
        assert_eq!(&framed[..16], SNAPPY_JAVA_HEADER);
        // Blocks of at most 32 KiB, as snappy-java writes them: three for 70,000 bytes.
        let mut blocks = 0;
        let mut rest = &framed[16..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let block = &rest[4..4 + len];
            assert!(snap::raw::decompress_len(block).unwrap() <= SNAPPY_BLOCK);
            rest = &rest[4 + len..];
            blocks += 1;
        }
        assert_eq!(blocks, 3);
        let raw = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        assert_eq!(
            decompress(Bytes::from(raw), Compression::Snappy, 1 << 20).unwrap(),
            plain
        );
    }

    #[test]
    fn lz4_frames_have_independent_blocks_and_no_checksums() {
        let mut out = Vec::new();
        compress(&sample(1000), Compression::Lz4, &mut out).unwrap();
        assert_eq!(&out[..4], &[0x04, 0x22, 0x4d, 0x18], "LZ4 frame magic");
        // FLG: version 01, block independence set, no block or content checksum, no size.
        assert_eq!(out[4], 0b0110_0000);
        // BD: 64 KiB blocks.
        assert_eq!(out[5], 0b0100_0000);
    }

    /// The frame names its content size: zstd was told the input's size, which is what lets it
    /// size the context to the batch rather than to the level's window.
    #[test]
    fn a_zstd_section_is_one_frame_that_names_its_size() {
        for len in [0, 100, 200_000] {
            let mut out = Vec::new();
            compress(&sample(len), Compression::Zstd, &mut out).unwrap();
            assert!(matches!(
                zstd::zstd_safe::get_frame_content_size(&out),
                Ok(Some(n)) if n == len as u64
            ));
            assert!(matches!(
                zstd::zstd_safe::find_frame_compressed_size(&out),
                Ok(n) if n == out.len()
            ));
        }
    }

    #[test]
    fn gzip_reads_concatenated_members() {
        let mut out = Vec::new();
        compress(b"first ", Compression::Gzip, &mut out).unwrap();
        compress(b"second", Compression::Gzip, &mut out).unwrap();
        assert_eq!(
            decompress(Bytes::from(out), Compression::Gzip, 100).unwrap(),
            &b"first second"[..]
        );
    }

    #[test]
    fn cut_and_corrupt_sections_are_errors_not_panics() {
        for codec in ALL.into_iter().filter(|c| *c != Compression::None) {
            let mut out = Vec::new();
            compress(&sample(5000), codec, &mut out).unwrap();
            for cut in [1, 5, 17, out.len() / 2, out.len() - 1] {
                let r = decompress(Bytes::copy_from_slice(&out[..cut]), codec, 1 << 20);
                assert!(r.is_err(), "{} cut at {cut} read as {:?}", name(codec), r);
            }
            let garbage = Bytes::from(vec![0xAB; 64]);
            assert!(
                decompress(garbage, codec, 1 << 20).is_err(),
                "{}",
                name(codec)
            );
        }
    }
}
