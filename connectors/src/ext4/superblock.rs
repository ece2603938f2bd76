//! The superblock and the group descriptors.

use super::{Error, corrupt, le16, le32, read_failed, unsupported};
use crate::ReadAt;

const MAGIC: u16 = 0xEF53;
/// Offset of the primary superblock, whatever the block size.
const OFFSET: u64 = 1024;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;

const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;

/// Incompatible features this reader understands. Everything else is refused, as the kernel
/// refuses to mount: compression (0x1), an external journal device (0x8), dirdata (0x1000),
/// encryption (0x10000, names and contents are ciphertext) and bits not yet assigned.
/// `RECOVER` is accepted: the journal is not replayed, the image is read as it lies.
const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_CASEFOLD;

/// Group descriptor: low and high halves of the inode table's block number.
const BG_INODE_TABLE_LO: usize = 0x8;
const BG_INODE_TABLE_HI: usize = 0x28;

pub(super) fn probe(src: &dyn ReadAt) -> bool {
    let mut magic = [0; 2];
    src.read_exact_at(&mut magic, OFFSET + 0x38).is_ok() && u16::from_le_bytes(magic) == MAGIC
}

/// The fields of the superblock this reader uses, validated against each other and against
/// the size of the source.
#[derive(Debug, Clone)]
pub(super) struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub block_size: u32,
    pub cluster_size: u64,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u32,
    /// As the kernel last wrote them (at unmount, or a sync).
    pub free_blocks: u64,
    pub reserved_blocks: u64,
    pub free_inodes: u32,
    desc_size: u32,
    first_meta_bg: u32,
    backup_bgs: [u32; 2],
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
}

