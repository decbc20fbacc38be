//! Names in an upstream answer: decompressing them under strict rules, and the table of
//! where the names read so far begin, which every compression pointer must aim at.
//!
//! This file owns [`Name`] (a decompressed name) and [`Names`] (reading names in message
//! order). It does not know records or RDATA layouts: `validate` walks those and reads each
//! name through here.

use super::{MAX_NAME, WalkError};

/// A name, decompressed and lowercased, in wire form (length-prefixed labels, root last).
#[derive(Clone, Copy)]
pub(super) struct Name {
    bytes: [u8; MAX_NAME],
    len: u8,
}

impl Default for Name {
    fn default() -> Name {
        Name {
            bytes: [0; MAX_NAME],
            len: 0,
        }
    }
}

impl Name {
    pub(super) fn wire(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Sets the name to `wire` (already checked and lowercased); `false` if it is too long.
    pub(super) fn set(&mut self, wire: &[u8]) -> bool {
        let Some(dst) = self.bytes.get_mut(..wire.len()) else {
            return false;
        };
        dst.copy_from_slice(wire);
        // Fits: at most MAX_NAME (255) bytes were copied.
        self.len = wire.len() as u8;
        true
    }

    /// Writes `label` (length byte included) at offset `at`, lowercased; the caller has
    /// checked that it fits in 255 bytes.
    fn push(&mut self, at: usize, label: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(at..at + label.len()) {
            dst.copy_from_slice(label);
            if let Some(text) = dst.get_mut(1..) {
                text.make_ascii_lowercase();
            }
            // Fits: at most MAX_NAME (255), checked by the caller.
            self.len = (at + label.len()) as u8;
        }
    }

    /// Offsets of each label's length byte, from the first label to the root label.
    pub(super) fn label_starts(&self) -> impl Iterator<Item = usize> + '_ {
        let wire = self.wire();
        let mut at = Some(0usize);
        std::iter::from_fn(move || {
            let here = at?;
            let len = usize::from(*wire.get(here)?);
            at = (len != 0).then_some(here + 1 + len);
            Some(here)
        })
    }

    /// Whether this name is `ancestor` or below it (case already folded).
    pub(super) fn is_at_or_below(&self, ancestor: &[u8]) -> bool {
        self.label_starts()
            .any(|at| self.wire().get(at..) == Some(ancestor))
    }
}

/// Where the names read so far begin: a compression pointer may only aim at one of these.
///
/// RFC 1035 §4.1.4 lets a name end in a pointer to "a prior occurance of the same name".
/// Stricter than the RFC's letter: a pointer must aim at a place where a name read earlier
/// begins, or one of its labels, or the pointer that ends it. Anything else (a TTL, a type, a
/// count, the middle of a label, RDATA of a type whose layout nodedns does not know) is
/// refused: such a pointer may decompress today, but nodedns rewrites TTLs in place when it
/// stores and serves a message, and the name would then change or break under it. Each name
/// is also at most 255 bytes, root label included (RFC 1035 §2.3.4), and only label types 00
/// and 11 are allowed (01 and 10 are the deprecated extended and the reserved types, RFC 6891
/// §5).
///
/// Names must be read in message order for their places to be noted ([`Names::read`] only
/// notes a name that starts after every place noted so far); reading one again later checks
/// it against the same table. As every place is noted with the length of the name from
/// there, checking a pointer is one lookup: the name it aims at was checked when it was read,
/// and is not followed again.
pub(super) struct Names {
    /// (offset, bytes of the name from there to its end), offsets increasing.
    starts: Vec<(u16, u8)>,
}

impl Default for Names {
    fn default() -> Names {
        // Most answers hold fewer places than this: one allocation per message.
        Names {
            starts: Vec::with_capacity(32),
        }
    }
}

impl Names {
    /// The length of the name from `at` to its end, when a name read earlier has a place there.
    fn suffix_at(&self, at: usize) -> Option<usize> {
        let at = u16::try_from(at).ok()?;
        let i = self.starts.binary_search_by_key(&at, |&(o, _)| o).ok()?;
        self.starts.get(i).map(|&(_, len)| usize::from(len))
    }

