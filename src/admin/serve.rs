//! The bounded accept loop shared by the admin TCP and unix listeners.
//!
//! A connection costs tens of kilobytes (task, buffers, parser state) until it ends, so an
//! unbounded admin listener lets idle clients push the process into its memory limit. Here
//! each listener holds at most [`MAX_CONNECTIONS`] at once and stops accepting while full
//! (the kernel's backlog holds the rest, and drops what does not fit), a connection must send
//! its request headers within [`HEADER_TIMEOUT`] (also between keep-alive requests), and
//! none lives longer than [`CONNECTION_LIFETIME`]. Accept errors that mean "out of
//! resources" (file descriptors, buffers, memory) pause accepting instead of spinning.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Routes;

/// Open connections per admin listener at most. A scrape and two probes need three.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request's headers, the first or the next one.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long any connection may stay open: a client that sends slowly or never reads the
/// answer frees its slot after this.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// The first pause after an accept error for lack of resources, doubled up to the max.
const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(100);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Accept errors are logged at most this often.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A listener the admin endpoint serves HTTP on.
pub(super) trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn next_connection(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn next_connection(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn next_connection(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Accepts and serves connections on `listener` until `stop`; returns once every
/// connection has ended.
pub(super) async fn accept_loop<L: Accept>(
    listener: L,
    routes: Arc<Routes>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tasks = TaskTracker::new();
    let mut pause = AcceptPause::default();
    loop {
        // A slot first, then accept: at the cap, new connections wait in the kernel.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = stop.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.next_connection() => a,
            _ = stop.cancelled() => break,
        };
        let io = match accepted {
            Ok(io) => {
                pause.reset();
                io
            }
            Err(e) => {
                let Some(wait) = pause.after(&e) else {
                    continue;
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        };
        let (routes, stop) = (routes.clone(), stop.clone());
        tasks.spawn(async move {
            connection(io, routes, stop).await;
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Serves HTTP/1 on one connection until the client closes it, a time bound runs out, or
/// `stop`.
async fn connection<Io>(io: Io, routes: Arc<Routes>, stop: CancellationToken)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let response = routes.answer(&req);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        r = tokio::time::timeout(CONNECTION_LIFETIME, conn) => match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "admin connection failed"),
            Err(_) => tracing::debug!("admin connection closed: open for {CONNECTION_LIFETIME:?}"),
        },
        _ = stop.cancelled() => {}
    }
}

/// How long to pause accepting after an error, and when to say so.
#[derive(Default)]
struct AcceptPause {
    current: Option<Duration>,
    last_log: Option<Instant>,
}

impl AcceptPause {
    fn reset(&mut self) {
        self.current = None;
    }

    /// The pause after `e`; `None` for errors of one connection (e.g. reset before it was
    /// accepted), after which accepting goes on at once.
    fn after(&mut self, e: &io::Error) -> Option<Duration> {
        if !out_of_resources(e) {
            tracing::debug!(error = %e, "admin accept failed");
            return None;
        }
        let wait = self
            .current
            .map_or(ACCEPT_PAUSE_FIRST, |p| (p * 2).min(ACCEPT_PAUSE_MAX));
        self.current = Some(wait);
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_INTERVAL)
        {
            self.last_log = Some(now);
            tracing::warn!(error = %e, "admin accept failed for lack of resources: pausing accepts");
        }
        Some(wait)
    }
}

/// Errors that repeat until something else frees a resource: retrying at once would spin.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_pauses_grow_to_a_cap_and_reset_after_a_success() {
        let mut pause = AcceptPause::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<Duration> = (0..6).filter_map(|_| pause.after(&emfile)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            waits,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        pause.reset();
        assert_eq!(pause.after(&emfile), Some(ms(100)));
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(pause.after(&aborted), None);
    }
}
