//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` behind a safe interface, and the
//! UDP socket type they are driven on.
//!
//! This is the crate's only `unsafe` code. It owns the preallocated buffers of one socket
//! loop: [`RecvBatch`] holds [`BATCH`] receive buffers and their source addresses,
//! [`SendBatch`] holds up to [`BATCH`] replies and their destinations. Both calls are
//! non-blocking (`MSG_DONTWAIT`) so the caller can drive them from tokio's readiness
//! ([`UdpFd::readable`], then [`RecvBatch::read`] until the queue is empty).
//! It also holds [`effective_uid`], the one other libc call without a safe std form, which
//! the cache snapshot uses to refuse files another user could have written.
//!
//! [`UdpFd`] is a UDP socket registered with tokio for readability only. Tokio's own
//! `UdpSocket` also asks epoll for writability, and a UDP socket turns writable again each
//! time a datagram it sent is freed: on loopback and on a node, once per reply, so a worker
//! idle in `epoll_wait` was woken for nothing after most of its sends (about a tenth of
//! the floor's CPU at 50k queries a second). Sends never wait for room: a full send buffer
//! is retried after a short pause, then the datagram is dropped and counted.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use libc::{c_int, c_uint, iovec, mmsghdr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

/// Datagrams moved per system call.
pub const BATCH: usize = 32;
/// Largest datagram read; anything longer is cut by the kernel (and then fails parsing).
pub const DATAGRAM: usize = 4096;

const STORAGE_LEN: socklen_t = size_of::<sockaddr_storage>() as socklen_t;
/// The flags of both batch calls. glibc declares them `c_int` and musl `c_uint`: the cast
/// lets the one constant fit either, so the static musl build of the image compiles.
#[allow(clippy::unnecessary_cast)]
const MMSG_FLAGS: MmsgFlags = libc::MSG_DONTWAIT as MmsgFlags;
#[cfg(target_env = "musl")]
type MmsgFlags = c_uint;
#[cfg(not(target_env = "musl"))]
type MmsgFlags = c_int;

fn zeroed_storage() -> sockaddr_storage {
    // SAFETY: `sockaddr_storage` is plain old data (integers and byte arrays); all-zero is a
    // valid value (family AF_UNSPEC).
    unsafe { zeroed() }
}

/// The process's effective user ID: who owns the files it creates, and so whom a file it
/// reads back (the cache snapshot) must belong to.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Clock ticks per second (`_SC_CLK_TCK`): the unit of the CPU times in `/proc/self/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf(3) reads a constant of the C library; it takes no pointer.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // -1 (unknown) cannot happen on Linux; 100 is what every Linux ABI reports.
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// A non-blocking UDP socket whose readiness for reading (only) tokio watches.
#[derive(Debug)]
pub struct UdpFd(AsyncFd<std::net::UdpSocket>);

impl UdpFd {
    /// Registers `sock` (made non-blocking) with the current runtime's reactor.
    pub fn new(sock: std::net::UdpSocket) -> io::Result<UdpFd> {
        sock.set_nonblocking(true)?;
        // SAFETY: `std::net::UdpSocket` owns its descriptor: it stays open, and is the one
        // `as_raw_fd` returns, until the socket is dropped, which only happens when the
        // `AsyncFd` holding it (and with it the registration) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) };
        fd.map(UdpFd).map_err(|e| e.into_parts().1)
    }

    /// Waits until a datagram may be queued; [`RecvBatch::read`] then finds out.
    pub async fn readable(&self) -> io::Result<()> {
        // Dropping the guard keeps the readiness: the read that finds the queue empty clears
        // it.
        self.0.readable().await.map(drop)
    }

    /// The socket, for sends and for its address.
    pub fn socket(&self) -> &std::net::UdpSocket {
        self.0.get_ref()
    }
}

/// `BATCH` zeroed headers and iovecs, on the heap so that pointers to them stay valid
/// while the batch that owns them moves.
fn zeroed_headers() -> (Box<[iovec]>, Box<[mmsghdr]>) {
    // SAFETY: `iovec` and `mmsghdr` are plain C structs of integers and raw pointers; all-zero
    // (null pointers, zero lengths) is a valid value. Every entry handed to the kernel is
    // filled in before the call.
    let (iov, hdr): (iovec, mmsghdr) = unsafe { (zeroed(), zeroed()) };
    (vec![iov; BATCH].into(), vec![hdr; BATCH].into())
}

