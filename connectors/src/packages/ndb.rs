//! rpm's NDB database, `Packages.db`: SUSE Linux Enterprise 15 and openSUSE Leap keep their
//! rpm headers in it. Written here because no maintained Rust crate reads it; the layout is
//! rpm's own (`lib/backend/ndb/rpmpkg.c`), little-endian throughout:
//!
//! - a 32-byte file header: magic `RpmP`, version 0, generation, the number of 4 KiB slot
//!   pages, the next package number;
//! - after it, filling the slot pages, 16-byte slots: magic `Slot`, package number, and the
//!   blob's offset and length in 16-byte blocks (offset 0: a free slot);
//! - after the slot pages, one blob per used slot: a 16-byte head (magic `BlbS`, package
//!   number, generation, length), the header blob, zero padding to a block, and a 12-byte
//!   tail (Adler-32 of all before it, length, magic `BlbE`).
//!
//! Every blob is checked as rpm checks it on a read, and blobs may not overlap, so what is
//! read is at most the file.

const FILE_MAGIC: u32 = u32::from_le_bytes(*b"RpmP");
const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"Slot");
const HEAD_MAGIC: u32 = u32::from_le_bytes(*b"BlbS");
const TAIL_MAGIC: u32 = u32::from_le_bytes(*b"BlbE");
const FILE_HEADER: usize = 32;
const SLOT: usize = 16;
const BLOCK: usize = 16;
const SLOT_PAGE: usize = 4096;
const HEAD: usize = 16;
const TAIL: usize = 12;

/// A package number and its header blob.
pub type Record = (u32, Vec<u8>);

/// Every package of the database in `file`, in slot order. Errors name the slot or blob.
pub fn read(file: &[u8], max_blob: usize) -> Result<Vec<Record>, String> {
    let le32 = |at: usize| file.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if le32(0) != Some(FILE_MAGIC) {
        return Err("not an NDB package database (magic)".into());
    }
    let version = le32(4).unwrap_or_default();
    if version != 0 {
        return Err(format!("version {version}, where rpm writes 0"));
    }
    if !file.len().is_multiple_of(BLOCK) {
        return Err(format!("the file holds {} bytes, not whole blocks of {BLOCK}", file.len()));
    }
    let slot_pages = le32(12).unwrap_or_default() as usize;
    let slots_end = slot_pages.checked_mul(SLOT_PAGE).filter(|&end| end > 0 && end <= file.len()).ok_or_else(|| {
        format!("the file holds {} bytes, its header counts {slot_pages} slot pages of {SLOT_PAGE}", file.len())
    })?;
    // (first block, blocks, slot, package) of every used slot, checked against the file first.
    let mut used = Vec::new();
    for (n, at) in (FILE_HEADER..slots_end).step_by(SLOT).enumerate() {
        let slot = n + 1;
        if le32(at) != Some(SLOT_MAGIC) {
            return Err(format!("slot {slot}: no slot magic"));
        }
        let (number, first, blocks) =
            (le32(at + 4).unwrap_or(0), le32(at + 8).unwrap_or(0) as usize, le32(at + 12).unwrap_or(0) as usize);
        if first == 0 {
            continue;
        }
        let in_file = first >= slots_end / BLOCK && first.saturating_add(blocks) <= file.len() / BLOCK;
        if number == 0 || blocks == 0 || !in_file {
            return Err(format!(
                "slot {slot}: package {number} at block {first}, {blocks} blocks, lies outside the file's blobs"
            ));
        }
        used.push((first, blocks, slot, number));
    }
    used.sort_unstable();
    for pair in used.windows(2) {
        let ((a, a_len, a_slot, _), (b, _, b_slot, _)) = (pair[0], pair[1]);
        if a + a_len > b {
            return Err(format!("slots {a_slot} and {b_slot}: their blobs overlap"));
        }
    }
    let mut numbers: Vec<u32> = used.iter().map(|u| u.3).collect();
    numbers.sort_unstable();
    if let Some(twice) = numbers.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("package {} has two slots", twice[0]));
    }
    used.sort_unstable_by_key(|u| u.2);
    used.into_iter()
        .map(|(first, blocks, slot, number)| {
            // In the file: checked with the slot above.
            let blob = file.get(first * BLOCK..(first + blocks) * BLOCK).unwrap_or_default();
            read_blob(blob, number, max_blob).map(|b| (number, b.to_vec())).map_err(|e| format!("slot {slot}: {e}"))
        })
        .collect()
}

