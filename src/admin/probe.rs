//! The client side of the admin unix socket: one `GET` with a time bound, as
//! `nodedns probe` sends it for the kubelet.
//!
//! A probe must answer for this pod's process only, and never hang: the kubelet runs it
//! every few seconds, and a probe that outlives its timeout counts as failed anyway. So it
//! speaks to the socket in the pod's own volume, reads at most [`MAX_ANSWER`] bytes, and gives
//! up after the caller's bound.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Where `nodedns probe` looks for the socket unless told otherwise; the DaemonSet mounts
/// an `emptyDir` at `/run/nodedns`.
pub const DEFAULT_SOCKET: &str = "/run/nodedns/admin.sock";
/// The longest answer read: `/health` and `/ready` say a few words.
const MAX_ANSWER: u64 = 64 * 1024;

/// An HTTP answer: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no answer from {path} within {limit:?}")]
    Timeout { path: String, limit: Duration },
    #[error("{path}: not an HTTP answer")]
    Malformed { path: String },
}

/// `GET route` on the unix socket at `socket`, all of it within `limit`.
pub async fn get(socket: &Path, route: &str, limit: Duration) -> Result<Answer, ProbeError> {
    let path = socket.display().to_string();
    match tokio::time::timeout(limit, exchange(socket, route, &path)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout { path, limit }),
    }
}

async fn exchange(socket: &Path, route: &str, path: &str) -> Result<Answer, ProbeError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ProbeError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let io = |source| ProbeError::Io {
        path: path.to_owned(),
        source,
    };
    let request = format!("GET {route} HTTP/1.1\r\nHost: nodedns\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .await
        .map_err(io)?;
    parse(&raw).ok_or_else(|| ProbeError::Malformed {
        path: path.to_owned(),
    })
}

/// Status and body of an HTTP/1 answer that ends with the connection (no chunking: the
/// admin endpoint sends whole bodies with a length).
fn parse(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut words = status_line.split_whitespace();
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = words.next()?.parse().ok()?;
    Some(Answer {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_and_garbage_is_not() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n";
        assert_eq!(
            parse(ok),
            Some(Answer {
                status: 200,
                body: "ready\n".to_owned()
            })
        );
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 x\r\n\r\n",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
