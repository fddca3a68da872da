//! Vectors for the session's rules, then random histories against a model broker: crashes,
//! reconnects and lost acknowledgements never lose a message, and a broker that keeps the
//! protocol gets no duplicates once the receipts prove it does not reuse packet ids.

use std::collections::{BTreeMap, HashMap, VecDeque};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn arrival(pkid: u16, qos: u8, dup: bool, content: u64) -> Arrival {
    Arrival {
        pkid,
        qos,
        dup,
        digest: content,
    }
}

/// A session that has seen `n` QoS 1 messages with increasing ids from 1, contents 1000 + id.
fn filled(rule: Match, keep: usize, n: u16) -> Session {
    let mut s = Session::new(rule, keep, Inbound::default());
    s.connected(false);
    for id in 1..=n {
        assert!(matches!(
            s.arrived(arrival(id, 1, false, 1000 + u64::from(id))),
            Verdict::Journal(Some(_))
        ));
    }
    s
}

#[test]
fn a_qos1_resend_is_recognised_by_dup_id_and_content_in_order() {
    let mut s = filled(Match::PacketId, 4, 6);
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 4,
            unproven: None
        }
    );
    // 5 and 6 were not acknowledged in time: sent again, in order, with DUP.
    assert_eq!(s.arrived(arrival(5, 1, true, 1005)), Verdict::Redelivered);
    assert_eq!(s.arrived(arrival(6, 1, true, 1006)), Verdict::Redelivered);
    // Then new messages.
    assert!(matches!(
        s.arrived(arrival(7, 1, false, 1007)),
        Verdict::Journal(Some(_))
    ));
}

#[test]
fn without_dup_or_with_other_content_or_out_of_order_it_is_journaled() {
    let mut s = filled(Match::PacketId, 4, 6);
    s.connected(true);
    assert!(
        matches!(s.arrived(arrival(5, 1, false, 1005)), Verdict::Journal(_)),
        "no DUP"
    );
    let mut s = filled(Match::PacketId, 4, 6);
    s.connected(true);
    assert!(
        matches!(s.arrived(arrival(5, 1, true, 9)), Verdict::Journal(_)),
        "other content"
    );
    let mut s = filled(Match::PacketId, 4, 6);
    s.connected(true);
    assert_eq!(s.arrived(arrival(6, 1, true, 1006)), Verdict::Redelivered);
    // Once past 6, an earlier candidate cannot come any more: the broker resends in order.
    assert!(matches!(
        s.arrived(arrival(5, 1, true, 1005)),
        Verdict::Journal(_)
    ));
}

#[test]
fn the_first_new_message_ends_the_matching() {
    let mut s = filled(Match::PacketId, 4, 6);
    s.connected(true);
    assert!(matches!(
        s.arrived(arrival(7, 1, false, 1007)),
        Verdict::Journal(_)
    ));
    assert!(matches!(
        s.arrived(arrival(6, 1, true, 1006)),
        Verdict::Journal(_)
    ));
}

#[test]
fn packet_ids_are_trusted_only_once_the_window_is_full_of_distinct_ones() {
    // Three receipts in a window of four: a broker taking the lowest free id could have
    // given a new message the id of one just acknowledged.
    let mut s = filled(Match::PacketId, 4, 3);
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 0,
            unproven: Some(Unproven::TooFew)
        }
    );
    assert!(matches!(
        s.arrived(arrival(3, 1, true, 1003)),
        Verdict::Journal(_)
    ));

    // A broker that reuses ids: 1, 2, 1, 2, ...
    let mut s = Session::new(Match::PacketId, 4, Inbound::default());
    for i in 0..8u16 {
        s.arrived(arrival(1 + i % 2, 1, false, u64::from(i)));
    }
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 0,
            unproven: Some(Unproven::IdsReused)
        }
    );
    assert!(matches!(
        s.arrived(arrival(2, 1, true, 7)),
        Verdict::Journal(_)
    ));
}

#[test]
fn the_payload_rule_ignores_ids_and_dup() {
    let mut s = filled(Match::Payload, 4, 6);
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 4,
            unproven: None
        }
    );
    // A broker that renumbers from 1 and never sets DUP.
    assert_eq!(s.arrived(arrival(1, 1, false, 1005)), Verdict::Redelivered);
    assert_eq!(s.arrived(arrival(2, 1, false, 1006)), Verdict::Redelivered);
    assert!(matches!(
        s.arrived(arrival(3, 1, false, 1005)),
        Verdict::Journal(_)
    ));
}

