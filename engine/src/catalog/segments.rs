//! Manifests shared between versions: a version's `files` and `extents` rows are stored in
//! content-addressed segments, and the version holds only the list of its segments.
//!
//! A version's rows are sorted (files by partition and path, extents by disk offset) and cut
//! after each row whose key hashes to a multiple of [`AVERAGE_ROWS`] (and after
//! [`MAX_ROWS`] rows at most): the cuts depend on the rows' keys alone, so an edit of
//! one file changes the one segment that holds its row, and a checkin of a tree that shares
//! most paths with another cuts most of it where the other was cut. A segment is named by the
//! blake3 of its rows (every column but `image_id`), and is stored once: its rows in the
//! table's dataset with a `segment` column in place of `image_id`, one row in `segments` per
//! version that uses it. As OSTree's dirtree objects or git's trees, but cut by content
//! rather than by folder, since a disk map has no folders and a flat folder of 10,000 files
//! (`/usr/share/doc`) would otherwise be one object rewritten by any change in it.
//!
//! **Architecture Invariant:** a segment's rows are appended, and the `segments` rows that
//! use them, under the `catalog/segments.lock` flock, after looking up which segments are
//! stored already: a segment is stored once, and one that is dropped (no `segments` row uses
//! it) is dropped under the same lock, so a writer never lists a segment that is going.

use super::columns::{Columns, int, text};
use super::{Catalog, Decode, ExtentRow, FileRow, Table};
use crate::{Error, Result};
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The tables whose rows are stored in segments.
pub const MANIFESTS: [&str; 2] = [FileRow::NAME, ExtentRow::NAME];

/// A cut falls after a row whose key hash is a multiple of this: segments of about this many
/// rows (a few KiB each, stored), small enough that an edit rewrites little, large enough that
/// a version's list of segments is a small share of its rows.
const AVERAGE_ROWS: u64 = 64;
/// No segment is longer, whatever the keys.
const MAX_ROWS: usize = 1024;
/// Segments per lookup of an `IN (...)` list.
const LOOKUP_GROUP: usize = 512;
/// Which versions list each segment (of one manifest), by segment name.
pub type SegmentUsers = HashMap<String, Vec<i64>>;

/// Adds the version of each `segments` row to the users of its segment.
fn add_users(users: &mut SegmentUsers, rows: Vec<SegmentRow>) {
    for row in rows {
        users.entry(row.segment).or_default().push(row.image_id);
    }
}

/// A table whose rows are stored in segments.
pub trait Segmented: Table + Decode + Clone {
    /// The order of a version's rows, in which segments are cut.
    fn sort(rows: &mut [Self]);
    /// A hash of the row's key (what the order sorts by): where cuts fall.
    fn key_hash(&self) -> u64;
    /// Appends every stored column of the row (all but `image_id`) to the bytes a segment is
    /// named by.
    fn digest(&self, out: &mut Vec<u8>);
    fn set_image_id(&mut self, image_id: i64);
}

// A segment's bytes are built in one buffer and hashed once: blake3 costs little per byte but
// much per call, and a fleet's checkin digests millions of rows.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}
fn put_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}
fn put_opt(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put(out, bytes);
        }
    }
}
/// The first 8 bytes of the blake3 of the key's parts, concatenated.
fn key_hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    parts.iter().for_each(|part| {
        hasher.update(part);
    });
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

impl Segmented for FileRow {
    fn sort(rows: &mut [Self]) {
        rows.sort_unstable_by(|a, b| (a.partition, &a.path).cmp(&(b.partition, &b.path)));
    }
    fn key_hash(&self) -> u64 {
        key_hash(&[&self.partition.to_le_bytes(), self.path.as_bytes()])
    }
    fn digest(&self, h: &mut Vec<u8>) {
        put_int(h, self.partition);
        put(h, self.path.as_bytes());
        put(h, self.kind.as_str().as_bytes());
        for value in [self.mode, self.uid, self.gid, self.size, self.mtime, self.inode, self.nlink] {
            put_int(h, value);
        }
        put_opt(h, self.link_target.as_deref().map(str::as_bytes));
        put_opt(h, self.dev_major.map(i64::to_le_bytes).as_ref().map(|b| &b[..]));
        put_opt(h, self.dev_minor.map(i64::to_le_bytes).as_ref().map(|b| &b[..]));
        put_int(h, self.xattrs.len() as i64);
        for (name, value) in &self.xattrs {
            put(h, name.as_bytes());
            put(h, value);
        }
        put_opt(h, self.content_hash.as_deref().map(str::as_bytes));
        put_int(h, self.extent_map.len() as i64);
        for e in &self.extent_map {
            for value in [e.file_offset, e.disk_offset, e.length, i64::from(e.unwritten)] {
                put_int(h, value);
            }
        }
    }
    fn set_image_id(&mut self, image_id: i64) {
        self.image_id = image_id;
    }
}

