//! An oversized message from a real broker: rumqttd 0.20 ignores the Maximum Packet Size kedge
//! announces at MQTT 5 and sends a larger message anyway. kedge must skip it (acknowledged,
//! never journaled, counted, logged) and go on receiving: no reconnect, nothing after it lost.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::kedge::{Kedge, READINGS_ROUTING, pipeline_config};
use crate::support::publish::{Message, Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::verdict::read_back;
use crate::support::{free_port, metric};

#[test]
fn a_message_over_max_packet_size_from_rumqttd_is_skipped_and_the_rest_arrive() {
    let tansu = Tansu::start();
    tansu.create_topic("readings", 3);
    let broker = Broker::rumqttd();
    let port = broker.port("5");
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config = pipeline_config(port, &tansu.bootstrap(), READINGS_ROUTING).replace(
        "receive_maximum = 2048",
        "receive_maximum = 2048\nmax_packet_size = \"1KiB\"\nredelivery = \"payload\"",
    );
    let mut kedge = Kedge::start(&format!("{config}\n[metrics]\nlisten = \"{metrics}\"\n"));
    broker.wait_subscribed("sensors/#", Duration::from_secs(30));

    let small = readings(10, 5);
    let big = Message {
        topic: "sensors/dev-0/reading".to_owned(),
        payload: vec![b'x'; 4096].into(),
        user_properties: Vec::new(),
    };
    let mut sent = small[..5].to_vec();
    sent.push(big);
    sent.extend_from_slice(&small[5..]);
    Publishing::start(port, sent, None).wait_acked(Duration::from_secs(30));

    let verdict = read_back(
        &tansu.bootstrap(),
        "readings",
        &small,
        Duration::from_secs(60),
    );
    verdict.report("oversized via rumqttd", small.len());
    verdict.assert_exactly_once();
    assert_eq!(verdict.unknown, 0, "the oversized message was journaled");
    assert_eq!(metric(metrics, "kedge_mqtt_oversized_total", ""), 1.0);
    assert_eq!(
        kedge.log_count("message larger than mqtt.max_packet_size skipped"),
        1
    );
    assert_eq!(
        kedge.log_count("reconnecting"),
        0,
        "the connection was dropped"
    );
    kedge.assert_running();
}
