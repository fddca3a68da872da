//! Kafka producer: wire protocol, partitioning, batch building and delivery.

pub mod batch;
pub mod errors;
pub mod partitioner;
pub mod sequence;
