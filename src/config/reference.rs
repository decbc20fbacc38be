//! Upstreams named by reference to an environment variable: `"${KUBE_DNS_UPSTREAM_SERVICE_HOST}:53"`.
//!
//! The kubelet gives every container `<SERVICE>_SERVICE_HOST` and `<SERVICE>_SERVICE_PORT`
//! for each Service of its namespace that existed when the pod started, which is how a
//! DaemonSet finds the ClusterIP of a Service (`kube-dns-upstream`) without anyone typing
//! it. This module owns expanding such a reference into an address, with a reason when the
//! variable is missing or does not hold an IP address; where the environment comes from is
//! the caller's choice, so tests pass their own.
//!
//! The grammar is small on purpose: the host is `${NAME}` (or `[${NAME}]`), the port after
//! it is a number or `${NAME}`, and without a port it is 53. The variable must hold an IP
//! address, never a name: a name would need a resolver to start the resolver. An IPv6 value
//! is taken as a host whatever the brackets, so `${HOST}:53` with `fd00::10` in it is
//! `[fd00::10]:53`, not the address `fd00::10:53`.

use std::net::{IpAddr, SocketAddr};

use super::units::{DNS_PORT, parse_upstream};

/// Looks up an environment variable; `None` when it is not set.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as [`Env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses an upstream as [`parse_upstream`] does, expanding `${NAME}` references from `env`.
pub fn expand_upstream(text: &str, env: Env<'_>) -> Result<SocketAddr, String> {
    if !text.contains("${") {
        return parse_upstream(text);
    }
    let (host_ref, rest) = split_host(text)?;
    let host = lookup(host_ref, env)?;
    let ip: IpAddr = host.trim().parse().map_err(|_| {
        format!(
            "`${{{host_ref}}}` is `{host}`, not an IP address (upstreams are addresses, not names)"
        )
    })?;
    let port = match rest {
        "" => DNS_PORT,
        _ => {
            let Some(port) = rest.strip_prefix(':') else {
                return Err(grammar(text));
            };
            let port_text = match reference(port) {
                Some(name) => lookup(name, env)?,
                None => port.to_owned(),
            };
            port_text.trim().parse::<u16>().map_err(|_| {
                format!("`{text}`: port `{port_text}` is not a number from 1 to 65535")
            })?
        }
    };
    // The same checks as a literal address (no port 0, no broadcast or multicast), with the
    // expanded text quoted so the reason shows what the variable held.
    let expanded = SocketAddr::new(ip, port).to_string();
    parse_upstream(&expanded).map_err(|reason| format!("`{text}` expands to {reason}"))
}

/// An IP address as written, or `${NAME}` (or `[${NAME}]`) naming a variable that holds one:
/// `intercept = ["${KUBE_DNS_SERVICE_HOST}"]`.
pub fn expand_ip(text: &str, env: Env<'_>) -> Result<IpAddr, String> {
    if !text.contains("${") {
        return text
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address"));
    }
    let (name, rest) = split_host(text)?;
    if !rest.is_empty() {
        return Err(format!("`{text}`: give the address alone, without a port"));
    }
    let value = lookup(name, env)?;
    value
        .trim()
        .parse()
        .map_err(|_| format!("`${{{name}}}` is `{value}`, not an IP address"))
}

/// The variable named by the host part, and what follows it.
fn split_host(text: &str) -> Result<(&str, &str), String> {
    let (inner, rest) = if let Some(bracketed) = text.strip_prefix("[${") {
        let end = bracketed.find("}]").ok_or_else(|| grammar(text))?;
        (&bracketed[..end], &bracketed[end + 2..])
    } else if let Some(open) = text.strip_prefix("${") {
        let end = open.find('}').ok_or_else(|| grammar(text))?;
        (&open[..end], &open[end + 1..])
    } else {
        return Err(grammar(text));
    };
    if !valid_name(inner) {
        return Err(format!(
            "`{text}`: `{inner}` is not an environment variable name (letters, digits and `_`)"
        ));
    }
    Ok((inner, rest))
}

/// `NAME` of a whole `${NAME}`, if `text` is one.
fn reference(text: &str) -> Option<&str> {
    text.strip_prefix("${")?
        .strip_suffix('}')
        .filter(|n| valid_name(n))
}

