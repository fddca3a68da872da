//! What the source received, committed in the same sled transaction as the journal chunk of
//! those messages (ARCHITECTURE.md §2, step 3): enough for a restarted kedge to recognise its
//! MQTT broker's redeliveries of messages it already journaled, at no extra fsync.
//!
//! Tree `inbound`:
//! - `r` + commit number (u64, big-endian) → the commit's first kedge-seq (u64), then per
//!   message its packet id (u16), QoS (u8) and digest of topic and payload (u64). Only the
//!   newest commits that hold [`Ledger::keep`] receipts are kept.
//! - `h` + packet id (u16) → first kedge-seq of the commit that journaled it (u64), then its
//!   digest (u64): a QoS 2 message journaled and not yet released by the broker's PUBREL.
//!
//! The queue only stores these; what they mean is the source's business (`source::session`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const RECEIPTS: u8 = b'r';
const HELD: u8 = b'h';
const RECEIPT_LEN: usize = 11;

/// One QoS 1 or 2 message the source received and journaled (or whose events the plugins
/// dropped): how its broker would name it when it sends it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// MQTT packet identifier.
    pub pkid: u16,
    /// MQTT QoS it arrived with (1 or 2).
    pub qos: u8,
    /// Digest of its topic and payload.
    pub digest: u64,
}

/// A change to what the source received, committed in order with the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The broker started a new session: nothing received before can be sent again.
    Reset,
    /// A message of this commit. A QoS 2 one stays held until its packet id is released.
    Received(Receipt),
    /// The broker released a QoS 2 packet id (PUBREL): once PUBCOMP is sent it may reuse it.
    Released(u16),
}

/// The stored state, as the source starts from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbound {
    /// The most recent receipts, oldest first: at most the configured number.
    pub recent: Vec<Receipt>,
    /// QoS 2 packet ids journaled and not released, with their digests.
    pub held: Vec<(u16, u64)>,
}

/// The widest window: packet ids are 16 bits, so no broker has more messages unacknowledged,
/// and a wider window of a broker that numbers messages in turn would show ids repeated.
pub const MAX_WINDOW: usize = u16::MAX as usize;

/// How many of the newest receipts commits keep. Set when the source starts, and widened by
/// the source while it runs when more messages await its acknowledgement than the window
/// covers (ARCHITECTURE.md §9). Shared, so that the commit holding a message already keeps the
/// window that message needed; never narrowed while kedge runs.
#[derive(Debug, Clone, Default)]
pub struct ReceiptWindow(Arc<AtomicUsize>);

impl ReceiptWindow {
    /// Receipts kept.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Keeps at least `keep` receipts from now on, up to [`MAX_WINDOW`].
    pub fn widen(&self, keep: usize) {
        self.0.fetch_max(keep.min(MAX_WINDOW), Ordering::AcqRel);
    }
}

/// One commit's receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Commit {
    no: u64,
    first_seq: u64,
    receipts: Vec<Receipt>,
}

/// A stored commit's place: enough to trim and discard without reading, not its receipts
/// (a full default window is 65,535 of them; they are read back only at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    no: u64,
    first_seq: u64,
    receipts: usize,
}

/// The tree's shape, mirrored in memory so that a commit knows what to trim without reading.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Receipts to keep: older commits are removed once newer ones hold this many.
    keep: ReceiptWindow,
    commits: VecDeque<Stored>,
    /// Held QoS 2 ids: first kedge-seq of the commit that journaled each, and its digest.
    held: BTreeMap<u16, (u64, u64)>,
    next_no: u64,
}

/// What one commit does to the tree, computed before the transaction and applied to the
/// [`Ledger`] only once the transaction succeeded (a failed commit is retried whole).
#[derive(Debug, Default)]
pub(super) struct Writes {
    pub(super) puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) removes: Vec<Vec<u8>>,
    reset: bool,
    commit: Option<Stored>,
    trimmed: usize,
    hold: Vec<(u16, (u64, u64))>,
    release: Vec<u16>,
}

