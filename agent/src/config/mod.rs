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

pub use crate::delivery::config::{KafkaConfig, SaslConfig};
pub use crate::ops::config::MetricsConfig;
pub use crate::route::{RouteRule, RoutingConfig};
pub use crate::source::config::{MqttConfig, Subscription};
pub use crate::telemetry::LogConfig;
pub use crate::tls::TlsConfig;
pub use error::ConfigError;
pub use kedge_base::units::{Backoff, ByteSize, HumanDuration, UnitError, parse_duration};
pub use kedge_plugin_host::config::{OnFailure, PluginConfig, PluginDir};
pub use secret::{Secret, SecretError};

/// The largest `kafka.batch_max_bytes` accepted.
pub const MAX_BATCH_BYTES: ByteSize = ByteSize::mib(64);

use kedge_base::de;
use kedge_base::units::deserialize_duration;
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
keywords!(Compression {
    "zstd" => Compression::Zstd,
    "lz4" => Compression::Lz4,
    "snappy" => Compression::Snappy,
    "gzip" => Compression::Gzip,
    "none" => Compression::None,
});
keywords!(Durability { "fsync" => Durability::Fsync, "relaxed" => Durability::Relaxed });
keywords!(WhenFull {
    "backpressure" => WhenFull::Backpressure,
    "drop-oldest" => WhenFull::DropOldest,
    "drop-newest" => WhenFull::DropNewest,
});
keywords!(LogFormat { "auto" => LogFormat::Auto, "text" => LogFormat::Text, "json" => LogFormat::Json });

pub(crate) fn keyword<'de, D: Deserializer<'de>, T: Keyword>(d: D) -> Result<T, D::Error> {
    de::keyword(d, T::WORDS)
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

/// `[queue]`: the durable on-disk queue between MQTT and Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue directory; see [`QueueConfig::effective_dir`].
    pub dir: Option<PathBuf>,
    /// How long a busy commit stage gathers records before one write + flush + fdatasync; also
    /// the shortest interval between the starts of two syncs (unless a commit limit is reached
    /// or a plugin's tick commits).
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
