//! Which sources nodedns answers: a list of address blocks (`[listen] allow`), checked on
//! every packet before anything beyond the header is read.
//!
//! This module owns the list and the check. The default is what a node cache serves:
//! loopback, link-local, the RFC 1918 ranges, 100.64.0.0/10 (RFC 6598, the pod ranges of
//! several CNIs) and unique local IPv6 (`fc00::/7`), plus IPv6 loopback and link-local. A
//! listen address that is routable from outside (a node IP, a ClusterIP) then does not make
//! nodedns an open resolver. What a refused source gets (REFUSED or nothing) is the caller's
//! business.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The default `[listen] allow`.
pub const DEFAULT_ALLOW: [&str; 9] = [
    "127.0.0.0/8",
    "169.254.0.0/16",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
];

/// One address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    V4 { net: u32, mask: u32, len: u8 },
    V6 { net: u128, mask: u128, len: u8 },
}

impl Block {
    fn contains(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Block::V4 { net, mask, .. }, IpAddr::V4(a)) => u32::from(a) & mask == *net,
            (Block::V6 { net, mask, .. }, IpAddr::V6(a)) => u128::from(a) & mask == *net,
            _ => false,
        }
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Block::V4 { net, len, .. } => write!(f, "{}/{len}", Ipv4Addr::from(net)),
            Block::V6 { net, len, .. } => write!(f, "{}/{len}", Ipv6Addr::from(net)),
        }
    }
}

impl FromStr for Block {
    type Err = String;

    /// `ADDR/LEN`, or a bare address (one host). Host bits set below the prefix are an
    /// error: `10.1.2.3/8` more likely means a typo than `10.0.0.0/8`.
    fn from_str(text: &str) -> Result<Block, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: not an address block (ADDR/LEN)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0 to {max}"))?,
        };
        let block = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Block::V4 {
                    net: u32::from(a) & mask,
                    mask,
                    len,
                }
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Block::V6 {
                    net: u128::from(a) & mask,
                    mask,
                    len,
                }
            }
        };
        if !block.contains(addr) || block.host_bits(addr) {
            return Err(format!(
                "{text:?}: address has bits set past the prefix (did you mean {block}?)"
            ));
        }
        Ok(block)
    }
}

impl Block {
    fn host_bits(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Block::V4 { net, .. }, IpAddr::V4(a)) => u32::from(a) != *net,
            (Block::V6 { net, .. }, IpAddr::V6(a)) => u128::from(a) != *net,
            _ => true,
        }
    }
}

/// The allowed sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    v4: Vec<Block>,
    v6: Vec<Block>,
}

impl Default for Allow {
    fn default() -> Allow {
        Allow::parse(&DEFAULT_ALLOW).unwrap_or(Allow {
            v4: Vec::new(),
            v6: Vec::new(),
        })
    }
}

impl Allow {
    /// Reads a list of blocks; the error names the first entry that is not one.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Allow, String> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for entry in list {
            match entry.as_ref().parse()? {
                b @ Block::V4 { .. } => v4.push(b),
                b @ Block::V6 { .. } => v6.push(b),
            }
        }
        Ok(Allow { v4, v6 })
    }

    /// Whether `source` may be answered. An IPv4 address mapped into IPv6 (a dual-stack
    /// socket's view of an IPv4 client) is checked as the IPv4 address it is.
    #[inline]
    pub fn allows(&self, source: IpAddr) -> bool {
        let source = match source {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        let list = if source.is_ipv4() { &self.v4 } else { &self.v6 };
        list.iter().any(|b| b.contains(source))
    }

    /// Whether every source is allowed (`0.0.0.0/0` and `::/0` are both in the list): the
    /// check can be skipped.
    pub fn allows_all(&self) -> bool {
        let all = |list: &[Block]| {
            list.iter()
                .any(|b| matches!(b, Block::V4 { len: 0, .. } | Block::V6 { len: 0, .. }))
        };
        all(&self.v4) && all(&self.v6)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_serves_node_and_pod_ranges_only() {
        let allow = Allow::default();
        for inside in [
            "127.0.0.1",
            "169.254.20.10",
            "10.244.1.7",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "::1",
            "fe80::1",
            "fd00:10:244::7",
            "::ffff:10.1.2.3",
        ] {
            assert!(allow.allows(ip(inside)), "{inside}");
        }
        for outside in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "198.18.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!allow.allows(ip(outside)), "{outside}");
        }
        assert!(!allow.allows_all());
    }

    #[test]
    fn blocks_are_read_strictly() {
        let allow = Allow::parse(&["198.18.0.0/15", "2001:db8::/32", "203.0.113.7"]).unwrap();
        assert!(allow.allows(ip("198.19.255.255")));
        assert!(!allow.allows(ip("198.20.0.0")));
        assert!(allow.allows(ip("2001:db8:ffff::1")));
        assert!(allow.allows(ip("203.0.113.7")));
        assert!(!allow.allows(ip("203.0.113.8")));
        for (bad, says) in [
            ("10.1.2.3/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "0 to 32"),
            ("fc00::/129", "0 to 128"),
            ("example.com/8", "not an address block"),
        ] {
            let err = Allow::parse(&[bad]).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(Allow::parse(&["0.0.0.0/0", "::/0"]).unwrap().allows_all());
    }
}
