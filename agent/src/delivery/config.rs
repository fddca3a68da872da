//! `[kafka]` in the config file: the cluster delivery ships records to. Defined beside the
//! delivery stage; `config` embeds it and `kedge check` validates it with the rest of the file.

use std::time::Duration;

use kedge_base::de;
use kedge_base::units::{Backoff, ByteSize, PartialBackoff, deserialize_duration, millis, secs};
use serde::{Deserialize, Deserializer};

use crate::config::{Compression, SaslMechanism, Secret, TlsConfig, keyword};

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

fn kafka_retry_default() -> Backoff {
    Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
    }
}

fn kafka_retry<'de, D: Deserializer<'de>>(d: D) -> Result<Backoff, D::Error> {
    PartialBackoff::deserialize(d).map(|b| b.or(kafka_retry_default()))
}
fn default_compression() -> Compression {
    Compression::Zstd
}
