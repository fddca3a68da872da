//! kedge: an edge agent that moves sensor events from MQTT through a durable queue to Kafka.

pub mod audit;
pub mod backoff;
pub mod check;
pub mod commit;
pub mod config;
pub mod deadline;
pub mod delivery;
pub mod dispatcher;
pub mod kafka;
pub mod ops;
pub mod pipeline;
pub mod queue;
pub mod record;
pub mod route;
pub mod source;
pub mod telemetry;
#[cfg(test)]
mod test_heap;
pub mod tls;
pub mod transform;
