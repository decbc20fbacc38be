//! The snapshot file on disk: who may have written it, and replacing it atomically.
//!
//! A snapshot is read back into the cache and served to every pod on the node, so its file
//! (and the directory holding it, where the file could be swapped) must be this process's
//! own: owned by its effective user and writable by no group or other user. It is never
//! read or written through a symlink. Writing goes to a fresh file with an unguessable name
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600) beside the target, which is synced, renamed
//! over the target, and the directory synced, so a crash leaves the old snapshot or the new
//! one, never a mix, and no name anyone could plant a link at in advance is ever opened.

use std::fs::{File, Metadata};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SnapshotError;
use crate::regular_file::{self, Symlinks};
use crate::sys::effective_uid;

/// Reads the snapshot at `path`, at most `limit` bytes, after checking it and its directory.
pub(super) fn read(path: &Path, limit: u64) -> Result<Vec<u8>, SnapshotError> {
    let (file, meta) = regular_file::open(path, Symlinks::Refuse)?;
    check_owner(&meta, "file")?;
    check_owner(&std::fs::metadata(directory(path))?, "directory")?;
    Ok(regular_file::read_bounded(file, limit)?)
}

/// Replaces the snapshot at `path` with `body`.
pub(super) fn write(path: &Path, body: &[u8]) -> Result<(), SnapshotError> {
    let dir = directory(path);
    check_owner(&std::fs::metadata(dir)?, "directory")?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_symlink() => return Err(regular_file::ReadError::Symlink.into()),
        Ok(meta) if !meta.is_file() => {
            return Err(regular_file::ReadError::NotRegular(regular_file::kind_of(&meta)).into());
        }
        Ok(meta) => check_owner(&meta, "file")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let (tmp, mut file) = create_temporary(path)?;
    let written = file
        .write_all(body)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Creates a new file beside `path` under a name nobody can have prepared: the process ID
/// and 64 random bits. `O_EXCL` refuses anything already there, a symlink included.
fn create_temporary(path: &Path) -> std::io::Result<(PathBuf, File)> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut last = None;
    for _ in 0..4 {
        let tmp = path.with_file_name(format!(
            ".{name}.{}.{:016x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temporary file name was free")))
}

/// Makes the snapshot's directory private before anything is written or bound in it:
/// creates it mode 0700 when missing (its parent must exist), and takes read and search
/// access away from group and others when it is this user's and nobody else may write it (a
/// kubelet creates a `hostPath` directory 0755). A directory others may write is left as
/// it is, and refused where it is used.
pub(super) fn prepare_directory(path: &Path) -> Result<(), SnapshotError> {
    let dir = directory(path);
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let meta = std::fs::metadata(dir)?;
    check_owner(&meta, "directory")?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The directory holding `path` (the current one for a bare name).
pub(super) fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Refuses a file or directory that another user owns or that a group or other users may
/// write: whoever can write it can put answers in this node's cache.
pub(super) fn check_owner(meta: &Metadata, what: &'static str) -> Result<(), SnapshotError> {
    let euid = effective_uid();
    if meta.uid() != euid {
        return Err(SnapshotError::NotOurs(format!(
            "{what} is owned by uid {}, not by this process (uid {euid})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(SnapshotError::NotOurs(format!(
            "{what} is writable by group or others (mode {:o})",
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::snapshot::tests::private_dir;

    fn write_private(path: &Path, body: &[u8]) {
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_fifo_at_the_path_is_refused_at_once() {
        let dir = private_dir();
        let path = dir.path().join("cache.snap");
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let err = read(&path, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(write(&path, b"new").is_err(), "a FIFO must not be replaced");
    }

    #[test]
    fn a_symlink_at_the_path_is_neither_read_nor_written_through() {
        let dir = private_dir();
        let victim = dir.path().join("victim");
        write_private(&victim, b"precious");
        let path = dir.path().join("cache.snap");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = read(&path, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(write(&path, b"new").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }

    #[test]
    fn links_planted_at_temporary_names_are_never_followed() {
        let dir = private_dir();
        let victim = dir.path().join("victim");
        write_private(&victim, b"precious");
        let path = dir.path().join("cache.snap");
        // The names a writer with a fixed temporary name would use.
        for name in ["cache.tmp", "cache.snap.tmp", ".cache.snap.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        write(&path, b"snapshot").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(read(&path, 1 << 20).unwrap(), b"snapshot");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert_eq!(left.len(), 3, "a temporary file was left behind: {left:?}");
    }

    #[test]
    fn a_file_or_directory_others_may_write_is_refused() {
        let dir = private_dir();
        let path = dir.path().join("cache.snap");
        write_private(&path, b"x");
        for mode in [0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read(&path, 1 << 20).unwrap_err();
            assert!(matches!(err, SnapshotError::NotOurs(_)), "{err}");
            assert!(matches!(write(&path, b"y"), Err(SnapshotError::NotOurs(_))));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            read(&path, 1 << 20),
            Err(SnapshotError::NotOurs(_))
        ));
        assert!(matches!(write(&path, b"y"), Err(SnapshotError::NotOurs(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn a_file_another_user_owns_is_refused() {
        if effective_uid() != 0 {
            println!("skipped: changing a file's owner needs root");
            return;
        }
        let dir = private_dir();
        let path = dir.path().join("cache.snap");
        write_private(&path, b"x");
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let err = read(&path, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("uid 65534"), "{err}");
        assert!(matches!(write(&path, b"y"), Err(SnapshotError::NotOurs(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn reads_are_bounded_by_bytes_read() {
        let dir = private_dir();
        let path = dir.path().join("cache.snap");
        write_private(&path, &[7; 100]);
        assert_eq!(read(&path, 100).unwrap().len(), 100);
        assert!(matches!(read(&path, 99), Err(SnapshotError::TooLarge)));
    }

    #[test]
    fn the_directory_is_made_private_but_one_others_may_write_is_left_alone() {
        let parent = private_dir();
        let dir = parent.path().join("state");
        let path = dir.join("cache.snap");
        prepare_directory(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "created");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_directory(&path).unwrap();
        assert_eq!(
            mode(&dir),
            0o700,
            "tightened as a kubelet leaves a hostPath"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            prepare_directory(&path),
            Err(SnapshotError::NotOurs(_))
        ));
        assert_eq!(
            mode(&dir),
            0o777,
            "a directory others may write was changed"
        );
    }
}
