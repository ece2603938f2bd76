//! Extended attributes: short form (inside the inode), leaf blocks, and node blocks above
//! them; values too big for a leaf lie in blocks of their own ("remote"). Names come back as
//! the kernel shows them: `user.`, `trusted.` and `security.` by namespace; the POSIX ACLs
//! XFS keeps as `trusted.SGI_ACL_FILE` and `trusted.SGI_ACL_DEFAULT` also as
//! `system.posix_acl_access` and `system.posix_acl_default` in the kernel's xattr encoding
//! (the kernel lists both). Parent pointers and entries left incomplete by a crash are not
//! attributes anyone sees, and are left out.

use super::inode::{FMT_BTREE, FMT_EXTENTS, FMT_LOCAL, Fork, Inode, Record, lookup};
use super::{Error, Volume, corrupt};
use crate::bytes::{be16, be32, be64};
use crate::fs::escape;

/// Entry flags: value in the leaf, namespaces, and an entry being made.
const LOCAL: u8 = 1 << 0;
const ROOT: u8 = 1 << 1;
const SECURE: u8 = 1 << 2;
const PARENT: u8 = 1 << 3;
const INCOMPLETE: u8 = 1 << 7;

/// Leaf and node magics (at byte 8 of the block), versions 4 and 5, and header sizes.
const LEAF_V4: u16 = 0xFBEE;
const LEAF_V5: u16 = 0x3BEE;
const NODE_V4: u16 = 0xFEBE;
const NODE_V5: u16 = 0x3EBE;
const LEAF_HDR_V4: usize = 32;
const LEAF_HDR_V5: usize = 80;
const NODE_HDR_V4: usize = 16;
const NODE_HDR_V5: usize = 64;
/// Remote value blocks on version 5 start with a header ("XARM").
const RMT_MAGIC: u32 = 0x5841_524D;
const RMT_HDR: usize = 56;
/// The deepest an attribute tree goes, and the largest value the kernel writes.
const MAX_DEPTH: usize = 5;
const MAX_VALUE: usize = 65536;
/// ACL entry tags that carry an id.
const ACL_USER: u32 = 0x02;
const ACL_GROUP: u32 = 0x08;

/// All attributes of an inode, in the order the kernel lists them.
pub(super) fn read(vol: &Volume, inode: &Inode) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let ino = inode.ino;
    let mut raw = Vec::new();
    match inode.aformat {
        _ if inode.attr_fork.is_empty() => {}
        FMT_LOCAL => short_form(ino, &inode.attr_fork, &mut raw)?,
        FMT_EXTENTS | FMT_BTREE => {
            // A fork whose attributes were all removed may keep no block at all.
            let map = vol.records(inode, Fork::Attr)?;
            if !map.is_empty() {
                tree(vol, ino, &map, &mut raw)?;
            }
        }
        other => {
            return Err(corrupt(format!("inode {ino}: attribute fork format {other} is not one this reader knows")));
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    for (flags, name, value) in raw {
        if flags & (PARENT | INCOMPLETE) != 0 {
            continue;
        }
        if let Some(acl) = acl_name(flags, &name) {
            let converted = posix_acl(&value).ok_or_else(|| corrupt(format!("inode {ino}: {acl}: not an XFS ACL")))?;
            out.push((acl.to_string(), converted));
        }
        out.push(named(ino, flags, &name, value)?);
    }
    Ok(out)
}

/// The name under which the kernel also shows an ACL.
fn acl_name(flags: u8, name: &[u8]) -> Option<&'static str> {
    match (flags & ROOT != 0, name) {
        (true, b"SGI_ACL_FILE") => Some("system.posix_acl_access"),
        (true, b"SGI_ACL_DEFAULT") => Some("system.posix_acl_default"),
        _ => None,
    }
}

/// The name the kernel shows, and the value it returns.
fn named(ino: u64, flags: u8, name: &[u8], value: Vec<u8>) -> Result<(String, Vec<u8>), Error> {
    let prefix = match flags & (ROOT | SECURE) {
        0 => "user.",
        ROOT => "trusted.",
        SECURE => "security.",
        _ => return Err(corrupt(format!("inode {ino}: attribute {:?} is in two namespaces", escape(name)))),
    };
    Ok((format!("{prefix}{}", escape(name)), value))
}

