//! Errors of the model's controls and inspection methods.

/// Errors of the model's controls and inspection methods (protocol operations answer with
/// Kafka error codes instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// No topic of that name.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The topic has fewer partitions.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
    },
    /// `create_topic` for a name already taken.
    #[error("topic {0:?} exists already")]
    TopicExists(String),
    /// A topic needs at least one partition.
    #[error("a topic needs at least one partition, not {0}")]
    InvalidPartitionCount(i32),
    /// `delete_records_before` beyond the log end (Kafka: OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} is beyond the log end offset {log_end}")]
    BeyondLogEnd {
        /// The offset asked for.
        offset: i64,
        /// The log end offset.
        log_end: i64,
    },
    /// A stored batch in a codec this crate reads did not decode.
    #[error("the batch at offset {offset} does not decode: {reason}")]
    Undecodable {
        /// Its base offset.
        offset: i64,
        /// What the decoder said.
        reason: String,
    },
}
