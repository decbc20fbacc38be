//! Property tests of the response side with hickory-proto as the oracle: random valid
//! responses emitted by hickory, normalised and served here, the results decoded by hickory.
//! Also: arbitrary and corrupted bytes never panic.

use super::strategy::*;
use super::*;
use hickory_proto::op::{Edns, Message, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct ResponseCase {
    id: u16,
    qname: Name,
    qtype: RecordType,
    rcode: u16,
    tc: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    edns: Option<Edns>,
    /// Where the OPT goes among the additional records when not last (hickory puts it last).
    opt_at: Option<usize>,
}

fn response_case(tc: impl Strategy<Value = bool>) -> impl Strategy<Value = ResponseCase> {
    let rcodes = prop::sample::select(vec![0u16, 0, 0, 2, 3, 3, 5, 23]);
    let authority = prop_oneof![soa_record(), record()];
    (
        (any::<u16>(), domain(), qtype(), rcodes, tc),
        // Half the answers owned by the question's name, so the chain rule keeps some.
        prop::collection::vec((any::<bool>(), record()), 0..8),
        prop::collection::vec(authority, 0..3),
        prop::collection::vec(record(), 0..3),
        prop::option::of(edns()),
        prop::option::of(0..3usize),
    )
        .prop_map(
            |((id, qname, qtype, rcode, tc), answers, authorities, additionals, edns, opt_at)| {
                let answers = answers
                    .into_iter()
                    .map(|(own, mut r)| {
                        if own {
                            r.name = qname.clone();
                        }
                        r
                    })
                    .collect();
                ResponseCase {
                    opt_at: opt_at.filter(|&i| i < additionals.len() && edns.is_some()),
                    id,
                    qname,
                    qtype,
                    rcode,
                    tc,
                    answers,
                    authorities,
                    additionals,
                    edns,
                }
            },
        )
}

fn emit_response(c: &ResponseCase) -> Vec<u8> {
    let mut m = Message::response(c.id, OpCode::Query);
    m.metadata.response_code = <ResponseCode as From<u16>>::from(c.rcode);
    m.metadata.truncation = c.tc;
    m.metadata.recursion_desired = true;
    m.add_query(HQuery::query(c.qname.clone(), c.qtype));
    m.answers = c.answers.clone();
    m.authorities = c.authorities.clone();
    m.additionals = c.additionals.clone();
    match (&c.edns, c.opt_at) {
        (Some(e), Some(i)) => {
            let mut e = e.clone();
            e.set_rcode_high(m.metadata.response_code.high());
            m.additionals.insert(i, Record::from(&e));
        }
        (e, _) => m.edns = e.clone(),
    }
    m.to_vec().unwrap()
}

/// The answers the chain rule keeps, in order: those owned by the question's name or by a
/// CNAME target of a kept record, found to a fixed point (the model of `scope`).
fn on_chain(qname: &Name, answers: &[Record]) -> Vec<Record> {
    let mut chain = vec![lower_wire(qname)];
    loop {
        let before = chain.len();
        for r in answers {
            if let RData::CNAME(target) = &r.data
                && chain.contains(&lower_wire(&r.name))
                && !chain.contains(&lower_wire(&target.0))
            {
                chain.push(lower_wire(&target.0));
            }
        }
        if chain.len() == before {
            break;
        }
    }
    answers
        .iter()
        .filter(|r| chain.contains(&lower_wire(&r.name)))
        .cloned()
        .collect()
}

/// The kind the documented rules give for a decoded response.
fn expected_kind(m: &Message) -> Kind {
    let soa_ttl = m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    });
    match u16::from(m.metadata.response_code) {
        0 if !m.answers.is_empty() => Kind::Positive,
        0 => Kind::NoData { soa_ttl },
        3 => Kind::NxDomain { soa_ttl },
        2 => Kind::ServFail,
        other => Kind::Other(other),
    }
}

/// Start and end of every non-OPT record of a stored response, from its layout.
fn record_spans(stored: &[u8], layout: &Layout) -> Vec<(usize, usize)> {
    let mut start = layout.question_end();
    let mut spans = Vec::new();
    for ttl_at in layout.ttl_offsets(stored) {
        let rdata = ttl_at + 6;
        let end = rdata + usize::from(u16::from_be_bytes([stored[rdata - 2], stored[rdata - 1]]));
        spans.push((start, end));
        start = end;
    }
    spans
}

