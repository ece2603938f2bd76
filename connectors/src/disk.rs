//! Disk image formats: raw and qcow2, read natively.
//!
//! A [`Disk`] is a [`ReadAt`] over the guest-visible bytes plus an allocation map
//! ([`Disk::map`]) that says which ranges are known to read as zeros, so that checkin never
//! reads, hashes or stores them. qcow2 goes through imago (compressed clusters, backing
//! chains); a backing file is opened only when it lies in the image's own folder, so an image
//! cannot make the library read arbitrary host files.

use crate::ReadAt;
use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions, SyncFormatAccess};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

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
    format: &'static str,
    backend: Backend,
    size: u64,
}

enum Backend {
    Raw(File),
    Qcow2(SyncFormatAccess<ImagoFile>),
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

impl Disk {
    /// Opens `path`, detecting the format from its first bytes.
    pub fn open(path: &Path) -> io::Result<Disk> {
        let file = File::open(path)?;
        let mut magic = [0u8; 4];
        let len = file.metadata()?.len();
        if len >= 4 {
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0)?;
        }
        if &magic == QCOW2_MAGIC {
            drop(file);
            return Self::open_qcow2(path);
        }
        Ok(Disk { format: "raw", backend: Backend::Raw(file), size: len })
    }

    fn open_qcow2(path: &Path) -> io::Result<Disk> {
        let folder = path
            .canonicalize()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| io::Error::other("qcow2 image has no parent folder"))?;
        let qcow2 = Qcow2::<ImagoFile>::builder_path(path)
            .write(false)
            .open_sync(SameFolderGate { folder })
            .map_err(|e| io::Error::new(e.kind(), format!("qcow2: {e}")))?;
        let access = SyncFormatAccess::new(qcow2)?;
        let size = access.size();
        Ok(Disk { format: "qcow2", backend: Backend::Qcow2(access), size })
    }

    /// "raw" or "qcow2".
    pub fn format(&self) -> &'static str {
        self.format
    }

    /// The allocation map of `[offset, offset + len)`: runs in order that tile the range.
    pub fn map(&self, offset: u64, len: u64) -> io::Result<Vec<Run>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut runs: Vec<Run> = Vec::new();
        let mut at = offset;
        while at < end {
            let (run_len, data) = match &self.backend {
                Backend::Raw(file) => raw_run(file, at, end)?,
                Backend::Qcow2(access) => {
                    let (mapping, n) = access.get_mapping_sync(at, end - at)?;
                    let data = match mapping {
                        Mapping::Zero { .. } => false,
                        Mapping::Eof { .. } => break,
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
        }
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// Lets a qcow2 image open the files it references (backing files, external data files)
/// only when they lie in the image's own folder.
struct SameFolderGate {
    folder: PathBuf,
}

impl SameFolderGate {
    fn check(&self, path: Option<&Path>) -> io::Result<()> {
        let inside = path
            .and_then(|p| p.canonicalize().ok())
            .and_then(|p| p.parent().map(|parent| parent == self.folder))
            .unwrap_or(false);
        if inside {
            Ok(())
        } else {
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
        let gate = SameFolderGate { folder: self.folder.clone() };
        Ok(FormatAccess::new(Box::pin(builder.open(gate)).await?))
    }

    async fn open_storage(&mut self, options: StorageOpenOptions) -> io::Result<ImagoFile> {
        self.check(options.get_filename())?;
        ImagoFile::open(options).await
    }
}
