//! kedge: an edge agent that moves sensor events from MQTT through a durable queue to Kafka.

pub mod config;
pub mod kafka;
pub mod record;
