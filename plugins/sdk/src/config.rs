//! Typed access to the plugin's `config` table.

use crate::Error;
use crate::json::Json;

/// The plugin's `config` table from kedge.toml, as `init` receives it.
///
/// kedge passes TOML strings as they are and every other value (number, boolean, array, table)
/// as JSON text, so `threshold = 40` and `threshold = "40"` both read as `40` with
/// [`get::<f64>`](Config::get), and `sensors = ["t1", "t2"]` reads with [`get::<Json>`](Config::get).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Wraps the key/value pairs kedge passed to `init` (or a test made up).
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }

    /// The raw text of `key`, if the table has it.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` parsed as a `T`; `Ok(None)` if the table does not have it, an error naming the key
    /// if its value does not parse.
    pub fn get<T: FromConfig>(&self, key: &str) -> Result<Option<T>, Error> {
        let Some(text) = self.get_str(key) else {
            return Ok(None);
        };
        T::from_config(text).map(Some).map_err(|expected| {
            Error::new(format!("config `{key}`: expected {expected}, got `{text}`"))
        })
    }

    /// `key` parsed as a `T`, or `default` if the table does not have it.
    pub fn get_or<T: FromConfig>(&self, key: &str, default: T) -> Result<T, Error> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// `key` parsed as a `T`; an error if the table does not have it.
    pub fn require<T: FromConfig>(&self, key: &str) -> Result<T, Error> {
        self.get(key)?
            .ok_or_else(|| Error::new(format!("config `{key}` is required")))
    }

    /// All entries, in the order kedge passed them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A type a config value can be read as, with [`Config::get`] and friends.
pub trait FromConfig: Sized {
    /// Parses a value's text; on failure, says what was expected ("a number").
    fn from_config(text: &str) -> Result<Self, &'static str>;
}

impl FromConfig for String {
    fn from_config(text: &str) -> Result<Self, &'static str> {
        Ok(text.to_owned())
    }
}

impl FromConfig for bool {
    fn from_config(text: &str) -> Result<Self, &'static str> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("`true` or `false`"),
        }
    }
}

impl FromConfig for Json {
    fn from_config(text: &str) -> Result<Self, &'static str> {
        Json::parse(text.as_bytes()).map_err(|_| "a JSON value")
    }
}

/// A duration: a number and a unit, `ms`, `s`, `m` or `h` (`"250ms"`, `"10s"`, `"1.5m"`), as
/// kedge's own config writes them. A bare number is refused: its unit would be a guess.
impl FromConfig for std::time::Duration {
    fn from_config(text: &str) -> Result<Self, &'static str> {
        const EXPECTED: &str = "a duration with a unit: ms, s, m or h (e.g. \"10s\")";
        let text = text.trim();
        let split = text
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or(EXPECTED)?;
        let (number, unit) = text.split_at(split);
        let number: f64 = number.trim().parse().map_err(|_| EXPECTED)?;
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            _ => return Err(EXPECTED),
        };
        std::time::Duration::try_from_secs_f64(seconds).map_err(|_| EXPECTED)
    }
}

macro_rules! from_config_by_parse {
    ($($ty:ty => $expected:literal),* $(,)?) => {
        $(impl FromConfig for $ty {
            fn from_config(text: &str) -> Result<Self, &'static str> {
                text.trim().parse().map_err(|_| $expected)
            }
        })*
    };
}