#[test]
fn off_journals_every_qos1_redelivery() {
    let mut s = filled(Match::Off, 4, 6);
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 0,
            unproven: None
        }
    );
    assert!(matches!(
        s.arrived(arrival(6, 1, true, 1006)),
        Verdict::Journal(_)
    ));
}

#[test]
fn qos2_ids_are_held_until_released_whatever_the_window() {
    let mut s = Session::new(Match::Off, 4, Inbound::default());
    s.connected(false);
    let Verdict::Journal(Some(Change::Received(r))) = s.arrived(arrival(9, 2, false, 5)) else {
        panic!("journaled with a receipt")
    };
    assert_eq!(r.qos, 2);
    s.connected(true);
    // Without DUP the broker does not say it is a resend: journaled (a renumbering broker can
    // give a held id to another message with the same content), and seen as a collision.
    assert!(s.collides(&arrival(9, 2, false, 5)));
    assert!(!s.collides(&arrival(9, 2, true, 5)));
    assert!(!s.collides(&arrival(8, 2, false, 5)));
    assert!(!s.collides(&arrival(9, 1, false, 5)));
    assert!(matches!(
        s.arrived(arrival(9, 2, false, 5)),
        Verdict::Journal(_)
    ));
    // Resent (PUBREC lost): held, so only acknowledged.
    assert_eq!(s.arrived(arrival(9, 2, true, 5)), Verdict::Redelivered);
    // Same id, other content: the broker reused an id it had not released. Not lost.
    assert!(s.collides(&arrival(9, 2, true, 6)));
    assert!(matches!(
        s.arrived(arrival(9, 2, true, 6)),
        Verdict::Journal(_)
    ));
    assert_eq!(s.released(9), Change::Released(9));
    assert!(matches!(
        s.arrived(arrival(9, 2, false, 6)),
        Verdict::Journal(_)
    ));
}

/// mosquitto 2.0.11 sends PUBLISH again, with DUP, for a QoS 2 message it had already sent
/// PUBREL for, when a connection broke while it was resending PUBRELs (its session reset marks
/// every message after the failed write for a PUBLISH resend): kedge released the id, so only
/// the receipts can tell the resend. Seen in the QoS 2 kill storm on mosquitto under load.
#[test]
fn a_qos2_message_resent_after_its_release_is_recognised_by_its_receipt() {
    let mut s = filled(Match::PacketId, 4, 2);
    for id in 3..=4 {
        assert!(matches!(
            s.arrived(arrival(id, 2, false, 1000 + u64::from(id))),
            Verdict::Journal(Some(_))
        ));
        s.released(id);
    }
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 4,
            unproven: None
        }
    );
    assert_eq!(s.arrived(arrival(3, 2, true, 1003)), Verdict::Redelivered);
    assert_eq!(s.arrived(arrival(4, 2, true, 1004)), Verdict::Redelivered);
    // Then new messages.
    assert!(matches!(
        s.arrived(arrival(5, 2, false, 1005)),
        Verdict::Journal(Some(_))
    ));
}

#[test]
fn a_released_qos2_receipt_matches_only_dup_same_id_same_content_same_qos() {
    for (a, why) in [
        (arrival(3, 2, false, 1003), "without DUP"),
        (arrival(3, 2, true, 9999), "other content"),
        (arrival(7, 2, true, 1003), "other id"),
        (arrival(3, 1, true, 1003), "other QoS"),
    ] {
        let mut s = filled(Match::PacketId, 4, 2);
        for id in 3..=4 {
            s.arrived(arrival(id, 2, false, 1000 + u64::from(id)));
            s.released(id);
        }
        s.connected(true);
        assert!(
            matches!(s.arrived(a), Verdict::Journal(Some(_))),
            "{why}: journaled"
        );
    }
    // Before the ids are proven not to be reused, a released receipt is no candidate either.
    let mut s = filled(Match::PacketId, 8, 2);
    for id in 3..=4 {
        s.arrived(arrival(id, 2, false, 1000 + u64::from(id)));
        s.released(id);
    }
    assert!(matches!(
        s.connected(true),
        Connected::Resumed {
            candidates: 0,
            unproven: Some(Unproven::TooFew)
        }
    ));
    assert!(matches!(
        s.arrived(arrival(3, 2, true, 1003)),
        Verdict::Journal(Some(_))
    ));
}

