//! A small, careful, read-only reader for FAT12, FAT16 and FAT32 (vfat): EFI system
//! partitions, boot and firmware volumes.
//!
//! [`read`] walks the whole tree from the root directory and lists every file and directory
//! with what the store needs to rebuild the disk byte for byte from contents kept elsewhere:
//! above all, each regular file's exact cluster runs as byte extents. It is written by hand
//! because the `fatfs` crate reads contents but does not expose cluster chains.
//!
//! It reads: sectors of 512 to 4096 bytes, clusters of 1 to 128 sectors, FAT12 (packed
//! 12-bit entries), FAT16 and FAT32 (28-bit entries), the fixed FAT12/16 root directory and
//! the FAT32 root cluster chain, long file names (checked against the short name's checksum;
//! a mismatch falls back to the short name) and the NT case bits of short names. The FAT
//! type follows Linux: FAT32 when the 16-bit FAT size is 0, else FAT12 up to 4084 clusters
//! and FAT16 above. Only the first FAT is read. A directory ends at its first entry that
//! starts with 0.
//!
//! What FAT does not have is made up as Linux shows it, and fixed here: uid and gid 0, mode
//! 0o755 for directories and 0o644 for files, 0o444 for files with the read-only attribute
//! (Linux ignores it on directories, where Windows uses it for folder customisation), one
//! link each. `mtime` is the modification date and time read as UTC (FAT stores local time
//! and no zone), at 2-second resolution; "/" has none and gets 0. `inode` is the first
//! cluster, which no two files share: 0 for empty files and for the FAT12/16 root (a fixed
//! region), the root cluster for FAT32. Names in an unknown OEM code page (short names'
//! bytes past ASCII, labels) are rendered as `\xNN`, as are unpaired UTF-16 surrogates in
//! long names (by their WTF-8 bytes). The label is the root directory's volume-label entry,
//! else the boot sector's, as blkid reads them ("NO NAME" is none); the uuid is the volume
//! serial as blkid prints it, "ABCD-1234".
//!
//! It refuses, with an [`Error`] naming the structure: a boot sector with impossible
//! geometry or a data area past the end of the source, a chain through a free, reserved,
//! bad or out-of-range cluster, a file whose chain is shorter than its size (a longer one is
//! cut at the size, as the kernel does), a cluster used twice (a chain that loops, a
//! directory that contains itself or an ancestor, cross-linked files), invalid or duplicate
//! names, and directories over 65536 entries.
//!
//! Images are untrusted. The reader never panics; each cluster is claimed by at most one
//! chain, so the work is bounded by the cluster count; the tree is walked with an explicit
//! stack rather than recursion; and the listing is capped at [`MAX_LISTING_BYTES`].

mod boot;
mod dir;
mod fat;

use crate::ReadAt;
use crate::bytes::{le16, le32};
use crate::fs::Listing;
pub use crate::fs::{Extent, File, FileKind, Filesystem};
use boot::{BootSector, Root};
use fat::{Fat, Next};

pub use crate::fs::MAX_LISTING_BYTES;
/// The most a directory may hold: 65536 entries, as in the specification and Linux.
const MAX_DIR_BYTES: u64 = 65536 * dir::ENTRY_LEN as u64;

/// True when `src` starts with a FAT boot sector.
pub fn probe(src: &dyn ReadAt) -> bool {
    boot::probe(src)
}

/// Reads the filesystem in `src` and lists every file reachable from the root.
pub fn read(src: &dyn ReadAt) -> Result<Filesystem, Error> {
    let boot = BootSector::read(src)?;
    let fat = Fat::read(src, &boot)?;
    // Cluster numbers run up to clusters + 1.
    let words = (u64::from(boot.clusters) + 2).div_ceil(64);
    let words =
        usize::try_from(words).map_err(|_| corrupt(format!("{} clusters do not fit in memory", boot.clusters)))?;
    let mut walk = Walk { src, boot, fat, claimed: vec![0; words], chains: Vec::new(), listing: Listing::default() };
    let root_label = walk.run()?;
    let boot = &walk.boot;
    let label = [root_label, boot.label]
        .iter()
        .flatten()
        .map(dir::label)
        .find(|l| !l.is_empty() && l != "NO NAME")
        .unwrap_or_default();
    Ok(Filesystem {
        fs_type: "vfat",
        label,
        uuid: format!("{:04X}-{:04X}", boot.serial >> 16, boot.serial & 0xFFFF),
        block_size: boot.cluster_size,
        files: walk.listing.files,
        os_root: "/".into(),
    })
}

/// What went wrong, naming the structure: messages start with `vfat: `. A listing past
/// [`MAX_LISTING_BYTES`](crate::fs::MAX_LISTING_BYTES) is
/// [`Unsupported`](crate::ErrorKind::Unsupported); a failed read is
/// [`Io`](crate::ErrorKind::Io) (or `Corrupt` when past the end of the source); the rest is
/// [`Corrupt`](crate::ErrorKind::Corrupt).
pub type Error = crate::Error;
crate::prefixed!("vfat");

/// Consecutive clusters: the first and how many.
type Run = (u32, u32);

