//! `[mqtt]` in the config file: the broker the source reads from. Defined beside the source;
//! `config` embeds it and `kedge check` validates it with the rest of the file.

use std::time::Duration;

use kedge_base::de;
use kedge_base::units::{Backoff, ByteSize, PartialBackoff, deserialize_duration, secs};
use serde::{Deserialize, Deserializer};

use crate::config::{MqttProtocol, Redelivery, Secret, TlsConfig, keyword};

/// `[mqtt]`: the broker records are read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Name of this source, used in logs and record metadata.
    #[serde(default = "default_mqtt_name")]
    pub name: String,
    /// Broker host name or IP address.
    #[serde(default = "default_mqtt_host")]
    pub host: String,
    /// Broker port; see [`MqttConfig::effective_port`].
    #[serde(default, deserialize_with = "de::opt_int::<_, u16, 1, 65535>")]
    pub port: Option<u16>,
    /// MQTT protocol version.
    #[serde(default = "default_protocol", deserialize_with = "keyword")]
    pub protocol: MqttProtocol,
    /// MQTT client id; see [`MqttConfig::effective_client_id`].
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive interval negotiated with the broker.
    #[serde(default = "secs::<30>", deserialize_with = "deserialize_duration")]
    pub keep_alive: Duration,
    /// How long the broker keeps the persistent session while kedge is away (MQTT 5).
    #[serde(default = "secs::<604_800>", deserialize_with = "deserialize_duration")]
    pub session_expiry: Duration,
    /// How many unacknowledged QoS 1 and 2 messages the broker may send ahead (MQTT 5). The
    /// window in which QoS 1 redeliveries are recognised is `redelivery_window`.
    #[serde(
        default = "default_receive_maximum",
        deserialize_with = "de::int::<_, u16, 1, 65535>"
    )]
    pub receive_maximum: u16,
    /// Largest MQTT packet kedge accepts, 1 KiB to 256 MiB; announced to an MQTT 5 broker.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: ByteSize,
    /// How kedge recognises a QoS 1 message the broker sends again after a crash.
    #[serde(default = "default_redelivery", deserialize_with = "keyword")]
    pub redelivery: Redelivery,
    /// How many of the newest QoS 1 and 2 messages a resend is compared with; more than
    /// `receive_maximum`. See [`MqttConfig::effective_redelivery_window`].
    #[serde(default, deserialize_with = "de::opt_int::<_, u16, 2, 65535>")]
    pub redelivery_window: Option<u16>,
    /// User name for authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for authentication; requires `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS settings; present means TLS is used.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Delay between reconnection attempts.
    #[serde(
        default = "mqtt_reconnect_default",
        deserialize_with = "mqtt_reconnect"
    )]
    pub reconnect: Backoff,
    /// Topic filters to subscribe to.
    pub subscriptions: Vec<Subscription>,
}

fn default_mqtt_name() -> String {
    "mqtt".to_owned()
}

fn default_mqtt_host() -> String {
    "127.0.0.1".to_owned()
}

fn default_receive_maximum() -> u16 {
    // At a 5 ms commit window, 2048 messages in flight allow ~400k msg/s before the broker
    // has to wait for acknowledgements.
    2048
}

fn default_max_packet_size() -> ByteSize {
    ByteSize::mib(1)
}

impl MqttConfig {
    /// The configured port, or the MQTT default for plain (1883) or TLS (8883) connections.
    pub fn effective_port(&self) -> u16 {
        match (self.port, &self.tls) {
            (Some(port), _) => port,
            (None, Some(_)) => 8883,
            (None, None) => 1883,
        }
    }

    /// The configured redelivery window, or 65,535 (at least `receive_maximum` + 1). A broker
    /// that honours Receive Maximum resends at most `receive_maximum` messages; mosquitto 2.0.11
    /// does not, and resends every message whose acknowledgement it had not read when the
    /// connection broke: under load tens of thousands (ARCHITECTURE.md §9). Packet ids are 16
    /// bits, so a broker cannot have more than 65,535 unacknowledged.
    pub fn effective_redelivery_window(&self) -> usize {
        let floor = usize::from(self.receive_maximum) + 1;
        self.redelivery_window
            .map_or(usize::from(u16::MAX), usize::from)
            .max(floor)
    }

    /// The configured client id, or `kedge-{device_id}`.
    pub fn effective_client_id(&self, device_id: &str) -> String {
        match &self.client_id {
            Some(id) => id.clone(),
            None => format!("kedge-{device_id}"),
        }
    }
}

/// One `[[mqtt.subscriptions]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// MQTT topic filter, e.g. `sensors/#`.
    pub filter: String,
    /// Requested QoS: 0, 1 or 2.
    #[serde(default = "default_qos", deserialize_with = "de::qos")]
    pub qos: u8,
}

fn default_qos() -> u8 {
    1
}

fn mqtt_reconnect_default() -> Backoff {
    Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(30),
    }
}

fn mqtt_reconnect<'de, D: Deserializer<'de>>(d: D) -> Result<Backoff, D::Error> {
    PartialBackoff::deserialize(d).map(|b| b.or(mqtt_reconnect_default()))
}

fn default_protocol() -> MqttProtocol {
    MqttProtocol::V5
}

fn default_redelivery() -> Redelivery {
    Redelivery::PacketId
}
