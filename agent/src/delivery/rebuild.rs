//! Re-encoding a sealed batch's records: split in two (Kafka refused it as it is), moved to the
//! dead-letter topic, or moved to a new producer id. The records keep their `kedge-seq`,
//! key, value, headers and timestamps; only the framing changes. Pure functions.

use kedge_queue::outbox::{BatchMeta, SealedBatch};
use kedge_wire::batch::{self, BatchCompression, BatchError, ProducerIdentity};
use kedge_wire::record::{
    HEADER_DEVICE, HEADER_ERROR, HEADER_QUEUE, HEADER_SEQ, HEADER_TOPIC, Header, Origin, Record,
    SequencedRecord,
};
use kedge_wire::sequence;

/// The records of `meta`'s batch, read back from its `bytes`.
pub fn records_of(meta: &BatchMeta, bytes: &[u8]) -> Result<Vec<SequencedRecord>, BatchError> {
    Ok(batch::decode_batch(bytes)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let seq = r
                .headers
                .iter()
                .find(|(n, _)| n == HEADER_SEQ)
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(meta.first_seq + i as u64);
            SequencedRecord {
                seq,
                record: Record {
                    topic: meta.topic.clone(),
                    key: r.key,
                    value: r.value.unwrap_or_default(),
                    // kedge's own headers are written afresh by whatever encodes them again.
                    headers: r
                        .headers
                        .into_iter()
                        .filter(|(name, _)| {
                            ![HEADER_DEVICE, HEADER_QUEUE, HEADER_SEQ].contains(&name.as_str())
                        })
                        .map(|(name, value)| Header { name, value })
                        .collect(),
                    timestamp_ms: r.timestamp_ms,
                },
            }
        })
        .collect())
}

/// Where re-encoded batches go and under which identity.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Device and queue the records carry.
    pub origin: &'a Origin,
    /// Producer id and epoch.
    pub producer: ProducerIdentity,
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Sequence of the first record.
    pub base_sequence: i32,
    /// Compression.
    pub compression: BatchCompression,
    /// Number of the first batch made.
    pub first_batch_no: u64,
}

/// `records` as batches for `target`, in order: one batch, or two where the sequences wrap
/// past `i32::MAX` (a batch's sequences must be contiguous).
pub fn encode(
    target: &Target<'_>,
    records: &[SequencedRecord],
) -> Result<Vec<SealedBatch>, BatchError> {
    let mut out = Vec::new();
    let mut base = target.base_sequence;
    let mut rest = records;
    while !rest.is_empty() {
        let room = usize::try_from(sequence::room_before_wrap(base)).unwrap_or(usize::MAX);
        let (now, later) = rest.split_at(rest.len().min(room.max(1)));
        let bytes = batch::encode_batch(
            target.producer,
            base,
            target.origin,
            now,
            target.compression,
        )?;
        let count = now.len() as i32;
        out.push(SealedBatch {
            batch_no: target.first_batch_no + out.len() as u64,
            topic: target.topic.to_owned(),
            partition: target.partition,
            producer: target.producer,
            base_sequence: base,
            record_count: count,
            first_seq: now[0].seq,
            last_seq: now[now.len() - 1].seq,
            bytes,
            legacy: false,
        });
        base = sequence::increment(base, count);
        rest = later;
    }
    Ok(out)
}

/// `records` moved to the dead-letter topic: each carries why (`kedge-error`) and the topic it
/// was meant for (`kedge-topic`).
pub fn dead_lettered(records: Vec<SequencedRecord>, reason: &str) -> Vec<SequencedRecord> {
    records
        .into_iter()
        .map(|mut r| {
            let topic = std::mem::take(&mut r.record.topic);
            r.record.headers.push(Header {
                name: HEADER_ERROR.to_owned(),
                value: bytes::Bytes::from(reason.to_owned()),
            });
            r.record.headers.push(Header {
                name: HEADER_TOPIC.to_owned(),
                value: bytes::Bytes::from(topic),
            });
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const P: ProducerIdentity = ProducerIdentity {
        producer_id: 3,
        producer_epoch: 1,
    };

    fn origin() -> Origin {
        Origin {
            device: "dev".into(),
            queue: 42,
        }
    }

    fn records(n: u64) -> Vec<SequencedRecord> {
        (0..n)
            .map(|i| SequencedRecord {
                seq: 100 + i,
                record: Record {
                    topic: "t".into(),
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Bytes::from(format!("v{i}")),
                    headers: vec![Header {
                        name: "h".into(),
                        value: Bytes::from_static(b"x"),
                    }],
                    timestamp_ms: 5 + i as i64,
                },
            })
            .collect()
    }

    fn target(base: i32) -> Target<'static> {
        static ORIGIN: std::sync::OnceLock<Origin> = std::sync::OnceLock::new();
        Target {
            origin: ORIGIN.get_or_init(origin),
            producer: P,
            topic: "t",
            partition: 2,
            base_sequence: base,
            compression: BatchCompression::Zstd,
            first_batch_no: 9,
        }
    }

    #[test]
    fn records_survive_a_round_trip_with_their_kedge_seq() {
        let recs = records(4);
        let made = encode(&target(7), &recs).unwrap();
        assert_eq!(made.len(), 1);
        let back = records_of(&made[0].meta(), &made[0].bytes).unwrap();
        assert_eq!(back, recs);
        assert_eq!((made[0].first_seq, made[0].last_seq), (100, 103));
    }

    #[test]
    fn a_wrap_cuts_the_batch_in_two() {
        let made = encode(&target(i32::MAX - 1), &records(5)).unwrap();
        let cut: Vec<(u64, i32, i32)> = made
            .iter()
            .map(|b| (b.batch_no, b.base_sequence, b.record_count))
            .collect();
        assert_eq!(cut, vec![(9, i32::MAX - 1, 2), (10, 0, 3)]);
    }

    #[test]
    fn dead_lettered_records_say_why_and_where_they_were_going() {
        let moved = dead_lettered(records(1), "refused");
        let names: Vec<&str> = moved[0]
            .record
            .headers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, vec!["h", HEADER_ERROR, HEADER_TOPIC]);
        assert_eq!(moved[0].record.headers[2].value, Bytes::from_static(b"t"));
    }
}
