//! In-flight coalescing: identical concurrent misses share one upstream query.
//!
//! CI pods ask for the same few names at the same instant (every job starts by resolving
//! the GitLab host and the registry). The first miss for a key becomes the *leader* and
//! starts the upstream query; later misses for the same key *follow* it and get the same
//! outcome. Waiters are capped per key and keys in flight are capped in total, so a flood of
//! distinct or identical misses cannot grow memory without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

struct Flight<T> {
    rx: watch::Receiver<Option<T>>,
    waiters: AtomicUsize,
}

type FlightMap<T> = Mutex<HashMap<Box<[u8]>, Arc<Flight<T>>>>;

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
    Leader(Completion<T>, Waiter<T>),
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
    key: Box<[u8]>,
    tx: watch::Sender<Option<T>>,
    flights: Arc<FlightMap<T>>,
}

impl<T: Clone> Coalescer<T> {
    pub fn new(max_keys: usize, max_waiters: usize) -> Coalescer<T> {
        Coalescer {
            flights: Arc::new(Mutex::new(HashMap::new())),
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
        if let Some(flight) = flights.get(key) {
            if flight.waiters.fetch_add(1, Ordering::Relaxed)
                >= self.max_waiters.load(Ordering::Relaxed)
            {
                flight.waiters.fetch_sub(1, Ordering::Relaxed);
                return Join::Overloaded;
            }
            return Join::Follower(Waiter {
                rx: flight.rx.clone(),
            });
        }
        if flights.len() >= self.max_keys.load(Ordering::Relaxed) {
            return Join::Overloaded;
        }
        let (tx, rx) = watch::channel(None);
        let key: Box<[u8]> = key.into();
        flights.insert(
            key.clone(),
            Arc::new(Flight {
                rx: rx.clone(),
                waiters: AtomicUsize::new(1),
            }),
        );
        let completion = Completion {
            key,
            tx,
            flights: self.flights.clone(),
        };
        Join::Leader(completion, Waiter { rx })
    }

    /// Keys in flight now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

impl<T> Completion<T> {
    /// Publishes the outcome to every waiter and ends the flight.
    pub fn complete(self, outcome: T) {
        // Remove first: a miss arriving after this must start a new flight (and will find
        // the cache filled), not join one that is over.
        self.flights.lock().remove(&self.key);
        self.tx.send_replace(Some(outcome));
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        // After `complete` this finds nothing; otherwise it ends an abandoned flight.
        let mut flights = self.flights.lock();
        if flights
            .get(&self.key)
            .is_some_and(|f| f.rx.same_channel(&self.tx.subscribe()))
        {
            flights.remove(&self.key);
        }
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
        let Join::Leader(done, w1) = c.join(b"k") else {
            panic!("first join must lead")
        };
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
        let Join::Leader(done, w) = c.join(b"k") else {
            panic!("first join must lead")
        };
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
