//! `[admin]` and `[log]`: the admin endpoint's address and unix socket, and the log's format,
//! level and sampled query log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::check::Check;
use super::raw::{RawAdmin, RawLog};
use super::units::parse_with_port;
use super::{Admin, Log, LogFormat};

const DEFAULT_ADMIN: &str = "127.0.0.1:9253";

pub(super) fn admin(
    c: &mut Check<'_>,
    raw: &RawAdmin,
    listen: &[SocketAddr],
    base_dir: &Path,
) -> Option<Admin> {
    let socket = admin_socket(c, raw, base_dir);
    let address = admin_address(c, raw, listen);
    Some(Admin {
        address: address?,
        socket: socket?,
    })
}

/// `admin.address`: the default when absent, `None` when `""`.
fn admin_address(
    c: &mut Check<'_>,
    raw: &RawAdmin,
    listen: &[SocketAddr],
) -> Option<Option<SocketAddr>> {
    const KEY: &str = "admin.address";
    let Some(text) = &raw.address else {
        return Some(parse_with_port(DEFAULT_ADMIN).ok());
    };
    if text.get_ref().is_empty() {
        return Some(None);
    }
    let address = match parse_with_port(text.get_ref()) {
        Ok(addr) => addr,
        Err(reason) => {
            c.error(Some(text.span()), KEY, reason);
            return None;
        }
    };
    if address.port() != 0 && listen.contains(&address) {
        let reason = format!("{address} is also a listen address: DNS over TCP binds it");
        c.error(Some(text.span()), KEY, reason);
        return None;
    }
    Some(Some(address))
}

/// `admin.socket`: a unix socket path, taken from the file's directory when relative; it
/// must fit `sun_path` (108 bytes with the terminating NUL).
fn admin_socket(c: &mut Check<'_>, raw: &RawAdmin, base_dir: &Path) -> Option<Option<PathBuf>> {
    const KEY: &str = "admin.socket";
    const SUN_PATH_MAX: usize = 107;
    let Some(text) = &raw.socket else {
        return Some(None);
    };
    if text.get_ref().is_empty() {
        c.error(
            Some(text.span()),
            KEY,
            "empty path: leave the key out for none",
        );
        return None;
    }
    let path = base_dir.join(text.get_ref());
    let len = path.as_os_str().len();
    if len > SUN_PATH_MAX {
        let reason = format!(
            "`{}` is {len} bytes: a unix socket path has at most {SUN_PATH_MAX}",
            path.display()
        );
        c.error(Some(text.span()), KEY, reason);
        return None;
    }
    Some(Some(path))
}

pub(super) fn log(c: &mut Check<'_>, raw: &RawLog) -> Option<Log> {
    let format = c.plain("log.format", &raw.format, "text".to_owned());
    let format = match format.value.as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            let reason = format!("unknown format `{other}`: expected \"text\" or \"json\"");
            c.error(format.span.clone(), &format.key, reason);
            None
        }
    };
    let level = c.plain("log.level", &raw.level, "info".to_owned());
    let level_ok = if level.value.trim().is_empty() {
        Err("empty: use e.g. \"info\"".to_owned())
    } else if !is_plain_log_filter(&level.value) {
        Err(format!(
            "`{}` is not a log filter: use levels and `target=level` directives (ASCII \
             letters, digits and `_:=,.-`, at most {MAX_LOG_FILTER} bytes); span and field \
             filters are not accepted",
            level.value
        ))
    } else {
        tracing_subscriber::EnvFilter::builder()
            .parse(&level.value)
            .map(|_| ())
            .map_err(|e| format!("`{}` is not a log filter: {e}", level.value))
    };
    if let Err(reason) = &level_ok {
        c.error(level.span.clone(), &level.key, reason.as_str());
    }
    let queries = c.plain("log.queries", &raw.queries, 0.0);
    let queries_ok = (0.0..=1.0).contains(&queries.value);
    if !queries_ok {
        let reason = format!("{} is not a fraction from 0 to 1", queries.value);
        c.error(queries.span.clone(), &queries.key, reason);
    }
    Some(Log {
        format: format?,
        level: level_ok.ok().map(|()| level.value)?,
        queries: queries_ok.then_some(queries.value)?,
    })
}

/// The longest `log.level` accepted.
const MAX_LOG_FILTER: usize = 256;

/// Whether `filter` is levels and `target=level` directives only, in ASCII: what nodedns's
/// logs need, and all that is handed to tracing-subscriber's parser. Checked before parsing,
/// as that parser panics inside a multi-byte character, and compiles span and field filters
/// (`[span{field=value}]`) into patterns that a crafted line makes take minutes to build.
pub fn is_plain_log_filter(filter: &str) -> bool {
    filter.len() <= MAX_LOG_FILTER
        && filter
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:=,.-".contains(&b))
}
