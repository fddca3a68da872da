//! Configuration: the TOML file a user writes, validated into typed settings.
//!
//! Every error names the file, line, column and dotted key path, so that a typo on a device
//! in the field can be fixed from one log line.

mod error;
mod locate;
mod secret;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::de::DeTable;

pub use error::ConfigError;
pub use kedge_base::units::{Backoff, ByteSize, HumanDuration, UnitError, parse_duration};
pub use kedge_plugin_host::config::{OnFailure, PluginConfig, PluginDir};
pub use secret::{Secret, SecretError};

/// The largest `kafka.batch_max_bytes` accepted.
pub const MAX_BATCH_BYTES: ByteSize = ByteSize::mib(64);

use kedge_base::de;
use kedge_base::units::{PartialBackoff, deserialize_duration, millis, secs};
use locate::Document;

/// A setting written as one of a fixed set of words. The value is the runtime enum of the
/// subsystem the setting configures, so the config mirrors none of them; `keywords!` lists the
/// words once, and its match makes the compiler check that every value has one.
pub trait Keyword: Copy + 'static {
    /// Each word and the value it stands for, in the order errors list them.
    const WORDS: &'static [(&'static str, Self)];
    /// The word the config file uses for `self`.
    fn word(self) -> &'static str;
}

macro_rules! keywords {
    ($ty:ty { $($word:literal => $value:path),+ $(,)? }) => {
        impl Keyword for $ty {
            const WORDS: &'static [(&'static str, Self)] = &[$(($word, $value)),+];
            fn word(self) -> &'static str {
                match self {
                    $($value => $word),+
                }
            }
        }
    };
}

/// `mqtt.protocol`: the MQTT version spoken to the broker.
pub use crate::source::mqtt::Protocol as MqttProtocol;
/// `mqtt.redelivery`: how a QoS 1 message the broker sends again is told from a new one
/// (ARCHITECTURE.md §9).
pub use crate::source::session::Match as Redelivery;
/// `log.format`.
pub use crate::telemetry::LogFormat;
/// `queue.durability`.
pub use kedge_queue::Sync as Durability;
/// `queue.when_full`.
pub use kedge_queue::budget::FullPolicy as WhenFull;
/// `kafka.compression`: of Kafka record batches.
pub use kedge_wire::batch::BatchCompression as Compression;
/// `kafka.sasl.mechanism`.
pub use kedge_wire::sasl::Mechanism as SaslMechanism;

keywords!(MqttProtocol { "5" => MqttProtocol::V5, "3.1.1" => MqttProtocol::V311 });
keywords!(Redelivery {
    "packet-id" => Redelivery::PacketId,
    "payload" => Redelivery::Payload,
    "off" => Redelivery::Off,
});
keywords!(SaslMechanism {
    "PLAIN" => SaslMechanism::Plain,
    "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
    "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
});
keywords!(Compression { "zstd" => Compression::Zstd, "none" => Compression::None });
keywords!(Durability { "fsync" => Durability::Fsync, "relaxed" => Durability::Relaxed });
keywords!(WhenFull {
    "backpressure" => WhenFull::Backpressure,
    "drop-oldest" => WhenFull::DropOldest,
    "drop-newest" => WhenFull::DropNewest,
});
keywords!(LogFormat { "auto" => LogFormat::Auto, "text" => LogFormat::Text, "json" => LogFormat::Json });

fn keyword<'de, D: Deserializer<'de>, T: Keyword>(d: D) -> Result<T, D::Error> {
    de::keyword(d, T::WORDS)
}

fn default_protocol() -> MqttProtocol {
    MqttProtocol::V5
}

fn default_redelivery() -> Redelivery {
    Redelivery::PacketId
}

fn default_compression() -> Compression {
    Compression::Zstd
}

