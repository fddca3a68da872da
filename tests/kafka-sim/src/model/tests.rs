//! Vectors for the rules the model implements, through its public operations.

use bytes::Bytes;

use super::*;
use crate::batch::{NewRecord, encode_batch};

const T: &str = "readings";

/// An idempotent batch of `n` records with sequences `seq..seq + n` and timestamps `ts..`.
fn batch(pid: i64, epoch: i16, seq: i32, n: i32, ts: i64) -> Bytes {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| {
            NewRecord::value(
                ts + i64::from(i),
                format!("{pid}/{epoch}/{}", seq.wrapping_add(i)),
            )
        })
        .collect();
    let idem = Idempotence {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
    };
    encode_batch(Some(idem), &records, Codec::None)
}

fn cluster() -> Cluster {
    Cluster::new().with_topic(T, 2)
}

/// A cluster holding six 2-record batches from a fresh producer on partition 0.
fn six_batches() -> (Cluster, i64) {
    let mut c = cluster();
    let (pid, epoch) = c.init_producer_id(Some((-1, -1))).unwrap();
    for b in 0..6 {
        let r = c.produce(T, 0, &batch(pid, epoch, 2 * b, 2, 100)).unwrap();
        assert_eq!(r.base_offset, i64::from(2 * b));
    }
    (c, pid)
}

#[test]
fn duplicate_of_the_last_five_answers_the_original_offset() {
    let (mut c, pid) = six_batches();
    for b in 1..6 {
        let r = c.produce(T, 0, &batch(pid, 0, 2 * b, 2, 999)).unwrap();
        assert_eq!(
            r,
            Appended {
                base_offset: i64::from(2 * b),
                log_start_offset: 0,
                duplicate: true
            }
        );
    }
    assert_eq!(c.log_end_offset(T, 0), Ok(12));
    assert_eq!(c.batches(T, 0).unwrap().len(), 6);
}

#[test]
fn resend_older_than_the_last_five_is_out_of_order() {
    let (mut c, pid) = six_batches();
    assert_eq!(
        c.produce(T, 0, &batch(pid, 0, 0, 2, 100)),
        Err(ResponseError::OutOfOrderSequenceNumber)
    );
    assert_eq!(c.log_end_offset(T, 0), Ok(12));
}

#[test]
fn gap_and_changed_boundaries_are_out_of_order() {
    let (mut c, pid) = six_batches();
    assert_eq!(
        c.produce(T, 0, &batch(pid, 0, 13, 1, 100)),
        Err(ResponseError::OutOfOrderSequenceNumber)
    );
    // Same records as the last batch, re-cut: not recognised as a duplicate.
    assert_eq!(
        c.produce(T, 0, &batch(pid, 0, 10, 1, 100)),
        Err(ResponseError::OutOfOrderSequenceNumber)
    );
    assert!(c.produce(T, 0, &batch(pid, 0, 12, 1, 100)).is_ok());
}

#[test]
fn producer_without_state_is_accepted_with_any_sequence_in_kafka_dialect() {
    let (mut c, pid) = six_batches();
    c.forget_producer(pid);
    // The resend of the first batch is appended a second time: the hazard kedge must avoid.
    let r = c.produce(T, 0, &batch(pid, 0, 0, 2, 100)).unwrap();
    assert_eq!((r.base_offset, r.duplicate), (12, false));
    // A producer id the cluster never issued, any sequence, on the other partition.
    assert!(c.produce(T, 1, &batch(77, 5, 4242, 3, 1)).is_ok());
    assert_eq!(
        c.producer_state(T, 1, 77).unwrap().unwrap().last_sequence(),
        4244
    );
}

#[test]
fn tansu_dialect() {
    let (mut c, pid) = six_batches();
    c.set_dialect(Dialect::Tansu);
    assert_eq!(
        c.produce(T, 0, &batch(pid, 0, 10, 2, 100)),
        Err(ResponseError::DuplicateSequenceNumber)
    );
    assert_eq!(
        c.produce(T, 0, &batch(pid, 0, 0, 2, 100)),
        Err(ResponseError::DuplicateSequenceNumber)
    );
    assert_eq!(
        c.produce(T, 0, &batch(pid, 1, 12, 2, 100)),
        Err(ResponseError::ProducerFenced)
    );
    assert!(c.produce(T, 0, &batch(pid, 0, 12, 1, 100)).is_ok());
    assert_eq!(
        c.produce(T, 1, &batch(77, 0, 0, 1, 100)),
        Err(ResponseError::UnknownProducerId)
    );
    c.forget_producer(pid);
    assert_eq!(
        c.produce(T, 0, &batch(pid, 0, 13, 1, 100)),
        Err(ResponseError::UnknownProducerId)
    );
    assert_eq!(
        c.init_producer_id(None),
        Err(ResponseError::UnknownServerError)
    );
    assert_eq!(
        c.init_producer_id(Some((pid, 0))),
        Err(ResponseError::UnknownServerError)
    );
}

