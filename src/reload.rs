//! Config reload: where the config comes from, noticing that it or a resolv.conf it names
//! changed, and the handle that asks a running server to reload.
//!
//! Files are polled every [`WATCH_INTERVAL`] by content, not by inotify: a Kubernetes
//! ConfigMap update arrives as a symlink swap of a parent directory, which content polling
//! sees without any special case, and a few small files read every two seconds cost nothing.
//! Applying a reload is [`crate::app`]'s job.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::config::{self, Config, ConfigError};
use crate::regular_file::{self, Symlinks};

/// How often watched files are compared with what was last loaded.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Where the running config came from, and so where a reload reads it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// The embedded default: its resolv.conf is still watched.
    Embedded,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => config::load_file(path),
            ConfigSource::Embedded => config::embedded_default(),
        }
    }
}

/// A checksum of every file `cfg` was built from: the config file and each zone's
/// resolv.conf. A missing or unreadable file has its own distinct contribution, so its
/// disappearance and return are both changes.
pub fn fingerprint(source: &ConfigSource, cfg: &Config) -> u32 {
    let mut h = crc32fast::Hasher::new();
    // Bounded and regular files only, as loading them is: a FIFO or a huge file named
    // here must not hold the control loop.
    let mut add =
        |path: &std::path::Path| match regular_file::read(path, config::MAX_FILE, Symlinks::Follow)
        {
            Ok(bytes) => {
                h.update(&[1]);
                h.update(&bytes);
            }
            Err(_) => h.update(&[0]),
        };
    if let ConfigSource::File(path) = source {
        add(path);
    }
    for zone in &cfg.zones {
        if let Some(path) = &zone.resolv_conf {
            // With systemd-resolved's upstream file: a change there changes the upstreams.
            for file in config::resolv::watched_files(path) {
                add(&file);
            }
        }
    }
    h.finalize()
}

/// Why a reload was refused (the old config keeps serving), or could not be asked for.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config source to reload from")]
    NoSource,
    /// The file was refused: every diagnostic, one per line.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address the new config adds could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::listener::BindError),
    #[error("server stopped")]
    Stopped,
}

/// A reload request: the reply says whether the new config was applied.
pub type Request = oneshot::Sender<Result<(), ReloadError>>;

/// Asks a running server to reload (SIGHUP does the same).
#[derive(Debug, Clone)]
pub struct Control {
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) local: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Control {
    /// Reloads now. `Err` says why the new config was refused (the old one keeps serving)
    /// or that the server has stopped.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| ReloadError::Stopped)?;
        rx.await.map_err(|_| ReloadError::Stopped)?
    }

    /// The addresses the server listens on now, in config order (real ports for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local.lock().clone()
    }
}
