//! Writes the generated part of the seed corpus (fuzz/corpus/<target>/gen-*): real chunks from
//! kedge's encoder, real Kafka responses from kafka-protocol's encoders with record batches
//! from kedge's `encode_batch`, and real MQTT packets. The config seeds are copies of the
//! project's config files and of the config tests' TOML.
//!
//!   scripts/fuzz --seeds      (runs fuzz/target/<host>/release/seeds fuzz/corpus)

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchResponse, InitProducerIdResponse,
    ListOffsetsResponse, MetadataResponse, ProduceResponse, ResponseHeader,
    SaslAuthenticateResponse, SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kedge_wire::batch::{self, BatchCompression, ProducerIdentity};
use kedge_queue::chunk;
use kedge_wire::record::{Header, Origin, Record, SequencedRecord};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("gen-{name}")), bytes).unwrap();
}

fn records() -> Vec<Record> {
    vec![
        Record {
            topic: "temperature".into(),
            key: Some(Bytes::from_static(b"dev-7")),
            value: Bytes::from_static(b"{\"c\":21.5}"),
            headers: vec![Header {
                name: "unit".into(),
                value: Bytes::from_static(b"C"),
            }],
            timestamp_ms: 1_700_000_000_000,
        },
        Record {
            topic: "kedge-dlq".into(),
            key: None,
            value: Bytes::from_static(b"\x00\x01\x02"),
            headers: vec![],
            timestamp_ms: 1_700_000_000_250,
        },
    ]
}

fn sequenced() -> Vec<SequencedRecord> {
    records()
        .into_iter()
        .enumerate()
        .map(|(i, record)| SequencedRecord {
            seq: 40 + i as u64,
            record,
        })
        .collect()
}

fn kafka_batch(compression: BatchCompression) -> Bytes {
    batch::encode_batch(
        ProducerIdentity {
            producer_id: 1000,
            producer_epoch: 0,
        },
        0,
        &Origin {
            device: "dev-7".into(),
            queue: 0xfeed,
        },
        &sequenced(),
        compression,
    )
    .unwrap()
}

fn journal(dir: &Path) {
    let chunk = chunk::encode(40, &records()).unwrap();
    let sparse = chunk::encode_sparse(&sequenced()).unwrap();
    for (name, c) in [("chunk", &chunk), ("sparse", &sparse)] {
        let mut v = vec![0u8];
        v.extend_from_slice(c);
        write(dir, name, &v);
        // Mode 1: the raw record section of the chunk, sealed by the target.
        let raw = zstd::bulk::decompress(&c[22..], 1 << 20).unwrap();
        let mut m = vec![1u8, if name == "sparse" { 1 } else { 0 }];
        m.extend_from_slice(&40u64.to_le_bytes());
        m.push(0);
        m.extend_from_slice(&2u16.to_le_bytes());
        m.push(1);
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&raw);
        write(dir, &format!("{name}-raw"), &m);
    }
    // Modes 2 and 3: records as the target's Input reads them.
    let mut s = vec![2u8];
    s.extend_from_slice(&40u64.to_le_bytes());
    s.extend_from_slice(&[0, 2]);
    s.extend_from_slice(&input_record(
        "sensors",
        Some(b"k"),
        b"21.5",
        &[("unit", b"C")],
    ));
    s.extend_from_slice(&input_record("t", None, b"", &[]));
    write(dir, "records", &s);
    let mut g = vec![3u8, 1];
    g.extend_from_slice(&input_record(
        "sensors",
        Some(b"k"),
        b"21.5",
        &[("unit", b"C")],
    ));
    g.extend_from_slice(&input_record("t", None, b"x", &[]));
    g.extend_from_slice(&[0, 0x10, 0, 4, 0xff, 0xff, 0xff, 0xff]);
    write(dir, "segment", &g);
}