#[test]
fn the_state_survives_through_what_the_queue_kept() {
    // Five receipts stored with a window of three: the window was widened before the crash,
    // and all five are compared with.
    let mut s = Session::new(
        Match::PacketId,
        3,
        Inbound {
            recent: (1..=5)
                .map(|id| Receipt {
                    pkid: id,
                    qos: 1,
                    digest: u64::from(id),
                })
                .collect(),
            held: vec![(40, 4)],
        },
    );
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 5,
            unproven: None
        }
    );
    assert_eq!(s.arrived(arrival(40, 2, true, 4)), Verdict::Redelivered);
    assert_eq!(s.arrived(arrival(2, 1, true, 2)), Verdict::Redelivered);
    assert_eq!(s.arrived(arrival(4, 1, true, 4)), Verdict::Redelivered);
    // A new session forgets it all, durably.
    assert_eq!(s.connected(false), Connected::Fresh(Some(Change::Reset)));
    assert_eq!(s.connected(false), Connected::Fresh(None));
    assert!(matches!(
        s.arrived(arrival(40, 2, true, 4)),
        Verdict::Journal(_)
    ));
}

#[test]
fn a_widened_window_keeps_more_and_proof_needs_only_receive_maximum_plus_one() {
    // Window 3, proven by 3: a fourth receipt pushes out the first.
    let mut s = filled(Match::PacketId, 3, 4);
    s.connected(true);
    assert!(matches!(
        s.arrived(arrival(1, 1, true, 1001)),
        Verdict::Journal(Some(Change::Received(_)))
    ));
    // Widened to 10 and proven by 3: everything from now on is kept and compared with.
    let mut s = filled(Match::PacketId, 3, 0).proven_by(3);
    s.widen(10);
    for id in 1..=8 {
        s.arrived(arrival(id, 1, false, 1000 + u64::from(id)));
    }
    assert_eq!(s.window(), 10);
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 8,
            unproven: None
        }
    );
    assert_eq!(s.arrived(arrival(1, 1, true, 1001)), Verdict::Redelivered);
    // Two receipts are not enough to prove anything.
    let mut s = filled(Match::PacketId, 10, 2).proven_by(3);
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 0,
            unproven: Some(Unproven::TooFew)
        }
    );
}

#[test]
fn a_repeated_id_counts_against_the_proof_only_among_the_newest_receive_maximum_plus_one() {
    let mut s = filled(Match::PacketId, 10, 0).proven_by(3);
    // A resend journaled again (session too young): id 1 twice.
    for (id, dup) in [(1, false), (2, false), (1, true)] {
        s.arrived(arrival(id, 1, dup, 1000 + u64::from(id)));
    }
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 0,
            unproven: Some(Unproven::IdsReused)
        }
    );
    // Three distinct ids after it: proven again, and the old receipts are still compared with.
    for id in 3..=5 {
        s.arrived(arrival(id, 1, false, 1000 + u64::from(id)));
    }
    assert_eq!(
        s.connected(true),
        Connected::Resumed {
            candidates: 6,
            unproven: None
        }
    );
    assert_eq!(s.arrived(arrival(2, 1, true, 1002)), Verdict::Redelivered);
}

#[test]
fn qos0_messages_change_nothing() {
    let mut s = filled(Match::PacketId, 4, 6);
    s.connected(true);
    assert_eq!(s.arrived(arrival(0, 0, false, 0)), Verdict::Journal(None));
    assert_eq!(s.arrived(arrival(5, 1, true, 1005)), Verdict::Redelivered);
}

#[test]
fn digests_differ_by_topic_and_payload_and_are_stable() {
    assert_ne!(digest(b"a", b"bc"), digest(b"ab", b"c"));
    assert_ne!(digest(b"a", b"b"), digest(b"a", b"c"));
    // Stored in the queue: a change would make a restarted kedge journal redeliveries again.
    // Checked independently: sha256(b"\0\0\0\x09" b"sensors/t" b"21.5")[..8] with Python.
    assert_eq!(digest(b"sensors/t", b"21.5"), 0xaf77_2ae8_0313_0daa);
}

// ---- random histories against a model broker -------------------------------------------

/// How the model broker numbers messages for its subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// The next id after the last one (mosquitto, aedes).
    Increasing,
    /// The lowest id not in flight.
    LowestFree,
    /// Increasing, from 1 again on every connection; resends renumbered (rumqttd).
    Renumbering,
}

