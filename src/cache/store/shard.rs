//! One shard of the store: the entries, their index, and S3-FIFO eviction.
//!
//! Entries live in a slab (`slots`) and are threaded on one of two intrusive FIFO lists:
//! `small` (probation, about 10% of the shard) and `main`. The hash table holds slab indices
//! only, so a lookup compares the caller's borrowed key with the stored one and needs no
//! owned key. Eviction follows S3-FIFO (Yang et al., SOSP 2023): a new key enters `small`;
//! leaving `small`, a key that was hit moves to `main` and one that was not is dropped and its
//! hash remembered in the ghost set; a key that returns while its hash is a ghost enters
//! `main` directly. `main` is a CLOCK: a hit key at its head is requeued with its counter
//! decremented. A scan of one-off keys therefore only churns `small`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use hashbrown::HashTable;

use super::Keyed;
use super::ghost::Ghost;

/// "No entry" in the intrusive lists.
const NIL: u32 = u32::MAX;
/// The hit counter saturates here (2 bits), so one hot burst buys at most 3 extra rounds.
const MAX_FREQ: u8 = 3;
/// `small` is kept to about 1/SMALL_DIVISOR of the shard, by entries and by bytes.
const SMALL_DIVISOR: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

/// 32 bytes: the slab holds one per entry, plus the slack of its doubling.
#[derive(Debug)]
pub(super) struct Node<V: ?Sized> {
    /// Holds its own key ([`Keyed`]).
    value: Arc<V>,
    hash: u64,
    /// What this entry is charged against the byte bound (value weight, overhead); an entry
    /// heavier than 4 GiB is refused.
    charge: u32,
    /// Hits since the entry was queued or last passed over by eviction.
    freq: AtomicU8,
    queue: Queue,
    prev: u32,
    next: u32,
}

#[derive(Debug)]
struct Fifo {
    head: u32,
    tail: u32,
    len: usize,
    bytes: usize,
}

impl Fifo {
    const EMPTY: Fifo = Fifo {
        head: NIL,
        tail: NIL,
        len: 0,
        bytes: 0,
    };
}

#[derive(Debug)]
pub(super) struct Shard<V: ?Sized> {
    table: HashTable<u32>,
    slots: Vec<Option<Node<V>>>,
    free: Vec<u32>,
    small: Fifo,
    main: Fifo,
    ghost: Ghost,
    max_entries: usize,
    max_bytes: usize,
    evictions: u64,
}

impl<V: Keyed + ?Sized> Shard<V> {
    pub(super) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Shard {
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            small: Fifo::EMPTY,
            main: Fifo::EMPTY,
            ghost: Ghost::default(),
            max_entries,
            max_bytes,
            evictions: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.small.len + self.main.len
    }

    pub(super) fn bytes(&self) -> usize {
        self.small.bytes + self.main.bytes
    }

    pub(super) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The hit path: shared access only, one relaxed atomic to count the hit.
    pub(super) fn get(&self, hash: u64, key: &[u8]) -> Option<Arc<V>> {
        self.get_with(hash, key, Arc::clone)
    }

    /// [`Shard::get`] that lends the value to `f` instead of cloning its `Arc`.
    pub(super) fn get_with<R>(
        &self,
        hash: u64,
        key: &[u8],
        f: impl FnOnce(&Arc<V>) -> R,
    ) -> Option<R> {
        let node = self.node(self.find(hash, key)?)?;
        let freq = node.freq.load(Ordering::Relaxed);
        if freq < MAX_FREQ {
            // A lost race between two readers loses one count; that is harmless, and skipping
            // the store once saturated keeps hot entries' cache lines clean.
            node.freq.store(freq + 1, Ordering::Relaxed);
        }
        Some(f(&node.value))
    }

    /// Inserts or replaces `key`; false when it cannot be stored (heavier than the shard).
    /// A replaced key keeps its queue and hit count: it is the same question, refreshed.
    pub(super) fn insert(&mut self, hash: u64, key: &[u8], value: Arc<V>, charge: usize) -> bool {
        let old = self.find(hash, key).and_then(|i| self.take(i));
        let Ok(charge) = u32::try_from(charge) else {
            return false;
        };
        if charge as usize > self.max_bytes || self.max_entries == 0 {
            return false;
        }
        let (queue, freq) = match &old {
            Some(node) => (node.queue, node.freq.load(Ordering::Relaxed)),
            None if self.ghost.take(hash) => (Queue::Main, 0),
            None => (Queue::Small, 0),
        };
        drop(old);
        while self.len() >= self.max_entries || self.bytes() + charge as usize > self.max_bytes {
            if !self.evict_one() {
                break;
            }
        }
        let node = Node {
            value,
            hash,
            charge,
            freq: AtomicU8::new(freq),
            queue,
            prev: NIL,
            next: NIL,
        };
        let Some(i) = self.alloc(node) else {
            return false;
        };
        let slots = &self.slots;
        self.table.insert_unique(hash, i, |&j| hash_of(slots, j));
        self.link_back(i, queue);
        true
    }

