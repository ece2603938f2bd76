//! The disk map: file pieces where file contents own the bytes, and for every other range
//! zeros or raw chunks cut from one stream of all remaining bytes.

use super::*;

/// A disk range filled by file content.
pub(super) struct Piece {
    disk_offset: u64,
    len: u64,
    chunk: Option<ChunkHash>,
    chunk_offset: u64,
    content_hash: String,
    content_offset: u64,
}

/// The disk ranges a file's content fills: its written extents, up to its size (the rest of
/// the last block is slack and stays raw), cut at chunk boundaries. None for a content the
/// disk does not hold wholly as it is.
pub(super) fn file_pieces(spans: &[Span], file: &fs::File, content: &Content, out: &mut Vec<Piece>) {
    // Any other content is read wholly through its filesystem: no piece of it is mapped.
    if !file.held_as_is() {
        return;
    }
    for e in file.extents.iter().filter(|e| !e.unwritten) {
        let end = e.logical.saturating_add(e.len).min(file.size);
        let mut at = e.logical;
        // Chunks are sorted by offset: find the first one that overlaps.
        let mut i = content.chunks.partition_point(|c| c.0 + c.1 <= at);
        while at < end {
            let Some(&(c_off, c_len, c_hash)) = content.chunks.get(i) else { break };
            let n = (c_off + c_len).min(end) - at;
            // A volume's stretch may lie in several places on the disk (logical volumes).
            let mut done = 0;
            for (disk_offset, len) in to_disk(spans, e.physical + (at - e.logical), n) {
                out.push(Piece {
                    disk_offset,
                    len,
                    chunk: c_hash,
                    chunk_offset: at + done - c_off,
                    content_hash: content.hash.clone(),
                    content_offset: at + done,
                });
                done += len;
            }
            at += n;
            i += 1;
        }
    }
}

/// Builds the extents that tile the disk: file pieces where files own the bytes, and for
/// every other range zeros or raw chunks cut from the stream of all remaining bytes.
pub(super) fn disk_map(
    sink: &Sink,
    disk: &Disk,
    image_id: i64,
    mut pieces: Vec<Piece>,
    parent_disk: Option<(&ParentDisk, &[(u64, u64)])>,
) -> std::io::Result<Vec<ExtentRow>> {
    sink.phase("disk map and raw bytes", disk.size());
    pieces.sort_by_key(|p| p.disk_offset);
    let mut extents = Vec::new();
    let mut raw = RawStream::new(sink, image_id);
    let mut at = 0u64;
    // Between file pieces: raw bytes, or for an edit the parent's extents where it wrote nothing.
    let gap = |raw: &mut RawStream, from: u64, to: u64, extents: &mut Vec<ExtentRow>| match parent_disk {
        None => raw.gap(disk, from, to, extents),
        Some((parent_disk, kept)) => parent_disk.fill(disk, raw, kept, from, to, extents),
    };
    for mut p in pieces {
        if p.disk_offset + p.len <= at {
            continue; // wholly inside an earlier piece: a block two inodes claim
        }
        if p.disk_offset < at {
            let skip = at - p.disk_offset;
            (p.disk_offset, p.len, p.chunk_offset, p.content_offset) =
                (at, p.len - skip, p.chunk_offset + skip, p.content_offset + skip);
        }
        gap(&mut raw, at, p.disk_offset, &mut extents)?;
        extents.push(ExtentRow {
            image_id,
            disk_offset: p.disk_offset as i64,
            length: p.len as i64,
            kind: if p.chunk.is_some() { ExtentKind::File } else { ExtentKind::Zero },
            chunk_hash: p.chunk.as_ref().map(hex),
            chunk_offset: p.chunk_offset as i64,
            content_hash: Some(p.content_hash),
            content_offset: Some(p.content_offset as i64),
        });
        if p.chunk.is_none() {
            sink.stats.zero.fetch_add(p.len, Relaxed);
        }
        sink.advance(p.len);
        at = p.disk_offset + p.len;
    }
    gap(&mut raw, at, disk.size(), &mut extents)?;
    raw.finish(&mut extents)?;
    extents.sort_by_key(|e| e.disk_offset);
    check_tiling(&extents, disk.size())?;
    Ok(extents)
}

/// The extents must cover `[0, size)` exactly once, in order: checked before anything commits.
fn check_tiling(extents: &[ExtentRow], size: u64) -> std::io::Result<()> {
    let mut at = 0i64;
    for e in extents {
        if e.disk_offset != at || e.length <= 0 {
            return Err(std::io::Error::other(format!("internal: disk map has a gap or overlap at {at}")));
        }
        at += e.length;
    }
    if at as u64 != size {
        return Err(std::io::Error::other(format!("internal: disk map ends at {at}, disk at {size}")));
    }
    Ok(())
}

/// The bytes no file owns, in disk order, with zero blocks taken out, chunked as one stream
/// so that metadata and free space deduplicate like file content does.
pub(super) struct RawStream<'a> {
    sink: &'a Sink,
    pub(super) image_id: i64,
    chunker: Chunker,
    /// Disk ranges fed to the stream and not yet wholly chunked: (stream offset, disk offset, len).
    segments: VecDeque<(u64, u64, u64)>,
    stream_len: u64,
    /// Chunks cut but not yet hashed: hashed and stored in parallel batches.
    pending: Vec<(u64, Vec<u8>)>,
    /// The read buffer, made once: a disk has a gap between every two files, and zeroing a
    /// new buffer for each was a tenth of a checkin's CPU time.
    buf: Vec<u8>,
}

