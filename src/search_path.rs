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

    /// The base name of `qname` (wire form, lowercased, root label last) when it is a
    /// search-list expansion: its labels in front of the longest matching suffix, in wire
    /// form without the root label. `None` when it is not one.
    pub fn base<'q>(&self, qname: &'q [u8]) -> Option<&'q [u8]> {
        let body = qname.strip_suffix(&[0])?;
        let starts = label_starts(body)?;
        // The longest suffix is the one that starts leftmost.
        let mut cut: Option<usize> = None;
        for (i, &at) in starts.iter().enumerate() {
            let tail = body.get(at..)?;
            let any = i
                .checked_sub(1)
                .filter(|_| self.any_label.iter().any(|s| **s == *tail))
                .and_then(|before| starts.get(before).copied());
            let whole = self.whole.iter().any(|s| **s == *tail).then_some(at);
            for here in [any, whole].into_iter().flatten() {
                cut = Some(cut.map_or(here, |c| c.min(here)));
            }
        }
        let prefix = body.get(..cut?)?;
        // A dot of its own: at least two labels in front of the suffix.
        let labels = label_starts(prefix)?.len();
        (labels >= 2).then_some(prefix)
    }
}

/// The offsets of each label of `body` (wire form, no root label); `None` when it is not a
/// sequence of labels.
fn label_starts(body: &[u8]) -> Option<Vec<usize>> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let len = usize::from(*body.get(at)?);
        if len == 0 || len > 63 {
            return None;
        }
        starts.push(at);
        at += 1 + len;
    }
    (at == body.len()).then_some(starts)
}

fn to_wire(name: &str) -> Option<Box<[u8]>> {
    let name = name.trim_end_matches('.');
    let mut out = Vec::new();
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))?;
        out.push(len);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    (out.len() < 255).then(|| out.into_boxed_slice())
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

    fn dotted(base: &[u8]) -> String {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(&len) = base.get(at) {
            let len = usize::from(len);
            out.push(String::from_utf8_lossy(&base[at + 1..at + 1 + len]).into_owned());
            at += 1 + len;
        }
        out.join(".")
    }

    #[test]
    fn an_ndots_search_list_is_told_from_names_meant() {
        let s = Suffixes::parse(&DEFAULT).unwrap();
        let base = |name: &str| s.base(&wire(name)).map(dotted);
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
            s.base(&wire("a.b.ns.svc.example")).map(dotted).as_deref(),
            Some("a.b")
        );
        assert_eq!(
            s.base(&wire("a.b.example")).map(dotted).as_deref(),
            Some("a.b")
        );
        let err = Suffixes::parse(&["cluster..local"]).unwrap_err();
        assert!(err.contains("cluster..local"), "{err}");
        assert_eq!(s.base(&[0xC0, 12]), None, "not a name");
    }
}
