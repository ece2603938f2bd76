//! Disk image formats: raw and qcow2 read natively; vmdk, vhdx, vdi, vpc and qcow2 with zstd
//! clusters through `qemu-img`.
//!
//! A [`Disk`] is a [`ReadAt`] over the guest-visible bytes plus an allocation map
//! ([`Disk::map`]) that says which ranges are known to read as zeros, so that checkin never
//! reads, hashes or stores them. qcow2 goes through imago (compressed clusters, backing
//! chains). Other formats are detected with `qemu-img info` and converted by `qemu-img
//! convert` into a sparse raw file in a scratch folder (streaming: the image is never held in
//! memory), unlinked as soon as it is open. Whatever the format, a file an image refers to
//! (backing file, vmdk extent, external data file) is opened only when it lies in the image's
//! own folder, so an image cannot make the library read arbitrary host files.
//!
//! Which route a qcow2 takes is decided from its header before anything opens it
//! ([`Qcow2Header::route`]): the incompatible features imago implements (external data file)
//! and default (zlib) compression go through imago; any other incompatible feature, or
//! another compression type (zstd), goes through `qemu-img convert`; an encrypted image is
//! refused.
//!
//! [`Disk::open`] fails with an [`Error`]: [`Corrupt`](crate::ErrorKind::Corrupt) for an
//! image that is truncated or that `qemu-img` cannot read, [`Unsupported`](crate::ErrorKind::Unsupported)
//! for an encrypted qcow2, a qcow2 version imago does not read or a file referenced outside
//! the image's folder, and [`Io`](crate::ErrorKind::Io) when the file cannot be opened or
//! read, or `qemu-img` cannot be run.

use crate::{Error, ErrorKind, ReadAt};
use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions, SyncFormatAccess};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// An I/O error as an [`Error`] with the same message (its kind follows the I/O error's).
fn io_err(e: io::Error) -> Error {
    Error::from_io(&e, e.to_string())
}

/// One run of the allocation map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub offset: u64,
    pub len: u64,
    /// False when the range is known to read as zeros (a hole, an unallocated cluster).
    pub data: bool,
}

/// An opened disk image.
pub struct Disk {
    format: String,
    backend: Backend,
    size: u64,
}

enum Backend {
    Raw(File),
    Qcow2(SyncFormatAccess<ImagoFile>),
    /// Bytes from elsewhere (an edited disk: the parent version's bytes with the edit's
    /// blocks over them); mapped as all data.
    Source(Box<dyn ReadAt>),
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

impl Disk {
    /// Opens `path`, detecting its format. Formats read through `qemu-img` are converted
    /// into `scratch` (a folder on the same machine with room for the raw disk's data).
    pub fn open(path: &Path, scratch: &Path) -> Result<Disk, Error> {
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut magic = [0u8; 4];
        if len >= 4 {
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0).map_err(io_err)?;
        }
        if &magic == QCOW2_MAGIC {
            let header = Qcow2Header::read(&file, len)?;
            check_qcow2_tables(&file, len, &header)?;
            drop(file);
            return match header.route()? {
                Qcow2Route::Imago => Self::open_qcow2(path, &header),
                Qcow2Route::QemuImg => Self::convert(path, scratch, "qcow2"),
            };
        }
        match qemu_img_format(path)? {
            Some(format) if format != "raw" => Self::convert(path, scratch, &format),
            _ => Ok(Disk { format: "raw".into(), backend: Backend::Raw(file), size: len }),
        }
    }

    fn open_qcow2(path: &Path, header: &Qcow2Header) -> Result<Disk, Error> {
        let gate = SameFolderGate::new(image_folder(path)?);
        let refused = gate.refused.clone();
        let qcow2 = Qcow2::<ImagoFile>::builder_path(path).write(false).open_sync(gate).map_err(|e| {
            let message = format!("qcow2: {e}");
            if refused.load(Ordering::Relaxed) || !(2..=3).contains(&header.version) {
                Error::unsupported(message)
            } else {
                Error::from_io(&e, message)
            }
        })?;
        let access = SyncFormatAccess::new(qcow2).map_err(io_err)?;
        let size = access.size();
        Ok(Disk { format: "qcow2".into(), backend: Backend::Qcow2(access), size })
    }