#[derive(Debug, Clone)]
struct InFlight {
    uid: usize,
    pkid: u16,
    qos: u8,
    /// QoS 2: PUBREC received, PUBREL sent; only PUBCOMP is missing.
    released: bool,
}

/// A broker holding one subscriber's session, as MQTT 5 §4.4 and §4.6 describe it.
struct Broker {
    ids: Ids,
    dup_flag: bool,
    max_inflight: usize,
    /// Content of each message by uid: a few distinct values, so that identical payloads occur.
    contents: Vec<u64>,
    qos_of: Vec<u8>,
    next_uid: usize,
    inflight: VecDeque<InFlight>,
    /// Messages of the current connection sent (or resent) and not yet acknowledged.
    last_id: u16,
    /// Resends (by uid) still to go out on this connection, in order.
    resend: VecDeque<usize>,
}

impl Broker {
    fn allocate(&mut self) -> u16 {
        match self.ids {
            Ids::Increasing | Ids::Renumbering => {
                self.last_id = if self.last_id == u16::MAX {
                    1
                } else {
                    self.last_id + 1
                };
                self.last_id
            }
            Ids::LowestFree => (1..=u16::MAX)
                .find(|id| self.inflight.iter().all(|f| f.pkid != *id))
                .expect("a free id"),
        }
    }

    fn reconnect(&mut self) {
        if self.ids == Ids::Renumbering {
            self.last_id = 0;
        }
        self.resend = self.inflight.iter().map(|f| f.uid).collect();
    }

    /// The next packet the broker sends, if any.
    fn next(&mut self) -> Option<Packet> {
        while let Some(uid) = self.resend.pop_front() {
            // Acknowledged meanwhile (a late ack of the old connection cannot be, but a
            // PUBCOMP for a PUBREL can).
            let Some(i) = self.inflight.iter().position(|f| f.uid == uid) else {
                continue;
            };
            let renumber = self.ids == Ids::Renumbering && !self.inflight[i].released;
            if renumber {
                let id = self.allocate();
                self.inflight[i].pkid = id;
            }
            let f = &self.inflight[i];
            return Some(if f.released {
                Packet::PubRel(f.pkid)
            } else {
                Packet::Publish {
                    uid: f.uid,
                    arrival: arrival(f.pkid, f.qos, self.dup_flag, self.contents[f.uid]),
                }
            });
        }
        if self.next_uid >= self.contents.len() || self.inflight.len() >= self.max_inflight {
            return None;
        }
        let uid = self.next_uid;
        self.next_uid += 1;
        let qos = self.qos_of[uid];
        let pkid = self.allocate();
        self.inflight.push_back(InFlight {
            uid,
            pkid,
            qos,
            released: false,
        });
        Some(Packet::Publish {
            uid,
            arrival: arrival(pkid, qos, false, self.contents[uid]),
        })
    }

