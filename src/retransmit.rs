//! Noticing a client asking again: the same source address, query ID and question while the
//! first query is unanswered, or less than [`ANSWERED_WINDOW`] after it was answered. A
//! stub resolver only does that when it gave up waiting (glibc after `timeout:`, 5 s by
//! default; musl after 1 to 2 s), so it is the earliest sign that pods are timing out, before
//! any error is logged.
//!
//! This module owns one worker's table: fixed size, direct-mapped on a keyed hash of the
//! query, no lock (a client's retry comes from the same socket, so the same worker sees
//! it). A slot taken by another query forgets the earlier one: under a flood the count can
//! only miss retransmits, never invent them.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

/// A retry this long after an answer is a new question, not a retransmit.
pub const ANSWERED_WINDOW_MS: u32 = 1_000;
/// A query unanswered for longer than this is forgotten: no stub waits this long.
pub const UNANSWERED_WINDOW_MS: u32 = 30_000;
/// Slots per worker.
pub const SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The query's hash; 0 marks a free slot.
    tag: u64,
    /// When it was first seen, in the caller's milliseconds.
    asked: u32,
    /// When it was answered (`None`: not yet).
    answered: Option<u32>,
}

/// One worker's table.
pub struct Retransmits {
    slots: Box<[Slot]>,
    hasher: foldhash::fast::RandomState,
}

impl Default for Retransmits {
    fn default() -> Retransmits {
        Retransmits {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

/// A query as the table knows it: its hash, to pass back when it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen(u64);

impl Retransmits {
    /// The query's hash: source address, ID and question (its bytes as sent, so a client's
    /// case randomisation makes a retry with new case a new question, as it is to the
    /// client).
    pub fn hash(&self, source: IpAddr, id: u16, question: &[u8]) -> Seen {
        let mut h = self.hasher.build_hasher();
        match source {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        h.write_u16(id);
        h.write(question);
        Seen(h.finish() | 1)
    }

    /// Records the query at `now_ms` and says whether it is a retransmit of one seen before.
    pub fn asked(&mut self, seen: Seen, now_ms: u32) -> bool {
        let slot = self.slot(seen);
        let again = slot.tag == seen.0
            && match slot.answered {
                None => now_ms.wrapping_sub(slot.asked) < UNANSWERED_WINDOW_MS,
                Some(at) => now_ms.wrapping_sub(at) < ANSWERED_WINDOW_MS,
            };
        if !again {
            *slot = Slot {
                tag: seen.0,
                asked: now_ms,
                answered: None,
            };
        }
        again
    }

    /// Whether `seen` at `now_ms` would be a retransmit, without recording it.
    pub fn is_again(&self, seen: Seen, now_ms: u32) -> bool {
        let slot = self.slots[Self::index(seen)];
        slot.tag == seen.0
            && match slot.answered {
                None => now_ms.wrapping_sub(slot.asked) < UNANSWERED_WINDOW_MS,
                Some(at) => now_ms.wrapping_sub(at) < ANSWERED_WINDOW_MS,
            }
    }

    /// Records that the query was answered at `now_ms`.
    pub fn answered(&mut self, seen: Seen, now_ms: u32) {
        let slot = self.slot(seen);
        if slot.tag == seen.0 {
            slot.answered = Some(now_ms);
        }
    }

    fn slot(&mut self, seen: Seen) -> &mut Slot {
        &mut self.slots[Self::index(seen)]
    }

    fn index(seen: Seen) -> usize {
        // The length is a power of two, and the slice is never empty.
        (seen.0 >> 20) as usize & (SLOTS - 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const Q: &[u8] = b"\x08registry\x07example\x03com\x00\x00\x01\x00\x01";

    #[test]
    fn the_same_id_and_question_again_counts_and_another_id_does_not() {
        let mut t = Retransmits::default();
        let first = t.hash(ip("10.0.0.7"), 0x1234, Q);
        assert!(!t.asked(first, 0));
        // Retries while unanswered: each one counts.
        assert!(t.is_again(first, 5_000));
        assert!(t.asked(first, 5_000));
        assert!(t.asked(first, 10_000));
        t.answered(first, 10_200);
        // Just after the answer: the client's retry crossed it.
        assert!(t.asked(first, 10_900));
        // Well after: a new question that happens to reuse the ID.
        t.answered(first, 10_950);
        assert!(!t.is_again(first, 20_000));
        assert!(!t.asked(first, 20_000));

        // Another ID, another source: not retransmits of the first.
        let other_id = t.hash(ip("10.0.0.7"), 0x1235, Q);
        assert!(!t.asked(other_id, 20_001));
        let other_source = t.hash(ip("10.0.0.8"), 0x1234, Q);
        assert!(!t.asked(other_source, 20_002));
    }

    #[test]
    fn a_query_forgotten_or_pushed_out_is_not_a_retransmit() {
        let mut t = Retransmits::default();
        let q = t.hash(ip("10.0.0.7"), 7, Q);
        assert!(!t.asked(q, 0));
        assert!(
            !t.asked(q, UNANSWERED_WINDOW_MS + 1),
            "too old to be a retry"
        );
        // A flood of other queries takes every slot: the table forgets, and never invents.
        let mut invented = 0;
        for id in 0..(SLOTS as u16 * 8) {
            let other = t.hash(ip("10.0.0.9"), id, Q);
            invented += usize::from(t.asked(other, 40_000));
        }
        assert_eq!(invented, 0);
    }
}
