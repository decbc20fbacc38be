//! Warm restart: the cache written to a file (periodically and on shutdown), handed from the
//! serving process to the one replacing it, and read back at start.
//!
//! A DaemonSet rollout restarts nodedns on every node; without this, each restart sends a
//! burst of misses to the underlay resolvers and slows every pod's first lookups. This
//! module owns the format and the checks an entry must pass to be served again
//! ([`check`]); [`file`] owns who may have written the file and how it is replaced; [`peer`]
//! owns the hand-over socket; [`warm`] the order a start and a running process take these
//! steps in. The cache decides what an entry is.
//!
//! Format (all integers big-endian): the magic `nodedns-cache\0` and a version byte, an
//! entry count (u32), the entries, then a CRC-32 of everything before it. Each entry: kind
//! (u8), TTL (u32 s), insert time and end of the stale window (u64 ms since the Unix
//! epoch), key length (u16) and key, response length (u16) and response. Times are wall
//! clock because monotonic time does not survive a restart.
//!
//! A snapshot is all or nothing: every entry is checked before any is inserted, and one
//! that fails (a key that is not the response's question, a message that is not a
//! cacheable DNS response, a kind the message does not have) discards the whole file, as a
//! bad magic, a bad CRC or a truncated file do. Entries are held to the config nodedns runs
//! now, not the one that wrote them: TTLs are clamped again by the zone's TTL rules and the
//! stale window by `stale_max`; what that config would not cache, or what is past its
//! window, is skipped. Loading reads at most [`MAX_FILE`] bytes.

mod check;
mod file;
mod peer;
#[cfg(test)]
mod tests;
mod warm;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::cache::{Cache, EntryKind, TtlPolicy};
use crate::regular_file::ReadError;

pub use check::EntryError;
pub use peer::{ANSWER_WITHIN, REQUEST, socket_path};
pub use warm::{Keeper, Origin, warm_start};

const MAGIC: &[u8] = b"nodedns-cache\0\x01";
/// Largest snapshot read: a 64 MiB cache plus per-entry framing fits well within it.
pub const MAX_FILE: u64 = 256 << 20;

/// Why a snapshot file was ignored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {MAX_FILE} bytes")]
    TooLarge,
    #[error("{0}")]
    File(ReadError),
    /// Owned by another user, or writable by others (the file or its directory).
    #[error("{0}")]
    NotOurs(String),
    #[error("not a nodedns cache snapshot (bad magic or version)")]
    Magic,
    #[error("truncated or corrupt (checksum mismatch)")]
    Checksum,
    #[error("truncated inside entry {0}")]
    Truncated(u32),
    #[error("{0} bytes after the last entry")]
    Trailing(usize),
    #[error("entry {index}: {reason}")]
    Entry { index: u32, reason: EntryError },
}

impl From<ReadError> for SnapshotError {
    fn from(e: ReadError) -> SnapshotError {
        match e {
            ReadError::Io(e) => SnapshotError::Io(e),
            ReadError::TooLarge(_) => SnapshotError::TooLarge,
            other => SnapshotError::File(other),
        }
    }
}

impl SnapshotError {
    /// Whether there simply is no snapshot yet (a first start).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SnapshotError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What a load did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub restored: usize,
    /// Past their stale window (as the current `stale_max` counts it).
    pub expired: usize,
    /// Well-formed, but the current config would not cache them (no zone routes the name,
    /// or its TTL rules give a TTL of 0).
    pub dropped: usize,
}

/// A snapshot's bytes, as written to the file or handed to a new process.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub entries: usize,
}

/// Writes every cache entry still within its stale window to `path`, atomically.
/// Returns the number of entries written.
pub fn write(cache: &Cache, path: &Path, stale_max: Duration) -> Result<usize, SnapshotError> {
    let encoded = encode(cache, stale_max);
    file::write(path, &encoded.bytes)?;
    Ok(encoded.entries)
}

