//! The XFS reader against damaged images: a small XFS filesystem made by mkfs.xfs and filled
//! through the kernel's loop mount, then cut short and flipped byte by byte. Every damage is
//! either read or refused with an error that names XFS and the structure; nothing panics or
//! hangs.

use imagelake_connectors::xfs;
use imagelake_connectors::{ErrorKind, ReadAt};
use imagelake_tests::corrupt::{Pick, assert_read_as_pristine_or_refused};
use imagelake_tests::output as run;
use std::process::Command;

/// A 16 MiB XFS (the test variables lift mkfs.xfs's 300 MB floor) holding folders of several
/// forms, attributes in short, leaf and node form, a remote value, links and a sparse file.
fn small_xfs() -> Vec<u8> {
    let work = tempfile::tempdir().expect("tempdir");
    let image = work.path().join("xfs.img");
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let sh = |script: &str| {
        let out = run(Command::new("sh").arg("-c").arg(script));
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (i, m) = (image.display(), mnt.display());
    sh(&format!(
        "truncate -s 16M {i} && TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f {i} && mount -o loop {i} {m}"
    ));
    let filled = std::panic::catch_unwind(|| {
        sh(&format!(
            "set -e; cd {m}; mkdir -p small block leaf
             for n in $(seq 1 5); do echo $n > small/f$n; done
             for n in $(seq 1 40); do echo $n > block/entry-$n; done
             for n in $(seq 1 400); do : > leaf/a-longer-entry-name-$n; done
             for n in $(seq 1 100); do setfattr -n user.a$n -v value-$n-xxxxxxxxxxxxxxxxxxxx small/f1; done
             setfattr -n user.remote -v \"$(head -c 3000 /dev/zero | tr '\\0' r)\" small/f2
             ln -s \"$(head -c 500 /dev/zero | tr '\\0' l)\" long-link; ln small/f3 hard
             dd if=/dev/urandom of=sparse bs=64k count=2 seek=20 status=none"
        ))
    });
    sh(&format!("umount {m}"));
    filled.expect("filling the filesystem");
    std::fs::read(&image).expect("read")
}

/// Reads the tree, then every file's first and last bytes, as a checkin would; returns the
/// whole listing and those bytes, printed.
fn read_everything(image: &Vec<u8>) -> Result<String, imagelake_connectors::Error> {
    let fs = xfs::read(image)?;
    let mut buf = vec![0u8; 4096];
    let mut seen = format!("{:?}", fs.files);
    for f in fs.files.iter().filter(|f| f.kind == xfs::FileKind::File) {
        let n = f.size.min(buf.len() as u64) as usize;
        for at in [0, f.size - n as u64] {
            f.read_content(image, at, &mut buf[..n])
                .map_err(|e| imagelake_connectors::Error::from_io(&e, "content"))?;
            seen.push_str(&format!("{:?}", blake3_free_digest(&buf[..n])));
        }
    }
    Ok(seen)
}

/// A cheap digest of read bytes (the harness compares many rounds).
fn blake3_free_digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn damaged_xfs_images_are_read_or_refused_by_name_never_panic() {
    let pristine = small_xfs();
    let listing = read_everything(&pristine).expect("the pristine image reads");
    let files = xfs::read(&pristine).expect("read").files.len();
    assert_eq!(files, 452, "every entry, the root and the second hard link included");

    // Cut short: the superblock says the filesystem is longer than its volume.
    let err = xfs::read(&pristine[..8 << 20].to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().starts_with("xfs: superblock: ") && err.to_string().contains("do not fit"), "{err}");
    let err = xfs::read(&pristine[..100].to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");

    // A named structure: the root inode's magic.
    let fs = xfs::read(&pristine).expect("read");
    let root = fs.files[0].inode;
    let mut damaged = pristine.clone();
    let at = inode_offset(&pristine, root);
    damaged[at] ^= 0xFF;
    let err = xfs::read(&damaged).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("xfs: inode {root}: magic 0xb64e is not IN (the inode number points at no inode) (at /)")
    );
    // Geometry logs too big to shift by are refused, not overflowed.
    for (at, log) in [(120, 40u8), (123, 200u8)] {
        let mut bad = pristine.clone();
        bad[at] = log;
        let err = xfs::read(&bad).unwrap_err();
        assert!(err.to_string().starts_with("xfs: superblock: "), "{err}");
    }
    // Version 5 only features past what the reader knows are refused as unsupported.
    let mut future = pristine.clone();
    future[216] |= 0x80; // sb_features_incompat, a bit not assigned yet
    assert_eq!(xfs::read(&future).unwrap_err().kind(), ErrorKind::Unsupported);

    // Flipped bytes: 16 anywhere in the first 2 MiB, and 1 to 4 of the metadata's non-zero
    // bytes (outside file contents), so that rounds reach deep into the structures. Version 5
    // metadata carries checksums: damage is either refused, naming XFS and the structure, or
    // lies in what the reader has no need of (the log, free-space trees, free inodes), and
    // then the listing and the contents read are exactly the pristine ones.
    let mut content = vec![false; pristine.len()];
    for f in &fs.files {
        for e in &f.extents {
            content[e.physical as usize..(e.physical + e.len) as usize].fill(true);
        }
    }
    let metadata: Vec<usize> = (0..pristine.len()).filter(|&i| !content[i] && pristine[i] != 0).collect();
    let limit = 2 << 20;
    let spread: Pick = Box::new(move |rng| (0..16).map(|_| (rng.next() % limit) as usize).collect());
    let deep: Pick = Box::new(move |rng| {
        let n = 1 + (rng.next() % 4) as usize;
        (0..n).map(|_| metadata[(rng.next() % metadata.len() as u64) as usize]).collect()
    });
    let read = |image: &Vec<u8>| read_everything(image).map_err(|e| e.to_string());
    assert_read_as_pristine_or_refused("16 bytes anywhere", &pristine, (1500, spread), read, &listing, "xfs: ");
    assert_read_as_pristine_or_refused("1 to 4 metadata bytes", &pristine, (3000, deep), read, &listing, "xfs: ");
}

/// Where inode `ino` lies, from the superblock's geometry.
fn inode_offset(image: &[u8], ino: u64) -> usize {
    let be32 = |at: usize| u32::from_be_bytes(image[at..at + 4].try_into().unwrap());
    let (block_size, ag_blocks) = (be32(4) as u64, be32(84) as u64);
    let inode_size = u16::from_be_bytes(image[104..106].try_into().unwrap()) as u64;
    let (inopb_log, agblk_log) = (image[123] as u64, image[124] as u64);
    let ag = ino >> (agblk_log + inopb_log);
    let agbno = (ino >> inopb_log) & ((1 << agblk_log) - 1);
    let index = ino & ((1 << inopb_log) - 1);
    ((ag * ag_blocks + agbno) * block_size + index * inode_size) as usize
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
    let err = xfs::read(&Failing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().starts_with("xfs: superblock: "), "{err}");
}
