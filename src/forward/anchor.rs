//! A timer kept due soon on every runtime that forwards, so a miss's timer costs no syscall.
//!
//! Tokio's timer wakes the I/O driver (an `eventfd` write, and then an extra `epoll_wait`
//! that returns at once) whenever a timer is registered earlier than the deadline the driver
//! last planned to sleep until, even on a current-thread runtime that is busy running tasks
//! and so cannot be asleep (tokio-rs/tokio#5207). On an otherwise idle worker that plan is
//! "no timer at all", so every miss's attempt timer paid two system calls: a third of what
//! the miss itself needs.
//!
//! While misses are being forwarded, this module keeps one sleeping task per runtime whose
//! timer is never more than [`TICK`] away. The driver then always plans to wake within
//! [`TICK`], and an attempt timer (at least `min_attempt_timeout`, 50 ms by default, ahead)
//! is never earlier than that plan. After [`IDLE_TICKS`] ticks without a miss the task ends,
//! so an idle daemon is not woken.

use std::cell::Cell;
use std::time::Duration;

use tokio::runtime::{Handle, Id};

/// How far ahead the anchor's timer is at most. Shorter than any sensible attempt timeout;
/// long enough that the wake-ups it costs (40 a second while busy) do not count.
pub const TICK: Duration = Duration::from_millis(25);
/// Quiet ticks after which the anchor stops (one second).
const IDLE_TICKS: u32 = 40;

thread_local! {
    /// Flights started on this thread since the anchor last looked.
    static FLIGHTS: Cell<u32> = const { Cell::new(0) };
    /// The runtime whose anchor serves this thread, while one runs.
    static ANCHORED: Cell<Option<Id>> = const { Cell::new(None) };
}

/// Notes a flight on the current runtime and starts its anchor if none runs.
pub fn note_flight() {
    FLIGHTS.with(|f| f.set(f.get().wrapping_add(1)));
    let Ok(handle) = Handle::try_current() else {
        return;
    };
    let id = handle.id();
    if ANCHORED.get() != Some(id) {
        ANCHORED.set(Some(id));
        // Not tracked: it holds no work, and ends after a quiet second or with its runtime.
        handle.spawn(anchor(id));
    }
}

/// Whether the current thread has an anchor running for the current runtime.
#[cfg(test)]
fn is_anchored() -> bool {
    Handle::try_current().is_ok_and(|h| ANCHORED.get() == Some(h.id()))
}

async fn anchor(id: Id) {
    // Cleared however the task ends, the runtime's shutdown included, so a later runtime on
    // this thread (tests make one per test) starts its own.
    let _clear = Clear(id);
    let mut quiet = 0;
    while quiet < IDLE_TICKS {
        tokio::time::sleep(TICK).await;
        quiet = if FLIGHTS.replace(0) == 0 {
            quiet + 1
        } else {
            0
        };
    }
}

struct Clear(Id);

impl Drop for Clear {
    fn drop(&mut self) {
        // Thread locals may already be gone when a runtime is dropped at thread exit.
        let _ = ANCHORED.try_with(|a| {
            if a.get() == Some(self.0) {
                a.set(None);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_while_flights_come_and_stops_after_a_quiet_second() {
        assert!(!is_anchored());
        note_flight();
        assert!(is_anchored());
        for _ in 0..100 {
            tokio::time::sleep(TICK).await;
            note_flight();
        }
        assert!(is_anchored(), "busy: still running");
        tokio::time::sleep(TICK * (IDLE_TICKS + 2)).await;
        assert!(!is_anchored(), "a quiet second stops it");
        note_flight();
        assert!(is_anchored(), "the next flight starts it again");
    }
}
