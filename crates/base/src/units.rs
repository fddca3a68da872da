//! Durations and byte sizes as humans write them in the config file ("5ms", "8MiB").

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a duration or size string was rejected; rendered into the config error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a number followed by a known unit.
    #[error("invalid {what} {text:?}: expected {expected}")]
    Malformed {
        /// "duration" or "size".
        what: &'static str,
        /// The offending text.
        text: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The value is negative.
    #[error("invalid {what} {text:?}: must not be negative")]
    Negative {
        /// "duration" or "size".
        what: &'static str,
        /// The offending text.
        text: String,
    },
    /// The value does not fit the target type.
    #[error("invalid {what} {text:?}: too large")]
    Overflow {
        /// "duration" or "size".
        what: &'static str,
        /// The offending text.
        text: String,
    },
}

const DURATION_EXPECTED: &str =
    "a number followed by a unit (ms, s, m, h, d), e.g. \"5ms\" or \"30s\"";
const SIZE_EXPECTED: &str =
    "a whole number followed by a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. \"64KiB\" or \"8MiB\"";

/// Splits "12.5ms" into ("12.5", "ms"), allowing blanks between number and unit.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    (number, unit.trim_start())
}

/// Parses a duration such as "5ms", "1.5s", "7d" or "250us".
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let malformed = || UnitError::Malformed {
        what: "duration",
        text: text.to_owned(),
        expected: DURATION_EXPECTED,
    };
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(UnitError::Negative {
            what: "duration",
            text: text.to_owned(),
        });
    }
    let (number, unit) = split_number(trimmed);
    let nanos_per_unit: u128 = match unit {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => 86_400 * NANOS_PER_SEC,
        _ => return Err(malformed()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_ok(whole) || !digits_ok(fraction) {
        return Err(malformed());
    }
    if number.ends_with('.') {
        return Err(malformed());
    }
    let overflow = || UnitError::Overflow {
        what: "duration",
        text: text.to_owned(),
    };
    let whole: u128 = whole.parse().map_err(|_| overflow())?;
    let mut nanos = whole.checked_mul(nanos_per_unit).ok_or_else(overflow)?;
    // Digits beyond nanosecond precision cannot change the result, and ignoring them keeps
    // the scale below from overflowing.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse().map_err(|_| malformed())?;
        let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| malformed())?);
        nanos = nanos
            .checked_add(numerator * nanos_per_unit / scale)
            .ok_or_else(overflow)?;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| overflow())?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| overflow())?;
    Ok(Duration::new(secs, subsec))
}

/// A [`Duration`] as people write it: parsed as [`parse_duration`] does (for command-line
/// flags), displayed in the largest unit that represents it exactly ("5ms", "7d").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        parse_duration(text).map(Self)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        const UNITS: [(u128, &str); 6] = [
            (86_400 * NANOS_PER_SEC, "d"),
            (3_600 * NANOS_PER_SEC, "h"),
            (60 * NANOS_PER_SEC, "m"),
            (NANOS_PER_SEC, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
        ];
        match UNITS.iter().find(|(size, _)| nanos.is_multiple_of(*size)) {
            Some((size, unit)) => write!(f, "{}{unit}", nanos / size),
            None => write!(f, "{nanos}ns"),
        }
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string with a unit, e.g. \"5ms\" or \"30s\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// Serde `deserialize_with` adapter for [`Duration`] fields written as "30s".
pub fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

/// A number of bytes, written in the config as "8MiB", "100KB" or a bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `n` bytes.
    pub const fn from_bytes(n: u64) -> Self {
        Self(n)
    }

    /// A size of `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }

    /// A size of `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses "512MiB", "1MB" (10^6), "1024B" or "4096".
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let malformed = || UnitError::Malformed {
            what: "size",
            text: text.to_owned(),
            expected: SIZE_EXPECTED,
        };
        let trimmed = text.trim();
        if trimmed.starts_with('-') {
            return Err(UnitError::Negative {
                what: "size",
                text: text.to_owned(),
            });
        }
        let (number, unit) = split_number(trimmed);
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(malformed()),
        };
        let overflow = || UnitError::Overflow {
            what: "size",
            text: text.to_owned(),
        };
        let n: u64 = number.parse().map_err(|_| overflow())?;
        n.checked_mul(multiplier).map(Self).ok_or_else(overflow)
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        Self::parse(text)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 8] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
            (1_000_000_000_000, "TB"),
            (1_000_000_000, "GB"),
            (1_000_000, "MB"),
            (1_000, "KB"),
        ];
        let n = self.0;
        match UNITS
            .iter()
            .find(|(size, _)| n != 0 && n.is_multiple_of(*size))
        {
            Some((size, unit)) => write!(f, "{} {unit}", n / size),
            None => write!(f, "{n} B"),
        }
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"64KiB\" or \"8MiB\", or a number of bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        ByteSize::parse(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v).map(ByteSize).map_err(|_| {
            E::custom(UnitError::Negative {
                what: "size",
                text: v.to_string(),
            })
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ByteSizeVisitor)
    }
}

