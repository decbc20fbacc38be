//! An upstream response through `wire::normalize_response`, the one parse every upstream
//! answer gets before it is cached or served.
//!
//! Invariants: nothing panics; when it accepts, the normalised message is at most 65535
//! bytes, its TTL table points at TTL fields inside it, and normalising it again gives the
//! same bytes and analysis (a stored response is already in normal form).
//!
//! hickory-proto is the oracle: where it decodes the upstream's bytes as an answer the
//! forwarder would accept (QR set, opcode QUERY), it decodes the normalised message too. The
//! other way round is no finding: hickory refuses some RDATA contents that nodedns passes
//! through unread, such as a CAA tag with a hyphen.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodedns::wire::{self, HEADER_LEN};
use nodedns_fuzz::{hickory_parses, hickory_parses_answer};

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

    assert!(
        !hickory_parses_answer(resp) || hickory_parses(message),
        "hickory decodes the upstream's response but not what nodedns stores"
    );

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
