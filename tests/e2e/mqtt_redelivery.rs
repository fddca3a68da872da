//! The MQTT hop, packet by packet, against a scripted broker (support::scripted_mqtt) and tansu:
//! what kedge journals when a broker resends, reuses a packet id at once, releases a QoS 2 id
//! after a crash, or sends a message over the size limit. Each case is one a real broker cannot
//! be made to produce on purpose; the README's table of cases comes from these tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::consume::consume;
use crate::support::kedge::{Kedge, READINGS_ROUTING, pipeline_config};
use crate::support::scripted_mqtt::{Connection, ScriptedBroker, kind, publish};
use crate::support::tansu::Tansu;
use crate::support::{free_port, metric};

const TOPIC: &str = "sensors/dev-1/reading";
const WAIT: Duration = Duration::from_secs(30);

/// kedge on MQTT 3.1.1 at `port`, subscribing at `qos`, with a redelivery window of 5
/// (`receive_maximum` 4), and a metrics listener.
fn config(port: u16, bootstrap: &str, qos: u8, metrics: SocketAddr, extra: &str) -> String {
    let c = pipeline_config(port, bootstrap, READINGS_ROUTING)
        .replace("protocol = \"5\"", "protocol = \"3.1.1\"")
        .replace(
            "receive_maximum = 2048",
            &format!("receive_maximum = 4\nredelivery_window = 5\n{extra}"),
        )
        .replace("qos = 1", &format!("qos = {qos}"));
    format!("{c}\n[metrics]\nlisten = \"{metrics}\"\n")
}

struct Setup {
    tansu: Tansu,
    broker: ScriptedBroker,
    kedge: Kedge,
    metrics: SocketAddr,
}

fn setup(qos: u8, extra: &str) -> (Setup, Connection) {
    let tansu = Tansu::start();
    tansu.create_topic("readings", 1);
    let broker = ScriptedBroker::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let kedge = Kedge::start(&config(
        broker.port(),
        &tansu.bootstrap(),
        qos,
        metrics,
        extra,
    ));
    let (c, subscribed) = broker.accept(false, WAIT);
    assert_eq!(subscribed, Some(qos));
    (
        Setup {
            tansu,
            broker,
            kedge,
            metrics,
        },
        c,
    )
}

impl Setup {
    /// Kills kedge while `c` is open, starts it again, and accepts its resumed session.
    fn crash(&mut self, c: Connection) -> Connection {
        self.kedge.kill9();
        c.drop_connection();
        self.kedge.restart();
        self.broker.accept(true, WAIT).0
    }

    /// The values in `readings`, in order, once `n` are there.
    fn values(&self, n: usize) -> Vec<String> {
        let records = consume(&self.tansu.bootstrap(), "readings", n, WAIT);
        records
            .iter()
            .map(|r| String::from_utf8(r.value.clone()).expect("UTF-8"))
            .collect()
    }

    fn metric(&self, name: &str) -> f64 {
        metric(self.metrics, name, "")
    }
}

/// Sends QoS 1 messages `m0..m{n}` with ids from `first_id` (or all `first_id` when `reuse`),
/// each acknowledged before the next, as a broker with one message in flight does.
fn send_acked(c: &mut Connection, n: u16, first_id: u16, reuse: bool) {
    for i in 0..n {
        let id = if reuse { first_id } else { first_id + i };
        c.publish(TOPIC, format!("m{i}").as_bytes(), 1, id, false);
        c.expect(kind::PUBACK, id, WAIT);
    }
}

/// The broker acknowledged "same" (id 1), gave id 1 at once to a new "same", and kedge died
/// before that one was complete. Sent again with DUP, it must be journaled: kedge has too few
/// messages of this session to know the broker does not reuse ids.
#[test]
fn a_reused_id_with_identical_content_is_not_taken_for_a_resend_early_in_a_session() {
    let (mut s, mut c) = setup(1, "");
    c.publish(TOPIC, b"same", 1, 1, false);
    c.expect(kind::PUBACK, 1, WAIT);
    let second = publish(TOPIC, b"same", 1, 1, false);
    c.write(&second[..second.len() / 2]);
    let mut c = s.crash(c);
    c.publish(TOPIC, b"same", 1, 1, true);
    c.expect(kind::PUBACK, 1, WAIT);
    c.publish(TOPIC, b"end", 1, 2, false);
    c.expect(kind::PUBACK, 2, WAIT);
    assert_eq!(s.values(3), ["same", "same", "end"]);
    assert_eq!(s.metric("kedge_mqtt_redelivered_total"), 0.0);
    assert_eq!(s.metric("kedge_mqtt_dup_journaled_total"), 1.0);
    assert_eq!(
        s.kedge
            .log_count("fewer messages than receive_maximum + 1 since the session began"),
        1
    );
}

/// The same with a full window that shows the broker reusing ids (every message id 1).
#[test]
fn a_broker_seen_reusing_ids_gets_its_resends_journaled() {
    let (mut s, mut c) = setup(1, "");
    send_acked(&mut c, 6, 1, true);
    let second = publish(TOPIC, b"m5", 1, 1, false);
    c.write(&second[..second.len() / 2]);
    let mut c = s.crash(c);
    // A new "m5" under id 1, DUP because its first sending was cut: not the acknowledged one.
    c.publish(TOPIC, b"m5", 1, 1, true);
    c.expect(kind::PUBACK, 1, WAIT);
    assert_eq!(s.values(7), ["m0", "m1", "m2", "m3", "m4", "m5", "m5"]);
    assert_eq!(s.metric("kedge_mqtt_redelivered_total"), 0.0);
    assert_eq!(
        s.kedge
            .log_count("the broker reused a packet id among the recent messages"),
        1
    );
}

