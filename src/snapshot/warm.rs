//! What the lifecycle calls to keep the cache warm across restarts and rollouts.
//!
//! At start, [`warm_start`] takes the freshest cache there is: the serving process's, over
//! the hand-over socket ([`super::peer`]), or else the file. While serving, a [`Keeper`]
//! writes the file every `snapshot_interval` and answers the next process's request; the
//! lifecycle still writes the file once more after the drain. This module decides the order
//! of those steps and logs each outcome; it does not decide what is cached.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::peer::{self, FetchError};
use super::{Encoded, Loaded, file};
use crate::cache::{Cache, TtlPolicy};

/// Where a warm start took its entries from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The process serving on the node, over the hand-over socket.
    Peer,
    /// The snapshot file.
    File,
}

/// Fills `cache` before anything is served: first from the process serving on the node (it
/// must start answering within [`peer::ANSWER_WITHIN`]), else from the file at `path`.
/// Never fails start-up: every outcome is logged, and a cold cache is the worst of them.
pub fn warm_start(
    cache: &Cache,
    path: &Path,
    policy: impl Fn(&[u8]) -> Option<TtlPolicy>,
) -> Option<(Origin, Loaded)> {
    if let Err(e) = file::prepare_directory(path) {
        tracing::warn!("cache snapshot directory of {}: {e}", path.display());
    }
    let started = Instant::now();
    let socket = peer::socket_path(path);
    match peer::fetch(&socket, peer::ANSWER_WITHIN) {
        Ok(bytes) => match super::load_bytes(cache, &bytes, &policy) {
            Ok(l) => {
                let from = socket.display();
                let message = format!("cache snapshot loaded from the serving process ({from})");
                log_loaded(&l, started, &message);
                return Some((Origin::Peer, l));
            }
            Err(e) => tracing::warn!(
                "cache snapshot from the serving process ignored, trying the file: {e}"
            ),
        },
        Err(FetchError::Absent) => {}
        Err(e) => tracing::warn!(
            "no cache snapshot from the serving process ({}), trying the file: {e}",
            socket.display()
        ),
    }
    match super::load(cache, path, &policy) {
        Ok(l) => {
            log_loaded(
                &l,
                started,
                &format!("cache snapshot {} loaded", path.display()),
            );
            Some((Origin::File, l))
        }
        Err(e) if e.is_not_found() => {
            tracing::info!("no cache snapshot at {} yet: starting cold", path.display());
            None
        }
        Err(e) => {
            tracing::warn!("cache snapshot {} ignored: {e}", path.display());
            None
        }
    }
}

fn log_loaded(l: &Loaded, started: Instant, message: &str) {
    tracing::info!(
        restored = l.restored,
        expired = l.expired,
        dropped = l.dropped,
        took = ?started.elapsed(),
        "{message}"
    );
}

/// The running side: periodic writes and the hand-over socket, until [`Keeper::stop`].
pub struct Keeper {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Keeper {
    /// Binds the hand-over socket beside `path` and writes the snapshot every `interval`
    /// (never when it is zero). `encode` is called on a blocking thread. A socket that
    /// cannot be bound is logged and costs only the next process's fresh copy. Must run
    /// inside a tokio runtime.
    pub fn start<F>(path: &Path, interval: Duration, encode: F) -> Keeper
    where
        F: Fn() -> Encoded + Clone + Send + Sync + 'static,
    {
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let socket = peer::socket_path(path);
        match peer::Listener::bind(&socket) {
            Ok(listener) => {
                tasks.spawn(listener.serve(encode.clone(), stop.clone()));
            }
            Err(e) => tracing::warn!("cache hand-over socket {} not bound: {e}", socket.display()),
        }
        if !interval.is_zero() {
            tasks.spawn(periodic(path.to_owned(), interval, encode, stop.clone()));
        }
        tasks.close();
        Keeper { stop, tasks }
    }

    /// Stops both and waits for them (a write in progress finishes), removing the socket.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

async fn periodic<F>(path: PathBuf, interval: Duration, encode: F, stop: CancellationToken)
where
    F: Fn() -> Encoded + Send + Sync + 'static,
{
    let encode = std::sync::Arc::new(encode);
    let first = tokio::time::Instant::now() + interval;
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (encode, at) = (encode.clone(), path.clone());
        let written = tokio::task::spawn_blocking(move || {
            let encoded = encode();
            file::write(&at, &encoded.bytes).map(|()| encoded.entries)
        })
        .await;
        match written {
            Ok(Ok(n)) => {
                tracing::info!(entries = n, "cache snapshot written to {}", path.display())
            }
            Ok(Err(e)) => tracing::warn!("cache snapshot {} not written: {e}", path.display()),
            Err(e) => tracing::warn!("cache snapshot {} not written: {e}", path.display()),
        }
    }
}
