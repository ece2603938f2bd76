//! Partition tables (GPT through `gpt`, MBR with EBR chains through `mbrman`) and the
//! filesystem signatures found inside partitions.
//!
//! A disk with neither table is one partition spanning the whole disk, scheme `none`: a bare
//! filesystem, or bytes we do not recognise (stored raw, nothing lost).

use crate::ReadAt;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// One region of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based: the GPT entry number, the MBR slot (5 onward for logical partitions), or 1.
    pub index: u32,
    /// "gpt", "mbr" or "none".
    pub scheme: &'static str,
    /// GPT type GUID, or the MBR system id as "0x83"; empty for `none`.
    pub type_id: String,
    /// GPT partition name; empty otherwise.
    pub name: String,
    /// Offset of the first byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

/// What went wrong, naming the table structure: messages start with `partition table: `.
/// GPT entries larger than 128 bytes (valid, 128 * 2^n) are
/// [`Unsupported`](crate::ErrorKind::Unsupported); an I/O error under the table parsers keeps
/// its kind ([`Error::from_io`](crate::Error::from_io)); the rest is
/// [`Corrupt`](crate::ErrorKind::Corrupt).
pub type Error = crate::Error;
crate::prefixed!("partition table");

/// Finds the partitions of `disk`. Errors name the table structure that is wrong.
pub fn read(disk: &dyn ReadAt) -> Result<Vec<Partition>, Error> {
    let size = disk.size();
    let mut sector0 = [0u8; 512];
    if size < 512 || disk.read_exact_at(&mut sector0, 0).is_err() {
        return Ok(vec![whole_disk(size)]);
    }
    let has_mbr_signature = sector0[510..512] == [0x55, 0xAA];
    let protective = has_mbr_signature && (0..4).any(|i| sector0[446 + 16 * i + 4] == 0xEE);
    if protective {
        return read_gpt(disk);
    }
    if !has_mbr_signature || fs_type(disk).is_some() {
        return Ok(vec![whole_disk(size)]);
    }
    read_mbr(disk, &sector0)
}

/// Runs a third-party table parser, turning a panic on malformed input into an error: the
/// image is untrusted, the parser is not ours to fix, and one bad image must not take the
/// process down.
fn guard<T>(table: &str, parse: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
        .unwrap_or_else(|_| Err(corrupt(format!("{table}: the table is malformed (its parser gave up)"))))
}

fn whole_disk(size: u64) -> Partition {
    Partition { index: 1, scheme: "none", type_id: String::new(), name: String::new(), start: 0, size }
}

/// The size of a GPT partition entry the gpt crate reads; it asserts (panics) on any other.
const GPT_ENTRY: u32 = 128;

/// Checks what the gpt crate would assert of the headers it may use (the primary at LBA 1,
/// the backup it names, and one at the last LBA): a header with another partition entry size
/// is an error here, by name (found by fuzzing: the crate's assert panics).
fn check_gpt_headers(disk: &dyn ReadAt) -> Result<(), Error> {
    let last = disk.size() / 512;
    let mut at = vec![1u64, last.saturating_sub(1)];
    let mut header = [0u8; 92];
    if disk.read_exact_at(&mut header, 512).is_ok() && &header[..8] == b"EFI PART" {
        at.push(u64::from_le_bytes(header[32..40].try_into().unwrap_or_default()));
    }
    for lba in at {
        let Some(offset) = lba.checked_mul(512) else { continue };
        if disk.read_exact_at(&mut header, offset).is_err() || &header[..8] != b"EFI PART" {
            continue;
        }
        let size = u32::from_le_bytes(header[84..88].try_into().unwrap_or_default());
        if size != GPT_ENTRY {
            // The UEFI spec allows 128 * 2^n: larger entries are valid, other sizes are not.
            let what = format!(
                "GPT header at LBA {lba}: partition entries of {size} bytes; only {GPT_ENTRY}-byte entries are read"
            );
            return Err(if size > GPT_ENTRY && size.is_power_of_two() { unsupported(what) } else { corrupt(what) });
        }
    }
    Ok(())
}

fn read_gpt(disk: &dyn ReadAt) -> Result<Vec<Partition>, Error> {
    let lb = gpt::disk::LogicalBlockSize::Lb512;
    check_gpt_headers(disk)?;
    let gpt = guard("GPT", || {
        gpt::GptConfig::new().writable(false).logical_block_size(lb).open_from_device(Device::new(disk)).map_err(|e| {
            match &e {
                gpt::GptError::Io(io) => read_failed(io, format!("GPT: {e}")),
                _ => corrupt(format!("GPT: {e}")),
            }
        })
    })?;
    let mut out = Vec::new();
    for (&index, p) in gpt.partitions() {
        if !p.is_used() {
            continue;
        }
        let (Ok(start), Ok(size)) = (p.bytes_start(lb), p.bytes_len(lb)) else {
            return Err(corrupt(format!("GPT entry {index}: LBAs {}..{} overflow", p.first_lba, p.last_lba)));
        };
        out.push(Partition {
            index,
            scheme: "gpt",
            type_id: p.part_type_guid.guid.to_string(),
            name: p.name.clone(),
            start,
            size,
        });
    }
    Ok(out)
}