impl Segmented for ExtentRow {
    fn sort(rows: &mut [Self]) {
        rows.sort_unstable_by_key(|e| e.disk_offset);
    }
    fn key_hash(&self) -> u64 {
        key_hash(&[&self.disk_offset.to_le_bytes()])
    }
    fn digest(&self, h: &mut Vec<u8>) {
        put_int(h, self.disk_offset);
        put_int(h, self.length);
        put(h, self.kind.as_str().as_bytes());
        put_opt(h, self.chunk_hash.as_deref().map(str::as_bytes));
        put_int(h, self.chunk_offset);
        put_opt(h, self.content_hash.as_deref().map(str::as_bytes));
        put_opt(h, self.content_offset.map(i64::to_le_bytes).as_ref().map(|b| &b[..]));
    }
    fn set_image_id(&mut self, image_id: i64) {
        self.image_id = image_id;
    }
}

/// Cuts sorted rows into segments: `(name, rows)` each, in order.
pub(crate) fn cut<T: Segmented>(rows: &[T]) -> Vec<(String, std::ops::Range<usize>)> {
    let mut segments = Vec::new();
    let (mut start, mut bytes) = (0, Vec::new());
    for (i, row) in rows.iter().enumerate() {
        row.digest(&mut bytes);
        if row.key_hash() % AVERAGE_ROWS == 0 || i + 1 - start >= MAX_ROWS || i + 1 == rows.len() {
            segments.push((blake3::hash(&bytes).to_hex().to_string(), start..i + 1));
            start = i + 1;
            bytes.clear();
        }
    }
    segments
}

/// The schema a segmented table is stored with: `segment` in place of `image_id`.
pub(crate) fn stored_schema(schema: SchemaRef) -> SchemaRef {
    let fields = schema.fields().iter().map(|f| match f.name().as_str() {
        "image_id" => Arc::new(Field::new("segment", DataType::Utf8, false)),
        _ => f.clone(),
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

/// `batch` (rows of a segmented table) as stored: its `image_id` column replaced by the
/// segment of each row.
fn stored_batch(batch: RecordBatch, segments: Vec<&str>) -> std::result::Result<RecordBatch, ArrowError> {
    let schema = stored_schema(batch.schema());
    let mut columns = batch.columns().to_vec();
    let at = batch.schema().index_of("image_id")?;
    columns[at] = Arc::new(StringArray::from(segments)) as ArrayRef;
    RecordBatch::try_new(schema, columns)
}

/// One use of a segment by a version: the version's rows of `manifest` include the
/// segment's `rows` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRow {
    pub image_id: i64,
    pub manifest: String,
    pub segment: String,
    pub rows: i64,
}

impl Table for SegmentRow {
    const NAME: &'static str = "segments";
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("image_id", DataType::Int64, false),
            Field::new("manifest", DataType::Utf8, false),
            Field::new("segment", DataType::Utf8, false),
            Field::new("rows", DataType::Int64, false),
        ]))
    }
    fn batch(rows: &[Self]) -> std::result::Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter_values(rows.iter().map(|r| r.image_id))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.manifest.as_str()))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.segment.as_str()))),
                Arc::new(arrow::array::Int64Array::from_iter_values(rows.iter().map(|r| r.rows))),
            ],
        )
    }
}

impl Decode for SegmentRow {
    fn decode(batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(Self::NAME, batch);
        let (image_id, manifest, segment, rows) =
            (c.i64("image_id")?, c.str("manifest")?, c.str("segment")?, c.i64("rows")?);
        Ok((0..c.rows())
            .map(|r| SegmentRow {
                image_id: int(image_id, r),
                manifest: text(manifest, r),
                segment: text(segment, r),
                rows: int(rows, r),
            })
            .collect())
    }
}

