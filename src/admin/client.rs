//! The client side of the admin endpoint: one `GET` through hyper's HTTP/1 client, over the
//! unix socket (`nodedns probe`, for the kubelet) or the TCP address (`doctor`, and the
//! tests), bounded in time and in size.
//!
//! A probe must answer for this pod's process only, and never hang: the kubelet runs it
//! every few seconds, and a probe that outlives its timeout counts as failed anyway. So it
//! speaks to the socket in the pod's own volume, reads at most [`MAX_ANSWER`] bytes, and gives
//! up after the caller's bound. `doctor` reads `/metrics` the same way over TCP.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::{Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Where `nodedns probe` looks for the socket unless told otherwise; the DaemonSet mounts
/// an `emptyDir` at `/run/nodedns`.
pub const DEFAULT_SOCKET: &str = "/run/nodedns/admin.sock";
/// The longest body read: `/health` and `/ready` say a few words, and `/metrics` of one
/// nodedns is a few KiB.
pub const MAX_ANSWER: usize = 4 << 20;

/// An HTTP answer: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Where the admin endpoint listens.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    Unix(&'a Path),
    Tcp(SocketAddr),
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: {source}")]
    Http {
        endpoint: String,
        source: hyper::Error,
    },
    #[error("{endpoint}: the answer is over {MAX_ANSWER} bytes or breaks off")]
    Body { endpoint: String },
    #[error("no answer from {endpoint} within {limit:?}")]
    Timeout { endpoint: String, limit: Duration },
}

/// `GET route` on the unix socket at `socket`, all of it within `limit`.
pub async fn get(socket: &Path, route: &str, limit: Duration) -> Result<Answer, GetError> {
    get_from(Endpoint::Unix(socket), route, limit).await
}

/// `GET route` on `endpoint`, all of it within `limit`.
pub async fn get_from(
    endpoint: Endpoint<'_>,
    route: &str,
    limit: Duration,
) -> Result<Answer, GetError> {
    let exchange = async {
        match endpoint {
            Endpoint::Unix(path) => match UnixStream::connect(path).await {
                Ok(stream) => exchange(stream, route, endpoint).await,
                Err(source) => Err(connect_error(endpoint, source)),
            },
            Endpoint::Tcp(addr) => match TcpStream::connect(addr).await {
                Ok(stream) => exchange(stream, route, endpoint).await,
                Err(source) => Err(connect_error(endpoint, source)),
            },
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(GetError::Timeout {
                endpoint: endpoint.to_string(),
                limit,
            })
        })
}

fn connect_error(endpoint: Endpoint<'_>, source: std::io::Error) -> GetError {
    GetError::Connect {
        endpoint: endpoint.to_string(),
        source,
    }
}

/// One request on a fresh connection. The connection's driver runs in this future, not in a
/// spawned task: nothing outlives the caller's time bound.
async fn exchange<S>(stream: S, route: &str, endpoint: Endpoint<'_>) -> Result<Answer, GetError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| GetError::Http {
        endpoint: endpoint.to_string(),
        source,
    };
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    let request = Request::get(route)
        .header(HOST, "nodedns")
        .body(Empty::<Bytes>::new());
    let Ok(request) = request else {
        // Only a route that is no URI gets here: the callers pass fixed paths.
        return Err(GetError::Body {
            endpoint: endpoint.to_string(),
        });
    };
    let answer = async {
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| GetError::Body {
                endpoint: endpoint.to_string(),
            })?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    // The driver runs until the answer is read; should the connection fail or end first,
    // the answer's own future says so (hyper hands it the error).
    let driver = async {
        let _ = conn.await;
        std::future::pending().await
    };
    tokio::select! {
        answer = answer => answer,
        never = driver => never,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that reads a request and answers `reply` as is, then closes.
    async fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
        });
        addr
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn answers_with_a_length_or_chunked_are_read_whole() {
        let addr = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n").await;
        let answer = get_from(Endpoint::Tcp(addr), "/ready", WAIT).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "ready\n"));

        let addr = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n",
        )
        .await;
        let answer = get_from(Endpoint::Tcp(addr), "/ready", WAIT).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (503, "hello world"));
    }

    #[tokio::test]
    async fn garbage_and_closed_ports_are_errors() {
        for garbage in [&b""[..], b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 x\r\n\r\n"] {
            let addr = serve_once(garbage).await;
            let got = get_from(Endpoint::Tcp(addr), "/health", WAIT).await;
            assert!(
                got.is_err(),
                "{:?}: {got:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let got = get_from(Endpoint::Tcp(addr), "/health", WAIT).await;
        assert!(matches!(got, Err(GetError::Connect { .. })), "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move { listener.accept().await });
        let got = get_from(Endpoint::Tcp(addr), "/health", Duration::from_secs(2)).await;
        assert!(matches!(got, Err(GetError::Timeout { .. })), "{got:?}");
        held.abort();
    }
}
