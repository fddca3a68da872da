//! What the source counts: events received and acknowledged, and the MQTT session's own.

use std::sync::atomic::{AtomicBool, AtomicU64};

/// The source's counters.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Events received.
    pub received: AtomicU64,
    /// Events acknowledged to the broker after the journal made them durable.
    pub acked: AtomicU64,
    /// Whether the MQTT session is up (for the metrics endpoint).
    pub mqtt_connected: AtomicBool,
    /// CONNACKs received: sessions (re)established since the start.
    pub mqtt_connections: AtomicU64,
    /// MQTT messages recognised as the broker sending again what was already journaled:
    /// acknowledged, not journaled again.
    pub mqtt_redelivered: AtomicU64,
    /// QoS 1/2 messages that arrived with the DUP flag and were journaled: the broker says it
    /// may have sent them before, and kedge could not tell (a possible duplicate).
    pub mqtt_dup_journaled: AtomicU64,
    /// Messages larger than `mqtt.max_packet_size`, skipped (acknowledged, not journaled).
    pub mqtt_oversized: AtomicU64,
    /// New QoS 2 messages under a packet id kedge still held for an earlier one: the broker
    /// had more messages in flight than packet ids, against MQTT.
    pub mqtt_id_collisions: AtomicU64,
}