/// The whole kedge configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and local storage of this device.
    #[serde(default)]
    pub agent: AgentConfig,
    /// The MQTT broker records are read from.
    pub mqtt: MqttConfig,
    /// Which Kafka topic each MQTT topic goes to.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The Kafka cluster records are shipped to.
    pub kafka: KafkaConfig,
    /// The durable on-disk queue between MQTT and Kafka.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The metrics and health listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[[plugin]]`: transform plugins, run in this order.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
}

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 1,
            column: 1,
            key_path: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        match std::str::from_utf8(&bytes) {
            Ok(text) => Self::parse(text, path),
            Err(e) => {
                let valid = bytes
                    .get(..e.valid_up_to())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or("");
                Err(ConfigError::at(
                    path,
                    valid,
                    valid.len(),
                    String::new(),
                    "invalid UTF-8; the config file must be UTF-8 text".to_owned(),
                ))
            }
        }
    }

    /// Warnings about the secrets the config names (`mqtt.password`, `kafka.sasl.password`):
    /// files open to group or others ([`Secret::exposure`]), each prefixed with its key.
    pub fn secret_warnings(&self) -> Vec<String> {
        let secrets = [
            ("mqtt.password", self.mqtt.password.as_ref()),
            (
                "kafka.sasl.password",
                self.kafka.sasl.as_ref().map(|s| &s.password),
            ),
        ];
        secrets
            .into_iter()
            .filter_map(|(key, s)| Some(format!("{key}: {}", s?.exposure()?)))
            .collect()
    }

    /// Parses and validates config `text`; `file` is only used to label errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let (root, syntax_errors) = DeTable::parse_recoverable(text);
        let deserializer = toml::de::Deserializer::from(root.clone());
        let doc = Document::new(root);
        if let Some(err) = syntax_errors.first() {
            return Err(ConfigError::from_syntax(err, &doc, text, file));
        }
        let mut config = Self::deserialize(deserializer)
            .map_err(|err| ConfigError::from_serde(&err, &doc, text, file))?;
        // Plugins usually ship beside the config file, wherever the daemon's working directory is.
        let base = file.parent().unwrap_or(Path::new(""));
        for plugin in &mut config.plugins {
            if plugin.path.is_relative() {
                plugin.path = base.join(&plugin.path);
            }
        }
        validate::validate(&config).map_err(|invalid| {
            let span = doc.locate(&invalid.path);
            ConfigError::at(file, text, span.start, invalid.path, invalid.message)
        })?;
        Ok(config)
    }
}

/// `[agent]`: identity and local storage of this device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Identifies this device in record headers and the default MQTT client id.
    pub device_id: String,
    /// Where kedge keeps its state.
    pub data_dir: PathBuf,
    /// How long a graceful shutdown may take before kedge exits anyway.
    #[serde(deserialize_with = "deserialize_duration")]
    pub shutdown_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            device_id: hostname_device_id(),
            data_dir: PathBuf::from("/var/lib/kedge"),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The machine's hostname, made into a valid device id: the default `agent.device_id`.
pub fn hostname_device_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let raw = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    sanitize_device_id(&raw)
}

fn sanitize_device_id(raw: &str) -> String {
    let id: String = raw
        .chars()
        .map(|c| {
            if kedge_wire::record::is_name_char(c) {
                c
            } else {
                '-'
            }
        })
        .take(validate::DEVICE_ID_MAX)
        .collect();
    if id.is_empty() {
        "kedge".to_owned()
    } else {
        id
    }
}

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
    /// How many unacknowledged QoS 1 and 2 messages the broker may send ahead (MQTT 5); also
    /// the window in which QoS 1 redeliveries are recognised.
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

/// `[mqtt.tls]` and `[kafka.tls]`: TLS to a broker.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// CA bundle to verify the broker; `None` uses the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS; requires `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// Client private key for mutual TLS; requires `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Name to verify the broker certificate against; defaults to the broker's host.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// The configured server name, or the broker `host`.
    pub fn effective_server_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }
}

/// `[routing]`: which Kafka topic each MQTT topic goes to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Topic for records no rule matches; `None` sends them to the dead-letter topic.
    pub default_topic: Option<String>,
    /// Topic for records that cannot be routed.
    pub dead_letter_topic: String,
    /// Routing rules, `[[routing.rules]]`.
    pub rules: Vec<RouteRule>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default_topic: None,
            dead_letter_topic: "kedge-dead-letter".to_owned(),
            rules: Vec::new(),
        }
    }
}

/// One `[[routing.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// MQTT topic filter this rule matches.
    pub filter: String,
    /// Kafka topic matching records go to.
    pub topic: String,
    /// 0-based MQTT topic level used as the Kafka record key.
    #[serde(default)]
    pub key_level: Option<usize>,
}

/// `[kafka]`: the cluster records are shipped to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers as `host:port`.
    pub bootstrap: Vec<String>,
    /// Kafka client id sent with every request.
    #[serde(default = "default_kafka_client_id")]
    pub client_id: String,
    /// Batch compression.
    #[serde(default = "default_compression", deserialize_with = "keyword")]
    pub compression: Compression,
    /// How long to wait for more records before sending a batch.
    #[serde(default = "millis::<5>", deserialize_with = "deserialize_duration")]
    pub linger: Duration,
    /// Most records in one batch.
    #[serde(
        default = "default_batch_max_records",
        deserialize_with = "de::int::<_, u32, 1, 1_000_000>"
    )]
    pub batch_max_records: u32,
    /// Largest batch, 1 KiB to [`MAX_BATCH_BYTES`].
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: ByteSize,
    /// Batches in flight per partition; at most 5, the broker's idempotence window.
    #[serde(
        default = "default_max_in_flight",
        deserialize_with = "de::int::<_, u8, 1, 5>"
    )]
    pub max_in_flight: u8,
    /// Timeout for establishing a broker connection.
    #[serde(default = "secs::<10>", deserialize_with = "deserialize_duration")]
    pub connect_timeout: Duration,
    /// Timeout for one request.
    #[serde(default = "secs::<30>", deserialize_with = "deserialize_duration")]
    pub request_timeout: Duration,
    /// Delay between retries of failed requests.
    #[serde(default = "kafka_retry_default", deserialize_with = "kafka_retry")]
    pub retry_backoff: Backoff,
    /// How often cluster metadata is refreshed.
    #[serde(default = "secs::<300>", deserialize_with = "deserialize_duration")]
    pub metadata_refresh: Duration,
    /// TLS to every broker; present means TLS is used.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// SASL authentication; present means every connection authenticates.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
}

