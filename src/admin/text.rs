//! Reading a Prometheus text exposition (format 0.0.4), as `doctor` and the tests read
//! `/metrics`: the samples with their labels, and each family's `# TYPE` and `# HELP`.
//!
//! Strict: a line that is not a comment, a blank or a sample is an error naming the line, so
//! an exposition that a scraper would refuse does not pass as a partial one.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Whether the sample carries every pair of `labels` (and maybe more).
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A parsed exposition.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE` per metric family.
    pub types: BTreeMap<String, String>,
    /// Families with a non-empty `# HELP`.
    pub helped: BTreeSet<String>,
}

/// Why an exposition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct TextError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

impl Exposition {
    pub fn parse(text: &str) -> Result<Exposition, TextError> {
        let mut out = Exposition::default();
        for (i, line) in text.lines().enumerate() {
            let fail = |reason| TextError {
                line: i + 1,
                reason,
                text: line.to_owned(),
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| fail("TYPE without a type"))?;
                out.types.insert(name.to_owned(), kind.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                if !help.trim().is_empty() {
                    out.helped.insert(name.to_owned());
                }
            } else if !line.starts_with('#') {
                out.samples.push(sample(line).map_err(fail)?);
            }
        }
        Ok(out)
    }

    /// The samples of `name` that carry `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has(labels))
    }

    /// The sum over the samples of `name` that carry `labels`; `None` when there are none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.matching(name, labels).peekable();
        found.peek()?;
        Some(found.map(|s| s.value).sum())
    }
}

fn sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("not a metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        rest = read_labels(body, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "value is not a number")?,
    };
    // An optional timestamp in milliseconds, then nothing.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| "timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `k="v",...}` into `labels` (values unescaped: `\\`, `\"`, `\n`) and returns what
/// follows the closing brace.
fn read_labels<'a>(
    mut text: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, &'static str> {
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok(after);
        }
        let (key, after) = text.split_once("=\"").ok_or("a label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars
                .next()
                .ok_or("a label value without its closing quote")?
            {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("an escape at the end")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return Err("an unknown escape in a label value"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = after[end + 1..].trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn samples_types_and_help_are_read() {
        let text = "\
# HELP nodedns_requests_total Queries received.
# TYPE nodedns_requests_total counter
nodedns_requests_total{proto=\"udp\",zone=\".\"} 900
nodedns_requests_total{proto=\"tcp\",zone=\".\",} 100 1700000000000
# HELP nodedns_inflight
# TYPE nodedns_inflight gauge
nodedns_inflight 3
x_bucket{le=\"+Inf\",q=\"a \\\"b\\\" \\\\ c\\nd\"} +Inf
";
        let e = Exposition::parse(text).unwrap();
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.sum("nodedns_requests_total", &[]), Some(1000.0));
        assert_eq!(
            e.sum("nodedns_requests_total", &[("proto", "tcp")]),
            Some(100.0)
        );
        assert_eq!(e.sum("nodedns_requests_total", &[("proto", "doh")]), None);
        assert_eq!(
            e.types.get("nodedns_inflight").map(String::as_str),
            Some("gauge")
        );
        assert!(e.helped.contains("nodedns_requests_total"));
        assert!(!e.helped.contains("nodedns_inflight"), "empty HELP");
        assert_eq!(e.samples[3].label("q"), Some("a \"b\" \\ c\nd"));
        assert_eq!(e.samples[3].value, f64::INFINITY);
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line() {
        for (bad, reason) in [
            ("garbage{", "a label without =\""),
            ("name{a=\"b} 1", "a label value without its closing quote"),
            ("{} 1", "not a metric name"),
            ("name{a=\"b\"} notanumber", "value is not a number"),
            ("name{a=\"b\"}", "no value"),
            ("name 1 2 3", "text after the timestamp"),
            ("name{a=b} 1", "a label without =\""),
        ] {
            let err = Exposition::parse(&format!("ok 1\n{bad}\n")).unwrap_err();
            assert_eq!((err.line, err.reason), (2, reason), "{bad}");
        }
    }
}