    /// Removes `key` if `pred` accepts its value.
    pub(super) fn remove_if(
        &mut self,
        hash: u64,
        key: &[u8],
        pred: impl FnOnce(&Arc<V>) -> bool,
    ) -> Option<Arc<V>> {
        let i = self.find(hash, key)?;
        if !pred(&self.node(i)?.value) {
            return None;
        }
        self.take(i).map(|node| node.value)
    }

    pub(super) fn set_limits(&mut self, max_entries: usize, max_bytes: usize) {
        self.max_entries = max_entries;
        self.max_bytes = max_bytes;
        while self.len() > max_entries || self.bytes() > max_bytes {
            if !self.evict_one() {
                break;
            }
        }
    }

    pub(super) fn for_each(&self, mut f: impl FnMut(&Arc<V>)) {
        for node in self.slots.iter().flatten() {
            f(&node.value);
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        // The full key is compared on every probe: equal hashes prove nothing.
        let found = self.table.find(hash, |&i| {
            slot(slots, i).is_some_and(|node| node.hash == hash && node.value.has_key(key))
        });
        found.copied()
    }

    /// Evicts one entry by S3-FIFO; false when the shard is empty.
    fn evict_one(&mut self) -> bool {
        loop {
            let small_over = self.small.len > self.max_entries / SMALL_DIVISOR
                || self.small.bytes > self.max_bytes / SMALL_DIVISOR;
            let from_small = self.small.len > 0 && (small_over || self.main.len == 0);
            let head = if from_small {
                self.small.head
            } else {
                self.main.head
            };
            let Some(node) = self.node_mut(head) else {
                return false;
            };
            let freq = node.freq.get_mut();
            if *freq > 0 {
                // Promotion out of probation starts the count afresh; in `main` each pass
                // over a hit entry spends one count (CLOCK).
                *freq = if from_small { 0 } else { *freq - 1 };
                self.unlink(head);
                self.link_back(head, Queue::Main);
                continue;
            }
            let ghost_cap = self.len();
            let Some(node) = self.take(head) else {
                return false;
            };
            if from_small {
                self.ghost.insert(node.hash, ghost_cap);
            }
            self.evictions += 1;
            return true;
        }
    }

    /// Unlinks entry `i` and frees its slot.
    fn take(&mut self, i: u32) -> Option<Node<V>> {
        let hash = self.node(i)?.hash;
        self.unlink(i);
        if let Ok(entry) = self.table.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        let node = self.slots.get_mut(i as usize)?.take()?;
        self.free.push(i);
        Some(node)
    }

    fn alloc(&mut self, node: Node<V>) -> Option<u32> {
        if let Some(i) = self.free.pop()
            && let Some(slot) = self.slots.get_mut(i as usize)
        {
            *slot = Some(node);
            return Some(i);
        }
        let i = u32::try_from(self.slots.len()).ok().filter(|&i| i != NIL)?;
        self.slots.push(Some(node));
        Some(i)
    }

    fn fifo(&mut self, queue: Queue) -> &mut Fifo {
        match queue {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
        }
    }

    fn link_back(&mut self, i: u32, queue: Queue) {
        let tail = self.fifo(queue).tail;
        let Some(node) = self.node_mut(i) else {
            return;
        };
        node.prev = tail;
        node.next = NIL;
        node.queue = queue;
        let charge = node.charge as usize;
        match self.node_mut(tail) {
            Some(prev) => prev.next = i,
            None => self.fifo(queue).head = i,
        }
        let fifo = self.fifo(queue);
        fifo.tail = i;
        fifo.len += 1;
        fifo.bytes += charge;
    }

    fn unlink(&mut self, i: u32) {
        let Some(node) = self.node(i) else {
            return;
        };
        let (prev, next, queue, charge) = (node.prev, node.next, node.queue, node.charge as usize);
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.fifo(queue).head = next,
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => self.fifo(queue).tail = prev,
        }
        let fifo = self.fifo(queue);
        fifo.len -= 1;
        fifo.bytes -= charge;
    }

    fn node(&self, i: u32) -> Option<&Node<V>> {
        slot(&self.slots, i)
    }

    fn node_mut(&mut self, i: u32) -> Option<&mut Node<V>> {
        self.slots.get_mut(i as usize).and_then(Option::as_mut)
    }
}

fn slot<V: ?Sized>(slots: &[Option<Node<V>>], i: u32) -> Option<&Node<V>> {
    slots.get(i as usize).and_then(Option::as_ref)
}

fn hash_of<V: ?Sized>(slots: &[Option<Node<V>>], i: u32) -> u64 {
    slot(slots, i).map_or(0, |node| node.hash)
}
