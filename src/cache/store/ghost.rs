//! The S3-FIFO ghost set of one shard: hashes of keys recently evicted from the small queue.
//!
//! A key that comes back while its hash is still here skips probation and goes straight to the
//! main queue. Only hashes are kept (no keys, no values): a false positive merely admits one
//! key to the main queue early, which costs nothing in correctness.

use std::collections::VecDeque;

use hashbrown::HashTable;

/// A bounded FIFO set of 64-bit hashes.
///
/// `order` remembers insertion order for expiry; `members` answers membership. A hash taken out
/// of `members` by [`Ghost::take`] leaves a stale record in `order`, recognised later by its
/// sequence number, so neither operation has to search the queue.
#[derive(Debug, Default)]
pub(super) struct Ghost {
    /// `(hash, seq)` of each live member.
    members: HashTable<(u64, u64)>,
    /// `(hash, seq)` in insertion order, possibly with stale records.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
}

impl Ghost {
    /// Remembers `hash`, then forgets the oldest records until at most `cap` remain.
    pub(super) fn insert(&mut self, hash: u64, cap: usize) {
        if cap == 0 {
            self.clear();
            return;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        match self.members.find_mut(hash, |&(h, _)| h == hash) {
            Some(member) => member.1 = seq,
            None => {
                self.members.insert_unique(hash, (hash, seq), |&(h, _)| h);
            }
        }
        self.order.push_back((hash, seq));
        while self.order.len() > cap {
            let Some((old, old_seq)) = self.order.pop_front() else {
                break;
            };
            // Only the newest record of a hash owns its membership.
            if let Ok(member) = self
                .members
                .find_entry(old, |&(h, s)| h == old && s == old_seq)
            {
                member.remove();
            }
        }
    }

    /// Removes `hash` and says whether it was a member.
    pub(super) fn take(&mut self, hash: u64) -> bool {
        match self.members.find_entry(hash, |&(h, _)| h == hash) {
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
