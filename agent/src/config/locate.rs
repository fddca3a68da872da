//! Maps between byte spans in the config text, dotted key paths and line/column positions.

use std::fmt::Write as _;
use std::ops::Range;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

/// The parsed document, kept next to the typed config so errors can point into the file.
pub(super) struct Document<'i> {
    root: Spanned<DeTable<'i>>,
}

/// One step of a key path: a table key or an array index.
enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

impl<'i> Document<'i> {
    /// Wraps a (possibly partially recovered) parse tree.
    pub(super) fn new(root: Spanned<DeTable<'i>>) -> Self {
        Self { root }
    }

    /// The span of the root table.
    pub(super) fn root_span(&self) -> Range<usize> {
        self.root.span()
    }

    /// Finds the span of the value at `path` (e.g. `mqtt.subscriptions[1].qos`).
    ///
    /// A key that is absent from the file (because it was defaulted) resolves to the closest
    /// ancestor that is present, so the error still points somewhere useful: its table header.
    pub(super) fn locate(&self, path: &str) -> Range<usize> {
        let mut span = self.root.span();
        let mut table = Some(self.root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'i>>]> = None;
        for segment in segments(path) {
            let next = match segment {
                Segment::Key(key) => table.and_then(|t| t.get(key)),
                Segment::Index(i) => array.and_then(|a| a.get(i)),
            };
            let Some(value) = next else { break };
            span = value.span();
            table = value.get_ref().as_table();
            array = value.get_ref().as_array().map(|a| &a[..]);
        }
        span
    }

    /// Names the deepest key whose key or value contains `span`.
    ///
    /// Header tables (`[mqtt]`) only span their header, so their entries are not nested inside
    /// them by position; hence the whole tree is searched rather than descending by containment.
    pub(super) fn path_at(&self, span: &Range<usize>) -> String {
        let mut best = Best {
            exact: *span == self.root.span(),
            ..Best::default()
        };
        let mut path = Vec::new();
        walk_table(self.root.get_ref(), span, &mut path, &mut best);
        best.path
    }
}

#[derive(Default)]
struct Best {
    depth: usize,
    exact: bool,
    path: String,
}

impl Best {
    fn offer(&mut self, path: &[String], exact: bool) {
        // An exact span match is what serde reports for a table as a whole (a missing key);
        // it beats a deeper entry that merely overlaps, e.g. a table header at offset 0.
        if (exact, path.len()) > (self.exact, self.depth) {
            self.depth = path.len();
            self.exact = exact;
            self.path = path.concat();
        }
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    if inner.is_empty() {
        outer.start <= inner.start && inner.start < outer.end.max(outer.start + 1)
    } else {
        outer.start <= inner.start && inner.end <= outer.end
    }
}

fn walk_table(table: &DeTable<'_>, target: &Range<usize>, path: &mut Vec<String>, best: &mut Best) {
    for (key, value) in table.iter() {
        let mut segment = String::new();
        if !path.is_empty() {
            segment.push('.');
        }
        push_key(&mut segment, key.get_ref());
        path.push(segment);
        let exact = value.span() == *target;
        if exact || contains(&key.span(), target) || contains(&value.span(), target) {
            best.offer(path, exact);
        }
        walk_value(value.get_ref(), target, path, best);
        path.pop();
    }
}

fn walk_value(value: &DeValue<'_>, target: &Range<usize>, path: &mut Vec<String>, best: &mut Best) {
    match value {
        DeValue::Table(table) => walk_table(table, target, path, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(format!("[{i}]"));
                let exact = item.span() == *target;
                if exact || contains(&item.span(), target) {
                    best.offer(path, exact);
                }
                walk_value(item.get_ref(), target, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Appends `key`, quoted if it is not a bare TOML key, so the path can be pasted back.
fn push_key(out: &mut String, key: &str) {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        out.push_str(key);
    } else {
        let _ = write!(out, "{key:?}");
    }
}

fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        let indexes = indexes
            .split('[')
            .filter_map(|i| i.trim_end_matches(']').parse().ok())
            .map(Segment::Index);
        std::iter::once(Segment::Key(key)).chain(indexes)
    })
}

/// Converts a byte offset to a 1-based (line, column), counting columns in characters.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[mqtt]
host = "x"
subscriptions = [{ filter = "a/#", qos = 1 }, { filter = "b", qos = 2 }]

[[routing.rules]]
filter = "a/+"
topic = "t"

[[routing.rules]]
filter = "b"
"weird key" = 1
"#;

    fn doc() -> Document<'static> {
        Document::new(DeTable::parse(TEXT).expect("valid TOML"))
    }

    fn span_of(needle: &str) -> Range<usize> {
        let start = TEXT.find(needle).expect("needle present");
        start..start + needle.len()
    }

    #[test]
    fn path_at_finds_deepest_entry() {
        let doc = doc();
        assert_eq!(doc.path_at(&span_of("\"x\"")), "mqtt.host");
        let qos_key = span_of("qos = 2").start;
        assert_eq!(
            doc.path_at(&(qos_key..qos_key + 3)),
            "mqtt.subscriptions[1].qos"
        );
        let two = span_of("2 }").start;
        assert_eq!(doc.path_at(&(two..two + 1)), "mqtt.subscriptions[1].qos");
        // A span reaching past the value belongs to the enclosing inline table.
        assert_eq!(doc.path_at(&span_of("2 }")), "mqtt.subscriptions[1]");
        assert_eq!(
            doc.path_at(&span_of("\"weird key\"")),
            "routing.rules[1].\"weird key\""
        );
        assert_eq!(doc.path_at(&(0..0)), "");
        assert_eq!(doc.path_at(&span_of("[mqtt]")), "mqtt");
    }

    #[test]
    fn locate_round_trips() {
        let doc = doc();
        assert_eq!(
            doc.locate("mqtt.subscriptions[1].qos"),
            span_of("2 }").start..span_of("2 }").start + 1
        );
        assert_eq!(doc.locate("routing.rules[0].topic"), span_of("\"t\""));
        // Absent keys fall back to the nearest present ancestor.
        assert_eq!(doc.locate("mqtt.port"), span_of("[mqtt]"));
        assert_eq!(doc.locate("kafka.linger"), 0..0);
        assert_eq!(
            doc.locate("routing.rules[7].topic"),
            doc.locate("routing.rules")
        );
    }

    #[test]
    fn line_col_is_one_based_and_char_aware() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 10), (2, 4));
        assert_eq!(line_col(text, 9), (2, 3));
        // Inside the two-byte 'é': snaps back to its start.
        assert_eq!(line_col(text, 8), (2, 2));
        assert_eq!(line_col(text, 1000), (3, 1));
    }
}
