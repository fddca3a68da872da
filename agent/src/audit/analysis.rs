//! What `kedge audit` concludes from the `kedge-device`/`kedge-seq` headers it read: pure
//! bookkeeping, fed one record at a time, so that it can be tested without a broker.
//!
//! Every kedge numbers its records per queue, across all topics and partitions, without holes,
//! and names the queue in `kedge-queue` (a queue started afresh numbers from 0 again; agents
//! left with the same device id share `kedge-device`). So within what was read of one device's
//! queue, a number missing between its lowest and highest is a lost record (or one routed to a
//! topic that was not audited), a number read twice is a duplicate, and a number lower than the
//! one before it in the same partition is a reordering. Records without `kedge-queue` (written
//! before queues had an id) are judged per device.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::RangeInclusive;

use kedge_wire::record::{HEADER_DEVICE, HEADER_QUEUE, HEADER_SEQ};

/// How many missing ranges, duplicates and reorderings a report lists per device; the counts
/// stay exact.
pub const LISTED: usize = 20;

/// Accumulates what was read, record by record.
#[derive(Debug, Default)]
pub struct Auditor {
    /// Only this device is audited when set.
    only: Option<String>,
    /// By device, then queue id (`None`: records without one).
    devices: BTreeMap<(String, Option<String>), DeviceLog>,
    /// Records without both kedge headers (other producers, or the device filter's others).
    unmarked: u64,
    /// Records whose `kedge-seq` is not a decimal number.
    malformed: u64,
}

#[derive(Debug, Default)]
struct DeviceLog {
    seqs: Vec<u64>,
    /// Per partition: the last sequence and its offset.
    last: HashMap<i32, (u64, i64)>,
    backwards: u64,
    backwards_listed: Vec<Backward>,
}

/// A record whose `kedge-seq` is lower than the one before it in its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backward {
    /// Partition.
    pub partition: i32,
    /// Offset of the record that went backwards.
    pub offset: i64,
    /// Its sequence.
    pub seq: u64,
    /// The sequence of the record before it in the partition.
    pub after: u64,
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
    /// Lowest and highest sequence read.
    pub span: RangeInclusive<u64>,
    /// Sequences missing between the lowest and the highest.
    pub missing: u64,
    /// The first [`LISTED`] missing ranges.
    pub missing_ranges: Vec<RangeInclusive<u64>>,
    /// Records whose sequence was read before.
    pub duplicates: u64,
    /// The first [`LISTED`] duplicated sequences.
    pub duplicated: Vec<u64>,
    /// Records whose sequence is lower than the previous one in the same partition.
    pub backwards: u64,
    /// The first [`LISTED`] of them.
    pub backwards_listed: Vec<Backward>,
}

