//! Space-saving heavy-hitter sketches (Metwally, Agrawal and El Abbadi, 2005): the keys seen
//! most often in a stream, in a fixed number of counters whatever the stream holds, so a
//! flood of spoofed sources or random names cannot grow them.
//!
//! This module owns the sketch, its merge and its time windows. It does not decide what is
//! counted or how often (the callers do), and it takes no lock: each worker keeps its own,
//! and a reader merges copies.
//!
//! How good the figures are: with `capacity` counters, every key whose true count exceeds
//! `total / capacity` is in the sketch, and each reported count is an upper bound that
//! overstates the true one by at most its `error` (so `count - error` is a lower bound).

use std::borrow::Borrow;
use std::hash::Hash;

use hashbrown::HashMap;

/// One key's estimate: the true count lies in `[count - error, count]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted<K> {
    pub key: K,
    pub count: u64,
    pub error: u64,
}

/// A space-saving sketch of at most `capacity` counters.
///
/// The counters form a binary min-heap on `count`, with an index from key to heap position:
/// an increment or a replacement of the smallest costs `O(log capacity)`, and a key not yet
/// counted takes the place of the smallest counter, inheriting its count as its error.
#[derive(Debug, Clone)]
pub struct SpaceSaving<K> {
    capacity: usize,
    heap: Vec<Counted<K>>,
    index: HashMap<K, usize, foldhash::fast::FixedState>,
}

impl<K: Hash + Eq + Clone> SpaceSaving<K> {
    /// A sketch of `capacity` counters (at least one).
    pub fn new(capacity: usize) -> SpaceSaving<K> {
        let capacity = capacity.max(1);
        SpaceSaving {
            capacity,
            heap: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(
                capacity,
                foldhash::fast::FixedState::default(),
            ),
        }
    }

