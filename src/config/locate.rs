//! Where a problem is: byte offsets to line and column, and offsets to dotted key paths.
//!
//! This module owns turning spans (from the TOML parser, serde errors and `Spanned` values)
//! into [`Diagnostic`]s, and collecting them so that every problem in a file is reported at once.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::Diagnostic;

/// Collects diagnostics for one file.
pub struct Diags<'a> {
    file: &'a str,
    text: &'a str,
    pub items: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Diags {
            file,
            text,
            items: Vec::new(),
        }
    }

    /// Records a problem at byte `span` of the text (start of file when `None`).
    pub fn at(&mut self, span: Option<Range<usize>>, key: &str, reason: impl Into<String>) {
        let (line, column) = line_col(self.text, span.map_or(0, |s| s.start));
        self.items.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            reason: reason.into(),
        });
    }
}

impl Diags<'_> {
    /// The 1-based line of byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Turns a TOML syntax or schema error into one diagnostic, naming the key it is under.
pub fn toml_error(diags: &mut Diags<'_>, error: &toml::de::Error, table: Option<&DeTable<'_>>) {
    let span = error.span();
    let key = match (table, &span) {
        (Some(table), Some(span)) => key_at(table, span.start),
        _ => String::new(),
    };
    diags.at(span, &key, error.message());
}

/// The dotted path of the key at byte `offset`.
///
/// An offset on a value gives that value's key (`cache.max_ttl`); an offset on a key gives the
/// table it is in (`cache` for an unknown key there), or the key itself at the top level. An
/// offset on neither (a syntax error) gives the last key started before it.
pub fn key_at(table: &DeTable<'_>, offset: usize) -> String {
    let mut best: Option<Hit> = None;
    let mut last: Option<(usize, String)> = None;
    walk_table(table, "", offset, &mut best, &mut last);
    match (best, last) {
        (Some(hit), _) => hit.path,
        (None, Some((_, path))) => path,
        (None, None) => String::new(),
    }
}

/// The smallest span containing the offset, with the path it stands for.
struct Hit {
    len: usize,
    path: String,
}

fn consider(best: &mut Option<Hit>, span: &Range<usize>, offset: usize, path: &str) {
    let contains = span.start <= offset && offset < span.end.max(span.start + 1);
    let len = span.end.saturating_sub(span.start);
    if contains && best.as_ref().is_none_or(|hit| len <= hit.len) {
        *best = Some(Hit {
            len,
            path: path.to_owned(),
        });
    }
}

fn walk_table(
    table: &DeTable<'_>,
    prefix: &str,
    offset: usize,
    best: &mut Option<Hit>,
    last: &mut Option<(usize, String)>,
) {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        let key_span = key.span();
        let owner = if prefix.is_empty() { &path } else { prefix };
        consider(best, &key_span, offset, owner);
        if key_span.start <= offset && last.as_ref().is_none_or(|(s, _)| key_span.start >= *s) {
            *last = Some((key_span.start, path.clone()));
        }
        consider(best, &value.span(), offset, &path);
        walk_value(value.get_ref(), &path, offset, best, last);
    }
}

fn walk_value(
    value: &DeValue<'_>,
    path: &str,
    offset: usize,
    best: &mut Option<Hit>,
    last: &mut Option<(usize, String)>,
) {
    match value {
        DeValue::Table(table) => walk_table(table, path, offset, best, last),
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                consider(best, &item.span(), offset, &item_path);
                walk_value(item.get_ref(), &item_path, offset, best, last);
            }
        }
        _ => {}
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key_of(text: &str, needle: &str) -> String {
        let table = DeTable::parse(text).unwrap();
        key_at(table.get_ref(), text.find(needle).unwrap())
    }

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_col(text, text.find("\"x").unwrap()), (2, 6));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn values_name_their_full_key_path() {
        let text = "[cache]\nmax_ttl = \"1d\"\n[[zones]]\nname = \".\"\n\
                    [[zones]]\nupstreams = [\"a\", \"b\"]\ncache = { min_ttl = \"x\" }\n";
        assert_eq!(key_of(text, "\"1d\""), "cache.max_ttl");
        assert_eq!(key_of(text, "\"b\""), "zones[1].upstreams[1]");
        assert_eq!(key_of(text, "\"x\""), "zones[1].cache.min_ttl");
        assert_eq!(key_of(text, "\".\""), "zones[0].name");
    }

    #[test]
    fn keys_name_their_table() {
        let text = "top = 1\n[cache]\ncapacty = 3\n";
        assert_eq!(key_of(text, "capacty"), "cache");
        assert_eq!(key_of(text, "top"), "top");
    }
}
