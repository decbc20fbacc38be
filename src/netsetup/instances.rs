//! Whether another nodedns serves this node: a shared lock on one file in a host directory.
//!
//! Every process in transparent mode holds a shared `flock` on `interface.instance_lock`
//! (a hostPath, so every nodedns pod of the node sees the same file) for as long as it runs.
//! On a clean exit it asks for the lock exclusively without waiting: granted means no other
//! process holds it, so this one is the last and withdraws the interception; refused means
//! another (the surge pod of a rollout) serves, and the rules stay. A process that starts
//! waits for its shared lock, so it never installs the rules while one that found itself
//! last is still withdrawing them; the exiting process releases the lock only once it is
//! done. The kernel drops the lock of a killed process, so a crash never leaves one behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a starting process waits for an exiting one to finish withdrawing.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// This process's share of the node's instance lock.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    path: PathBuf,
}

/// What an exiting process found.
#[derive(Debug, PartialEq, Eq)]
pub enum Last {
    /// No other process holds the lock: withdraw.
    Alone,
    /// Another process holds it: leave everything in place.
    Others,
}

impl InstanceLock {
    /// Opens (creating it and its directory) and share-locks `path`, waiting while an
    /// exiting process holds it exclusively. Blocking: call from `spawn_blocking`.
    pub fn acquire(path: &Path) -> std::io::Result<InstanceLock> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match file.try_lock_shared() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{} held exclusively for {WAIT:?}", path.display()),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(InstanceLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// At exit: whether this process is the last one holding the lock. When it is, it now
    /// holds the lock exclusively until dropped, so no successor starts meanwhile.
    pub fn last(&self) -> Last {
        // Converting a shared flock to exclusive without waiting: refused while any other
        // open file description holds it.
        match self.file.try_lock() {
            Ok(()) => Last::Alone,
            Err(std::fs::TryLockError::WouldBlock) => Last::Others,
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(path = %self.path.display(), error = %e, "instance lock: cannot tell whether another nodedns serves; assuming one does");
                Last::Others
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_last_process_is_alone_and_one_of_two_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/instances.lock");
        let old = InstanceLock::acquire(&path).unwrap();
        let new = InstanceLock::acquire(&path).unwrap();
        // The old one exits while the new one runs: it is not the last.
        assert_eq!(old.last(), Last::Others);
        drop(old);
        assert_eq!(new.last(), Last::Alone);
    }

    #[test]
    fn a_starting_process_waits_for_one_that_is_withdrawing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instances.lock");
        let exiting = InstanceLock::acquire(&path).unwrap();
        assert_eq!(exiting.last(), Last::Alone);
        let p = path.clone();
        let started = std::thread::spawn(move || InstanceLock::acquire(&p).map(|_| ()));
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !started.is_finished(),
            "took the lock during the withdrawal"
        );
        drop(exiting);
        started.join().unwrap().unwrap();
    }
}
