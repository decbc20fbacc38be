//! nf_tables over netlink: the few messages nodedns sends, encoded by hand, and the socket
//! that sends them as one batch and reads the kernel's answer to each.
//!
//! A table is replaced whole in one transaction (`NFNL_MSG_BATCH_BEGIN` ... `BATCH_END`):
//! "new table" (which succeeds when it exists), "delete table", then the table again with
//! its chains and rules. The kernel applies a batch all or nothing, so the node never sees
//! half a table, and running it twice gives the same state. Removal is the first two
//! messages alone, so it succeeds when the table is already gone.
//!
//! The rules are the only shape nodedns needs: match the IP family, one address (source or
//! destination), the L4 protocol and one port, then `notrack` or `accept`. Encoded here
//! rather than through a library: the well-kept nftables crates need the C libraries
//! libnftnl and libmnl (which the static musl image cannot link) or are GPL-licensed, and
//! these messages are a few hundred bytes of fixed layout (`linux/netfilter/nf_tables.h`).

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_NETFILTER};

// linux/netlink.h
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;
// linux/netfilter/nfnetlink.h
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
// linux/netfilter/nf_tables.h: messages
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
// attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
// values
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NF_ACCEPT: u32 = 1;

/// Netfilter hooks (`linux/netfilter.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Output = 3,
}

/// Chain priorities as nft names them.
pub const PRIORITY_RAW: i32 = -300;
pub const PRIORITY_FILTER: i32 = 0;

/// What a matching packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Skip connection tracking (and so any NAT that needs it).
    NoTrack,
    Accept,
}

/// Which end of the packet a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Destination address and port.
    To,
    /// Source address and port.
    From,
}

/// `ip[6] {s,d}addr IP PROTO {s,d}port PORT VERDICT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub end: End,
    pub ip: IpAddr,
    /// `libc::IPPROTO_UDP` or `IPPROTO_TCP`.
    pub l4proto: u8,
    pub port: u16,
    pub verdict: Verdict,
}

/// A base chain with policy accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Hook,
    pub priority: i32,
    pub rules: Vec<Rule>,
}

/// A table of family `inet` (IPv4 and IPv6 together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub chains: Vec<Chain>,
}

/// Replaces `table` on the node (creating it when missing) in one transaction.
pub fn replace(table: &Table) -> io::Result<()> {
    let mut batch = Batch::new();
    batch.table_gone(&table.name);
    batch.add(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table_attrs(&table.name));
    for chain in &table.chains {
        batch.add(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            &chain_attrs(&table.name, chain),
        );
        for rule in &chain.rules {
            let attrs = rule_attrs(&table.name, &chain.name, rule);
            batch.add(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &attrs);
        }
    }
    send(batch)
}

/// Removes table `name`; a table already gone is success.
pub fn remove(name: &str) -> io::Result<()> {
    let mut batch = Batch::new();
    batch.table_gone(name);
    send(batch)
}

/// One transaction being built: messages with sequence numbers from 1.
struct Batch {
    bytes: Vec<u8>,
    seq: u32,
    /// Messages that asked for an acknowledgement.
    acks: usize,
}