fn lookup(name: &str, env: Env<'_>) -> Result<String, String> {
    match env(name) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        Some(_) => Err(format!("environment variable `{name}` is empty")),
        None => Err(format!(
            "environment variable `{name}` is not set (the kubelet sets `<SERVICE>_SERVICE_HOST` \
             only for Services of the pod's namespace that existed when the pod started)"
        )),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn grammar(text: &str) -> String {
    format!("`{text}`: write a reference as \"${{NAME}}\", \"${{NAME}}:53\" or \"[${{NAME}}]:53\"")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KUBE_DNS_UPSTREAM_SERVICE_HOST" => Some("10.96.0.53".to_owned()),
            "KUBE_DNS_UPSTREAM_SERVICE_PORT" => Some("53".to_owned()),
            "V6_HOST" => Some("fd00::10".to_owned()),
            "NAME_HOST" => Some("kube-dns.kube-system".to_owned()),
            "EMPTY" => Some(" ".to_owned()),
            "ZERO" => Some("0".to_owned()),
            _ => None,
        }
    }

    fn expand(text: &str) -> Result<String, String> {
        expand_upstream(text, &env).map(|a| a.to_string())
    }

    #[test]
    fn a_service_host_variable_becomes_the_upstream_address() {
        assert_eq!(
            expand("${KUBE_DNS_UPSTREAM_SERVICE_HOST}:53").unwrap(),
            "10.96.0.53:53"
        );
        assert_eq!(
            expand("${KUBE_DNS_UPSTREAM_SERVICE_HOST}").unwrap(),
            "10.96.0.53:53"
        );
        assert_eq!(
            expand("${KUBE_DNS_UPSTREAM_SERVICE_HOST}:${KUBE_DNS_UPSTREAM_SERVICE_PORT}").unwrap(),
            "10.96.0.53:53"
        );
    }

    #[test]
    fn an_ipv6_value_is_a_host_with_or_without_brackets() {
        assert_eq!(expand("${V6_HOST}:53").unwrap(), "[fd00::10]:53");
        assert_eq!(expand("[${V6_HOST}]:5353").unwrap(), "[fd00::10]:5353");
    }

    #[test]
    fn an_address_alone_may_be_a_reference_too() {
        let ip = |t| expand_ip(t, &env).map(|a| a.to_string());
        assert_eq!(
            ip("${KUBE_DNS_UPSTREAM_SERVICE_HOST}").unwrap(),
            "10.96.0.53"
        );
        assert_eq!(ip("[${V6_HOST}]").unwrap(), "fd00::10");
        assert_eq!(ip("198.19.0.10").unwrap(), "198.19.0.10");
        assert!(ip("${V6_HOST}:53").unwrap_err().contains("without a port"));
        assert!(
            ip("${NAME_HOST}")
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(
            ip("${MISSING}")
                .unwrap_err()
                .contains("`MISSING` is not set")
        );
    }

    #[test]
    fn literal_addresses_are_unchanged() {
        assert_eq!(expand("192.0.2.1").unwrap(), "192.0.2.1:53");
    }

    #[test]
    fn a_missing_variable_is_named_with_where_it_comes_from() {
        let reason = expand("${KUBE_DNS_UPSTREAM_SERVICE_HOTS}:53").unwrap_err();
        assert!(
            reason.contains("`KUBE_DNS_UPSTREAM_SERVICE_HOTS` is not set"),
            "{reason}"
        );
        assert!(reason.contains("_SERVICE_HOST"), "{reason}");
    }

    #[test]
    fn malformed_references_and_values_are_refused() {
        for (text, needle) in [
            ("${NAME_HOST}:53", "not an IP address"),
            ("${EMPTY}", "is empty"),
            ("${KUBE_DNS_UPSTREAM_SERVICE_HOST", "write a reference as"),
            ("${KUBE-DNS}:53", "not an environment variable name"),
            ("${}:53", "not an environment variable name"),
            (
                "${KUBE_DNS_UPSTREAM_SERVICE_HOST}53",
                "write a reference as",
            ),
            ("${KUBE_DNS_UPSTREAM_SERVICE_HOST}:dns", "not a number"),
            ("${KUBE_DNS_UPSTREAM_SERVICE_HOST}:${ZERO}", "port 0"),
            ("x${KUBE_DNS_UPSTREAM_SERVICE_HOST}", "write a reference as"),
        ] {
            let reason = expand(text).unwrap_err();
            assert!(reason.contains(needle), "{text}: {reason}");
        }
    }
}