/// Every cache entry still within its stale window, in the snapshot format.
pub fn encode(cache: &Cache, stale_max: Duration) -> Encoded {
    let (now, wall) = (Instant::now(), now_ms());
    let mut body = Vec::with_capacity(cache.bytes() + 64);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&[0; 4]);
    let mut count: u32 = 0;
    cache.store().for_each(|e| {
        let key = e.key_parts();
        let age_ms = ms(cache.age(e, now));
        let inserted = wall.saturating_sub(age_ms);
        let stale_until = inserted
            .saturating_add(u64::from(e.ttl) * 1000)
            .saturating_add(ms(stale_max));
        let response = e.message();
        let klen = key[0].len() + key[1].len();
        let (Ok(klen), Ok(rlen)) = (u16::try_from(klen), u16::try_from(response.len())) else {
            return;
        };
        if stale_until <= wall || count == u32::MAX {
            return;
        }
        body.push(kind_byte(e.kind));
        body.extend_from_slice(&e.ttl.to_be_bytes());
        body.extend_from_slice(&inserted.to_be_bytes());
        body.extend_from_slice(&stale_until.to_be_bytes());
        body.extend_from_slice(&klen.to_be_bytes());
        body.extend_from_slice(key[0]);
        body.extend_from_slice(key[1]);
        body.extend_from_slice(&rlen.to_be_bytes());
        body.extend_from_slice(response);
        count += 1;
    });
    body[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    Encoded {
        bytes: body,
        entries: count as usize,
    }
}

/// Reads `path` into `cache`, all or nothing. `policy` gives the TTL rules of the zone that
/// routes a qname (lowercased wire form) under the current config, `None` when no zone does.
pub fn load(
    cache: &Cache,
    path: &Path,
    policy: impl Fn(&[u8]) -> Option<TtlPolicy>,
) -> Result<Loaded, SnapshotError> {
    let data = file::read(path, MAX_FILE)?;
    load_bytes(cache, &data, policy)
}

/// Reads a snapshot's bytes into `cache`, as [`load`] does with a file's; the fuzz target
/// for the format calls this, so it sees exactly what a file read would give.
pub fn load_bytes(
    cache: &Cache,
    data: &[u8],
    policy: impl Fn(&[u8]) -> Option<TtlPolicy>,
) -> Result<Loaded, SnapshotError> {
    let Some((body, crc)) = data.split_last_chunk::<4>() else {
        return Err(SnapshotError::Magic);
    };
    if !body.starts_with(MAGIC) {
        return Err(SnapshotError::Magic);
    }
    if crc32fast::hash(body) != u32::from_be_bytes(*crc) {
        return Err(SnapshotError::Checksum);
    }
    let mut r = Reader {
        buf: body,
        at: MAGIC.len(),
    };
    let count = r.u32().ok_or(SnapshotError::Truncated(0))?;
    let (now, wall) = (Instant::now(), now_ms());
    let window = check::Window {
        wall_ms: wall,
        stale_max_ms: ms(cache.stale_max()),
    };
    let mut loaded = Loaded::default();
    // Every entry is checked before the first is inserted: a file that fails anywhere
    // leaves the cache as it was.
    let mut ready = Vec::new();
    for index in 0..count {
        let raw = r.entry().ok_or(SnapshotError::Truncated(index))?;
        match check::check_entry(&raw, &policy, window) {
            Ok(check::Verdict::Restore(entry)) => ready.push(entry),
            Ok(check::Verdict::Expired) => loaded.expired += 1,
            Ok(check::Verdict::NotCachedNow) => loaded.dropped += 1,
            Err(reason) => return Err(SnapshotError::Entry { index, reason }),
        }
    }
    if r.at != body.len() {
        return Err(SnapshotError::Trailing(body.len() - r.at));
    }
    for e in ready {
        let Some(inserted) = now.checked_sub(e.age) else {
            loaded.expired += 1;
            continue;
        };
        if cache.restore(e.key, e.stored, e.layout, e.kind, e.ttl, inserted, e.zone) {
            loaded.restored += 1;
        }
    }
    Ok(loaded)
}

struct RawEntry<'a> {
    kind: u8,
    ttl: u32,
    inserted: u64,
    stale_until: u64,
    key: &'a [u8],
    response: &'a [u8],
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn entry(&mut self) -> Option<RawEntry<'a>> {
        let kind = *self.take(1)?.first()?;
        let (ttl, inserted, stale_until) = (self.u32()?, self.u64()?, self.u64()?);
        let klen = usize::from(self.u16()?);
        let key = self.take(klen)?;
        let rlen = usize::from(self.u16()?);
        let response = self.take(rlen)?;
        Some(RawEntry {
            kind,
            ttl,
            inserted,
            stale_until,
            key,
            response,
        })
    }
}

fn kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Success => 0,
        EntryKind::Denial => 1,
        EntryKind::ServFail => 2,
    }
}

fn kind_from(b: u8) -> Option<EntryKind> {
    match b {
        0 => Some(EntryKind::Success),
        1 => Some(EntryKind::Denial),
        2 => Some(EntryKind::ServFail),
        _ => None,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms)
}