/// What writing a version's manifest stored.
#[derive(Debug, Default, Clone, Copy)]
pub struct ManifestWrite {
    pub segments: usize,
    /// Segments no version had: their rows were written.
    pub new_segments: usize,
    pub new_rows: usize,
}

/// A segment's rows in a version that do not add up to what the version lists.
#[derive(Debug, Clone)]
pub struct BrokenSegment {
    pub image_id: i64,
    pub manifest: String,
    pub segment: String,
    pub expected: i64,
    pub found: i64,
}

impl Catalog {
    /// Takes `segments.lock` (see the module's doc), or on a bucket its lease.
    async fn segments_lock(&self) -> Result<crate::locks::Held> {
        crate::locks::segments(&self.files).await
    }

    /// Stores the rows of versions' manifests (`files` or `extents`): the segments no version
    /// has yet, and each version's list of segments. Two commits, whatever the versions.
    pub async fn append_manifests<T: Segmented>(&self, versions: Vec<(i64, Vec<T>)>) -> Result<ManifestWrite> {
        let mut cut_versions = Vec::with_capacity(versions.len());
        for (image_id, mut rows) in versions {
            T::sort(&mut rows);
            let segments = cut(&rows);
            cut_versions.push((image_id, rows, segments));
        }
        let _lock = self.segments_lock().await?;
        let mut names: Vec<String> =
            cut_versions.iter().flat_map(|(_, _, segments)| segments.iter().map(|(name, _)| name.clone())).collect();
        names.sort_unstable();
        names.dedup();
        let mut stored = self.stored_segments(T::NAME, &names).await?;
        let mut write = ManifestWrite::default();
        let (mut fresh_rows, mut fresh_names, mut uses) = (Vec::new(), Vec::new(), Vec::new());
        for (image_id, rows, segments) in &cut_versions {
            write.segments += segments.len();
            for (name, range) in segments {
                if stored.insert(name.clone()) {
                    write.new_segments += 1;
                    fresh_rows.extend_from_slice(&rows[range.clone()]);
                    fresh_names.extend(std::iter::repeat_n(name.as_str(), range.len()));
                }
                uses.push(SegmentRow {
                    image_id: *image_id,
                    manifest: T::NAME.to_string(),
                    segment: name.clone(),
                    rows: range.len() as i64,
                });
            }
        }
        write.new_rows = fresh_rows.len();
        let mut batches = Vec::new();
        // Bounded batches keep peak memory flat for images with many files.
        for (part, names) in fresh_rows.chunks(64 * 1024).zip(fresh_names.chunks(64 * 1024)) {
            batches.push(stored_batch(T::batch(part)?, names.to_vec())?);
        }
        self.append_batches(T::NAME, batches).await?;
        self.append(&uses).await?;
        Ok(write)
    }

    /// [`Catalog::append_manifests`] of one version.
    pub(crate) async fn append_manifest<T: Segmented>(&self, image_id: i64, rows: &[T]) -> Result<ManifestWrite> {
        self.append_manifests(vec![(image_id, rows.to_vec())]).await
    }

    /// Which of `names` the stored rows of `manifest` hold.
    async fn stored_segments(&self, manifest: &str, names: &[String]) -> Result<HashSet<String>> {
        let mut stored = HashSet::new();
        for group in names.chunks(LOOKUP_GROUP) {
            let filter = format!("segment IN ({})", super::queries::quoted_list(group));
            self.scan_each(manifest, &["segment"], Some(&filter), |batch| {
                let column = Columns::new(manifest, &batch).str("segment")?;
                stored.extend(column.iter().flat_map(|c| c.iter().flatten().map(str::to_string)));
                Ok(())
            })
            .await?;
        }
        Ok(stored)
    }