    /// Converts a format imagelake does not read natively to raw with `qemu-img convert`.
    fn convert(path: &Path, scratch: &Path, format: &str) -> Result<Disk, Error> {
        check_references(path)?;
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let raw = scratch.join(format!("convert-{}-{nonce}.raw", std::process::id()));
        // Held while it exists: a scratch file nobody holds is a crash's leftover.
        let file = File::create_new(&raw).map_err(io_err)?;
        file.try_lock().map_err(|e| io_err(io::Error::other(e)))?;
        let out = Command::new("qemu-img").args(["convert", "-f", format, "-O", "raw"]).arg(path).arg(&raw).output();
        // Unlinked at once: the open file lives as long as the Disk, and nothing is left over.
        let _ = std::fs::remove_file(&raw);
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(Error::corrupt(format!(
                    "{format}: qemu-img cannot read it: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Err(e) => {
                return Err(Error::new(ErrorKind::Io, format!("{format} needs qemu-img, which did not run: {e}")));
            }
        }
        let size = file.metadata().map_err(io_err)?.len();
        Ok(Disk { format: format.to_string(), backend: Backend::Raw(file), size })
    }

    /// A disk whose bytes `source` gives, read as if it were an image of `format`.
    pub fn from_source(format: &str, source: Box<dyn ReadAt>) -> Disk {
        Disk { format: format.to_string(), size: source.size(), backend: Backend::Source(source) }
    }

    /// The input format: "raw", "qcow2", "vmdk", "vhdx", "vdi", "vpc", ...
    pub fn format(&self) -> &str {
        &self.format
    }

    /// The allocation map of `[offset, offset + len)`: runs in order that tile the range.
    pub fn map(&self, offset: u64, len: u64) -> io::Result<Vec<Run>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut runs: Vec<Run> = Vec::new();
        let mut at = offset;
        while at < end {
            let (run_len, data) = match &self.backend {
                Backend::Raw(file) => raw_run(file, at, end)?,
                Backend::Source(_) => (end - at, true),
                Backend::Qcow2(access) => {
                    let (mapping, n) = access.get_mapping_sync(at, end - at)?;
                    let data = match mapping {
                        Mapping::Zero { .. } => false,
                        Mapping::Eof { .. } => break,
                        Mapping::Raw { storage, offset, .. } => {
                            let file_len = storage.size()?;
                            if offset.saturating_add(n) > file_len {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!(
                                        "qcow2: data for guest offset {at} lies at {offset}, past the end of the file ({file_len} bytes): truncated?"
                                    ),
                                ));
                            }
                            true
                        }
                        _ => true,
                    };
                    (n, data)
                }
            };
            if run_len == 0 {
                break;
            }
            let run_len = run_len.min(end - at);
            match runs.last_mut() {
                Some(last) if last.data == data => last.len += run_len,
                _ => runs.push(Run { offset: at, len: run_len, data }),
            }
            at += run_len;
        }
        if at < end {
            // Past what the format maps: reads as zeros.
            runs.push(Run { offset: at, len: end - at, data: false });
        }
        Ok(runs)
    }
}

/// The allocation map of `[offset, offset + len)` of a file: runs of data and holes, in order.
pub fn file_map(file: &File, offset: u64, len: u64) -> io::Result<Vec<Run>> {
    let end = offset.saturating_add(len);
    let mut runs = Vec::new();
    let mut at = offset;
    while at < end {
        let (n, data) = raw_run(file, at, end)?;
        runs.push(Run { offset: at, len: n, data });
        at += n;
    }
    Ok(runs)
}

/// The run of a raw file starting at `at`: data up to the next hole, or a hole up to the
/// next data (`SEEK_DATA`/`SEEK_HOLE`; a file system without them reports all data).
fn raw_run(file: &File, at: u64, end: u64) -> io::Result<(u64, bool)> {
    let fd = file.as_raw_fd();
    let Ok(at_off) = libc::off_t::try_from(at) else { return Ok((end - at, true)) };
    // SAFETY: lseek on an open descriptor has no memory effects; reads use pread, so moving
    // the file offset does not disturb them.
    let data = unsafe { libc::lseek(fd, at_off, libc::SEEK_DATA) };
    if data < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENXIO) => Ok((end - at, false)), // only a hole up to the end
            _ => Ok((end - at, true)),
        };
    }
    let data = data as u64;
    if data > at {
        return Ok((data.min(end) - at, false));
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, at_off, libc::SEEK_HOLE) };
    let hole = if hole < 0 { end } else { (hole as u64).min(end) };
    Ok((hole.max(at + 1) - at, true))
}

impl ReadAt for Disk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.size => {}
            _ => return Err(crate::read_at::eof(offset, buf.len(), self.size)),
        }
        match &self.backend {
            Backend::Raw(file) => std::os::unix::fs::FileExt::read_exact_at(file, buf, offset),
            Backend::Qcow2(access) => access.read(buf, offset),
            Backend::Source(source) => source.read_exact_at(buf, offset),
        }
    }
    fn size(&self) -> u64 {
        self.size
    }
}

