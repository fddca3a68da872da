//! A minimal JSON value, parser and printer.
//!
//! kedge hands non-string config values (numbers, booleans, arrays, tables) to `init` as JSON, and
//! many payloads are small JSON documents. This covers both without serde, whose code would
//! dominate a plugin of a few dozen kilobytes. Numbers are `f64`, as in JavaScript: integers
//! beyond 2^53 lose precision (for an integer config value use [`Config::get`](crate::Config::get)
//! with an integer type, which parses the text itself).

use std::fmt::{self, Write};

/// How deep arrays and objects may nest; deeper input is rejected rather than overflowing the
/// guest's stack.
const MAX_DEPTH: usize = 128;

/// A parsed JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any number.
    Number(f64),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, members in document order (duplicates kept; [`Json::get`] finds the first).
    Object(Vec<(String, Json)>),
}

/// Why a text is not JSON, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Byte offset of the problem in the input.
    pub offset: usize,
    /// What is wrong there, e.g. "expected a value".
    pub reason: &'static str,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for Error {}

impl Json {
    /// Parses one JSON document (RFC 8259), surrounded by optional whitespace.
    pub fn parse(text: &[u8]) -> Result<Json, Error> {
        let mut parser = Parser { text, pos: 0 };
        let value = parser.value(0)?;
        parser.skip_whitespace();
        if parser.pos < text.len() {
            return Err(parser.error("expected the end of the document"));
        }
        Ok(value)
    }

    /// The first member named `key`, if this is an object that has one.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(members) => Some(members),
            _ => None,
        }
    }

    /// Sets member `key` of an object to `value`: in the place of its first occurrence (later
    /// duplicates are removed), else at the end. Returns the value it replaced. A value that is
    /// not an object is left as it is and gets `Err(value)` back.
    pub fn set(&mut self, key: &str, value: impl Into<Json>) -> Result<Option<Json>, Json> {
        let value = value.into();
        let Json::Object(members) = self else {
            return Err(value);
        };
        match members.iter().position(|(k, _)| k == key) {
            Some(i) => {
                let old = std::mem::replace(&mut members[i].1, value);
                let mut n = 0;
                members.retain(|(k, _)| {
                    n += usize::from(k == key);
                    k != key || n == 1
                });
                Ok(Some(old))
            }
            None => {
                members.push((key.to_owned(), value));
                Ok(None)
            }
        }
    }

    /// Removes every member `key` of an object; returns the first one's value.
    pub fn remove(&mut self, key: &str) -> Option<Json> {
        let Json::Object(members) = self else {
            return None;
        };
        let first = members.iter().position(|(k, _)| k == key)?;
        let (_, value) = members.remove(first);
        members.retain(|(k, _)| k != key);
        Some(value)
    }

    /// The compact JSON text as bytes, ready to be an output's value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = String::new();
        self.print(&mut text).expect("a String takes any text");
        text.into_bytes()
    }
}

impl From<f64> for Json {
    fn from(n: f64) -> Self {
        Json::Number(n)
    }
}

impl From<i64> for Json {
    /// As an `f64`: exact up to 2^53.
    fn from(n: i64) -> Self {
        Json::Number(n as f64)
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Self {
        Json::Bool(b)
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Self {
        Json::String(s.to_owned())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Self {
        Json::String(s)
    }
}

/// Compact JSON, no whitespace. Numbers print as Rust prints `f64` (shortest form that reads
/// back the same: `22.5`, `-40`, `0.1`); NaN and infinities, which JSON cannot express, as `null`.
impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.print(f)
    }
}

impl Json {
    /// Writes the compact text into `out`: the [`fmt::Display`] form, and [`Json::to_bytes`]
    /// straight into a `String` without the formatter between.
    fn print<W: Write>(&self, out: &mut W) -> fmt::Result {
        match self {
            Json::Null => out.write_str("null"),
            Json::Bool(b) => out.write_str(if *b { "true" } else { "false" }),
            Json::Number(n) if n.is_finite() => write!(out, "{n}"),
            Json::Number(_) => out.write_str("null"),
            Json::String(s) => print_string(out, s),
            Json::Array(items) => {
                out.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.write_char(',')?;
                    }
                    item.print(out)?;
                }
                out.write_char(']')
            }
            Json::Object(members) => {
                out.write_char('{')?;
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.write_char(',')?;
                    }
                    print_string(out, key)?;
                    out.write_char(':')?;
                    value.print(out)?;
                }
                out.write_char('}')
            }
        }
    }
}

/// `s` quoted, with what JSON requires escaped. Every character escaped is ASCII, and in UTF-8
/// an ASCII byte is always a character of its own, so the text is scanned byte by byte and
/// copied in runs.
fn print_string<W: Write>(out: &mut W, s: &str) -> fmt::Result {
    out.write_char('"')?;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        out.write_str(&s[start..i])?;
        if escape.is_empty() {
            write!(out, "\\u{b:04x}")?;
        } else {
            out.write_str(escape)?;
        }
        start = i + 1;
    }
    out.write_str(&s[start..])?;
    out.write_char('"')
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