#[test]
fn lower_epoch_is_fenced_and_a_new_epoch_starts_at_zero() {
    let mut c = cluster();
    c.produce(T, 0, &batch(5, 3, 0, 2, 1)).unwrap();
    assert_eq!(
        c.produce(T, 0, &batch(5, 2, 2, 1, 1)),
        Err(ResponseError::InvalidProducerEpoch)
    );
    assert_eq!(
        c.produce(T, 0, &batch(5, 4, 2, 1, 1)),
        Err(ResponseError::OutOfOrderSequenceNumber)
    );
    assert!(c.produce(T, 0, &batch(5, 4, 0, 1, 1)).is_ok());
    assert_eq!(c.producer_state(T, 0, 5).unwrap().unwrap().epoch(), 4);
}

#[test]
fn sequence_wraps_from_max_to_zero() {
    let mut c = cluster();
    // Without state any sequence starts the producer; its batch ends exactly at i32::MAX.
    c.produce(T, 0, &batch(9, 0, i32::MAX - 1, 2, 1)).unwrap();
    assert_eq!(
        c.produce(T, 0, &batch(9, 0, 1, 1, 1)),
        Err(ResponseError::OutOfOrderSequenceNumber)
    );
    c.produce(T, 0, &batch(9, 0, 0, 3, 1)).unwrap();
    // A batch crossing the wrap: last sequence 1.
    c.forget_producer(9);
    c.produce(T, 0, &batch(9, 0, i32::MAX, 3, 1)).unwrap();
    assert_eq!(
        c.producer_state(T, 0, 9).unwrap().unwrap().last_sequence(),
        1
    );
    assert!(c.produce(T, 0, &batch(9, 0, 2, 1, 1)).is_ok());
}

#[test]
fn batch_above_max_message_bytes_is_refused_and_not_appended() {
    let mut c = cluster();
    let b = batch(1, 0, 0, 4, 1);
    c.set_max_message_bytes(T, b.len() - 1).unwrap();
    assert_eq!(c.produce(T, 0, &b), Err(ResponseError::MessageTooLarge));
    assert_eq!(c.log_end_offset(T, 0), Ok(0));
    assert_eq!(c.producer_state(T, 0, 1), Ok(None));
    c.set_max_message_bytes(T, b.len()).unwrap();
    assert!(c.produce(T, 0, &b).is_ok());
}

#[test]
fn wrong_crc_is_corrupt() {
    let mut c = cluster();
    let mut b = batch(1, 0, 0, 1, 1).to_vec();
    let last = b.len() - 1;
    b[last] ^= 1;
    assert_eq!(c.produce(T, 0, &b), Err(ResponseError::CorruptMessage));
    assert_eq!(c.log_end_offset(T, 0), Ok(0));
}

