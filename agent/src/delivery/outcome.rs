//! What a Produce answer for one batch means for it: appended, not appended, or unknown.
//!
//! The distinction that matters for exactly-once is whether the broker may have written the
//! batch. Only answers that Kafka gives before it appends (validation, leadership checks before
//! the write, sequence and producer-id checks) prove that it did not; every other error, and any
//! code this table does not know, may follow a write (a produce that timed out waiting for
//! replicas, a leader that lost leadership while the batch waited in purgatory, an exception
//! after the append), so the batch is verified against the log before it is sent again. The
//! broker's own duplicate check is never what keeps a resend from being a duplicate: it forgets a
//! producer after `producer.id.expiration.ms`.

/// What one Produce partition answer means for its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The batch is in the log: appended now (`NONE`) or before (`DUPLICATE_SEQUENCE_NUMBER`).
    Appended {
        /// The broker said it had written these exact sequences before.
        duplicate: bool,
    },
    /// Not appended, for a reason that passes (leadership moving, too few replicas): send the
    /// same bytes again after a backoff.
    Rejected {
        /// The partition's leadership or existence may have changed.
        refresh_metadata: bool,
    },
    /// The broker may or may not have written it: find out before sending it again.
    Unknown {
        /// The partition's leadership may have changed.
        refresh_metadata: bool,
    },
    /// Not appended: the batch does not follow the broker's last sequence for our producer id.
    OutOfOrder,
    /// Not appended: the broker no longer knows or accepts our producer id and epoch.
    ProducerGone,
    /// Not appended: larger than the broker or the topic accepts. Split it.
    TooLarge,
    /// Not appended: the broker refuses the content of some record (invalid timestamp, null key
    /// on a compacted topic, a policy). Split it until the refused records stand alone.
    BadRecords,
    /// Not appended: the topic itself is refused (an invalid name); no split helps.
    BadTopic,
    /// Not appended: kedge lacks a permission, or the broker is configured against the request
    /// (compression, message format). An operator can fix it: retry slowly and say so.
    NotAllowed,
}

