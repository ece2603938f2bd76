//! The file allocation table: one entry per cluster, naming the next cluster of its chain.

use super::boot::{BootSector, FatType};
use super::{Error, corrupt, le16, le32, read_failed};
use crate::ReadAt;

/// What a cluster's FAT entry says comes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Cluster(u32),
    End,
    /// 0: the cluster is free, so no chain may pass through it.
    Free,
    /// 1: never valid in a chain.
    Reserved,
    Bad,
    /// A number past the last data cluster.
    Outside(u32),
}

/// The first FAT, as far as it has entries for data clusters. Linux and mtools read and
/// write the first copy (the others mirror it), so the others are not consulted.
pub(super) struct Fat {
    fat_type: FatType,
    clusters: u32,
    table: Vec<u8>,
}

impl Fat {
    pub fn read(src: &dyn ReadAt, boot: &BootSector) -> Result<Self, Error> {
        let entries = u64::from(boot.clusters) + 2;
        // `BootSector::read` checked that the FAT holds this many entries and that it lies
        // inside the source, which bounds the allocation.
        let len = match boot.fat_type {
            FatType::Fat12 => (entries * 3).div_ceil(2),
            FatType::Fat16 => entries * 2,
            FatType::Fat32 => entries * 4,
        };
        let len = usize::try_from(len).map_err(|_| corrupt(format!("FAT: {len} bytes do not fit in memory")))?;
        let mut table = vec![0; len];
        src.read_exact_at(&mut table, boot.fat_offset)
            .map_err(|e| read_failed(&e, format!("FAT at byte {}: {e}", boot.fat_offset)))?;
        Ok(Fat { fat_type: boot.fat_type, clusters: boot.clusters, table })
    }

    /// The entry of data cluster `cluster`.
    pub fn next(&self, cluster: u32) -> Next {
        let n = usize::try_from(cluster).unwrap_or(usize::MAX);
        let (value, bad) = match self.fat_type {
            // Two entries share three bytes: an even one takes the low 12 bits of its
            // 16-bit word, an odd one the high 12 bits of the word a byte further on.
            FatType::Fat12 => {
                let word = le16(&self.table, n.saturating_add(n / 2));
                let value = if n % 2 == 1 { word >> 4 } else { word & 0xFFF };
                (u32::from(value), 0xFF7)
            }
            FatType::Fat16 => (u32::from(le16(&self.table, n.saturating_mul(2))), 0xFFF7),
            // The top four bits are reserved.
            FatType::Fat32 => (le32(&self.table, n.saturating_mul(4)) & 0x0FFF_FFFF, 0x0FFF_FFF7),
        };
        match value {
            0 => Next::Free,
            1 => Next::Reserved,
            _ if value == bad => Next::Bad,
            _ if value > bad => Next::End,
            _ if value - 2 < self.clusters => Next::Cluster(value),
            _ => Next::Outside(value),
        }
    }
}
