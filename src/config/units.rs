//! Values with units: durations (`"1.8s"`), byte sizes (`"64MiB"`) and socket addresses.
//!
//! Each parser takes the text an operator wrote and returns the value or a reason that quotes
//! the text and says what would be accepted; locating the reason in the file is the caller's job.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The DNS port, used when an upstream or nameserver names no port.
pub const DNS_PORT: u16 = 53;

const DURATION_UNITS: &str = "ms, s, m, h or d";

/// Parses a duration such as `"0s"`, `"50ms"`, `"1.8s"`, `"5m"`, `"1h"` or `"1d"`.
///
/// A number without a unit is refused: `ttl = "30"` could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: expected a number and a unit ({DURATION_UNITS}), e.g. \"30s\""
        ));
    }
    let unit_nanos: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        "" => {
            return Err(format!(
                "`{text}` has no unit: write e.g. \"{text}s\" ({DURATION_UNITS})"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use {DURATION_UNITS}"
            ));
        }
    };
    let nanos = decimal_times(number, unit_nanos)
        .ok_or_else(|| format!("`{text}` is not a duration: `{number}` is not a number"))?;
    let nanos = u64::try_from(nanos).map_err(|_| format!("`{text}` is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// `number * scale` for a decimal `number` with at most 9 fraction digits, exactly.
fn decimal_times(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || fraction.len() > 9 {
        return None;
    }
    if number.contains('.') && fraction.is_empty() {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let mut result = whole.checked_mul(scale)?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).ok()?;
        let fraction: u128 = fraction.parse().ok()?;
        result = result.checked_add(fraction.checked_mul(scale)? / 10u128.pow(digits))?;
    }
    Some(result)
}

/// Writes a duration the way a config file would (`"1.8s"`, `"5m"`, `"1d"`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let units: [(u128, &str); 5] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (scale, unit) in units {
        if nanos.is_multiple_of(scale) {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{d:?}")
}

/// Parses a byte size such as `"64MiB"`, `"512KiB"`, `"1GiB"` or `"1000B"` (1024-based units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "K" | "KB" | "kB" | "M" | "MB" | "G" | "GB" | "T" | "TB" => {
            return Err(format!(
                "`{text}`: write 1024-based units as KiB, MiB, GiB or TiB, or give bytes as B"
            ));
        }
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`: use B, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: expected e.g. \"64MiB\""))?;
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses an upstream: `"10.0.0.2"`, `"10.0.0.2:5353"`, `"::1"` or `"[::1]:53"`; port 53 if
/// none is given.
pub fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    let addr = if let Ok(addr) = text.parse::<SocketAddr>() {
        addr
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        SocketAddr::new(ip, DNS_PORT)
    } else if let Some(ip) = bracketed_v6(text) {
        SocketAddr::new(IpAddr::V6(ip), DNS_PORT)
    } else if text.contains('%') {
        return Err(format!(
            "`{text}`: scoped IPv6 addresses are not supported; use a global or ULA address"
        ));
    } else {
        return Err(format!(
            "`{text}` is not an IP address or IP:port (upstreams are addresses, not names)"
        ));
    };
    if let Some(why) = not_a_resolver(addr.ip()) {
        return Err(format!("`{text}` is {why}, not a resolver"));
    }
    if addr.port() == 0 {
        return Err(format!("`{text}`: port 0 cannot be sent to"));
    }
    Ok(addr)
}

/// Why no resolver can be at `ip`, if none can: addresses that name no single host. A
/// subnet's directed broadcast address (`10.0.0.255` in a /24) looks like any host address
/// without the subnet's mask, which a config does not know, so it is not caught here.
pub(super) fn not_a_resolver(ip: IpAddr) -> Option<&'static str> {
    // `::ffff:a.b.c.d` is the IPv4 address a.b.c.d to a dual-stack socket.
    match ip.to_canonical() {
        ip if ip.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => {
            Some("in 0.0.0.0/8, which names this network, not a host (RFC 1122 §3.2.1.3)")
        }
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        ip if ip.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// The loop guard: whether queries sent to `upstream` would arrive at one of nodedns's own
/// `listen` addresses. They do when the port is the same and so is the address (an
/// IPv4-mapped IPv6 address counting as its IPv4 address), and when a listen address is
/// unspecified, which receives what is sent to every local address, loopback included (a
/// defence: listen addresses are refused unspecified today). A socket bound to one loopback
/// address receives nothing sent to another, so `127.0.0.53` (systemd-resolved) stays a
/// valid upstream of a nodedns on `127.0.0.1:53`. A loop through another resolver that
/// forwards back to nodedns cannot be seen in addresses.
pub fn is_own_address(upstream: SocketAddr, listen: &[SocketAddr]) -> bool {
    let up = upstream.ip().to_canonical();
    listen.iter().any(|own| {
        let ip = own.ip().to_canonical();
        own.port() == upstream.port() && (ip == up || (ip.is_unspecified() && up.is_loopback()))
    })
}

fn bracketed_v6(text: &str) -> Option<Ipv6Addr> {
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Parses a listen address: an IP and a port (`"169.254.20.10:53"`, `"[::1]:53"`); port 0 asks
/// the kernel for a free port.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let addr = parse_with_port(text)?;
    if addr.ip().is_unspecified() {
        // A UDP socket bound to the wildcard answers from the node's primary address, which a
        // client that asked 169.254.20.10 drops as a spoofed reply.
        return Err(format!(
            "`{text}`: bind a specific address: replies must leave from the address the query was sent to"
        ));
    }
    Ok(addr)
}

/// Parses `IP:port`, explaining a missing port.
pub fn parse_with_port(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| {
        if text.parse::<IpAddr>().is_ok() || bracketed_v6(text).is_some() {
            format!("`{text}` has no port: write e.g. \"169.254.20.10:53\" or \"[::1]:53\"")
        } else {
            format!("`{text}` is not an IP:port address")
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_with_each_unit() {
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("50ms").unwrap(), ms(50));
        assert_eq!(parse_duration("1.8s").unwrap(), ms(1800));
        assert_eq!(parse_duration("30s").unwrap(), ms(30_000));
        assert_eq!(parse_duration("5m").unwrap(), ms(300_000));
        assert_eq!(parse_duration("1h").unwrap(), ms(3_600_000));
        assert_eq!(parse_duration("1d").unwrap(), ms(86_400_000));
        assert_eq!(parse_duration("0.5ms").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("1.5h").unwrap(), ms(5_400_000));
    }

    #[test]
    fn durations_without_a_unit_are_refused_with_a_hint() {
        let reason = parse_duration("30").unwrap_err();
        assert!(reason.contains("no unit"), "{reason}");
        assert!(reason.contains("\"30s\""), "{reason}");
    }

    #[test]
    fn durations_with_unknown_units_name_the_unit() {
        let reason = parse_duration("5sec").unwrap_err();
        assert!(reason.contains("unknown unit `sec`"), "{reason}");
        assert!(
            parse_duration("1w")
                .unwrap_err()
                .contains("unknown unit `w`")
        );
        assert!(
            parse_duration("5 s")
                .unwrap_err()
                .contains("unknown unit ` s`")
        );
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in [
            "",
            "s",
            "-1s",
            "1..2s",
            "1.s",
            ".5s",
            "1.2.3s",
            "0.0000000001s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
        assert!(
            parse_duration("99999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn durations_print_in_their_largest_exact_unit() {
        for text in ["0s", "50ms", "30s", "5m", "1h", "1d", "90m", "1500ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(format_duration(parse_duration("1.5h").unwrap()), "90m");
    }

    #[test]
    fn sizes_in_bytes_and_binary_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1000B").unwrap(), 1000);
        assert_eq!(parse_size("1000").unwrap(), 1000);
    }

    #[test]
    fn sizes_with_decimal_or_unknown_units_are_refused() {
        assert!(parse_size("64MB").unwrap_err().contains("MiB"));
        assert!(
            parse_size("3 apples")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_size("MiB").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn upstreams_default_to_port_53() {
        assert_eq!(
            parse_upstream("10.0.0.2").unwrap(),
            "10.0.0.2:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("10.0.0.2:5353").unwrap(),
            "10.0.0.2:5353".parse().unwrap()
        );
        assert_eq!(parse_upstream("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert_eq!(
            parse_upstream("[::1]:53").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("[::1]").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("[fd00::2]:5300").unwrap(),
            "[fd00::2]:5300".parse().unwrap()
        );
    }

    #[test]
    fn upstream_names_and_nonsense_are_refused() {
        assert!(
            parse_upstream("dns.google")
                .unwrap_err()
                .contains("not names")
        );
        assert!(parse_upstream("10.0.0.2:99999").is_err());
        assert!(
            parse_upstream("fe80::1%eth0")
                .unwrap_err()
                .contains("scoped")
        );
        assert!(
            parse_upstream("0.0.0.0")
                .unwrap_err()
                .contains("unspecified")
        );
        assert!(parse_upstream("10.0.0.2:0").unwrap_err().contains("port 0"));
        assert!(parse_upstream("").is_err());
    }

    #[test]
    fn listen_addresses_need_a_port_and_a_specific_ip() {
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:53").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert!(
            parse_listen("169.254.20.10")
                .unwrap_err()
                .contains("no port")
        );
        assert!(parse_listen("::1").unwrap_err().contains("no port"));
        assert!(
            parse_listen("0.0.0.0:53")
                .unwrap_err()
                .contains("bind a specific address")
        );
        assert!(
            parse_listen("[::]:53")
                .unwrap_err()
                .contains("bind a specific address")
        );
        assert!(
            parse_listen("localhost:53")
                .unwrap_err()
                .contains("not an IP:port")
        );
    }
}
