//! An upstream response through `wire::normalize_response`, the one parse every upstream
//! answer gets before it is cached or served.
//!
//! Invariants: nothing panics; when it accepts, the normalised message is at most 65535
//! bytes, its TTL table points at TTL fields inside it, and normalising it again gives the
//! same bytes and analysis (a stored response is already in normal form).
//!
//! The stricter upstream-response validator is to be called here too once it lands, before
//! `normalize_response` as the forwarder will call it, with its own invariant: a response it
//! accepts is one `normalize_response` accepts. Then, and not before, add hickory-proto as
//! the oracle here and in the `reply` target: today a compression pointer may aim into bytes
//! that normalising or serving rewrites (the header, a TTL, the OPT, records that are
//! dropped), so hickory can decode an input and not what is made of it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodedns::wire::{self, HEADER_LEN};

fuzz_target!(|resp: &[u8]| {
    let mut stored = Vec::new();
    let Ok((analysis, layout)) = wire::normalize_response(resp, &mut stored) else {
        return;
    };
    let message = layout.message(&stored);
    assert!(
        message.len() <= usize::from(u16::MAX),
        "a message fits 16 bits"
    );
    assert!(message.len() >= HEADER_LEN);
    assert!(layout.question_end() <= message.len());
    if let Some(opt) = layout.opt_offset() {
        assert!(opt >= layout.question_end() && opt + 11 <= message.len());
    }
    for at in layout.ttl_offsets(&stored) {
        assert!(
            at >= layout.question_end() && at + 4 <= message.len(),
            "TTL at {at}"
        );
    }

    let mut again = Vec::new();
    let (analysis2, layout2) = match wire::normalize_response(message, &mut again) {
        Ok(r) => r,
        Err(e) => panic!("a normalised message does not normalise again: {e}"),
    };
    // What the first pass dropped (records off the question's chain) is gone: the second
    // drops nothing and finds the rest the same.
    assert_eq!(
        analysis2.dropped, 0,
        "a normalised message has nothing to drop"
    );
    let analysis = wire::Analysis {
        dropped: 0,
        ..analysis
    };
    assert_eq!(analysis2, analysis);
    assert_eq!(layout2, layout);
    assert_eq!(again, stored, "normalising is idempotent");
});
