//! The admin endpoint: `GET /metrics`, `/health`, `/ready` and `/top` over HTTP/1, on a TCP
//! address (for Prometheus) and on a unix socket (for the kubelet's probes).
//!
//! This module owns the admin listeners, their limits, and what each path answers. `/health`
//! is liveness: 200 while the process serves HTTP at all. `/ready` is what a DaemonSet's
//! readiness probe (and a rolling update's `maxUnavailable: 0`) waits for: 200 only once the
//! DNS listeners serve and every zone has an upstream that answered (the start-up probes ask
//! without waiting for client traffic), and 503 again from the moment shutdown begins, before the drain, so the node's traffic moves before this process
//! stops reading. The listeners stay up through the drain and close with the process.
//! `/top?seconds=N&n=K` is what `nodedns top` reads: the heaviest clients and names of the
//! last N seconds (default 60, at most 300), K of each (default 10, at most 64), as JSON.
//!
//! Neither listener is shared with another process (no `SO_REUSEPORT`): during a rollout two
//! nodedns processes run on one node, and a probe answered by the other one would be a lie.
//! The unix socket lives in the pod's own volume, so `nodedns probe` reaches this pod's
//! process and no other; the TCP port belongs to whichever process holds it, and one that
//! finds it taken serves DNS and retries ([`bind`]). Each listener accepts at most
//! [`serve::MAX_CONNECTIONS`] connections at once and bounds how long each may live
//! ([`serve`]). The client side is [`client`].

mod bind;
pub mod client;
mod serve;
pub mod text;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::config;

pub use bind::Endpoint;

/// Prometheus text exposition format 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` body: the Prometheus text exposition, read at each scrape.
pub type Scrape = Box<dyn Fn() -> String + Send + Sync>;

/// The `/top` body (JSON) for a window in seconds and a number of entries per board.
pub type TopReport = Box<dyn Fn(u64, usize) -> String + Send + Sync>;

/// `/top`'s defaults and bounds: the window (seconds) and entries per board.
const TOP_SECONDS: (u64, u64) = (60, 300);
const TOP_ENTRIES: (usize, usize) = (10, 64);

/// Why the zones cannot all be served yet (`None`: they can).
pub type ZoneCheck = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// What `/ready` depends on, shared with the server's lifecycle. Readiness is a latch: once
/// the listeners serve and every zone has an upstream that answered, the process stays ready
/// until shutdown begins (an upstream outage later is health's business, not a reason to
/// take the node's only nameserver out of a rollout's count).
pub struct Readiness {
    serving: AtomicBool,
    draining: AtomicBool,
    latched: AtomicBool,
    zones: ZoneCheck,
}

impl Readiness {
    pub fn new(zones: ZoneCheck) -> Readiness {
        Readiness {
            serving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            latched: AtomicBool::new(false),
            zones,
        }
    }

    /// The DNS listeners are serving.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
    }

    /// Shutdown has begun: not ready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Why not ready, for the 503 body (an operator reads it with curl or `nodedns probe`);
    /// `None` when ready.
    pub fn reason(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("shutting down".to_owned());
        }
        if !self.serving.load(Ordering::Relaxed) {
            // A process joining an address another one serves waits for its upstreams first
            // (see `crate::handover`): say which zone it waits for.
            return Some(match (self.zones)() {
                Some(why) => format!("listeners not serving yet, waiting for {why}"),
                None => "listeners not serving yet".to_owned(),
            });
        }
        if self.latched.load(Ordering::Relaxed) {
            return None;
        }
        let why = (self.zones)();
        if why.is_none() {
            self.latched.store(true, Ordering::Relaxed);
        }
        why
    }
}

/// What every admin listener answers from.
struct Routes {
    metrics: Scrape,
    ready: Arc<Readiness>,
    top: TopReport,
}

/// Binds the admin listeners `cfg` asks for (at start-up, so a bad address or socket path
/// fails start-up); `None` when both are off.
pub fn bind(cfg: &config::Admin) -> anyhow::Result<Option<Endpoint>> {
    Endpoint::bind(cfg)
}

/// Serves `endpoint` until `stop` is cancelled, then removes its socket file.
pub async fn serve(
    endpoint: Endpoint,
    metrics: Scrape,
    ready: Arc<Readiness>,
    top: TopReport,
    stop: CancellationToken,
) {
    endpoint
        .serve(
            Arc::new(Routes {
                metrics,
                ready,
                top,
            }),
            stop,
        )
        .await;
}

impl Routes {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match req.uri().path() {
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from((self.metrics)())));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
                r
            }
            "/health" => text(StatusCode::OK, "ok\n"),
            "/ready" => match self.ready.reason() {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "/top" => match top_params(req.uri().query().unwrap_or_default()) {
                Ok((seconds, n)) => {
                    let mut r = Response::new(Full::new(Bytes::from((self.top)(seconds, n))));
                    r.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    r
                }
                Err(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /health, /ready, /top\n",
            ),
        }
    }
}

/// `seconds` and `n` of a `/top` query string, defaulted and bounded.
fn top_params(query: &str) -> Result<(u64, usize), String> {
    let (mut seconds, mut n) = (TOP_SECONDS.0, TOP_ENTRIES.0);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|v| (1..=max).contains(v))
                .ok_or_else(|| format!("{key}={value}: a whole number from 1 to {max}"))
        };
        match key {
            "seconds" => seconds = number(TOP_SECONDS.1)?,
            "n" => {
                let max = u64::try_from(TOP_ENTRIES.1).unwrap_or(u64::MAX);
                n = usize::try_from(number(max)?).unwrap_or(TOP_ENTRIES.1);
            }
            _ => return Err(format!("{key}: unknown parameter (seconds, n)")),
        }
    }
    Ok((seconds, n))
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn top_parameters_are_defaulted_bounded_and_named_when_wrong() {
        assert_eq!(top_params(""), Ok((60, 10)));
        assert_eq!(top_params("seconds=300&n=64"), Ok((300, 64)));
        assert_eq!(top_params("n=3"), Ok((60, 3)));
        for (bad, named) in [
            ("seconds=0", "seconds=0"),
            ("seconds=301", "seconds=301"),
            ("n=65", "n=65"),
            ("n=-1", "n=-1"),
            ("seconds", "seconds="),
            ("limit=5", "limit"),
        ] {
            let err = top_params(bad).unwrap_err();
            assert!(err.contains(named), "{bad}: {err}");
        }
    }
}
