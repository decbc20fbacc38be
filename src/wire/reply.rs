//! Serving a stored response: the per-client copy with its header, question case, aged TTLs,
//! OPT handling and truncation. This is the cache-hit path: no allocation, no parse unless
//! the reply has to be cut.

use super::{
    ANCOUNT_AT, ARCOUNT_AT, ClientHeader, HEADER_LEN, Layout, NSCOUNT_AT, flag, put_u16, put_u32,
    read_rr, set_reply_header, u16_at, u32_at,
};

/// How TTLs are written into a served copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlRewrite {
    /// Each TTL becomes `min(stored TTL, cap).saturating_sub(age)`: never above what upstream
    /// gave, never wrapping below zero.
    Aged { cap: u32, age: u32 },
    /// Every TTL becomes this value (serve-stale, RFC 8767 §4: 30 seconds).
    Fixed(u32),
}

impl TtlRewrite {
    fn apply(self, stored: u32) -> u32 {
        match self {
            TtlRewrite::Aged { cap, age } => stored.min(cap).saturating_sub(age),
            TtlRewrite::Fixed(ttl) => ttl,
        }
    }
}

/// Who a served copy is for.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// What the reply's header echoes (see [`set_reply_header`]).
    pub header: ClientHeader,
    /// The client's question bytes (same length as the stored one: same name, other case).
    pub question: &'a [u8],
    pub has_edns: bool,
    /// The largest reply the client can take on this transport (see [`Query::udp_limit`];
    /// 65535 over TCP).
    ///
    /// [`Query::udp_limit`]: super::Query::udp_limit
    pub max_len: usize,
}

/// Writes the copy of a stored (normalized) response that `client` gets into `out` (cleared
/// first): the client's header ([`set_reply_header`]; the stored copy keeps the upstream's,
/// which only the served copy loses, so entries stay shared read-only and an entry from any
/// source, a snapshot included, is served the same), its question bytes, TTLs per `ttl`, the
/// OPT removed if the client sent none (RFC 6891 §7). `stored` and `layout` are what
/// [`normalize_response`] produced. If the result exceeds `client.max_len`, it is cut down:
/// additional records are dropped first, then authority records when there are answers,
/// and if the answer section still does not fit, TC=1 is set and it carries the whole answer
/// records that fit (musl never retries over TCP, so an empty TC reply would leave it with
/// nothing). The OPT, when kept, survives every cut; its options (the upstream's Extended DNS
/// Errors) are dropped before any record is, as far as needed to fit.
///
/// When even the header, question and OPT exceed `max_len`, that much is sent with TC=1.
///
/// [`normalize_response`]: super::normalize_response
pub fn write_reply(
    stored: &[u8],
    layout: &Layout,
    client: &Client<'_>,
    ttl: TtlRewrite,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(layout.message(stored));
    set_reply_header(out, &client.header);
    let question_end = layout.question_end();
    // A question of another length would belong to another name: keep the stored one.
    if let Some(q) = out.get_mut(HEADER_LEN..question_end)
        && q.len() == client.question.len()
    {
        q.copy_from_slice(client.question);
    }
    for at in layout.ttl_offsets(stored) {
        if let Some(stored_ttl) = u32_at(out, at) {
            put_u32(out, at, ttl.apply(stored_ttl));
        }
    }
    let mut opt_at = layout.opt_offset().filter(|&o| o < out.len());
    if let Some(o) = opt_at
        && !client.has_edns
    {
        out.truncate(o);
        let arcount = u16_at(out, ARCOUNT_AT).unwrap_or(0);
        put_u16(out, ARCOUNT_AT, arcount.saturating_sub(1));
        opt_at = None;
    }
    if let Some(o) = opt_at
        && out.len() > client.max_len
    {
        trim_options(out, o, client.max_len);
    }
    if out.len() > client.max_len {
        cut(out, question_end, opt_at, client.max_len);
    }
}

/// Fixed part of an OPT record: root owner, type, UDP size, TTL, RDLENGTH (RFC 6891 §6.1.2).
const OPT_FIXED: usize = 11;