/// The verdict for everything read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One entry per device, by name.
    pub devices: Vec<DeviceReport>,
    /// Records without kedge headers or of other devices than the one asked for.
    pub unmarked: u64,
    /// Records whose `kedge-seq` is not a decimal number.
    pub malformed: u64,
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

    /// Takes one record, in offset order within its partition.
    pub fn record<'a>(
        &mut self,
        partition: i32,
        offset: i64,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) {
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
            self.unmarked += 1;
            return;
        };
        let device = String::from_utf8_lossy(device);
        if self.only.as_deref().is_some_and(|d| d != device) {
            self.unmarked += 1;
            return;
        }
        let Some(seq) = std::str::from_utf8(seq)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            self.malformed += 1;
            return;
        };
        let log = self
            .devices
            .entry((device.into_owned(), queue))
            .or_default();
        log.seqs.push(seq);
        if let Some((after, _)) = log.last.insert(partition, (seq, offset))
            && seq < after
        {
            log.backwards += 1;
            if log.backwards_listed.len() < LISTED {
                log.backwards_listed.push(Backward {
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
        let devices = self
            .devices
            .into_iter()
            .map(|((device, queue), log)| judge(device, queue, log))
            .collect();
        Report {
            devices,
            unmarked: self.unmarked,
            malformed: self.malformed,
            absent_topics: Vec::new(),
        }
    }
}

fn judge(device: String, queue: Option<String>, mut log: DeviceLog) -> DeviceReport {
    let records = log.seqs.len() as u64;
    log.seqs.sort_unstable();
    let span = match (log.seqs.first(), log.seqs.last()) {
        (Some(&a), Some(&b)) => a..=b,
        _ => 0..=0,
    };
    let (mut missing, mut missing_ranges) = (0, Vec::new());
    let (mut duplicates, mut duplicated) = (0, Vec::new());
    for pair in log.seqs.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a == b {
            duplicates += 1;
            if duplicated.len() < LISTED && duplicated.last() != Some(&a) {
                duplicated.push(a);
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
            writeln!(
                f,
                "device {}{queue}: {} records, kedge-seq {}..={}, {} missing, {} duplicates, {} backwards",
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
                    "  missing: {}{}",
                    ranges.join(", "),
                    more(d.missing_ranges.len())
                )?;
            }
            if !d.duplicated.is_empty() {
                let seqs: Vec<String> = d.duplicated.iter().map(u64::to_string).collect();
                writeln!(
                    f,
                    "  duplicated: {}{}",
                    seqs.join(", "),
                    more(d.duplicated.len())
                )?;
            }
            for b in &d.backwards_listed {
                writeln!(
                    f,
                    "  backwards: partition {} offset {}: {} after {}",
                    b.partition, b.offset, b.seq, b.after
                )?;
            }
        }
        if self.devices.is_empty() {
            writeln!(f, "no kedge records found")?;
        }
        if self.unmarked > 0 {
            writeln!(
                f,
                "{} records without kedge headers (or of other devices)",
                self.unmarked
            )?;
        }
        if self.malformed > 0 {
            writeln!(f, "{} records with an unreadable kedge-seq", self.malformed)?;
        }
        for topic in &self.absent_topics {
            writeln!(
                f,
                "topic {topic} skipped: the cluster does not have it (nothing written to it yet?)"
            )?;
        }
        writeln!(
            f,
            "{}",
            if self.is_clean() {
                "clean"
            } else {
                "NOT CLEAN: loss or duplicates"
            }
        )
    }
}

/// A hint that a list was cut at [`LISTED`].
fn more(listed: usize) -> &'static str {
    if listed >= LISTED { ", …" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds (device, partition, seq) triples with increasing offsets per partition.
    fn audit(records: &[(&str, i32, &str)], only: Option<&str>) -> Report {
        let mut a = Auditor::new(only.map(str::to_owned));
        let mut offsets: HashMap<i32, i64> = HashMap::new();
        for &(device, partition, seq) in records {
            let offset = offsets.entry(partition).or_default();
            a.record(
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
        a.finish()
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
            d.duplicated.clone(),
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
        assert_eq!(r.unmarked, 2);
    }

    #[test]
    fn queues_of_one_device_are_judged_apart() {
        // A fresh data directory numbers from 0 again; another agent with the same id too.
        let mut a = Auditor::new(Some("pi".into()));
        for (offset, (queue, seq)) in [("q1", "0"), ("q1", "1"), ("q2", "0"), ("q2", "1")]
            .into_iter()
            .enumerate()
        {
            a.record(
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
            text.contains("device pi queue q1: 2 records, kedge-seq 0..=1, 0 missing"),
            "{text}"
        );
    }

    #[test]
    fn unmarked_and_malformed_records_are_counted_not_judged() {
        let mut a = Auditor::new(None);
        a.record(0, 0, [("k", &b"v"[..])]);
        a.record(0, 1, [(HEADER_DEVICE, &b"d"[..])]);
        a.record(0, 2, [(HEADER_DEVICE, &b"d"[..]), (HEADER_SEQ, &b"x1"[..])]);
        let r = a.finish();
        assert_eq!((r.unmarked, r.malformed), (2, 1));
        assert!(r.devices.is_empty());
        assert!(r.is_clean());
    }

    #[test]
    fn lists_are_capped_but_counts_exact() {
        let seqs: Vec<String> = (0..100u64).map(|i| (i * 3).to_string()).collect();
        let records: Vec<_> = seqs.iter().map(|s| ("d", 0, s.as_str())).collect();
        let r = audit(&records, None);
        let d = &r.devices[0];
        assert_eq!(d.missing, 99 * 2);
        assert_eq!(d.missing_ranges.len(), LISTED);
        assert!(r.to_string().contains("1-2, 4-5"), "{r}");
        assert!(r.to_string().contains("NOT CLEAN"), "{r}");
    }
}
