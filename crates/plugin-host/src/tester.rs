//! `kedge plugin test`: runs one plugin on sample events from a JSON-lines file, the way the
//! agent would (grouped by subject, faults bisected), and prints what it decided.
//!
//! Input lines: events, `{"subject": …, "value": …, "key": …, "headers": [[name, value], …],
//! "timestamp_ms": …, "topic": …}` (only `subject` and `value` are required), and ticks,
//! `{"tick": now_ms}`. Bytes are JSON strings, `{"hex": "…"}` for bytes that are not UTF-8, or
//! any other JSON value, which stands for its compact text. `topic` is the Kafka topic an
//! earlier plugin chose (`batch-info.topic`). Output: one line per event and per tick, in input
//! order, then one per `--tick`.

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::chain::MAX_CALL_EVENTS;
use super::host::{BatchInfo, Event, Header, Output, Verdict};
use super::isolate::{Caller, Fault, isolate};
use super::plugin::Plugin;

/// One event of the input.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The MQTT topic.
    pub subject: String,
    /// The Kafka topic an earlier plugin chose, if any.
    pub topic: Option<String>,
    /// The event.
    pub event: Event,
}

/// One input line, parsed.
#[derive(Debug, Clone)]
pub enum Line {
    /// An event.
    Event(Sample),
    /// A `tick` at this clock, after the events before it.
    Tick(i64),
}

const FIELDS: [&str; 6] = [
    "subject",
    "value",
    "key",
    "headers",
    "timestamp_ms",
    "topic",
];

/// Parses the JSON-lines input; errors name the line.
pub fn parse_input(text: &str, file: &str) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |why: String| format!("{file}:{}: {why}", n + 1);
        let v: Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| at("expected a JSON object".into()))?;
        if let Some(tick) = obj.get("tick") {
            if obj.len() > 1 {
                return Err(at("a tick line has only `tick`: {\"tick\": now_ms}".into()));
            }
            let now = tick
                .as_i64()
                .ok_or_else(|| at("tick: expected milliseconds since the Unix epoch".into()))?;
            out.push(Line::Tick(now));
            continue;
        }
        for k in obj.keys() {
            if !FIELDS.contains(&k.as_str()) {
                return Err(at(format!(
                    "unknown field {k:?}; expected {} (or a line {{\"tick\": now_ms}})",
                    FIELDS.join(", ")
                )));
            }
        }
        let subject = obj
            .get("subject")
            .and_then(Value::as_str)
            .ok_or_else(|| at("`subject` (the MQTT topic, a string) is required".into()))?
            .to_owned();
        let value = bytes(
            obj.get("value")
                .ok_or_else(|| at("`value` is required".into()))?,
        )
        .map_err(|e| at(format!("value: {e}")))?;
        let key = match obj.get("key") {
            None | Some(Value::Null) => None,
            Some(k) => Some(bytes(k).map_err(|e| at(format!("key: {e}")))?),
        };
        let mut headers = Vec::new();
        if let Some(h) = obj.get("headers") {
            let list = h
                .as_array()
                .ok_or_else(|| at("headers: expected [[name, value], …]".into()))?;
            for pair in list {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), value]) => headers.push(Header {
                        name: name.clone(),
                        value: bytes(value).map_err(|e| at(format!("headers: {e}")))?,
                    }),
                    _ => return Err(at("headers: expected [[name, value], …]".into())),
                }
            }
        }
        let timestamp_ms = match obj.get("timestamp_ms") {
            None => 0,
            Some(t) => t
                .as_i64()
                .ok_or_else(|| at("timestamp_ms: expected an integer".into()))?,
        };
        let topic = match obj.get("topic") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(at("topic: expected a string".into())),
        };
        out.push(Line::Event(Sample {
            subject,
            topic,
            event: Event {
                key,
                value,
                headers,
                timestamp_ms,
            },
        }));
    }
    Ok(out)
}