/// Drops the options of the OPT at `opt_at` (the last record) that do not fit in `max_len`,
/// keeping the longest run of whole options from the first that does. The stored OPT holds
/// only the upstream's Extended DNS Errors (RFC 8914): advice, which goes before any record
/// does, so a long EDE text can never push an answer out or a reply past the client's size
/// (RFC 6891 §7). When the records alone exceed `max_len`, every option goes and `cut`
/// does the rest.
fn trim_options(out: &mut Vec<u8>, opt_at: usize, max_len: usize) {
    let rdata_at = opt_at + OPT_FIXED;
    if rdata_at > out.len() {
        return;
    }
    let mut end = rdata_at;
    while let Some(len) = u16_at(out, end + 2) {
        let next = end + 4 + usize::from(len);
        if next > out.len() || next > max_len {
            break;
        }
        end = next;
    }
    out.truncate(end);
    // Fits: a subset of an RDATA whose length fitted in 16 bits.
    put_u16(out, rdata_at - 2, (end - rdata_at) as u16);
}

/// Record boundaries of a stored response, found by walking it.
#[derive(Debug, Clone, Copy)]
struct Sections {
    answer_end: usize,
    authority_end: usize,
}

/// Cuts `out` down to `max_len` (see [`write_reply`]); the OPT, if any, starts at `opt_at`
/// and is the last record.
fn cut(out: &mut Vec<u8>, question_end: usize, opt_at: Option<usize>, max_len: usize) {
    let opt_start = opt_at.unwrap_or(out.len());
    let opt_len = out.len() - opt_start;
    let ancount = u16_at(out, ANCOUNT_AT).unwrap_or(0);
    let nscount = u16_at(out, NSCOUNT_AT).unwrap_or(0);
    let keep_opt = u16::from(opt_at.is_some());
    let Some(sections) = find_sections(out, question_end, ancount, nscount) else {
        // Unwalkable (never for a normalised response): send the bare TC reply.
        keep_records(out, question_end, opt_start, [0, 0, keep_opt]);
        set_tc(out);
        return;
    };
    // RFC 2181 §9: dropping additional data does not set TC.
    if sections.authority_end + opt_len <= max_len {
        keep_records(
            out,
            sections.authority_end,
            opt_start,
            [ancount, nscount, keep_opt],
        );
        return;
    }
    if ancount > 0 && sections.answer_end + opt_len <= max_len {
        keep_records(out, sections.answer_end, opt_start, [ancount, 0, keep_opt]);
        return;
    }
    let (end, kept) = answers_that_fit(out, question_end, ancount, max_len.saturating_sub(opt_len));
    keep_records(out, end, opt_start, [kept, 0, keep_opt]);
    set_tc(out);
}

/// Walks the answer and authority sections.
fn find_sections(out: &[u8], question_end: usize, ancount: u16, nscount: u16) -> Option<Sections> {
    let mut at = question_end;
    for _ in 0..ancount {
        at = read_rr(out, at).ok()?.end;
    }
    let answer_end = at;
    for _ in 0..nscount {
        at = read_rr(out, at).ok()?.end;
    }
    Some(Sections {
        answer_end,
        authority_end: at,
    })
}

/// Returns the end of the longest prefix of whole answer records ending at or before `limit`,
/// and how many records it holds.
fn answers_that_fit(out: &[u8], question_end: usize, ancount: u16, limit: usize) -> (usize, u16) {
    let mut end = question_end;
    let mut kept = 0;
    while kept < ancount {
        match read_rr(out, end) {
            Ok(rr) if rr.end <= limit => {
                end = rr.end;
                kept += 1;
            }
            _ => break,
        }
    }
    (end, kept)
}

/// Keeps `out[..end]` and the OPT at `opt_start..` (moved down to `end`), and writes the
/// counts of what is left.
fn keep_records(out: &mut Vec<u8>, end: usize, opt_start: usize, counts: [u16; 3]) {
    let opt_len = out.len() - opt_start;
    // `end` never passes the OPT in a response we normalised; the min guards a bad layout.
    let end = end.min(opt_start);
    out.copy_within(opt_start.., end);
    out.truncate(end + opt_len);
    put_u16(out, ANCOUNT_AT, counts[0]);
    put_u16(out, NSCOUNT_AT, counts[1]);
    put_u16(out, ARCOUNT_AT, counts[2]);
}

fn set_tc(out: &mut [u8]) {
    let flags = u16_at(out, 2).unwrap_or(0);
    put_u16(out, 2, flags | flag::TC);
}
