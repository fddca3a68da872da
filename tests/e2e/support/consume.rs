//! The independent consumer: `tests/peers/consume.py` (confluent-kafka), parsed into records.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::publish::Message;
use super::{python_bin, repo_root, run};

/// One record as the independent consumer read it from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Partition it was read from.
    pub partition: u32,
    /// Offset within that partition.
    pub offset: i64,
    /// Record key, `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Vec<u8>,
    /// Headers in order, duplicates kept.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Unix time in seconds when the consumer received it.
    pub received_at: f64,
}

impl Consumed {
    /// Value of the first header called `name`, as UTF-8 text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| String::from_utf8(value.clone()).expect("UTF-8 header value"))
    }

    /// The `kedge-seq` header as a number.
    pub fn seq(&self) -> u64 {
        let seq = self
            .header("kedge-seq")
            .unwrap_or_else(|| panic!("no kedge-seq header: {self:?}"));
        seq.parse()
            .unwrap_or_else(|e| panic!("kedge-seq {seq:?} is not a u64: {e}"))
    }
}

/// Reads `topic` from offset 0 on every partition until `expect` records arrived (and a second
/// passed without more) or `timeout` ran out; returns what was read, possibly fewer.
pub fn consume(bootstrap: &str, topic: &str, expect: usize, timeout: Duration) -> Vec<Consumed> {
    let mut command = Command::new(python_bin());
    command
        .arg(repo_root().join("tests/peers/consume.py"))
        .args(["--bootstrap", bootstrap, "--topic", topic])
        .args([
            "--expect",
            &expect.to_string(),
            "--timeout",
            &timeout.as_secs_f64().to_string(),
        ]);
    let output = run(command, timeout + Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "consume.py failed ({}):\n{stderr}",
        output.status
    );
    eprint!("{stderr}");
    String::from_utf8(output.stdout)
        .expect("consume.py prints UTF-8")
        .lines()
        .map(parse_record)
        .collect()
}

/// Published messages matched against consumed records by payload.
#[derive(Debug)]
pub struct Tally {
    /// Indexes of published messages no record carries.
    pub missing: Vec<usize>,
    /// Records beyond the first for the same message.
    pub duplicates: usize,
    /// Records whose value matches no published message.
    pub unknown: usize,
    /// For each record, the index of the message it carries (`None` if unknown).
    pub matches: Vec<Option<usize>>,
}

/// Matches records to published messages by their (unique) payloads.
pub fn tally(published: &[Message], records: &[Consumed]) -> Tally {
    let index: HashMap<&[u8], usize> = published
        .iter()
        .enumerate()
        .map(|(i, message)| (message.payload.as_ref(), i))
        .collect();
    assert_eq!(
        index.len(),
        published.len(),
        "published payloads must be unique"
    );
    let mut seen = vec![0usize; published.len()];
    let matches: Vec<Option<usize>> = records
        .iter()
        .map(|record| {
            let found = index.get(record.value.as_slice()).copied();
            if let Some(i) = found {
                seen[i] += 1;
            }
            found
        })
        .collect();
    Tally {
        missing: (0..published.len()).filter(|&i| seen[i] == 0).collect(),
        duplicates: seen.iter().map(|&n| n.saturating_sub(1)).sum(),
        unknown: matches.iter().filter(|m| m.is_none()).count(),
        matches,
    }
}

/// Parses one JSON line printed by consume.py.
fn parse_record(line: &str) -> Consumed {
    let json: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad consume.py line {line:?}: {e}"));
    let bytes = |value: &Value| value.as_str().map(base64_decode);
    Consumed {
        partition: json["partition"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .expect("partition"),
        offset: json["offset"].as_i64().expect("offset"),
        key: bytes(&json["key"]),
        value: bytes(&json["value"]).unwrap_or_else(|| panic!("record without a value: {line}")),
        headers: json["headers"]
            .as_array()
            .expect("headers list")
            .iter()
            .map(|pair| {
                let name = pair[0].as_str().expect("header name").to_owned();
                (name, bytes(&pair[1]).unwrap_or_default())
            })
            .collect(),
        received_at: json["received_at"].as_f64().expect("received_at"),
    }
}

/// Decodes standard, padded base64 (what Python's `base64.b64encode` prints).
fn base64_decode(text: &str) -> Vec<u8> {
    let sextet = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 character {:?} in {text:?}", char::from(c)),
        }
    };
    let data = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | sextet(c) << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    /// The decoder agrees with RFC 4648's test vectors.
    #[test]
    fn base64_rfc4648_vectors() {
        for (encoded, decoded) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(encoded), decoded.as_bytes(), "{encoded}");
        }
    }
}