/// Ids increase (as mosquitto's do) and fill the window: a resend of a message whose PUBACK
/// the broker never got is acknowledged and not journaled again, across a kill -9.
#[test]
fn a_resend_after_a_crash_is_recognised_once_ids_are_proven() {
    let (mut s, mut c) = setup(1, "");
    send_acked(&mut c, 6, 1, false);
    c.publish(TOPIC, b"x", 1, 7, false);
    // kedge journals x and acknowledges it; the broker "loses" that PUBACK.
    c.expect(kind::PUBACK, 7, WAIT);
    let mut c = s.crash(c);
    c.publish(TOPIC, b"x", 1, 7, true);
    c.expect(kind::PUBACK, 7, WAIT);
    c.publish(TOPIC, b"y", 1, 8, false);
    c.expect(kind::PUBACK, 8, WAIT);
    assert_eq!(s.values(8), ["m0", "m1", "m2", "m3", "m4", "m5", "x", "y"]);
    assert_eq!(s.metric("kedge_mqtt_redelivered_total"), 1.0);
    assert_eq!(s.metric("kedge_mqtt_dup_journaled_total"), 0.0);
    assert_eq!(s.kedge.log_count("\"recognised\":1"), 1);
}

/// QoS 2 across two kills: PUBLISH resent while its id is held, PUBREL after a restart (which
/// unpatched rumqttc answered by dropping the connection, forever), PUBCOMP, and the id reused.
#[test]
fn qos2_holds_the_id_across_crashes_and_completes_a_pubrel_after_a_restart() {
    let (mut s, mut c) = setup(2, "");
    c.publish(TOPIC, b"q", 2, 9, false);
    c.expect(kind::PUBREC, 9, WAIT);
    let mut c = s.crash(c);
    // The broker did not get the PUBREC: it resends the PUBLISH, with DUP.
    c.publish(TOPIC, b"q", 2, 9, true);
    c.expect(kind::PUBREC, 9, WAIT);
    c.pubrel(9);
    c.expect(kind::PUBCOMP, 9, WAIT);
    let mut c = s.crash(c);
    // The broker did not get the PUBCOMP: PUBREL again, on a kedge that released the id.
    c.pubrel(9);
    c.expect(kind::PUBCOMP, 9, WAIT);
    // The id is free: a new message may use it, and is journaled.
    c.publish(TOPIC, b"r", 2, 9, false);
    c.expect(kind::PUBREC, 9, WAIT);
    c.pubrel(9);
    c.expect(kind::PUBCOMP, 9, WAIT);
    assert_eq!(s.values(2), ["q", "r"]);
    assert_eq!(
        s.metric("kedge_mqtt_redelivered_total"),
        0.0,
        "counted by the run before"
    );
    assert_eq!(s.kedge.log_count("\"recognised\":1"), 1);
    assert_eq!(s.kedge.log_count("reconnecting"), 0);
}

/// mosquitto 2.0.11 sends a QoS 2 message again as PUBLISH with DUP after it had sent PUBREL
/// for it, when a connection broke while it resent PUBRELs (ARCHITECTURE.md §9): kedge has
/// released the id, and only its receipts can tell the resend from a new message.
#[test]
fn a_qos2_publish_resent_after_its_pubrel_is_recognised_by_its_receipt() {
    let (mut s, mut c) = setup(2, "");
    // Distinct ids fill the window (receive_maximum 4 + 1), each handshake completed.
    for i in 0..6u16 {
        let id = i + 1;
        c.publish(TOPIC, format!("m{i}").as_bytes(), 2, id, false);
        c.expect(kind::PUBREC, id, WAIT);
        c.pubrel(id);
        c.expect(kind::PUBCOMP, id, WAIT);
    }
    let mut c = s.crash(c);
    // The broker lost the last PUBCOMP and, against the protocol, resends the PUBLISH.
    c.publish(TOPIC, b"m5", 2, 6, true);
    c.expect(kind::PUBREC, 6, WAIT);
    c.pubrel(6);
    c.expect(kind::PUBCOMP, 6, WAIT);
    c.publish(TOPIC, b"new", 2, 7, false);
    c.expect(kind::PUBREC, 7, WAIT);
    c.pubrel(7);
    c.expect(kind::PUBCOMP, 7, WAIT);
    assert_eq!(s.values(7), ["m0", "m1", "m2", "m3", "m4", "m5", "new"]);
    assert_eq!(s.metric("kedge_mqtt_redelivered_total"), 1.0);
    assert_eq!(s.metric("kedge_mqtt_dup_journaled_total"), 0.0);
    assert_eq!(s.kedge.log_count("\"recognised\":1"), 1);
}

/// A message over `mqtt.max_packet_size` on MQTT 3.1.1 (which cannot announce the limit) is
/// skipped and acknowledged; the connection stays up and what follows is journaled.
#[test]
fn an_oversized_message_is_skipped_without_dropping_the_connection() {
    let (s, mut c) = setup(1, "max_packet_size = \"1KiB\"");
    c.publish(TOPIC, &[b'x'; 4096], 1, 1, false);
    c.expect(kind::PUBACK, 1, WAIT);
    c.publish(TOPIC, b"small", 1, 2, false);
    c.expect(kind::PUBACK, 2, WAIT);
    assert_eq!(s.values(1), ["small"]);
    assert_eq!(s.metric("kedge_mqtt_oversized_total"), 1.0);
    assert_eq!(
        s.kedge
            .log_count("message larger than mqtt.max_packet_size skipped"),
        1
    );
    assert_eq!(s.kedge.log_count("reconnecting"), 0);
}
