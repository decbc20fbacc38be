//! Client TCP connections by client, so that one client cannot hold every slot.
//!
//! A client (a source address; an IPv6 /64, as for the miss limits) may hold
//! `tcp_max_connections_per_client` connections. When it opens one more, its oldest idle
//! connection (one with no query being answered) is told to close and the new one takes
//! its place: a client that leaks connections loses its own stale ones, and a client
//! that really uses them all is refused one more. Entries exist only for open
//! connections, so the table is bounded by `tcp_max_connections`, whatever the sources.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::limit;

/// The open client TCP connections of every listener, by client.
pub struct TcpClients {
    limit: AtomicUsize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    by_client: HashMap<u128, Vec<Conn>>,
    next_id: u64,
}

/// One open connection, as the table sees it.
struct Conn {
    id: u64,
    /// The connection's pipelining slots: all free means no query is being answered.
    pipelined: Arc<Semaphore>,
    slots: usize,
    close: CancellationToken,
}

impl Conn {
    fn is_idle(&self) -> bool {
        self.pipelined.available_permits() >= self.slots
    }
}

/// A connection's place in the table, given up when dropped. `close` fires when a newer
/// connection of the same client took the place.
pub struct Seat {
    clients: Arc<TcpClients>,
    key: u128,
    id: u64,
    pub close: CancellationToken,
}

/// What [`TcpClients::open`] did.
pub enum Opened {
    /// The connection may be served; `closed_idle` says whether an idle one of the same
    /// client was closed for it.
    Seated { seat: Seat, closed_idle: bool },
    /// The client holds its limit and none of its connections is idle.
    Refused,
}

impl TcpClients {
    pub fn new(limit: usize) -> Arc<TcpClients> {
        Arc::new(TcpClients {
            limit: AtomicUsize::new(limit),
            open: Mutex::new(Open::default()),
        })
    }

    /// Applies a reloaded limit to connections opened from now on.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Seats a new connection of `client`, whose pipelining slots are `pipelined` (`slots`
    /// of them), closing its oldest idle one if it holds its limit already.
    pub fn open(
        self: &Arc<Self>,
        client: IpAddr,
        pipelined: Arc<Semaphore>,
        slots: usize,
    ) -> Opened {
        let key = limit::key(client);
        let limit = self.limit.load(Ordering::Relaxed).max(1);
        let mut open = self.open.lock();
        let id = open.next_id;
        let conns = open.by_client.entry(key).or_default();
        let mut closed_idle = false;
        if conns.len() >= limit {
            // In order of opening: the first idle one is the oldest.
            let Some(at) = conns.iter().position(Conn::is_idle) else {
                return Opened::Refused;
            };
            conns.remove(at).close.cancel();
            closed_idle = true;
        }
        let close = CancellationToken::new();
        conns.push(Conn {
            id,
            pipelined,
            slots,
            close: close.clone(),
        });
        open.next_id += 1;
        let seat = Seat {
            clients: Arc::clone(self),
            key,
            id,
            close,
        };
        Opened::Seated { seat, closed_idle }
    }

    /// Open connections of every client together.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().by_client.values().map(Vec::len).sum()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock();
        if let Some(conns) = open.by_client.get_mut(&self.key) {
            conns.retain(|c| c.id != self.id);
            if conns.is_empty() {
                open.by_client.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn seat(opened: Opened) -> (Seat, bool) {
        match opened {
            Opened::Seated { seat, closed_idle } => (seat, closed_idle),
            Opened::Refused => panic!("refused"),
        }
    }

    #[test]
    fn the_oldest_idle_connection_of_that_client_makes_room() {
        let clients = TcpClients::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let busy = Arc::new(Semaphore::new(1));
        let _query = busy.clone().try_acquire_owned().unwrap();
        let idle = Arc::new(Semaphore::new(1));
        let (first, _) = seat(clients.open(a, busy.clone(), 1));
        let (second, _) = seat(clients.open(a, idle.clone(), 1));
        let (third, closed) = seat(clients.open(a, idle.clone(), 1));
        // The first is answering a query: the second, idle, is the one closed.
        assert!(closed);
        assert!(!first.close.is_cancelled());
        assert!(second.close.is_cancelled());
        assert!(!third.close.is_cancelled());
        // Another client is not touched by any of it.
        let (other, closed) = seat(clients.open(b, idle.clone(), 1));
        assert!(!closed);
        drop(second);
        assert_eq!(clients.len(), 3);
        drop((first, third, other));
        assert_eq!(clients.len(), 0);
    }

    #[test]
    fn a_client_whose_connections_are_all_busy_is_refused_one_more() {
        let clients = TcpClients::new(1);
        let a: IpAddr = "fd00::1".parse().unwrap();
        let busy = Arc::new(Semaphore::new(1));
        let _query = busy.clone().try_acquire_owned().unwrap();
        let (_held, _) = seat(clients.open(a, busy.clone(), 1));
        // Another address of the same /64 is the same client.
        let same: IpAddr = "fd00::2".parse().unwrap();
        assert!(matches!(clients.open(same, busy, 1), Opened::Refused));
        assert_eq!(clients.len(), 1);
    }
}