from_config_by_parse! {
    f64 => "a number",
    f32 => "a number",
    i64 => "an integer",
    i32 => "an integer",
    u64 => "a non-negative integer",
    u32 => "a non-negative integer",
    usize => "a non-negative integer",
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entries: &[(&str, &str)]) -> Config {
        Config::new(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn numbers_parse_from_json_and_from_strings() {
        let c = config(&[("a", "40"), ("b", "-12.5"), ("c", "1e3"), ("d", " 7 ")]);
        assert_eq!(c.get::<f64>("a"), Ok(Some(40.0)));
        assert_eq!(c.get::<f64>("b"), Ok(Some(-12.5)));
        assert_eq!(c.get::<f64>("c"), Ok(Some(1000.0)));
        assert_eq!(c.get::<i64>("a"), Ok(Some(40)));
        assert_eq!(c.get::<u32>("d"), Ok(Some(7)));
    }

    #[test]
    fn integers_keep_precision_beyond_f64() {
        let c = config(&[("big", "9007199254740993")]);
        assert_eq!(c.get::<i64>("big"), Ok(Some(9_007_199_254_740_993)));
    }

    #[test]
    fn bad_values_name_the_key_and_what_was_expected() {
        let c = config(&[("n", "abc"), ("i", "2.5"), ("u", "-1"), ("b", "yes")]);
        assert_eq!(
            c.get::<f64>("n"),
            Err(Error::new("config `n`: expected a number, got `abc`"))
        );
        assert_eq!(
            c.get::<i64>("i"),
            Err(Error::new("config `i`: expected an integer, got `2.5`"))
        );
        assert_eq!(
            c.get::<u64>("u"),
            Err(Error::new(
                "config `u`: expected a non-negative integer, got `-1`"
            ))
        );
        assert_eq!(
            c.get::<bool>("b"),
            Err(Error::new(
                "config `b`: expected `true` or `false`, got `yes`"
            ))
        );
    }

    #[test]
    fn missing_keys_default_or_fail() {
        let c = config(&[("present", "true")]);
        assert_eq!(c.get::<bool>("absent"), Ok(None));
        assert_eq!(c.get_or("absent", 5_i64), Ok(5));
        assert_eq!(c.get_or("present", false), Ok(true));
        assert_eq!(
            c.require::<String>("absent"),
            Err(Error::new("config `absent` is required"))
        );
        assert_eq!(c.require::<bool>("present"), Ok(true));
    }

    #[test]
    fn strings_are_taken_verbatim() {
        let c = config(&[("s", " padded \"quoted\" ")]);
        assert_eq!(c.get_str("s"), Some(" padded \"quoted\" "));
        assert_eq!(
            c.require::<String>("s").as_deref(),
            Ok(" padded \"quoted\" ")
        );
    }

    #[test]
    fn nested_values_read_as_json() {
        let c = config(&[
            ("sensors", r#"["t1","t2"]"#),
            ("limits", r#"{"t1":{"max":85}}"#),
        ]);
        let sensors = c.require::<Json>("sensors").unwrap();
        let names: Vec<_> = sensors
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Json::as_str)
            .collect();
        assert_eq!(names, ["t1", "t2"]);
        let limits = c.require::<Json>("limits").unwrap();
        assert_eq!(
            limits
                .get("t1")
                .and_then(|t| t.get("max"))
                .and_then(Json::as_f64),
            Some(85.0)
        );
    }

    #[test]
    fn iter_keeps_order() {
        let c = config(&[("b", "1"), ("a", "2")]);
        assert_eq!(c.iter().collect::<Vec<_>>(), [("b", "1"), ("a", "2")]);
    }

    #[test]
    fn durations_need_a_unit() {
        use std::time::Duration;
        let c = config(&[
            ("a", "250ms"),
            ("b", "10s"),
            ("c", "1.5m"),
            ("d", "2h"),
            ("e", "10"),
        ]);
        assert_eq!(c.get::<Duration>("a"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(c.get::<Duration>("b"), Ok(Some(Duration::from_secs(10))));
        assert_eq!(c.get::<Duration>("c"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(c.get::<Duration>("d"), Ok(Some(Duration::from_secs(7200))));
        let e = c.get::<Duration>("e").unwrap_err();
        assert_eq!(
            e.message,
            "config `e`: expected a duration with a unit: ms, s, m or h (e.g. \"10s\"), got `10`"
        );
        for bad in ["-1s", "1d", "s", "1e400s"] {
            assert!(config(&[("x", bad)]).get::<Duration>("x").is_err(), "{bad}");
        }
    }
}