/// The bytes a JSON value stands for: a string's UTF-8, `{"hex": …}`'s bytes, or the compact
/// text of any other value (so a JSON payload can be written as it is).
fn bytes(v: &Value) -> Result<Vec<u8>, String> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(o) if o.len() == 1 && o.contains_key("hex") => {
            let hex = o
                .get("hex")
                .and_then(Value::as_str)
                .ok_or("hex: expected a string of hexadecimal digits")?;
            from_hex(hex).ok_or_else(|| format!("{hex:?} is not hexadecimal"))
        }
        other => Ok(other.to_string().into_bytes()),
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn show(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
    }
}

fn show_output(o: &Output) -> Value {
    json!({
        "topic": o.topic,
        "key": o.key.as_deref().map(show),
        "value": show(&o.value),
        "headers": o.headers.iter().map(|h| json!([h.name, show(&h.value)])).collect::<Vec<_>>(),
        "timestamp_ms": o.timestamp_ms,
    })
}

/// The output line for input `i`.
pub fn show_outcome(i: usize, outcome: &Result<Verdict, Fault>) -> Value {
    match outcome {
        Ok(Verdict::Keep) => json!({"input": i, "verdict": "keep"}),
        Ok(Verdict::Drop) => json!({"input": i, "verdict": "drop"}),
        Ok(Verdict::Route(t)) => json!({"input": i, "verdict": "route", "topic": t}),
        Ok(Verdict::Replace(outputs)) => json!({
            "input": i,
            "verdict": "replace",
            "outputs": outputs.iter().map(show_output).collect::<Vec<_>>(),
        }),
        Ok(Verdict::Fail(why)) => json!({"input": i, "verdict": "fail", "error": why}),
        Err(fault) => {
            json!({"input": i, "verdict": "fail", "error": fault.to_string(), "fault": fault.kind()})
        }
    }
}

/// Shared facts for the calls of one run.
pub struct RunInfo {
    /// `batch-info.source`.
    pub source: String,
    /// `batch-info.default-topic`.
    pub default_topic: Option<String>,
    /// `batch-info.now-ms`.
    pub now_ms: i64,
}