/// An XFS ACL (big-endian count, then tag, id and permissions of each entry) in the kernel's
/// xattr encoding (version 2, then little-endian tag, permissions and id).
fn posix_acl(xfs: &[u8]) -> Option<Vec<u8>> {
    let count = usize::try_from(be32(xfs, 0)).ok()?;
    if xfs.len() != 4 + count.checked_mul(12)? {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    for i in 0..count {
        let at = 4 + i * 12;
        out.extend_from_slice(&u16::try_from(be32(xfs, at)).ok()?.to_le_bytes());
        out.extend_from_slice(&be16(xfs, at + 8).to_le_bytes());
        // Only named users and groups have an id; the kernel writes the others as undefined.
        let id = match be32(xfs, at) {
            ACL_USER | ACL_GROUP => be32(xfs, at + 4),
            _ => u32::MAX,
        };
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

/// Short form: total size and count, then each entry's name length, value length, flags,
/// name and value.
fn short_form(ino: u64, area: &[u8], out: &mut Vec<(u8, Vec<u8>, Vec<u8>)>) -> Result<(), Error> {
    let bad = |what: String| corrupt(format!("inode {ino}: short-form attributes: {what}"));
    let total = usize::from(be16(area, 0));
    if total < 4 || total > area.len() {
        return Err(bad(format!("{total} bytes in a fork of {}", area.len())));
    }
    let count = usize::from(area.get(2).copied().unwrap_or(0));
    let mut pos = 4;
    for i in 0..count {
        let (name_len, value_len) =
            (usize::from(area.get(pos).copied().unwrap_or(0)), usize::from(area.get(pos + 1).copied().unwrap_or(0)));
        let flags = area.get(pos + 2).copied().unwrap_or(0);
        let end = pos + 3 + name_len + value_len;
        if name_len == 0 || end > total {
            return Err(bad(format!("entry {i} at byte {pos} runs past their {total} bytes")));
        }
        let name = area.get(pos + 3..pos + 3 + name_len).unwrap_or_default().to_vec();
        let value = area.get(pos + 3 + name_len..end).unwrap_or_default().to_vec();
        out.push((flags, name, value));
        pos = end;
    }
    Ok(())
}

/// The attribute tree from block 0 of the fork: a leaf, or node blocks down to leaves, read in
/// hash order.
fn tree(vol: &Volume, ino: u64, map: &[Record], out: &mut Vec<(u8, Vec<u8>, Vec<u8>)>) -> Result<(), Error> {
    let v5 = vol.sb.v5;
    let mut pending = vec![(0u64, 0usize)];
    let mut seen = std::collections::HashSet::new();
    while let Some((logical, depth)) = pending.pop() {
        let at = || format!("inode {ino}: attribute block {logical}");
        if !seen.insert(logical) || depth > MAX_DEPTH {
            return Err(corrupt(format!("{}: reached twice, or deeper than {MAX_DEPTH} levels", at())));
        }
        let block = lookup(map, logical).ok_or_else(|| corrupt(format!("{}: not mapped", at())))?;
        let b = vol.block(block, &at)?;
        if v5 {
            super::checksum(&b, 12, &at)?;
        }
        let magic = be16(&b, 8);
        match (v5, magic) {
            (false, LEAF_V4) | (true, LEAF_V5) => leaf(vol, ino, map, &b, logical, out)?,
            (false, NODE_V4) | (true, NODE_V5) => {
                let hdr = if v5 { NODE_HDR_V5 } else { NODE_HDR_V4 };
                let count = usize::from(be16(&b, hdr - if v5 { 8 } else { 4 }));
                if hdr + count * 8 > b.len() {
                    return Err(corrupt(format!("{}: {count} node entries do not fit", at())));
                }
                // Each entry: the highest hash below it, and the block it leads to.
                pending.extend((0..count).rev().map(|i| (u64::from(be32(&b, hdr + i * 8 + 4)), depth + 1)));
            }
            _ => return Err(corrupt(format!("{}: magic {magic:#06x} is not an attribute leaf's or node's", at()))),
        }
    }
    Ok(())
}

/// The entries of a leaf block: each points at its name and value (or remote value) in the
/// block's name area.
fn leaf(
    vol: &Volume,
    ino: u64,
    map: &[Record],
    b: &[u8],
    logical: u64,
    out: &mut Vec<(u8, Vec<u8>, Vec<u8>)>,
) -> Result<(), Error> {
    let v5 = vol.sb.v5;
    let bad = |what: String| corrupt(format!("inode {ino}: attribute leaf {logical}: {what}"));
    let hdr = if v5 { LEAF_HDR_V5 } else { LEAF_HDR_V4 };
    let count = usize::from(be16(b, if v5 { 56 } else { 12 }));
    if hdr + count * 8 > b.len() {
        return Err(bad(format!("{count} entries do not fit")));
    }
    for i in 0..count {
        let entry = hdr + i * 8;
        let at = usize::from(be16(b, entry + 4));
        let flags = b.get(entry + 6).copied().unwrap_or(0);
        if flags & INCOMPLETE != 0 {
            continue;
        }
        let past = |what: &str| bad(format!("entry {i}: {what} runs past the block"));
        if flags & LOCAL != 0 {
            let value_len = usize::from(be16(b, at));
            let name_len = usize::from(b.get(at + 2).copied().unwrap_or(0));
            let name = b.get(at + 3..at + 3 + name_len).filter(|n| !n.is_empty()).ok_or_else(|| past("its name"))?;
            let value = b.get(at + 3 + name_len..at + 3 + name_len + value_len).ok_or_else(|| past("its value"))?;
            out.push((flags, name.to_vec(), value.to_vec()));
        } else {
            let value_block = u64::from(be32(b, at));
            let value_len = usize::try_from(be32(b, at + 4)).unwrap_or(usize::MAX);
            let name_len = usize::from(b.get(at + 8).copied().unwrap_or(0));
            let name = b.get(at + 9..at + 9 + name_len).filter(|n| !n.is_empty()).ok_or_else(|| past("its name"))?;
            let value = remote(vol, ino, map, value_block, value_len)
                .map_err(|e| e.map_message(|m| format!("{m} (attribute {:?})", escape(name))))?;
            out.push((flags, name.to_vec(), value));
        }
    }
    Ok(())
}

/// A value kept in blocks of its own, from file block `first` of the attribute fork. On
/// version 5 each block starts with a header saying which bytes of the value it holds.
fn remote(vol: &Volume, ino: u64, map: &[Record], first: u64, len: usize) -> Result<Vec<u8>, Error> {
    let bad = |what: String| corrupt(format!("inode {ino}: remote attribute value at block {first}: {what}"));
    if len > MAX_VALUE {
        return Err(bad(format!("{len} bytes, more than {MAX_VALUE}")));
    }
    let v5 = vol.sb.v5;
    let mut value = Vec::with_capacity(len);
    let mut logical = first;
    while value.len() < len {
        let block = lookup(map, logical).ok_or_else(|| bad(format!("block {logical} is not mapped")))?;
        let b = vol.block(block, &|| format!("inode {ino}: remote attribute value block {logical}"))?;
        let data = if v5 {
            let (offset, bytes) = (be32(&b, 4) as usize, be32(&b, 8) as usize);
            if be32(&b, 0) != RMT_MAGIC || be64(&b, 32) != ino || offset != value.len() {
                return Err(bad(format!("block {logical} is not the next part of this inode's value")));
            }
            super::checksum(&b, 12, &|| format!("inode {ino}: remote attribute value block {logical}"))?;
            b.get(RMT_HDR..RMT_HDR.saturating_add(bytes))
                .ok_or_else(|| bad(format!("block {logical} says {bytes} bytes")))?
        } else {
            &b[..]
        };
        let want = (len - value.len()).min(data.len());
        if want == 0 {
            return Err(bad(format!("block {logical} holds none of it")));
        }
        value.extend_from_slice(&data[..want]);
        logical += 1;
    }
    Ok(value)
}