/// `[kafka.sasl]`: credentials for SASL authentication.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// The SASL mechanism.
    #[serde(deserialize_with = "keyword")]
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password: inline, `{ env = "..." }` or `{ file = "..." }`.
    pub password: Secret,
    /// PLAIN sends the password as it is: without `[kafka.tls]`, anyone on the path reads it.
    /// Refused unless this is set (a test broker, a network that is already encrypted).
    #[serde(default)]
    pub allow_plaintext: bool,
}

fn default_kafka_client_id() -> String {
    "kedge".to_owned()
}

fn default_batch_max_records() -> u32 {
    10_000
}

fn default_batch_max_bytes() -> ByteSize {
    ByteSize::mib(1)
}

fn default_max_in_flight() -> u8 {
    5
}

/// `[queue]`: the durable on-disk queue between MQTT and Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue directory; see [`QueueConfig::effective_dir`].
    pub dir: Option<PathBuf>,
    /// How long to gather records before one write + flush + fdatasync.
    #[serde(deserialize_with = "deserialize_duration")]
    pub commit_window: Duration,
    /// Most records in one group commit.
    pub commit_max_records: usize,
    /// Most bytes in one group commit.
    pub commit_max_bytes: ByteSize,
    /// sled page cache size.
    pub cache: ByteSize,
    /// Whether a commit waits for the disk.
    #[serde(deserialize_with = "keyword")]
    pub durability: Durability,
    /// Most bytes the queue may hold; `None`: half of the space free at start, minus `min_free`.
    pub max_bytes: Option<ByteSize>,
    /// Free space on the queue's filesystem below which the queue counts as full.
    pub min_free: ByteSize,
    /// What a full queue does with new records.
    #[serde(deserialize_with = "keyword")]
    pub when_full: WhenFull,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            dir: None,
            commit_window: Duration::from_millis(5),
            commit_max_records: 4096,
            commit_max_bytes: ByteSize::mib(1),
            cache: ByteSize::mib(8),
            durability: Durability::Fsync,
            max_bytes: None,
            min_free: ByteSize::mib(64),
            when_full: WhenFull::Backpressure,
        }
    }
}

impl QueueConfig {
    /// The configured directory, or `{agent.data_dir}/queue`.
    pub fn effective_dir(&self, agent: &AgentConfig) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.clone(),
            None => agent.data_dir.join("queue"),
        }
    }
}

/// `[metrics]`: Prometheus metrics and health checks over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the listener (`/metrics`, `/health/live`, `/health/ready`); off when absent.
    pub listen: Option<std::net::SocketAddr>,
    /// Allows a `listen` address other machines can reach: the listener has no authentication.
    pub allow_remote: bool,
    /// `/health/ready` fails while the oldest pending record is older than this.
    #[serde(deserialize_with = "deserialize_duration")]
    pub ready_max_pending_age: Duration,
    /// `/health/ready` fails while the queue holds more than this percentage of its budget.
    pub ready_max_queue_percent: u8,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            allow_remote: false,
            ready_max_pending_age: Duration::from_secs(300),
            ready_max_queue_percent: 90,
        }
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`info`) or a tracing filter directive (`info,kedge=debug`).
    pub level: String,
    /// Output format.
    #[serde(deserialize_with = "keyword")]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

fn mqtt_reconnect_default() -> Backoff {
    Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(30),
    }
}

fn kafka_retry_default() -> Backoff {
    Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
    }
}

fn mqtt_reconnect<'de, D: Deserializer<'de>>(d: D) -> Result<Backoff, D::Error> {
    PartialBackoff::deserialize(d).map(|b| b.or(mqtt_reconnect_default()))
}

fn kafka_retry<'de, D: Deserializer<'de>>(d: D) -> Result<Backoff, D::Error> {
    PartialBackoff::deserialize(d).map(|b| b.or(kafka_retry_default()))
}