proptest! {
    #[test]
    fn normalized_response_keeps_every_record_but_the_opt(c in response_case(any::<bool>())) {
        let bytes = emit_response(&c);
        let mut input = Message::from_vec(&bytes).unwrap();
        let all_answers = input.answers.len();
        input.answers = on_chain(&input.queries[0].name, &input.answers);
        let mut out = Vec::new();
        let (analysis, layout) = normalize_response(&bytes, &mut out).unwrap();
        let message = layout.message(&out);
        let output = Message::from_vec(message).unwrap();
        prop_assert_eq!(output.metadata, input.metadata);
        prop_assert_eq!(&output.queries[0].name.to_ascii(), &input.queries[0].name.to_ascii());
        prop_assert_eq!(output.answers.iter().map(exact).collect::<Vec<_>>(), input.answers.iter().map(exact).collect::<Vec<_>>());
        prop_assert_eq!(output.authorities.iter().map(exact).collect::<Vec<_>>(), input.authorities.iter().map(exact).collect::<Vec<_>>());
        let kept_additionals = c.opt_at.unwrap_or(input.additionals.len());
        prop_assert_eq!(output.additionals.iter().map(exact).collect::<Vec<_>>(), input.additionals[..kept_additionals].iter().map(exact).collect::<Vec<_>>());
        match (&output.edns, &input.edns) {
            (None, None) => {}
            (Some(ours), Some(theirs)) => {
                prop_assert_eq!(ours.max_payload(), EDNS_UDP_SIZE);
                prop_assert_eq!(ours.flags().dnssec_ok, theirs.flags().dnssec_ok);
                let ede: Vec<_> = theirs.options().options.iter().filter(|(code, _)| u16::from(*code) == 15).collect();
                prop_assert_eq!(ours.options().options.iter().collect::<Vec<_>>(), ede);
            }
            (ours, theirs) => prop_assert!(false, "OPT {:?} became {:?}", theirs, ours),
        }
        let all: Vec<&Record> = input.answers.iter().chain(&input.authorities).collect();
        prop_assert_eq!(analysis.min_ttl, all.iter().map(|r| r.ttl).min());
        prop_assert_eq!(analysis.rcode, u16::from(input.metadata.response_code));
        prop_assert_eq!(analysis.truncated, c.tc);
        prop_assert_eq!(usize::from(analysis.dropped), all_answers - input.answers.len());
        prop_assert_eq!(analysis.kind, expected_kind(&input));
        // The layout points at every TTL in order, and at our OPT as the last record.
        let ttls: Vec<u32> = output.answers.iter().chain(&output.authorities).chain(&output.additionals).map(|r| r.ttl).collect();
        let at_offsets: Vec<u32> = layout.ttl_offsets(&out).map(|o| u32_at(message, o).unwrap()).collect();
        prop_assert_eq!(at_offsets, ttls);
        let spans_end = record_spans(&out, &layout).last().map_or(layout.question_end(), |s| s.1);
        prop_assert_eq!(layout.opt_offset(), output.edns.as_ref().map(|_| spans_end));
        // The records and our OPT fill the message: nothing of the offset table leaks into it.
        let opt_end = |o: usize| o + 11 + usize::from(u16::from_be_bytes([message[o + 9], message[o + 10]]));
        prop_assert_eq!(layout.opt_offset().map_or(spans_end, opt_end), message.len());
        prop_assert_eq!(layout.question_end(), HEADER_LEN + input.queries[0].to_bytes().unwrap().len());
    }

    #[test]
    fn served_copy_is_the_stored_answer_for_this_client(
        c in response_case(Just(false)),
        id in any::<u16>(),
        mask in prop::collection::vec(any::<bool>(), 1..8),
        has_edns in any::<bool>(),
        max_len in prop_oneof![0..1500usize, Just(65535)],
        ttl in prop_oneof![(any::<u32>(), 0..700u32).prop_map(|(cap, age)| TtlRewrite::Aged { cap, age }), (0..100u32).prop_map(TtlRewrite::Fixed)],
    ) {
        let mut stored = Vec::new();
        let (_, layout) = normalize_response(&emit_response(&c), &mut stored).unwrap();
        let qend = layout.question_end();
        let mut question = stored[HEADER_LEN..qend].to_vec();
        let name_len = question.len() - 4;
        flip_case(&mut question[..name_len], &mask);
        let client = Client { header: ClientHeader { id, flags: flag::RD, dnssec_ok: false }, question: &question, has_edns, max_len };
        let mut out = Vec::new();
        write_reply(&stored, &layout, &client, ttl, &mut out);

        let message = layout.message(&stored);
        let full = Message::from_vec(message).unwrap();
        let served = Message::from_vec(&out).unwrap();
        prop_assert_eq!(served.metadata.id, id);
        prop_assert_eq!(&out[HEADER_LEN..qend], &question[..]);
        prop_assert_eq!(served.edns.is_some(), has_edns && full.edns.is_some());
        // Every served record is its stored self with the TTL rewritten, never raised by ageing.
        let same_but_ttl = |ours: &[Record], theirs: &[Record]| ours.iter().zip(theirs).all(|(o, t)| {
            let expected = match ttl { TtlRewrite::Aged { cap, age } => t.ttl.min(cap).saturating_sub(age), TtlRewrite::Fixed(v) => v };
            // Owners compressed against the question take the client's case: compare without.
            o.name == t.name && o.data == t.data && o.ttl == expected
                && (matches!(ttl, TtlRewrite::Fixed(_)) || o.ttl <= t.ttl)
        });
        prop_assert!(served.answers.len() <= full.answers.len());
        prop_assert!(same_but_ttl(&served.answers, &full.answers));
        prop_assert!(same_but_ttl(&served.authorities, &full.authorities));
        prop_assert!(same_but_ttl(&served.additionals, &full.additionals));

        let opt_len = if served.edns.is_some() { message.len() - layout.opt_offset().unwrap_or(message.len()) } else { 0 };
        let uncut_len = layout.opt_offset().map_or(message.len(), |o| o + opt_len);
        // The OPT's options (EDE) go before any record does.
        let options_len = opt_len.saturating_sub(11);
        if uncut_len > max_len && uncut_len - options_len <= max_len {
            prop_assert!(out.len() <= max_len);
            prop_assert!(!served.metadata.truncation);
            prop_assert_eq!((served.answers.len(), served.authorities.len(), served.additionals.len()), (full.answers.len(), full.authorities.len(), full.additionals.len()));
            return Ok(());
        }
        if uncut_len <= max_len {
            prop_assert_eq!(out.len(), uncut_len);
            prop_assert!(!served.metadata.truncation);
            prop_assert_eq!((served.answers.len(), served.authorities.len(), served.additionals.len()), (full.answers.len(), full.authorities.len(), full.additionals.len()));
            return Ok(());
        }
        if qend + 11 <= max_len {
            prop_assert!(out.len() <= max_len, "{} > {}", out.len(), max_len);
        }
        prop_assert!(served.additionals.is_empty());
        if served.metadata.truncation {
            prop_assert!(served.authorities.is_empty());
            // Whole answers only, and as many as fit: the next one would not have.
            let spans = record_spans(&stored, &layout);
            if let Some(&(start, end)) = spans[..full.answers.len()].get(served.answers.len()) {
                prop_assert!(out.len() + (end - start) > max_len);
            }
        } else {
            prop_assert_eq!(served.answers.len(), full.answers.len());
            prop_assert!(served.authorities.is_empty() || served.authorities.len() == full.authorities.len());
            prop_assert!(!served.authorities.is_empty() || !full.answers.is_empty() || full.authorities.is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), max_len in 0..600usize) {
        let _ = parse_query(&bytes);
        let mut out = Vec::new();
        let _ = error_reply(&bytes, rcode::FORMERR, &mut out);
        let _ = check_reply(&bytes, &bytes);
        serve_anything(&bytes, max_len);
    }

    #[test]
    fn corrupted_responses_never_panic(c in response_case(any::<bool>()), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), max_len in 0..600usize) {
        let mut bytes = emit_response(&c);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        serve_anything(&bytes, max_len);
        let _ = parse_query(&bytes);
    }
}

/// Normalises `bytes` and, if that worked, serves the result to two kinds of client.
fn serve_anything(bytes: &[u8], max_len: usize) {
    let mut stored = Vec::new();
    if let Ok((_, layout)) = normalize_response(bytes, &mut stored) {
        let q = stored
            .get(HEADER_LEN..layout.question_end())
            .unwrap_or_default()
            .to_vec();
        for has_edns in [true, false] {
            let client = Client {
                header: ClientHeader {
                    id: 1,
                    flags: flag::RD,
                    dnssec_ok: false,
                },
                question: &q,
                has_edns,
                max_len,
            };
            write_reply(
                &stored,
                &layout,
                &client,
                TtlRewrite::Aged { cap: 100, age: 5 },
                &mut Vec::new(),
            );
        }
    }
}
