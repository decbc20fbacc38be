//! What one client may cost the node: misses in flight and misses started per second, per
//! client, in a table of fixed size; and the token bucket that both this and the
//! per-upstream budgets use.
//!
//! This module owns the accounting. It does not decide what a limited client is told (the
//! caller answers stale or REFUSED with an Extended DNS Error), and it never sees cache
//! hits: those cost microseconds and are never limited.
//!
//! A client is a source address, and an IPv6 /64 counts as one client (one host may hold a
//! whole /64). The table is set-associative with least-recently-used replacement within a
//! set: [`SETS`] sets of [`WAYS`] clients each, allocated once. A flood of spoofed sources
//! therefore cannot grow it; it can only push clients out, and a client pushed out starts
//! again with a full bucket, which is why the global `max_inflight` and the upstream budgets
//! stay the bounds that hold whatever the sources.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::stats::LimitedReason;

/// Clients per set: a lookup compares this many keys.
pub const WAYS: usize = 8;
/// Sets in the table: `SETS * WAYS` clients are tracked at once.
pub const SETS: usize = 512;

/// A token bucket: `rate` tokens a second, at most `burst` held.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            at: None,
        }
    }

    /// Takes one token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_keeping(now, 0.0)
    }

    /// Takes one token at `now` only if at least `keep` tokens are left after it: what a
    /// caller that must leave a reserve for others takes with.
    pub fn take_keeping(&mut self, now: Instant, keep: f64) -> bool {
        if let Some(then) = self.at {
            let elapsed = now.saturating_duration_since(then).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 + keep.max(0.0) {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The limits of one client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Misses in flight at once.
    pub max_inflight: u32,
    /// Misses started per second, on average; 0 = no rate limit.
    pub rate: f64,
    /// Misses that may start at once after a quiet spell.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The client's key; 0 marks a free slot (no client maps to 0: see [`key`]).
    key: u128,
    inflight: u32,
    bucket: TokenBucket,
    last: Option<Instant>,
}

/// The per-client table, shared by every worker.
pub struct Clients {
    limits: Limits,
    sets: Box<[Mutex<[Slot; WAYS]>]>,
    seed: u64,
}

/// A miss admitted for a client: the client's in-flight count drops when it is dropped.
pub struct Ticket {
    clients: Arc<Clients>,
    key: u128,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let set = self.clients.set(self.key);
        let mut ways = set.lock();
        if let Some(slot) = ways.iter_mut().find(|s| s.key == self.key) {
            slot.inflight = slot.inflight.saturating_sub(1);
        }
    }
}

/// The table key of a source: an IPv4 address in its IPv6-mapped form (bits 32-47 set), an
/// IPv6 address by its /64 with the lowest bit set (bits 1-63 clear). The two forms cannot
/// meet, and neither is 0, the free mark.
pub fn key(source: IpAddr) -> u128 {
    let v6 = match source {
        IpAddr::V4(a) => return u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => a,
    };
    match v6.to_ipv4_mapped() {
        Some(v4) => u128::from(v4.to_ipv6_mapped()),
        None => (u128::from(v6) & !u128::from(u64::MAX)) | 1,
    }
}

impl Clients {
    pub fn new(limits: Limits) -> Arc<Clients> {
        let free = Slot {
            key: 0,
            inflight: 0,
            bucket: TokenBucket::new(limits.rate, limits.burst),
            last: None,
        };
        let sets = (0..SETS).map(|_| Mutex::new([free; WAYS])).collect();
        Arc::new(Clients {
            limits,
            sets,
            seed: rand::random(),
        })
    }

    /// The limits this table applies (a reload that changes them builds a new table).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn set(&self, key: u128) -> &Mutex<[Slot; WAYS]> {
        // A keyed mix: sources cannot be chosen to crowd one set.
        let mixed =
            (key as u64 ^ (key >> 64) as u64 ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let at = (mixed >> 32) as usize % SETS;
        // `at` is below SETS, the length.
        &self.sets[at]
    }

    /// Admits one miss of `source` at `now`, or says which limit it hit.
    pub fn admit(self: &Arc<Self>, source: IpAddr, now: Instant) -> Result<Ticket, LimitedReason> {
        let key = key(source);
        let mut ways = self.set(key).lock();
        let at = match ways.iter().position(|s| s.key == key) {
            Some(at) => at,
            None => {
                // Least recently used, preferring a slot with nothing in flight: that
                // client loses only its bucket's state.
                let at = (0..WAYS)
                    .min_by_key(|&i| (ways[i].inflight > 0, ways[i].last))
                    .unwrap_or(0);
                ways[at] = Slot {
                    key,
                    inflight: 0,
                    bucket: TokenBucket::new(self.limits.rate, self.limits.burst),
                    last: None,
                };
                at
            }
        };
        let slot = &mut ways[at];
        slot.last = Some(now);
        if slot.inflight >= self.limits.max_inflight {
            return Err(LimitedReason::Inflight);
        }
        if self.limits.rate > 0.0 && !slot.bucket.take(now) {
            return Err(LimitedReason::Rate);
        }
        slot.inflight += 1;
        Ok(Ticket {
            clients: Arc::clone(self),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 100 ms at 10/s: one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // A long quiet spell refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(t2)).count(), 3);
    }

    #[test]
    fn taking_with_a_reserve_leaves_it_for_plain_takes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0);
        // Half the burst kept: five go, the other five are left for plain takes.
        assert_eq!((0..10).filter(|_| b.take_keeping(t0, 5.0)).count(), 5);
        assert_eq!((0..10).filter(|_| b.take(t0)).count(), 5);
        // Refilled by 600 ms at 10/s: six tokens, one above the reserve.
        let t1 = t0 + Duration::from_millis(600);
        assert_eq!((0..10).filter(|_| b.take_keeping(t1, 5.0)).count(), 1);
    }

    #[test]
    fn one_client_in_flight_limit_leaves_others_alone() {
        let clients = Clients::new(Limits {
            max_inflight: 2,
            rate: 1000.0,
            burst: 1000.0,
        });
        let now = Instant::now();
        let a1 = clients.admit(ip("127.0.0.2"), now).unwrap();
        let _a2 = clients.admit(ip("127.0.0.2"), now).unwrap();
        assert_eq!(
            clients.admit(ip("127.0.0.2"), now).err(),
            Some(LimitedReason::Inflight)
        );
        assert!(clients.admit(ip("127.0.0.3"), now).is_ok());
        drop(a1);
        assert!(clients.admit(ip("127.0.0.2"), now).is_ok());
    }

    #[test]
    fn a_client_past_its_rate_is_refused_until_it_refills() {
        let clients = Clients::new(Limits {
            max_inflight: 100,
            rate: 5.0,
            burst: 5.0,
        });
        let now = Instant::now();
        let admitted = (0..20)
            .filter(|_| clients.admit(ip("10.0.0.1"), now).is_ok())
            .count();
        assert_eq!(admitted, 5);
        assert_eq!(
            clients.admit(ip("10.0.0.1"), now).err(),
            Some(LimitedReason::Rate)
        );
        assert!(
            clients
                .admit(ip("10.0.0.1"), now + Duration::from_millis(200))
                .is_ok()
        );
    }

    #[test]
    fn a_rate_of_zero_limits_only_what_is_in_flight() {
        let clients = Clients::new(Limits {
            max_inflight: 3,
            rate: 0.0,
            burst: 1.0,
        });
        let now = Instant::now();
        for _ in 0..100 {
            drop(clients.admit(ip("10.0.0.1"), now).unwrap());
        }
        let held: Vec<_> = (0..3)
            .map(|_| clients.admit(ip("10.0.0.1"), now).unwrap())
            .collect();
        assert_eq!(
            clients.admit(ip("10.0.0.1"), now).err(),
            Some(LimitedReason::Inflight)
        );
        drop(held);
    }

    #[test]
    fn an_ipv6_64_is_one_client_and_mapped_ipv4_is_its_address() {
        assert_eq!(key(ip("fd00::1")), key(ip("fd00::ffff:1")));
        assert_ne!(key(ip("fd00::1")), key(ip("fd00:0:0:1::1")));
        assert_eq!(key(ip("::ffff:10.0.0.1")), key(ip("10.0.0.1")));
        assert_ne!(key(ip("10.0.0.1")), key(ip("10.0.0.2")));
        assert_ne!(key(ip("10.0.0.2")), key(ip("10.0.0.3")));
        assert_ne!(key(ip("::1")), key(ip("0.0.0.1")));
    }

    #[test]
    fn a_flood_of_new_sources_keeps_the_table_at_its_size() {
        let clients = Clients::new(Limits {
            max_inflight: 1,
            rate: 1.0,
            burst: 1.0,
        });
        let now = Instant::now();
        // A client with a miss in flight, then far more sources than the table holds.
        let held = clients.admit(ip("127.0.0.9"), now).unwrap();
        for i in 0..(SETS * WAYS * 4) as u32 {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            let _ = clients.admit(source, now + Duration::from_millis(1));
        }
        let used: usize = clients
            .sets
            .iter()
            .map(|s| s.lock().iter().filter(|w| w.key != 0).count())
            .sum();
        assert_eq!(used, SETS * WAYS);
        // Its in-flight miss kept it in the table: it is still at its limit.
        assert_eq!(
            clients.admit(ip("127.0.0.9"), now).err(),
            Some(LimitedReason::Inflight)
        );
        drop(held);
    }
}
