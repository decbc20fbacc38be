//! Shared support for the loopback integration tests: a scriptable fake upstream DNS server
//! (`fake_upstream`), a small DNS client (`client`), nodedns run in-process (`nodedns`) and an admin endpoint scraper (`scrape`).
//! Every socket here binds and talks to loopback only.
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code, clippy::unwrap_used)]

pub mod client;
pub mod daemon;
pub mod fake_upstream;
pub mod nodedns;
pub mod scrape;

/// Makes a FIFO at `path`: a file that blocks whoever opens it for reading until a writer
/// comes, for the tests that show nodedns never waits on one.
pub fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}
