//! What `kedge audit` concludes from the `kedge-device`/`kedge-seq` headers it read: pure
//! bookkeeping, fed one record at a time, so that it can be tested without a broker.
//!
//! Every kedge numbers its records per queue, across all topics and partitions, without holes,
//! and names the queue in `kedge-queue` (a queue started afresh numbers from 0 again; agents
//! left with the same device id share `kedge-device`). So within what was read of one device's
//! queue, a number missing between its lowest and highest is a lost record (or one routed to a
//! topic that was not audited), a number read twice is a duplicate, and a number lower than the
//! one before it in the same partition of the same topic is a reordering. Records without
//! `kedge-queue` (written before queues had an id) are judged per device.
//!
//! Every line of the report names the topics it is about: a sequence spans topics, and a
//! number seen missing in the topics read may well be in one that was not.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::RangeInclusive;

use kedge_wire::record::{HEADER_DEVICE, HEADER_QUEUE, HEADER_SEQ};

/// How many missing ranges, duplicates and reorderings a report lists per device; the counts
/// stay exact.
pub const LISTED: usize = 20;

/// A topic the auditor reads, as [`Auditor::topic`] numbered it: an index, so that the
/// sequence of every record read keeps its topic in 4 bytes rather than a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(u32);

/// Accumulates what was read, record by record.
#[derive(Debug, Default)]
pub struct Auditor {
    /// Only this device is audited when set.
    only: Option<String>,
    /// The topics read, by [`TopicId`].
    topics: Vec<String>,
    /// By device, then queue id (`None`: records without one).
    devices: BTreeMap<(String, Option<String>), DeviceLog>,
    /// Per topic: records without both kedge headers (other producers, or the device filter's
    /// others).
    unmarked: Vec<u64>,
    /// Per topic: records whose `kedge-seq` is not a decimal number.
    malformed: Vec<u64>,
    /// Per topic: batches whose records do not decode, and where and why the first did not.
    undecodable: Vec<(u64, Option<String>)>,
}

#[derive(Debug, Default)]
struct DeviceLog {
    /// Every sequence read, with the topic it was read in.
    seqs: Vec<(u64, TopicId)>,
    /// Per topic and partition: the last sequence and its offset.
    last: HashMap<(TopicId, i32), (u64, i64)>,
    backwards: u64,
    backwards_listed: Vec<Backward>,
}

/// A record whose `kedge-seq` is lower than the one before it in its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backward {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset of the record that went backwards.
    pub offset: i64,
    /// Its sequence.
    pub seq: u64,
    /// The sequence of the record before it in the partition.
    pub after: u64,
}

/// A sequence read more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The sequence.
    pub seq: u64,
    /// The topics its copies were read in, each once, in reading order.
    pub topics: Vec<String>,
}

/// The verdict for one device's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// The `kedge-device` header.
    pub device: String,
    /// The `kedge-queue` header, when the records carry one.
    pub queue: Option<String>,
    /// Records read.
    pub records: u64,
    /// Records read per topic, in reading order; topics without any are left out.
    pub topics: Vec<(String, u64)>,
    /// Lowest and highest sequence read.
    pub span: RangeInclusive<u64>,
    /// Sequences missing between the lowest and the highest.
    pub missing: u64,
    /// The first [`LISTED`] missing ranges.
    pub missing_ranges: Vec<RangeInclusive<u64>>,
    /// Records whose sequence was read before.
    pub duplicates: u64,
    /// The first [`LISTED`] duplicated sequences.
    pub duplicated: Vec<Duplicate>,
    /// Records whose sequence is lower than the previous one in the same partition.
    pub backwards: u64,
    /// The first [`LISTED`] of them.
    pub backwards_listed: Vec<Backward>,
}

/// The verdict for everything read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The topics read, in reading order.
    pub topics: Vec<String>,
    /// One entry per device, by name.
    pub devices: Vec<DeviceReport>,
    /// Per topic, records without kedge headers or of other devices than the one asked for;
    /// topics without any are left out.
    pub unmarked: Vec<(String, u64)>,
    /// Per topic, records whose `kedge-seq` is not a decimal number; topics without any are
    /// left out.
    pub malformed: Vec<(String, u64)>,
    /// Per topic, batches whose records do not decode (another producer's, written that way),
    /// with where and why the first did not; topics without any are left out. Their records
    /// are not counted: a kedge record in one would show as missing.
    pub undecodable: Vec<(String, u64, String)>,
    /// Topics that were skipped because the cluster does not have them.
    pub absent_topics: Vec<String>,
}

