//! The one error type of config loading, and the translation of toml/serde messages into it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::locate::{Document, line_col};

/// A problem with the config file, pinned to a line, column and dotted key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {}{}", .file.display(), .line, .column, key_prefix(.key_path), .message)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column (in characters) of the offending key or value.
    pub column: usize,
    /// Dotted key path such as `mqtt.subscriptions[1].qos`; empty for the document itself.
    pub key_path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn key_prefix(key_path: &str) -> String {
    if key_path.is_empty() {
        String::new()
    } else {
        format!("{key_path}: ")
    }
}

impl ConfigError {
    /// Builds an error positioned at byte `offset` of `text`.
    pub(super) fn at(
        file: &Path,
        text: &str,
        offset: usize,
        key_path: String,
        message: String,
    ) -> Self {
        let (line, column) = line_col(text, offset);
        Self {
            file: file.to_owned(),
            line,
            column,
            key_path,
            message,
        }
    }

    /// Translates a TOML syntax error.
    pub(super) fn from_syntax(
        err: &toml::de::Error,
        doc: &Document<'_>,
        text: &str,
        file: &Path,
    ) -> Self {
        let span = err.span().unwrap_or_else(|| doc.root_span());
        let duplicate = text.get(span.clone()).filter(|key| !key.trim().is_empty());
        let message = match (err.message(), duplicate) {
            ("duplicate key", Some(key)) => {
                format!(
                    "invalid TOML: duplicate key {key}: it is already defined earlier in the file"
                )
            }
            (raw, _) => format!("invalid TOML: {raw}"),
        };
        Self::at(file, text, span.start, doc.path_at(&span), message)
    }

    /// Translates a deserialization error (unknown key, wrong type, bad value, missing key).
    pub(super) fn from_serde(
        err: &toml::de::Error,
        doc: &Document<'_>,
        text: &str,
        file: &Path,
    ) -> Self {
        let span = err.span().unwrap_or_else(|| doc.root_span());
        let raw = err.message();
        if let Some(field) = quoted_after(raw, "missing field ") {
            return missing(field, &span, doc, text, file);
        }
        let key_path = doc.path_at(&span);
        let message = if raw.starts_with("unknown field ") {
            unknown_key(raw)
        } else if let Some(rest) = raw.strip_prefix("invalid type: ") {
            mismatch(rest, found_kind)
        } else if let Some(rest) = raw.strip_prefix("invalid value: ") {
            mismatch(rest, found_literal)
        } else {
            raw.to_owned()
        };
        Self::at(file, text, span.start, key_path, message)
    }
}

fn missing(
    field: &str,
    span: &Range<usize>,
    doc: &Document<'_>,
    text: &str,
    file: &Path,
) -> ConfigError {
    let table = doc.path_at(span);
    let mut key_path = if table.is_empty() {
        field.to_owned()
    } else {
        format!("{table}.{field}")
    };
    // A whole missing section is reported as its one required key: that is what to add.
    match key_path.as_str() {
        "mqtt" => key_path.push_str(".subscriptions"),
        "kafka" => key_path.push_str(".bootstrap"),
        _ => {}
    }
    let message = match required_hint(&key_path) {
        Some(hint) => format!("missing required key; {hint}"),
        None => "missing required key".to_owned(),
    };
    ConfigError::at(file, text, span.start, key_path, message)
}

fn required_hint(key_path: &str) -> Option<&'static str> {
    let in_list = |list: &str, key: &str| key_path.starts_with(list) && key_path.ends_with(key);
    if key_path == "mqtt.subscriptions" {
        Some(
            r#"add at least one, e.g. subscriptions = [{ filter = "sensors/#", qos = 1 }] under [mqtt]"#,
        )
    } else if key_path == "kafka.bootstrap" {
        Some(r#"list the Kafka brokers, e.g. bootstrap = ["127.0.0.1:9092"] under [kafka]"#)
    } else if in_list("mqtt.subscriptions[", "].filter") {
        Some(r#"each subscription needs an MQTT topic filter, e.g. filter = "sensors/#""#)
    } else if in_list("routing.rules[", "].filter") {
        Some(
            r#"each rule needs the MQTT topic filter it matches, e.g. filter = "sensors/+/temperature""#,
        )
    } else if in_list("routing.rules[", "].topic") {
        Some(r#"each rule needs the Kafka topic it sends to, e.g. topic = "temperature""#)
    } else {
        None
    }
}

/// Returns the backtick-quoted word right after `prefix`.
fn quoted_after<'a>(raw: &'a str, prefix: &str) -> Option<&'a str> {
    raw.strip_prefix(prefix)?
        .strip_prefix('`')?
        .split('`')
        .next()
}

/// "unknown field `lingr`, expected one of `a`, `b`" → "unknown key; expected one of: a, b".
fn unknown_key(raw: &str) -> String {
    let Some((_, expected)) = raw.split_once(", expected ") else {
        return "unknown key; this table has no keys".to_owned();
    };
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if names.is_empty() {
        "unknown key".to_owned()
    } else {
        format!("unknown key; expected one of: {}", names.join(", "))
    }
}

/// "string \"x\", expected u16" → "expected an integer from 0 to 65535, found a string".
fn mismatch(rest: &str, found: fn(&str) -> String) -> String {
    // The expectation is our own text, so split at its last occurrence: the found value
    // (a user string) may itself contain ", expected ".
    match rest.rsplit_once(", expected ") {
        Some((unexpected, expected)) => {
            format!(
                "expected {}, found {}",
                plain_expected(expected),
                found(unexpected)
            )
        }
        None => rest.to_owned(),
    }
}

fn plain_expected(expected: &str) -> &str {
    match expected {
        "u8" => "an integer from 0 to 255",
        "u16" => "an integer from 0 to 65535",
        "u32" => "an integer from 0 to 4294967295",
        "u64" | "usize" => "a non-negative integer",
        "a sequence" => "an array",
        "a map" => "a table",
        "a boolean" | "bool" => "true or false",
        "path string" => "a path string",
        other if other.starts_with("struct ") => "a table",
        other => other,
    }
}

fn found_kind(unexpected: &str) -> String {
    let kinds = [
        ("string", "a string"),
        ("character", "a string"),
        ("integer", "an integer"),
        ("floating point", "a float"),
        ("boolean", "a boolean"),
        ("sequence", "an array"),
        ("map", "a table"),
    ];
    kinds
        .iter()
        .find(|(prefix, _)| unexpected.starts_with(prefix))
        .map_or_else(|| unexpected.to_owned(), |(_, kind)| (*kind).to_owned())
}

fn found_literal(unexpected: &str) -> String {
    if let Some(string) = unexpected.strip_prefix("string ") {
        return string.to_owned();
    }
    match (unexpected.find('`'), unexpected.rfind('`')) {
        (Some(open), Some(close)) if open < close => unexpected[open + 1..close].to_owned(),
        _ => unexpected.to_owned(),
    }
}
