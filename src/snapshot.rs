//! Warm restart: the cache written to a file on shutdown and read back at start.
//!
//! A DaemonSet rollout restarts nodedns on every node; without this, each restart sends a
//! burst of misses to the underlay resolvers and slows every pod's first lookups. This
//! module owns the file format and its checks; the cache decides what an entry is.
//!
//! Format (all integers big-endian): the magic `nodedns-cache\0` and a version byte, an
//! entry count (u32), the entries, then a CRC-32 of everything before it. Each entry: kind
//! (u8), TTL (u32 s), insert time and end of the stale window (u64 ms since the Unix
//! epoch), key length (u16) and key, response length (u16) and response. Times are wall
//! clock because monotonic time does not survive a restart.
//!
//! The file is written to `PATH.tmp` and renamed over `PATH`, so a crash mid-write leaves
//! the previous snapshot. On load, a file that is truncated, has a bad CRC or a bad magic is
//! reported and ignored whole; an entry past its stale window, or whose response no longer
//! parses, is skipped. Loading reads at most [`MAX_FILE`] bytes.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::cache::{Cache, EntryKind};
use crate::wire;

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
    #[error("not a nodedns cache snapshot (bad magic or version)")]
    Magic,
    #[error("truncated or corrupt (checksum mismatch)")]
    Checksum,
    #[error("truncated inside entry {0}")]
    Truncated(u32),
}

/// What a load did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub restored: usize,
    pub expired: usize,
    pub corrupt: usize,
}

/// Writes every cache entry still within its stale window to `path`, atomically.
/// Returns the number of entries written.
pub fn write(cache: &Cache, path: &Path, stale_max: Duration) -> std::io::Result<usize> {
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

    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(count as usize)
}

/// Reads `path` into `cache`. Entries already past their stale window are skipped.
pub fn load(cache: &Cache, path: &Path) -> Result<Loaded, SnapshotError> {
    if std::fs::metadata(path)?.len() > MAX_FILE {
        return Err(SnapshotError::TooLarge);
    }
    let data = std::fs::read(path)?;
    load_bytes(cache, &data)
}