fn image_folder(path: &Path) -> Result<PathBuf, Error> {
    path.canonicalize()
        .map_err(io_err)?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::new(ErrorKind::Io, "the image has no parent folder"))
}

/// The format `qemu-img info` finds, or `None` when qemu-img is not installed (then only raw
/// and qcow2 are readable).
fn qemu_img_format(path: &Path) -> Result<Option<String>, Error> {
    let Some(info) = qemu_img_info(path)? else { return Ok(None) };
    Ok(info.get("format").and_then(|f| f.as_str()).map(str::to_string))
}

fn qemu_img_info(path: &Path) -> Result<Option<serde_json::Value>, Error> {
    let out = match Command::new("qemu-img").args(["info", "--output=json"]).arg(path).output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::new(ErrorKind::Io, e.to_string())),
    };
    if !out.status.success() {
        return Err(Error::corrupt(format!(
            "qemu-img cannot read it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // qemu-img's own output that does not parse: the tool failed, not the image.
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| Error::new(ErrorKind::Io, format!("qemu-img info: {e}")))
}

/// Refuses an image whose backing file or vmdk extents lie outside its own folder.
fn check_references(path: &Path) -> Result<(), Error> {
    let Some(info) = qemu_img_info(path)? else { return Ok(()) };
    let folder = image_folder(path)?;
    let gate = SameFolderGate::new(folder.clone());
    let refuse = |e: io::Error| Error::unsupported(e.to_string());
    if let Some(backing) = info.get("full-backing-filename").or(info.get("backing-filename")).and_then(|b| b.as_str()) {
        gate.check(Some(&folder.join(backing))).map_err(refuse)?;
    }
    let extents = info.pointer("/format-specific/data/extents").and_then(|e| e.as_array());
    for extent in extents.into_iter().flatten() {
        if let Some(name) = extent.get("filename").and_then(|f| f.as_str()) {
            gate.check(Some(&folder.join(name))).map_err(refuse)?;
        }
    }
    Ok(())
}

/// Which reader a qcow2 goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qcow2Route {
    /// imago reads it in place.
    Imago,
    /// `qemu-img convert` makes a raw copy first (a feature imago lacks).
    QemuImg,
}

/// The fields of a qcow2 header that decide how it is read (qemu's `docs/interop/qcow2.txt`;
/// big-endian). A field past the end of a short file reads as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2Header {
    /// Bytes 4..8: 2 or 3 (imago reads no other).
    pub version: u32,
    /// Bytes 20..24.
    pub cluster_bits: u32,
    /// Bytes 32..36: 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Bytes 36..40: entries of the L1 table.
    pub l1_size: u32,
    /// Bytes 40..48.
    pub l1_table_offset: u64,
    /// Bytes 72..80 (version 3; 0 for version 2).
    pub incompatible_features: u64,
    /// Bytes 100..104 (version 3; 72 for version 2).
    pub header_length: u32,
    /// Byte 104, when the header reaches past it (`header_length > 104`): 0 zlib, 1 zstd.
    pub compression_type: u8,
}

/// Incompatible feature bits (bytes 72..80 of a version 3 header).
const INCOMPAT_EXTERNAL_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// The incompatible features imago 0.2 reads; it refuses to open an image with any other
/// (dirty, corrupt, compression type, extended L2 entries, and bits not yet assigned).
const IMAGO_INCOMPAT: u64 = INCOMPAT_EXTERNAL_DATA_FILE;

impl Qcow2Header {
    /// Reads the header of the qcow2 image `file` of `len` bytes.
    pub fn read(file: &File, len: u64) -> Result<Qcow2Header, Error> {
        let mut b = [0u8; 112];
        let n = len.min(b.len() as u64) as usize;
        file.read_exact_at(&mut b[..n], 0).map_err(|_| Error::corrupt("qcow2: header is truncated"))?;
        Ok(Qcow2Header::parse(&b))
    }

    /// The fields of the first 112 bytes of an image.
    pub fn parse(b: &[u8; 112]) -> Qcow2Header {
        let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let be64 = |at: usize| (u64::from(be32(at)) << 32) | u64::from(be32(at + 4));
        let version = be32(4);
        let v3 = version >= 3;
        let header_length = if v3 { be32(100) } else { 72 };
        Qcow2Header {
            version,
            cluster_bits: be32(20),
            crypt_method: be32(32),
            l1_size: be32(36),
            l1_table_offset: be64(40),
            incompatible_features: if v3 { be64(72) } else { 0 },
            header_length,
            compression_type: if v3 && header_length > 104 { b[104] } else { 0 },
        }
    }

