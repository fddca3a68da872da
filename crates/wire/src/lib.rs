//! The Kafka wire protocol as kedge speaks it: connections, API negotiation, SASL/SCRAM,
//! metadata, the RecordBatch codec with kedge's record identity, and partitioning. It depends on
//! nothing else of kedge; what to send when is the agent's delivery stage.

pub mod batch;
pub mod client;
pub mod codec;
pub mod connection;
pub mod errors;
pub mod partitioner;
pub mod record;
pub mod sasl;
pub mod scram;
pub mod sequence;
mod write;

/// Errors talking to Kafka. All of them are retried by the producer; none drops data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KafkaError {
    /// TCP connection failed.
    #[error("cannot connect to Kafka broker {addr}: {reason}")]
    Connect {
        /// Broker address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection broke.
    #[error("connection to Kafka broker {addr} failed: {reason}")]
    Io {
        /// Broker address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection closed before a response arrived.
    #[error("connection to Kafka broker {addr} closed before the response")]
    Disconnected {
        /// Broker address.
        addr: String,
    },
    /// No response within the request timeout.
    #[error("Kafka broker {addr} did not answer within the request timeout")]
    Timeout {
        /// Broker address.
        addr: String,
    },
    /// The broker sent something we cannot use.
    #[error("Kafka broker {addr}: {reason}")]
    Protocol {
        /// Broker address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// SASL authentication failed (wrong credentials, unsupported mechanism, bad server proof).
    #[error("authentication failed for user {user:?} at Kafka broker {addr}: {reason}")]
    Auth {
        /// Broker address.
        addr: String,
        /// The user name (never the password).
        user: String,
        /// Why, with the broker's message when it sent one.
        reason: String,
    },
    /// The broker answered a request with an error code.
    #[error("Kafka broker {addr} answered {what} with {}", errors::error_name(*.code))]
    Broker {
        /// Broker address.
        addr: String,
        /// The request.
        what: &'static str,
        /// Kafka error code.
        code: i16,
    },
}
