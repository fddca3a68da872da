//! `[[plugin]]` in the config file: what the host needs to load and run one plugin. Defined
//! here, beside the code that uses it; the agent's config embeds it and `kedge check` validates
//! it with the rest of the file.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use kedge_base::de;
use kedge_base::units::{
    Backoff, ByteSize, PartialBackoff, deserialize_duration, millis, opt_duration, secs,
};
use serde::{Deserialize, Deserializer};

/// `[[plugin]]`: one WebAssembly transform plugin (ARCHITECTURE.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Names the plugin in logs, metrics and dead-letter reasons.
    pub name: String,
    /// A component (`.wasm`, compiled at start and cached) or an artifact from
    /// `kedge plugin compile` (`.cwasm`); relative paths are relative to the config file.
    pub path: PathBuf,
    /// MQTT topic filters whose events the plugin sees; all events when empty.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Most linear memory per instance.
    #[serde(default = "default_plugin_memory")]
    pub memory: ByteSize,
    /// Longest one call may run before it is interrupted.
    #[serde(default = "millis::<200>", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Most bytes of results one call may return.
    #[serde(default = "default_plugin_max_output")]
    pub max_output: ByteSize,
    /// How often to call the plugin's `tick` (windowed plugins only).
    #[serde(default, deserialize_with = "opt_duration")]
    pub tick: Option<Duration>,
    /// What happens to events while the plugin's circuit is open.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Failed calls within `failure_window` that open the circuit.
    #[serde(
        default = "default_max_failures",
        deserialize_with = "de::int::<_, u32, 1, 1_000_000>"
    )]
    pub max_failures: u32,
    /// The window `max_failures` is counted in.
    #[serde(default = "secs::<60>", deserialize_with = "deserialize_duration")]
    pub failure_window: Duration,
    /// How long the circuit stays open at first, then doubling up to `max`.
    #[serde(
        default = "plugin_circuit_default",
        deserialize_with = "plugin_circuit"
    )]
    pub circuit_backoff: Backoff,
    /// Environment variables passed to the plugin (names; values are read at start).
    #[serde(default)]
    pub env: Vec<String>,
    /// Host directories the plugin may use; none by default.
    #[serde(default)]
    pub dirs: Vec<PluginDir>,
    /// Whether the plugin may open network connections.
    #[serde(default)]
    pub network: bool,
    /// The plugin's own settings, handed to its `init`: strings as they are, other values as
    /// JSON.
    #[serde(default, deserialize_with = "plugin_settings")]
    pub config: Vec<(String, String)>,
}

/// One host directory granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginDir {
    /// The directory on the device.
    pub host: PathBuf,
    /// Where the plugin sees it.
    pub guest: String,
    /// Whether the plugin may write there.
    #[serde(default)]
    pub writable: bool,
}

/// What a failing plugin does to the events it would have seen (`plugin.on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnFailure {
    /// Send them to the dead-letter topic with the reason; `"dead-letter"`.
    #[default]
    DeadLetter,
    /// Stop committing and acknowledging until the plugin works again; `"backpressure"`.
    Backpressure,
}

impl<'de> Deserialize<'de> for OnFailure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::keyword(
            d,
            &[
                ("dead-letter", Self::DeadLetter),
                ("backpressure", Self::Backpressure),
            ],
        )
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DeadLetter => "dead-letter",
            Self::Backpressure => "backpressure",
        })
    }
}

fn default_plugin_memory() -> ByteSize {
    ByteSize::mib(16)
}

fn default_plugin_max_output() -> ByteSize {
    ByteSize::mib(8)
}

fn default_max_failures() -> u32 {
    10
}

fn plugin_circuit_default() -> Backoff {
    Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(300),
    }
}

fn plugin_circuit<'de, D: Deserializer<'de>>(d: D) -> Result<Backoff, D::Error> {
    PartialBackoff::deserialize(d).map(|b| b.or(plugin_circuit_default()))
}

/// The plugin's `config` table as `init` receives it: top-level strings unchanged, every other
/// value (numbers, booleans, dates, arrays, tables) as JSON text.
fn plugin_settings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let table = toml::Table::deserialize(d)?;
    Ok(table
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                other => toml_to_json(other).to_string(),
            };
            (k, text)
        })
        .collect())
}

fn toml_to_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}
