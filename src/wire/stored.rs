//! What normalising an upstream response yields: the facts caching policy needs about it
//! ([`Analysis`]), where the stored message's parts are ([`Layout`]), and why a response was
//! refused ([`WireError`]). `response` makes them; the cache and `reply` read them.

use super::WalkError;

/// What a response is, for caching (RFC 2308 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// NOERROR with at least one answer record.
    Positive,
    /// NXDOMAIN. `soa_ttl` is `min(SOA TTL, SOA MINIMUM)` when the authority section has an SOA.
    NxDomain {
        soa_ttl: Option<u32>,
    },
    /// NOERROR, no answer, SOA in authority (NODATA) or none (referral or bare NODATA).
    NoData {
        soa_ttl: Option<u32>,
    },
    ServFail,
    /// Any other rcode (REFUSED, FORMERR, NOTIMP, extended ones).
    Other(u16),
}

/// Facts about an upstream response, computed once when it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub kind: Kind,
    /// The full rcode (header bits plus OPT extended bits).
    pub rcode: u16,
    pub truncated: bool,
    /// Minimum TTL over answer and authority records (OPT excluded); `None` when both are empty.
    pub min_ttl: Option<u32>,
    /// Records dropped as out of scope: off the question's chain in the answer section, or
    /// owned outside the zone in the other two.
    pub dropped: u16,
}

/// Where the mutable parts of a stored response live, so serving needs no parse.
///
/// A stored response (what [`normalize_response`] writes) is the DNS message followed by a
/// table of TTL offsets: one little-endian `u16` per record, the offset of its TTL field in the
/// message, OPT excluded. Keeping the table in the same buffer as the message, and this
/// struct down to three `u16`s, spares the cache a heap block per entry (the table was a
/// `Vec` of its own). The default describes a buffer that is all message: no records, no OPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    /// End of the question section (offset of the first record).
    pub(super) question_end: u16,
    /// Offset of our OPT record, which is always the last record; 0 when there is none (the
    /// header is at offset 0, so no record is).
    pub(super) opt_offset: u16,
    /// How many TTL offsets follow the message.
    pub(super) ttl_count: u16,
}

impl Layout {
    /// End of the question section (offset of the first record).
    pub fn question_end(&self) -> usize {
        usize::from(self.question_end)
    }

    /// Offset of our OPT record, the last record of the message, if it has one.
    pub fn opt_offset(&self) -> Option<usize> {
        (self.opt_offset != 0).then_some(usize::from(self.opt_offset))
    }

    /// The DNS message of a stored response: `stored` without the TTL offset table.
    pub fn message<'a>(&self, stored: &'a [u8]) -> &'a [u8] {
        let end = stored.len().saturating_sub(self.table_len());
        stored.get(..end).unwrap_or_default()
    }

    /// The offset of each record's TTL field in the message, OPT excluded, in record order.
    pub fn ttl_offsets<'a>(&self, stored: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        let table = stored
            .get(stored.len().saturating_sub(self.table_len())..)
            .unwrap_or_default();
        table
            .chunks_exact(2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    }

    fn table_len(&self) -> usize {
        2 * usize::from(self.ttl_count)
    }
}

/// Error from analysing or rewriting a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated inside {0}")]
    Truncated(&'static str),
    #[error("bad name: {0}")]
    BadName(&'static str),
    #[error("more than one OPT record")]
    DuplicateOpt,
    /// Bytes after the last record, or a message longer than 65535 bytes.
    #[error("trailing bytes after the last record")]
    Trailing,
    /// An OPT in the answer or authority section (RFC 6891 §6.1.1 allows it only in additional).
    #[error("OPT record outside the additional section")]
    MisplacedOpt,
    /// RDATA of another size or layout than its type has (RFC 1035 §3.3, RFC 3596 §2.2, ...).
    #[error("RDATA does not have its type's shape")]
    BadRdata,
}

impl WireError {
    pub(super) fn walk(e: WalkError, place: &'static str) -> WireError {
        match e {
            WalkError::Truncated => WireError::Truncated(place),
            WalkError::BadLabel => WireError::BadName("reserved label type"),
            WalkError::TooLong => WireError::BadName("longer than 255 bytes"),
            WalkError::BadPointer => {
                WireError::BadName("compression pointer not to an earlier name")
            }
            WalkError::BadRdata => WireError::BadRdata,
        }
    }
}
