//! The verdicts `doctor` prints: one line per check with its evidence and, on failure, the fix;
//! as text for a person or as JSON for automation. Both carry the same verdicts.

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth knowing, not broken: does not change the exit code.
    Warn,
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub status: Status,
    /// What was checked, e.g. `upstream udp 10.0.0.2:53 (zone .)`.
    pub check: String,
    /// What was seen: rcodes, addresses, round-trip times, counts.
    pub evidence: String,
    /// What to do about it; present when the status is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Verdict {
    pub fn ok(check: impl Into<String>, evidence: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Ok,
            check: check.into(),
            evidence: evidence.into(),
            fix: None,
        }
    }

    pub fn warn(
        check: impl Into<String>,
        evidence: impl Into<String>,
        fix: impl Into<String>,
    ) -> Verdict {
        Verdict {
            status: Status::Warn,
            check: check.into(),
            evidence: evidence.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(
        check: impl Into<String>,
        evidence: impl Into<String>,
        fix: impl Into<String>,
    ) -> Verdict {
        Verdict {
            status: Status::Fail,
            check: check.into(),
            evidence: evidence.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every verdict of one run, in the order the checks are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
}

/// The JSON document: the verdicts plus a summary a script can branch on.
#[derive(Serialize)]
struct Document<'a> {
    passed: bool,
    ok: usize,
    warn: usize,
    fail: usize,
    verdicts: &'a [Verdict],
}

impl Report {
    pub fn extend(&mut self, verdicts: impl IntoIterator<Item = Verdict>) {
        self.verdicts.extend(verdicts);
    }

    /// No check failed (warnings allowed): exit 0.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.status != Status::Fail)
    }

    fn count(&self, status: Status) -> usize {
        self.verdicts.iter().filter(|v| v.status == status).count()
    }

    /// One line per verdict (`ok   check: evidence`), the fix indented under a failure or
    /// warning, then a summary line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for v in &self.verdicts {
            text.push_str(&format!(
                "{:<4} {}: {}\n",
                v.status.word(),
                v.check,
                v.evidence
            ));
            if let Some(fix) = &v.fix {
                text.push_str(&format!("     fix: {fix}\n"));
            }
        }
        text.push_str(&format!(
            "{} ok, {} warn, {} fail\n",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail)
        ));
        text
    }

    /// The same verdicts as one JSON document.
    pub fn to_json(&self) -> String {
        let doc = Document {
            passed: self.passed(),
            ok: self.count(Status::Ok),
            warn: self.count(Status::Warn),
            fail: self.count(Status::Fail),
            verdicts: &self.verdicts,
        };
        // Serialising plain strings, numbers and enums cannot fail.
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Report {
        Report {
            verdicts: vec![
                Verdict::ok("config", "2 zones"),
                Verdict::fail(
                    "upstream udp 10.0.0.2:53",
                    "timeout after 1 s",
                    "open port 53",
                ),
            ],
        }
    }

    #[test]
    fn text_has_one_line_per_verdict_and_the_fix_under_a_failure() {
        let text = sample().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ok   config: 2 zones");
        assert_eq!(lines[1], "fail upstream udp 10.0.0.2:53: timeout after 1 s");
        assert_eq!(lines[2], "     fix: open port 53");
        assert_eq!(lines[3], "1 ok, 0 warn, 1 fail");
    }

    #[test]
    fn json_carries_the_same_verdicts_and_the_outcome() {
        let report = sample();
        let doc: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(doc["passed"], false);
        assert_eq!(doc["fail"], 1);
        assert_eq!(doc["verdicts"][1]["status"], "fail");
        assert_eq!(doc["verdicts"][1]["check"], "upstream udp 10.0.0.2:53");
        assert_eq!(doc["verdicts"][0].get("fix"), None);
    }

    #[test]
    fn warnings_alone_pass() {
        let mut report = Report::default();
        report.extend([Verdict::warn("daemon", "admin disabled", "enable it")]);
        assert!(report.passed());
        assert!(!sample().passed());
    }
}
