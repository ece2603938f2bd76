//! Fields of on-disk structures, little- and big-endian. Callers check lengths first; a field out of
//! range reads as 0 rather than panicking, because images are untrusted.

pub(crate) fn le16(buf: &[u8], offset: usize) -> u16 {
    buf.get(offset..offset.saturating_add(2)).and_then(|b| b.try_into().ok()).map_or(0, u16::from_le_bytes)
}

pub(crate) fn le32(buf: &[u8], offset: usize) -> u32 {
    buf.get(offset..offset.saturating_add(4)).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

pub(crate) fn le64(buf: &[u8], offset: usize) -> u64 {
    buf.get(offset..offset.saturating_add(8)).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

// Big-endian fields, for XFS.

pub(crate) fn be16(buf: &[u8], offset: usize) -> u16 {
    buf.get(offset..offset.saturating_add(2)).and_then(|b| b.try_into().ok()).map_or(0, u16::from_be_bytes)
}

pub(crate) fn be32(buf: &[u8], offset: usize) -> u32 {
    buf.get(offset..offset.saturating_add(4)).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes)
}

pub(crate) fn be64(buf: &[u8], offset: usize) -> u64 {
    buf.get(offset..offset.saturating_add(8)).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
}