impl Writes {
    pub(super) fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.removes.is_empty()
    }
}

fn receipts_key(no: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(RECEIPTS);
    k.extend_from_slice(&no.to_be_bytes());
    k
}

fn held_key(pkid: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(3);
    k.push(HELD);
    k.extend_from_slice(&pkid.to_be_bytes());
    k
}

fn encode_commit(c: &Commit) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + c.receipts.len() * RECEIPT_LEN);
    v.extend_from_slice(&c.first_seq.to_be_bytes());
    for r in &c.receipts {
        v.extend_from_slice(&r.pkid.to_be_bytes());
        v.push(r.qos);
        v.extend_from_slice(&r.digest.to_be_bytes());
    }
    v
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn decode_commit(no: u64, v: &[u8]) -> Option<Commit> {
    let first_seq = u64_at(v, 0)?;
    let body = &v[8..];
    if !body.len().is_multiple_of(RECEIPT_LEN) {
        return None;
    }
    let receipts = body
        .chunks_exact(RECEIPT_LEN)
        .map(|r| Receipt {
            pkid: u16::from_be_bytes([r[0], r[1]]),
            qos: r[2],
            digest: u64::from_be_bytes(r[3..11].try_into().expect("8 bytes")),
        })
        .collect();
    Some(Commit {
        no,
        first_seq,
        receipts,
    })
}

impl Ledger {
    /// Reads the tree. Entries that cannot be decoded are skipped (and removed by the next
    /// reset): forgetting a receipt can only make a redelivery be journaled again.
    pub(super) fn load(tree: &sled::Tree) -> sled::Result<Ledger> {
        let mut ledger = Ledger::default();
        for item in tree.iter() {
            let (k, v) = item?;
            match (k.first(), k.len()) {
                (Some(&RECEIPTS), 9) => {
                    let no = u64_at(&k, 1).expect("9-byte key");
                    ledger.next_no = ledger.next_no.max(no + 1);
                    if let Some(c) = decode_commit(no, &v) {
                        ledger.commits.push_back(Stored {
                            no,
                            first_seq: c.first_seq,
                            receipts: c.receipts.len(),
                        });
                    }
                }
                (Some(&HELD), 3) => {
                    if let (Some(seq), Some(digest)) = (u64_at(&v, 0), u64_at(&v, 8)) {
                        ledger
                            .held
                            .insert(u16::from_be_bytes([k[1], k[2]]), (seq, digest));
                    }
                }
                _ => {}
            }
        }
        Ok(ledger)
    }

    /// Sets the window, never below what is stored: a window widened before a crash still
    /// holds messages the broker may send again.
    pub(super) fn set_keep(&mut self, keep: usize) {
        let stored = self.commits.iter().map(|c| c.receipts).sum::<usize>();
        // In place: a handle given out before keeps seeing the window.
        self.keep
            .0
            .store(keep.max(stored).min(MAX_WINDOW), Ordering::Release);
    }

    pub(super) fn window(&self) -> ReceiptWindow {
        self.keep.clone()
    }

    /// What `tree` holds, as the source starts from it: the newest receipts up to the window,
    /// read back from the tree, and the held ids.
    pub(super) fn state(&self, tree: &sled::Tree) -> sled::Result<Inbound> {
        let total: usize = self.commits.iter().map(|c| c.receipts).sum();
        let skip = total.saturating_sub(self.keep.get());
        let mut recent = Vec::with_capacity(total);
        for c in &self.commits {
            let commit = tree
                .get(receipts_key(c.no))?
                .and_then(|v| decode_commit(c.no, &v));
            recent.extend(commit.into_iter().flat_map(|c| c.receipts));
        }
        Ok(Inbound {
            recent: recent.split_off(skip.min(recent.len())),
            held: self.held.iter().map(|(p, (_, d))| (*p, *d)).collect(),
        })
    }