impl Auditor {
    /// An auditor for every device, or for `only` that one.
    pub fn new(only: Option<String>) -> Self {
        Auditor {
            only,
            ..Auditor::default()
        }
    }

    /// The id of topic `name`, to read it with [`Auditor::record`]: the report names it as
    /// read even when it holds no record.
    pub fn topic(&mut self, name: &str) -> TopicId {
        let index = match self.topics.iter().position(|t| t == name) {
            Some(i) => i,
            None => {
                self.topics.push(name.to_owned());
                self.unmarked.push(0);
                self.malformed.push(0);
                self.undecodable.push((0, None));
                self.topics.len() - 1
            }
        };
        TopicId(u32::try_from(index).expect("fewer than 2^32 topics"))
    }

    /// Counts a batch of `topic` whose records do not decode: `what` says where and why.
    pub fn undecodable(&mut self, topic: TopicId, what: impl FnOnce() -> String) {
        let (n, first) = &mut self.undecodable[topic.0 as usize];
        *n += 1;
        first.get_or_insert_with(what);
    }

    /// Takes one record of `topic`, in offset order within its partition.
    pub fn record<'a>(
        &mut self,
        topic: TopicId,
        partition: i32,
        offset: i64,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) {
        let at = topic.0 as usize;
        let (mut device, mut queue, mut seq) = (None, None, None);
        for (name, value) in headers {
            match name {
                HEADER_DEVICE => device = Some(value),
                HEADER_QUEUE => queue = Some(String::from_utf8_lossy(value).into_owned()),
                HEADER_SEQ => seq = Some(value),
                _ => {}
            }
        }
        let (Some(device), Some(seq)) = (device, seq) else {
            self.unmarked[at] += 1;
            return;
        };
        let device = String::from_utf8_lossy(device);
        if self.only.as_deref().is_some_and(|d| d != device) {
            self.unmarked[at] += 1;
            return;
        }
        let Some(seq) = std::str::from_utf8(seq)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            self.malformed[at] += 1;
            return;
        };
        let log = self
            .devices
            .entry((device.into_owned(), queue))
            .or_default();
        log.seqs.push((seq, topic));
        if let Some((after, _)) = log.last.insert((topic, partition), (seq, offset))
            && seq < after
        {
            log.backwards += 1;
            if log.backwards_listed.len() < LISTED {
                log.backwards_listed.push(Backward {
                    topic: self.topics[at].clone(),
                    partition,
                    offset,
                    seq,
                    after,
                });
            }
        }
    }

    /// The verdict.
    pub fn finish(self) -> Report {
        let topics = self.topics;
        let devices = self
            .devices
            .into_iter()
            .map(|((device, queue), log)| judge(device, queue, log, &topics))
            .collect();
        let per_topic = |counts: Vec<u64>| {
            topics
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|(t, n)| (t.clone(), n))
                .collect()
        };
        let undecodable = topics
            .iter()
            .zip(self.undecodable)
            .filter_map(|(t, (n, first))| Some((t.clone(), n, first?)))
            .collect();
        Report {
            unmarked: per_topic(self.unmarked),
            malformed: per_topic(self.malformed),
            undecodable,
            devices,
            topics,
            absent_topics: Vec::new(),
        }
    }
}

