//! `[metrics]` in the config file: the HTTP listener of metrics, health and status. Defined
//! beside the listener; `config` embeds it and `kedge check` validates it with the rest.

use std::time::Duration;

use kedge_base::units::deserialize_duration;
use serde::Deserialize;

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
