//! The hand-over socket: a new process asks the one it replaces for a fresh snapshot.
//!
//! In a surge rollout the new pod starts while the old one still serves, long before the old
//! one writes its snapshot at SIGTERM; the file it would find is as old as the last periodic
//! write. So the serving process listens on a unix socket beside the snapshot file
//! ([`socket_path`]), and a starting one connects, sends [`REQUEST`], and reads a snapshot in
//! the file's format until the other side closes. The bytes are checked exactly as a file's
//! are (`load_bytes`): the socket adds no trust, only freshness.
//!
//! Who may answer: the socket lives in the snapshot's directory, which must be this user's
//! and writable by nobody else, and the socket itself must be owned by this user, so only a
//! process running as this user can have bound it. It is created mode 0600, so only this
//! user (root, on a node) can ask. This module owns the protocol and its limits, not what
//! is done with the bytes.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::{Encoded, MAX_FILE, SnapshotError, file};

/// What a client sends; anything else is closed without an answer.
pub const REQUEST: &[u8] = b"nodedns snapshot 1\n";
/// How long a serving process may take to start answering (the issue of a new process
/// that would otherwise wait on a stuck predecessor before it can be ready).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Longest a whole transfer may take: 256 MiB over a unix socket takes well under a second.
const TRANSFER_LIMIT: Duration = Duration::from_secs(30);

/// The socket beside snapshot `path`: `PATH.sock`.
pub fn socket_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}

/// Why no snapshot came from the serving process.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No socket: no process serves with a snapshot configured (a first start).
    #[error("no hand-over socket")]
    Absent,
    #[error("{0}")]
    NotOurs(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Silent(Duration),
    #[error("the answer took longer than {0:?}")]
    Slow(Duration),
    #[error("the answer is larger than {MAX_FILE} bytes")]
    TooLarge,
}

/// Asks the process serving on `socket` for its snapshot. Blocking: called once at start,
/// before anything is served. The first byte must come within `answer_within`.
pub fn fetch(socket: &Path, answer_within: Duration) -> Result<Vec<u8>, FetchError> {
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FetchError::Absent),
        Err(e) => return Err(e.into()),
    };
    if !meta.file_type().is_socket() {
        return Err(FetchError::NotOurs(format!(
            "{} is not a socket",
            socket.display()
        )));
    }
    check(file::check_owner(&meta, "socket"))?;
    check(file::check_owner(
        &std::fs::metadata(file::directory(socket))?,
        "directory",
    ))?;
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(answer_within))?;
    stream.set_read_timeout(Some(answer_within))?;
    stream.write_all(REQUEST)?;
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 1 << 16];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) && bytes.is_empty() => {
                return Err(FetchError::Silent(answer_within));
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE {
            return Err(FetchError::TooLarge);
        }
        if started.elapsed() > TRANSFER_LIMIT {
            return Err(FetchError::Slow(TRANSFER_LIMIT));
        }
    }
}

fn check(r: Result<(), SnapshotError>) -> Result<(), FetchError> {
    r.map_err(|e| FetchError::NotOurs(e.to_string()))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The listening side, bound at [`socket_path`]; removes its socket file when dropped,
/// unless another process has bound the path since (the one that replaced this one).
pub struct Listener {
    inner: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket this process bound.
    id: (u64, u64),
}

impl Listener {
    /// Binds `path` (mode 0600), replacing a socket left there by the process this one
    /// replaces; anything that is not a socket of this user is left alone and is an error.
    /// Must run inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<Listener, FetchError> {
        check(file::check_owner(
            &std::fs::metadata(file::directory(path))?,
            "directory",
        ))?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                check(file::check_owner(&meta, "socket"))?;
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(FetchError::NotOurs(format!(
                    "{} exists and is not a socket",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let inner = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Listener {
            inner,
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Answers every well-formed request with `encode()`'s bytes until `stop`. One client at
    /// a time: a hand-over happens once per rollout, and a client that stalls is cut off by
    /// the time limits, not waited on.
    pub async fn serve<F>(self, encode: F, stop: CancellationToken)
    where
        F: Fn() -> Encoded + Clone + Send + 'static,
    {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = self.inner.accept() => accepted,
            };
            let mut stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("cache hand-over socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut request = [0; REQUEST.len()];
            let read = tokio::time::timeout(ANSWER_WITHIN, stream.read_exact(&mut request)).await;
            if !matches!(read, Ok(Ok(_))) || request != REQUEST {
                tracing::warn!("cache hand-over socket: a client sent no valid request");
                continue;
            }
            let started = Instant::now();
            let encode = encode.clone();
            let Ok(encoded) = tokio::task::spawn_blocking(encode).await else {
                continue;
            };
            let sent = tokio::time::timeout(TRANSFER_LIMIT, async {
                stream.write_all(&encoded.bytes).await?;
                stream.shutdown().await
            })
            .await;
            match sent {
                Ok(Ok(())) => tracing::info!(
                    entries = encoded.entries,
                    bytes = encoded.bytes.len(),
                    took = ?started.elapsed(),
                    "cache snapshot handed to a starting process"
                ),
                Ok(Err(e)) => tracing::warn!("cache hand-over socket: sending failed: {e}"),
                Err(_) => tracing::warn!("cache hand-over socket: the client stalled"),
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
