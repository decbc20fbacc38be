//! One cached response and what is counted on it: hits, the prefetch and refresh claims.
//!
//! An entry is kept small because the cache holds hundreds of thousands: one heap block holds
//! the stored response (message and TTL offset table, see [`Layout`]) and what of the key the
//! response does not already hold, and the rest fits in 40 bytes, so the `Arc` around it is
//! a 56-byte block (an allocator size class of its own with mimalloc, 64 bytes with glibc).

use std::mem::size_of;
use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};

use crate::wire::{HEADER_LEN, Layout, TtlRewrite};

use super::store::Keyed;
use super::{PREFETCH_MIN_HITS, PREFETCH_MIN_TTL, PREFETCH_REMAINING_DIVISOR, STALE_TTL};

#[cfg(test)]
mod tests;

/// What kind of answer an entry holds; hits are counted by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A positive answer.
    Success,
    /// NXDOMAIN or NODATA (RFC 2308).
    Denial,
    /// A SERVFAIL, cached briefly to stop stampedes (RFC 2308 §7.1).
    ServFail,
}

/// One cached response.
#[derive(Debug)]
pub struct Entry {
    /// The stored response, then the key's tail (see `key_tail`). The tail goes last so
    /// that the response's own buffer can take it, usually without moving.
    bytes: Box<[u8]>,
    /// Insert time, nanoseconds after the cache's epoch (negative for restored entries older
    /// than the cache): exact like an `Instant`, in half its size.
    pub(super) inserted: i64,
    /// The clamped TTL, seconds: the entry is fresh for this long after insert.
    pub ttl: u32,
    layout: Layout,
    /// Length of the key's tail at the end of `bytes`, with [`KEY_IN_QUESTION`].
    key_tail: u16,
    /// Hits counted by [`Entry::record_hit_and_check_prefetch`], up to [`HITS_CAP`].
    hits: AtomicU16,
    /// [`PREFETCHING`] in the lowest bit; the zone index (see [`Entry::zone`]) above it,
    /// set once at insert.
    flags: AtomicU8,
    pub kind: EntryKind,
}

/// Set in `key_tail` when the tail is only the key's flags byte and the rest of the key is
/// the message's question (name, type, class). A cache key is the flags byte and the question
/// we ask upstream, which upstream echoes (RFC 1035 §4.1.2), so the key is not stored twice.
/// When upstream changed the name's case, the whole key is the tail.
const KEY_IN_QUESTION: u16 = 0x8000;
/// Hits stop being counted here: prefetch needs two, and a hot entry whose count no longer
/// changes keeps its cache line clean on every core. Far enough below `u16::MAX` that racing
/// increments past the check cannot wrap it.
const HITS_CAP: u16 = u16::MAX / 2;
/// Flag set by the one caller that wins the prefetch of an entry.
const PREFETCHING: u8 = 1;
/// The largest zone index an entry keeps (7 bits above [`PREFETCHING`]).
pub const MAX_ZONE_INDEX: u8 = 127;

impl Entry {
    /// An entry for `stored` (as [`crate::wire::normalize_response`] wrote it, with `layout`)
    /// under `key`, inserted at `inserted` (see the field). Gives `stored` back when the key is
    /// longer than any cache key can be.
    pub(super) fn new(
        key: &[u8],
        stored: Vec<u8>,
        layout: Layout,
        kind: EntryKind,
        inserted: i64,
        ttl: u32,
        zone: u8,
    ) -> Result<Self, Vec<u8>> {
        let question = question(&layout, &stored);
        let (tail, key_tail) = match key.split_first() {
            Some((flags, rest)) if rest == question => {
                (std::slice::from_ref(flags), 1 | KEY_IN_QUESTION)
            }
            _ => match u16::try_from(key.len()) {
                Ok(len) if len < KEY_IN_QUESTION => (key, len),
                _ => return Err(stored),
            },
        };
        let mut bytes = stored;
        bytes.reserve_exact(tail.len());
        bytes.extend_from_slice(tail);
        Ok(Entry {
            bytes: bytes.into_boxed_slice(),
            inserted,
            ttl,
            layout,
            key_tail,
            hits: AtomicU16::new(0),
            flags: AtomicU8::new(zone.min(MAX_ZONE_INDEX) << 1),
            kind,
        })
    }