    /// The route, decided from the header alone: imago unless the image uses an incompatible
    /// feature imago lacks or a compression type other than zlib, which `qemu-img convert`
    /// reads. An encrypted image is refused: imago would read its ciphertext as data, and
    /// qemu-img needs a key imagelake does not have.
    pub fn route(&self) -> Result<Qcow2Route, Error> {
        if self.crypt_method != 0 {
            return Err(Error::unsupported(format!(
                "qcow2: the image is encrypted (crypt_method {}), which imagelake does not read",
                self.crypt_method
            )));
        }
        if self.incompatible_features & !IMAGO_INCOMPAT != 0 || self.compression_type != 0 {
            return Ok(Qcow2Route::QemuImg);
        }
        Ok(Qcow2Route::Imago)
    }
}

/// A qcow2 whose tables or clusters lie past the end of the file (a truncated image) is
/// refused here: imago, like qemu-img, would read what is missing as zeros and so turn lost
/// data into zeros without a word. Reads the L1 table and every L2 table once, one cluster at
/// a time (what `qemu-img check` reads, far less than the data).
fn check_qcow2_tables(file: &File, len: u64, header: &Qcow2Header) -> Result<(), Error> {
    let bad = |what: String| Error::corrupt(format!("qcow2: {what}"));
    let cluster_bits = header.cluster_bits;
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad(format!("cluster_bits {cluster_bits} is outside 9..21")));
    }
    let cluster = 1u64 << cluster_bits;
    // Version 3 may use extended L2 entries (incompatible bit 4): 16 bytes instead of 8.
    let extended_l2 = header.incompatible_features & INCOMPAT_EXTENDED_L2 != 0;
    let entry_len = if extended_l2 { 16 } else { 8 };
    let (l1_entries, l1_offset) = (u64::from(header.l1_size), header.l1_table_offset);
    let past_end = |what: &str, at: u64, n: u64| {
        bad(format!("{what} at byte {at} (+{n}) lies past the end of the file ({len} bytes): truncated?"))
    };
    let l1_len = l1_entries.saturating_mul(8);
    // qemu's own limit on the L1 table, so that a hostile header cannot make us allocate more.
    const MAX_L1_BYTES: u64 = 32 << 20;
    if l1_len > MAX_L1_BYTES {
        return Err(bad(format!("the L1 table of {l1_len} bytes exceeds qemu's limit of {MAX_L1_BYTES}")));
    }
    if l1_offset.checked_add(l1_len).is_none_or(|end| end > len) {
        return Err(past_end("the L1 table", l1_offset, l1_len));
    }
    // Bounded by the file: the L1 table was just shown to lie inside it.
    let mut l1 = vec![0u8; l1_len as usize];
    file.read_exact_at(&mut l1, l1_offset).map_err(io_err)?;
    let mut l2 = vec![0u8; cluster as usize];
    let compressed_offset_mask = (1u64 << (62 - (cluster_bits - 8))) - 1;
    for (i, entry) in l1.chunks_exact(8).enumerate() {
        let l2_offset = u64::from_be_bytes(entry.try_into().unwrap_or([0; 8])) & 0x00ff_ffff_ffff_fe00;
        if l2_offset == 0 {
            continue;
        }
        if l2_offset.saturating_add(cluster) > len {
            return Err(past_end(&format!("L2 table {i}"), l2_offset, cluster));
        }
        file.read_exact_at(&mut l2, l2_offset).map_err(io_err)?;
        for (j, e) in l2.chunks_exact(entry_len).enumerate() {
            let e = u64::from_be_bytes(e[..8].try_into().unwrap_or([0; 8]));
            let l2_entries = cluster / entry_len as u64;
            let guest = (i as u64).saturating_mul(l2_entries).saturating_add(j as u64).saturating_mul(cluster);
            let (host, need) =
                if e & (1 << 62) != 0 { (e & compressed_offset_mask, 1) } else { (e & 0x00ff_ffff_ffff_fe00, cluster) };
            if host != 0 && host.saturating_add(need) > len {
                return Err(past_end(&format!("the cluster for guest offset {guest}"), host, need));
            }
        }
    }
    Ok(())
}

/// Lets a qcow2 image open the files it references (backing files, external data files)
/// only when they lie in the image's own folder.
#[derive(Clone)]
struct SameFolderGate {
    folder: PathBuf,
    /// Set when the gate refuses a file (imago's error then says why, but not as a kind).
    refused: Arc<AtomicBool>,
}

