//! What to do with a batch after the broker answered its Produce partition with an error code.
//!
//! The code is classified only; whether a retried or resequenced batch actually landed (e.g.
//! an `OUT_OF_ORDER_SEQUENCE_NUMBER` right after a lost response, which can mean the previous
//! attempt was written) is for the caller's verify step to find out.

use std::borrow::Cow;

/// The fate of a batch, decided from a Produce partition error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The batch is in the log (`NONE`, or `DUPLICATE_SEQUENCE_NUMBER` meaning "already written").
    Delivered,
    /// A transient condition; send the same bytes again, after refreshing metadata if asked.
    Retry {
        /// The partition's leadership or the topic's existence may have changed.
        refresh_metadata: bool,
    },
    /// The broker lost or rejects our producer state: get a new producer id/epoch and resequence.
    Resequence,
    /// This batch can never be accepted as it is; it must be split, re-encoded or dead-lettered.
    Permanent,
}

/// Kafka's error names (`Errors.java`), indexed by `code + 1` so that index 0 is code -1.
const NAMES: [&str; 135] = [
    "UNKNOWN_SERVER_ERROR",
    "NONE",
    "OFFSET_OUT_OF_RANGE",
    "CORRUPT_MESSAGE",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "INVALID_FETCH_SIZE",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_OR_FOLLOWER",
    "REQUEST_TIMED_OUT",
    "BROKER_NOT_AVAILABLE",
    "REPLICA_NOT_AVAILABLE",
    "MESSAGE_TOO_LARGE",
    "STALE_CONTROLLER_EPOCH",
    "OFFSET_METADATA_TOO_LARGE",
    "NETWORK_EXCEPTION",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "INVALID_TOPIC_EXCEPTION",
    "RECORD_LIST_TOO_LARGE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "INVALID_REQUIRED_ACKS",
    "ILLEGAL_GENERATION",
    "INCONSISTENT_GROUP_PROTOCOL",
    "INVALID_GROUP_ID",
    "UNKNOWN_MEMBER_ID",
    "INVALID_SESSION_TIMEOUT",
    "REBALANCE_IN_PROGRESS",
    "INVALID_COMMIT_OFFSET_SIZE",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "INVALID_TIMESTAMP",
    "UNSUPPORTED_SASL_MECHANISM",
    "ILLEGAL_SASL_STATE",
    "UNSUPPORTED_VERSION",
    "TOPIC_ALREADY_EXISTS",
    "INVALID_PARTITIONS",
    "INVALID_REPLICATION_FACTOR",
    "INVALID_REPLICA_ASSIGNMENT",
    "INVALID_CONFIG",
    "NOT_CONTROLLER",
    "INVALID_REQUEST",
    "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    "POLICY_VIOLATION",
    "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "DUPLICATE_SEQUENCE_NUMBER",
    "INVALID_PRODUCER_EPOCH",
    "INVALID_TXN_STATE",
    "INVALID_PRODUCER_ID_MAPPING",
    "INVALID_TRANSACTION_TIMEOUT",
    "CONCURRENT_TRANSACTIONS",
    "TRANSACTION_COORDINATOR_FENCED",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "SECURITY_DISABLED",
    "OPERATION_NOT_ATTEMPTED",
    "KAFKA_STORAGE_ERROR",
    "LOG_DIR_NOT_FOUND",
    "SASL_AUTHENTICATION_FAILED",
    "UNKNOWN_PRODUCER_ID",
    "REASSIGNMENT_IN_PROGRESS",
    "DELEGATION_TOKEN_AUTH_DISABLED",
    "DELEGATION_TOKEN_NOT_FOUND",
    "DELEGATION_TOKEN_OWNER_MISMATCH",
    "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
    "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    "DELEGATION_TOKEN_EXPIRED",
    "INVALID_PRINCIPAL_TYPE",
    "NON_EMPTY_GROUP",
    "GROUP_ID_NOT_FOUND",
    "FETCH_SESSION_ID_NOT_FOUND",
    "INVALID_FETCH_SESSION_EPOCH",
    "LISTENER_NOT_FOUND",
    "TOPIC_DELETION_DISABLED",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "UNSUPPORTED_COMPRESSION_TYPE",
    "STALE_BROKER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "MEMBER_ID_REQUIRED",
    "PREFERRED_LEADER_NOT_AVAILABLE",
    "GROUP_MAX_SIZE_REACHED",
    "FENCED_INSTANCE_ID",
    "ELIGIBLE_LEADERS_NOT_AVAILABLE",
    "ELECTION_NOT_NEEDED",
    "NO_REASSIGNMENT_IN_PROGRESS",
    "GROUP_SUBSCRIBED_TO_TOPIC",
    "INVALID_RECORD",
    "UNSTABLE_OFFSET_COMMIT",
    "THROTTLING_QUOTA_EXCEEDED",
    "PRODUCER_FENCED",
    "RESOURCE_NOT_FOUND",
    "DUPLICATE_RESOURCE",
    "UNACCEPTABLE_CREDENTIAL",
    "INCONSISTENT_VOTER_SET",
    "INVALID_UPDATE_VERSION",
    "FEATURE_UPDATE_FAILED",
    "PRINCIPAL_DESERIALIZATION_FAILURE",
    "SNAPSHOT_NOT_FOUND",
    "POSITION_OUT_OF_RANGE",
    "UNKNOWN_TOPIC_ID",
    "DUPLICATE_BROKER_REGISTRATION",
    "BROKER_ID_NOT_REGISTERED",
    "INCONSISTENT_TOPIC_ID",
    "INCONSISTENT_CLUSTER_ID",
    "TRANSACTIONAL_ID_NOT_FOUND",
    "FETCH_SESSION_TOPIC_ID_ERROR",
    "INELIGIBLE_REPLICA",
    "NEW_LEADER_ELECTED",
    "OFFSET_MOVED_TO_TIERED_STORAGE",
    "FENCED_MEMBER_EPOCH",
    "UNRELEASED_INSTANCE_ID",
    "UNSUPPORTED_ASSIGNOR",
    "STALE_MEMBER_EPOCH",
    "MISMATCHED_ENDPOINT_TYPE",
    "UNSUPPORTED_ENDPOINT_TYPE",
    "UNKNOWN_CONTROLLER_ID",
    "UNKNOWN_SUBSCRIPTION_ID",
    "TELEMETRY_TOO_LARGE",
    "INVALID_REGISTRATION",
    "TRANSACTION_ABORTABLE",
    "INVALID_RECORD_STATE",
    "SHARE_SESSION_NOT_FOUND",
    "INVALID_SHARE_SESSION_EPOCH",
    "FENCED_STATE_EPOCH",
    "INVALID_VOTER_KEY",
    "DUPLICATE_VOTER",
    "VOTER_NOT_FOUND",
    "INVALID_REGULAR_EXPRESSION",
    "REBOOTSTRAP_REQUIRED",
    "STREAMS_INVALID_TOPOLOGY",
    "STREAMS_INVALID_TOPOLOGY_EPOCH",
    "STREAMS_TOPOLOGY_FENCED",
    "SHARE_SESSION_LIMIT_REACHED",
];