/// Points each header at its iovec and its socket address (one of each per header).
fn link_headers(hdrs: &mut [mmsghdr], iovs: &mut [iovec], addrs: &mut [sockaddr_storage]) {
    for ((hdr, iov), addr) in hdrs.iter_mut().zip(iovs.iter_mut()).zip(addrs.iter_mut()) {
        hdr.msg_hdr.msg_name = (addr as *mut sockaddr_storage).cast();
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
}

/// Receive side: [`BATCH`] buffers of [`DATAGRAM`] bytes, allocated once, and the headers
/// that describe them to the kernel, built once: a call only resets the address lengths.
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM]]>,
    addrs: Box<[sockaddr_storage]>,
    /// Each points at its buffer of `bufs`.
    iovs: Box<[iovec]>,
    /// Each points at its iovec and its address of `addrs`.
    hdrs: Box<[mmsghdr]>,
    count: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point only into heap blocks this batch owns
// (`bufs`, `addrs`, `iovs`), which do not move when the batch does and are freed with it; a
// batch used from another thread takes them along, and `&mut self` on every use keeps it to
// one thread at a time.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        let (iovs, hdrs) = zeroed_headers();
        let mut batch = RecvBatch {
            bufs: vec![[0u8; DATAGRAM]; BATCH].into_boxed_slice(),
            addrs: vec![zeroed_storage(); BATCH].into_boxed_slice(),
            iovs,
            hdrs,
            count: 0,
        };
        for (iov, buf) in batch.iovs.iter_mut().zip(batch.bufs.iter_mut()) {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = DATAGRAM;
        }
        link_headers(&mut batch.hdrs, &mut batch.iovs, &mut batch.addrs);
        batch
    }

    /// Reads up to [`BATCH`] datagrams without blocking; `WouldBlock` when none is queued.
    /// Returns how many were read; they are then available from [`RecvBatch::packets`].
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.count = 0;
        for hdr in self.hdrs.iter_mut() {
            // In: the room for the source address; out: its length.
            hdr.msg_hdr.msg_namelen = STORAGE_LEN;
        }
        // SAFETY: each header points at one iovec and one sockaddr_storage owned by `self`
        // (borrowed mutably for the call), with their true lengths; each iovec covers one
        // whole buffer of `self.bufs`. The kernel writes only within those lengths, and into
        // the headers' length fields. `fd` is an open socket for the duration of the borrow.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as c_uint,
                MMSG_FLAGS,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        self.count = n.min(BATCH);
        Ok(self.count)
    }

    /// Reads a batch from a socket driven by tokio: `(datagrams read, more may be queued)`.
    ///
    /// A short batch means the kernel's queue was empty when it looked, so the socket's
    /// readiness is cleared in the same step and the next wake-up needs no empty read to
    /// find that out: one system call per wake-up instead of two when queries arrive one at
    /// a time. Tokio clears readiness only if no new datagram was signalled since it was
    /// observed, so none is missed. The datagrams are in [`RecvBatch::packets`] either way.
    pub fn read(&mut self, sock: &UdpFd) -> io::Result<(usize, bool)> {
        let mut got = 0;
        let read = sock.0.try_io(Interest::READABLE, |s| {
            got = self.recv(s.as_fd())?;
            if got < BATCH {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match read {
            Ok(()) => Ok((got, true)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((got, false)),
            Err(e) => Err(e),
        }
    }

    /// The datagrams of the last [`RecvBatch::recv`], with their source (`None` for a source
    /// that is neither IPv4 nor IPv6, which cannot be answered).
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        (0..self.count).map(|i| {
            let hdr = &self.hdrs[i];
            let len = (hdr.msg_len as usize).min(DATAGRAM);
            let pkt = self.bufs[i].get(..len).unwrap_or_default();
            (pkt, from_storage(&self.addrs[i], hdr.msg_hdr.msg_namelen))
        })
    }
}

/// Send side: up to [`BATCH`] replies, each in a buffer reused from batch to batch, and
/// headers built once that already point at the destinations.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    dsts: Box<[sockaddr_storage]>,
    /// Each points at its destination of `dsts`; the iovec is filled in per call, as a
    /// reply buffer may have grown (and moved) since the last one.
    iovs: Box<[iovec]>,
    /// Each points at its iovec and its destination.
    hdrs: Box<[mmsghdr]>,
    /// Replies queued.
    len: usize,
    /// Of those, already handed to the kernel (or skipped).
    done: usize,
}

// SAFETY: as for `RecvBatch`: the pointers in `iovs` and `hdrs` point only into heap blocks
// this batch owns, which move with it and not within it.
unsafe impl Send for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

impl SendBatch {
    pub fn new() -> SendBatch {
        let (iovs, hdrs) = zeroed_headers();
        let mut batch = SendBatch {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(DATAGRAM)).collect(),
            dsts: vec![zeroed_storage(); BATCH].into_boxed_slice(),
            iovs,
            hdrs,
            len: 0,
            done: 0,
        };
        link_headers(&mut batch.hdrs, &mut batch.iovs, &mut batch.dsts);
        batch
    }

    /// The buffer for the next reply, `None` when the batch is full. It is queued only by
    /// [`SendBatch::commit`]; otherwise the next call hands it out again.
    pub fn next_buf(&mut self) -> Option<&mut Vec<u8>> {
        self.bufs.get_mut(self.len)
    }

    /// Queues the buffer last returned by [`SendBatch::next_buf`] for `dst`.
    pub fn commit(&mut self, dst: SocketAddr) {
        if self.len < BATCH {
            let len = to_storage(dst, &mut self.dsts[self.len]);
            self.hdrs[self.len].msg_hdr.msg_namelen = len;
            self.len += 1;
        }
    }

    /// Replies queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.len - self.done
    }

    /// Gives up on the first pending reply (it failed for its own reason).
    pub fn skip_one(&mut self) {
        self.done = (self.done + 1).min(self.len);
    }

    /// Forgets every reply, sent or not, for the next batch.
    pub fn clear(&mut self) {
        self.len = 0;
        self.done = 0;
    }

    /// Sends the pending replies without blocking; returns how many the kernel took.
    /// An error concerns the first pending reply: `WouldBlock` (buffer full) or its own.
    pub fn send(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let pending = self.pending();
        if pending == 0 {
            return Ok(0);
        }
        let range = self.done..self.len;
        for (iov, buf) in self.iovs[range.clone()].iter_mut().zip(&self.bufs[range]) {
            iov.iov_base = buf.as_ptr().cast_mut().cast();
            iov.iov_len = buf.len();
        }
        // SAFETY: the `pending` headers from `done` each point at their iovec, just pointed at
        // an initialised reply buffer of `self.bufs` with its length, and at a destination
        // written by `to_storage` with its length; all are owned by `self`, borrowed mutably
        // for the call. The kernel only reads them (`iov_base` is cast to `*mut` because the
        // C struct has no const variant) and writes the headers' `msg_len`. `fd` is an open
        // socket for the duration of the borrow.
        let n = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.hdrs[self.done..].as_mut_ptr(),
                pending as c_uint,
                MMSG_FLAGS,
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        self.done = (self.done + n).min(self.len);
        Ok(n)
    }
}

/// Writes `addr` as a C socket address; returns its length.
fn to_storage(addr: SocketAddr, out: &mut sockaddr_storage) -> socklen_t {
    *out = zeroed_storage();
    let ptr: *mut sockaddr_storage = out;
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: `sockaddr_storage` is at least as large and as aligned as any socket
            // address type (its purpose), and `out` is exclusively borrowed.
            let sin = unsafe { &mut *ptr.cast::<sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<sockaddr_in>() as socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &mut *ptr.cast::<sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<sockaddr_in6>() as socklen_t
        }
    }
}

/// Reads a socket address the kernel wrote; `None` for other families or short lengths.
fn from_storage(ss: &sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    let ptr: *const sockaddr_storage = ss;
    match c_int::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a `sockaddr_in` of full length, and
            // `sockaddr_storage` is large and aligned enough to hold one.
            let sin = unsafe { &*ptr.cast::<sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &*ptr.cast::<sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
