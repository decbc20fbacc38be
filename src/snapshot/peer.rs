//! The hand-over socket: a new process asks the one it replaces for a fresh snapshot.
//!
//! In a surge rollout the new pod starts while the old one still serves, long before the old
//! one writes its snapshot at SIGTERM; the file it would find is as old as the last periodic
//! write. So the serving process listens on a unix socket beside the snapshot file
//! ([`socket_path`]), and a starting one connects and sends [`REQUEST`]; the serving one
//! answers [`ACCEPTED`] at once, then a snapshot in the file's format, and closes. A
//! process that does not accept within [`ANSWER_WITHIN`] is given up on (the starting one
//! reads the file instead); one that accepted has [`TRANSFER_LIMIT`] to finish, as
//! encoding a large cache takes a while. The bytes are checked exactly as a file's
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
/// The serving process's first answer, sent before it encodes its cache.
pub const ACCEPTED: &[u8] = b"ok\n";
/// How long a serving process may take to accept a request: a new process waits no longer
/// on a stuck predecessor before it reads the file instead.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Longest a whole transfer may take once accepted: encoding and sending a full 64 MiB
/// cache takes about a second.
pub const TRANSFER_LIMIT: Duration = Duration::from_secs(30);

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
    let mut accepted = [0; ACCEPTED.len()];
    stream.read_exact(&mut accepted).map_err(|e| {
        if is_timeout(&e) {
            FetchError::Silent(answer_within)
        } else {
            e.into()
        }
    })?;
    if accepted != ACCEPTED {
        return Err(FetchError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the serving process did not accept the request",
        )));
    }
    // Accepted: the transfer gets its own limit, checked between reads; one read may wait
    // at most the whole limit.
    stream.set_read_timeout(Some(TRANSFER_LIMIT))?;
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 1 << 16];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Err(FetchError::Slow(TRANSFER_LIMIT)),
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
            let sent = tokio::time::timeout(TRANSFER_LIMIT, async {
                stream.write_all(ACCEPTED).await?;
                let encoded = tokio::task::spawn_blocking(encode)
                    .await
                    .map_err(std::io::Error::other)?;
                stream.write_all(&encoded.bytes).await?;
                stream.shutdown().await?;
                Ok::<_, std::io::Error>(encoded)
            })
            .await;
            match sent {
                Ok(Ok(encoded)) => tracing::info!(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::snapshot::tests::private_dir;

    fn encoded(bytes: &[u8]) -> impl Fn() -> Encoded + Clone + Send + 'static {
        let bytes = bytes.to_vec();
        move || Encoded {
            bytes: bytes.clone(),
            entries: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_gets_the_serving_process_bytes_and_the_socket_goes_with_it() {
        let dir = private_dir();
        let sock = dir.path().join("cache.snap.sock");
        let listener = Listener::bind(&sock).unwrap();
        let mode = std::fs::symlink_metadata(&sock)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener.serve(encoded(b"the cache"), stop.clone()));
        let path = sock.clone();
        let got = tokio::task::spawn_blocking(move || fetch(&path, ANSWER_WITHIN))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"the cache");
        stop.cancel();
        task.await.unwrap();
        assert!(!sock.exists(), "the socket file was left behind");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_request_gets_nothing() {
        let dir = private_dir();
        let sock = dir.path().join("s.sock");
        let listener = Listener::bind(&sock).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener.serve(encoded(b"secret"), stop.clone()));
        let path = sock.clone();
        let got = tokio::task::spawn_blocking(move || {
            let mut s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out
        })
        .await
        .unwrap();
        assert!(got.is_empty(), "{got:?}");
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_process_that_does_not_accept_is_given_up_on() {
        let dir = private_dir();
        let sock = dir.path().join("s.sock");
        // Connections queue in the backlog; nobody ever reads or answers.
        let _silent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = fetch(&sock, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, FetchError::Silent(_)), "{err}");
    }

    #[test]
    fn no_socket_or_something_else_at_its_path_is_not_asked() {
        let dir = private_dir();
        let sock = dir.path().join("s.sock");
        assert!(matches!(
            fetch(&sock, ANSWER_WITHIN),
            Err(FetchError::Absent)
        ));
        std::fs::write(&sock, b"x").unwrap();
        let err = fetch(&sock, ANSWER_WITHIN).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
    }

    #[tokio::test]
    async fn a_socket_in_a_directory_others_may_write_is_neither_asked_nor_bound() {
        let dir = private_dir();
        let sock = dir.path().join("s.sock");
        let _silent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            fetch(&sock, ANSWER_WITHIN),
            Err(FetchError::NotOurs(_))
        ));
        assert!(matches!(Listener::bind(&sock), Err(FetchError::NotOurs(_))));
        assert!(
            sock.exists(),
            "a socket in an unsafe directory was replaced"
        );
    }

    #[tokio::test]
    async fn a_process_leaves_the_socket_of_the_one_that_replaced_it() {
        let dir = private_dir();
        let sock = dir.path().join("s.sock");
        let old = Listener::bind(&sock).unwrap();
        let new = Listener::bind(&sock).unwrap();
        drop(old);
        assert!(
            sock.exists(),
            "the old process removed its successor's socket"
        );
        drop(new);
        assert!(!sock.exists());
    }
}
