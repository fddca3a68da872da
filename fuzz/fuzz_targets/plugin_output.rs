//! Plugin outputs into records (crates/plugin-host/src/chain.rs `from_output`, route.rs
//! `Router::route`), journaled (`chunk::encode`) and made into the Kafka batch the dispatcher
//! sends (`kafka::batch::encode_batch`), read back with `decode_batch`.
//!
//! A plugin is untrusted code: every field of its outputs (topic, key, value, headers,
//! timestamp) comes from the fuzzer here, as does the input event they replace.

#![no_main]

use bytes::Bytes;
use kedge_wire::batch::{self, BatchCompression, ProducerIdentity};
use kedge_wire::record::{HEADER_SEQ, Header, Origin, Record, SequencedRecord};
use kedge::route::{Event, Router, Rule};
use kedge_plugin_host::chain::from_output;
use kedge_plugin_host::host::{Header as WitHeader, Output};
use kedge_fuzz::{Input, commit};
use libfuzzer_sys::fuzz_target;

fn router() -> Router {
    Router::new(
        vec![
            Rule {
                filter: "sensors/+/temperature".into(),
                topic: "temperature".into(),
                key_level: Some(1),
            },
            Rule {
                filter: "sensors/#".into(),
                topic: "sensors".into(),
                key_level: Some(2),
            },
        ],
        Some("default".into()),
        "kedge-dlq".into(),
    )
}

fn output(input: &mut Input<'_>) -> Output {
    let topic = input.bool().then(|| input.string());
    let key = input.bool().then(|| input.blob().to_vec());
    let value = input.blob().to_vec();
    // Many headers cost a plugin nothing against `max_output` when they are empty.
    let n = match input.u8() {
        255 => usize::from(input.u16()) + 1,
        n => usize::from(n % 16),
    };
    let headers = (0..n)
        .map(|_| {
            if input.is_empty() {
                return WitHeader {
                    name: String::new(),
                    value: Vec::new(),
                };
            }
            WitHeader {
                name: input.string(),
                value: input.blob().to_vec(),
            }
        })
        .collect();
    let timestamp_ms = input.bool().then(|| input.u64() as i64);
    Output {
        topic,
        key,
        value,
        headers,
        timestamp_ms,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let subject = input.string();
    let mut event = Event::new(
        subject,
        Bytes::copy_from_slice(input.blob()),
        vec![Header {
            name: "unit".into(),
            value: Bytes::from_static(b"C"),
        }],
        input.u64() as i64 >> 1,
    );
    if input.bool() {
        event.key = Some(Bytes::copy_from_slice(input.blob()));
    }
    if input.bool() {
        event.topic = Some(input.string());
    }
    let router = router();
    let n = 1 + usize::from(input.u8() % 4);
    let mut records: Vec<Record> = Vec::new();
    for _ in 0..n {
        let o = output(&mut input);
        let (topic, key, value, ts) = (
            o.topic.clone(),
            o.key.clone(),
            o.value.clone(),
            o.timestamp_ms,
        );
        let e = from_output(o, &event);
        assert_eq!(e.subject, event.subject);
        assert_eq!(&e.payload[..], &value[..]);
        assert_eq!(e.timestamp_ms, ts.unwrap_or(event.timestamp_ms));
        let (record, dead) = router.route(e, 1_700_000_000_000);
        assert_eq!(
            record.defect(),
            None,
            "a routed record the journal cannot hold"
        );
        if dead == Some(kedge::telemetry::DeadLetter::Unencodable) {
            // Too many headers, a name or topic too long, a timestamp out of range: set aside.
            assert_eq!(record.topic, router.dead_letter_topic());
        } else {
            if let Some(t) = &topic {
                assert_eq!(&record.topic, t);
            }
            if let (Some(_), Some(k)) = (&topic, &key) {
                assert_eq!(record.key.as_deref(), Some(&k[..]));
            }
        }
        records.push(record);
    }
    // The commit: journaled as one chunk.
    commit(7, &records);
    // The dispatcher: one idempotent batch per topic; here all records in one for simplicity
    // (encode_batch does not look at the topic).
    let sequenced: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| SequencedRecord {
            seq: 100 + i as u64,
            record: r.clone(),
        })
        .collect();
    let origin = Origin {
        device: "dev-1".into(),
        queue: 0x1234,
    };
    let producer = ProducerIdentity {
        producer_id: 42,
        producer_epoch: 3,
    };
    for compression in [BatchCompression::None, BatchCompression::Zstd] {
        let Ok(bytes) = batch::encode_batch(producer, 5, &origin, &sequenced, compression) else {
            continue;
        };
        if compression == BatchCompression::None {
            // The dispatcher cuts batches by this bound: it must not be below the real size
            // (61 bytes of batch header aside).
            let bound: usize = sequenced
                .iter()
                .map(|r| batch::record_size_bound(r, &origin))
                .sum();
            assert!(
                bytes.len() <= 61 + bound,
                "batch of {} bytes over its records' bound {bound} + 61",
                bytes.len()
            );
        }
        let info = batch::batch_info(&bytes).expect("info of our own batch");
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].record_count as usize, sequenced.len());
        let decoded = batch::decode_batch(&bytes).expect("our own batch decodes");
        assert_eq!(decoded.len(), sequenced.len());
        for (d, s) in decoded.iter().zip(&sequenced) {
            assert_eq!(d.key, s.record.key);
            assert_eq!(d.value.as_ref(), Some(&s.record.value));
            assert_eq!(d.timestamp_ms, s.record.timestamp_ms);
            let seq = d
                .headers
                .iter()
                .find(|(n, _)| n == HEADER_SEQ)
                .map(|(_, v)| v.clone());
            assert_eq!(seq.as_deref(), Some(s.seq.to_string().as_bytes()));
        }
        let entries = batch::fetched_entries(&bytes).expect("our own batch as fetched");
        assert_eq!(entries.len(), 1);
        assert!(entries[0].readable());
    }
});
