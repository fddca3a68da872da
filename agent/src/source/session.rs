//! The receiving side of kedge's MQTT session as a state machine without I/O: which arriving
//! messages are new and must be journaled, and which are the broker sending again what kedge
//! already journaled (ARCHITECTURE.md §9). Its state is committed with the journal
//! ([`kedge_queue::inbound`]), so that it holds across crashes.
//!
//! - **QoS 2** (MQTT 5 §4.3.3, 3.1.1 §4.3.3): a message is journaled together with its packet
//!   id before PUBREC; while the id is held, a PUBLISH with DUP set, that id and the same topic
//!   and payload is a resend and is only acknowledged; PUBREL releases the id, durably, before
//!   PUBCOMP. Without DUP, or with other content, the broker did not keep the protocol (some
//!   renumber their resends, so a held id can be given to another message): journaled, since
//!   a duplicate can be told downstream and a lost message cannot.
//! - **QoS 1** has no such handshake: after a reconnect the broker sends again, first and in
//!   order (MQTT 5 §4.4, §4.6), the messages whose PUBACK it did not read, and kedge cannot
//!   know which those are: acknowledgements it wrote are lost with the connection if the
//!   broker had not read them yet. The candidates are the newest receipts
//!   (`mqtt.redelivery_window`, 65,535 by default: more than `receive_maximum`, which brokers
//!   do not all hold to). With [`Match::PacketId`] an arriving message is a redelivery when
//!   it has DUP set and the packet id, topic and payload of a candidate, at or after the
//!   previous match; the first message that is not ends the matching. This is only done when
//!   the receipts prove the broker does not reuse a freed packet id at once: the newest
//!   `receive_maximum` + 1 of them have distinct ids (a broker that takes the lowest free id
//!   and keeps to the limit has at most `receive_maximum` ids in use, so it must repeat one).
//!   Otherwise a new message under the id of one just acknowledged, with the same content,
//!   could not be told from a resend; it is journaled instead. [`Match::Payload`]
//!   matches on topic and payload alone, for brokers that renumber or do not set DUP, and
//!   assumes no two messages among the candidates are identical.

use std::collections::{HashMap, VecDeque};

use kedge_queue::inbound::{Change, Inbound, MAX_WINDOW, Receipt};

/// How redeliveries of QoS 1 messages are recognised (`mqtt.redelivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// DUP flag, packet id, topic and payload; only once the broker is seen not to reuse ids.
    PacketId,
    /// Topic and payload alone: every message must differ from the ones before it.
    Payload,
    /// Never: every QoS 1 redelivery is journaled again (at least once).
    Off,
}

/// One message as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// MQTT packet identifier (0 for QoS 0).
    pub pkid: u16,
    /// QoS it arrived with.
    pub qos: u8,
    /// The DUP flag.
    pub dup: bool,
    /// Digest of topic and payload ([`digest`]).
    pub digest: u64,
}

/// What to do with an arriving message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: journal it, committing this change with it (none for QoS 0).
    Journal(Option<Change>),
    /// Already journaled: acknowledge it once everything before it is durable.
    Redelivered,
}

/// What a new connection means for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    /// The broker has a new session: nothing before will come again. `Some` when state must
    /// be forgotten durably before anything of the new session is acknowledged.
    Fresh(Option<Change>),
    /// The broker resumed the session: redeliveries may come first.
    Resumed {
        /// Messages a redelivery is compared with: QoS 1, and QoS 2 whose id was released.
        candidates: usize,
        /// With [`Match::PacketId`], why none are: the window is not yet full, or it shows the
        /// broker reusing packet ids.
        unproven: Option<Unproven>,
    },
}

/// Why [`Match::PacketId`] cannot be used on a resumed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unproven {
    /// Fewer receipts than the window since the session began.
    TooFew,
    /// A packet id appears twice among them.
    IdsReused,
}

/// The session's receiving state.
#[derive(Debug)]
pub struct Session {
    rule: Match,
    keep: usize,
    prove: usize,
    recent: VecDeque<Receipt>,
    held: HashMap<u16, u64>,
    resuming: Option<Resuming>,
}

#[derive(Debug)]
struct Resuming {
    candidates: Vec<Receipt>,
    cursor: usize,
}

/// Digest of a message's topic and payload: the first 8 bytes of SHA-256 over the topic's
/// length, the topic and the payload. Stable across versions, since it is stored.
pub fn digest(topic: &[u8], payload: &[u8]) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(topic.len() as u32).to_be_bytes());
    ctx.update(topic);
    ctx.update(payload);
    let d = ctx.finish();
    u64::from_be_bytes(d.as_ref()[..8].try_into().expect("32-byte digest"))
}

impl Session {
    /// Starts from what the queue committed; `keep` is the receipt window
    /// (`mqtt.redelivery_window`, the number the queue was told). A window widened before a
    /// crash shows as more receipts: all are kept. The receipts must number `keep` to prove
    /// the broker does not reuse packet ids, unless [`Session::proven_by`] says fewer.
    pub fn new(rule: Match, keep: usize, from: Inbound) -> Session {
        Session {
            rule,
            keep: keep.max(from.recent.len()).min(MAX_WINDOW),
            prove: keep,
            recent: from.recent.into_iter().collect(),
            held: from.held.into_iter().collect(),
            resuming: None,
        }
    }

