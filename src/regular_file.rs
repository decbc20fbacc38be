//! Reading the files nodedns is pointed at (the config, a resolv.conf, the cache snapshot):
//! regular files only, and never more than a limit.
//!
//! The control loop reads these files while it also waits for SIGTERM, so a read must not
//! block: a FIFO or a device named as a config would otherwise hold the loop forever (opening
//! a FIFO for reading waits for a writer, and reading one waits for data). Every file is
//! opened non-blocking, checked with `fstat` on the opened descriptor (so a file swapped
//! after a check cannot slip through), and read through `take(limit + 1)`: the size the
//! file claims is never trusted, only the bytes that arrive. This module does not decide
//! what a file's contents mean.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Whether the last component of a path may be a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Followed: a Kubernetes ConfigMap mount is a chain of symlinks to the real file.
    Follow,
    /// Refused (`O_NOFOLLOW`): for files nodedns itself writes, where a link planted by
    /// someone else must not redirect it.
    Refuse,
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("is a symlink (not followed)")]
    Symlink,
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("larger than {0} bytes")]
    TooLarge(u64),
}

impl ReadError {
    /// Whether the file simply is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Opens `path` for reading without blocking on a FIFO or a device, and checks that what
/// was opened is a regular file.
pub fn open(path: &Path, symlinks: Symlinks) -> Result<(File, Metadata), ReadError> {
    if symlinks == Symlinks::Refuse && std::fs::symlink_metadata(path)?.is_symlink() {
        return Err(ReadError::Symlink);
    }
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if symlinks == Symlinks::Refuse {
        // Closes the race with the check above: a link planted since fails with ELOOP.
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) if symlinks == Symlinks::Refuse => ReadError::Symlink,
            _ => ReadError::Io(e),
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(&meta)));
    }
    Ok((file, meta))
}

/// Reads at most `limit` bytes of an opened file; more is an error.
pub fn read_bounded(file: File, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}

/// Reads the regular file `path`, at most `limit` bytes.
pub fn read(path: &Path, limit: u64, symlinks: Symlinks) -> Result<Vec<u8>, ReadError> {
    let (file, _) = open(path, symlinks)?;
    read_bounded(file, limit)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64, symlinks: Symlinks) -> Result<String, ReadError> {
    let bytes = read(path, limit, symlinks)?;
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

/// What kind of file `meta` describes, for messages.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        for symlinks in [Symlinks::Follow, Symlinks::Refuse] {
            let err = read(&fifo, 100, symlinks).unwrap_err();
            assert!(matches!(err, ReadError::NotRegular("FIFO")), "{err}");
        }
    }

    #[test]
    fn the_limit_counts_bytes_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read(&path, 10, Symlinks::Refuse).unwrap().len(), 10);
        assert!(matches!(
            read(&path, 9, Symlinks::Refuse),
            Err(ReadError::TooLarge(9))
        ));
        // A file that reports no size yet has content (as /proc files do) is still bounded.
        assert!(matches!(
            read(Path::new("/proc/self/status"), 8, Symlinks::Follow),
            Err(ReadError::TooLarge(8))
        ));
    }

    #[test]
    fn symlinks_are_followed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read(&link, 10, Symlinks::Follow).unwrap(), b"x");
        assert!(matches!(
            read(&link, 10, Symlinks::Refuse),
            Err(ReadError::Symlink)
        ));
        assert!(matches!(
            read(dir.path(), 10, Symlinks::Follow),
            Err(ReadError::NotRegular("directory"))
        ));
    }
}
