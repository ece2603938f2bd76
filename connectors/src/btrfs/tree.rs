//! Trees: internal nodes of key pointers over leaves of keyed items, read by key range.
//!
//! Every node is checked as the kernel's tree checker does the parts that matter here: its
//! level is one below its parent's, its keys strictly increase and lie within the range its
//! parent gives it, its first key is the one its parent names it by, and its items lie inside
//! it. So a range read visits each node at most once, however the pointers are forged, and
//! descends at most [`MAX_LEVEL`] levels.

use super::{Error, corrupt};
use crate::bytes::{le32, le64};

/// `btrfs_header`, `btrfs_item` and `btrfs_key_ptr`.
pub(super) const HEADER: usize = 101;
const ITEM: usize = 25;
const KEY_PTR: usize = 33;
/// Levels run from 0 (leaves) to 7.
pub(super) const MAX_LEVEL: u8 = 7;

/// A key: items sort by object id, then type, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub objectid: u64,
    pub kind: u8,
    pub offset: u64,
}

impl Key {
    pub const SIZE: usize = 17;

    pub fn new(objectid: u64, kind: u8, offset: u64) -> Key {
        Key { objectid, kind, offset }
    }

    /// The key at `at` in `buf`, if it fits.
    pub fn parse(buf: &[u8], at: usize) -> Option<Key> {
        buf.get(at..at.checked_add(Self::SIZE)?)?;
        Some(Key { objectid: le64(buf, at), kind: *buf.get(at + 8)?, offset: le64(buf, at + 9) })
    }
}

/// A tree to read: its root node's logical address and level.
#[derive(Debug, Clone, Copy)]
pub(super) struct Root {
    pub bytenr: u64,
    pub level: u8,
}

/// Reads the node at a logical address, checked to be of the given level.
pub(super) type ReadNode<'a> = dyn Fn(u64, u8) -> Result<Vec<u8>, Error> + 'a;
/// Takes one item: its key and its bytes.
pub(super) type Each<'a> = dyn FnMut(Key, &[u8]) -> Result<(), Error> + 'a;

/// Calls `each` with every item of the tree at `root` whose key lies in `from..=to`, in key
/// order. `what` names the tree in errors.
pub(super) fn visit(
    read_node: &ReadNode,
    root: Root,
    (from, to): (Key, Key),
    what: &str,
    each: &mut Each,
) -> Result<(), Error> {
    if root.level > MAX_LEVEL {
        return Err(corrupt(format!("{what}: a root of level {}", root.level)));
    }
    let mut walk = Walk { read_node, from, to, what, each };
    walk.node(root.bytenr, root.level, None, None)
}

struct Walk<'a, 'b> {
    read_node: &'a ReadNode<'a>,
    from: Key,
    to: Key,
    what: &'a str,
    each: &'b mut Each<'b>,
}

impl Walk<'_, '_> {
    /// Visits the node at `bytenr`, whose parent names it by `first` and bounds its keys below
    /// `upper` (neither for the root).
    fn node(&mut self, bytenr: u64, level: u8, first: Option<Key>, upper: Option<Key>) -> Result<(), Error> {
        let node = (self.read_node)(bytenr, level)?;
        let bad = |why: String| corrupt(format!("{}: the node at {bytenr}: {why}", self.what));
        let count = le32(&node, 0x60) as usize;
        let entry = if level == 0 { ITEM } else { KEY_PTR };
        if count.checked_mul(entry).is_none_or(|n| HEADER + n > node.len()) {
            return Err(bad(format!("{count} items do not fit")));
        }
        if count == 0 && (first.is_some() || level > 0) {
            return Err(bad("no items, and not an empty root leaf".into()));
        }
        let key_at = |i: usize| Key::parse(&node, HEADER + i * entry).unwrap_or(Key::new(0, 0, 0));
        // Keys strictly increase, start where the parent says, and stay below its bound.
        for i in 0..count {
            let key = key_at(i);
            let in_order = match i {
                0 => first.is_none_or(|f| f == key),
                _ => key_at(i - 1) < key,
            };
            if !in_order || upper.is_some_and(|u| key >= u) {
                return Err(bad(format!("key {key:?} (item {i}) is out of order")));
            }
        }
        if level == 0 {
            for i in 0..count {
                let key = key_at(i);
                if key < self.from || key > self.to {
                    continue;
                }
                let at = HEADER + i * ITEM + Key::SIZE;
                let (offset, size) = (le32(&node, at) as usize, le32(&node, at + 4) as usize);
                let start = HEADER + offset;
                let data = start
                    .checked_add(size)
                    .filter(|_| start >= HEADER + count * ITEM)
                    .and_then(|end| node.get(start..end))
                    .ok_or_else(|| bad(format!("item {i}: {size} bytes at {offset} lie outside the leaf")))?;
                (self.each)(key, data)?;
            }
            return Ok(());
        }
        for i in 0..count {
            let key = key_at(i);
            let next = if i + 1 < count { Some(key_at(i + 1)) } else { upper };
            // The child holds keys from `key` up to (not including) `next`.
            if key > self.to || next.is_some_and(|n| n <= self.from) {
                continue;
            }
            let child = le64(&node, HEADER + i * KEY_PTR + Key::SIZE);
            self.node(child, level - 1, Some(key), next)?;
        }
        Ok(())
    }
}

/// Items kept from a tree, in key order, their bytes in one buffer.
#[derive(Default)]
pub(super) struct Items {
    keys: Vec<Key>,
    spans: Vec<(usize, usize)>,
    data: Vec<u8>,
}

impl Items {
    /// Keeps an item; keys come in increasing order.
    pub fn push(&mut self, key: Key, data: &[u8]) {
        self.keys.push(key);
        self.spans.push((self.data.len(), data.len()));
        self.data.extend_from_slice(data);
    }

    /// What the items take in memory.
    pub fn bytes(&self) -> usize {
        self.data.len() + self.keys.len() * (size_of::<Key>() + size_of::<(usize, usize)>())
    }

    /// The items whose keys lie in `from..=to`, in key order.
    pub fn range(&self, (from, to): (Key, Key)) -> impl Iterator<Item = (Key, &[u8])> {
        let start = self.keys.partition_point(|k| *k < from);
        let end = self.keys.partition_point(|k| *k <= to);
        (start..end.max(start)).filter_map(move |i| {
            let (at, len) = *self.spans.get(i)?;
            Some((*self.keys.get(i)?, self.data.get(at..at + len)?))
        })
    }
}
