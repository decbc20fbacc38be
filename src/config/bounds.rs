//! The most each numeric and duration key accepts: values no operator sets on purpose, so
//! that a slip of units or digits (`"7000d"`, `attempts = 300`) is refused where it is
//! written instead of running. docs/config.md lists each bound with the key.

use std::time::Duration;

pub const SECOND: Duration = Duration::from_secs(1);
pub const MINUTE: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);
/// Worker threads at most: far more cores than a node has.
pub const MAX_WORKERS: i64 = 1024;
/// Open client TCP connections at most; each holds a file descriptor.
pub const MAX_TCP_CONNECTIONS: i64 = 100_000;
/// Queries in flight on one TCP connection: a 16-bit ID tells at most this many apart.
pub const MAX_PIPELINED: i64 = 65_535;
/// Upstream queries in flight at most.
pub const MAX_INFLIGHT: i64 = 1_000_000;
/// One client's misses per second (and burst) at most: beyond any one pod's need.
pub const MAX_CLIENT_MISS_RATE: i64 = 1_000_000;
/// Cache entries at most: 100 million is tens of GiB of answers.
pub const MAX_CAPACITY: i64 = 100_000_000;
/// Cache bytes at most.
pub const MAX_CACHE_BYTES: u64 = 64 << 30;
/// Clients waiting on one in-flight upstream query.
pub const MAX_WAITERS: i64 = 65_536;
/// Upstream attempts per client query: beyond this a client has long given up.
pub const MAX_ATTEMPTS: i64 = 16;
/// Consecutive failures before an upstream is marked down.
pub const MAX_DOWN_AFTER: i64 = 1000;
/// The serve-stale window: RFC 8767 §5 suggests one to three days; a week is beyond it.
pub const MAX_STALE: Duration = Duration::from_secs(7 * 86_400);

/// RFC 2308 §7.1: a server failure may be cached for at most five minutes.
pub const SERVFAIL_TTL_CAP: Duration = Duration::from_secs(300);
/// The most `max_ttl` allows: a week. RFC 2181 §8 lets a TTL reach 2^31 - 1 seconds, but
/// RFC 8767 §4 suggests capping TTLs at 7 days, and no operator means to keep an answer
/// longer without asking again.
pub const MAX_TTL_CAP: Duration = Duration::from_secs(7 * 86_400);
/// The most `min_ttl` allows: it overrides what upstream said, so a day at most.
pub const MIN_TTL_CAP: Duration = Duration::from_secs(86_400);
/// The most `negative_max_ttl` allows: RFC 2308 §5 recommends one to three hours.
pub const NEGATIVE_TTL_CAP: Duration = Duration::from_secs(86_400);