    /// Counts `weight` more for `key`. The key is cloned only when it takes a counter.
    pub fn add<Q>(&mut self, key: &Q, weight: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<K>,
    {
        self.add_with_error(key, weight, 0);
    }

    fn add_with_error<Q>(&mut self, key: &Q, weight: u64, error: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<K>,
    {
        if let Some(&at) = self.index.get(key) {
            if let Some(slot) = self.heap.get_mut(at) {
                slot.count = slot.count.saturating_add(weight);
                slot.error = slot.error.saturating_add(error);
            }
            self.sift_down(at);
            return;
        }
        let owned: K = key.to_owned().into();
        if self.heap.len() < self.capacity {
            let at = self.heap.len();
            self.index.insert(owned.clone(), at);
            self.heap.push(Counted {
                key: owned,
                count: weight,
                error,
            });
            self.sift_up(at);
            return;
        }
        // Full: the smallest counter is given to the new key, which may have been counted
        // there before it was pushed out (its error).
        let Some(min) = self.heap.first_mut() else {
            return;
        };
        let floor = min.count;
        let old = std::mem::replace(&mut min.key, owned.clone());
        min.count = floor.saturating_add(weight);
        min.error = floor.saturating_add(error);
        self.index.remove(&old);
        self.index.insert(owned, 0);
        self.sift_down(0);
    }

    /// The `n` largest estimates, largest first (ties in no particular order).
    pub fn top(&self, n: usize) -> Vec<Counted<K>> {
        let mut all = self.heap.clone();
        all.sort_unstable_by_key(|c| std::cmp::Reverse(c.count));
        all.truncate(n);
        all
    }

    /// The estimate of `key`, if it holds a counter.
    pub fn get<Q>(&self, key: &Q) -> Option<&Counted<K>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.get(key).and_then(|&at| self.heap.get(at))
    }

    /// Adds `other`'s counters into this sketch, as if this one had seen both streams (the
    /// mergeable form of Agarwal et al., 2012). A key that one side does not hold may have
    /// been counted there up to that side's smallest counter, when that side is full: that
    /// much is added to its count and its error, so the estimate stays an upper bound.
    pub fn merge(&mut self, other: &SpaceSaving<K>) {
        let own_floor = self.floor();
        let other_floor = other.floor();
        let mut merged: Vec<Counted<K>> = Vec::with_capacity(self.heap.len() + other.heap.len());
        for mine in &self.heap {
            let (count, error) = match other.get(&mine.key) {
                Some(theirs) => (theirs.count, theirs.error),
                None => (other_floor, other_floor),
            };
            merged.push(Counted {
                key: mine.key.clone(),
                count: mine.count.saturating_add(count),
                error: mine.error.saturating_add(error),
            });
        }
        for theirs in other.heap.iter().filter(|t| self.get(&t.key).is_none()) {
            merged.push(Counted {
                key: theirs.key.clone(),
                count: theirs.count.saturating_add(own_floor),
                error: theirs.error.saturating_add(own_floor),
            });
        }
        merged.sort_unstable_by_key(|c| std::cmp::Reverse(c.count));
        merged.truncate(self.capacity);
        self.heap.clear();
        self.index.clear();
        for c in merged {
            self.add_with_error(&c.key, c.count, c.error);
        }
    }

    /// The count a key not in the sketch may have had: the smallest counter once all are
    /// taken, else 0 (every key seen holds a counter).
    fn floor(&self) -> u64 {
        if self.heap.len() < self.capacity {
            0
        } else {
            self.heap.first().map_or(0, |c| c.count)
        }
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.index.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        for at in [a, b] {
            if let Some(c) = self.heap.get(at)
                && let Some(slot) = self.index.get_mut(&c.key)
            {
                *slot = at;
            }
        }
    }

    fn count_at(&self, at: usize) -> u64 {
        self.heap.get(at).map_or(u64::MAX, |c| c.count)
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.count_at(parent) <= self.count_at(at) {
                break;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if self.count_at(left) < self.count_at(least) {
                least = left;
            }
            if self.count_at(right) < self.count_at(least) {
                least = right;
            }
            if least == at {
                return;
            }
            self.swap(at, least);
            at = least;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A stream with a few heavy keys among many light ones, in a scrambled order.
    fn stream() -> Vec<u32> {
        let mut keys = Vec::new();
        for (key, times) in [(1u32, 500), (2, 300), (3, 200)] {
            keys.extend(std::iter::repeat_n(key, times));
        }
        keys.extend(1000..3000u32);
        // A fixed shuffle: multiply by a unit modulo the length.
        let n = keys.len();
        (0..n).map(|i| keys[(i * 7919) % n]).collect()
    }

    #[test]
    fn heavy_keys_are_found_with_bounded_error() {
        let mut s: SpaceSaving<u32> = SpaceSaving::new(64);
        let keys = stream();
        for k in &keys {
            s.add(k, 1);
        }
        let top: Vec<u32> = s.top(3).iter().map(|c| c.key).collect();
        assert_eq!(top, vec![1, 2, 3]);
        let total = keys.len() as u64;
        for (key, truth) in [(1u32, 500u64), (2, 300), (3, 200)] {
            let c = s.get(&key).unwrap();
            assert!(c.count >= truth && c.count - c.error <= truth, "{c:?}");
            assert!(c.error <= total / 64, "{c:?}");
        }
    }

    #[test]
    fn space_stays_fixed_under_a_flood_of_new_keys() {
        let mut s: SpaceSaving<u32> = SpaceSaving::new(16);
        for k in 0..100_000u32 {
            s.add(&k, 1);
        }
        assert_eq!(s.top(usize::MAX).len(), 16);
        assert_eq!(s.index.len(), 16);
        // The index points at each key's own counter.
        for (at, c) in s.heap.iter().enumerate() {
            assert_eq!(s.index.get(&c.key), Some(&at));
        }
    }

    #[test]
    fn merged_sketches_rank_like_one_that_saw_everything() {
        let keys = stream();
        let (a_half, b_half) = keys.split_at(keys.len() / 2);
        let mut a: SpaceSaving<u32> = SpaceSaving::new(64);
        let mut b: SpaceSaving<u32> = SpaceSaving::new(64);
        for k in a_half {
            a.add(k, 1);
        }
        for k in b_half {
            b.add(k, 1);
        }
        a.merge(&b);
        let top: Vec<u32> = a.top(3).iter().map(|c| c.key).collect();
        assert_eq!(top, vec![1, 2, 3]);
        for (key, truth) in [(1u32, 500u64), (2, 300), (3, 200)] {
            let c = a.get(&key).unwrap();
            assert!(c.count >= truth && c.count - c.error <= truth, "{c:?}");
        }
    }

    #[test]
    fn borrowed_keys_are_cloned_only_to_take_a_counter() {
        let mut s: SpaceSaving<Box<[u8]>> = SpaceSaving::new(2);
        s.add(&b"a"[..], 3);
        s.add(&b"a"[..], 1);
        s.add(&b"b"[..], 1);
        s.add(&b"c"[..], 1);
        let top = s.top(2);
        assert_eq!(&*top[0].key, b"a");
        assert_eq!((top[0].count, top[0].error), (4, 0));
        // "c" took "b"'s counter: counted 2, of which 1 may have been "b"'s.
        assert_eq!(&*top[1].key, b"c");
        assert_eq!((top[1].count, top[1].error), (2, 1));
    }
}