impl Superblock {
    pub fn read(src: &dyn ReadAt) -> Result<Self, Error> {
        let mut b = [0u8; 1024];
        src.read_exact_at(&mut b, OFFSET).map_err(|e| read_failed(&e, format!("superblock: {e}")))?;
        let magic = le16(&b, 0x38);
        if magic != MAGIC {
            return Err(corrupt(format!("superblock: magic {magic:#06x} is not {MAGIC:#06x}")));
        }
        let log_block = le32(&b, 0x18);
        if log_block > 6 {
            return Err(corrupt(format!("superblock: s_log_block_size {log_block} exceeds 6 (64 KiB blocks)")));
        }
        let block_size = 1024u32 << log_block;
        let incompat = le32(&b, 0x60);
        let unknown = incompat & !INCOMPAT_SUPPORTED;
        if unknown != 0 {
            return Err(unsupported(format!(
                "superblock: incompatible features {unknown:#x} are not supported \
                 (0x1 compression, 0x8 journal device, 0x1000 dirdata, 0x10000 encryption)"
            )));
        }
        let ro_compat = le32(&b, 0x64);
        let is_64bit = incompat & INCOMPAT_64BIT != 0;

        let cluster_size = if ro_compat & RO_COMPAT_BIGALLOC != 0 {
            let log_cluster = le32(&b, 0x1C);
            // The kernel's bound: clusters of at most 1 GiB, never smaller than a block.
            if log_cluster < log_block || log_cluster > 20 {
                return Err(corrupt(format!(
                    "superblock: s_log_cluster_size {log_cluster} is outside {log_block}..=20"
                )));
            }
            1024u64 << log_cluster
        } else {
            u64::from(block_size)
        };

        let rev_level = le32(&b, 0x4C);
        let inode_size = if rev_level == 0 { 128 } else { u32::from(le16(&b, 0x58)) };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return Err(corrupt(format!(
                "superblock: inode size {inode_size} is not a power of two in 128..={block_size}"
            )));
        }
        let desc_size = if is_64bit { u32::from(le16(&b, 0xFE)) } else { 32 };
        if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
            return Err(corrupt(format!(
                "superblock: group descriptor size {desc_size} is not a power of two in 32..=1024"
            )));
        }

        let blocks_hi = if is_64bit { u64::from(le32(&b, 0x150)) } else { 0 };
        let blocks_count = u64::from(le32(&b, 0x4)) | blocks_hi << 32;
        let first_data_block = u64::from(le32(&b, 0x14));
        let blocks_per_group = le32(&b, 0x20);
        let inodes_per_group = le32(&b, 0x28);
        let inodes_count = le32(&b, 0x0);
        // A group's bitmaps are one block each: more per group than bits in a block (clusters
        // with bigalloc) is corrupt.
        let bits = block_size * 8;
        let max_blocks = u64::from(bits) * (cluster_size / u64::from(block_size));
        if blocks_per_group == 0 || u64::from(blocks_per_group) > max_blocks {
            return Err(corrupt(format!(
                "superblock: {blocks_per_group} blocks per group is outside 1..={max_blocks}"
            )));
        }
        if inodes_per_group == 0 || inodes_per_group > bits {
            return Err(corrupt(format!("superblock: {inodes_per_group} inodes per group is outside 1..={bits}")));
        }
        if first_data_block >= blocks_count {
            return Err(corrupt(format!(
                "superblock: first data block {first_data_block} is not below the block count \
                 {blocks_count}"
            )));
        }
        let fs_bytes = blocks_count.checked_mul(u64::from(block_size));
        match fs_bytes {
            Some(n) if n <= src.size() => {}
            _ => {
                return Err(corrupt(format!(
                    "superblock: {blocks_count} blocks of {block_size} bytes do not fit in the \
                     {} bytes of the source",
                    src.size()
                )));
            }
        }
        let groups = (blocks_count - first_data_block).div_ceil(u64::from(blocks_per_group));
        let inode_capacity = groups.saturating_mul(u64::from(inodes_per_group));
        if inodes_count < 2 || u64::from(inodes_count) > inode_capacity {
            return Err(corrupt(format!(
                "superblock: {inodes_count} inodes is outside 2..={inode_capacity} \
                 ({groups} groups of {inodes_per_group})"
            )));
        }

        let mut uuid = [0; 16];
        uuid.copy_from_slice(b.get(0x68..0x78).unwrap_or(&[0; 16]));
        let mut volume_name = [0; 16];
        volume_name.copy_from_slice(b.get(0x78..0x88).unwrap_or(&[0; 16]));
        Ok(Superblock {
            inodes_count,
            blocks_count,
            first_data_block,
            block_size,
            cluster_size,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            free_blocks: u64::from(le32(&b, 0x0C)) | if is_64bit { u64::from(le32(&b, 0x158)) << 32 } else { 0 },
            reserved_blocks: u64::from(le32(&b, 0x08)) | if is_64bit { u64::from(le32(&b, 0x154)) << 32 } else { 0 },
            free_inodes: le32(&b, 0x10),
            desc_size,
            first_meta_bg: le32(&b, 0x104),
            backup_bgs: [le32(&b, 0x24C), le32(&b, 0x250)],
            compat: le32(&b, 0x5C),
            incompat,
            ro_compat,
            uuid,
            volume_name,
        })
    }

    pub fn fs_type(&self) -> &'static str {
        const EXT4_INCOMPAT: u32 = INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_INLINE_DATA;
        const EXT4_RO_COMPAT: u32 =
            RO_COMPAT_HUGE_FILE | RO_COMPAT_DIR_NLINK | RO_COMPAT_EXTRA_ISIZE | RO_COMPAT_METADATA_CSUM;
        if self.incompat & EXT4_INCOMPAT != 0 || self.ro_compat & EXT4_RO_COMPAT != 0 {
            "ext4"
        } else if self.compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        }
    }

    pub fn is_64bit(&self) -> bool {
        self.incompat & INCOMPAT_64BIT != 0
    }

    pub fn ea_inode(&self) -> bool {
        self.incompat & INCOMPAT_EA_INODE != 0
    }

    pub fn huge_file(&self) -> bool {
        self.ro_compat & RO_COMPAT_HUGE_FILE != 0
    }

    /// Byte offset of a block; `None` when the block lies past the end of the filesystem.
    pub fn block_offset(&self, block: u64) -> Option<u64> {
        // `read` checked that blocks_count * block_size fits in a u64.
        (block < self.blocks_count).then(|| block * u64::from(self.block_size))
    }

    /// True when `[block, block + len)` lies inside the filesystem.
    pub fn blocks_inside(&self, block: u64, len: u64) -> bool {
        block.checked_add(len).is_some_and(|end| end <= self.blocks_count)
    }

    /// The block holding descriptor block `i` of the group descriptor table, following
    /// e2fsprogs' `ext2fs_descriptor_block_loc2`.
    fn descriptor_block(&self, i: u64) -> Option<u64> {
        // With bigalloc on 1 KiB blocks, block 0 is a whole cluster: the table moves one on.
        let adjust = u64::from(i == 0 && self.block_size == 1024 && self.cluster_size > u64::from(self.block_size));
        if self.incompat & INCOMPAT_META_BG == 0 || i < u64::from(self.first_meta_bg) {
            return self.first_data_block.checked_add(i)?.checked_add(1 + adjust);
        }
        // META_BG: the descriptors of metagroup i live in the first group of that metagroup,
        // after that group's superblock backup if it has one.
        let group = self.descs_per_block().checked_mul(i)?;
        let first = group.checked_mul(u64::from(self.blocks_per_group))?.checked_add(self.first_data_block)?;
        first.checked_add(u64::from(self.has_super(group)) + adjust)
    }

    fn descs_per_block(&self) -> u64 {
        u64::from(self.block_size / self.desc_size)
    }

    /// Whether a group carries a superblock backup (and so, without META_BG, a GDT copy).
    fn has_super(&self, group: u64) -> bool {
        if group == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return self.backup_bgs.iter().any(|&g| u64::from(g) == group);
        }
        if group == 1 || self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        !group.is_multiple_of(2) && [3u64, 5, 7].iter().any(|&base| is_power_of(group, base))
    }

    /// The first block of the inode table of `group`, read from its descriptor and checked to
    /// hold the whole table inside the filesystem.
    pub fn inode_table(&self, src: &dyn ReadAt, group: u32) -> Result<u64, Error> {
        let at = |what: &str| corrupt(format!("group descriptor {group}: {what}"));
        let per_block = self.descs_per_block();
        let index = u64::from(group);
        let block =
            self.descriptor_block(index / per_block).ok_or_else(|| at("its descriptor block number overflows"))?;
        let block_offset = self
            .block_offset(block)
            .ok_or_else(|| at(&format!("descriptor block {block} lies past the end of the filesystem")))?;
        let offset = block_offset + (index % per_block) * u64::from(self.desc_size);
        // Only the first 64 bytes are defined; the high halves exist from 64 bytes on.
        let mut desc = vec![0u8; if self.desc_size >= 64 { 64 } else { 32 }];
        src.read_exact_at(&mut desc, offset).map_err(|e| read_failed(&e, format!("group descriptor {group}: {e}")))?;
        let hi = if self.is_64bit() { le32(&desc, BG_INODE_TABLE_HI) } else { 0 };
        let table = u64::from(le32(&desc, BG_INODE_TABLE_LO)) | u64::from(hi) << 32;
        let table_bytes = u64::from(self.inodes_per_group) * u64::from(self.inode_size);
        let table_blocks = table_bytes.div_ceil(u64::from(self.block_size));
        if table <= self.first_data_block || !self.blocks_inside(table, table_blocks) {
            return Err(at(&format!(
                "inode table block {table} (+{table_blocks}) lies outside the filesystem \
                 ({} blocks)",
                self.blocks_count
            )));
        }
        Ok(table)
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}