fn judge(
    device: String,
    queue: Option<String>,
    mut log: DeviceLog,
    topics: &[String],
) -> DeviceReport {
    let records = log.seqs.len() as u64;
    // By sequence, then topic: a duplicate's copies are together, their topics in order.
    log.seqs.sort_unstable();
    let mut per_topic = vec![0u64; topics.len()];
    for (_, t) in &log.seqs {
        per_topic[t.0 as usize] += 1;
    }
    let span = match (log.seqs.first(), log.seqs.last()) {
        (Some(&(a, _)), Some(&(b, _))) => a..=b,
        _ => 0..=0,
    };
    let (mut missing, mut missing_ranges) = (0, Vec::new());
    let (mut duplicates, mut duplicated) = (0, Vec::<Duplicate>::new());
    let name = |t: TopicId| topics[t.0 as usize].clone();
    for pair in log.seqs.windows(2) {
        let ((a, first), (b, second)) = (pair[0], pair[1]);
        if a == b {
            duplicates += 1;
            match duplicated.last_mut() {
                // A third copy or more: its topic, unless the copy before it was in the same.
                Some(d) if d.seq == a => {
                    if second != first {
                        d.topics.push(name(second));
                    }
                }
                _ => {
                    if duplicated.len() < LISTED {
                        let mut names = vec![name(first)];
                        if second != first {
                            names.push(name(second));
                        }
                        duplicated.push(Duplicate {
                            seq: a,
                            topics: names,
                        });
                    }
                }
            }
        } else if b > a + 1 {
            missing += b - a - 1;
            if missing_ranges.len() < LISTED {
                missing_ranges.push(a + 1..=b - 1);
            }
        }
    }
    DeviceReport {
        device,
        queue,
        records,
        topics: topics
            .iter()
            .zip(per_topic)
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| (t.clone(), n))
            .collect(),
        span,
        missing,
        missing_ranges,
        duplicates,
        duplicated,
        backwards: log.backwards,
        backwards_listed: log.backwards_listed,
    }
}

