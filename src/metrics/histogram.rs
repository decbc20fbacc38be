//! The text exposition of the histograms nodedns keeps itself ([`crate::stats::LatencyHistogram`]).
//!
//! The exporter renders every counter and gauge; histograms are written here, after its
//! text, in the same format 0.0.4 (`_bucket` per bound and `+Inf`, then `_sum` and `_count`).

use std::fmt::Write;

use crate::stats::HistogramSnapshot;

/// Appends the `# HELP`/`# TYPE` lines of one histogram family.
pub fn write_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
}

/// Appends one labelled series of a histogram family.
pub fn write_series(out: &mut String, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\",", escape(v)))
        .collect();
    for (le, count) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.count);
    let labels = labels.trim_end_matches(',');
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_has_every_bound_then_inf_sum_and_count() {
        let h = HistogramSnapshot {
            buckets: vec![(0.5, 1), (2.0, 3)],
            count: 4,
            sum_seconds: 7.25,
        };
        let mut out = String::new();
        write_header(&mut out, "t_seconds", "Time.");
        write_series(&mut out, "t_seconds", &[("upstream", "a\"b")], &h);
        let want = "# HELP t_seconds Time.\n# TYPE t_seconds histogram\n\
            t_seconds_bucket{upstream=\"a\\\"b\",le=\"0.5\"} 1\n\
            t_seconds_bucket{upstream=\"a\\\"b\",le=\"2\"} 3\n\
            t_seconds_bucket{upstream=\"a\\\"b\",le=\"+Inf\"} 4\n\
            t_seconds_sum{upstream=\"a\\\"b\"} 7.25\n\
            t_seconds_count{upstream=\"a\\\"b\"} 4\n";
        assert_eq!(out, want);
    }
}