fn read_mbr(disk: &dyn ReadAt, sector0: &[u8; 512]) -> Result<Vec<Partition>, Error> {
    // mbrman panics when every used entry starts at sector 0 (found by fuzzing); such an
    // entry would overlap the MBR itself, so it is an error whatever else the table says.
    for slot in 0..4 {
        let entry = &sector0[446 + 16 * slot..446 + 16 * (slot + 1)];
        let start = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
        if entry[4] != 0 && start == 0 {
            return Err(corrupt(format!("MBR entry {}: partition starts at sector 0, over the MBR itself", slot + 1)));
        }
    }
    let mbr = guard("MBR", || {
        mbrman::MBR::read_from(&mut Device::new(disk), 512).map_err(|e| match &e {
            mbrman::Error::Io(io) => read_failed(io, format!("MBR: {e}")),
            _ => corrupt(format!("MBR: {e}")),
        })
    })?;
    let mut out = Vec::new();
    for (index, p) in mbr.iter() {
        if !p.is_used() || p.is_extended() {
            continue;
        }
        out.push(Partition {
            index: index as u32,
            scheme: "mbr",
            type_id: format!("0x{:02x}", p.sys),
            name: String::new(),
            start: u64::from(p.starting_lba) * 512,
            size: u64::from(p.sectors) * 512,
        });
    }
    Ok(out)
}

/// The filesystem (or volume) type found by its signature, if any.
pub fn fs_type(src: &dyn ReadAt) -> Option<&'static str> {
    let at = |offset: u64, sig: &[u8]| {
        let mut buf = vec![0u8; sig.len()];
        src.read_exact_at(&mut buf, offset).is_ok() && buf == sig
    };
    if crate::ext4::probe(src) {
        return Some("ext4"); // refined to ext2/ext3 by the ext4 reader
    }
    if at(0, b"XFSB") {
        return Some("xfs");
    }
    if at(0x10040, b"_BHRfS_M") {
        return Some("btrfs");
    }
    if at(512 + 24, b"LVM2 001") {
        return Some("lvm2");
    }
    if at(4096 - 10, b"SWAPSPACE2") {
        return Some("swap");
    }
    if at(510, &[0x55, 0xAA]) && (at(0x36, b"FAT") || at(0x52, b"FAT32")) {
        return Some("vfat");
    }
    None
}

/// Adapts a [`ReadAt`] to the `Read + Write + Seek` that the table crates want; writes fail.
#[derive(Debug)]
struct Device<'a> {
    src: DebugSrc<'a>,
    pos: u64,
}

struct DebugSrc<'a>(&'a dyn ReadAt);

impl std::fmt::Debug for DebugSrc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disk of {} bytes", self.0.size())
    }
}

impl<'a> Device<'a> {
    fn new(src: &'a dyn ReadAt) -> Self {
        Device { src: DebugSrc(src), pos: 0 }
    }
}

impl Read for Device<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.src.0.size().saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        self.src.0.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Device<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "partition tables are read only here"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Device<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let size = self.src.0.size();
        let new = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing regressions: inputs that once crashed a table parser.
    #[test]
    fn malformed_tables_are_errors() {
        // Found at run time: a target folder shared by two clones keeps the path of the first.
        let package = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let dir = std::path::Path::new(&package).join("tests/regressions");
        let bytes = std::fs::read(dir.join("mbr-all-partitions-at-sector-0.bin")).unwrap();
        let err = read(&bytes).unwrap_err();
        assert!(err.to_string().contains("sector 0"), "{err}");
        // A GPT header whose partition entries are 0 bytes (the gpt crate asserts 128).
        let bytes = std::fs::read(dir.join("gpt-entry-size-0.bin")).unwrap();
        let err = read(&bytes).unwrap_err();
        assert!(err.to_string().contains("partition entries of 0 bytes"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        // Entries of 256 bytes are valid (128 * 2^n) but not read: unsupported, same words.
        let mut bytes = bytes;
        bytes[512 + 84..512 + 88].copy_from_slice(&256u32.to_le_bytes());
        let err = read(&bytes).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("partition entries of 256 bytes"), "{err}");
    }
}
