//! Serde helpers whose `expecting` texts become the "expected ..." part of config errors.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

struct IntInRange {
    min: i64,
    max: i64,
}

impl IntInRange {
    fn check<E: de::Error>(&self, v: i128) -> Result<i64, E> {
        match i64::try_from(v) {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => Err(E::custom(format_args!(
                "expected an integer from {} to {}, found {v}",
                self.min, self.max
            ))),
        }
    }
}

impl Visitor<'_> for IntInRange {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer from {} to {}", self.min, self.max)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        self.check(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        self.check(v.into())
    }
}

/// Deserializes an integer in `MIN..=MAX`, naming the range in type and range errors alike.
pub fn int<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let v = d.deserialize_i64(IntInRange { min: MIN, max: MAX })?;
    T::try_from(v).map_err(|_| {
        de::Error::custom(format_args!(
            "expected an integer from {MIN} to {MAX}, found {v}"
        ))
    })
}

/// Like [`int`], for optional keys.
pub fn opt_int<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    int::<D, T, MIN, MAX>(d).map(Some)
}

struct QosVisitor;

impl Visitor<'_> for QosVisitor {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a QoS level, 0, 1 or 2")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u8, E> {
        match v {
            0..=2 => Ok(v as u8),
            _ => Err(E::custom(format_args!(
                "expected a QoS level, 0, 1 or 2, found {v}"
            ))),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u8, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

/// Deserializes an MQTT QoS level.
pub fn qos<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    d.deserialize_u8(QosVisitor)
}

struct KeywordVisitor<T: 'static> {
    choices: &'static [(&'static str, T)],
}

impl<T: 'static> KeywordVisitor<T> {
    fn list(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.choices.len() > 2 {
            f.write_str("one of ")?;
        }
        for (i, (name, _)) in self.choices.iter().enumerate() {
            let separator = match i {
                0 => "",
                _ if i + 1 == self.choices.len() && self.choices.len() == 2 => " or ",
                _ => ", ",
            };
            write!(f, "{separator}{name:?}")?;
        }
        Ok(())
    }
}

impl<T: Copy + 'static> Visitor<'_> for KeywordVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.list(f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        match self.choices.iter().find(|(name, _)| *name == v) {
            Some((_, value)) => Ok(*value),
            None => Err(E::custom(format_args!(
                "expected {}, found {v:?}",
                Expecting(&self)
            ))),
        }
    }
}

struct Expecting<'a, T: 'static>(&'a KeywordVisitor<T>);

impl<T: 'static> fmt::Display for Expecting<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.list(f)
    }
}

/// Deserializes one of a fixed set of strings into its enum value.
pub fn keyword<'de, D, T>(d: D, choices: &'static [(&'static str, T)]) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Copy + 'static,
{
    d.deserialize_str(KeywordVisitor { choices })
}
