//! An in-memory Kafka broker with Apache Kafka's idempotent-producer semantics, for testing
//! kedge's exactly-once delivery (ARCHITECTURE.md §3) against faults real brokers cannot be made to
//! show on demand.
//!
//! # What it models
//!
//! One broker (node id 1) leading every partition of every topic. Per partition: a log of
//! record batches kept as the producer sent them (base offset and leader epoch stamped in), a
//! log start offset, and per producer id the state Kafka keeps for idempotence (epoch, the
//! last 5 batches' sequence ranges and offsets, last timestamp). Produce follows Kafka's
//! validation order and duplicate/sequence/epoch rules, or tansu 0.6's (see [`Dialect`]); the
//! rules are cited from the Apache Kafka source in `model/producer_state.rs` and
//! `model/validation.rs`. Fetch, ListOffsets, Metadata, InitProducerId, ApiVersions and
//! (switchable) DescribeProducers answer as Kafka does, including where Kafka reports −1
//! rather than a helpful offset.
//!
//! # What it does not model
//!
//! Transactions (transactional batches are refused), replication and leader changes,
//! compaction, segment files, quotas beyond the throttle switch, authentication, consumer
//! groups, fetch sessions, topic ids, timestamp validation against a clock, producer-id
//! snapshots (state survives until a control drops it), LogAppendTime topics, and the bodies of
//! gzip/snappy/lz4 batches (accepted unread).
//!
//! # Two layers
//!
//! - [`model::Cluster`]: pure, synchronous and deterministic; unit and property tests drive it
//!   directly (e.g. behind a fake of kedge's broker client). Its controls reproduce producer-id
//!   expiry, retention, foreign and legacy batches, size limits and denied reads.
//! - [`SimBroker`]: the model behind a Kafka wire-protocol listener on 127.0.0.1, with its own
//!   tokio runtime, for end-to-end tests of the real binary, with fault switches (lost
//!   responses, failed or throttled requests, resets, refused connections) and counters.
//!
//! ```no_run
//! use kafka_sim::{Cluster, SimBroker};
//!
//! let broker = SimBroker::start(Cluster::new().with_topic("readings", 3));
//! let bootstrap = broker.addr().to_string(); // give this to the program under test
//! # let _ = bootstrap;
//! // … while it runs: a producer-id expiry, then a lost acknowledgement …
//! broker.model().forget_all_producers();
//! broker.fail_next_produce(7, true); // REQUEST_TIMED_OUT after appending
//! // … then check what the log holds and what the broker answered.
//! let records = broker.model().records("readings", 0).unwrap();
//! assert_eq!(broker.produce_answers(46), 0); // no DUPLICATE_SEQUENCE_NUMBER
//! # let _ = records;
//! ```

pub mod batch;
pub mod model;
mod server;

pub use model::{Cluster, Dialect, Foreign, ForeignCodec, ModelError};
pub use server::SimBroker;
