//! The MQTT broker a test runs against: mosquitto, or rumqttd, the second broker. The walking
//! path and the kill storms run against both, since they differ in what MQTT they keep
//! (README: "MQTT brokers tested").

use std::time::Duration;

use super::mosquitto::Mosquitto;
use super::rumqttd::Rumqttd;

/// A running MQTT broker; stopped when dropped.
pub enum Broker {
    Mosquitto(Mosquitto),
    Rumqttd(Rumqttd),
}

impl Broker {
    /// Starts mosquitto.
    pub fn mosquitto() -> Broker {
        Broker::Mosquitto(Mosquitto::start())
    }

    /// Starts rumqttd.
    pub fn rumqttd() -> Broker {
        Broker::Rumqttd(Rumqttd::start())
    }

    /// The port of its listener for MQTT `protocol` ("5" or "3.1.1") on 127.0.0.1.
    pub fn port(&self, protocol: &str) -> u16 {
        match (self, protocol) {
            (Broker::Mosquitto(m), _) => m.port(),
            (Broker::Rumqttd(r), "3.1.1") => r.port_v311(),
            (Broker::Rumqttd(r), _) => r.port(),
        }
    }

    /// Waits until some client has subscribed to exactly `filter`.
    pub fn wait_subscribed(&self, filter: &str, timeout: Duration) {
        match self {
            Broker::Mosquitto(m) => m.wait_subscribed(filter, timeout),
            Broker::Rumqttd(r) => r.wait_subscribed(filter, timeout),
        }
    }
}