/// Zero detection works on blocks aligned to the disk; a shorter zero run stays in the stream.
const ZERO_BLOCK: u64 = 4096;

impl<'a> RawStream<'a> {
    fn new(sink: &'a Sink, image_id: i64) -> Self {
        RawStream {
            sink,
            image_id,
            chunker: Chunker::new(),
            segments: VecDeque::new(),
            stream_len: 0,
            pending: Vec::new(),
            buf: vec![0u8; READ_BUF],
        }
    }

    /// Feeds `[from, to)` of the disk: known-zero and all-zero blocks become zero extents,
    /// the rest goes to the stream.
    pub(super) fn gap(&mut self, disk: &Disk, from: u64, to: u64, out: &mut Vec<ExtentRow>) -> std::io::Result<()> {
        if from >= to {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        let fed = self.feed(disk, from, to, &mut buf, out);
        self.buf = buf;
        fed
    }

    /// `gap` with its buffer.
    fn feed(
        &mut self,
        disk: &Disk,
        from: u64,
        to: u64,
        buf: &mut [u8],
        out: &mut Vec<ExtentRow>,
    ) -> std::io::Result<()> {
        for run in disk.map(from, to - from)? {
            if !run.data {
                self.zero(run.offset, run.len, out);
                continue;
            }
            let mut at = run.offset;
            let end = run.offset + run.len;
            while at < end {
                let n = (end - at).min(READ_BUF as u64) as usize;
                disk.read_exact_at(&mut buf[..n], at)?;
                self.sink.stats.read.fetch_add(n as u64, Relaxed);
                // Walk aligned blocks, sending non-zero spans to the stream.
                let mut i = 0usize;
                let mut data_start = None;
                while i < n {
                    let block_end = (((at + i as u64) / ZERO_BLOCK + 1) * ZERO_BLOCK - at).min(n as u64) as usize;
                    let zero = is_zero(&buf[i..block_end]);
                    match (zero, data_start) {
                        (true, Some(s)) => {
                            self.data(at + s as u64, &buf[s..i], out)?;
                            data_start = None;
                        }
                        (false, None) => data_start = Some(i),
                        _ => {}
                    }
                    if zero {
                        self.zero(at + i as u64, (block_end - i) as u64, out);
                    }
                    i = block_end;
                }
                if let Some(s) = data_start {
                    self.data(at + s as u64, &buf[s..n], out)?;
                }
                at += n as u64;
            }
        }
        Ok(())
    }

    fn zero(&mut self, offset: u64, len: u64, out: &mut Vec<ExtentRow>) {
        self.sink.stats.zero.fetch_add(len, Relaxed);
        self.sink.advance(len);
        match out.last_mut() {
            Some(last)
                if last.kind == ExtentKind::Zero
                    && last.content_hash.is_none()
                    && (last.disk_offset + last.length) as u64 == offset =>
            {
                last.length += len as i64
            }
            _ => out.push(ExtentRow {
                image_id: self.image_id,
                disk_offset: offset as i64,
                length: len as i64,
                kind: ExtentKind::Zero,
                chunk_hash: None,
                chunk_offset: 0,
                content_hash: None,
                content_offset: None,
            }),
        }
    }

    fn data(&mut self, disk_offset: u64, bytes: &[u8], out: &mut Vec<ExtentRow>) -> std::io::Result<()> {
        self.sink.advance(bytes.len() as u64);
        match self.segments.back_mut() {
            Some(last) if last.1 + last.2 == disk_offset => last.2 += bytes.len() as u64,
            _ => self.segments.push_back((self.stream_len, disk_offset, bytes.len() as u64)),
        }
        self.stream_len += bytes.len() as u64;
        let pending = &mut self.pending;
        self.chunker.push(bytes, &mut |off, chunk: &[u8]| -> std::io::Result<()> {
            pending.push((off, chunk.to_vec()));
            Ok(())
        })?;
        if self.pending.len() >= 64 {
            self.flush(out)?;
        }
        Ok(())
    }

    /// Hashes and stores pending chunks in parallel, then maps them back onto the disk.
    fn flush(&mut self, out: &mut Vec<ExtentRow>) -> std::io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let hashes: Vec<ChunkHash> =
            pending.par_iter().map(|(_, c)| self.sink.put(c, false)).collect::<std::io::Result<_>>()?;
        for ((stream_off, chunk), hash) in pending.iter().zip(hashes) {
            let chunk_end = stream_off + chunk.len() as u64;
            while let Some(&(s_off, d_off, len)) = self.segments.front() {
                let from = s_off.max(*stream_off);
                let to = (s_off + len).min(chunk_end);
                if from < to {
                    out.push(ExtentRow {
                        image_id: self.image_id,
                        disk_offset: (d_off + (from - s_off)) as i64,
                        length: (to - from) as i64,
                        kind: ExtentKind::Raw,
                        chunk_hash: Some(hex(&hash)),
                        chunk_offset: (from - stream_off) as i64,
                        content_hash: None,
                        content_offset: None,
                    });
                }
                if s_off + len <= chunk_end {
                    self.segments.pop_front();
                } else {
                    break;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, out: &mut Vec<ExtentRow>) -> std::io::Result<()> {
        let pending = &mut self.pending;
        self.chunker.finish(&mut |off, chunk: &[u8]| -> std::io::Result<()> {
            pending.push((off, chunk.to_vec()));
            Ok(())
        })?;
        self.flush(out)
    }
}