/// A record as `kedge_fuzz::record` reads it.
fn input_record(
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut v = Vec::new();
    v.push(topic.len() as u8);
    v.extend_from_slice(topic.as_bytes());
    match key {
        Some(k) => {
            v.push(1);
            v.push(k.len() as u8);
            v.extend_from_slice(k);
        }
        None => v.push(0),
    }
    v.push(value.len() as u8);
    v.extend_from_slice(value);
    v.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    v.push(headers.len() as u8);
    for (n, hv) in headers {
        v.push(n.len() as u8);
        v.extend_from_slice(n.as_bytes());
        v.push(hv.len() as u8);
        v.extend_from_slice(hv);
    }
    v
}

fn kafka_frame<R: Encodable>(api: ApiKey, version: i16, body: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    if api == ApiKey::ApiVersions {
        buf.put_i32(7);
    } else {
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut buf, api.response_header_version(version))
            .unwrap();
    }
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

fn kafka(dir: &Path) {
    // (index in the target's APIS, its lowest version)
    let seed = |dir: &Path, which: u8, lo: i16, version: i16, frame: Vec<u8>, name: &str| {
        let mut v = vec![which, (version - lo) as u8];
        v.extend_from_slice(&frame);
        write(dir, &format!("{name}-v{version}"), &v);
    };
    for version in [0, 3] {
        let r = ApiVersionsResponse::default().with_api_keys(vec![
            kafka_protocol::messages::api_versions_response::ApiVersion::default()
                .with_api_key(0)
                .with_min_version(3)
                .with_max_version(12),
        ]);
        seed(
            dir,
            0,
            0,
            version,
            kafka_frame(ApiKey::ApiVersions, version, &r),
            "api-versions",
        );
    }
    let r = SaslHandshakeResponse::default()
        .with_mechanisms(vec![StrBytes::from_static_str("SCRAM-SHA-256")]);
    seed(
        dir,
        1,
        1,
        1,
        kafka_frame(ApiKey::SaslHandshake, 1, &r),
        "sasl-handshake",
    );
    for version in [0, 2] {
        let r = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from_static(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ));
        seed(
            dir,
            2,
            0,
            version,
            kafka_frame(ApiKey::SaslAuthenticate, version, &r),
            "sasl-auth",
        );
    }
    for version in [1, 9, 12] {
        let r = MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("localhost"))
                    .with_port(9092),
            ])
            .with_topics(vec![MetadataResponseTopic::default().with_name(Some(
                TopicName(StrBytes::from_static_str("temperature")),
            ))]);
        seed(
            dir,
            3,
            1,
            version,
            kafka_frame(ApiKey::Metadata, version, &r),
            "metadata",
        );
    }
    for version in [0, 5] {
        let r = InitProducerIdResponse::default()
            .with_producer_id(kafka_protocol::messages::ProducerId(1000));
        seed(
            dir,
            4,
            0,
            version,
            kafka_frame(ApiKey::InitProducerId, version, &r),
            "init-pid",
        );
    }
    for version in [4, 11] {
        for (name, compression) in [
            ("fetch", BatchCompression::None),
            ("fetch-gzip", BatchCompression::Gzip),
            ("fetch-snappy", BatchCompression::Snappy),
            ("fetch-lz4", BatchCompression::Lz4),
            ("fetch-zstd", BatchCompression::Zstd),
        ] {
            let r = FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("temperature")))
                    .with_partitions(vec![
                        PartitionData::default()
                            .with_high_watermark(2)
                            .with_records(Some(kafka_batch(compression))),
                    ]),
            ]);
            seed(
                dir,
                5,
                4,
                version,
                kafka_frame(ApiKey::Fetch, version, &r),
                name,
            );
        }
    }
    for version in [1, 7] {
        let r = ListOffsetsResponse::default();
        seed(
            dir,
            6,
            1,
            version,
            kafka_frame(ApiKey::ListOffsets, version, &r),
            "list-offsets",
        );
    }
    for version in [3, 9, 12] {
        let r = ProduceResponse::default();
        seed(
            dir,
            7,
            3,
            version,
            kafka_frame(ApiKey::Produce, version, &r),
            "produce",
        );
    }
    for (name, compression) in [
        ("batch", BatchCompression::None),
        ("batch-gzip", BatchCompression::Gzip),
        ("batch-snappy", BatchCompression::Snappy),
        ("batch-lz4", BatchCompression::Lz4),
        ("batch-zstd", BatchCompression::Zstd),
    ] {
        let mut v = vec![8u8, 0];
        v.extend_from_slice(&kafka_batch(compression));
        write(dir, name, &v);
    }
}