    /// What committing `changes` with the chunk starting at `first_seq` writes.
    pub(super) fn plan(&self, first_seq: u64, changes: &[Change]) -> Writes {
        let keep = self.keep.get();
        let mut w = Writes::default();
        let mut receipts = Vec::new();
        let mut hold: BTreeMap<u16, (u64, u64)> = BTreeMap::new();
        let mut release = Vec::new();
        for change in changes {
            match *change {
                Change::Reset => {
                    w.reset = true;
                    receipts.clear();
                    hold.clear();
                    release.clear();
                }
                Change::Received(r) => {
                    receipts.push(r);
                    if r.qos == 2 {
                        hold.insert(r.pkid, (first_seq, r.digest));
                        release.retain(|p| *p != r.pkid);
                    }
                }
                Change::Released(pkid) => {
                    hold.remove(&pkid);
                    release.push(pkid);
                }
            }
        }
        let kept: Vec<&Stored> = if w.reset {
            w.removes
                .extend(self.commits.iter().map(|c| receipts_key(c.no)));
            w.removes.extend(self.held.keys().map(|p| held_key(*p)));
            Vec::new()
        } else {
            self.commits.iter().collect()
        };
        let mut total: usize = kept.iter().map(|c| c.receipts).sum::<usize>() + receipts.len();
        for c in &kept {
            if total - c.receipts < keep {
                break;
            }
            total -= c.receipts;
            w.removes.push(receipts_key(c.no));
            w.trimmed += 1;
        }
        // With keep = 0 not even this commit's receipts are stored.
        if !receipts.is_empty() && keep > 0 {
            let c = Commit {
                no: self.next_no,
                first_seq,
                receipts,
            };
            w.puts.push((receipts_key(c.no), encode_commit(&c)));
            w.commit = Some(Stored {
                no: c.no,
                first_seq,
                receipts: c.receipts.len(),
            });
        }
        for p in &release {
            if w.reset || self.held.contains_key(p) {
                w.removes.push(held_key(*p));
            }
        }
        for (p, (seq, digest)) in &hold {
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&seq.to_be_bytes());
            v.extend_from_slice(&digest.to_be_bytes());
            w.puts.push((held_key(*p), v));
        }
        w.hold = hold.into_iter().collect();
        w.release = release;
        w
    }

    /// Takes in what [`Ledger::plan`] wrote, once it is written.
    pub(super) fn apply(&mut self, w: Writes) {
        if w.reset {
            self.commits.clear();
            self.held.clear();
        }
        self.commits.drain(..w.trimmed.min(self.commits.len()));
        if let Some(c) = w.commit {
            self.next_no = c.no + 1;
            self.commits.push_back(c);
        }
        for p in w.release {
            self.held.remove(&p);
        }
        self.held.extend(w.hold);
    }

    /// Keys of what commits from kedge-seq `from` on recorded: their chunks are being discarded
    /// unacknowledged, so their messages will come again and must be journaled then.
    pub(super) fn discard_from(&mut self, from: u64) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        self.commits.retain(|c| {
            let gone = c.first_seq >= from;
            if gone {
                keys.push(receipts_key(c.no));
            }
            !gone
        });
        self.held.retain(|p, (seq, _)| {
            let gone = *seq >= from;
            if gone {
                keys.push(held_key(*p));
            }
            !gone
        });
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pkid: u16, qos: u8) -> Receipt {
        Receipt {
            pkid,
            qos,
            digest: u64::from(pkid) * 31 + 7,
        }
    }

    /// A ledger with its tree, as the queue has them.
    struct Fixture {
        l: Ledger,
        tree: sled::Tree,
    }

    impl Fixture {
        fn new(keep: usize) -> Fixture {
            let db = sled::Config::new().temporary(true).open().unwrap();
            let mut l = Ledger::default();
            l.set_keep(keep);
            Fixture {
                l,
                tree: db.open_tree("inbound").unwrap(),
            }
        }

        fn state(&self) -> Inbound {
            self.l.state(&self.tree).unwrap()
        }
    }

    fn commit(f: &mut Fixture, first_seq: u64, changes: &[Change]) -> Writes {
        let w = f.l.plan(first_seq, changes);
        for k in &w.removes {
            f.tree.remove(k).unwrap();
        }
        for (k, v) in &w.puts {
            f.tree.insert(k, v.as_slice()).unwrap();
        }
        let shown = Writes {
            puts: w.puts.clone(),
            removes: w.removes.clone(),
            ..Writes::default()
        };
        f.l.apply(w);
        shown
    }

    #[test]
    fn keeps_the_newest_commits_that_hold_keep_receipts() {
        let mut l = Fixture::new(3);
        commit(
            &mut l,
            0,
            &[Change::Received(r(1, 1)), Change::Received(r(2, 1))],
        );
        commit(&mut l, 2, &[Change::Received(r(3, 1))]);
        assert_eq!(l.state().recent, vec![r(1, 1), r(2, 1), r(3, 1)]);
        // A fourth receipt: the first commit still holds one of the newest three.
        let w = commit(&mut l, 3, &[Change::Received(r(4, 1))]);
        assert!(w.removes.is_empty(), "{w:?}");
        assert_eq!(l.state().recent, vec![r(2, 1), r(3, 1), r(4, 1)]);
        let w = commit(&mut l, 4, &[Change::Received(r(5, 1))]);
        assert_eq!(w.removes, vec![receipts_key(0)]);
        assert_eq!(l.state().recent, vec![r(3, 1), r(4, 1), r(5, 1)]);
    }

    #[test]
    fn qos2_ids_are_held_until_released_and_a_reset_forgets_everything() {
        let mut l = Fixture::new(10);
        commit(
            &mut l,
            5,
            &[Change::Received(r(7, 2)), Change::Received(r(8, 1))],
        );
        assert_eq!(l.state().held, vec![(7, r(7, 2).digest)]);
        let w = commit(&mut l, 7, &[Change::Released(7)]);
        assert_eq!(w.removes, vec![held_key(7)]);
        assert!(l.state().held.is_empty());
        // Releasing what is not held writes nothing.
        assert!(commit(&mut l, 7, &[Change::Released(9)]).is_empty());
        commit(&mut l, 7, &[Change::Received(r(9, 2))]);
        let w = commit(
            &mut l,
            8,
            &[
                Change::Received(r(10, 1)),
                Change::Reset,
                Change::Received(r(1, 2)),
            ],
        );
        assert!(w.removes.contains(&receipts_key(0)) && w.removes.contains(&held_key(9)));
        let s = l.state();
        assert_eq!(s.recent, vec![r(1, 2)], "only what came after the reset");
        assert_eq!(s.held, vec![(1, r(1, 2).digest)]);
    }

    #[test]
    fn keep_zero_stores_no_receipts() {
        let mut l = Fixture::new(0);
        let w = commit(&mut l, 0, &[Change::Received(r(1, 1))]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(l.state(), Inbound::default());
    }

    #[test]
    fn discarded_commits_lose_their_receipts_and_holds() {
        let mut l = Fixture::new(10);
        commit(&mut l, 0, &[Change::Received(r(1, 2))]);
        commit(&mut l, 1, &[Change::Received(r(2, 2))]);
        let keys = l.l.discard_from(1);
        for k in &keys {
            l.tree.remove(k).unwrap();
        }
        assert_eq!(keys, vec![receipts_key(1), held_key(2)]);
        assert_eq!(l.state().recent, vec![r(1, 2)]);
        assert_eq!(l.state().held, vec![(1, r(1, 2).digest)]);
    }

    #[test]
    fn the_stored_form_reads_back() {
        let c = Commit {
            no: 4,
            first_seq: 99,
            receipts: vec![r(1, 1), r(65535, 2)],
        };
        assert_eq!(decode_commit(4, &encode_commit(&c)), Some(c));
        assert_eq!(decode_commit(1, &[0; 12]), None);
        assert_eq!(decode_commit(1, &[0; 3]), None);
    }
}
