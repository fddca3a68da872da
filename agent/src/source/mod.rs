//! Sources of events. MQTT is the one kedge has today.

pub mod config;
pub mod mqtt;
pub mod session;
mod stats;

pub use stats::SourceStats;

use kedge_queue::inbound::Change;

use crate::route::Event;

/// What the source passes on, in arrival order: an event, an acknowledgement, a change to
/// what the source received, or several of these.
#[derive(Debug)]
pub struct Incoming<A> {
    /// The event to journal; none for a redelivery of a journaled one, or a release.
    pub event: Option<Event>,
    /// Acknowledgement to release once this and everything before it is durable.
    pub ack: Option<A>,
    /// Committed with the journal chunk of the same commit ([`kedge_queue::inbound`]).
    pub change: Option<Change>,
}

impl<A> Incoming<A> {
    /// A new event.
    pub fn event(event: Event, ack: Option<A>, change: Option<Change>) -> Self {
        Incoming {
            event: Some(event),
            ack,
            change,
        }
    }
}