#[test]
fn unknown_topic_or_partition() {
    let mut c = cluster();
    let b = batch(1, 0, 0, 1, 1);
    assert_eq!(
        c.produce("nope", 0, &b),
        Err(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        c.produce(T, 2, &b),
        Err(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        c.produce(T, -1, &b),
        Err(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        c.fetch(T, 7, 0, 100, true),
        Err(ResponseError::UnknownTopicOrPartition)
    );
}

#[test]
fn stored_batches_carry_their_offsets() {
    let (c, pid) = six_batches();
    let batches = c.batches(T, 0).unwrap();
    for (i, b) in batches.iter().enumerate() {
        let h = crate::batch::BatchHeader::read(&b.bytes).unwrap();
        assert_eq!(h.base_offset, 2 * i as i64);
        assert_eq!((b.producer_id, b.producer_epoch), (pid, 0));
        assert_eq!(b.base_sequence, 2 * i as i32);
        assert_eq!(b.record_count, 2);
    }
    let offsets: Vec<i64> = c.records(T, 0).unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..12).collect::<Vec<_>>());
}

#[test]
fn fetch_returns_whole_batches_and_at_least_one() {
    let (mut c, _) = six_batches();
    let one = c.batches(T, 0).unwrap()[0].bytes.len();
    // Offset 3 lies in the second batch, which is returned whole.
    let f = c.fetch(T, 0, 3, 1, true).unwrap();
    assert_eq!(f.records, c.batches(T, 0).unwrap()[1].bytes);
    assert_eq!((f.high_watermark, f.log_start_offset), (12, 0));
    // Without min_one nothing fits in one byte.
    assert!(c.fetch(T, 0, 3, 1, false).unwrap().records.is_empty());
    assert_eq!(
        c.fetch(T, 0, 0, 2 * one + 1, true).unwrap().records.len(),
        2 * one
    );
    assert!(c.fetch(T, 0, 12, 1000, true).unwrap().records.is_empty());
    assert_eq!(
        c.fetch(T, 0, 13, 1000, true),
        Err(ResponseError::OffsetOutOfRange)
    );
    // Kafka-style partial tail: the bytes of the next batch that fit.
    c.set_partial_fetch_tail(true);
    assert_eq!(
        c.fetch(T, 0, 0, 2 * one + 5, true).unwrap().records.len(),
        2 * one + 5
    );
}

#[test]
fn retention_moves_the_log_start() {
    let (mut c, pid) = six_batches();
    c.delete_records_before(T, 0, 5).unwrap();
    assert_eq!(c.log_start_offset(T, 0), Ok(5));
    assert_eq!(
        c.fetch(T, 0, 4, 1000, true),
        Err(ResponseError::OffsetOutOfRange)
    );
    // The batch holding offset 5 (offsets 4–5) stays and is returned first.
    let f = c.fetch(T, 0, 5, 1 << 20, true).unwrap();
    let first = crate::batch::BatchHeader::read(&f.records).unwrap();
    assert_eq!((first.base_offset, f.log_start_offset), (4, 5));
    assert_eq!(c.batches(T, 0).unwrap().len(), 4);
    assert_eq!(c.records(T, 0).unwrap()[0].offset, 5);
    assert_eq!(c.list_offsets(T, 0, -2).unwrap().unwrap().offset, 5);
    // Producer state survives retention: the last batches are still duplicates.
    assert!(
        c.produce(T, 0, &batch(pid, 0, 10, 2, 100))
            .unwrap()
            .duplicate
    );
    assert_eq!(
        c.delete_records_before(T, 0, 13),
        Err(ModelError::BeyondLogEnd {
            offset: 13,
            log_end: 12
        })
    );
}

#[test]
fn list_offsets_by_timestamp() {
    let mut c = cluster();
    // Offsets 0–2 at 100, 101, 102; offsets 3–4 at 200, 201; offset 5 at 150.
    c.produce(T, 0, &batch(1, 0, 0, 3, 100)).unwrap();
    c.produce(T, 0, &batch(1, 0, 3, 2, 200)).unwrap();
    c.produce(T, 0, &batch(1, 0, 5, 1, 150)).unwrap();
    let at = |c: &Cluster, ts| c.list_offsets(T, 0, ts).unwrap();
    let o = |offset, timestamp| Some(OffsetAt { offset, timestamp });
    assert_eq!(at(&c, -2), o(0, -1));
    assert_eq!(at(&c, -1), o(6, -1));
    assert_eq!(at(&c, 0), o(0, 100));
    assert_eq!(at(&c, 101), o(1, 101));
    assert_eq!(at(&c, 150), o(3, 200));
    assert_eq!(at(&c, 201), o(4, 201));
    assert_eq!(at(&c, 202), None);
    assert_eq!(at(&c, -3), o(4, 201));
    assert_eq!(at(&cluster(), 5), None);
}

#[test]
fn read_denied_topic() {
    let (mut c, _) = six_batches();
    c.deny_read(T, true).unwrap();
    let denied = ResponseError::TopicAuthorizationFailed;
    assert_eq!(c.fetch(T, 0, 0, 100, true), Err(denied));
    assert_eq!(c.list_offsets(T, 0, -1), Err(denied));
    assert_eq!(c.describe_producers(T, 0), Err(denied));
    c.deny_read(T, false).unwrap();
    assert!(c.fetch(T, 0, 0, 100, true).is_ok());
}

#[test]
fn describe_denied_topic() {
    let (mut c, _) = six_batches();
    c.deny_describe(T, true).unwrap();
    let named = c.metadata(Some(&[T]), true);
    assert_eq!(named.len(), 1);
    assert_eq!(
        named[0].error,
        Some(ResponseError::TopicAuthorizationFailed)
    );
    assert_eq!(named[0].partitions, 0);
    assert!(c.metadata(None, false).iter().all(|t| t.name != T));
    c.deny_describe(T, false).unwrap();
    assert_eq!(c.metadata(Some(&[T]), false)[0].error, None);
}

#[test]
fn describe_producers_reports_last_sequence_and_timestamp() {
    let (c, pid) = six_batches();
    assert_eq!(
        c.describe_producers(T, 0),
        Ok(vec![ActiveProducer {
            producer_id: pid,
            producer_epoch: 0,
            last_sequence: 11,
            last_timestamp: 101
        }])
    );
    assert_eq!(c.describe_producers(T, 1), Ok(vec![]));
}

#[test]
fn expiry_is_measured_from_record_timestamps() {
    let mut c = cluster();
    c.produce(T, 0, &batch(1, 0, 0, 1, 1_000)).unwrap();
    c.produce(T, 1, &batch(1, 0, 0, 1, 5_000)).unwrap();
    c.expire_producers(6_000, 5_000);
    assert_eq!(c.producer_state(T, 0, 1), Ok(None));
    assert!(c.producer_state(T, 1, 1).unwrap().is_some());
}

#[test]
fn producer_ids_are_fresh_and_monotonic() {
    let mut c = cluster();
    let (a, ea) = c.init_producer_id(None).unwrap();
    let (b, eb) = c.init_producer_id(Some((a, 0))).unwrap();
    c.forget_all_producers();
    let (d, _) = c.init_producer_id(Some((-1, -1))).unwrap();
    assert!(a < b && b < d);
    assert_eq!((ea, eb), (0, 0));
}

#[test]
fn foreign_batches() {
    let mut c = cluster();
    let plain = Foreign::Plain {
        producer_id: 55,
        records: vec![NewRecord {
            timestamp: 3,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![("h".to_owned(), Some(Bytes::from_static(b"x")))],
        }],
    };
    assert_eq!(c.append_foreign(T, 0, plain.clone()), Ok(0));
    assert_eq!(
        c.append_foreign(
            T,
            0,
            Foreign::Compressed {
                codec: ForeignCodec::Snappy
            }
        ),
        Ok(1)
    );
    assert_eq!(c.append_foreign(T, 0, Foreign::LegacyMagic1), Ok(4));
    assert_eq!(c.append_foreign(T, 0, plain), Ok(5));
    assert_eq!(c.log_end_offset(T, 0), Ok(6));
    // The second plain batch continued producer 55's sequence.
    let state = c.producer_state(T, 0, 55).unwrap().unwrap();
    assert_eq!(state.last_sequence(), 1);
    let records = c.records(T, 0).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].offset, 5);
    assert_eq!(
        records[1].headers,
        vec![("h".to_owned(), Some(Bytes::from_static(b"x")))]
    );
    let magics: Vec<i8> = c.batches(T, 0).unwrap().iter().map(|b| b.magic).collect();
    assert_eq!(magics, [2, 2, 1, 2]);
    // A fetch returns them all, the legacy entry with its offset stamped.
    let f = c.fetch(T, 0, 0, 1 << 20, true).unwrap();
    let total: usize = c.batches(T, 0).unwrap().iter().map(|b| b.bytes.len()).sum();
    assert_eq!(f.records.len(), total);
    let legacy = &c.batches(T, 0).unwrap()[2].bytes;
    assert_eq!(&legacy[0..8], &4i64.to_be_bytes());
}