/// Kafka's name for an error code (e.g. `NOT_LEADER_OR_FOLLOWER`), or `UNKNOWN(<code>)`.
pub fn error_name(code: i16) -> Cow<'static, str> {
    usize::try_from(i32::from(code) + 1)
        .ok()
        .and_then(|index| NAMES.get(index))
        .map_or_else(
            || Cow::Owned(format!("UNKNOWN({code})")),
            |name| Cow::Borrowed(*name),
        )
}

/// What to do with a batch whose Produce partition response carried `code`.
///
/// Codes a Produce response never carries, and codes newer than this table, are treated as
/// `Retry { refresh_metadata: true }`: an error we do not understand must never make kedge drop
/// data, and a metadata refresh is the cheapest way to notice whatever changed. The caller's
/// retry budget and backoff bound the cost of being wrong.
pub fn classify_produce_error(code: i16) -> Disposition {
    use Disposition::{Delivered, Permanent, Resequence, Retry};
    match code {
        0 => Delivered,
        // The broker found this exact (producer id, epoch, sequence range) among the last batches
        // it wrote, so our data is in the log; old Kafka and tansu answer a retried duplicate so.
        46 => Delivered,

        // Leadership, partition existence or replica placement changed: these are Java's
        // `InvalidMetadataException`s, after which its Sender requests a metadata update.
        // NETWORK_EXCEPTION (13) and KAFKA_STORAGE_ERROR (56, an offline log dir moves the
        // leader) are in that family too, so they refresh as well.
        3 | 5 | 6 | 9 | 13 | 56 | 74 | 100 | 103 => Retry {
            refresh_metadata: true,
        },
        // BROKER_NOT_AVAILABLE (8), LISTENER_NOT_FOUND (72), OFFSET_NOT_AVAILABLE (78),
        // PREFERRED/ELIGIBLE_LEADERS_NOT_AVAILABLE (80, 83): a broker or leader is in flux.
        8 | 72 | 78 | 80 | 83 => Retry {
            refresh_metadata: true,
        },

        // Transient on the same leader: a resend of the same bytes with the same sequence is
        // safe because the broker deduplicates it. NOT_ENOUGH_REPLICAS_AFTER_APPEND (20) means
        // the leader did write the batch; the resend will come back as a duplicate.
        // UNKNOWN_LEADER_EPOCH (75): the broker is behind us, and Java's docs say "clients need
        // not refresh metadata before retrying". OPERATION_NOT_ATTEMPTED (55): another
        // partition of the request failed first.
        7 | 14 | 15 | 16 | 19 | 20 | 51 | 55 | 75 | 89 => Retry {
            refresh_metadata: false,
        },

        // The broker has no usable state for our producer id / epoch, or a newer one fenced us:
        // only a new InitProducerId and resequenced batches get us going again.
        // INVALID_TXN_STATE (48): the broker thinks our producer id is transactional.
        45 | 47 | 48 | 49 | 59 | 90 => Resequence,

        // The batch (or our right to write it) is rejected deterministically: resending the same
        // bytes gets the same answer. MESSAGE_TOO_LARGE (10) and RECORD_LIST_TOO_LARGE (18) may
        // still succeed if the caller splits the batch; UNSUPPORTED_COMPRESSION_TYPE (76) if it
        // re-encodes without compression. CORRUPT_MESSAGE (2) is retriable in Java (a CRC hit in
        // transit), but kedge verifies its own deterministic bytes before sending and TCP/TLS
        // protect transit, so what remains is content the broker will always refuse (older
        // brokers use it for e.g. a null key on a compacted topic).
        // INVALID_REQUEST (42): the broker could not accept the request as written.
        2 | 10 | 17 | 18 | 21 | 29 | 31 | 32 | 42 | 43 | 44 | 53 | 76 | 87 => Permanent,

        // Everything else, including UNKNOWN_SERVER_ERROR (-1, an unexpected exception on the
        // broker) and codes that only other APIs return: see the function docs.
        _ => Retry {
            refresh_metadata: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::error::ResponseError;

    const REFRESH: Disposition = Disposition::Retry {
        refresh_metadata: true,
    };
    const RETRY: Disposition = Disposition::Retry {
        refresh_metadata: false,
    };
    const DELIVERED: Disposition = Disposition::Delivered;
    const RESEQ: Disposition = Disposition::Resequence;
    const PERM: Disposition = Disposition::Permanent;

    /// Every code Kafka defines (up to 4.1), with the disposition kedge must give it.
    const EXPECTED: [(i16, Disposition); 135] = [
        (-1, REFRESH),   // UNKNOWN_SERVER_ERROR
        (0, DELIVERED),  // NONE
        (1, REFRESH),    // OFFSET_OUT_OF_RANGE (fetch only)
        (2, PERM),       // CORRUPT_MESSAGE
        (3, REFRESH),    // UNKNOWN_TOPIC_OR_PARTITION
        (4, REFRESH),    // INVALID_FETCH_SIZE (fetch only)
        (5, REFRESH),    // LEADER_NOT_AVAILABLE
        (6, REFRESH),    // NOT_LEADER_OR_FOLLOWER
        (7, RETRY),      // REQUEST_TIMED_OUT
        (8, REFRESH),    // BROKER_NOT_AVAILABLE
        (9, REFRESH),    // REPLICA_NOT_AVAILABLE
        (10, PERM),      // MESSAGE_TOO_LARGE
        (11, REFRESH),   // STALE_CONTROLLER_EPOCH
        (12, REFRESH),   // OFFSET_METADATA_TOO_LARGE
        (13, REFRESH),   // NETWORK_EXCEPTION
        (14, RETRY),     // COORDINATOR_LOAD_IN_PROGRESS
        (15, RETRY),     // COORDINATOR_NOT_AVAILABLE
        (16, RETRY),     // NOT_COORDINATOR
        (17, PERM),      // INVALID_TOPIC_EXCEPTION
        (18, PERM),      // RECORD_LIST_TOO_LARGE
        (19, RETRY),     // NOT_ENOUGH_REPLICAS
        (20, RETRY),     // NOT_ENOUGH_REPLICAS_AFTER_APPEND
        (21, PERM),      // INVALID_REQUIRED_ACKS
        (22, REFRESH),   // ILLEGAL_GENERATION
        (23, REFRESH),   // INCONSISTENT_GROUP_PROTOCOL
        (24, REFRESH),   // INVALID_GROUP_ID
        (25, REFRESH),   // UNKNOWN_MEMBER_ID
        (26, REFRESH),   // INVALID_SESSION_TIMEOUT
        (27, REFRESH),   // REBALANCE_IN_PROGRESS
        (28, REFRESH),   // INVALID_COMMIT_OFFSET_SIZE
        (29, PERM),      // TOPIC_AUTHORIZATION_FAILED
        (30, REFRESH),   // GROUP_AUTHORIZATION_FAILED
        (31, PERM),      // CLUSTER_AUTHORIZATION_FAILED
        (32, PERM),      // INVALID_TIMESTAMP
        (33, REFRESH),   // UNSUPPORTED_SASL_MECHANISM
        (34, REFRESH),   // ILLEGAL_SASL_STATE
        (35, REFRESH),   // UNSUPPORTED_VERSION
        (36, REFRESH),   // TOPIC_ALREADY_EXISTS
        (37, REFRESH),   // INVALID_PARTITIONS
        (38, REFRESH),   // INVALID_REPLICATION_FACTOR
        (39, REFRESH),   // INVALID_REPLICA_ASSIGNMENT
        (40, REFRESH),   // INVALID_CONFIG
        (41, REFRESH),   // NOT_CONTROLLER
        (42, PERM),      // INVALID_REQUEST
        (43, PERM),      // UNSUPPORTED_FOR_MESSAGE_FORMAT
        (44, PERM),      // POLICY_VIOLATION
        (45, RESEQ),     // OUT_OF_ORDER_SEQUENCE_NUMBER
        (46, DELIVERED), // DUPLICATE_SEQUENCE_NUMBER
        (47, RESEQ),     // INVALID_PRODUCER_EPOCH
        (48, RESEQ),     // INVALID_TXN_STATE
        (49, RESEQ),     // INVALID_PRODUCER_ID_MAPPING
        (50, REFRESH),   // INVALID_TRANSACTION_TIMEOUT
        (51, RETRY),     // CONCURRENT_TRANSACTIONS
        (52, REFRESH),   // TRANSACTION_COORDINATOR_FENCED
        (53, PERM),      // TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        (54, REFRESH),   // SECURITY_DISABLED
        (55, RETRY),     // OPERATION_NOT_ATTEMPTED
        (56, REFRESH),   // KAFKA_STORAGE_ERROR
        (57, REFRESH),   // LOG_DIR_NOT_FOUND
        (58, REFRESH),   // SASL_AUTHENTICATION_FAILED
        (59, RESEQ),     // UNKNOWN_PRODUCER_ID
        (60, REFRESH),   // REASSIGNMENT_IN_PROGRESS
        (61, REFRESH),   // DELEGATION_TOKEN_AUTH_DISABLED
        (62, REFRESH),   // DELEGATION_TOKEN_NOT_FOUND
        (63, REFRESH),   // DELEGATION_TOKEN_OWNER_MISMATCH
        (64, REFRESH),   // DELEGATION_TOKEN_REQUEST_NOT_ALLOWED
        (65, REFRESH),   // DELEGATION_TOKEN_AUTHORIZATION_FAILED
        (66, REFRESH),   // DELEGATION_TOKEN_EXPIRED
        (67, REFRESH),   // INVALID_PRINCIPAL_TYPE
        (68, REFRESH),   // NON_EMPTY_GROUP
        (69, REFRESH),   // GROUP_ID_NOT_FOUND
        (70, REFRESH),   // FETCH_SESSION_ID_NOT_FOUND
        (71, REFRESH),   // INVALID_FETCH_SESSION_EPOCH
        (72, REFRESH),   // LISTENER_NOT_FOUND
        (73, REFRESH),   // TOPIC_DELETION_DISABLED
        (74, REFRESH),   // FENCED_LEADER_EPOCH
        (75, RETRY),     // UNKNOWN_LEADER_EPOCH
        (76, PERM),      // UNSUPPORTED_COMPRESSION_TYPE
        (77, REFRESH),   // STALE_BROKER_EPOCH
        (78, REFRESH),   // OFFSET_NOT_AVAILABLE
        (79, REFRESH),   // MEMBER_ID_REQUIRED
        (80, REFRESH),   // PREFERRED_LEADER_NOT_AVAILABLE
        (81, REFRESH),   // GROUP_MAX_SIZE_REACHED
        (82, REFRESH),   // FENCED_INSTANCE_ID
        (83, REFRESH),   // ELIGIBLE_LEADERS_NOT_AVAILABLE
        (84, REFRESH),   // ELECTION_NOT_NEEDED
        (85, REFRESH),   // NO_REASSIGNMENT_IN_PROGRESS
        (86, REFRESH),   // GROUP_SUBSCRIBED_TO_TOPIC
        (87, PERM),      // INVALID_RECORD
        (88, REFRESH),   // UNSTABLE_OFFSET_COMMIT
        (89, RETRY),     // THROTTLING_QUOTA_EXCEEDED
        (90, RESEQ),     // PRODUCER_FENCED
        (91, REFRESH),   // RESOURCE_NOT_FOUND
        (92, REFRESH),   // DUPLICATE_RESOURCE
        (93, REFRESH),   // UNACCEPTABLE_CREDENTIAL
        (94, REFRESH),   // INCONSISTENT_VOTER_SET
        (95, REFRESH),   // INVALID_UPDATE_VERSION
        (96, REFRESH),   // FEATURE_UPDATE_FAILED
        (97, REFRESH),   // PRINCIPAL_DESERIALIZATION_FAILURE
        (98, REFRESH),   // SNAPSHOT_NOT_FOUND
        (99, REFRESH),   // POSITION_OUT_OF_RANGE
        (100, REFRESH),  // UNKNOWN_TOPIC_ID
        (101, REFRESH),  // DUPLICATE_BROKER_REGISTRATION
        (102, REFRESH),  // BROKER_ID_NOT_REGISTERED
        (103, REFRESH),  // INCONSISTENT_TOPIC_ID
        (104, REFRESH),  // INCONSISTENT_CLUSTER_ID
        (105, REFRESH),  // TRANSACTIONAL_ID_NOT_FOUND
        (106, REFRESH),  // FETCH_SESSION_TOPIC_ID_ERROR
        (107, REFRESH),  // INELIGIBLE_REPLICA
        (108, REFRESH),  // NEW_LEADER_ELECTED
        (109, REFRESH),  // OFFSET_MOVED_TO_TIERED_STORAGE
        (110, REFRESH),  // FENCED_MEMBER_EPOCH
        (111, REFRESH),  // UNRELEASED_INSTANCE_ID
        (112, REFRESH),  // UNSUPPORTED_ASSIGNOR
        (113, REFRESH),  // STALE_MEMBER_EPOCH
        (114, REFRESH),  // MISMATCHED_ENDPOINT_TYPE
        (115, REFRESH),  // UNSUPPORTED_ENDPOINT_TYPE
        (116, REFRESH),  // UNKNOWN_CONTROLLER_ID
        (117, REFRESH),  // UNKNOWN_SUBSCRIPTION_ID
        (118, REFRESH),  // TELEMETRY_TOO_LARGE
        (119, REFRESH),  // INVALID_REGISTRATION
        (120, REFRESH),  // TRANSACTION_ABORTABLE (transactional producers only)
        (121, REFRESH),  // INVALID_RECORD_STATE
        (122, REFRESH),  // SHARE_SESSION_NOT_FOUND
        (123, REFRESH),  // INVALID_SHARE_SESSION_EPOCH
        (124, REFRESH),  // FENCED_STATE_EPOCH
        (125, REFRESH),  // INVALID_VOTER_KEY
        (126, REFRESH),  // DUPLICATE_VOTER
        (127, REFRESH),  // VOTER_NOT_FOUND
        (128, REFRESH),  // INVALID_REGULAR_EXPRESSION
        (129, REFRESH),  // REBOOTSTRAP_REQUIRED
        (130, REFRESH),  // STREAMS_INVALID_TOPOLOGY
        (131, REFRESH),  // STREAMS_INVALID_TOPOLOGY_EPOCH
        (132, REFRESH),  // STREAMS_TOPOLOGY_FENCED
        (133, REFRESH),  // SHARE_SESSION_LIMIT_REACHED
    ];

    #[test]
    fn every_defined_code_has_its_disposition() {
        for (i, &(code, expected)) in EXPECTED.iter().enumerate() {
            assert_eq!(i32::from(code), i as i32 - 1, "table is contiguous");
            assert_eq!(
                classify_produce_error(code),
                expected,
                "{code} {}",
                error_name(code)
            );
        }
    }

    #[test]
    fn unknown_codes_retry_with_refresh() {
        for code in [134, 200, 1000, i16::MAX, -2, i16::MIN] {
            assert_eq!(classify_produce_error(code), REFRESH, "{code}");
        }
    }

    #[test]
    fn names_agree_with_kafka_protocol() {
        assert_eq!(error_name(0), "NONE");
        for code in (-1..=133).filter(|&c| c != 0) {
            let camel = ResponseError::try_from_code(code)
                .expect("non-zero codes are errors")
                .to_string();
            let mut screaming = String::new();
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    screaming.push('_');
                }
                screaming.push(ch.to_ascii_uppercase());
            }
            assert_eq!(error_name(code), screaming.as_str(), "{code}");
        }
    }

    #[test]
    fn names_for_examples_and_unknown_codes() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(1234), "UNKNOWN(1234)");
        assert_eq!(error_name(-2), "UNKNOWN(-2)");
        assert_eq!(error_name(i16::MIN), "UNKNOWN(-32768)");
        assert_eq!(error_name(134), "UNKNOWN(134)");
    }
}
