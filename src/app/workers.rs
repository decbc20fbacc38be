//! The binary's worker threads: one OS thread per worker, each driving its own
//! single-threaded runtime, which the server is given to serve that worker's UDP sockets
//! and misses on (DESIGN.md §2: a cache hit never wakes another thread).

use anyhow::Context;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Running worker threads; dropping this stops their runtimes and joins them.
pub(super) struct Workers {
    stop: CancellationToken,
    runtimes: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    pub fn start(count: usize) -> anyhow::Result<Workers> {
        let mut workers = Workers {
            stop: CancellationToken::new(),
            runtimes: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..count {
            let rt = current_thread_runtime()?;
            workers.runtimes.push(rt.handle().clone());
            let stop = workers.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("nodedns-w{index}"))
                .spawn(move || rt.block_on(stop.cancelled()))
                .context("starting a worker thread")?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// The workers' runtimes, by worker.
    pub fn runtimes(&self) -> Vec<Handle> {
        self.runtimes.clone()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub(super) fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")
}