/// Reads a snapshot's bytes into `cache`, as [`load`] does with a file's; the fuzz target
/// for the format calls this, so it sees exactly what a file read would give.
pub fn load_bytes(cache: &Cache, data: &[u8]) -> Result<Loaded, SnapshotError> {
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
    let mut loaded = Loaded::default();
    let mut normalized = Vec::new();
    for i in 0..count {
        let e = r.entry().ok_or(SnapshotError::Truncated(i))?;
        if e.stale_until <= wall {
            loaded.expired += 1;
            continue;
        }
        let (Some(kind), Ok((_, layout))) = (
            kind_from(e.kind),
            wire::normalize_response(e.response, &mut normalized),
        ) else {
            loaded.corrupt += 1;
            continue;
        };
        let age = Duration::from_millis(wall.saturating_sub(e.inserted));
        let Some(inserted) = now.checked_sub(age) else {
            loaded.expired += 1;
            continue;
        };
        if cache.restore(
            e.key,
            std::mem::take(&mut normalized),
            layout,
            kind,
            e.ttl,
            inserted,
        ) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cache::{Limits, Lookup, TtlPolicy};
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};

    const POLICY: TtlPolicy = TtlPolicy {
        min_ttl: 0,
        max_ttl: 86400,
        negative_max_ttl: 3600,
        servfail_ttl: 5,
    };

    fn cache() -> Cache {
        Cache::new(Limits {
            max_entries: 200_000,
            max_bytes: 256 << 20,
            stale_max: Duration::from_secs(3600),
        })
    }

    /// Caches `name A` with `ttl` and returns its key.
    fn fill(cache: &Cache, name: &str, ttl: u32) -> Vec<u8> {
        let qname = Name::from_ascii(name).unwrap();
        let mut m = Message::new(7, MessageType::Response, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(qname.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            qname,
            ttl,
            RData::A(A::new(198, 18, 0, 1)),
        ));
        let mut q = Message::new(7, MessageType::Query, hickory_proto::op::OpCode::Query);
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let qbytes = q.to_vec().unwrap();
        let parsed = wire::parse_query(&qbytes).unwrap();
        let key = parsed.cache_key().to_vec();
        let mut out = Vec::new();
        let (analysis, layout) = wire::normalize_response(&m.to_vec().unwrap(), &mut out).unwrap();
        cache
            .insert(&key, out, &analysis, layout, &POLICY, Instant::now())
            .unwrap();
        key
    }

    #[tokio::test(start_paused = true)]
    async fn round_trip_keeps_entries_and_their_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snap");
        let a = cache();
        let key = fill(&a, "registry.example.test.", 300);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(write(&a, &path, Duration::from_secs(3600)).unwrap(), 1);

        let b = cache();
        let loaded = load(&b, &path).unwrap();
        assert_eq!(loaded.restored, 1);
        let Lookup::Fresh { entry, age } = b.lookup(&key, Instant::now()) else {
            panic!("restored entry must be fresh");
        };
        assert!((99..=101).contains(&age), "age {age}");
        assert_eq!(entry.ttl, 300);
    }

    #[tokio::test(start_paused = true)]
    async fn round_trip_keeps_keys_whether_or_not_upstream_echoed_the_question_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snap");
        let a = cache();
        // The second answer's question is in upper case: its entry holds its key whole.
        let keys = [
            fill(&a, "api.example.test.", 300),
            fill(&a, "WWW.Example.TEST.", 300),
        ];
        assert_eq!(write(&a, &path, Duration::from_secs(3600)).unwrap(), 2);
        let b = cache();
        assert_eq!(load(&b, &path).unwrap().restored, 2);
        for key in keys {
            assert!(matches!(
                b.lookup(&key, Instant::now()),
                Lookup::Fresh { .. }
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_and_truncated_files_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snap");
        std::fs::write(&path, b"this is not a snapshot at all").unwrap();
        assert!(matches!(load(&cache(), &path), Err(SnapshotError::Magic)));

        let a = cache();
        for i in 0..10 {
            fill(&a, &format!("n{i}.example.test."), 300);
        }
        write(&a, &path, Duration::from_secs(60)).unwrap();
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 40]).unwrap();
        let b = cache();
        assert!(matches!(load(&b, &path), Err(SnapshotError::Checksum)));
        assert!(b.is_empty(), "nothing from a corrupt file is used");
        assert!(matches!(
            load(&b, &dir.path().join("missing")),
            Err(SnapshotError::Io(_))
        ));
    }

    #[test]
    fn entries_past_their_stale_window_are_skipped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cache.snap");
            let a = cache();
            fill(&a, "short.example.test.", 1);
            fill(&a, "long.example.test.", 300);
            // A stale window of zero: the 1 s entry is past it once a second has gone by.
            std::thread::sleep(Duration::from_millis(1100));
            assert_eq!(write(&a, &path, Duration::ZERO).unwrap(), 1);
            assert_eq!(load(&cache(), &path).unwrap().restored, 1);
        });
    }

    /// Measures the load time docs/config.md quotes. 20k entries by default, to keep the
    /// debug-build test run short; `NODEDNS_SNAPSHOT_ENTRIES=100000` for the documented figure.
    #[tokio::test]
    async fn loads_many_entries() {
        let n: usize = std::env::var("NODEDNS_SNAPSHOT_ENTRIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snap");
        let a = cache();
        for i in 0..n {
            fill(&a, &format!("host-{i}.example.test."), 3600);
        }
        let written = write(&a, &path, Duration::from_secs(3600)).unwrap();
        assert_eq!(written, n);
        let size = std::fs::metadata(&path).unwrap().len();
        let b = cache();
        let started = std::time::Instant::now();
        let loaded = load(&b, &path).unwrap();
        eprintln!(
            "snapshot: {n} entries, {size} bytes, loaded in {:?}",
            started.elapsed()
        );
        assert_eq!(loaded.restored, n);
        assert_eq!(b.len(), n);
    }
}
