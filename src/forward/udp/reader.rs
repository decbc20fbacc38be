//! The reader task of one lane: hands each reply to the query it answers and times out the
//! lane's inline queries, under one timer.

use std::cell::RefCell;
use std::pin::pin;
use std::sync::Arc;

use tokio::time::{Instant, sleep_until};

use crate::stats::Stats;
use crate::sys::RecvBatch;

use super::BATCHES_PER_WAKE;
use super::lane::Lane;

thread_local! {
    /// Receive buffers shared by the readers of one thread: they are used only between two
    /// awaits, so one set per thread serves every lane on it.
    static REPLIES: RefCell<RecvBatch> = RefCell::new(RecvBatch::new());
}

/// Reads replies for `lane` until it is retired and idle, and times out its inline queries.
pub(super) async fn read(lane: Arc<Lane>, stats: Arc<Stats>) {
    // One timer for every inline query on this socket: armed at the oldest deadline, moved
    // only when that query is answered or timed out.
    let mut timer = pin!(sleep_until(Instant::now()));
    let mut armed: Option<Instant> = None;
    while !lane.finished() {
        let next = lane.next_timeout();
        if next != armed {
            if let Some(at) = next {
                timer.as_mut().reset(at);
            }
            armed = next;
        }
        tokio::select! {
            ready = lane.sock.readable() => {
                if let Err(e) = ready {
                    lane.fail_waiting(e.kind());
                    lane.retire();
                    continue;
                }
            }
            () = lane.idle.notified() => continue,
            () = timer.as_mut(), if armed.is_some() => {
                lane.expire(Instant::now());
                continue;
            }
        }
        for _ in 0..BATCHES_PER_WAKE {
            let read = REPLIES.with_borrow_mut(|batch| {
                let read = batch.read(&lane.sock);
                for (datagram, _) in batch.packets() {
                    if let Some(waiter) = lane.deliver(datagram, &stats) {
                        waiter.answered(datagram);
                    }
                }
                read
            });
            match read {
                Ok((_, true)) => {}
                Ok((_, false)) => break,
                Err(e) => {
                    lane.fail_waiting(e.kind());
                    break;
                }
            }
        }
    }
}
