//! End-to-end tests: real mosquitto, real tansu (Kafka protocol), the real kedge binary, and an
//! independent confluent-kafka consumer, all on 127.0.0.1 with free ports.
//!
//! Peers come from `scripts/install-peers.sh` (`<repo>/.peers`, or `$KEDGE_PEERS_DIR`).

mod audit;
mod check;
mod codecs;
mod config_errors;
mod crash_loop;
mod crash_restart;
mod disk_full;
mod exit_codes;
mod faults;
mod fleet;
mod hostile_broker;
mod kafka_down;
mod kafka_sasl;
mod kafka_tls;
mod mock_cluster;
mod mqtt_exactly_once;
mod mqtt_oversized;
mod mqtt_redelivery;
mod mqtt_tls;
mod ops;
mod permissions;
mod plugin_author;
mod plugin_pipeline;
mod plugins;
mod poison;
mod power_loss;
mod queue_tools;
mod reload;
mod support;
mod walking_path;