    /// [`Match::PacketId`] is used once the newest `prove` receipts (`receive_maximum` + 1)
    /// have distinct packet ids: a broker that gives a freed id to the next message, and never
    /// has more than `receive_maximum` unacknowledged, cannot show that.
    pub fn proven_by(mut self, prove: usize) -> Session {
        self.prove = prove;
        self
    }

    /// Receipts kept.
    pub fn window(&self) -> usize {
        self.keep
    }

    /// Keeps at least `keep` receipts from now on: more messages await kedge's
    /// acknowledgement than the window covered, and each may be sent again.
    pub fn widen(&mut self, keep: usize) {
        self.keep = self.keep.max(keep.min(MAX_WINDOW));
    }

    /// A connection was made.
    pub fn connected(&mut self, session_present: bool) -> Connected {
        if !session_present {
            self.resuming = None;
            let had = !self.recent.is_empty() || !self.held.is_empty();
            self.recent.clear();
            self.held.clear();
            return Connected::Fresh(had.then_some(Change::Reset));
        }
        let (candidates, unproven): (Vec<Receipt>, _) = match self.rule {
            Match::Off => (Vec::new(), None),
            Match::Payload => (self.recent.iter().copied().collect(), None),
            Match::PacketId => match self.proof() {
                // QoS 1 receipts, and QoS 2 ones whose id kedge released: a held id is told
                // by `held` first; a released one only by its receipt, for a broker that sends
                // PUBLISH again after PUBREL (mosquitto 2.0.11, ARCHITECTURE.md §9).
                None => (
                    self.recent
                        .iter()
                        .copied()
                        .filter(|r| r.qos == 1 || self.held.get(&r.pkid) != Some(&r.digest))
                        .collect(),
                    None,
                ),
                Some(why) => (Vec::new(), Some(why)),
            },
        };
        let n = candidates.len();
        self.resuming = (n > 0).then_some(Resuming {
            candidates,
            cursor: 0,
        });
        Connected::Resumed {
            candidates: n,
            unproven,
        }
    }

    /// `None` when the receipts prove the broker does not reuse a freed packet id at once.
    fn proof(&self) -> Option<Unproven> {
        if self.recent.len() < self.prove {
            return Some(Unproven::TooFew);
        }
        // The newest `prove` only: a resend journaled again (before the proof, or beyond the
        // window) repeats an id, and must not keep the whole window unproven for 65,535
        // messages; a lowest-free broker that keeps to its limit repeats one within these.
        let mut seen = vec![0u64; 1024];
        for r in self.recent.iter().skip(self.recent.len() - self.prove) {
            let (word, bit) = (usize::from(r.pkid) / 64, r.pkid % 64);
            if seen[word] & (1 << bit) != 0 {
                return Some(Unproven::IdsReused);
            }
            seen[word] |= 1 << bit;
        }
        None
    }

    /// A PUBLISH arrived.
    pub fn arrived(&mut self, a: Arrival) -> Verdict {
        if a.qos == 0 {
            return Verdict::Journal(None);
        }
        if a.qos == 2
            && (a.dup || self.rule == Match::Payload)
            && self.held.get(&a.pkid) == Some(&a.digest)
        {
            return Verdict::Redelivered;
        }
        if let Some(r) = &mut self.resuming {
            let rule = self.rule;
            let hit = r.candidates[r.cursor..]
                .iter()
                .position(|c| is_resend(rule, c, &a));
            match hit {
                Some(i) => {
                    r.cursor += i + 1;
                    if r.cursor == r.candidates.len() {
                        self.resuming = None;
                    }
                    return Verdict::Redelivered;
                }
                None => self.resuming = None,
            }
        }
        let receipt = Receipt {
            pkid: a.pkid,
            qos: a.qos,
            digest: a.digest,
        };
        while self.recent.len() >= self.keep.max(1) {
            self.recent.pop_front();
        }
        if self.keep > 0 {
            self.recent.push_back(receipt);
        }
        if a.qos == 2 {
            self.held.insert(a.pkid, a.digest);
        }
        Verdict::Journal(Some(Change::Received(receipt)))
    }

    /// Whether `a` is a new QoS 2 message under a packet id still held for another: the broker
    /// reused an id in use (MQTT 5 §2.2.1, 3.1.1 §2.3.1), so the earlier message's resends can
    /// no longer be told by it.
    pub fn collides(&self, a: &Arrival) -> bool {
        a.qos == 2
            && self
                .held
                .get(&a.pkid)
                .is_some_and(|d| !a.dup || *d != a.digest)
    }

    /// The broker released a QoS 2 packet id (PUBREL). The change must be durable before
    /// PUBCOMP, after which the broker may reuse the id.
    pub fn released(&mut self, pkid: u16) -> Change {
        self.held.remove(&pkid);
        Change::Released(pkid)
    }
}

fn is_resend(rule: Match, c: &Receipt, a: &Arrival) -> bool {
    match rule {
        Match::PacketId => a.qos == c.qos && a.dup && c.pkid == a.pkid && c.digest == a.digest,
        Match::Payload => c.digest == a.digest,
        Match::Off => false,
    }
}

#[cfg(test)]
mod tests;