    /// An acknowledgement arrived; `Some(pkid)` when the broker now sends PUBREL.
    fn acknowledged(&mut self, ack: Ack) -> Option<u16> {
        let pos = |b: &Broker, pkid: u16, pred: &dyn Fn(&InFlight) -> bool| {
            b.inflight.iter().position(|f| f.pkid == pkid && pred(f))
        };
        match ack {
            Ack::Puback(pkid) => {
                if let Some(i) = pos(self, pkid, &|f| f.qos == 1) {
                    self.inflight.remove(i);
                }
                None
            }
            Ack::Pubrec(pkid) => {
                let i = pos(self, pkid, &|f| f.qos == 2 && !f.released)?;
                self.inflight[i].released = true;
                Some(pkid)
            }
            Ack::Pubcomp(pkid) => {
                if let Some(i) = pos(self, pkid, &|f| f.qos == 2 && f.released) {
                    self.inflight.remove(i);
                }
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Packet {
    Publish { uid: usize, arrival: Arrival },
    PubRel(u16),
}

#[derive(Debug, Clone, Copy)]
enum Ack {
    Puback(u16),
    Pubrec(u16),
    Pubcomp(u16),
}

/// What the queue keeps, as the ledger does: committed changes replayed.
#[derive(Default, Clone)]
struct Durable {
    recent: VecDeque<Receipt>,
    held: BTreeMap<u16, u64>,
}

impl Durable {
    fn apply(&mut self, keep: usize, c: Change) {
        match c {
            Change::Reset => *self = Durable::default(),
            Change::Received(r) => {
                self.recent.push_back(r);
                while self.recent.len() > keep {
                    self.recent.pop_front();
                }
                if r.qos == 2 {
                    self.held.insert(r.pkid, r.digest);
                }
            }
            Change::Released(p) => {
                self.held.remove(&p);
            }
        }
    }

    fn inbound(&self) -> Inbound {
        Inbound {
            recent: self.recent.iter().copied().collect(),
            held: self.held.iter().map(|(p, d)| (*p, *d)).collect(),
        }
    }
}

/// One item passed from the source to the commit stage.
struct Pending {
    uid: Option<usize>,
    change: Option<Change>,
    ack: Option<(Ack, u64)>,
}

struct Outcome {
    journaled: HashMap<usize, usize>,
    messages: usize,
    /// Resumes after which the session trusted packet ids (or used the payload rule).
    trusted_resumes: usize,
    /// Duplicates journaled after such a resume, by a message resent in it.
    duplicates_after_trusted: usize,
}

fn history(seed: u64, ids: Ids, dup_flag: bool, rule: Match, unique: bool) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let keep = rng.random_range(2..=6usize);
    // The broker never has more in flight than the subscriber's receive maximum (keep - 1).
    let max_inflight = rng.random_range(1..keep);
    let messages = rng.random_range(20..120usize);
    let contents = (0..messages)
        .map(|uid| {
            if unique {
                uid as u64
            } else {
                rng.random_range(0..3u64)
            }
        })
        .collect();
    let qos_of = (0..messages).map(|_| rng.random_range(1..=2u8)).collect();
    let mut broker = Broker {
        ids,
        dup_flag,
        max_inflight,
        contents,
        qos_of,
        next_uid: 0,
        inflight: VecDeque::new(),
        last_id: 0,
        resend: VecDeque::new(),
    };
    let mut durable = Durable::default();
    let mut session = Session::new(rule, keep, durable.inbound());
    let mut connection = 0u64;
    let mut pending: Vec<Pending> = Vec::new();
    let mut acks_on_wire: VecDeque<(Ack, u64)> = VecDeque::new();
    let mut journaled: HashMap<usize, usize> = HashMap::new();
    let mut trusted = false;
    let mut out = Outcome {
        journaled: HashMap::new(),
        messages,
        trusted_resumes: 0,
        duplicates_after_trusted: 0,
    };
    let connect = |session: &mut Session, present: bool, pending: &mut Vec<Pending>| match session
        .connected(present)
    {
        Connected::Fresh(change) => {
            if let Some(c) = change {
                pending.push(Pending {
                    uid: None,
                    change: Some(c),
                    ack: None,
                });
            }
            false
        }
        Connected::Resumed { unproven, .. } => rule != Match::Off && unproven.is_none(),
    };
    trusted |= connect(&mut session, false, &mut pending);
    let mut resent_now: Vec<usize> = Vec::new();
    let mut steps = 0;
    let quiet_after = 2000;
    loop {
        steps += 1;
        let faults = steps < quiet_after;
        if !faults
            && pending.is_empty()
            && acks_on_wire.is_empty()
            && broker.inflight.is_empty()
            && broker.next_uid == broker.contents.len()
        {
            break;
        }
        assert!(steps < 20_000, "no progress");
        match rng.random_range(0..100) {
            // The broker sends something.
            0..=44 => {
                let Some(packet) = broker.next() else {
                    continue;
                };
                let from_resend = matches!(packet, Packet::Publish { arrival, .. } if arrival.dup)
                    || (broker.ids == Ids::Renumbering
                        && matches!(packet, Packet::Publish { uid, .. } if resent_now.contains(&uid)));
                match packet {
                    Packet::Publish { uid, arrival: a } => {
                        let kind = if a.qos == 2 {
                            Ack::Pubrec(a.pkid)
                        } else {
                            Ack::Puback(a.pkid)
                        };
                        match session.arrived(a) {
                            Verdict::Journal(change) => {
                                if trusted && from_resend && journaled.contains_key(&uid) {
                                    out.duplicates_after_trusted += 1;
                                }
                                pending.push(Pending {
                                    uid: Some(uid),
                                    change,
                                    ack: Some((kind, connection)),
                                });
                            }
                            Verdict::Redelivered => pending.push(Pending {
                                uid: None,
                                change: None,
                                ack: Some((kind, connection)),
                            }),
                        }
                    }
                    Packet::PubRel(pkid) => {
                        let change = session.released(pkid);
                        pending.push(Pending {
                            uid: None,
                            change: Some(change),
                            ack: Some((Ack::Pubcomp(pkid), connection)),
                        });
                    }
                }
            }
            // A group commit: everything pending becomes durable, then its acks go out.
            45..=69 => {
                for p in pending.drain(..) {
                    if let Some(uid) = p.uid {
                        *journaled.entry(uid).or_default() += 1;
                    }
                    if let Some(c) = p.change {
                        durable.apply(keep, c);
                    }
                    acks_on_wire.extend(p.ack);
                }
            }
            // Acks reach the broker, unless they belong to an older connection (the gate).
            70..=89 => {
                while let Some((ack, conn)) = acks_on_wire.pop_front() {
                    if conn != connection {
                        continue;
                    }
                    if let Some(pkid) = broker.acknowledged(ack) {
                        // The broker answers PUBREC with PUBREL on the same connection.
                        let f = broker
                            .inflight
                            .iter()
                            .find(|f| f.pkid == pkid && f.released);
                        broker.resend.push_back(f.expect("just released").uid);
                    }
                    if rng.random_bool(0.3) {
                        break;
                    }
                }
            }
            // kedge is killed: what was not committed is gone, acks not yet sent too.
            90..=94 if faults => {
                pending.clear();
                acks_on_wire.clear();
                session = Session::new(rule, keep, durable.inbound());
                connection += 1;
                broker.reconnect();
                resent_now = broker.inflight.iter().map(|f| f.uid).collect();
                let t = connect(&mut session, true, &mut pending);
                out.trusted_resumes += usize::from(t);
                trusted = t;
            }
            // The connection drops: kedge lives on, its acks for the old connection are void.
            95..=99 if faults => {
                connection += 1;
                broker.reconnect();
                resent_now = broker.inflight.iter().map(|f| f.uid).collect();
                let t = connect(&mut session, true, &mut pending);
                out.trusted_resumes += usize::from(t);
                trusted = t;
            }
            _ => {}
        }
    }
    out.journaled = journaled;
    out
}

fn check_no_loss(seed: u64, o: &Outcome) {
    for uid in 0..o.messages {
        assert!(
            o.journaled.get(&uid).copied().unwrap_or(0) >= 1,
            "seed {seed}: message {uid} was lost"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("KEDGE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    /// Whether or not the broker sets DUP, reuses freed ids at once or not, and whatever the
    /// payloads, nothing is lost. A broker that renumbers its resends is covered as rumqttd
    /// does it, without DUP; one that renumbers *and* sets DUP could make a resend look like a
    /// held message of the same content (ARCHITECTURE.md §9).
    #[test]
    fn no_message_is_ever_lost(
        seed in any::<u64>(),
        broker in prop::sample::select(vec![
            (Ids::Increasing, true), (Ids::Increasing, false),
            (Ids::LowestFree, true), (Ids::LowestFree, false),
            (Ids::Renumbering, false),
        ]),
        rule in prop::sample::select(vec![Match::PacketId, Match::Off]),
    ) {
        let o = history(seed, broker.0, broker.1, rule, false);
        check_no_loss(seed, &o);
    }

    /// A broker that keeps the protocol (increasing ids, DUP on resends): once the session
    /// trusts its ids, a resent message is never journaled twice.
    #[test]
    fn a_compliant_broker_causes_no_duplicates_once_ids_are_proven(seed in any::<u64>()) {
        let o = history(seed, Ids::Increasing, true, Match::PacketId, false);
        check_no_loss(seed, &o);
        prop_assert_eq!(o.duplicates_after_trusted, 0, "seed {}", seed);
    }

    /// The payload rule with unique payloads: no loss and no duplicates, even with a broker
    /// that renumbers and never sets DUP.
    #[test]
    fn the_payload_rule_with_unique_payloads_is_exact(
        seed in any::<u64>(),
        ids in prop::sample::select(vec![Ids::Increasing, Ids::LowestFree, Ids::Renumbering]),
    ) {
        let o = history(seed, ids, false, Match::Payload, true);
        check_no_loss(seed, &o);
        prop_assert_eq!(o.duplicates_after_trusted, 0, "seed {}", seed);
    }
}

#[test]
fn histories_do_resume_with_trusted_ids() {
    // The property above must not pass vacuously: most histories trust ids at some point.
    let trusted = (0..200)
        .filter(|seed| {
            history(*seed, Ids::Increasing, true, Match::PacketId, false).trusted_resumes > 0
        })
        .count();
    assert!(
        trusted > 100,
        "only {trusted} of 200 histories resumed with trusted ids"
    );
}