impl SameFolderGate {
    fn new(folder: PathBuf) -> SameFolderGate {
        SameFolderGate { folder, refused: Arc::new(AtomicBool::new(false)) }
    }

    fn check(&self, path: Option<&Path>) -> io::Result<()> {
        let inside = path
            .and_then(|p| p.canonicalize().ok())
            .and_then(|p| p.parent().map(|parent| parent == self.folder))
            .unwrap_or(false);
        if inside {
            Ok(())
        } else {
            self.refused.store(true, Ordering::Relaxed);
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "referenced file {:?} is not in the image's folder {:?}",
                    path.unwrap_or(Path::new("?")),
                    self.folder
                ),
            ))
        }
    }
}

impl imago::format::gate::ImplicitOpenGate<ImagoFile> for SameFolderGate {
    async fn open_format<F: FormatDriverBuilder<ImagoFile>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<ImagoFile>> {
        self.check(builder.get_image_path().as_deref())?;
        let gate = self.clone();
        Ok(FormatAccess::new(Box::pin(builder.open(gate)).await?))
    }

    async fn open_storage(&mut self, options: StorageOpenOptions) -> io::Result<ImagoFile> {
        self.check(options.get_filename())?;
        ImagoFile::open(options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn qemu_img(args: &[&str], path: &Path) {
        let status = Command::new("qemu-img").args(args).arg(path).arg("4M").status().unwrap();
        assert!(status.success(), "qemu-img {args:?}");
    }

    fn header(path: &Path) -> Qcow2Header {
        let file = File::open(path).unwrap();
        Qcow2Header::read(&file, file.metadata().unwrap().len()).unwrap()
    }

    /// The route is decided from the header of real images: zstd clusters (incompatible
    /// feature bit 3, compression type 1) and extended L2 entries go through qemu-img, a plain
    /// image through imago; both then open as qcow2 disks of the same size.
    #[test]
    fn qcow2_route_is_decided_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        qemu_img(&["create", "-q", "-f", "qcow2"], &p("plain.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compression_type=zstd"], &p("zstd.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", "extended_l2=on"], &p("l2.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10"], &p("v2.qcow2"));

        let plain = header(&p("plain.qcow2"));
        assert_eq!((plain.version, plain.incompatible_features, plain.compression_type), (3, 0, 0));
        assert_eq!(plain.route().unwrap(), Qcow2Route::Imago);
        assert_eq!(header(&p("v2.qcow2")).route().unwrap(), Qcow2Route::Imago);
        let zstd = header(&p("zstd.qcow2"));
        assert_eq!((zstd.incompatible_features, zstd.compression_type), (1 << 3, 1));
        assert_eq!(zstd.route().unwrap(), Qcow2Route::QemuImg);
        assert_eq!(header(&p("l2.qcow2")).route().unwrap(), Qcow2Route::QemuImg);

        let scratch = tempfile::tempdir().unwrap();
        for name in ["plain.qcow2", "zstd.qcow2", "l2.qcow2", "v2.qcow2"] {
            let disk = Disk::open(&p(name), scratch.path()).unwrap();
            assert_eq!((disk.format(), disk.size()), ("qcow2", 4 << 20), "{name}");
            let converted = matches!(disk.backend, Backend::Raw(_));
            assert_eq!(converted, name == "zstd.qcow2" || name == "l2.qcow2", "{name}");
        }
        // The converted copies are unlinked at once.
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);

        // An encrypted image (crypt_method set) is refused as unsupported, not read as data.
        let mut bytes = std::fs::read(p("plain.qcow2")).unwrap();
        bytes[32..36].copy_from_slice(&2u32.to_be_bytes());
        std::fs::write(p("luks.qcow2"), &bytes).unwrap();
        let err = Disk::open(&p("luks.qcow2"), scratch.path()).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("encrypted"), "{err}");
    }

    /// Kinds of what opening fails with: no such file is I/O; a truncated qcow2 is corrupt.
    #[test]
    fn open_errors_say_what_kind() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let err = Disk::open(&p("missing.img"), dir.path()).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert_eq!(err.to_string(), io::Error::from_raw_os_error(libc::ENOENT).to_string());

        // An L1 table past the end of the file.
        qemu_img(&["create", "-q", "-f", "qcow2"], &p("cut.qcow2"));
        let mut bytes = std::fs::read(p("cut.qcow2")).unwrap();
        bytes[40..48].copy_from_slice(&(1u64 << 30).to_be_bytes());
        std::fs::write(p("cut.qcow2"), &bytes).unwrap();
        let err = Disk::open(&p("cut.qcow2"), dir.path()).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("truncated?"), "{err}");
    }
}