/// Exponential backoff bounds, as the config file sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// A backoff table as written: either bound may be left to its context's default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialBackoff {
    #[serde(default, deserialize_with = "opt_duration")]
    initial: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    max: Option<Duration>,
}

impl PartialBackoff {
    /// The bounds written, the context's default for those left out.
    pub fn or(self, default: Backoff) -> Backoff {
        Backoff {
            initial: self.initial.unwrap_or(default.initial),
            max: self.max.unwrap_or(default.max),
        }
    }
}

/// A duration setting that may be left out.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    deserialize_duration(d).map(Some)
}

/// `N` seconds, for serde defaults.
pub fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

/// `N` milliseconds, for serde defaults.
pub fn millis<const N: u64>() -> Duration {
    Duration::from_millis(N)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let cases = [
            ("5ms", Duration::from_millis(5)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7_200)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("250us", Duration::from_micros(250)),
            ("1.5s", Duration::from_millis(1_500)),
            ("0.25ms", Duration::from_micros(250)),
            ("0s", Duration::ZERO),
            ("10 s", Duration::from_secs(10)),
            (" 3s ", Duration::from_secs(3)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn durations_reject() {
        for text in [
            "",
            "5",
            "s",
            "5 parsecs",
            "5S",
            "1.s",
            ".5s",
            "1..5s",
            "1.2.3s",
            "5ms5",
            "five s",
            "1e3s",
            "+5s",
            "5 m s",
        ] {
            assert!(
                matches!(parse_duration(text), Err(UnitError::Malformed { .. })),
                "{text:?} should be malformed"
            );
        }
        assert!(matches!(
            parse_duration("-5s"),
            Err(UnitError::Negative { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999d"),
            Err(UnitError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("999999999999999999d"),
            Err(UnitError::Overflow { .. })
        ));
    }

    #[test]
    fn duration_error_message() {
        let err = parse_duration("5 parsecs").map(|_| ()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid duration "5 parsecs": expected a number followed by a unit (ms, s, m, h, d), e.g. "5ms" or "30s""#
        );
    }

    #[test]
    fn durations_display() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(5), "5ms"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_nanos(7), "7ns"),
        ];
        for (d, want) in cases {
            assert_eq!(HumanDuration(d).to_string(), want);
            if want != "7ns" {
                assert_eq!(parse_duration(want), Ok(d), "round trip {want}");
            }
        }
    }

    #[test]
    fn from_str_parses_as_the_config_file_does() {
        assert_eq!(
            "250ms".parse::<HumanDuration>(),
            Ok(HumanDuration(Duration::from_millis(250)))
        );
        assert_eq!("8MiB".parse::<ByteSize>(), Ok(ByteSize::mib(8)));
        assert_eq!(
            "5 parsecs".parse::<HumanDuration>(),
            Err(parse_duration("5 parsecs").unwrap_err())
        );
        assert!(matches!(
            "-1KiB".parse::<ByteSize>(),
            Err(UnitError::Negative { .. })
        ));
    }

    #[test]
    fn sizes_parse() {
        let cases = [
            ("512MiB", 512 << 20),
            ("64KiB", 64 << 10),
            ("1GiB", 1 << 30),
            ("1MB", 1_000_000),
            ("100KB", 100_000),
            ("1024B", 1024),
            ("4096", 4096),
            ("8 MiB", 8 << 20),
            ("8mib", 8 << 20),
            ("0", 0),
            ("16777215TiB", 16_777_215u64 << 40),
        ];
        for (text, want) in cases {
            assert_eq!(
                ByteSize::parse(text).map(ByteSize::bytes),
                Ok(want),
                "{text}"
            );
        }
    }

    #[test]
    fn sizes_reject() {
        for text in ["", "MiB", "1.5MiB", "12 parsecs", "1 KiBB", "1e6", "0x10"] {
            assert!(
                matches!(ByteSize::parse(text), Err(UnitError::Malformed { .. })),
                "{text:?} should be malformed"
            );
        }
        assert!(matches!(
            ByteSize::parse("-1KiB"),
            Err(UnitError::Negative { .. })
        ));
        assert!(matches!(
            ByteSize::parse("16777216TiB1"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            ByteSize::parse("16777216TiB"),
            Err(UnitError::Overflow { .. })
        ));
        assert!(matches!(
            ByteSize::parse("99999999999999999999"),
            Err(UnitError::Overflow { .. })
        ));
    }

    #[test]
    fn sizes_display() {
        let cases = [
            (ByteSize::mib(8), "8 MiB"),
            (ByteSize::kib(64), "64 KiB"),
            (ByteSize::from_bytes(1_000_000), "1 MB"),
            (ByteSize::from_bytes(1_500), "1500 B"),
            (ByteSize::from_bytes(0), "0 B"),
            (ByteSize::from_bytes(3 << 30), "3 GiB"),
        ];
        for (size, want) in cases {
            assert_eq!(size.to_string(), want);
        }
    }
}
