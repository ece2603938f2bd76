//! The boot sector's BIOS parameter block: the volume's geometry, FAT type, serial and label.

use super::{Error, corrupt, le16, le32, read_failed};
use crate::ReadAt;

/// The BPB lies in the first 512 bytes, whatever the sector size.
const BOOT_SECTOR: usize = 512;
/// The label as stored: 11 bytes, space padded.
pub(super) type Label = [u8; 11];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    fn bits(self) -> u64 {
        match self {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }

    /// The most clusters the type can number (Linux's MAX_FAT12/16/32): the last cluster
    /// number stays below the bad-cluster and end-of-chain markers.
    fn max_clusters(self) -> u64 {
        match self {
            FatType::Fat12 => 0xFF4,
            FatType::Fat16 => 0xFFF4,
            FatType::Fat32 => 0x0FFF_FFF6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

/// Where the root directory lives.
pub(super) enum Root {
    /// FAT12/16: a fixed region of `entries` 32-byte entries at byte `offset`.
    Fixed { offset: u64, entries: u32 },
    /// FAT32: a cluster chain from this cluster.
    Chain(u32),
}

pub(super) struct BootSector {
    pub fat_type: FatType,
    pub cluster_size: u32,
    /// Byte offset of the first FAT.
    pub fat_offset: u64,
    pub root: Root,
    /// Byte offset of cluster 2.
    pub data_offset: u64,
    /// Data clusters, numbered 2 to `clusters + 1`.
    pub clusters: u32,
    pub serial: u32,
    /// Present when the extended boot signature (0x29) says the field is.
    pub label: Option<Label>,
}

/// True for a FAT boot sector: the 0x55AA signature, a jump instruction and the FAT type
/// string at the FAT12/16 or the FAT32 position.
pub(super) fn probe(src: &dyn ReadAt) -> bool {
    let mut b = [0u8; BOOT_SECTOR];
    if src.read_exact_at(&mut b, 0).is_err() {
        return false;
    }
    let at = |offset: usize, sig: &[u8]| b.get(offset..offset + sig.len()) == Some(sig);
    at(510, &[0x55, 0xAA]) && matches!(b[0], 0xEB | 0xE9) && (at(0x36, b"FAT") || at(0x52, b"FAT32"))
}

impl BootSector {
    pub fn read(src: &dyn ReadAt) -> Result<Self, Error> {
        let err = |what: String| corrupt(format!("boot sector: {what}"));
        let mut b = [0u8; BOOT_SECTOR];
        src.read_exact_at(&mut b, 0).map_err(|e| read_failed(&e, format!("boot sector: {e}")))?;

        let bytes_per_sector = le16(&b, 11);
        if !bytes_per_sector.is_power_of_two() || !(512..=4096).contains(&bytes_per_sector) {
            return Err(err(format!("bytes per sector {bytes_per_sector} is not a power of two from 512 to 4096")));
        }
        let sectors_per_cluster = b[13];
        if !sectors_per_cluster.is_power_of_two() {
            return Err(err(format!("sectors per cluster {sectors_per_cluster} is not a power of two from 1 to 128")));
        }
        let reserved = u64::from(le16(&b, 14));
        if reserved == 0 {
            return Err(err("reserved sector count is 0, leaving no room for itself".into()));
        }
        let fats = u64::from(b[16]);
        if fats == 0 {
            return Err(err("number of FATs is 0".into()));
        }
        let root_entries = le16(&b, 17);
        let total = match le16(&b, 19) {
            0 => u64::from(le32(&b, 32)),
            small => u64::from(small),
        };
        // Linux's rule: a 16-bit FAT size of 0 means FAT32, whatever the cluster count
        // (mkfs.fat -F 32 makes FAT32 volumes with fewer clusters than Microsoft's minimum).
        let fat32 = le16(&b, 22) == 0;
        let fat_sectors = u64::from(if fat32 { le32(&b, 36) } else { u32::from(le16(&b, 22)) });
        if fat_sectors == 0 {
            return Err(err("sectors per FAT is 0".into()));
        }
        match (fat32, root_entries) {
            (true, 1..) => {
                return Err(err(format!("FAT32 with {root_entries} fixed root directory entries (must be 0)")));
            }
            (false, 0) => return Err(err("FAT12/16 with no root directory entries".into())),
            _ => {}
        }

        // Field widths keep all of this far below u64::MAX: sectors < 2^32, FATs < 2^8.
        let sector = u64::from(bytes_per_sector);
        let root_sectors = (u64::from(root_entries) * 32).div_ceil(sector);
        let fat_offset = reserved * sector;
        let meta = reserved + fats * fat_sectors + root_sectors;
        if total <= meta {
            return Err(err(format!(
                "its {total} sectors leave no room for data after the {meta} sectors of \
                 reserved area, FATs and root directory"
            )));
        }
        let data_clusters = (total - meta) / u64::from(sectors_per_cluster);
        let fat_type = match () {
            _ if fat32 => FatType::Fat32,
            _ if data_clusters <= FatType::Fat12.max_clusters() => FatType::Fat12,
            _ => FatType::Fat16,
        };
        // As Linux: clusters that the FAT has no entry for are not used (entries 0 and 1
        // are reserved).
        let fat_entries = fat_sectors * sector * 8 / fat_type.bits();
        let clusters = data_clusters.min(fat_entries.saturating_sub(2));
        if clusters == 0 {
            return Err(err("the volume has no data clusters".into()));
        }
        if clusters > fat_type.max_clusters() {
            return Err(err(format!("{clusters} clusters are more than {} can number", fat_type.name())));
        }
        let clusters = u32::try_from(clusters).map_err(|_| err(format!("{clusters} clusters do not fit 32 bits")))?;
        let cluster_size = u32::from(bytes_per_sector) * u32::from(sectors_per_cluster);
        let data_offset = meta * sector;
        let end = data_offset + u64::from(clusters) * u64::from(cluster_size);
        if end > src.size() {
            return Err(err(format!(
                "the data area ends at byte {end}, past the end of the source ({} bytes)",
                src.size()
            )));
        }

        let root = if fat32 {
            let cluster = le32(&b, 44);
            if !(2..u64::from(clusters) + 2).contains(&u64::from(cluster)) {
                return Err(err(format!(
                    "root directory cluster {cluster} is outside 2..={}",
                    u64::from(clusters) + 1
                )));
            }
            Root::Chain(cluster)
        } else {
            Root::Fixed { offset: fat_offset + fats * fat_sectors * sector, entries: u32::from(root_entries) }
        };
        // The extended BPB: signature, serial, label; at 38 for FAT12/16, at 66 for FAT32.
        let ext = if fat32 { 66 } else { 38 };
        let label = (b.get(ext) == Some(&0x29)).then(|| b.get(ext + 5..ext + 16)?.try_into().ok()).flatten();
        Ok(BootSector {
            fat_type,
            cluster_size,
            fat_offset,
            root,
            data_offset,
            clusters,
            serial: le32(&b, ext + 1),
            label,
        })
    }

    /// True for a cluster number that names a data cluster.
    pub fn is_data_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster - 2 < self.clusters
    }

    /// The byte offset of a data cluster.
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        // Callers pass data clusters only, so the data area bounds this (checked in `read`).
        self.data_offset + u64::from(cluster.saturating_sub(2)) * u64::from(self.cluster_size)
    }
}
