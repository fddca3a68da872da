//! A message kedge cannot store as it is (issue 17): an MQTT 5 PUBLISH with 65,536 user
//! properties, one more header than a journal chunk (and sanity) allows. It must go to the
//! dead-letter topic with the reason, once, and never hold up the messages behind it: before the
//! fix the commit stage retried the failing chunk forever and nothing after it was journaled.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::consume::consume;
use crate::support::kedge::{Kedge, READINGS_ROUTING, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::verdict::read_back;
use crate::support::{free_port, metric};

#[test]
fn a_message_with_too_many_headers_is_dead_lettered_and_the_rest_arrive() {
    let tansu = Tansu::start();
    tansu.create_topic("readings", 3);
    tansu.create_topic("kedge-dead-letter", 1);
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config = pipeline_config(mosquitto.port(), &tansu.bootstrap(), READINGS_ROUTING);
    let mut kedge = Kedge::start(&format!("{config}\n[metrics]\nlisten = \"{metrics}\"\n"));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let good = readings(20, 5);
    let poison = Message {
        topic: "sensors/dev-0/reading".to_owned(),
        payload: b"poison".to_vec().into(),
        user_properties: vec![(String::new(), String::new()); 65_536],
    };
    let mut sent = good[..10].to_vec();
    sent.push(poison);
    sent.extend_from_slice(&good[10..]);
    Publishing::start(mosquitto.port(), sent, None).wait_acked(Duration::from_secs(60));

    let verdict = read_back(
        &tansu.bootstrap(),
        "readings",
        &good,
        Duration::from_secs(60),
    );
    verdict.report("behind a poison message", good.len());
    verdict.assert_exactly_once();
    assert_eq!(verdict.unknown, 0, "the poison message reached the topic");
    assert_eq!(verdict.redeliveries, 0, "messages were journaled twice");

    let dead = consume(
        &tansu.bootstrap(),
        "kedge-dead-letter",
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 1, "dead-lettered: {dead:?}");
    assert_eq!(dead[0].value.as_slice(), b"poison");
    let why = dead[0].header("kedge-error").expect("a kedge-error header");
    assert!(why.contains("65536 headers"), "reason: {why}");
    assert_eq!(
        metric(
            metrics,
            "kedge_records_dead_lettered_total",
            "reason=\"unencodable\""
        ),
        1.0
    );
    assert_eq!(kedge.log_count("journal commit failed"), 0);
    kedge.assert_running();
}