/// Runs `samples` through `plugin`, grouped by subject and topic as the agent groups them:
/// one outcome per sample, in order.
pub fn run(plugin: &mut Plugin, samples: &[Sample], info: &RunInfo) -> Vec<Result<Verdict, Fault>> {
    let mut groups: IndexMap<(&str, Option<&str>), Vec<usize>> = IndexMap::new();
    for (i, s) in samples.iter().enumerate() {
        groups
            .entry((s.subject.as_str(), s.topic.as_deref()))
            .or_default()
            .push(i);
    }
    let mut outcomes: Vec<Option<Result<Verdict, Fault>>> = vec![None; samples.len()];
    for ((subject, topic), indices) in groups {
        let batch = BatchInfo {
            source: info.source.clone(),
            subject: subject.to_owned(),
            default_topic: info.default_topic.clone(),
            topic: topic
                .map(str::to_owned)
                .or_else(|| info.default_topic.clone()),
            now_ms: info.now_ms,
        };
        for chunk in indices.chunks(MAX_CALL_EVENTS) {
            let events: Vec<Event> = chunk.iter().map(|&i| samples[i].event.clone()).collect();
            let mut caller = Plain {
                plugin,
                info: &batch,
                events: &events,
            };
            for (&i, r) in chunk.iter().zip(isolate(events.len(), &mut caller)) {
                outcomes[i] = Some(r);
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every sample is in one group"))
        .collect()
}

/// The summary `kedge plugin test` prints on stderr: calls, recycles and the plugin's counters
/// as `name value` pairs.
pub fn summary(plugin: &Plugin, events: usize) -> String {
    let stats = plugin.stats().snapshot();
    let counters = if stats.counters.is_empty() {
        "none".to_owned()
    } else {
        stats
            .counters
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{} events, {} calls, {} instance recycles; counters: {counters}",
        stats.events.max(events as u64),
        stats.calls,
        stats.recycles,
    )
}

/// The output line for a `tick` at `now_ms`.
pub fn tick(plugin: &mut Plugin, now_ms: i64) -> Value {
    match plugin.tick(now_ms) {
        Ok(outputs) => json!({
            "tick": now_ms,
            "outputs": outputs.iter().map(show_output).collect::<Vec<_>>(),
        }),
        Err(fault) => json!({"tick": now_ms, "error": fault.to_string(), "fault": fault.kind()}),
    }
}

/// The bisection without a circuit: a plugin author wants to see every failure.
struct Plain<'a> {
    plugin: &'a mut Plugin,
    info: &'a BatchInfo,
    events: &'a [Event],
}

impl Caller<Verdict> for Plain<'_> {
    fn call(&mut self, range: std::ops::Range<usize>) -> Result<Vec<Verdict>, Fault> {
        self.plugin.process(self.info, &self.events[range])
    }

    fn failed(&mut self, _: &Fault, _: usize) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_defaults_hex_and_headers() {
        let text = r#"{"subject":"s/1","value":"21.5"}

{"subject":"s/2","value":{"hex":"00ff"},"key":"k","headers":[["unit","C"]],"timestamp_ms":7}"#;
        let s: Vec<Sample> = parse_input(text, "in.jsonl")
            .unwrap()
            .into_iter()
            .map(|l| match l {
                Line::Event(s) => s,
                Line::Tick(_) => panic!("no ticks here"),
            })
            .collect();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].event.value, b"21.5");
        assert_eq!(s[0].event.key, None);
        assert_eq!(s[1].event.value, vec![0, 0xff]);
        assert_eq!(s[1].event.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(s[1].event.headers[0].name, "unit");
        assert_eq!(s[1].event.timestamp_ms, 7);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse_input(
            "{\"subject\":\"a\",\"value\":\"x\"}\n{\"value\":\"x\"}",
            "f",
        )
        .unwrap_err();
        assert!(e.starts_with("f:2: `subject`"), "{e}");
        let e = parse_input("[1]", "f").unwrap_err();
        assert_eq!(e, "f:1: expected a JSON object");
        let e = parse_input("{\"subject\":\"a\",\"value\":\"x\",\"vaule\":1}", "f").unwrap_err();
        assert!(e.contains("unknown field \"vaule\""), "{e}");
        let e = parse_input("{\"subject\":\"a\",\"value\":{\"hex\":\"0g\"}}", "f").unwrap_err();
        assert!(e.contains("not hexadecimal"), "{e}");
    }

    #[test]
    fn json_values_stand_for_their_text_and_ticks_come_in_order() {
        let text = r#"{"subject":"s","value":{"temp_c":21.5,"ok":true},"topic":"lab"}
{"tick":1000}
{"subject":"s","value":[1,2],"headers":[["n",{"hex":"00"}]]}
{"subject":"s","value":42}"#;
        let lines = parse_input(text, "in").unwrap();
        let Line::Event(first) = &lines[0] else {
            panic!("{lines:?}")
        };
        assert_eq!(first.event.value, br#"{"temp_c":21.5,"ok":true}"#);
        assert_eq!(first.topic.as_deref(), Some("lab"));
        assert!(matches!(lines[1], Line::Tick(1000)));
        let Line::Event(third) = &lines[2] else {
            panic!("{lines:?}")
        };
        assert_eq!(third.event.value, b"[1,2]");
        assert_eq!(third.event.headers[0].value, [0]);
        assert_eq!(third.topic, None);
        assert!(matches!(&lines[3], Line::Event(s) if s.event.value == b"42"));
        let e = parse_input(r#"{"tick":1,"subject":"s"}"#, "f").unwrap_err();
        assert!(e.starts_with("f:1: a tick line has only `tick`"), "{e}");
        let e = parse_input(r#"{"tick":"soon"}"#, "f").unwrap_err();
        assert!(e.contains("tick: expected milliseconds"), "{e}");
    }

    #[test]
    fn shows_bytes_as_text_or_hex_and_faults_as_dead_letter_reasons() {
        assert_eq!(show(b"abc"), json!("abc"));
        assert_eq!(show(&[0xff, 0]), json!({"hex": "ff00"}));
        let line = show_outcome(3, &Err(Fault::Timeout));
        assert_eq!(line["verdict"], "fail");
        assert_eq!(line["fault"], "timeout");
    }
}