fn mqtt_str(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u16).to_be_bytes());
    v.extend_from_slice(s);
}

fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

fn publish(
    v5: bool,
    qos: u8,
    pkid: u16,
    topic: &str,
    payload: &[u8],
    props: &[(&str, &str)],
) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(&mut b, topic.as_bytes());
    if qos > 0 {
        b.extend_from_slice(&pkid.to_be_bytes());
    }
    if v5 {
        let mut p = Vec::new();
        for (k, val) in props {
            p.push(0x26);
            mqtt_str(&mut p, k.as_bytes());
            mqtt_str(&mut p, val.as_bytes());
        }
        b.push(p.len() as u8);
        b.extend_from_slice(&p);
    }
    b.extend_from_slice(payload);
    mqtt_packet(0x30 | (qos << 1), &b)
}

fn mqtt(dir: &Path) {
    for v5 in [false, true] {
        let name = if v5 { "v5" } else { "v311" };
        let mut stream = Vec::new();
        stream.extend(if v5 {
            mqtt_packet(0x20, &[1, 0, 0])
        } else {
            mqtt_packet(0x20, &[1, 0])
        });
        stream.extend(publish(
            v5,
            1,
            1,
            "sensors/dev-7/temperature",
            b"21.5",
            &[("unit", "C")],
        ));
        stream.extend(publish(v5, 2, 2, "sensors/dev-7/humidity", b"40", &[]));
        stream.extend(publish(v5, 0, 0, "a/b", b"x", &[("k", "v"), ("k", "w")]));
        stream.extend(mqtt_packet(0x62, &[0, 2]));
        // a second delivery of the first, DUP set
        let mut dup = publish(
            v5,
            1,
            1,
            "sensors/dev-7/temperature",
            b"21.5",
            &[("unit", "C")],
        );
        dup[0] |= 0x08;
        stream.extend(dup);
        // flags: bit 0 = MQTT 5, rule PacketId, window 8; max 1 MiB; pieces of 7 bytes
        let mut v = vec![u8::from(v5) | (8 << 3), 16, 6];
        v.extend_from_slice(&stream);
        write(dir, name, &v);
        // A publish over a small maximum (16 << 2 = 64 bytes): skipped as oversized.
        let mut o = vec![u8::from(v5) | (8 << 3), 2, 255];
        o.extend(publish(v5, 1, 9, "sensors/big", &[b'x'; 200], &[]));
        write(dir, &format!("{name}-oversized"), &o);
    }
}

fn plugin_output(dir: &Path) {
    // subject, payload, timestamp, key?, topic?, outputs-1, then outputs
    let mut v = Vec::new();
    mqtt_str_1(&mut v, b"sensors/dev-7/temperature");
    mqtt_str_1(&mut v, b"21.5");
    v.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    v.push(0);
    v.push(0);
    v.push(1);
    // output 1: topic set, key set, value, 1 header, timestamp set
    v.push(1);
    mqtt_str_1(&mut v, b"alerts");
    v.push(1);
    mqtt_str_1(&mut v, b"dev-7");
    mqtt_str_1(&mut v, b"{\"alert\":true}");
    v.push(1);
    mqtt_str_1(&mut v, b"severity");
    mqtt_str_1(&mut v, b"high");
    v.push(1);
    v.extend_from_slice(&1_700_000_000_500u64.to_le_bytes());
    // output 2: nothing set but the value
    v.push(0);
    v.push(0);
    mqtt_str_1(&mut v, b"22");
    v.push(0);
    v.push(0);
    write(dir, "two-outputs", &v);
}

fn mqtt_str_1(v: &mut Vec<u8>, s: &[u8]) {
    v.push(s.len() as u8);
    v.extend_from_slice(s);
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    journal(&root.join("journal"));
    kafka(&root.join("kafka_response"));
    mqtt(&root.join("mqtt_publish"));
    plugin_output(&root.join("plugin_output"));
}
