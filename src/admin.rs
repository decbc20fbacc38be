//! The admin HTTP endpoint: `GET /metrics`, `/health` and `/ready`.
//!
//! This module owns the admin listener and what each path answers. `/health` is liveness:
//! 200 while the process serves HTTP at all. `/ready` is what a DaemonSet's readiness probe
//! (and a rolling update's `maxUnavailable: 0`) waits for: 200 only once the DNS listeners
//! serve and every zone has an upstream that answered (the start-up probes ask without
//! waiting for client traffic), and 503 again from the moment shutdown begins, before the drain, so the node's traffic moves before this process stops reading.
//! The listener stays up through the drain and closes with the process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Prometheus text exposition format 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How long a connection may take to send its request headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

    pub fn is_ready(&self) -> bool {
        self.reason().is_none()
    }

    /// Why not ready, for the 503 body (an operator reads it with curl); `None` when ready.
    pub fn reason(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("shutting down".to_owned());
        }
        if !self.serving.load(Ordering::Relaxed) {
            return Some("listeners not serving yet".to_owned());
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

/// Binds the admin listener (at start-up, so a bad address fails start-up). Shared with
/// `SO_REUSEPORT` like the DNS listeners: during a rolling update the next process binds it
/// while this one drains.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::listener::bind_tcp(addr)
}

/// Serves HTTP/1 on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                continue;
            }
        };
        let (metrics, ready, stop) = (metrics.clone(), ready.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = answer(&req, &metrics, &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "admin connection failed");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, ready: &Readiness) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
            r
        }
        "/health" => text(StatusCode::OK, "ok\n"),
        "/ready" => match ready.reason() {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /health, /ready\n",
        ),
    }
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