fn error_at(offset: usize, reason: &'static str) -> Error {
    Error { offset, reason }
}

impl Parser<'_> {
    fn error(&self, reason: &'static str) -> Error {
        error_at(self.pos, reason)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, Error> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'n') => self.literal("null", Json::Null),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[' | b'{') if depth == MAX_DEPTH => Err(self.error("nested too deeply")),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            _ => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, Error> {
        if self.text[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn digits(&mut self) -> Result<(), Error> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected a digit"));
        }
        Ok(())
    }

    fn number(&mut self) -> Result<Json, Error> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek() == Some(b'0') {
            self.pos += 1;
        } else {
            self.digits()?;
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        // The grammar above admits only ASCII that Rust's float parser accepts.
        let text = std::str::from_utf8(&self.text[start..self.pos]).expect("ASCII");
        Ok(Json::Number(text.parse().expect("a JSON number")))
    }

    fn string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        self.pos += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error("expected the closing `\"`"));
            };
            match byte {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' => {
                    self.pos += 1;
                    let code = self.peek();
                    self.pos += 1;
                    let c = match code {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => return Err(error_at(self.pos - 1, "expected an escape character")),
                    };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                0..0x20 => return Err(self.error("control characters must be escaped")),
                // Copied up to the next byte that needs a look, not byte by byte.
                _ => {
                    let rest = &self.text[self.pos..];
                    let run = rest
                        .iter()
                        .position(|&b| matches!(b, b'"' | b'\\' | 0..0x20))
                        .unwrap_or(rest.len());
                    out.extend_from_slice(&rest[..run]);
                    self.pos += run;
                }
            }
        }
        String::from_utf8(out).map_err(|_| error_at(start, "the string is not UTF-8"))
    }

    /// Reads the `XXXX` of a `\uXXXX` escape, and the second half of a UTF-16 surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let start = self.pos - 2;
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.text[self.pos..].starts_with(b"\\u") {
                return Err(error_at(start, "unpaired UTF-16 surrogate"));
            }
            self.pos += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(error_at(start, "unpaired UTF-16 surrogate"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| error_at(start, "unpaired UTF-16 surrogate"))
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self.text.get(self.pos..self.pos + 4).unwrap_or_default();
        if digits.len() < 4 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(self.error("expected four hexadecimal digits"));
        }
        self.pos += 4;
        Ok(digits.iter().fold(0, |n, d| {
            n * 16 + (*d as char).to_digit(16).expect("hex digit")
        }))
    }

    fn array(&mut self, depth: usize) -> Result<Json, Error> {
        self.pos += 1; // `[`
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, Error> {
        self.pos += 1; // `{`
        let mut members = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.pos += 1;
            members.push((key, self.value(depth)?));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Json, Error> {
        Json::parse(text.as_bytes())
    }

    #[test]
    fn parses_every_kind_of_value() {
        let doc = parse(r#" {"a": [1, -2.5e2, 0.125], "b": true, "c": null, "d": "x", "e": {}} "#);
        assert_eq!(
            doc,
            Ok(Json::Object(vec![
                (
                    "a".into(),
                    Json::Array(vec![
                        Json::Number(1.0),
                        Json::Number(-250.0),
                        Json::Number(0.125)
                    ])
                ),
                ("b".into(), Json::Bool(true)),
                ("c".into(), Json::Null),
                ("d".into(), Json::String("x".into())),
                ("e".into(), Json::Object(vec![])),
            ]))
        );
    }

    #[test]
    fn unescapes_strings() {
        assert_eq!(
            parse(r#""q\"b\\s\/n\nt\tu\u00e9\ud83d\ude00""#),
            Ok(Json::String("q\"b\\s/n\nt\tu\u{e9}\u{1f600}".into()))
        );
        assert_eq!(parse("\"h\u{e9}\""), Ok(Json::String("h\u{e9}".into())));
    }

    #[test]
    fn rejects_what_rfc_8259_rejects() {
        let cases = [
            ("", 0, "expected a value"),
            ("not json", 0, "expected a value"),
            ("{\"a\" 1}", 5, "expected `:`"),
            ("[1 2]", 3, "expected `,` or `]`"),
            ("{\"a\":1,}", 7, "expected a string key"),
            ("01", 1, "expected the end of the document"),
            ("1.", 2, "expected a digit"),
            ("-", 1, "expected a digit"),
            ("\"abc", 4, "expected the closing `\"`"),
            ("\"\\x\"", 2, "expected an escape character"),
            ("\"\\u12\"", 3, "expected four hexadecimal digits"),
            ("\"\\ud83d\"", 1, "unpaired UTF-16 surrogate"),
            ("\"\\ude00\"", 1, "unpaired UTF-16 surrogate"),
            ("\"a\nb\"", 2, "control characters must be escaped"),
            ("tru", 0, "expected a value"),
        ];
        for (text, offset, reason) in cases {
            assert_eq!(parse(text), Err(Error { offset, reason }), "{text:?}");
        }
        assert_eq!(
            Json::parse(b"\"\xff\""),
            Err(Error {
                offset: 0,
                reason: "the string is not UTF-8"
            })
        );
    }

    #[test]
    fn limits_nesting() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse(&deep),
            Err(Error {
                offset: MAX_DEPTH,
                reason: "nested too deeply"
            })
        );
    }

    #[test]
    fn prints_compact_json_that_reads_back() {
        let text = r#"{"s":"a\"b\\c\n\u0001é","n":[22.5,-40,0.1,1e21],"t":true,"z":null}"#;
        let printed = parse(text).unwrap().to_string();
        assert_eq!(
            printed,
            r#"{"s":"a\"b\\c\n\u0001é","n":[22.5,-40,0.1,1000000000000000000000],"t":true,"z":null}"#
        );
        assert_eq!(parse(&printed).unwrap().to_string(), printed);
        assert_eq!(Json::Number(f64::NAN).to_string(), "null");
    }

    /// Every string of up to four characters from an alphabet of each kind the printer and the
    /// parser tell apart (plain ASCII and its edges, escaped ASCII, control characters, two-,
    /// three- and four-byte UTF-8): printed as the characters say, read back as it was, alone
    /// and as members of an object, through `Display` and `to_bytes` alike.
    #[test]
    fn strings_print_and_read_back_whatever_they_hold() {
        let alphabet = [
            'a', ' ', '\u{7f}', '"', '\\', '/', '\n', '\r', '\t', '\0', '\u{8}', '\u{1f}', 'é',
            '€', '😀',
        ];
        let expected = |c: char| match c {
            '"' => "\\\"".to_owned(),
            '\\' => "\\\\".to_owned(),
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c if c < ' ' => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        };
        let (mut strings, mut level) = (vec![String::new()], vec![String::new()]);
        for _ in 0..4 {
            level = level
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(level.iter().cloned());
        }
        assert_eq!(strings.len(), 1 + 15 + 225 + 3_375 + 50_625);
        for s in strings {
            let value = Json::String(s.clone());
            let printed = value.to_string();
            let want: String = s.chars().map(expected).collect();
            assert_eq!(printed, ["\"", &want, "\""].concat(), "{s:?}");
            assert_eq!(value.to_bytes(), printed.as_bytes(), "{s:?}");
            assert_eq!(parse(&printed), Ok(value.clone()), "{s:?}");
            let object = Json::Object(vec![
                ("k".to_owned(), Json::Number(1.0)),
                (s.clone(), value.clone()),
                ("w".to_owned(), value),
            ]);
            let doc = [
                "{\"k\":1,",
                &printed,
                ":",
                &printed,
                ",\"w\":",
                &printed,
                "}",
            ]
            .concat();
            assert_eq!(object.to_string(), doc, "{s:?}");
            assert_eq!(object.to_bytes(), doc.as_bytes(), "{s:?}");
            assert_eq!(parse(&doc), Ok(object), "{s:?}");
        }
    }

    /// What the string parser finds inside or after a run of plain bytes keeps its place.
    #[test]
    fn errors_after_a_run_keep_their_offsets() {
        let cases: [(&[u8], usize, &str); 5] = [
            (b"\"abc\xffdef\"", 0, "the string is not UTF-8"),
            (b"\"a\\n\xc3\"", 0, "the string is not UTF-8"),
            (b"\"abc\xff\x01\"", 5, "control characters must be escaped"),
            (b"\"abc\\q\"", 5, "expected an escape character"),
            (b"[\"abc\"  ,  \"de", 14, "expected the closing `\"`"),
        ];
        for (text, offset, reason) in cases {
            assert_eq!(Json::parse(text), Err(Error { offset, reason }), "{text:?}");
        }
    }

    #[test]
    fn error_message_names_the_offset() {
        assert_eq!(
            parse("{").unwrap_err().to_string(),
            "invalid JSON at byte 1: expected a string key"
        );
    }

    #[test]
    fn set_replaces_the_first_member_removes_duplicates_and_appends_new_ones() {
        let mut j = Json::parse(br#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(j.set("a", "x"), Ok(Some(Json::Number(1.0))));
        assert_eq!(j.to_string(), r#"{"a":"x","b":2}"#);
        assert_eq!(j.set("c", true), Ok(None));
        assert_eq!(j.to_string(), r#"{"a":"x","b":2,"c":true}"#);
        assert_eq!(j.remove("b"), Some(Json::Number(2.0)));
        assert_eq!(j.remove("b"), None);
        assert_eq!(j.to_bytes(), br#"{"a":"x","c":true}"#);
        let mut not_an_object = Json::Array(vec![]);
        assert_eq!(not_an_object.set("a", 1.5), Err(Json::Number(1.5)));
        assert_eq!(not_an_object, Json::Array(vec![]));
    }
}
