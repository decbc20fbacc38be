//! The admin endpoint: `GET /metrics`, `/health` and `/ready` over HTTP/1, on a TCP address
//! (for Prometheus) and on a unix socket (for the kubelet's probes).
//!
//! This module owns the admin listeners, their limits, and what each path answers. `/health`
//! is liveness: 200 while the process serves HTTP at all. `/ready` is what a DaemonSet's
//! readiness probe (and a rolling update's `maxUnavailable: 0`) waits for: 200 only once the
//! DNS listeners serve and some upstream has answered since start, and 503 again from the
//! moment shutdown begins, before the drain, so the node's traffic moves before this process
//! stops reading. The listeners stay up through the drain and close with the process.
//!
//! Neither listener is shared with another process (no `SO_REUSEPORT`): during a rollout two
//! nodedns processes run on one node, and a probe answered by the other one would be a lie.
//! The unix socket lives in the pod's own volume, so `nodedns probe` reaches this pod's
//! process and no other; the TCP port belongs to whichever process holds it, and one that
//! finds it taken serves DNS and retries ([`bind`]). Each listener accepts at most
//! [`serve::MAX_CONNECTIONS`] connections at once and bounds how long each may live
//! ([`serve`]). The client side of the unix socket is [`probe`].

mod bind;
pub mod probe;
mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::metrics::Metrics;
use crate::stats::Stats;

pub use bind::Endpoint;

/// Prometheus text exposition format 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/ready` depends on, shared with the server's lifecycle.
pub struct Readiness {
    serving: AtomicBool,
    draining: AtomicBool,
    stats: Arc<Stats>,
}

impl Readiness {
    pub fn new(stats: Arc<Stats>) -> Readiness {
        Readiness {
            serving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            stats,
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

    pub fn is_ready(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.stats.any_upstream_answered()
    }

    /// Why not ready, for the 503 body (an operator reads it with curl or `nodedns probe`).
    fn reason(&self) -> &'static str {
        if self.draining.load(Ordering::Relaxed) {
            "shutting down\n"
        } else if !self.serving.load(Ordering::Relaxed) {
            "listeners not serving yet\n"
        } else if !self.stats.any_upstream_answered() {
            "no upstream has answered yet\n"
        } else {
            "ready\n"
        }
    }
}

/// What every admin listener answers from.
struct Routes {
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
}

/// Binds the admin listeners `cfg` asks for (at start-up, so a bad address or socket path
/// fails start-up); `None` when both are off.
pub fn bind(cfg: &config::Admin) -> anyhow::Result<Option<Endpoint>> {
    Endpoint::bind(cfg)
}

/// Serves `endpoint` until `stop` is cancelled, then removes its socket file.
pub async fn serve(
    endpoint: Endpoint,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    stop: CancellationToken,
) {
    endpoint
        .serve(Arc::new(Routes { metrics, ready }), stop)
        .await;
}

impl Routes {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match req.uri().path() {
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
                r
            }
            "/health" => text(StatusCode::OK, "ok\n"),
            "/ready" if self.ready.is_ready() => text(StatusCode::OK, "ready\n"),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, self.ready.reason()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /health, /ready\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
