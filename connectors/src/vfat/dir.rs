//! Directory entries: 32-byte short (8.3) entries, each optionally preceded by the long
//! file name (LFN) fragments that spell its long name.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::boot::Label;
use super::{Error, corrupt, le16};

pub(super) const ENTRY_LEN: usize = 32;
pub(super) const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_VOLUME: u8 = 0x08;
pub(super) const ATTR_DIRECTORY: u8 = 0x10;
/// Read-only, hidden, system and volume together mark an LFN fragment.
const ATTR_LFN: u8 = 0x0F;
/// The two low bits are reserved, so the LFN test masks them out with archive/directory.
const ATTR_LFN_MASK: u8 = 0x3F;
/// NT case bits: the base name and the extension are stored upper case but shown lower.
const CASE_LOWER_BASE: u8 = 0x08;
const CASE_LOWER_EXT: u8 = 0x10;
const DELETED: u8 = 0xE5;
/// A first byte of 0x05 stands for 0xE5, a lead byte in some code pages.
const KANJI_E5: u8 = 0x05;
/// An LFN holds at most 255 characters: 20 fragments of 13.
const MAX_LFN_FRAGMENTS: u8 = 20;
const LFN_LAST: u8 = 0x40;
/// Where an LFN fragment keeps its 13 UTF-16 units.
const LFN_UNITS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

pub(super) struct Entry {
    pub name: String,
    pub attr: u8,
    pub cluster: u32,
    pub size: u32,
    pub date: u16,
    pub time: u16,
}

pub(super) struct Listing {
    /// Live entries in on-disk order, without ".", "..", labels and LFN fragments.
    pub entries: Vec<Entry>,
    /// The first volume-label entry (meaningful in the root directory only).
    pub label: Option<Label>,
}

/// Parses a directory's bytes (its whole cluster chain, or the FAT12/16 root region) up to
/// the first entry that starts with 0, which ends the directory (as for Windows, mtools and
/// fsck.fat; Linux would read on). `fat32` says whether entries carry the high 16 bits of
/// their first cluster.
pub(super) fn parse(raw: &[u8], fat32: bool, path: &str) -> Result<Listing, Error> {
    let mut out = Listing { entries: Vec::new(), label: None };
    let mut names = HashSet::new();
    let mut lfn: Option<Lfn> = None;
    for (index, chunk) in raw.chunks_exact(ENTRY_LEN).enumerate() {
        let Ok(e) = <&[u8; ENTRY_LEN]>::try_from(chunk) else {
            break;
        };
        let attr = e[11];
        match e[0] {
            0 => break,
            DELETED => {
                lfn = None;
                continue;
            }
            _ if attr & ATTR_LFN_MASK == ATTR_LFN => {
                lfn = Lfn::push(lfn.take(), e);
                continue;
            }
            _ => {}
        }
        let long = lfn.take();
        let mut short = [0u8; 11];
        short.copy_from_slice(&e[..11]);
        // Labels and what else carries the volume bit (as blkid, a label is not also a
        // directory) are not files.
        if attr & ATTR_VOLUME != 0 {
            if attr & ATTR_DIRECTORY == 0 {
                out.label.get_or_insert(short);
            }
            continue;
        }
        if &short == DOT || &short == DOTDOT {
            continue;
        }
        // A long name whose checksum does not match this short name belongs to an entry
        // that was replaced by a system unaware of long names: the short name holds.
        let name = long.and_then(|l| l.name(checksum(&short))).unwrap_or_else(|| short_name(&short, e[12]));
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(corrupt(format!("directory {path}, entry {index}: name {name:?} is invalid")));
        }
        if !names.insert(name.clone()) {
            return Err(corrupt(format!("directory {path} holds two entries named {name:?}")));
        }
        // The high half is FAT32's; FAT12/16 left the field to other uses (OS/2 EAs).
        let high = if fat32 { u32::from(le16(e, 20)) } else { 0 };
        out.entries.push(Entry {
            name,
            attr,
            cluster: high << 16 | u32::from(le16(e, 26)),
            size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
            date: le16(e, 24),
            time: le16(e, 22),
        });
    }
    Ok(out)
}

