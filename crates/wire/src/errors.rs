//! Kafka's error codes by name, for logs and metric labels. What an error means for a batch is
//! delivery's to decide (`delivery::outcome`).
//!
//! The names are Kafka's own (`Errors.java`: `NOT_LEADER_OR_FOLLOWER`), made from the variants
//! of kafka_protocol's `ResponseError`, which spell them in CamelCase: the crate's list of codes
//! is the one to keep current, and a code it learns gets its name here too.

use std::borrow::Cow;
use std::sync::LazyLock;

use kafka_protocol::error::ResponseError;

/// Every code kafka_protocol names, sorted, with its name: made once, because a metric label
/// must be a `&'static str`. Scanning every `i16` (about 2 ms in a debug build) needs no
/// knowledge of where the crate's codes end.
static NAMES: LazyLock<Vec<(i16, String)>> = LazyLock::new(|| {
    (i16::MIN..=i16::MAX)
        .filter_map(|code| match ResponseError::try_from_code(code)? {
            ResponseError::Unknown(_) => None,
            // Display is the variant's name, e.g. `NotLeaderOrFollower`.
            known => Some((code, screaming_snake_case(&known.to_string()))),
        })
        .collect()
});

/// `NotLeaderOrFollower` → `NOT_LEADER_OR_FOLLOWER`.
fn screaming_snake_case(camel: &str) -> String {
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(ch.to_ascii_uppercase());
    }
    name
}

/// Kafka's name for an error code (e.g. `NOT_LEADER_OR_FOLLOWER`), or `UNKNOWN(<code>)`.
pub fn error_name(code: i16) -> Cow<'static, str> {
    if code == 0 {
        // Not an error, so not among the crate's.
        return Cow::Borrowed("NONE");
    }
    let names: &'static [(i16, String)] = &NAMES;
    match names.binary_search_by_key(&code, |(c, _)| *c) {
        Ok(i) => Cow::Borrowed(&names[i].1),
        Err(_) => Cow::Owned(format!("UNKNOWN({code})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_examples_and_unknown_codes() {
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(1234), "UNKNOWN(1234)");
        assert_eq!(error_name(-2), "UNKNOWN(-2)");
        assert_eq!(error_name(i16::MIN), "UNKNOWN(-32768)");
        assert_eq!(error_name(134), "UNKNOWN(134)");
    }

    /// Names where the CamelCase spelling could go wrong (abbreviations, long names, the
    /// `_EXCEPTION` suffix some keep), and the ends of the range.
    #[test]
    fn names_are_kafkas() {
        for (code, name) in [
            (17, "INVALID_TOPIC_EXCEPTION"),
            (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND"),
            (46, "DUPLICATE_SEQUENCE_NUMBER"),
            (48, "INVALID_TXN_STATE"),
            (53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"),
            (58, "SASL_AUTHENTICATION_FAILED"),
            (100, "UNKNOWN_TOPIC_ID"),
            (106, "FETCH_SESSION_TOPIC_ID_ERROR"),
            (133, "SHARE_SESSION_LIMIT_REACHED"),
        ] {
            assert_eq!(error_name(code), name, "{code}");
        }
    }

    /// Every code Kafka 4.1 defines has a name, each a distinct SCREAMING_SNAKE_CASE word, and a
    /// `&'static str` one: `delivery` uses it as a metric label.
    #[test]
    fn every_known_code_has_a_static_name_of_its_own() {
        let mut seen = std::collections::HashSet::new();
        for code in -1..=133 {
            let name = error_name(code);
            assert!(matches!(name, Cow::Borrowed(_)), "{code}: {name}");
            assert!(
                !name.starts_with('_')
                    && !name.ends_with('_')
                    && !name.contains("__")
                    && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{code}: {name}"
            );
            assert!(seen.insert(name.clone()), "{code}: {name} twice");
        }
        assert!(matches!(error_name(1234), Cow::Owned(_)));
    }
}