/// The outcome of Produce partition error `code`.
pub fn classify(code: i16) -> Outcome {
    use Outcome::*;
    match code {
        0 => Appended { duplicate: false },
        // The broker found this exact (producer id, epoch, sequence range) among the last batches
        // it wrote (old Kafka, tansu; newer Kafka answers NONE with the original offset).
        46 => Appended { duplicate: true },

        // Checked before anything is written: the broker does not host the partition (3), has
        // no leader for it (5), too few in-sync replicas (19, unlike 20 which comes after the
        // write), another partition failed first (55), a stale or newer leader epoch (74, 75),
        // or a quota (89).
        3 | 5 | 74 => Rejected {
            refresh_metadata: true,
        },
        19 | 55 | 75 | 89 => Rejected {
            refresh_metadata: false,
        },

        45 => OutOfOrder,
        // INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE, INVALID_PRODUCER_ID_MAPPING,
        // UNKNOWN_PRODUCER_ID, PRODUCER_FENCED.
        47 | 48 | 49 | 59 | 90 => ProducerGone,

        // MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE.
        10 | 18 => TooLarge,
        // CORRUPT_MESSAGE (kedge's bytes are checked before sending, so it is content the
        // broker refuses), INVALID_TIMESTAMP, INVALID_REQUEST, POLICY_VIOLATION, INVALID_RECORD.
        2 | 32 | 42 | 44 | 87 => BadRecords,
        17 => BadTopic,
        // INVALID_REQUIRED_ACKS, TOPIC/CLUSTER/TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        // UNSUPPORTED_VERSION, UNSUPPORTED_FOR_MESSAGE_FORMAT, UNSUPPORTED_COMPRESSION_TYPE.
        21 | 29 | 31 | 35 | 43 | 53 | 76 => NotAllowed,

        // REQUEST_TIMED_OUT and NOT_ENOUGH_REPLICAS_AFTER_APPEND come after the leader wrote the
        // batch; the leader stays.
        7 | 20 => Unknown {
            refresh_metadata: false,
        },
        // Everything else may follow a write too: NOT_LEADER_OR_FOLLOWER from a batch that waited
        // in purgatory while leadership moved, KAFKA_STORAGE_ERROR, UNKNOWN_SERVER_ERROR, and
        // codes newer than this table.
        _ => Unknown {
            refresh_metadata: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kedge_wire::errors::error_name;

    const APPENDED: Outcome = Outcome::Appended { duplicate: false };
    const DUPLICATE: Outcome = Outcome::Appended { duplicate: true };
    const REJECTED: Outcome = Outcome::Rejected {
        refresh_metadata: false,
    };
    const REJECTED_REFRESH: Outcome = Outcome::Rejected {
        refresh_metadata: true,
    };
    const UNKNOWN: Outcome = Outcome::Unknown {
        refresh_metadata: false,
    };
    const UNKNOWN_REFRESH: Outcome = Outcome::Unknown {
        refresh_metadata: true,
    };
    const OUT_OF_ORDER: Outcome = Outcome::OutOfOrder;
    const GONE: Outcome = Outcome::ProducerGone;
    const LARGE: Outcome = Outcome::TooLarge;
    const BAD: Outcome = Outcome::BadRecords;
    const BAD_TOPIC: Outcome = Outcome::BadTopic;
    const NOT_ALLOWED: Outcome = Outcome::NotAllowed;

    /// Every code Kafka defines (up to 4.1), with the outcome kedge must give it.
    const EXPECTED: [(i16, Outcome); 135] = [
        (-1, UNKNOWN_REFRESH),  // UNKNOWN_SERVER_ERROR
        (0, APPENDED),          // NONE
        (1, UNKNOWN_REFRESH),   // OFFSET_OUT_OF_RANGE
        (2, BAD),               // CORRUPT_MESSAGE
        (3, REJECTED_REFRESH),  // UNKNOWN_TOPIC_OR_PARTITION
        (4, UNKNOWN_REFRESH),   // INVALID_FETCH_SIZE
        (5, REJECTED_REFRESH),  // LEADER_NOT_AVAILABLE
        (6, UNKNOWN_REFRESH),   // NOT_LEADER_OR_FOLLOWER
        (7, UNKNOWN),           // REQUEST_TIMED_OUT
        (8, UNKNOWN_REFRESH),   // BROKER_NOT_AVAILABLE
        (9, UNKNOWN_REFRESH),   // REPLICA_NOT_AVAILABLE
        (10, LARGE),            // MESSAGE_TOO_LARGE
        (11, UNKNOWN_REFRESH),  // STALE_CONTROLLER_EPOCH
        (12, UNKNOWN_REFRESH),  // OFFSET_METADATA_TOO_LARGE
        (13, UNKNOWN_REFRESH),  // NETWORK_EXCEPTION
        (14, UNKNOWN_REFRESH),  // COORDINATOR_LOAD_IN_PROGRESS
        (15, UNKNOWN_REFRESH),  // COORDINATOR_NOT_AVAILABLE
        (16, UNKNOWN_REFRESH),  // NOT_COORDINATOR
        (17, BAD_TOPIC),        // INVALID_TOPIC_EXCEPTION
        (18, LARGE),            // RECORD_LIST_TOO_LARGE
        (19, REJECTED),         // NOT_ENOUGH_REPLICAS
        (20, UNKNOWN),          // NOT_ENOUGH_REPLICAS_AFTER_APPEND
        (21, NOT_ALLOWED),      // INVALID_REQUIRED_ACKS
        (22, UNKNOWN_REFRESH),  // ILLEGAL_GENERATION
        (23, UNKNOWN_REFRESH),  // INCONSISTENT_GROUP_PROTOCOL
        (24, UNKNOWN_REFRESH),  // INVALID_GROUP_ID
        (25, UNKNOWN_REFRESH),  // UNKNOWN_MEMBER_ID
        (26, UNKNOWN_REFRESH),  // INVALID_SESSION_TIMEOUT
        (27, UNKNOWN_REFRESH),  // REBALANCE_IN_PROGRESS
        (28, UNKNOWN_REFRESH),  // INVALID_COMMIT_OFFSET_SIZE
        (29, NOT_ALLOWED),      // TOPIC_AUTHORIZATION_FAILED
        (30, UNKNOWN_REFRESH),  // GROUP_AUTHORIZATION_FAILED
        (31, NOT_ALLOWED),      // CLUSTER_AUTHORIZATION_FAILED
        (32, BAD),              // INVALID_TIMESTAMP
        (33, UNKNOWN_REFRESH),  // UNSUPPORTED_SASL_MECHANISM
        (34, UNKNOWN_REFRESH),  // ILLEGAL_SASL_STATE
        (35, NOT_ALLOWED),      // UNSUPPORTED_VERSION
        (36, UNKNOWN_REFRESH),  // TOPIC_ALREADY_EXISTS
        (37, UNKNOWN_REFRESH),  // INVALID_PARTITIONS
        (38, UNKNOWN_REFRESH),  // INVALID_REPLICATION_FACTOR
        (39, UNKNOWN_REFRESH),  // INVALID_REPLICA_ASSIGNMENT
        (40, UNKNOWN_REFRESH),  // INVALID_CONFIG
        (41, UNKNOWN_REFRESH),  // NOT_CONTROLLER
        (42, BAD),              // INVALID_REQUEST
        (43, NOT_ALLOWED),      // UNSUPPORTED_FOR_MESSAGE_FORMAT
        (44, BAD),              // POLICY_VIOLATION
        (45, OUT_OF_ORDER),     // OUT_OF_ORDER_SEQUENCE_NUMBER
        (46, DUPLICATE),        // DUPLICATE_SEQUENCE_NUMBER
        (47, GONE),             // INVALID_PRODUCER_EPOCH
        (48, GONE),             // INVALID_TXN_STATE
        (49, GONE),             // INVALID_PRODUCER_ID_MAPPING
        (50, UNKNOWN_REFRESH),  // INVALID_TRANSACTION_TIMEOUT
        (51, UNKNOWN_REFRESH),  // CONCURRENT_TRANSACTIONS
        (52, UNKNOWN_REFRESH),  // TRANSACTION_COORDINATOR_FENCED
        (53, NOT_ALLOWED),      // TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        (54, UNKNOWN_REFRESH),  // SECURITY_DISABLED
        (55, REJECTED),         // OPERATION_NOT_ATTEMPTED
        (56, UNKNOWN_REFRESH),  // KAFKA_STORAGE_ERROR
        (57, UNKNOWN_REFRESH),  // LOG_DIR_NOT_FOUND
        (58, UNKNOWN_REFRESH),  // SASL_AUTHENTICATION_FAILED
        (59, GONE),             // UNKNOWN_PRODUCER_ID
        (60, UNKNOWN_REFRESH),  // REASSIGNMENT_IN_PROGRESS
        (61, UNKNOWN_REFRESH),  // DELEGATION_TOKEN_AUTH_DISABLED
        (62, UNKNOWN_REFRESH),  // DELEGATION_TOKEN_NOT_FOUND
        (63, UNKNOWN_REFRESH),  // DELEGATION_TOKEN_OWNER_MISMATCH
        (64, UNKNOWN_REFRESH),  // DELEGATION_TOKEN_REQUEST_NOT_ALLOWED
        (65, UNKNOWN_REFRESH),  // DELEGATION_TOKEN_AUTHORIZATION_FAILED
        (66, UNKNOWN_REFRESH),  // DELEGATION_TOKEN_EXPIRED
        (67, UNKNOWN_REFRESH),  // INVALID_PRINCIPAL_TYPE
        (68, UNKNOWN_REFRESH),  // NON_EMPTY_GROUP
        (69, UNKNOWN_REFRESH),  // GROUP_ID_NOT_FOUND
        (70, UNKNOWN_REFRESH),  // FETCH_SESSION_ID_NOT_FOUND
        (71, UNKNOWN_REFRESH),  // INVALID_FETCH_SESSION_EPOCH
        (72, UNKNOWN_REFRESH),  // LISTENER_NOT_FOUND
        (73, UNKNOWN_REFRESH),  // TOPIC_DELETION_DISABLED
        (74, REJECTED_REFRESH), // FENCED_LEADER_EPOCH
        (75, REJECTED),         // UNKNOWN_LEADER_EPOCH
        (76, NOT_ALLOWED),      // UNSUPPORTED_COMPRESSION_TYPE
        (77, UNKNOWN_REFRESH),  // STALE_BROKER_EPOCH
        (78, UNKNOWN_REFRESH),  // OFFSET_NOT_AVAILABLE
        (79, UNKNOWN_REFRESH),  // MEMBER_ID_REQUIRED
        (80, UNKNOWN_REFRESH),  // PREFERRED_LEADER_NOT_AVAILABLE
        (81, UNKNOWN_REFRESH),  // GROUP_MAX_SIZE_REACHED
        (82, UNKNOWN_REFRESH),  // FENCED_INSTANCE_ID
        (83, UNKNOWN_REFRESH),  // ELIGIBLE_LEADERS_NOT_AVAILABLE
        (84, UNKNOWN_REFRESH),  // ELECTION_NOT_NEEDED
        (85, UNKNOWN_REFRESH),  // NO_REASSIGNMENT_IN_PROGRESS
        (86, UNKNOWN_REFRESH),  // GROUP_SUBSCRIBED_TO_TOPIC
        (87, BAD),              // INVALID_RECORD
        (88, UNKNOWN_REFRESH),  // UNSTABLE_OFFSET_COMMIT
        (89, REJECTED),         // THROTTLING_QUOTA_EXCEEDED
        (90, GONE),             // PRODUCER_FENCED
        (91, UNKNOWN_REFRESH),  // RESOURCE_NOT_FOUND
        (92, UNKNOWN_REFRESH),  // DUPLICATE_RESOURCE
        (93, UNKNOWN_REFRESH),  // UNACCEPTABLE_CREDENTIAL
        (94, UNKNOWN_REFRESH),  // INCONSISTENT_VOTER_SET
        (95, UNKNOWN_REFRESH),  // INVALID_UPDATE_VERSION
        (96, UNKNOWN_REFRESH),  // FEATURE_UPDATE_FAILED
        (97, UNKNOWN_REFRESH),  // PRINCIPAL_DESERIALIZATION_FAILURE
        (98, UNKNOWN_REFRESH),  // SNAPSHOT_NOT_FOUND
        (99, UNKNOWN_REFRESH),  // POSITION_OUT_OF_RANGE
        (100, UNKNOWN_REFRESH), // UNKNOWN_TOPIC_ID
        (101, UNKNOWN_REFRESH), // DUPLICATE_BROKER_REGISTRATION
        (102, UNKNOWN_REFRESH), // BROKER_ID_NOT_REGISTERED
        (103, UNKNOWN_REFRESH), // INCONSISTENT_TOPIC_ID
        (104, UNKNOWN_REFRESH), // INCONSISTENT_CLUSTER_ID
        (105, UNKNOWN_REFRESH), // TRANSACTIONAL_ID_NOT_FOUND
        (106, UNKNOWN_REFRESH), // FETCH_SESSION_TOPIC_ID_ERROR
        (107, UNKNOWN_REFRESH), // INELIGIBLE_REPLICA
        (108, UNKNOWN_REFRESH), // NEW_LEADER_ELECTED
        (109, UNKNOWN_REFRESH), // OFFSET_MOVED_TO_TIERED_STORAGE
        (110, UNKNOWN_REFRESH), // FENCED_MEMBER_EPOCH
        (111, UNKNOWN_REFRESH), // UNRELEASED_INSTANCE_ID
        (112, UNKNOWN_REFRESH), // UNSUPPORTED_ASSIGNOR
        (113, UNKNOWN_REFRESH), // STALE_MEMBER_EPOCH
        (114, UNKNOWN_REFRESH), // MISMATCHED_ENDPOINT_TYPE
        (115, UNKNOWN_REFRESH), // UNSUPPORTED_ENDPOINT_TYPE
        (116, UNKNOWN_REFRESH), // UNKNOWN_CONTROLLER_ID
        (117, UNKNOWN_REFRESH), // UNKNOWN_SUBSCRIPTION_ID
        (118, UNKNOWN_REFRESH), // TELEMETRY_TOO_LARGE
        (119, UNKNOWN_REFRESH), // INVALID_REGISTRATION
        (120, UNKNOWN_REFRESH), // TRANSACTION_ABORTABLE
        (121, UNKNOWN_REFRESH), // INVALID_RECORD_STATE
        (122, UNKNOWN_REFRESH), // SHARE_SESSION_NOT_FOUND
        (123, UNKNOWN_REFRESH), // INVALID_SHARE_SESSION_EPOCH
        (124, UNKNOWN_REFRESH), // FENCED_STATE_EPOCH
        (125, UNKNOWN_REFRESH), // INVALID_VOTER_KEY
        (126, UNKNOWN_REFRESH), // DUPLICATE_VOTER
        (127, UNKNOWN_REFRESH), // VOTER_NOT_FOUND
        (128, UNKNOWN_REFRESH), // INVALID_REGULAR_EXPRESSION
        (129, UNKNOWN_REFRESH), // REBOOTSTRAP_REQUIRED
        (130, UNKNOWN_REFRESH), // STREAMS_INVALID_TOPOLOGY
        (131, UNKNOWN_REFRESH), // STREAMS_INVALID_TOPOLOGY_EPOCH
        (132, UNKNOWN_REFRESH), // STREAMS_TOPOLOGY_FENCED
        (133, UNKNOWN_REFRESH), // SHARE_SESSION_LIMIT_REACHED
    ];

    #[test]
    fn every_defined_code_has_its_outcome() {
        for (i, &(code, expected)) in EXPECTED.iter().enumerate() {
            assert_eq!(i32::from(code), i as i32 - 1, "table is contiguous");
            assert_eq!(classify(code), expected, "{code} {}", error_name(code));
        }
    }

    #[test]
    fn codes_newer_than_the_table_are_unknown_outcomes() {
        for code in [134, 200, 1000, i16::MAX, -2, i16::MIN] {
            assert_eq!(classify(code), UNKNOWN_REFRESH, "{code}");
        }
    }
}
