//! The btrfs reader against damaged images: a small btrfs made by mkfs.btrfs and filled
//! through the kernel's loop mount (a subvolume, a snapshot, compressed files), then cut short
//! and flipped byte by byte. Every damage is either read or refused with an error that names
//! btrfs and the structure; nothing panics or hangs.

use imagelake_connectors::btrfs;
use imagelake_connectors::{ErrorKind, ReadAt};
use imagelake_tests::corrupt::{Pick, assert_read_as_pristine_or_refused};
use imagelake_tests::output as run;
use std::process::Command;

/// A 64 MiB btrfs of mixed block groups (metadata and data in the same chunks) holding a
/// folder of many entries, attributes, links, a subvolume with files compressed by zstd, lzo
/// and zlib (inline and in extents), and a snapshot of it.
fn small_btrfs() -> Vec<u8> {
    let work = tempfile::tempdir().expect("tempdir");
    let image = work.path().join("btrfs.img");
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let sh = |script: &str| {
        let out = run(Command::new("sh").arg("-c").arg(script));
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (i, m) = (image.display(), mnt.display());
    sh(&format!("truncate -s 64M {i} && mkfs.btrfs -q -f -M {i} && mount -o loop {i} {m}"));
    let filled = std::panic::catch_unwind(|| {
        sh(&format!(
            "set -e; cd {m}; mkdir -p etc/many
             for n in $(seq 1 300); do echo $n > etc/many/entry-$n; done
             for n in $(seq 1 40); do setfattr -n user.a$n -v value-$n-xxxxxxxxxxxxxxxxxxxx etc/many/entry-1; done
             ln -s \"$(head -c 500 /dev/zero | tr '\\0' l)\" long-link; ln etc/many/entry-2 hard
             dd if=/dev/urandom of=sparse bs=64k count=2 seek=20 status=none
             btrfs subvolume create home > /dev/null
             for c in zstd lzo zlib; do
               mount -o remount,compress=$c .
               seq 1 40000 > home/numbers.$c && seq 1 300 > home/small.$c
             done
             btrfs subvolume snapshot home snapshot > /dev/null"
        ))
    });
    sh(&format!("umount {m}"));
    filled.expect("filling the filesystem");
    std::fs::read(&image).expect("read")
}

/// Reads the tree, then every file's first and last bytes, as a checkin would; returns the
/// whole listing and those bytes, printed.
fn read_everything(image: &Vec<u8>) -> Result<String, imagelake_connectors::Error> {
    let fs = btrfs::read(image)?;
    let mut buf = vec![0u8; 4096];
    let mut seen = format!("{:?}", fs.files);
    for f in fs.files.iter().filter(|f| f.kind == btrfs::FileKind::File) {
        let n = f.size.min(buf.len() as u64) as usize;
        for at in [0, f.size - n as u64] {
            f.read_content(image, at, &mut buf[..n])
                .map_err(|e| imagelake_connectors::Error::from_io(&e, "content"))?;
            seen.push_str(&format!("{:?}", &buf[..n]));
        }
    }
    Ok(seen)
}

#[test]
fn damaged_btrfs_images_are_read_or_refused_by_name_never_panic() {
    let pristine = small_btrfs();
    let listing = read_everything(&pristine).expect("the pristine image reads");
    let fs = btrfs::read(&pristine).expect("read");
    // The root, /etc, /etc/many and its 300, the link, the hard link, the sparse file, and
    // /home and /snapshot with 6 files each.
    assert_eq!(fs.files.len(), 1 + 2 + 300 + 3 + 2 * 7, "every entry");
    let compressed = fs.files.iter().filter(|f| f.extents.iter().any(|e| e.encoded.is_some())).count();
    assert!(compressed >= 6, "the numbers files are compressed, in the subvolume and its snapshot");

    // Cut short: the trees lie past the end.
    let err = btrfs::read(&pristine[..4 << 20].to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().starts_with("btrfs: the tree node at "), "{err}");
    let err = btrfs::read(&pristine[..100].to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().starts_with("btrfs: the superblock at 65536: "), "{err}");

    // A named structure: the root tree's node, whose checksum no longer holds.
    let root = u64::from_le_bytes(pristine[0x10050..0x10058].try_into().unwrap());
    let mut damaged = pristine.clone();
    damaged[root as usize + 0x70] ^= 0xFF; // single chunks of this image map 1:1
    let err = btrfs::read(&damaged).unwrap_err();
    assert_eq!(err.to_string(), format!("btrfs: the tree node at {root}: checksum mismatch"));
    // Features past what the reader knows are refused as unsupported.
    let mut future = pristine.clone();
    future[0x10000 + 0xbc + 2] |= 0x80; // incompat bit 23, not assigned yet
    reseal_superblock(&mut future);
    assert_eq!(btrfs::read(&future).unwrap_err().kind(), ErrorKind::Unsupported);

    // Flipped bytes: 16 anywhere in the first 8 MiB, and 1 to 4 of the metadata's non-zero
    // bytes, outside file contents (btrfs's data checksums are not verified, so a flipped
    // content byte reads as it now is). The superblock and every node carry a checksum: damage
    // is either refused, naming btrfs and the structure, or lies in what the reader has no need
    // of, and then the listing and the contents read are exactly the pristine ones.
    let mut content = vec![false; pristine.len()];
    for f in &fs.files {
        for e in &f.extents {
            let len = e.encoded.map_or(e.len, |c| c.stored_len);
            content[e.physical as usize..(e.physical + len) as usize].fill(true);
        }
    }
    let metadata: Vec<usize> = (0..pristine.len()).filter(|&i| !content[i] && pristine[i] != 0).collect();
    let outside: Vec<usize> = (0..8 << 20).filter(|&i| !content[i]).collect();
    let spread: Pick =
        Box::new(move |rng| (0..16).map(|_| outside[(rng.next() % outside.len() as u64) as usize]).collect());
    let deep: Pick = Box::new(move |rng| {
        let n = 1 + (rng.next() % 4) as usize;
        (0..n).map(|_| metadata[(rng.next() % metadata.len() as u64) as usize]).collect()
    });
    let read = |image: &Vec<u8>| read_everything(image).map_err(|e| e.to_string());
    assert_read_as_pristine_or_refused("16 bytes anywhere", &pristine, (1000, spread), read, &listing, "btrfs: ");
    assert_read_as_pristine_or_refused("1 to 4 metadata bytes", &pristine, (3000, deep), read, &listing, "btrfs: ");
}

/// Writes the primary superblock's crc32c again after an edit.
fn reseal_superblock(image: &mut [u8]) {
    let sb = &mut image[0x10000..0x11000];
    let sum = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&sb[0x20..]);
    sb[..4].copy_from_slice(&sum.to_le_bytes());
}

/// The reader also says which sources it cannot read at all.
#[test]
fn sources_that_fail_are_io_errors() {
    struct Failing;
    impl ReadAt for Failing {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        }
        fn size(&self) -> u64 {
            1 << 30
        }
    }
    let err = btrfs::read(&Failing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().starts_with("btrfs: the superblock at 65536: "), "{err}");
}