/// A long name being gathered: fragments come last first, numbered down to 1.
struct Lfn {
    units: Vec<u16>,
    checksum: u8,
    /// The sequence number the next fragment must carry; 0 once complete.
    next: u8,
}

impl Lfn {
    /// Adds a fragment; a fragment out of sequence, or with another checksum, drops the
    /// whole name (the short name will be used), as Linux does.
    fn push(state: Option<Lfn>, e: &[u8; ENTRY_LEN]) -> Option<Lfn> {
        let seq = e[0] & 0x1F;
        let checksum = e[13];
        let mut lfn = if e[0] & LFN_LAST != 0 {
            if seq > MAX_LFN_FRAGMENTS {
                return None;
            }
            Lfn { units: vec![0xFFFF; 13 * usize::from(seq)], checksum, next: seq }
        } else {
            state?
        };
        if seq == 0 || seq != lfn.next || checksum != lfn.checksum {
            return None;
        }
        let start = (usize::from(seq) - 1) * 13;
        let slots = lfn.units.get_mut(start..start + 13)?;
        for (slot, &offset) in slots.iter_mut().zip(&LFN_UNITS) {
            *slot = le16(e, offset);
        }
        lfn.next = seq - 1;
        Some(lfn)
    }

    /// The name, when complete and made for the short entry with `checksum`; it ends at the
    /// first NUL unit (0xFFFF pads the rest).
    fn name(self, checksum: u8) -> Option<String> {
        if self.next != 0 || self.checksum != checksum {
            return None;
        }
        let end = self.units.iter().position(|&u| u == 0);
        let units = self.units.get(..end.unwrap_or(self.units.len()))?;
        let mut out = String::with_capacity(units.len());
        for c in char::decode_utf16(units.iter().copied()) {
            match c {
                Ok(c) => out.push(c),
                // An unpaired surrogate: its WTF-8 bytes, escaped as bytes that are not
                // UTF-8 are in paths.
                Err(e) => {
                    let u = e.unpaired_surrogate();
                    let bytes = [0xE0 | (u >> 12) as u8, 0x80 | ((u >> 6) & 0x3F) as u8, 0x80 | (u & 0x3F) as u8];
                    for b in bytes {
                        escape_byte(&mut out, b);
                    }
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The checksum of a short name that its LFN fragments carry.
fn checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// "NAME.EXT" from the padded 8.3 form, with the NT case bits applied.
fn short_name(short: &[u8; 11], case: u8) -> String {
    let (base, ext) = short.split_at(8);
    let mut out = String::with_capacity(12);
    for (i, &b) in trim(base).iter().enumerate() {
        let b = if i == 0 && b == KANJI_E5 { DELETED } else { b };
        push_oem(&mut out, b, case & CASE_LOWER_BASE != 0);
    }
    let ext = trim(ext);
    if !ext.is_empty() {
        out.push('.');
        for &b in ext {
            push_oem(&mut out, b, case & CASE_LOWER_EXT != 0);
        }
    }
    out
}

/// A volume label as shown: trailing spaces trimmed.
pub(super) fn label(raw: &Label) -> String {
    let mut out = String::with_capacity(11);
    for &b in trim(raw) {
        push_oem(&mut out, b, false);
    }
    out
}

fn trim(field: &[u8]) -> &[u8] {
    let end = field.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    field.get(..end).unwrap_or_default()
}

/// Short names and labels are in an OEM code page that the volume does not record; ASCII
/// is common to them all, other bytes are rendered as `\xNN`.
fn push_oem(out: &mut String, b: u8, lower: bool) {
    if b.is_ascii() {
        out.push(char::from(if lower { b.to_ascii_lowercase() } else { b }));
    } else {
        escape_byte(out, b);
    }
}

fn escape_byte(out: &mut String, b: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\x{b:02x}");
}