    /// The `segments` rows matching `filter`.
    pub(crate) async fn segment_rows(&self, filter: &str) -> Result<Vec<SegmentRow>> {
        let mut rows = Vec::new();
        self.scan_each(SegmentRow::NAME, &["image_id", "manifest", "segment", "rows"], Some(filter), |batch| {
            rows.extend(SegmentRow::decode(&batch)?);
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// The segments of one version's `manifest`.
    pub(crate) async fn segments_of(&self, manifest: &str, image_id: i64) -> Result<Vec<String>> {
        let filter = format!("image_id = {image_id} AND manifest = '{manifest}'");
        Ok(self.segment_rows(&filter).await?.into_iter().map(|r| r.segment).collect())
    }

    /// The versions that use each of `segments` of `manifest`.
    pub async fn segment_users(&self, manifest: &str, segments: &[String]) -> Result<SegmentUsers> {
        if let Some(every) = self.small_segment_users(manifest).await? {
            return Ok(segments.iter().filter_map(|s| Some((s.clone(), every.get(s)?.clone()))).collect());
        }
        let filters = segments
            .chunks(LOOKUP_GROUP)
            .map(|group| format!("manifest = '{manifest}' AND segment IN ({})", super::queries::quoted_list(group)));
        self.users_where(filters.collect()).await
    }

    /// The segments of `manifest` that the versions `ids` list, each with those of `ids` that
    /// list it.
    pub async fn version_segments(&self, manifest: &str, ids: &[i64]) -> Result<SegmentUsers> {
        if let Some(every) = self.small_segment_users(manifest).await? {
            let ids: HashSet<i64> = ids.iter().copied().collect();
            let among = every.iter().filter_map(|(segment, users)| {
                let users: Vec<i64> = users.iter().copied().filter(|id| ids.contains(id)).collect();
                (!users.is_empty()).then(|| (segment.clone(), users))
            });
            return Ok(among.collect());
        }
        let filters = ids.chunks(4 * LOOKUP_GROUP).map(|group| {
            let list = group.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
            format!("manifest = '{manifest}' AND image_id IN ({list})")
        });
        self.users_where(filters.collect()).await
    }

    /// Every segment of `manifest` with the versions that list it.
    pub async fn every_segment_users(&self, manifest: &str) -> Result<Arc<SegmentUsers>> {
        if let Some(every) = self.small_segment_users(manifest).await? {
            return Ok(every);
        }
        Ok(Arc::new(self.users_where(vec![format!("manifest = '{manifest}'")]).await?))
    }

    /// [`Catalog::every_segment_users`] while the `segments` table is small: then it is read
    /// once per table version and kept (see `kept.rs`), so that a question that meets a few
    /// segments finds their versions in memory rather than through the index. None for a
    /// larger table.
    pub async fn small_segment_users(&self, manifest: &str) -> Result<Option<Arc<SegmentUsers>>> {
        let dataset = self.dataset(SegmentRow::NAME).await?;
        self.kept_users
            .get(manifest, &dataset, || async {
                // Read at the version just seen, which is the one it is kept for.
                let mut users = SegmentUsers::new();
                let filter = format!("manifest = '{manifest}'");
                super::scan_each(&dataset, SegmentRow::NAME, &["image_id", "segment"], Some(&filter), |batch| {
                    add_users(&mut users, SegmentRow::decode(&batch)?);
                    Ok(())
                })
                .await?;
                Ok(users)
            })
            .await
    }

    /// The `segments` rows matching any of `filters`, as the versions that list each segment.
    async fn users_where(&self, filters: Vec<String>) -> Result<SegmentUsers> {
        let mut users = SegmentUsers::new();
        for filter in filters {
            add_users(&mut users, self.segment_rows(&filter).await?);
        }
        Ok(users)
    }

    /// Rows of `manifest`, with the segment each belongs to, matching `filter` (None: all).
    pub(crate) async fn stored_rows<T: Segmented>(
        &self,
        columns: &[&str],
        filter: Option<&str>,
    ) -> Result<Vec<(String, T)>> {
        let mut columns: Vec<&str> = columns.iter().copied().filter(|c| *c != "image_id").collect();
        columns.push("segment");
        let mut rows = Vec::new();
        self.scan_each(T::NAME, &columns, filter, |batch| {
            let decoded = T::decode(&batch)?;
            let segment = Columns::new(T::NAME, &batch).str("segment")?;
            let segment = segment.ok_or_else(|| Error::Catalog(format!("{} has no segment column", T::NAME)))?;
            rows.extend(decoded.into_iter().enumerate().map(|(r, row)| (segment.value(r).to_string(), row)));
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// The rows of one version's `manifest` that match `filter` (a Lance predicate on stored
    /// columns, or None), `columns` of each.
    pub(crate) async fn version_rows<T: Segmented>(
        &self,
        image_id: i64,
        columns: &[&str],
        filter: Option<&str>,
    ) -> Result<Vec<T>> {
        let segments = self.segments_of(T::NAME, image_id).await?;
        let mut rows = Vec::new();
        for group in segments.chunks(LOOKUP_GROUP) {
            let mut within = format!("segment IN ({})", super::queries::quoted_list(group));
            if let Some(filter) = filter {
                within = format!("{within} AND ({filter})");
            }
            for (_, mut row) in self.stored_rows::<T>(columns, Some(&within)).await? {
                row.set_image_id(image_id);
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Rows of `manifest`, in any version, matching `filter`: one for each version that uses
    /// the segment of each stored row.
    pub(crate) async fn rows_in_versions<T: Segmented>(
        &self,
        columns: &[&str],
        filter: Option<&str>,
    ) -> Result<Vec<T>> {
        let found = self.stored_rows::<T>(columns, filter).await?;
        let segments: Vec<String> = found.iter().map(|(s, _)| s.clone()).collect::<HashSet<_>>().into_iter().collect();
        let users = match filter {
            Some(_) => Arc::new(self.segment_users(T::NAME, &segments).await?),
            None => self.every_segment_users(T::NAME).await?,
        };
        let mut rows = Vec::new();
        for (segment, row) in found {
            for &image_id in users.get(&segment).into_iter().flatten() {
                let mut row = row.clone();
                row.set_image_id(image_id);
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Copies one version's list of segments of every manifest to another version (a clone).
    pub(crate) async fn copy_manifests(&self, from: i64, to: i64) -> Result<()> {
        let mut rows = self.segment_rows(&format!("image_id = {from}")).await?;
        for row in &mut rows {
            row.image_id = to;
        }
        self.append(&rows).await
    }

    /// Deletes the stored rows of segments no `segments` row uses (after versions were
    /// deleted); returns how many segments went.
    pub(crate) async fn drop_unused_segments(&self) -> Result<usize> {
        let _lock = self.segments_lock().await?;
        let mut dropped = 0;
        for manifest in MANIFESTS {
            let unused: Vec<String> = self.unused_segments(manifest).await?;
            dropped += unused.len();
            for group in unused.chunks(4 * LOOKUP_GROUP) {
                let filter = format!("segment IN ({})", super::queries::quoted_list(group));
                let mut dataset = self.dataset(manifest).await?;
                let deleted = dataset.delete(&filter).await;
                deleted.map_err(|e| Error::Catalog(format!("deleting unused segments of {manifest}: {e}")))?;
                self.record(manifest, &dataset).await?;
            }
        }
        Ok(dropped)
    }

    /// How many rows of each segment `manifest` stores.
    async fn stored_counts(&self, manifest: &str) -> Result<HashMap<String, i64>> {
        let mut counts: HashMap<String, i64> = HashMap::new();
        self.scan_each(manifest, &["segment"], None, |batch| {
            let column = Columns::new(manifest, &batch).str("segment")?;
            for segment in column.iter().flat_map(|c| c.iter().flatten()) {
                *counts.entry(segment.to_string()).or_default() += 1;
            }
            Ok(())
        })
        .await?;
        Ok(counts)
    }

    /// The segments `manifest` stores that no `segments` row uses.
    async fn unused_segments(&self, manifest: &str) -> Result<Vec<String>> {
        let used: HashSet<String> =
            self.segment_rows(&format!("manifest = '{manifest}'")).await?.into_iter().map(|r| r.segment).collect();
        let mut unused: Vec<String> =
            self.stored_counts(manifest).await?.into_keys().filter(|s| !used.contains(s)).collect();
        unused.sort_unstable();
        Ok(unused)
    }

    /// For `check`: every use of a segment by one of `versions` whose rows are not all stored,
    /// and how many stored segments no version uses.
    pub async fn check_segments(&self, versions: &HashSet<i64>) -> Result<(Vec<BrokenSegment>, usize)> {
        let (mut broken, mut unused) = (Vec::new(), 0);
        for manifest in MANIFESTS {
            let mut counts = self.stored_counts(manifest).await?;
            let uses = self.segment_rows(&format!("manifest = '{manifest}'")).await?;
            let used: HashSet<&str> = uses.iter().map(|u| u.segment.as_str()).collect();
            unused += counts.keys().filter(|s| !used.contains(s.as_str())).count();
            for u in uses.iter().filter(|u| versions.contains(&u.image_id)) {
                let found = counts.get(&u.segment).copied().unwrap_or(0);
                if found != u.rows {
                    broken.push(BrokenSegment {
                        image_id: u.image_id,
                        manifest: manifest.to_string(),
                        segment: u.segment.clone(),
                        expected: u.rows,
                        found,
                    });
                }
            }
            counts.clear();
        }
        Ok((broken, unused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ExtentKind;

    fn extent(offset: i64, chunk: &str) -> ExtentRow {
        ExtentRow {
            image_id: 1,
            disk_offset: offset,
            length: 4096,
            kind: ExtentKind::Raw,
            chunk_hash: Some(chunk.into()),
            chunk_offset: 0,
            content_hash: None,
            content_offset: None,
        }
    }

    /// Changing one row changes the one segment that holds it; the cuts stay where they were.
    #[test]
    fn one_changed_row_changes_one_segment() {
        let rows: Vec<ExtentRow> = (0..20_000).map(|i| extent(i * 4096, "a")).collect();
        let before = cut(&rows);
        assert!(before.len() > 20_000 / 128 && before.len() < 20_000 / 32, "{} segments", before.len());
        assert!(before.iter().all(|(_, r)| r.len() <= MAX_ROWS));
        let mut edited = rows.clone();
        edited[12_345].chunk_hash = Some("b".into());
        let after = cut(&edited);
        assert_eq!(before.len(), after.len());
        let changed: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).collect();
        assert_eq!(changed.len(), 1, "only the segment of row 12,345 changes");
        assert!(changed[0].1.1.contains(&12_345));
        // A row inserted: the segments before and after its own stay.
        let mut grown = rows.clone();
        grown.insert(5_000, extent(5_000 * 4096 - 2048, "c"));
        let names = |s: &[(String, std::ops::Range<usize>)]| s.iter().map(|(n, _)| n.clone()).collect::<HashSet<_>>();
        let shared = names(&before).intersection(&names(&cut(&grown))).count();
        assert!(shared >= before.len() - 2, "{shared} of {} segments shared", before.len());
    }

    /// The bytes a segment is named by, as FORMAT.md spells them out.
    #[test]
    fn a_segment_is_named_as_the_format_says() {
        let mut bytes = Vec::new();
        bytes.extend(8192i64.to_le_bytes()); // disk_offset
        bytes.extend(4096i64.to_le_bytes()); // length
        bytes.extend(3u64.to_le_bytes());
        bytes.extend(b"raw");
        bytes.push(1); // chunk_hash, present
        bytes.extend(2u64.to_le_bytes());
        bytes.extend(b"ab");
        bytes.extend(0i64.to_le_bytes()); // chunk_offset
        bytes.extend([0, 0]); // no content_hash, no content_offset
        assert_eq!(cut(&[extent(8192, "ab")]), vec![(blake3::hash(&bytes).to_hex().to_string(), 0..1)]);
    }

    /// A segment's name covers every stored column and none of the version's id.
    #[test]
    fn a_segment_is_named_by_its_rows_and_not_by_its_version() {
        let rows = vec![extent(0, "a"), extent(4096, "b")];
        let mut other = rows.clone();
        other.iter_mut().for_each(|r| r.image_id = 9);
        assert_eq!(cut(&rows), cut(&other));
        for change in [
            |e: &mut ExtentRow| e.length += 1,
            |e: &mut ExtentRow| e.chunk_offset = 7,
            |e: &mut ExtentRow| e.content_offset = Some(0),
            |e: &mut ExtentRow| e.kind = ExtentKind::Zero,
        ] {
            let mut changed = rows.clone();
            change(&mut changed[1]);
            assert_ne!(cut(&rows), cut(&changed));
        }
    }
}
