//! Who a reply is for: the fields of the client's query that every reply to it echoes,
//! taken in one place ([`client_of`]) whether the reply is a cache hit written at once or an
//! answer written once upstream replies.

use std::net::SocketAddr;

use super::{Miss, Proto};
use crate::wire::{self, Query};

/// Largest reply over TCP: the 2-byte frame length.
const TCP_MAX: usize = 65535;

/// Who the reply to `q` is for, on `proto`.
pub(super) fn client_of<'q>(q: &Query<'q>, proto: Proto, udp_cap: u16) -> wire::Client<'q> {
    wire::Client {
        header: wire::ClientHeader::of(q),
        question: q.question,
        has_edns: q.edns.is_some(),
        max_len: match proto {
            Proto::Udp => q.udp_limit(udp_cap),
            Proto::Tcp => TCP_MAX,
        },
    }
}

/// A miss's client, owned, for a reply written after the listener's buffer is reused: the
/// client's packet (its question is echoed, a SERVFAIL is built from it) and the rest of
/// [`client_of`].
pub(super) struct Asker {
    pub pkt: Vec<u8>,
    pub addr: SocketAddr,
    header: wire::ClientHeader,
    /// The question is `pkt[HEADER_LEN..question_end]`.
    question_end: usize,
    has_edns: bool,
    max_len: usize,
}

impl Asker {
    pub fn of(miss: &Miss<'_>, udp_cap: u16) -> Asker {
        let client = client_of(&miss.query, miss.proto, udp_cap);
        Asker {
            pkt: miss.pkt.to_vec(),
            addr: miss.client,
            header: client.header,
            question_end: wire::HEADER_LEN + client.question.len(),
            has_edns: client.has_edns,
            max_len: client.max_len,
        }
    }

    pub fn client(&self) -> wire::Client<'_> {
        wire::Client {
            header: self.header,
            question: self
                .pkt
                .get(wire::HEADER_LEN..self.question_end)
                .unwrap_or_default(),
            has_edns: self.has_edns,
            max_len: self.max_len,
        }
    }
}
