//! Telling a search-list expansion from a name a pod meant: `registry.example.com` looked up
//! with `ndots:5` is first tried as `registry.example.com.gitlab.svc.cluster.local`,
//! `registry.example.com.svc.cluster.local` and `registry.example.com.cluster.local`, each
//! of them a query nodedns answers (mostly NXDOMAIN) before the name itself.
//!
//! This module owns the rule and the suffix list it reads (`[stats] search_suffixes`): a
//! query is an expansion when its name ends with one of the suffixes, and what comes before
//! the longest such suffix has a dot of its own. A suffix `*.svc.cluster.local` stands for
//! any one label in front of `svc.cluster.local` (a namespace). It does not count anything.
//!
//! The rule cannot tell a namespace from a name's last label: the second expansion above is
//! read as `registry.example` in namespace `com`. It is still an expansion, and the first
//! one, in the pod's own namespace, names the base right.
//!
//! A name with more labels in front of a cluster suffix than a Service name has, such as a
//! StatefulSet pod's `web-0.nginx.default.svc.cluster.local`, reads as an expansion too;
//! such names get NOERROR, while expansions mostly get NXDOMAIN, which is why the count is
//! kept per rcode.

/// The suffixes, in wire form and lowercased, without their root label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suffixes {
    /// Whole suffixes: `svc.cluster.local`.
    whole: Vec<Box<[u8]>>,
    /// Suffixes with one label of any value in front: `*.svc.cluster.local` is kept as
    /// `svc.cluster.local`.
    any_label: Vec<Box<[u8]>>,
}

/// The default list: what a pod's resolv.conf holds in a cluster named `cluster.local`.
pub const DEFAULT: [&str; 3] = ["*.svc.cluster.local", "svc.cluster.local", "cluster.local"];

impl Suffixes {
    /// Reads suffixes written as dotted names, each optionally starting with `*.`; an error
    /// names the entry that is not a name.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Suffixes, String> {
        let mut out = Suffixes::default();
        for entry in list {
            let entry = entry.as_ref();
            let (any, name) = match entry.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, entry),
            };
            let wire = to_wire(name).ok_or_else(|| format!("{entry:?} is not a domain name"))?;
            if any {
                out.any_label.push(wire);
            } else {
                out.whole.push(wire);
            }
        }
        Ok(out)
    }

    /// The base name of `qname` (wire form, root label last, in any case) when it is a
    /// search-list expansion: its labels in front of the longest matching suffix, in wire
    /// form without the root label. `None` when it is not one.
    pub fn base<'q>(&self, qname: &'q [u8]) -> Option<&'q [u8]> {
        let body = qname.strip_suffix(&[0])?;
        let (labels, cut) = self.cut(body)?;
        // A dot of its own: at least two labels in front of the suffix.
        (labels >= 2).then(|| body.get(..cut)).flatten()
    }

    /// Whether `qname` is a search-list expansion ([`Suffixes::base`] is `Some`). Costs a few
    /// compares from the end of the name for a name that ends with no suffix (most names),
    /// and never allocates: it runs on every cache hit.
    pub fn is_expansion(&self, qname: &[u8]) -> bool {
        self.base(qname).is_some()
    }

    /// Where the longest matching suffix of `body` (a name without its root label) starts:
    /// the number of labels in front of it and its byte offset.
    fn cut(&self, body: &[u8]) -> Option<(usize, usize)> {
        // Any matching suffix ends the name: one that is not even a byte suffix of it rules
        // itself out without walking the labels.
        let ends = |s: &[u8]| {
            body.len() >= s.len() && body[body.len() - s.len()..].eq_ignore_ascii_case(s)
        };
        if !self.whole.iter().chain(&self.any_label).any(|s| ends(s)) {
            return None;
        }
        // Label offsets on the stack: a name of at most 255 bytes has at most 127 labels.
        let mut starts = [0usize; 128];
        let mut count = 0;
        let mut at = 0;
        while at < body.len() {
            let len = usize::from(*body.get(at)?);
            if len == 0 || len > 63 {
                return None;
            }
            *starts.get_mut(count)? = at;
            count += 1;
            at += 1 + len;
        }
        if at != body.len() {
            return None;
        }
        let is = |list: &[Box<[u8]>], from: usize| {
            body.get(from..)
                .is_some_and(|tail| list.iter().any(|s| s.eq_ignore_ascii_case(tail)))
        };
        // The longest suffix is the one that starts leftmost: the first label that starts a
        // whole suffix, or stands in front of an any-label one.
        (0..count).find_map(|i| {
            let here = starts[i];
            let next = starts.get(i + 1).filter(|_| i + 1 < count);
            let any = next.is_some_and(|&n| is(&self.any_label, n));
            (any || is(&self.whole, here)).then_some((i, here))
        })
    }
}

