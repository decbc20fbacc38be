//! In-flight coalescing: identical concurrent misses share one upstream query.
//!
//! CI pods ask for the same few names at the same instant (every job starts by resolving
//! the GitLab host and the registry). The first miss for a key becomes the *leader* and
//! starts the upstream query; later misses for the same key *follow* it and get the same
//! outcome. Waiters are capped per key and keys in flight are capped in total, so a flood of
//! distinct or identical misses cannot grow memory without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

struct Flight<T> {
    /// Made when the first waiter besides the leader arrives: most misses are asked by one
    /// client only, and they never pay for a channel.
    tx: Option<watch::Sender<Option<T>>>,
    /// The leader included.
    waiters: usize,
}

impl<T> Flight<T> {
    fn subscribe(&mut self) -> watch::Receiver<Option<T>> {
        self.tx
            .get_or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }
}

/// Keyed by the cache key; the key's allocation (shared with the leader's [`Completion`])
/// also tells this flight from a later one for the same key.
type FlightMap<T> = Mutex<hashbrown::HashMap<Arc<[u8]>, Flight<T>, foldhash::fast::RandomState>>;

/// The table of misses in flight, keyed by cache key.
pub struct Coalescer<T> {
    flights: Arc<FlightMap<T>>,
    /// Atomic so a config reload can change them in place.
    max_keys: AtomicUsize,
    max_waiters: AtomicUsize,
}

/// What [`Coalescer::join`] made of a miss.
pub enum Join<T> {
    /// First for this key: start the upstream query and [`Completion::complete`] it.
    Leader(Completion<T>),
    /// Another miss for this key is already in flight.
    Follower(Waiter<T>),
    /// Too many waiters on this key, or too many keys in flight.
    Overloaded,
}

/// Waits for a flight's outcome.
pub struct Waiter<T> {
    rx: watch::Receiver<Option<T>>,
}

/// The leader's duty: publish the outcome. Dropping it unpublished ends the flight with no
/// outcome (waiters see `None`), so a failed or cancelled leader never strands its followers.
pub struct Completion<T> {
    key: Arc<[u8]>,
    flights: Arc<FlightMap<T>>,
}

impl<T: Clone> Coalescer<T> {
    pub fn new(max_keys: usize, max_waiters: usize) -> Coalescer<T> {
        Coalescer {
            flights: Arc::default(),
            max_keys: AtomicUsize::new(max_keys),
            max_waiters: AtomicUsize::new(max_waiters),
        }
    }

    /// New caps (config reload); flights already over them finish as they are.
    pub fn set_limits(&self, max_keys: usize, max_waiters: usize) {
        self.max_keys.store(max_keys, Ordering::Relaxed);
        self.max_waiters.store(max_waiters, Ordering::Relaxed);
    }

    /// Joins the flight for `key`, starting one if there is none.
    pub fn join(&self, key: &[u8]) -> Join<T> {
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.get_mut(key) {
            if flight.waiters >= self.max_waiters.load(Ordering::Relaxed) {
                return Join::Overloaded;
            }
            flight.waiters += 1;
            return Join::Follower(Waiter {
                rx: flight.subscribe(),
            });
        }
        if flights.len() >= self.max_keys.load(Ordering::Relaxed) {
            return Join::Overloaded;
        }
        let key: Arc<[u8]> = key.into();
        let flight = Flight {
            tx: None,
            waiters: 1,
        };
        flights.insert(key.clone(), flight);
        Join::Leader(Completion {
            key,
            flights: self.flights.clone(),
        })
    }

    /// Keys in flight now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

impl<T> Completion<T> {
    /// The key this flight is for.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// A waiter for this flight's outcome, for a leader that does not await the flight
    /// itself.
    pub fn waiter(&self) -> Waiter<T> {
        let rx = match self.ours(&mut self.flights.lock()) {
            Some(flight) => flight.subscribe(),
            // Unreachable while `self` lives; a closed channel reads as "no outcome".
            None => watch::channel(None).1,
        };
        Waiter { rx }
    }

    /// Publishes the outcome to every waiter and ends the flight.
    pub fn complete(self, outcome: T) {
        // Removed first: a miss arriving after this must start a new flight (and will find
        // the cache filled), not join one that is over.
        if let Some(tx) = self.take() {
            tx.send_replace(Some(outcome));
        }
    }

    /// Removes this flight (not a later one for the same key) and returns its channel.
    fn take(&self) -> Option<watch::Sender<Option<T>>> {
        let mut flights = self.flights.lock();
        self.ours(&mut flights)?;
        flights.remove(&*self.key).and_then(|f| f.tx)
    }

    fn ours<'m>(
        &self,
        flights: &'m mut hashbrown::HashMap<Arc<[u8]>, Flight<T>, foldhash::fast::RandomState>,
    ) -> Option<&'m mut Flight<T>> {
        flights
            .get_key_value_mut(&*self.key)
            .filter(|(k, _)| Arc::ptr_eq(k, &self.key))
            .map(|(_, f)| f)
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        // After `complete` this finds nothing; otherwise it ends an abandoned flight, and
        // dropping its channel tells the waiters.
        drop(self.take());
    }
}

impl<T: Clone> Waiter<T> {
    /// The outcome, or `None` when the leader gave up without one.
    pub async fn wait(mut self) -> Option<T> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_outcome() {
        let c: Coalescer<u32> = Coalescer::new(10, 10);
        let Join::Leader(done) = c.join(b"k") else {
            panic!("first join must lead")
        };
        let w1 = done.waiter();
        let Join::Follower(w2) = c.join(b"k") else {
            panic!("second join must follow")
        };
        assert_eq!(c.in_flight(), 1);
        done.complete(7);
        assert_eq!(w1.wait().await, Some(7));
        assert_eq!(w2.wait().await, Some(7));
        assert_eq!(c.in_flight(), 0);
        assert!(matches!(c.join(b"k"), Join::Leader(..)));
    }

    #[tokio::test]
    async fn abandoned_flight_releases_waiters_and_key() {
        let c: Coalescer<u32> = Coalescer::new(10, 10);
        let Join::Leader(done) = c.join(b"k") else {
            panic!("first join must lead")
        };
        let w = done.waiter();
        drop(done);
        assert_eq!(w.wait().await, None);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn waiters_and_keys_are_capped() {
        let c: Coalescer<u32> = Coalescer::new(2, 3);
        let _a = c.join(b"a");
        let _b1 = c.join(b"a");
        let _b2 = c.join(b"a");
        assert!(
            matches!(c.join(b"a"), Join::Overloaded),
            "4th waiter on one key"
        );
        let _b = c.join(b"b");
        assert!(matches!(c.join(b"c"), Join::Overloaded), "3rd key");
    }
}
