//! The S3-FIFO ghost set of one shard: hashes of keys recently evicted from the small queue.
//!
//! A key that comes back while its hash is still here skips probation and goes straight to the
//! main queue. Only hashes are kept (no keys, no values): a false positive merely admits one
//! key to the main queue early, which costs nothing in correctness.

use std::collections::VecDeque;

use hashbrown::HashTable;

/// A bounded FIFO set of key hashes, each remembered by its low 32 bits.
///
/// `order` remembers insertion order for expiry; `members` answers membership. A hash taken out
/// of `members` by [`Ghost::take`] leaves a stale record in `order`, recognised later by its
/// sequence number, so neither operation has to search the queue. A record is a 32-bit tag and
/// a 32-bit sequence number in one `u64`: the set holds about as many records as its shard
/// holds entries, so they are kept at 8 bytes, twice over (set and queue). Two keys sharing a
/// tag only admit one of them to the main queue early; with at most millions of records among
/// 2^32 tags that is rare. Sequence numbers wrap, but a record is long expired before its
/// number comes round again: the queue holds far fewer than 2^32 records.
#[derive(Debug, Default)]
pub(super) struct Ghost {
    /// The record of each live member.
    members: HashTable<u64>,
    /// Records in insertion order, possibly stale.
    order: VecDeque<u64>,
    next_seq: u32,
}

/// The tag of a record (the low half of the hash: the store picks shards by the high half,
/// so within a shard those bits are far from random).
fn tag(hash: u64) -> u32 {
    hash as u32
}

fn record(tag: u32, seq: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(seq)
}

fn tag_of(record: u64) -> u32 {
    (record >> 32) as u32
}

/// The table's hash of a tag: the tag in both halves, so both the bucket index (low bits) and
/// hashbrown's control tag (top 7 bits) vary with it.
fn spread(tag: u32) -> u64 {
    record(tag, tag)
}

impl Ghost {
    /// Remembers `hash`, then forgets the oldest records until at most `cap` remain.
    pub(super) fn insert(&mut self, hash: u64, cap: usize) {
        if cap == 0 {
            self.clear();
            return;
        }
        let (tag, seq) = (tag(hash), self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        let new = record(tag, seq);
        match self.members.find_mut(spread(tag), |&r| tag_of(r) == tag) {
            Some(member) => *member = new,
            None => {
                self.members
                    .insert_unique(spread(tag), new, |&r| spread(tag_of(r)));
            }
        }
        self.order.push_back(new);
        while self.order.len() > cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            // Only the newest record of a tag owns its membership.
            if let Ok(member) = self.members.find_entry(spread(tag_of(old)), |&r| r == old) {
                member.remove();
            }
        }
    }

    /// Removes `hash` and says whether it was a member.
    pub(super) fn take(&mut self, hash: u64) -> bool {
        let tag = tag(hash);
        match self.members.find_entry(spread(tag), |&r| tag_of(r) == tag) {
            Ok(member) => {
                member.remove();
                true
            }
            Err(_) => false,
        }
    }

    pub(super) fn clear(&mut self) {
        self.members.clear();
        self.order.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Ghost;

    #[test]
    fn forgets_oldest_beyond_capacity() {
        let mut ghost = Ghost::default();
        for h in 0..10u64 {
            ghost.insert(h.wrapping_mul(0x9e37_79b9_7f4a_7c15), 4);
        }
        assert_eq!(ghost.len(), 4);
        assert!(!ghost.take(0));
        assert!(ghost.take(9u64.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        assert!(!ghost.take(9u64.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    }

    #[test]
    fn expiry_is_right_across_the_sequence_number_wrap() {
        let mut ghost = Ghost {
            next_seq: u32::MAX - 1,
            ..Ghost::default()
        };
        for h in 1..=5u64 {
            ghost.insert(h, 3);
        }
        assert_eq!(ghost.len(), 3);
        assert!(!ghost.take(1) && !ghost.take(2));
        assert!(ghost.take(3) && ghost.take(4) && ghost.take(5));
    }

    #[test]
    fn reinserted_hash_survives_expiry_of_its_old_record() {
        let mut ghost = Ghost::default();
        ghost.insert(1, 3);
        ghost.insert(2, 3);
        ghost.insert(1, 3); // newer record for 1
        ghost.insert(3, 3); // pushes out the old record of 1, not its membership
        assert!(ghost.take(1));
        assert!(ghost.take(2));
        assert!(ghost.take(3));
    }
}