/// A suffix in lowercased wire form without its root label; `None` for what is not a name,
/// and for the root, which is no suffix. Trailing dots are one.
fn to_wire(name: &str) -> Option<Box<[u8]>> {
    let mut wire = crate::zones::to_wire(name.trim_end_matches('.'))?;
    wire.pop();
    (!wire.is_empty()).then(|| wire.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wire(name: &str) -> Vec<u8> {
        let mut w = to_wire(name).unwrap().into_vec();
        w.push(0);
        w
    }

    #[test]
    fn an_ndots_search_list_is_told_from_names_meant() {
        let s = Suffixes::parse(&DEFAULT).unwrap();
        let base = |name: &str| s.base(&wire(name)).map(crate::wire::name_text);
        // The three expansions of registry.example.com in namespace gitlab. In the second,
        // `com` stands where a namespace would: the base is read as `registry.example`.
        for (name, expected) in [
            (
                "registry.example.com.gitlab.svc.cluster.local",
                "registry.example.com",
            ),
            ("registry.example.com.svc.cluster.local", "registry.example"),
            ("registry.example.com.cluster.local", "registry.example.com"),
        ] {
            assert_eq!(base(name).as_deref(), Some(expected), "{name}");
        }
        // kubernetes.default expanded in gitlab.
        assert_eq!(
            base("kubernetes.default.gitlab.svc.cluster.local").as_deref(),
            Some("kubernetes.default")
        );
        // What pods mean: a Service in its namespace, the name itself, a bare word.
        for name in [
            "kubernetes.default.svc.cluster.local",
            "registry.example.com",
            "svc.cluster.local",
            "cluster.local",
            "redis.gitlab.svc.cluster.local",
            "redis.svc.cluster.local",
        ] {
            assert_eq!(base(name), None, "{name}");
        }
    }

    #[test]
    fn suffixes_are_names_and_compared_without_case() {
        let s = Suffixes::parse(&["*.SVC.example.", "example"]).unwrap();
        assert_eq!(
            s.base(&wire("a.b.ns.svc.example"))
                .map(crate::wire::name_text)
                .as_deref(),
            Some("a.b")
        );
        assert_eq!(
            s.base(&wire("a.b.example"))
                .map(crate::wire::name_text)
                .as_deref(),
            Some("a.b")
        );
        let err = Suffixes::parse(&["cluster..local"]).unwrap_err();
        assert!(err.contains("cluster..local"), "{err}");
        assert_eq!(s.base(&[0xC0, 12]), None, "not a name");
    }

    #[test]
    fn a_client_s_case_is_an_expansion_too_and_names_meant_are_not() {
        let s = Suffixes::parse(&DEFAULT).unwrap();
        let expansion = wire("Registry.Example.COM.gitlab.SVC.cluster.local");
        assert!(s.is_expansion(&expansion));
        for meant in [
            "registry.example.com",
            "redis.gitlab.svc.cluster.local",
            "local",
            "",
        ] {
            assert!(!s.is_expansion(&wire_or_root(meant)), "{meant}");
        }
        // The bytes of a suffix, but not on a label boundary.
        assert!(!s.is_expansion(b"\x09a\x07cluster\x05local\x00"));
        assert!(!Suffixes::default().is_expansion(&expansion), "no suffixes");
    }

    fn wire_or_root(name: &str) -> Vec<u8> {
        if name.is_empty() { vec![0] } else { wire(name) }
    }
}
