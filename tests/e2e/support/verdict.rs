//! What a fault test checks in Kafka afterwards: every published message present, no `kedge-seq`
//! twice; MQTT redeliveries (one payload under two `kedge-seq`s) are counted but allowed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::consume::{Consumed, consume};
use super::publish::Message;

/// The outcome of reading a topic back and matching it against the published messages.
#[derive(Debug)]
pub struct Verdict {
    /// Records read.
    pub records: usize,
    /// Indexes of published (and mosquitto-acknowledged) messages that no record carries.
    pub missing: Vec<usize>,
    /// Records beyond the first with the same `kedge-device`, `kedge-queue` and `kedge-seq`:
    /// kedge's producer wrote them twice.
    pub duplicates: usize,
    /// A few of the duplicated `kedge-seq`s, for the failure message.
    pub duplicated_seqs: Vec<u64>,
    /// Distinct `kedge-seq`s beyond the first carrying the same payload (MQTT QoS 1 redelivery).
    pub redeliveries: usize,
    /// Records whose value matches no published message.
    pub unknown: usize,
}

impl Verdict {
    /// Matches `records` against `published` by payload and by `kedge-seq`.
    pub fn of(published: &[Message], records: &[Consumed]) -> Verdict {
        let index: HashMap<&[u8], usize> = published
            .iter()
            .enumerate()
            .map(|(i, message)| (message.payload.as_ref(), i))
            .collect();
        assert_eq!(
            index.len(),
            published.len(),
            "published payloads are unique"
        );
        // A record is named by its device, its queue and its kedge-seq together: in a fleet
        // every device numbers from 0.
        let name = |r: &Consumed| {
            (
                r.header("kedge-device").unwrap_or_default(),
                r.header("kedge-queue").unwrap_or_default(),
                r.seq(),
            )
        };
        let mut seqs_of: Vec<HashSet<(String, String, u64)>> =
            vec![HashSet::new(); published.len()];
        let mut copies: HashMap<(String, String, u64), usize> = HashMap::new();
        let mut unknown = 0;
        for record in records {
            let id = name(record);
            *copies.entry(id.clone()).or_default() += 1;
            match index.get(record.value.as_slice()) {
                Some(&i) => {
                    seqs_of[i].insert(id);
                }
                None => unknown += 1,
            }
        }
        let mut duplicated_seqs: Vec<u64> = copies
            .iter()
            .filter(|&(_, &n)| n > 1)
            .map(|((_, _, seq), _)| *seq)
            .collect();
        duplicated_seqs.sort_unstable();
        duplicated_seqs.truncate(10);
        Verdict {
            records: records.len(),
            missing: (0..published.len())
                .filter(|&i| seqs_of[i].is_empty())
                .collect(),
            duplicates: copies.values().map(|&n| n - 1).sum(),
            duplicated_seqs,
            redeliveries: seqs_of.iter().map(|s| s.len().saturating_sub(1)).sum(),
            unknown,
        }
    }

    /// Prints the figures under `label`.
    pub fn report(&self, label: &str, published: usize) {
        eprintln!(
            "{label}: {published} published, {} records read, {} missing, {} kedge-seq \
             duplicates, {} MQTT redeliveries, {} unknown",
            self.records,
            self.missing.len(),
            self.duplicates,
            self.redeliveries,
            self.unknown
        );
    }

    /// Asserts the delivery contract: nothing missing, no `kedge-seq` written twice.
    pub fn assert_exactly_once(&self) {
        assert!(
            self.missing.is_empty(),
            "{} published messages missing in Kafka, e.g. #{:?}",
            self.missing.len(),
            &self.missing[..self.missing.len().min(10)]
        );
        assert_eq!(
            self.duplicates, 0,
            "kedge wrote records twice, e.g. kedge-seq {:?}",
            self.duplicated_seqs
        );
    }
}

/// Reads `topic` from offset 0 until every message of `published` is there (re-reading, since
/// extra copies count towards the consumer's `--expect`) or `timeout` passes; judges the last read.
pub fn read_back(
    bootstrap: &str,
    topic: &str,
    published: &[Message],
    timeout: Duration,
) -> Verdict {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = left.clamp(Duration::from_secs(5), Duration::from_secs(60));
        let records = consume(bootstrap, topic, published.len(), attempt);
        let verdict = Verdict::of(published, &records);
        if verdict.missing.is_empty() || Instant::now() >= deadline {
            return verdict;
        }
        eprintln!(
            "read_back: {} of {} still missing in {topic}, reading again",
            verdict.missing.len(),
            published.len()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Prints how long a test ran when dropped (also when it fails).
pub struct Stopwatch {
    /// Test name.
    name: &'static str,
    /// When the test began.
    started: Instant,
}

impl Stopwatch {
    /// Starts timing test `name`.
    pub fn start(name: &'static str) -> Stopwatch {
        Stopwatch {
            name,
            started: Instant::now(),
        }
    }
}

impl Drop for Stopwatch {
    fn drop(&mut self) {
        eprintln!("{}: took {:.1?}", self.name, self.started.elapsed());
    }
}
