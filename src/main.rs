//! The `nodedns` binary: parse the command line and hand over to [`nodedns::main`].

/// A miss allocates a few dozen small, short-lived buffers across two threads' worth of
/// tasks; glibc's allocator spent about a sixth of a miss's CPU on them, mimalloc's
/// per-thread free lists a fraction of that. Its size classes also waste less per cached
/// entry than glibc's 16-byte-aligned chunks with headers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nodedns::main()
}
