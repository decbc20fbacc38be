//! Checking one value at a time: defaults, units, ranges and the order of two related values.
//!
//! Every check records a diagnostic and returns `None` when the value is bad, so that callers
//! can check every key before giving up and report all problems at once.

use std::ops::Range;
use std::time::Duration;

use super::locate::Diags;
use super::raw::{Opt, Scalar};
use super::units::{format_duration, parse_duration, parse_size};

/// A checked value with where it came from; `span` is `None` for a default.
#[derive(Debug, Clone)]
pub struct Field<T> {
    pub value: T,
    pub span: Option<Range<usize>>,
    pub key: String,
}

impl<T> Field<T> {
    /// A key the file left unset: its default, with nowhere in the file to point at.
    pub fn default_at(key: &str, value: T) -> Self {
        Field {
            value,
            span: None,
            key: key.to_owned(),
        }
    }

    /// The same value as a default: problems it causes are reported where something else was set.
    pub fn inherited(&self) -> Self
    where
        T: Clone,
    {
        Field {
            value: self.value.clone(),
            span: None,
            key: self.key.clone(),
        }
    }
}

/// The checker for one file.
pub struct Check<'a> {
    pub diags: Diags<'a>,
}

impl Check<'_> {
    /// Records a problem at `span`.
    pub fn error(&mut self, span: Option<Range<usize>>, key: &str, reason: impl Into<String>) {
        self.diags.at(span, key, reason);
    }

    /// A value used as is, or its default.
    pub fn plain<T: Clone>(&self, key: &str, raw: &Opt<T>, default: T) -> Field<T> {
        match raw {
            Some(v) => Field {
                value: v.get_ref().clone(),
                span: Some(v.span()),
                key: key.to_owned(),
            },
            None => Field::default_at(key, default),
        }
    }

    /// Parses `raw` with `parse`, or takes the default.
    fn parsed<T>(
        &mut self,
        key: &str,
        raw: &Opt<Scalar>,
        default: T,
        parse: impl Fn(&Scalar) -> Result<T, String>,
    ) -> Option<Field<T>> {
        let Some(v) = raw else {
            return Some(Field::default_at(key, default));
        };
        match parse(v.get_ref()) {
            Ok(value) => Some(Field {
                value,
                span: Some(v.span()),
                key: key.to_owned(),
            }),
            Err(reason) => {
                self.error(Some(v.span()), key, reason);
                None
            }
        }
    }

    /// A duration with a unit (`"30s"`).
    pub fn duration(
        &mut self,
        key: &str,
        raw: &Opt<Scalar>,
        default: Duration,
    ) -> Option<Field<Duration>> {
        self.parsed(key, raw, default, |v| match v {
            Scalar::Str(s) => parse_duration(s),
            Scalar::Int(n) => Err(format!(
                "durations need a unit: write \"{n}s\" or \"{n}ms\", as a string"
            )),
            other => Err(format!(
                "{other} is not a duration: write a string such as \"30s\""
            )),
        })
    }

    /// A duration that must be more than zero.
    pub fn positive(
        &mut self,
        key: &str,
        raw: &Opt<Scalar>,
        default: Duration,
    ) -> Option<Field<Duration>> {
        let field = self.duration(key, raw, default)?;
        if field.value.is_zero() {
            self.error(field.span, key, "must be more than 0s");
            return None;
        }
        Some(field)
    }

    /// A byte size: `"64MiB"` or an integer of bytes.
    pub fn size(&mut self, key: &str, raw: &Opt<Scalar>, default: u64) -> Option<Field<u64>> {
        self.parsed(key, raw, default, |v| match v {
            Scalar::Str(s) => parse_size(s),
            Scalar::Int(n) => u64::try_from(*n).map_err(|_| format!("{n} bytes is negative")),
            other => Err(format!("{other} is not a size: write e.g. \"64MiB\"")),
        })
    }

    /// An integer in `min..=max`, converted to the type of the field.
    pub fn count<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        raw: &Opt<i64>,
        default: T,
        (min, max): (i64, i64),
    ) -> Option<Field<T>> {
        let Some(v) = raw else {
            return Some(Field::default_at(key, default));
        };
        let n = *v.get_ref();
        let converted = T::try_from(n).ok().filter(|_| (min..=max).contains(&n));
        if converted.is_none() {
            let reason = if max == i64::MAX {
                format!("{n} is out of range: at least {min}")
            } else {
                format!("{n} is out of range {min} to {max}")
            };
            self.error(Some(v.span()), key, reason);
        }
        Some(Field {
            value: converted?,
            span: Some(v.span()),
            key: key.to_owned(),
        })
    }

    /// A duration that must not exceed `max`, the most any operator means (see
    /// docs/config.md for each key's bound and why).
    pub fn at_most(
        &mut self,
        field: Option<Field<Duration>>,
        max: Duration,
    ) -> Option<Field<Duration>> {
        let field = field?;
        if field.value <= max {
            return Some(field);
        }
        let reason = format!(
            "{} is above the most allowed, {}",
            format_duration(field.value),
            format_duration(max)
        );
        self.error(field.span, &field.key, reason);
        None
    }

    /// Requires `lo <= hi`, reporting at `hi` if it was set, else at `lo`.
    pub fn not_above(&mut self, lo: &Field<Duration>, hi: &Field<Duration>) -> bool {
        if lo.value <= hi.value {
            return true;
        }
        if lo.span.is_none() && hi.span.is_none() {
            // Both inherited: the conflict was reported where they were set.
            return false;
        }
        let reason = format!(
            "{} ({}) is above {} ({})",
            lo.key,
            format_duration(lo.value),
            hi.key,
            format_duration(hi.value)
        );
        let at = if hi.span.is_some() { hi } else { lo };
        self.error(at.span.clone(), &at.key, reason);
        false
    }
}
