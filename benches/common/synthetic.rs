//! The synthetic traffic the micro-benchmarks and `examples/cache_mem` share: queries for
//! `h<6 digits>.bench. A IN` with EDNS, as a stub resolver sends them (the load benchmark's
//! names), and a visiting order that defeats the CPU cache the way real traffic does.

/// Question bytes of name `i`: `h<6 digits>.bench.`, type A, class IN.
pub fn question(i: usize) -> Vec<u8> {
    let mut q = vec![7u8];
    q.extend_from_slice(format!("h{:06}", i % 1_000_000).as_bytes());
    q.push(5);
    q.extend_from_slice(b"bench");
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// An OPT record: root name, type 41, UDP size 1232, no extended flags, no options.
pub const OPT: [u8; 11] = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];

/// A recursive query for name `i` with EDNS (what a client sends, and what nodedns sends
/// upstream).
pub fn query(i: usize) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(&question(i));
    q.extend_from_slice(&OPT);
    q
}

/// Indices `0..n` in a strided order that visits every one (the stride is coprime with any
/// `n` made of 2s and 5s), so consecutive lookups touch unrelated memory.
pub struct Strided {
    i: usize,
    stride: usize,
    n: usize,
}

impl Strided {
    pub fn new(n: usize) -> Strided {
        Strided {
            i: 0,
            stride: 7_919 % n.max(1),
            n: n.max(1),
        }
    }

    pub fn next_index(&mut self) -> usize {
        self.i += self.stride;
        if self.i >= self.n {
            self.i -= self.n;
        }
        self.i
    }
}
