//! The messages `nfnl` encodes, checked byte by byte against the kernel's layout.

#![allow(clippy::unwrap_used)]

use super::*;

/// Walks attributes: (type without flags, nested flag, payload).
fn walk(mut buf: &[u8]) -> Vec<(u16, bool, Vec<u8>)> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]);
        out.push((
            kind & !NLA_F_NESTED,
            kind & NLA_F_NESTED != 0,
            buf[4..len].to_vec(),
        ));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

#[test]
fn strings_are_nul_terminated_and_attributes_padded_to_four_bytes() {
    let bytes = table_attrs("nodedns");
    // 4 header + 8 ("nodedns\0") = 12, already aligned.
    assert_eq!(bytes.len(), 12);
    assert_eq!(&bytes[4..], b"nodedns\0");
    let mut a = Attrs::default();
    a.raw(1, &[7]);
    assert_eq!(a.0, [5, 0, 1, 0, 7, 0, 0, 0]);
}

#[test]
fn a_notrack_rule_matches_family_address_protocol_and_port() {
    let rule = Rule {
        end: End::To,
        ip: "198.19.0.10".parse().unwrap(),
        l4proto: 17,
        port: 53,
        verdict: Verdict::NoTrack,
    };
    let attrs = walk(&rule_attrs("t", "c", &rule));
    assert_eq!(attrs[0], (NFTA_RULE_TABLE, false, b"t\0".to_vec()));
    assert_eq!(attrs[1], (NFTA_RULE_CHAIN, false, b"c\0".to_vec()));
    let (kind, nested, list) = &attrs[2];
    assert_eq!((*kind, *nested), (NFTA_RULE_EXPRESSIONS, true));
    let exprs: Vec<Vec<(u16, bool, Vec<u8>)>> =
        walk(list).into_iter().map(|(_, _, e)| walk(&e)).collect();
    let names: Vec<&[u8]> = exprs.iter().map(|e| e[0].2.as_slice()).collect();
    assert_eq!(
        names,
        [
            &b"meta\0"[..],
            b"cmp\0",
            b"payload\0",
            b"cmp\0",
            b"meta\0",
            b"cmp\0",
            b"payload\0",
            b"cmp\0",
            b"notrack\0"
        ]
    );
    // The compared values, in order: IPv4, the address, UDP, port 53 (network order).
    let values: Vec<Vec<u8>> = exprs
        .iter()
        .filter(|e| e[0].2 == b"cmp\0")
        .map(|e| walk(&walk(&e[1].2)[2].2)[0].2.clone())
        .collect();
    assert_eq!(
        values,
        [vec![2], vec![198, 19, 0, 10], vec![17], vec![0, 53]]
    );
    // The destination address is at offset 16 of the IPv4 header, the port at 2.
    let offsets: Vec<Vec<u8>> = exprs
        .iter()
        .filter(|e| e[0].2 == b"payload\0")
        .map(|e| walk(&e[1].2)[2].2.clone())
        .collect();
    assert_eq!(offsets, [vec![0, 0, 0, 16], vec![0, 0, 0, 2]]);
}

#[test]
fn a_raw_chain_has_a_negative_priority_in_twos_complement() {
    let chain = Chain {
        name: "prerouting".into(),
        hook: Hook::Prerouting,
        priority: PRIORITY_RAW,
        rules: Vec::new(),
    };
    let attrs = walk(&chain_attrs("t", &chain));
    let hook = walk(&attrs[2].2);
    assert_eq!(hook[0].2, 0u32.to_be_bytes());
    assert_eq!(hook[1].2, (-300i32).to_be_bytes());
    assert_eq!(attrs[4].2, b"filter\0");
}

#[test]
fn a_batch_is_framed_and_counts_its_acknowledgements() {
    let mut batch = Batch::new();
    batch.table_gone("nodedns");
    let (bytes, acks) = batch.finish();
    assert_eq!(acks, 2);
    let mut kinds = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        kinds.push(u16::from_ne_bytes([rest[4], rest[5]]));
        rest = &rest[align(len)..];
    }
    assert_eq!(kinds, [0x10, 0x0a00, 0x0a02, 0x11]);
}

#[test]
fn answers_are_read_as_error_codes() {
    let mut msg = Vec::new();
    msg.extend(36u32.to_ne_bytes());
    msg.extend(NLMSG_ERROR.to_ne_bytes());
    msg.extend([0u8; 10]);
    msg.extend((-libc::ENOENT).to_ne_bytes());
    msg.extend([0u8; 16]);
    assert_eq!(errors_in(&msg).unwrap(), [-libc::ENOENT]);
    assert!(errors_in(&msg[..30]).is_err());
}