/// How much of a chain to follow.
#[derive(Clone, Copy)]
enum Want {
    /// A file: as many clusters as its size needs; the rest of the chain is ignored.
    Exactly(u32),
    /// A directory: to the end of the chain, which may not pass this many clusters.
    ToEnd(u32),
}

/// The depth-first walk over the tree, and the clusters claimed so far.
struct Walk<'a> {
    src: &'a dyn ReadAt,
    boot: BootSector,
    fat: Fat,
    /// One bit per cluster number: set once a chain has passed through it.
    claimed: Vec<u64>,
    /// The chains followed so far, by index in `files`, to name the owner of a cluster that
    /// a second chain reaches.
    chains: Vec<(usize, Vec<Run>)>,
    listing: Listing,
}

impl Walk<'_> {
    /// Lists the tree; returns the root directory's volume-label entry.
    fn run(&mut self) -> Result<Option<boot::Label>, Error> {
        let (inode, raw) = match self.boot.root {
            Root::Fixed { offset, entries } => {
                let mut raw = vec![0; entries as usize * dir::ENTRY_LEN];
                self.src
                    .read_exact_at(&mut raw, offset)
                    .map_err(|e| read_failed(&e, format!("root directory at byte {offset}: {e}")))?;
                (0, raw)
            }
            Root::Chain(cluster) => {
                let runs = self.chain(0, "/", cluster, self.dir_want())?;
                (cluster, self.read_runs("/", &runs)?)
            }
        };
        let root = dir::parse(&raw, self.fat32(), "/")?;
        self.add(File { inode: u64::from(inode), ..new_file("/".into(), FileKind::Dir, 0o755) })?;
        // An explicit stack, not recursion: depth is bounded only by the cluster count.
        // Each level holds its directory's path ("" for the root) and its unvisited entries.
        let mut stack = vec![(String::new(), root.entries.into_iter())];
        while let Some((parent, entries)) = stack.last_mut() {
            let Some(entry) = entries.next() else {
                stack.pop();
                continue;
            };
            let path = format!("{parent}/{}", entry.name);
            if let Some(children) = self.visit(&entry, path.clone())? {
                stack.push((path, children.into_iter()));
            }
        }
        Ok(root.label)
    }

    fn fat32(&self) -> bool {
        self.boot.fat_type == boot::FatType::Fat32
    }

    /// Directories stop at MAX_DIR_BYTES: a whole number of clusters, which are at most
    /// 512 KiB.
    fn dir_want(&self) -> Want {
        let clusters = MAX_DIR_BYTES / u64::from(self.boot.cluster_size);
        Want::ToEnd(u32::try_from(clusters).unwrap_or(u32::MAX))
    }

    /// Lists the entry at `path`; returns its entries when it is a directory.
    fn visit(&mut self, entry: &dir::Entry, path: String) -> Result<Option<Vec<dir::Entry>>, Error> {
        let index = self.listing.files.len();
        let mtime = unix_time(entry.date, entry.time);
        if entry.attr & dir::ATTR_DIRECTORY != 0 {
            // Only ".." may point to the root with cluster 0.
            if entry.cluster == 0 {
                return Err(corrupt(format!("directory {path} has no first cluster")));
            }
            let runs = self.chain(index, &path, entry.cluster, self.dir_want())?;
            let raw = self.read_runs(&path, &runs)?;
            let listing = dir::parse(&raw, self.fat32(), &path)?;
            self.add(File { mtime, inode: u64::from(entry.cluster), ..new_file(path, FileKind::Dir, 0o755) })?;
            return Ok(Some(listing.entries));
        }
        let mode = if entry.attr & dir::ATTR_READ_ONLY != 0 { 0o444 } else { 0o644 };
        let mut file = File { size: u64::from(entry.size), mtime, ..new_file(path, FileKind::File, mode) };
        let cluster_size = self.boot.cluster_size;
        let clusters = entry.size.div_ceil(cluster_size);
        if clusters > 0 {
            if entry.cluster == 0 {
                return Err(corrupt(format!("{}: size {} but no first cluster", file.path, entry.size)));
            }
            let runs = self.chain(index, &file.path, entry.cluster, Want::Exactly(clusters))?;
            let mut logical = 0;
            for &(first, n) in &runs {
                let len = u64::from(n) * u64::from(cluster_size);
                file.extents.push(Extent {
                    logical,
                    physical: self.boot.cluster_offset(first),
                    len,
                    unwritten: false,
                    encoded: None,
                });
                logical += len;
            }
            file.inode = u64::from(entry.cluster);
        }
        self.add(file)?;
        Ok(None)
    }

    /// Follows the chain of what will be listed at `index` (`path`) from `start`, claiming
    /// each cluster. Every step claims a cluster not claimed before, so it ends within the
    /// cluster count.
    fn chain(&mut self, index: usize, path: &str, start: u32, want: Want) -> Result<Vec<Run>, Error> {
        if !self.boot.is_data_cluster(start) {
            return Err(corrupt(format!(
                "{path}: first cluster {start} is outside 2..={}",
                u64::from(self.boot.clusters) + 1
            )));
        }
        let mut runs: Vec<Run> = Vec::new();
        let mut cluster = start;
        let mut count = 0u32;
        loop {
            self.claim(path, cluster, &runs)?;
            match runs.last_mut() {
                Some((first, n)) if first.checked_add(*n) == Some(cluster) => *n += 1,
                _ => runs.push((cluster, 1)),
            }
            count += 1;
            if matches!(want, Want::Exactly(n) if n == count) {
                break;
            }
            let err = |what: String| corrupt(format!("cluster chain of {path} {what}"));
            cluster = match (self.fat.next(cluster), want) {
                (Next::Cluster(next), Want::ToEnd(max)) if count >= max => {
                    return Err(err(format!(
                        "goes on past {count} clusters at cluster {next}: the directory would \
                         exceed {MAX_DIR_BYTES} bytes (65536 entries)"
                    )));
                }
                (Next::Cluster(next), _) => next,
                (Next::End, Want::ToEnd(_)) => break,
                (Next::End, Want::Exactly(n)) => {
                    return Err(err(format!("ends after {count} clusters, short of the {n} its size needs")));
                }
                (Next::Free, _) => {
                    return Err(err(format!("runs into a free cluster after cluster {cluster}")));
                }
                (Next::Reserved, _) => {
                    return Err(err(format!("runs into reserved cluster 1 after cluster {cluster}")));
                }
                (Next::Bad, _) => {
                    return Err(err(format!("runs into a bad cluster after cluster {cluster}")));
                }
                (Next::Outside(next), _) => {
                    return Err(err(format!(
                        "goes from cluster {cluster} to {next}, past the last cluster {}",
                        u64::from(self.boot.clusters) + 1
                    )));
                }
            };
        }
        self.chains.push((index, runs.clone()));
        Ok(runs)
    }

    /// Marks `cluster` as used by the chain of `path` built so far (`runs`), or names who
    /// had it.
    fn claim(&mut self, path: &str, cluster: u32, runs: &[Run]) -> Result<(), Error> {
        let word = usize::try_from(cluster / 64).unwrap_or(usize::MAX);
        let bit = 1u64 << (cluster % 64);
        // Only data clusters reach here, and the bitmap has a bit for each.
        let slot = self
            .claimed
            .get_mut(word)
            .ok_or_else(|| corrupt(format!("cluster chain of {path}: cluster {cluster} has no bit")))?;
        if *slot & bit == 0 {
            *slot |= bit;
            return Ok(());
        }
        let within = |runs: &[Run]| runs.iter().any(|&(first, n)| cluster >= first && cluster - first < n);
        if within(runs) {
            return Err(corrupt(format!("cluster chain of {path} loops at cluster {cluster}")));
        }
        // Chains are recorded only once their file is listed, so the owner is there.
        let owner = self
            .chains
            .iter()
            .find(|(_, runs)| within(runs))
            .and_then(|&(index, _)| self.listing.files.get(index))
            .map_or("another file", |f| f.path.as_str());
        Err(corrupt(format!(
            "cluster chain of {path} reaches cluster {cluster}, which {owner} already uses (a \
             directory cycle or cross-linked files)"
        )))
    }

    /// The bytes of a directory: its clusters in chain order.
    fn read_runs(&self, path: &str, runs: &[Run]) -> Result<Vec<u8>, Error> {
        let cluster_size = u64::from(self.boot.cluster_size);
        let mut out = Vec::new();
        for &(first, n) in runs {
            // Directory chains stop at MAX_DIR_BYTES, which bounds this.
            let len = usize::try_from(u64::from(n) * cluster_size)
                .map_err(|_| corrupt(format!("directory {path}: run too large")))?;
            let mut buf = vec![0; len];
            self.src
                .read_exact_at(&mut buf, self.boot.cluster_offset(first))
                .map_err(|e| read_failed(&e, format!("directory {path}: cluster {first}: {e}")))?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    fn add(&mut self, file: File) -> Result<(), Error> {
        self.listing.add(file).map_err(unsupported)
    }
}

fn new_file(path: String, kind: FileKind, mode: u32) -> File {
    File { mode, ..File::bare(path, kind, 0) }
}

/// A FAT date and time (local time, taken as UTC) in seconds since the epoch. Fields out of
/// range carry over as in Linux (day 31 of February is in March, hour 31 is the next day);
/// a month or day of 0 reads as 1 and a month past 12 as 12.
fn unix_time(date: u16, time: u16) -> i64 {
    let year = 1980 + i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0x0F).clamp(1, 12);
    let day = i64::from(date & 0x1F).max(1);
    let seconds = i64::from(time >> 11) * 3600 + i64::from((time >> 5) & 0x3F) * 60 + i64::from(time & 0x1F) * 2;
    (days_to_month(year, month) + day - 1) * 86400 + seconds
}

/// Days from 1970-01-01 to the first of `month` (1 to 12) of `year` (from 1980), in the
/// Gregorian calendar (Howard Hinnant's `days_from_civil`).
fn days_to_month(year: i64, month: i64) -> i64 {
    // Years start in March, so that the leap day ends them.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