impl Report {
    /// Whether nothing was lost or duplicated (reorderings are reported, not judged: kedge
    /// does not promise order across its resends).
    pub fn is_clean(&self) -> bool {
        self.devices
            .iter()
            .all(|d| d.missing == 0 && d.duplicates == 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let read = named(&self.topics);
        for (i, d) in self.devices.iter().enumerate() {
            let queues = self.devices.iter().filter(|o| o.device == d.device).count();
            if queues > 1 && self.devices[..i].iter().all(|o| o.device != d.device) {
                writeln!(
                    f,
                    "device {}: records of {queues} queues, each judged on its own (a data \
                     directory started afresh, or agents sharing this device id)",
                    d.device
                )?;
            }
            let queue = d
                .queue
                .as_ref()
                .map(|q| format!(" queue {q}"))
                .unwrap_or_default();
            let topics = match d.topics.as_slice() {
                [(topic, _)] => format!("topic {topic}"),
                several => {
                    let each: Vec<String> =
                        several.iter().map(|(t, n)| format!("{t} {n}")).collect();
                    format!("topics {}", each.join(", "))
                }
            };
            writeln!(
                f,
                "device {}{queue}: {} records, kedge-seq {}..={}, {} missing, {} duplicates, {} backwards ({topics})",
                d.device,
                d.records,
                d.span.start(),
                d.span.end(),
                d.missing,
                d.duplicates,
                d.backwards
            )?;
            if !d.missing_ranges.is_empty() {
                let ranges: Vec<String> = d
                    .missing_ranges
                    .iter()
                    .map(|r| {
                        if r.start() == r.end() {
                            r.start().to_string()
                        } else {
                            format!("{}-{}", r.start(), r.end())
                        }
                    })
                    .collect();
                writeln!(
                    f,
                    "  missing from {read}: {}{}",
                    ranges.join(", "),
                    more(d.missing_ranges.len())
                )?;
            }
            // One line per set of topics the copies were in, in order of first appearance.
            let mut groups: Vec<(&[String], Vec<String>)> = Vec::new();
            for dup in &d.duplicated {
                let seq = dup.seq.to_string();
                match groups.iter_mut().find(|(t, _)| *t == dup.topics.as_slice()) {
                    Some((_, seqs)) => seqs.push(seq),
                    None => groups.push((&dup.topics, vec![seq])),
                }
            }
            let last = groups.len().saturating_sub(1);
            for (g, (topics, seqs)) in groups.iter().enumerate() {
                let place = match topics {
                    [topic] => format!("in topic {topic}"),
                    several => format!("across topics {}", several.join(", ")),
                };
                let cut = if g == last {
                    more(d.duplicated.len())
                } else {
                    ""
                };
                writeln!(f, "  duplicated {place}: {}{cut}", seqs.join(", "))?;
            }
            for b in &d.backwards_listed {
                writeln!(
                    f,
                    "  backwards in topic {}: partition {} offset {}: {} after {}",
                    b.topic, b.partition, b.offset, b.seq, b.after
                )?;
            }
        }
        if self.devices.is_empty() {
            writeln!(f, "no kedge records found in {read}")?;
        }
        for (topic, n) in &self.unmarked {
            writeln!(
                f,
                "{n} records without kedge headers (or of other devices) in topic {topic}"
            )?;
        }
        for (topic, n) in &self.malformed {
            writeln!(
                f,
                "{n} records with an unreadable kedge-seq in topic {topic}"
            )?;
        }
        for (topic, n, first) in &self.undecodable {
            writeln!(
                f,
                "{n} batches in topic {topic} do not decode, their records not counted (the first: {first})"
            )?;
        }
        for topic in &self.absent_topics {
            writeln!(
                f,
                "topic {topic} skipped: the cluster does not have it (nothing written to it yet?)"
            )?;
        }
        if self.devices.iter().any(|d| d.missing > 0) {
            // A config names only the routing rules' topics; plugins choose theirs freely.
            let flags: Vec<String> = self.topics.iter().map(|t| format!("--topic {t}")).collect();
            writeln!(
                f,
                "missing records may be in a topic not read here, such as one a plugin routes \
                 to: name every topic the device writes to, e.g. {} --topic OTHER",
                flags.join(" ")
            )?;
        }
        writeln!(
            f,
            "{read}: {}",
            if self.is_clean() {
                "clean"
            } else {
                "NOT CLEAN: loss or duplicates"
            }
        )
    }
}

/// `topics` as a report names them: `topic a` or `topics a, b`.
fn named(topics: &[String]) -> String {
    match topics {
        [] => "no topic".to_owned(),
        [topic] => format!("topic {topic}"),
        several => format!("topics {}", several.join(", ")),
    }
}

/// A hint that a list was cut at [`LISTED`].
fn more(listed: usize) -> &'static str {
    if listed >= LISTED { ", …" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (device, partition, seq) of one record.
    type Rec<'a> = (&'a str, i32, &'a str);

    /// Feeds records of topic `t` with increasing offsets per partition.
    fn audit(records: &[Rec<'_>], only: Option<&str>) -> Report {
        audit_topics(&[("t", records)], only)
    }

    /// [`audit`] of several topics, read one after the other.
    fn audit_topics(topics: &[(&str, &[Rec<'_>])], only: Option<&str>) -> Report {
        let mut a = Auditor::new(only.map(str::to_owned));
        for (topic, records) in topics {
            feed(&mut a, topic, records);
        }
        a.finish()
    }

    fn feed(a: &mut Auditor, topic: &str, records: &[Rec<'_>]) {
        let topic = a.topic(topic);
        let mut offsets: HashMap<i32, i64> = HashMap::new();
        for &(device, partition, seq) in records {
            let offset = offsets.entry(partition).or_default();
            a.record(
                topic,
                partition,
                *offset,
                [
                    ("other", &b"x"[..]),
                    (HEADER_DEVICE, device.as_bytes()),
                    (HEADER_SEQ, seq.as_bytes()),
                ],
            );
            *offset += 1;
        }
    }

    /// (missing, ranges, duplicates, duplicated, backwards) of the only device.
    type Summary = (u64, Vec<RangeInclusive<u64>>, u64, Vec<u64>, u64);

    fn summary(r: &Report) -> Summary {
        assert_eq!(r.devices.len(), 1, "{r}");
        let d = &r.devices[0];
        (
            d.missing,
            d.missing_ranges.clone(),
            d.duplicates,
            d.duplicated.iter().map(|d| d.seq).collect(),
            d.backwards,
        )
    }

    #[test]
    fn table_of_sequences() {
        let table: &[(&[&str], i32, Summary)] = &[
            (&["1", "2", "3"], 0, (0, vec![], 0, vec![], 0)),
            (&["5"], 0, (0, vec![], 0, vec![], 0)),
            (
                &["1", "2", "5", "6", "9"],
                0,
                (4, vec![3..=4, 7..=8], 0, vec![], 0),
            ),
            (&["1", "2", "2", "2", "3"], 0, (0, vec![], 2, vec![2], 0)),
            (&["1", "3", "2", "4"], 0, (0, vec![], 0, vec![], 1)),
            (&["1", "2", "3", "2"], 0, (0, vec![], 1, vec![2], 1)),
            (
                &["10", "12", "12", "13"],
                0,
                (1, vec![11..=11], 1, vec![12], 0),
            ),
        ];
        for (seqs, _, expected) in table {
            let records: Vec<_> = seqs.iter().map(|s| ("d", 0, *s)).collect();
            let r = audit(&records, None);
            assert_eq!(&summary(&r), expected, "{seqs:?}");
            assert_eq!(r.is_clean(), expected.0 == 0 && expected.2 == 0, "{seqs:?}");
        }
    }

    #[test]
    fn sequences_interleave_across_partitions_without_reordering() {
        let r = audit(
            &[("d", 0, "1"), ("d", 1, "2"), ("d", 0, "3"), ("d", 1, "4")],
            None,
        );
        assert_eq!(summary(&r), (0, vec![], 0, vec![], 0));
        // Lower numbers in a partition read later are no reordering across partitions.
        let r = audit(
            &[("d", 1, "3"), ("d", 1, "4"), ("d", 0, "1"), ("d", 0, "2")],
            None,
        );
        assert_eq!(summary(&r), (0, vec![], 0, vec![], 0));
    }

    #[test]
    fn devices_are_judged_apart_and_filtered() {
        let records = [("a", 0, "1"), ("b", 0, "1"), ("a", 0, "3"), ("b", 0, "2")];
        let r = audit(&records, None);
        assert_eq!(r.devices.len(), 2);
        assert_eq!(r.devices[0].missing_ranges, vec![2..=2]);
        assert_eq!(r.devices[1].missing, 0);
        let r = audit(&records, Some("b"));
        assert_eq!(summary(&r), (0, vec![], 0, vec![], 0));
        assert_eq!(r.unmarked, [("t".to_owned(), 2)]);
    }

    #[test]
    fn queues_of_one_device_are_judged_apart() {
        // A fresh data directory numbers from 0 again; another agent with the same id too.
        let mut a = Auditor::new(Some("pi".into()));
        let topic = a.topic("t");
        for (offset, (queue, seq)) in [("q1", "0"), ("q1", "1"), ("q2", "0"), ("q2", "1")]
            .into_iter()
            .enumerate()
        {
            a.record(
                topic,
                0,
                offset as i64,
                [
                    (HEADER_DEVICE, &b"pi"[..]),
                    (HEADER_QUEUE, queue.as_bytes()),
                    (HEADER_SEQ, seq.as_bytes()),
                ],
            );
        }
        let r = a.finish();
        assert_eq!(r.devices.len(), 2);
        assert!(r.is_clean(), "{r}");
        let text = r.to_string();
        assert!(text.contains("device pi: records of 2 queues"), "{text}");
        assert!(
            text.contains("device pi queue q1: 2 records, kedge-seq 0..=1, 0 missing, 0 duplicates, 0 backwards (topic t)\n"),
            "{text}"
        );
    }

    #[test]
    fn unmarked_and_malformed_records_are_counted_not_judged() {
        let mut a = Auditor::new(None);
        let (t, u) = (a.topic("t"), a.topic("u"));
        a.record(t, 0, 0, [("k", &b"v"[..])]);
        a.record(t, 0, 1, [(HEADER_DEVICE, &b"d"[..])]);
        a.record(
            u,
            0,
            0,
            [(HEADER_DEVICE, &b"d"[..]), (HEADER_SEQ, &b"x1"[..])],
        );
        let r = a.finish();
        let count = |topic: &str, n| vec![(topic.to_owned(), n)];
        assert_eq!(
            (&r.unmarked, &r.malformed),
            (&count("t", 2), &count("u", 1))
        );
        assert!(r.devices.is_empty());
        assert!(r.is_clean());
        assert_eq!(
            r.to_string(),
            "no kedge records found in topics t, u
2 records without kedge headers (or of other devices) in topic t
1 records with an unreadable kedge-seq in topic u
topics t, u: clean
"
        );
    }

    #[test]
    fn lists_are_capped_but_counts_exact() {
        let seqs: Vec<String> = (0..100u64).map(|i| (i * 3).to_string()).collect();
        let records: Vec<_> = seqs.iter().map(|s| ("d", 0, s.as_str())).collect();
        let r = audit(&records, None);
        let d = &r.devices[0];
        assert_eq!(d.missing, 99 * 2);
        assert_eq!(d.missing_ranges.len(), LISTED);
        assert!(
            r.to_string().contains("missing from topic t: 1-2, 4-5"),
            "{r}"
        );
        assert!(r.to_string().contains("58-59, …\n"), "{r}");
        assert!(r.to_string().contains("NOT CLEAN"), "{r}");
    }

    /// Each topic's partitions are their own logs: partition 0 of a topic read after another's
    /// starts afresh, not "backwards".
    #[test]
    fn partitions_of_different_topics_are_not_compared() {
        let r = audit_topics(
            &[
                ("readings", &[("d", 0, "1"), ("d", 0, "4"), ("d", 0, "3")]),
                ("lab", &[("d", 0, "2")]),
            ],
            None,
        );
        assert_eq!(summary(&r), (0, vec![], 0, vec![], 1));
        let d = &r.devices[0];
        assert_eq!(d.backwards_listed[0].topic, "readings");
        assert_eq!(
            d.topics,
            [("readings".to_owned(), 3), ("lab".to_owned(), 1)]
        );
        assert_eq!(
            r.to_string(),
            "device d: 4 records, kedge-seq 1..=4, 0 missing, 0 duplicates, 1 backwards (topics readings 3, lab 1)
  backwards in topic readings: partition 0 offset 2: 3 after 4
topics readings, lab: clean
"
        );
    }

    #[test]
    fn duplicates_name_the_topics_of_their_copies() {
        let r = audit_topics(
            &[
                (
                    "a",
                    &[
                        ("d", 0, "1"),
                        ("d", 0, "2"),
                        ("d", 1, "2"),
                        ("d", 0, "3"),
                        ("d", 0, "5"),
                    ],
                ),
                (
                    "b",
                    &[("d", 0, "3"), ("d", 0, "4"), ("d", 0, "5"), ("d", 0, "5")],
                ),
                // A topic with no record of this device is read, but not one of its topics.
                ("c", &[("e", 0, "1")]),
            ],
            Some("d"),
        );
        assert_eq!(summary(&r), (0, vec![], 4, vec![2, 3, 5], 0));
        let duplicated: Vec<(u64, Vec<String>)> = r.devices[0]
            .duplicated
            .iter()
            .map(|d| (d.seq, d.topics.clone()))
            .collect();
        let names = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            duplicated,
            [
                (2, names(&["a"])),
                (3, names(&["a", "b"])),
                (5, names(&["a", "b"]))
            ]
        );
        assert_eq!(
            r.to_string(),
            "device d: 9 records, kedge-seq 1..=5, 0 missing, 4 duplicates, 0 backwards (topics a 5, b 4)
  duplicated in topic a: 2
  duplicated across topics a, b: 3, 5
1 records without kedge headers (or of other devices) in topic c
topics a, b, c: NOT CLEAN: loss or duplicates
"
        );
    }

    /// The user audited a config's topics while a plugin routed records to another:
    /// they looked lost, and nothing said where else to look.
    #[test]
    fn missing_records_suggest_naming_other_topics() {
        let mut a = Auditor::new(None);
        feed(
            &mut a,
            "readings",
            &[("d", 0, "0"), ("d", 0, "1"), ("d", 0, "3")],
        );
        a.topic("kedge-dead-letter");
        let mut r = a.finish();
        r.absent_topics = vec!["other".into()];
        assert_eq!(
            r.to_string(),
            "device d: 3 records, kedge-seq 0..=3, 1 missing, 0 duplicates, 0 backwards (topic readings)
  missing from topics readings, kedge-dead-letter: 2
topic other skipped: the cluster does not have it (nothing written to it yet?)
missing records may be in a topic not read here, such as one a plugin routes to: name every topic the device writes to, e.g. --topic readings --topic kedge-dead-letter --topic OTHER
topics readings, kedge-dead-letter: NOT CLEAN: loss or duplicates
"
        );
        // Duplicates alone are no reason to look elsewhere.
        let r = audit(&[("d", 0, "0"), ("d", 0, "0")], None);
        assert!(!r.to_string().contains("--topic"), "{r}");
    }
}
