//! Kafka producer: wire protocol, partitioning, batch building and delivery.

pub mod partitioner;
pub mod sequence;