    /// Reads the name at `at` in `msg` and returns the offset just past it in place (after its
    /// root label or its pointer). When `name` is given, the name is written into it,
    /// decompressed and lowercased. See [`Names`] for the rules.
    pub(super) fn read(
        &mut self,
        msg: &[u8],
        at: usize,
        mut name: Option<&mut Name>,
    ) -> Result<usize, WalkError> {
        let first_new = self.starts.len();
        let note = self.starts.last().is_none_or(|&(o, _)| usize::from(o) < at);
        let mut pos = at;
        let mut len = 0usize;
        let end = loop {
            let byte = *msg.get(pos).ok_or(WalkError::Truncated)?;
            if note && let Ok(place) = u16::try_from(pos) {
                // The length of the name before this place, for now: turned into the length
                // from here once the name's end is known. Fits: checked below, at most 255.
                self.starts.push((place, len as u8));
            }
            match byte & 0xC0 {
                0x00 => {
                    let label = label_at(msg, pos, len)?;
                    let next = pos + label.len();
                    if let Some(n) = name.as_deref_mut() {
                        n.push(len, label);
                    }
                    len += label.len();
                    if byte == 0 {
                        break next;
                    }
                    pos = next;
                }
                0xC0 => {
                    let low = *msg.get(pos + 1).ok_or(WalkError::Truncated)?;
                    let target = (usize::from(byte & 0x3F) << 8) | usize::from(low);
                    let suffix = if target < at {
                        self.suffix_at(target)
                    } else {
                        None
                    };
                    let suffix = suffix.ok_or(WalkError::BadPointer)?;
                    if len + suffix > MAX_NAME {
                        return Err(WalkError::TooLong);
                    }
                    if let Some(n) = name.as_deref_mut() {
                        copy_checked(msg, target, len, n)?;
                    }
                    len += suffix;
                    break pos + 2;
                }
                _ => return Err(WalkError::BadLabel),
            }
        };
        if let Some(new) = self.starts.get_mut(first_new..) {
            for (_, before) in new {
                // Fits: `len` is at most 255 and `before` at most `len`.
                *before = (len - usize::from(*before)) as u8;
            }
        }
        Ok(end)
    }
}

/// The label at `pos` of `msg`, its length byte included, when it ends inside `msg` and fits
/// a name that holds `len` bytes so far (RFC 1035 §2.3.4: 255 at most). Only for a length
/// byte of type 00.
fn label_at(msg: &[u8], pos: usize, len: usize) -> Result<&[u8], WalkError> {
    let size = 1 + usize::from(*msg.get(pos).ok_or(WalkError::Truncated)?);
    let label = msg.get(pos..pos + size).ok_or(WalkError::Truncated)?;
    if len + size > MAX_NAME {
        return Err(WalkError::TooLong);
    }
    Ok(label)
}

/// Appends to `name`, which holds `len` bytes so far, the name at `at` of `msg`, which
/// [`Names::read`] checked when it was read: pointers are followed without the table.
/// Bounded all the same, as a check that was skipped must not become a loop: every pointer
/// must aim backwards, and the name stays within 255 bytes.
fn copy_checked(msg: &[u8], at: usize, mut len: usize, name: &mut Name) -> Result<(), WalkError> {
    let mut pos = at;
    loop {
        let byte = *msg.get(pos).ok_or(WalkError::Truncated)?;
        match byte & 0xC0 {
            0x00 => {
                let label = label_at(msg, pos, len)?;
                let next = pos + label.len();
                name.push(len, label);
                len += label.len();
                if byte == 0 {
                    return Ok(());
                }
                pos = next;
            }
            0xC0 => {
                let low = *msg.get(pos + 1).ok_or(WalkError::Truncated)?;
                let target = (usize::from(byte & 0x3F) << 8) | usize::from(low);
                if target >= pos {
                    return Err(WalkError::BadPointer);
                }
                pos = target;
            }
            _ => return Err(WalkError::BadLabel),
        }
    }
}
