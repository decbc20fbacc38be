//! The upstream side of an exchange: the query nodedns sends and the check a reply must pass.

use super::{EDNS_DO, HEADER_LEN, Header, Query, flag, skip_name, write_bare_opt};

/// Builds the query nodedns sends upstream for `query` into `out` (cleared first): our `id`,
/// RD and CD copied from the client, the lowercased question, and our own OPT record
/// (UDP size 1232, DO copied from the client, no options: client cookies and ECS are never
/// forwarded). Returns the length of header + question, which [`check_reply`] takes.
pub fn build_upstream_query(query: &Query<'_>, id: u16, out: &mut Vec<u8>) -> usize {
    out.clear();
    let header = Header {
        id,
        flags: query.header.flags & (flag::RD | flag::CD),
        qdcount: 1,
        ancount: 0,
        nscount: 0,
        arcount: 1,
    };
    header.write(out);
    out.extend_from_slice(query.qname());
    out.extend_from_slice(&query.qtype.to_be_bytes());
    out.extend_from_slice(&query.qclass.to_be_bytes());
    let question_end = out.len();
    let dnssec_ok = query.edns.is_some_and(|e| e.dnssec_ok);
    write_bare_opt(out, if dnssec_ok { EDNS_DO } else { 0 });
    question_end
}

/// Why an upstream reply was rejected (RFC 5452 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("reply too short or unreadable")]
    Malformed,
    #[error("reply ID does not match")]
    Id,
    #[error("QR not set or opcode differs")]
    NotAResponse,
    #[error("reply question differs from the one sent")]
    Question,
}

/// Checks an upstream reply against the query we sent (`sent` as built by
/// [`build_upstream_query`]): same ID, QR=1, same opcode, QDCOUNT=1 and the same question
/// (qname compared case-insensitively, qtype and qclass exactly).
///
/// `sent` may be the whole query or only its header and question.
pub fn check_reply(sent: &[u8], reply: &[u8]) -> Result<(), Mismatch> {
    let ours = Header::parse(sent).ok_or(Mismatch::Malformed)?;
    let theirs = Header::parse(reply).ok_or(Mismatch::Malformed)?;
    if theirs.id != ours.id {
        return Err(Mismatch::Id);
    }
    if !theirs.qr() || theirs.opcode() != ours.opcode() {
        return Err(Mismatch::NotAResponse);
    }
    if theirs.qdcount != 1 {
        return Err(Mismatch::Question);
    }
    let sent_end = skip_name(sent, HEADER_LEN).map_err(|_| Mismatch::Malformed)? + 4;
    let asked = sent.get(HEADER_LEN..sent_end).ok_or(Mismatch::Malformed)?;
    let got = reply.get(HEADER_LEN..sent_end).ok_or(Mismatch::Malformed)?;
    // Length bytes are at most 63 and so never change under ASCII case folding: equal bytes
    // mean equal label structure, and only letters inside labels may differ in case. The
    // last four bytes (qtype, qclass) must match exactly.
    let (asked_name, asked_tail) = asked.split_at(asked.len() - 4);
    let (got_name, got_tail) = got.split_at(got.len() - 4);
    if asked_name.eq_ignore_ascii_case(got_name) && asked_tail == got_tail {
        Ok(())
    } else {
        Err(Mismatch::Question)
    }
}