/// The header blob inside one slot's blocks, checked as rpm checks it.
fn read_blob(blocks: &[u8], number: u32, max_blob: usize) -> Result<&[u8], String> {
    let le32 = |at: usize| blocks.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if le32(0) != HEAD_MAGIC || le32(4) != number {
        return Err(format!("package {number}: no blob head of that package"));
    }
    let len = le32(12) as usize;
    if len > max_blob {
        return Err(format!("package {number}: a blob of {len} bytes, more than {max_blob}"));
    }
    if (HEAD + len + TAIL).div_ceil(BLOCK) * BLOCK != blocks.len() {
        return Err(format!("package {number}: a blob of {len} bytes in {} blocks", blocks.len() / BLOCK));
    }
    // The length check above leaves room for the head, the blob and the tail.
    let tail = blocks.len().saturating_sub(TAIL);
    if le32(tail + 8) != TAIL_MAGIC || le32(tail + 4) as usize != len {
        return Err(format!("package {number}: the blob's tail does not close it"));
    }
    let mut sum = adler2::Adler32::new();
    sum.write_slice(blocks.get(..tail).unwrap_or_default());
    if sum.checksum() != le32(tail) {
        return Err(format!("package {number}: the blob fails its Adler-32 checksum"));
    }
    blocks.get(HEAD..HEAD + len).ok_or_else(|| format!("package {number}: the blob lies past its blocks"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagelake_tests::rpm;

    /// A database written by rpm itself: five packages installed, the second erased, so a
    /// free slot and a hole lie among the blobs. Returns the file and what `rpm -qa` lists.
    fn made_by_rpm() -> (Vec<u8>, Vec<String>) {
        let work = tempfile::tempdir().unwrap();
        let names = ["alpha", "beta", "gamma", "delta", "epsilon"];
        let packages: Vec<_> = names.iter().map(|&n| (n, "", 1 + n.len() * 40)).collect();
        let built = rpm::build(work.path(), &packages);
        let root = work.path().join("root");
        rpm::install(&rpm::ndb_binary(), &root, "/var/lib/rpm", "ndb", &built);
        rpm::erase(&rpm::ndb_binary(), &root, "/var/lib/rpm", "beta");
        let listed = rpm::query_all(&rpm::ndb_binary(), &root.join("var/lib/rpm"), "ndb");
        let names = listed.into_iter().map(|(name, _, _)| name).collect();
        (std::fs::read(root.join("var/lib/rpm/Packages.db")).unwrap(), names)
    }

    #[test]
    fn reads_what_rpm_wrote() {
        let (file, listed) = made_by_rpm();
        let records = read(&file, 1 << 20).unwrap();
        let mut names: Vec<String> =
            records.iter().map(|(_, blob)| crate::packages::rpm::parse_header(blob).unwrap().name).collect();
        names.sort();
        assert_eq!(names, listed);
        assert_eq!(names, ["alpha", "delta", "epsilon", "gamma"]);
        // A blob past the bound is refused, and so is a file cut short.
        assert!(read(&file, 100).unwrap_err().contains("more than 100"), "{:?}", read(&file, 100));
        let err = read(&file[..file.len() - BLOCK], 1 << 20).unwrap_err();
        assert!(err.contains("lies outside the file"), "{err}");
        let err = read(&file[..file.len() - 1], 1 << 20).unwrap_err();
        assert!(err.contains("not whole blocks"), "{err}");
    }

    #[test]
    fn damaged_databases_are_refused_or_read_never_panic() {
        let (pristine, _) = made_by_rpm();
        // One flipped byte inside any blob fails its checksum or its framing.
        let last_blob = pristine.len() - 64;
        let mut file = pristine.clone();
        file[last_blob] ^= 0x40;
        let err = read(&file, 1 << 20).unwrap_err();
        assert!(err.starts_with("slot "), "{err}");
        for file in imagelake_tests::corrupt::flipped_copies(&pristine, 3000, 4) {
            let _ = read(&file, 1 << 20);
        }
        assert!(read(b"not a database", 1 << 20).is_err());
    }
}
