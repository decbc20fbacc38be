//! The kernel floor for the load benchmark (`benches/load.sh`): a batched UDP echo.
//!
//! It serves one socket with the same I/O as nodedns's UDP loop (tokio readiness on a
//! single-threaded runtime, for reading only, `recvmmsg`/`sendmmsg` through
//! `nodedns::RecvBatch`, `nodedns::SendBatch`) and does no DNS work at all: each datagram goes back with the
//! QR bit set, so a DNS load generator counts it as an answer. Whatever nodedns costs beyond
//! this is its own.
//!
//! Usage: `udp_echo ADDR:PORT`; runs until killed.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use nodedns::{RecvBatch, SendBatch};

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5300".to_string())
        .parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sock = nodedns::bind_udp(addr)?;
        let mut rx = RecvBatch::new();
        let mut tx = SendBatch::new();
        loop {
            sock.readable().await?;
            loop {
                let (_, more) = rx.read(&sock)?;
                for (pkt, src) in rx.packets() {
                    let (Some(src), Some(out)) = (src, tx.next_buf()) else {
                        continue;
                    };
                    out.clear();
                    out.extend_from_slice(pkt);
                    if let Some(flags) = out.get_mut(2) {
                        *flags |= 0x80;
                    }
                    tx.commit(src);
                }
                while tx.pending() > 0 {
                    match tx.send(sock.socket().as_fd()) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => tx.skip_one(),
                    }
                }
                tx.clear();
                if !more {
                    break;
                }
            }
        }
    })
}
