//! Which records of an upstream answer belong in it: the answer section holds only the
//! question's chain, and the other sections only names inside the zone the query was
//! forwarded for.
//!
//! This file owns that decision for one record at a time. It does not walk the message or
//! check names (`response` and `validate` do): it is told each record's owner, already
//! decompressed and lowercased, and compares names as such.

use super::names::{Name, Names};
use super::{Rr, WalkError, rtype};

/// The longest chain followed: the question's name and this many CNAME/DNAME targets less
/// one. Longer chains are cut: the records past it are dropped (unbound stops at 11).
pub(super) const MAX_CHAIN: usize = 16;

/// RRSIG (RFC 4034 §3) and DNAME (RFC 6672 §2.1).
const RRSIG: u16 = 46;
const DNAME: u16 = 39;

/// One name of the chain.
#[derive(Clone, Copy)]
struct Link {
    name: Name,
    /// The owner of a DNAME on the chain, not a name on it: only the DNAME and its RRSIGs
    /// are kept at it.
    dname_owner: bool,
    /// Where the name sits in the message, when it was read from there whole (a CNAME's
    /// target): an owner that is just a pointer to it is this name, with no decompression.
    at: Option<usize>,
}

/// The chain so far and the zone, for one answer.
pub(super) struct Scope<'z> {
    /// The zone's apex in wire form, lowercased.
    zone: &'z [u8],
    /// The question's name, valid when `has_question`; without a single question the chain
    /// rule does not apply. Read in place ([`Scope::question_mut`]): a name is 256 bytes, and
    /// copying it costs a miss more than comparing it.
    qname: Name,
    has_question: bool,
    /// Names added by CNAME and DNAME records, in the order they were met. Most answers add
    /// none, and then nothing is allocated.
    more: Vec<Link>,
}

impl<'z> Scope<'z> {
    /// `zone`: the apex of the zone the query was forwarded for, wire form, lowercased.
    pub(super) fn new(zone: &'z [u8]) -> Scope<'z> {
        Scope {
            zone,
            qname: Name::default(),
            has_question: false,
            more: Vec::new(),
        }
    }

    /// Where the question's name is to be read; the chain rule applies from then on.
    pub(super) fn question_mut(&mut self) -> &mut Name {
        self.has_question = true;
        &mut self.qname
    }

    /// Whether the name starting at offset `at` of the message, already checked, is on the
    /// chain: the question's name (offset 12) or a CNAME target read there.
    pub(super) fn chain_name_at(&self, at: usize) -> bool {
        (at == super::HEADER_LEN && self.has_question)
            || self.more.iter().any(|l| l.at == Some(at) && !l.dname_owner)
    }

    /// How many names the chain holds (the question's included).
    pub(super) fn len(&self) -> usize {
        usize::from(self.has_question) + self.more.len()
    }

    /// Whether every owner is inside the zone, so [`Scope::in_zone`] needs no owner.
    pub(super) fn zone_is_root(&self) -> bool {
        self.zone == [0]
    }

    /// Whether an authority or additional record owned by `owner` stays: its owner is the
    /// zone's apex or below it (for the root zone, every owner is).
    pub(super) fn in_zone(&self, owner: &Name) -> bool {
        self.zone_is_root() || owner.is_at_or_below(self.zone)
    }

    /// Whether the answer record `rr` of `msg`, owned by `owner` (`None`: by the question's
    /// name), is on the chain; a CNAME or DNAME kept adds its target. A record met before the
    /// CNAME that leads to it is not kept here: the caller walks the section again when the
    /// chain grew after a drop.
    pub(super) fn answer(
        &mut self,
        msg: &[u8],
        names: &mut Names,
        rr: &Rr,
        owner: Option<&Name>,
    ) -> Result<bool, WalkError> {
        if !self.has_question {
            return Ok(true);
        }
        let qname = &self.qname;
        let on_chain = match owner {
            None => true,
            Some(owner) => {
                qname.wire() == owner.wire()
                    || self
                        .more
                        .iter()
                        .any(|l| !l.dname_owner && l.name.wire() == owner.wire())
            }
        };
        if on_chain {
            if rr.rtype == rtype::CNAME {
                let mut target = Name::default();
                names.read(msg, rr.rdata, Some(&mut target))?;
                self.add(target, false, Some(rr.rdata));
            }
            return Ok(true);
        }
        let Some(owner) = owner else {
            return Ok(true);
        };
        match rr.rtype {
            DNAME => self.dname(msg, names, rr, owner),
            RRSIG => Ok(self
                .more
                .iter()
                .any(|l| l.dname_owner && l.name.wire() == owner.wire())),
            _ => Ok(false),
        }
    }

    /// A DNAME at `owner` is on the chain when `owner` is a proper ancestor of a name on it
    /// (RFC 6672 §2.2: it redirects the names below its owner, not the owner itself). Each
    /// such name, with `owner` replaced by the DNAME's target, joins the chain.
    fn dname(
        &mut self,
        msg: &[u8],
        names: &mut Names,
        rr: &Rr,
        owner: &Name,
    ) -> Result<bool, WalkError> {
        let mut target = Name::default();
        names.read(msg, rr.rdata, Some(&mut target))?;
        let mut redirected: [Option<Name>; MAX_CHAIN] = [None; MAX_CHAIN];
        let mut found = 0;
        let question = self.has_question.then_some(&self.qname);
        let chain = question
            .into_iter()
            .chain(self.more.iter().filter(|l| !l.dname_owner).map(|l| &l.name));
        for name in chain {
            let Some(cut) = name
                .label_starts()
                .skip(1)
                .find(|&at| name.wire().get(at..) == Some(owner.wire()))
            else {
                continue;
            };
            let mut joined = Name::default();
            let prefix = name.wire().get(..cut).unwrap_or_default();
            // Longer than 255 bytes: no name to follow (RFC 6672 §2.2, YXDOMAIN).
            if joined.set(&[prefix, target.wire()].concat())
                && let Some(slot) = redirected.get_mut(found)
            {
                *slot = Some(joined);
                found += 1;
            }
        }
        if found == 0 {
            return Ok(false);
        }
        self.add(*owner, true, None);
        for name in redirected.into_iter().flatten() {
            self.add(name, false, None);
        }
        Ok(true)
    }

    fn add(&mut self, name: Name, dname_owner: bool, at: Option<usize>) {
        let known = (self.has_question && !dname_owner && self.qname.wire() == name.wire())
            || self
                .more
                .iter()
                .any(|l| l.dname_owner == dname_owner && l.name.wire() == name.wire());
        if !known && self.len() < MAX_CHAIN {
            self.more.push(Link {
                name,
                dname_owner,
                at,
            });
        }
    }
}