impl Batch {
    fn new() -> Batch {
        let mut batch = Batch {
            bytes: Vec::with_capacity(4096),
            seq: 0,
            acks: 0,
        };
        batch.message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, &[]);
        batch
    }

    /// Create-if-missing then delete: valid whether or not the table exists.
    fn table_gone(&mut self, name: &str) {
        let attrs = table_attrs(name);
        self.add(NFT_MSG_NEWTABLE, NLM_F_CREATE, &attrs);
        self.add(NFT_MSG_DELTABLE, 0, &attrs);
    }

    fn add(&mut self, msg: u16, flags: u16, attrs: &[u8]) {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        self.message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, NFPROTO_INET, attrs);
        self.acks += 1;
    }

    fn message(&mut self, kind: u16, flags: u16, family: u8, attrs: &[u8]) {
        self.seq += 1;
        let len = 16 + 4 + attrs.len();
        self.bytes
            .extend(u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        self.bytes.extend(kind.to_ne_bytes());
        self.bytes.extend(flags.to_ne_bytes());
        self.bytes.extend(self.seq.to_ne_bytes());
        self.bytes.extend(0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, resource id (the subsystem, for batch markers).
        let res_id = if kind == NFNL_MSG_BATCH_BEGIN || kind == NFNL_MSG_BATCH_END {
            NFNL_SUBSYS_NFTABLES
        } else {
            0
        };
        self.bytes.push(family);
        self.bytes.push(0);
        self.bytes.extend(res_id.to_be_bytes());
        self.bytes.extend(attrs);
    }

    fn finish(mut self) -> (Vec<u8>, usize) {
        self.message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, &[]);
        (self.bytes, self.acks)
    }
}

/// How long the kernel may take to answer a batch before it counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a batch and reads one acknowledgement per message; the first error wins.
fn send(batch: Batch) -> io::Result<()> {
    let (bytes, mut pending) = batch.finish();
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket2::SockRef::from(&socket).set_read_timeout(Some(ANSWER_TIMEOUT))?;
    socket.send_to(&bytes, &NlAddr::new(0, 0), 0)?;
    let mut first_error = None;
    let mut buf = vec![0u8; 1 << 16];
    while pending > 0 {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let answers = errors_in(buf.get(..n).unwrap_or_default())?;
        if answers.is_empty() {
            return Err(io::Error::other(
                "netlink: an answer without acknowledgement",
            ));
        }
        for code in answers {
            pending = pending.saturating_sub(1);
            if code != 0 && first_error.is_none() {
                first_error = Some(io::Error::from_raw_os_error(-code));
            }
        }
        if first_error.is_some() {
            // The kernel aborts the batch at the first error; the rest of the answers
            // (if any) say nothing more.
            break;
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The error codes (0 for an acknowledgement) of the `NLMSG_ERROR` messages in `buf`.
fn errors_in(mut buf: &[u8]) -> io::Result<Vec<i32>> {
    let short = || io::Error::other("netlink: truncated answer");
    let mut codes = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().map_err(|_| short())?) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().map_err(|_| short())?);
        if len < 16 || len > buf.len() {
            return Err(short());
        }
        if kind == NLMSG_ERROR {
            let code = buf.get(16..20).ok_or_else(short)?;
            codes.push(i32::from_ne_bytes(code.try_into().map_err(|_| short())?));
        }
        buf = buf.get(align(len)..).unwrap_or_default();
    }
    Ok(codes)
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Netlink attributes being written.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn raw(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0
            .extend(u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(value);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.raw(kind, &bytes)
    }

    fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.raw(kind, &value.to_be_bytes())
    }

    fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.raw(kind | NLA_F_NESTED, &inner.0)
    }
}

fn table_attrs(name: &str) -> Vec<u8> {
    let mut a = Attrs::default();
    a.string(NFTA_TABLE_NAME, name);
    a.0
}

fn chain_attrs(table: &str, chain: &Chain) -> Vec<u8> {
    let mut hook = Attrs::default();
    hook.be32(NFTA_HOOK_HOOKNUM, chain.hook as u32)
        // The priority is a signed 32-bit number sent as its two's complement.
        .be32(NFTA_HOOK_PRIORITY, chain.priority.cast_unsigned());
    let mut a = Attrs::default();
    a.string(NFTA_CHAIN_TABLE, table)
        .string(NFTA_CHAIN_NAME, &chain.name)
        .nested(NFTA_CHAIN_HOOK, &hook)
        .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .string(NFTA_CHAIN_TYPE, "filter");
    a.0
}

