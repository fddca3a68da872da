//! What `Record::defect` lets through, the journal and a Kafka batch can hold together: the
//! router's promise that no record it lets pass can wedge the commit stage.

use bytes::Bytes;
use kedge_wire::batch::{BatchCompression, ProducerIdentity, encode_batch};
use kedge_wire::record::{
    Header, MAX_HEADER_NAME, MAX_HEADERS, MAX_TIMESTAMP_MS, MAX_TOPIC_LEN, Origin, Record,
    SequencedRecord,
};
use proptest::prelude::*;

use crate::chunk;

fn record(headers: usize, name_len: usize, topic_len: usize, timestamp_ms: i64) -> Record {
    Record {
        topic: "t".repeat(topic_len),
        key: None,
        value: Bytes::from_static(b"v"),
        headers: (0..headers)
            .map(|i| Header {
                name: if i == 0 {
                    "n".repeat(name_len)
                } else {
                    String::new()
                },
                value: Bytes::new(),
            })
            .collect(),
        timestamp_ms,
    }
}

#[test]
fn the_largest_records_without_defect_encode() {
    let r = record(
        MAX_HEADERS,
        MAX_HEADER_NAME,
        MAX_TOPIC_LEN,
        MAX_TIMESTAMP_MS,
    );
    assert_eq!(r.defect(), None);
    chunk::encode(0, &[r]).expect("a record without defect encodes");
}

proptest! {
    /// What `defect` lets through, the journal and a Kafka batch can hold, together.
    #[test]
    fn records_without_defect_encode_in_a_chunk_and_a_batch(
        headers in prop_oneof![0..4usize, (MAX_HEADERS - 1)..(MAX_HEADERS + 2)],
        name_len in prop_oneof![0..4usize, (MAX_HEADER_NAME - 1)..(MAX_HEADER_NAME + 2)],
        topic_len in 1..300usize,
        stamps in proptest::collection::vec(prop_oneof![
            Just(i64::MIN), Just(-1i64), Just(0i64), Just(MAX_TIMESTAMP_MS),
            Just(MAX_TIMESTAMP_MS + 1), Just(i64::MAX), any::<i64>()
        ], 1..4),
    ) {
        let records: Vec<Record> = stamps
            .iter()
            .map(|&t| record(headers, name_len, topic_len, t))
            .filter(|r| r.defect().is_none())
            .collect();
        prop_assume!(!records.is_empty());
        chunk::encode(0, &records).expect("chunk");
        let sequenced: Vec<SequencedRecord> = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| SequencedRecord { seq: i as u64, record })
            .collect();
        let origin = Origin { device: "d".into(), queue: 1 };
        let producer = ProducerIdentity { producer_id: 1, producer_epoch: 0 };
        encode_batch(
            producer, 0, &origin, &sequenced, BatchCompression::None,
        )
        .expect("batch");
    }
}