#[test]
fn zstd_batches_are_stored_and_read_back() {
    let mut c = cluster();
    let records = [
        NewRecord::value(1, "a"),
        NewRecord {
            timestamp: 2,
            key: Some(Bytes::from_static(b"key")),
            value: None,
            headers: vec![("kedge.seq".to_owned(), Some(Bytes::from_static(b"7")))],
        },
    ];
    let idem = Idempotence {
        producer_id: 3,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let b = encode_batch(Some(idem), &records, Codec::Zstd);
    c.produce(T, 1, &b).unwrap();
    let back = c.records(T, 1).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[1].key.as_deref(), Some(&b"key"[..]));
    assert_eq!(back[1].value, None);
    assert_eq!(back[1].headers[0].0, "kedge.seq");
    assert_eq!(back[0].producer_id, 3);
}

#[test]
fn metadata_and_auto_creation() {
    let mut c = cluster();
    let all = c.metadata(None, false);
    assert_eq!(
        all,
        vec![TopicInfo {
            name: T.to_owned(),
            error: None,
            partitions: 2
        }]
    );
    let unknown = c.metadata(Some(&["new"]), true);
    assert_eq!(
        unknown[0].error,
        Some(ResponseError::UnknownTopicOrPartition)
    );
    c.set_auto_create(Some(3));
    assert_eq!(
        c.metadata(Some(&["new"]), false)[0].error,
        Some(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        c.metadata(Some(&["new"]), true)[0].error,
        Some(ResponseError::LeaderNotAvailable)
    );
    assert_eq!(c.metadata(Some(&["new"]), true)[0].partitions, 3);
    assert_eq!(c.partition_count("new"), Some(3));
}
