//! Sources of events. MQTT is the one kedge has today.

pub mod mqtt;
pub mod session;
