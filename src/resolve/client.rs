//! Who a miss's reply is for, kept after the listener's buffer is reused: the fields of
//! the client's query every reply to it echoes, taken by the one [`client_of`] the cache hit
//! uses too.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::fast::client_of;
use super::{Miss, Proto};
use crate::wire;

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
    /// When the query was read, and over what: the reply's latency is timed from here.
    pub received: Instant,
    pub proto: Proto,
    /// Whether the query is a search-list expansion.
    pub expansion: bool,
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
            received: miss.now,
            proto: miss.proto,
            expansion: miss.expansion,
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
