//! MQTT PUBLISH → record (agent/src/source/mqtt.rs, session.rs, agent/src/route.rs), then journaled.
//!
//! The bytes are what the broker sends: decoded by the patched rumqttc codec (MQTT 5 or 3.1.1,
//! with kedge's skipping of oversized publishes), fed in pieces as TCP delivers them. Each packet
//! is handled as kedge's event loop (`event_loop!` in source/mqtt.rs) handles it: PUBLISH →
//! `Session::arrived` → `route::Event` (MQTT 5 user properties become headers) → `Router::route`
//! → `chunk::encode`; PUBREL → `Session::released`; CONNACK → `Session::connected`.
//!
//! Input: byte 0: protocol (bit 0: MQTT 5), session rule, window; byte 1: the maximum packet
//! size; byte 2: the size of the pieces the stream arrives in; then the stream.

#![no_main]

use bytes::{Bytes, BytesMut};
use kedge_queue::inbound::Inbound;
use kedge_wire::record::{Header, Record};
use kedge::route::{Event, Router, Rule};
use kedge::source::session::{self, Arrival, Match, Session, Verdict};
use kedge_fuzz::{Input, commit};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// What kedge's event loop takes from one packet.
enum Got {
    Publish {
        qos: u8,
        pkid: u16,
        dup: bool,
        topic: Bytes,
        payload: Bytes,
        oversized: Option<usize>,
        headers: Vec<Header>,
        /// MQTT 5 subscription identifiers (see the known finding below).
        subscription_ids: usize,
    },
    PubRel(u16),
    ConnAck(bool),
    Other,
}

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
                key_level: Some(3),
            },
            Rule {
                filter: "+/+".into(),
                topic: "pairs".into(),
                key_level: None,
            },
        ],
        None,
        "kedge-dlq".into(),
    )
}

fn v5(codec: &mut rumqttc::v5::mqttbytes::v5::Codec, buf: &mut BytesMut) -> Option<Got> {
    use rumqttc::v5::mqttbytes::v5::Packet;
    let packet = codec.decode(buf).ok()??;
    Some(match packet {
        Packet::Publish(p) => Got::Publish {
            qos: p.qos as u8,
            pkid: p.pkid,
            dup: p.dup,
            // What the event loop turns user properties into (source/mqtt.rs).
            headers: kedge::source::mqtt::user_properties(p.properties.as_ref()),
            subscription_ids: p
                .properties
                .as_ref()
                .map_or(0, |props| props.subscription_identifiers.len()),
            topic: p.topic,
            payload: p.payload,
            oversized: p.oversized,
        },
        Packet::PubRel(r) => Got::PubRel(r.pkid),
        Packet::ConnAck(c) => Got::ConnAck(c.session_present),
        _ => Got::Other,
    })
}

fn v4(codec: &mut rumqttc::mqttbytes::v4::Codec, buf: &mut BytesMut) -> Option<Got> {
    use rumqttc::mqttbytes::v4::Packet;
    let packet = codec.decode(buf).ok()??;
    Some(match packet {
        Packet::Publish(p) => Got::Publish {
            qos: p.qos as u8,
            pkid: p.pkid,
            dup: p.dup,
            headers: Vec::new(),
            subscription_ids: 0,
            topic: Bytes::from(p.topic),
            payload: p.payload,
            oversized: p.oversized,
        },
        Packet::PubRel(r) => Got::PubRel(r.pkid),
        Packet::ConnAck(c) => Got::ConnAck(c.session_present),
        _ => Got::Other,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let mqtt5 = flags & 1 == 1;
    let rule = [Match::PacketId, Match::Payload, Match::Off][usize::from((flags >> 1) % 3)];
    let keep = usize::from(flags >> 3);
    // 16 bytes .. 1 MiB (kedge's default `mqtt.max_packet_size`).
    let max = 16usize << (input.u8() % 17);
    let piece = 1 + usize::from(input.u8());
    let stream = input.rest();

    let mut session = Session::new(rule, keep, Inbound::default());
    let router = router();
    let mut c5 = rumqttc::v5::mqttbytes::v5::Codec::new(Some(max as u32), None);
    let mut c4 = rumqttc::mqttbytes::v4::Codec::new(max, max);
    let mut buf = BytesMut::new();
    let mut records: Vec<Record> = Vec::new();
    for part in stream.chunks(piece) {
        buf.extend_from_slice(part);
        loop {
            let got = if mqtt5 {
                v5(&mut c5, &mut buf)
            } else {
                v4(&mut c4, &mut buf)
            };
            let Some(got) = got else { break };
            match got {
                Got::Publish {
                    qos,
                    pkid,
                    dup,
                    topic,
                    payload,
                    oversized,
                    headers,
                    subscription_ids,
                } => {
                    assert!(qos <= 2);
                    // rumqttc once counted a Subscription Identifier's property byte twice and
                    // handed the unread properties to the payload (fuzz/README.md, finding 4).
                    assert!(
                        oversized.is_none() || payload.is_empty(),
                        "an oversized publish has no payload ({subscription_ids} subscription ids)"
                    );
                    let size = oversized.map(|n| (n as u64).to_be_bytes());
                    let arrival = Arrival {
                        pkid,
                        qos,
                        dup,
                        digest: match (qos, &size) {
                            (0, _) => 0,
                            (_, Some(size)) => session::digest(&topic, size),
                            (_, None) => session::digest(&topic, &payload),
                        },
                    };
                    let _ = session.collides(&arrival);
                    match session.arrived(arrival) {
                        Verdict::Journal(_) if oversized.is_some() => {}
                        Verdict::Journal(_) => {
                            let event = Event::new(
                                String::from_utf8_lossy(&topic).into_owned(),
                                payload,
                                headers,
                                1_700_000_000_000,
                            );
                            let (record, _dead) = router.route(event, 1_700_000_000_000);
                            assert_eq!(
                                record.defect(),
                                None,
                                "a routed record the journal cannot hold"
                            );
                            records.push(record);
                        }
                        Verdict::Redelivered => assert!(qos > 0),
                    }
                }
                Got::PubRel(pkid) => {
                    let _ = session.released(pkid);
                }
                Got::ConnAck(present) => {
                    let _ = session.connected(present);
                }
                Got::Other => {}
            }
        }
    }
    // One commit of everything journaled: an encode error is allowed only for what the chunk
    // format cannot hold (see `unjournalable`).
    commit(0, &records);
});