fn rule_attrs(table: &str, chain: &str, rule: &Rule) -> Vec<u8> {
    let (nfproto, ip, addr_offset) = match (rule.ip, rule.end) {
        // Offsets in the IPv4 header (RFC 791) and the IPv6 header (RFC 8200).
        (IpAddr::V4(v4), End::To) => (NFPROTO_IPV4, v4.octets().to_vec(), 16),
        (IpAddr::V4(v4), End::From) => (NFPROTO_IPV4, v4.octets().to_vec(), 12),
        (IpAddr::V6(v6), End::To) => (NFPROTO_IPV6, v6.octets().to_vec(), 24),
        (IpAddr::V6(v6), End::From) => (NFPROTO_IPV6, v6.octets().to_vec(), 8),
    };
    // Source port first in both UDP and TCP headers, destination port second.
    let port_offset = match rule.end {
        End::To => 2,
        End::From => 0,
    };
    let mut list = Attrs::default();
    list.nested(NFTA_LIST_ELEM, &meta(NFT_META_NFPROTO))
        .nested(NFTA_LIST_ELEM, &cmp(&[nfproto]))
        .nested(
            NFTA_LIST_ELEM,
            &payload(NFT_PAYLOAD_NETWORK_HEADER, addr_offset, ip.len()),
        )
        .nested(NFTA_LIST_ELEM, &cmp(&ip))
        .nested(NFTA_LIST_ELEM, &meta(NFT_META_L4PROTO))
        .nested(NFTA_LIST_ELEM, &cmp(&[rule.l4proto]))
        .nested(
            NFTA_LIST_ELEM,
            &payload(NFT_PAYLOAD_TRANSPORT_HEADER, port_offset, 2),
        )
        .nested(NFTA_LIST_ELEM, &cmp(&rule.port.to_be_bytes()))
        .nested(NFTA_LIST_ELEM, &verdict(rule.verdict));
    let mut a = Attrs::default();
    a.string(NFTA_RULE_TABLE, table)
        .string(NFTA_RULE_CHAIN, chain)
        .nested(NFTA_RULE_EXPRESSIONS, &list);
    a.0
}

fn expr(name: &str, data: Option<&Attrs>) -> Attrs {
    let mut e = Attrs::default();
    e.string(NFTA_EXPR_NAME, name);
    if let Some(data) = data {
        e.nested(NFTA_EXPR_DATA, data);
    }
    e
}

fn meta(key: u32) -> Attrs {
    let mut d = Attrs::default();
    d.be32(NFTA_META_DREG, NFT_REG_1).be32(NFTA_META_KEY, key);
    expr("meta", Some(&d))
}

fn payload(base: u32, offset: u32, len: usize) -> Attrs {
    let mut d = Attrs::default();
    d.be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
        .be32(NFTA_PAYLOAD_BASE, base)
        .be32(NFTA_PAYLOAD_OFFSET, offset)
        .be32(NFTA_PAYLOAD_LEN, u32::try_from(len).unwrap_or(0));
    expr("payload", Some(&d))
}

fn cmp(value: &[u8]) -> Attrs {
    let mut data = Attrs::default();
    data.raw(NFTA_DATA_VALUE, value);
    let mut d = Attrs::default();
    d.be32(NFTA_CMP_SREG, NFT_REG_1)
        .be32(NFTA_CMP_OP, NFT_CMP_EQ)
        .nested(NFTA_CMP_DATA, &data);
    expr("cmp", Some(&d))
}

fn verdict(v: Verdict) -> Attrs {
    match v {
        Verdict::NoTrack => expr("notrack", None),
        Verdict::Accept => {
            let mut code = Attrs::default();
            code.be32(NFTA_VERDICT_CODE, NF_ACCEPT);
            let mut data = Attrs::default();
            data.nested(NFTA_DATA_VERDICT, &code);
            let mut d = Attrs::default();
            d.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                .nested(NFTA_IMMEDIATE_DATA, &data);
            expr("immediate", Some(&d))
        }
    }
}

#[cfg(test)]
mod tests;