    /// The key this entry is stored under, in two pieces to be joined (the second may be
    /// empty).
    pub fn key_parts(&self) -> [&[u8]; 2] {
        let tail = self.bytes.get(self.stored().len()..).unwrap_or_default();
        if self.key_tail & KEY_IN_QUESTION != 0 {
            [tail, question(&self.layout, self.stored())]
        } else {
            [tail, &[]]
        }
    }

    /// Whether this entry is stored under `key`.
    pub fn has_key(&self, key: &[u8]) -> bool {
        let [head, rest] = self.key_parts();
        key.split_at_checked(head.len()) == Some((head, rest))
    }

    /// The stored response (see [`crate::wire::normalize_response`]): what
    /// [`crate::wire::write_reply`] takes, with [`Entry::layout`].
    pub fn stored(&self) -> &[u8] {
        let tail = usize::from(self.key_tail & !KEY_IN_QUESTION);
        let end = self.bytes.len().saturating_sub(tail);
        self.bytes.get(..end).unwrap_or_default()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The stored response and its layout, the key's tail dropped.
    pub(super) fn into_stored(self) -> (Vec<u8>, Layout) {
        let stored_len = self.stored().len();
        let mut bytes = self.bytes.into_vec();
        bytes.truncate(stored_len);
        (bytes, self.layout)
    }

    /// The response as a DNS message, as upstream's answer was normalised.
    pub fn message(&self) -> &[u8] {
        self.layout.message(self.stored())
    }

    /// The index of the zone whose query stored this entry, as its [`super::TtlPolicy`] said
    /// (0 when none did): the hit path counts the hit there without routing the name. Kept
    /// in the flags byte so the entry stays 40 bytes.
    pub fn zone(&self) -> u8 {
        self.flags.load(Ordering::Relaxed) >> 1
    }

    /// How a fresh hit `age` seconds old rewrites TTLs: aged, and never above our clamp.
    pub fn ttl_rewrite(&self, age: u32) -> TtlRewrite {
        TtlRewrite::Aged { cap: self.ttl, age }
    }

    /// How a stale answer rewrites TTLs (RFC 8767 §4).
    pub fn stale_ttl_rewrite(&self) -> TtlRewrite {
        TtlRewrite::Fixed(STALE_TTL)
    }

    /// Hits recorded by [`Entry::record_hit_and_check_prefetch`] (counting stops at 32767).
    pub fn hits(&self) -> u32 {
        u32::from(self.hits.load(Ordering::Relaxed))
    }

    /// Counts a fresh hit `age` seconds old and says whether this caller should refresh the
    /// entry in the background: at least [`PREFETCH_MIN_HITS`] hits (this one included), a TTL
    /// of at least [`PREFETCH_MIN_TTL`], and at most a tenth of it left. True once per entry.
    pub fn record_hit_and_check_prefetch(&self, age: u32) -> bool {
        let seen = self.hits.load(Ordering::Relaxed);
        let hits = if seen < HITS_CAP {
            self.hits.fetch_add(1, Ordering::Relaxed).saturating_add(1)
        } else {
            seen
        };
        let remaining = u64::from(self.ttl.saturating_sub(age));
        let due = u32::from(hits) >= PREFETCH_MIN_HITS
            && self.ttl >= PREFETCH_MIN_TTL
            && remaining * PREFETCH_REMAINING_DIVISOR <= u64::from(self.ttl);
        due && self.claim(PREFETCHING)
    }

    /// Sets `flag`; true for the one caller that set it first.
    fn claim(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Relaxed) & flag == 0
            && self.flags.fetch_or(flag, Ordering::AcqRel) & flag == 0
    }

    /// The weight the store charges for this entry: its bytes (response and key tail), the
    /// entry itself and its `Arc` counts.
    pub(super) fn weight(&self) -> usize {
        self.bytes.len() + size_of::<Entry>() + 2 * size_of::<usize>()
    }
}

impl Keyed for Entry {
    fn has_key(&self, key: &[u8]) -> bool {
        Entry::has_key(self, key)
    }
}

/// The question section of a stored response (empty if the layout does not fit it).
fn question<'a>(layout: &Layout, stored: &'a [u8]) -> &'a [u8] {
    layout
        .message(stored)
        .get(HEADER_LEN..layout.question_end())
        .unwrap_or_default()
}
