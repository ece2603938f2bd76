//! Every question the engine asks the catalog, in one place: each builds its Lance filter,
//! reads the columns it needs and answers with typed rows (`Decode`), so that a row filter
//! (grants) has one door to guard and a schema change one place to look.
//!
//! `files` and `extents` are read through their segments (`segments.rs`: a version's rows,
//! or rows in any version, and the versions that list them).
//!
//! **Architecture Invariant:** outside `catalog/`, the engine reads the catalog only through
//! these methods; no other module builds a filter or reads a column.

use super::columns::Columns;
use super::{Catalog, ChunkRow, Decode, ExtentRow, FileRow, ImageRow, PartitionRow, ProvenanceRow, SegmentRow, Table};
use crate::Result;
use crate::store::{ChunkHash, ChunkLocation, hex, parse_hex};
use arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};

/// What `advisories` holds of one record (see [`Catalog::stored_advisories`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAdvisory {
    pub modified: i64,
    pub load: i64,
    /// Rows of another load remain beside the newest.
    pub stale: bool,
}

/// Quotes a text for a Lance filter.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `'a', 'b', ...` for an `IN (...)` of a Lance filter.
pub(crate) fn quoted_list<S: AsRef<str>>(texts: &[S]) -> String {
    texts.iter().map(|t| quote(t.as_ref())).collect::<Vec<_>>().join(", ")
}

/// Hashes per lookup of an `IN (...)` list: the index answers each quickly.
const LOOKUP_GROUP: usize = 512;
/// Index lookups in flight at once: each holds its own scan's buffers.
const LOOKUPS_AT_ONCE: usize = 4;
/// Wanting one chunk in this many of the table's rows makes a whole scan the cheaper way to
/// find them.
const SCAN_SHARE: usize = 8;

impl Catalog {
    async fn rows<T: Decode>(&self, columns: &[&str], filter: Option<&str>) -> Result<Vec<T>> {
        let mut rows = Vec::new();
        self.scan_each(T::NAME, columns, filter, |batch| {
            rows.extend(T::decode(&batch)?);
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// Every version's `images` row, deleted and purged ones included.
    pub async fn images(&self) -> Result<Vec<ImageRow>> {
        let columns: Vec<String> = ImageRow::schema().fields().iter().map(|f| f.name().clone()).collect();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        self.rows(&columns, None).await
    }

    /// Every `provenance` row.
    pub async fn provenance(&self) -> Result<Vec<ProvenanceRow>> {
        self.rows(&["image_id", "parent_id", "operation", "arguments", "actor", "at"], None).await
    }

    /// The partitions of a version: number, place on the disk, filesystem type.
    pub async fn partitions(&self, image_id: i64) -> Result<Vec<PartitionRow>> {
        let filter = format!("image_id = {image_id}");
        self.rows(&["partition", "start", "size", "fs_type"], Some(&filter)).await
    }

    /// The `columns` of every file of a version (of one partition, if given).
    pub async fn files(&self, image_id: i64, partition: Option<i64>, columns: &[&str]) -> Result<Vec<FileRow>> {
        let filter = partition.map(|p| format!("partition = {p}"));
        self.version_rows(image_id, columns, filter.as_deref()).await
    }

    /// The `columns` of the files of a version at `paths` (on one partition, if given).
    pub async fn files_at(
        &self,
        image_id: i64,
        partition: Option<i64>,
        paths: &[String],
        columns: &[&str],
    ) -> Result<Vec<FileRow>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut filter = format!("path IN ({})", quoted_list(paths));
        if let Some(p) = partition {
            filter += &format!(" AND partition = {p}");
        }
        self.version_rows(image_id, columns, Some(&filter)).await
    }

    /// The regular files of a version that have a content: partition, inode, size, content.
    pub async fn regular_files(&self, image_id: i64) -> Result<Vec<FileRow>> {
        let filter = "kind = 'file' AND content_hash IS NOT NULL";
        self.version_rows(image_id, &["partition", "inode", "size", "content_hash"], Some(filter)).await
    }

    /// The files, in any version, whose content is one of `contents`: version, path, content.
    pub async fn files_with_contents(&self, contents: &[String]) -> Result<Vec<FileRow>> {
        let mut rows = Vec::new();
        for group in contents.chunks(LOOKUP_GROUP) {
            let filter = format!("content_hash IN ({})", quoted_list(group));
            rows.extend(self.rows_in_versions(&["path", "content_hash"], Some(&filter)).await?);
        }
        Ok(rows)
    }

    /// The disk map of a version, in disk order; `with_contents` also reads which file content
    /// each extent holds (for an edit, which carries unchanged files over).
    pub async fn disk_map(&self, image_id: i64, with_contents: bool) -> Result<Vec<ExtentRow>> {
        let mut columns = vec!["disk_offset", "length", "kind", "chunk_hash", "chunk_offset"];
        if with_contents {
            columns.extend(["content_hash", "content_offset"]);
        }
        let mut extents: Vec<ExtentRow> = self.version_rows(image_id, &columns, None).await?;
        extents.sort_by_key(|e| e.disk_offset);
        Ok(extents)
    }

    /// The file extents of a version holding `contents` (all its file extents with None): where
    /// each content's pieces are stored.
    pub async fn content_extents(&self, image_id: i64, contents: Option<&[String]>) -> Result<Vec<ExtentRow>> {
        let columns = ["content_hash", "content_offset", "length", "chunk_hash", "chunk_offset"];
        // A few contents through the content_hash index; many by one scan.
        let filter = match contents {
            Some([]) => return Ok(Vec::new()),
            Some(list) => format!("content_hash IN ({})", quoted_list(list)),
            None => "content_hash IS NOT NULL".to_string(),
        };
        self.version_rows(image_id, &columns, Some(&filter)).await
    }

    /// The extents, in any version, stored in one of the given chunks.
    pub async fn extents_in_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ExtentRow>> {
        let mut rows = Vec::new();
        for group in hashes.chunks(LOOKUP_GROUP) {
            let list: Vec<String> = group.iter().map(hex).collect();
            let filter = format!("chunk_hash IN ({})", quoted_list(&list));
            let columns = ["disk_offset", "kind", "chunk_hash", "content_hash"];
            rows.extend(self.rows_in_versions(&columns, Some(&filter)).await?);
        }
        Ok(rows)
    }

    /// Every extent of every version (without contents), for `check`.
    pub async fn all_extents(&self) -> Result<Vec<ExtentRow>> {
        self.rows_in_versions(&["disk_offset", "length", "kind", "chunk_hash"], None).await
    }

    /// The chunk hashes of a table's rows, straight into a set (they can be millions: no row is
    /// made for each).
    async fn hashes(&self, table: &str, filter: Option<&str>) -> Result<HashSet<ChunkHash>> {
        let mut hashes = HashSet::new();
        self.scan_each(table, &["chunk_hash"], filter, |batch| {
            let column = Columns::new(table, &batch).str("chunk_hash")?;
            hashes.extend(column.iter().flat_map(|c| c.iter().flatten().filter_map(parse_hex)));
            Ok(())
        })
        .await?;
        Ok(hashes)
    }

    /// Every chunk an extent of some version names.
    pub async fn used_chunks(&self) -> Result<HashSet<ChunkHash>> {
        self.hashes(ExtentRow::NAME, Some("chunk_hash IS NOT NULL")).await
    }

    /// The hashes of every chunk in the store, for deduplication.
    pub async fn chunk_hashes(&self) -> Result<HashSet<ChunkHash>> {
        self.hashes(ChunkRow::NAME, None).await
    }

    /// Every row of `chunks` (a chunk twice while a repack or gc moves it), as locations.
    pub async fn chunk_rows(&self) -> Result<Vec<(ChunkHash, ChunkLocation)>> {
        let rows: Vec<ChunkRow> = self.rows(&LOCATION_COLUMNS, None).await?;
        Ok(rows.iter().filter_map(ChunkRow::location).collect())
    }

    /// Where the given chunks live. A few are looked up through the `chunks` table's index,
    /// 512 hashes a lookup, a few lookups at a time; when they are a large share of the table
    /// (a mount or checkout of most of a library), one scan keeping the wanted rows costs less
    /// and holds less at once than lookups by the dozen.
    pub async fn chunk_locations(&self, hashes: &[ChunkHash]) -> Result<HashMap<ChunkHash, ChunkLocation>> {
        let wanted: HashSet<ChunkHash> = hashes.iter().copied().collect();
        let stored = self.dataset(ChunkRow::NAME).await?.count_rows(None).await;
        let stored = stored.map_err(|e| crate::Error::Catalog(format!("counting {}: {e}", ChunkRow::NAME)))?;
        if wanted.len().saturating_mul(SCAN_SHARE) >= stored {
            let mut found = HashMap::with_capacity(wanted.len());
            self.scan_each(ChunkRow::NAME, &LOCATION_COLUMNS, None, |batch| {
                let rows = ChunkRow::decode(&batch)?;
                found.extend(rows.iter().filter_map(ChunkRow::location).filter(|(hash, _)| wanted.contains(hash)));
                Ok(())
            })
            .await?;
            return Ok(found);
        }
        let mut wanted: Vec<String> = wanted.iter().map(hex).collect();
        wanted.sort_unstable();
        let filters: Vec<String> =
            wanted.chunks(LOOKUP_GROUP).map(|group| format!("chunk_hash IN ({})", quoted_list(group))).collect();
        let lookups = futures::stream::iter(filters).map(|filter| async move {
            let rows: Vec<ChunkRow> = self.rows(&LOCATION_COLUMNS, Some(&filter)).await?;
            Ok::<_, crate::Error>(rows.iter().filter_map(ChunkRow::location).collect::<Vec<_>>())
        });
        let found: Vec<Vec<_>> = lookups.buffer_unordered(LOOKUPS_AT_ONCE).try_collect().await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Which of `packs` some `chunks` row still points into.
    pub async fn packs_in_use(&self, packs: &[String]) -> Result<HashSet<String>> {
        if packs.is_empty() {
            return Ok(HashSet::new());
        }
        let filter = format!("pack IN ({})", quoted_list(packs));
        let rows: Vec<ChunkRow> = self.rows(&["pack"], Some(&filter)).await?;
        Ok(rows.into_iter().map(|c| c.pack).collect())
    }

    /// The image ids with rows in `table` (for `files` and `extents`: with segments listed).
    pub async fn image_ids(&self, table: &str) -> Result<HashSet<i64>> {
        if super::MANIFESTS.contains(&table) {
            let uses = self.segment_rows(&format!("manifest = {}", quote(table))).await?;
            return Ok(uses.into_iter().map(|u| u.image_id).collect());
        }
        let mut ids = HashSet::new();
        self.scan_each(table, &["image_id"], None, |batch| {
            let column = Columns::new(table, &batch).i64("image_id")?;
            ids.extend(column.iter().flat_map(|c| c.values().iter().copied()));
            Ok(())
        })
        .await?;
        Ok(ids)
    }

    /// A version's rows of `table` (not one stored in segments), every column, as they are
    /// stored (for a clone, which copies them under a new image id).
    pub async fn rows_of(&self, table: &str, image_id: i64) -> Result<Vec<RecordBatch>> {
        let dataset = self.dataset(table).await?;
        let columns: Vec<String> = dataset.schema().fields.iter().map(|f| f.name.clone()).collect();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        self.scan(table, &columns, Some(&format!("image_id = {image_id}"))).await
    }

    /// Deletes the rows of `table` whose image id is one of `ids` (purged versions, leftovers
    /// of crashed checkins); for `files` and `extents`, the versions' lists of segments (the
    /// segments themselves go once no version uses them: `drop_unused_segments`).
    pub async fn delete_versions(&self, table: &str, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let (dataset_name, filter) = match super::MANIFESTS.contains(&table) {
            true => (SegmentRow::NAME, format!("manifest = {} AND image_id IN ({list})", quote(table))),
            false => (table, format!("image_id IN ({list})")),
        };
        let mut dataset = self.dataset(dataset_name).await?;
        let deleted = dataset.delete(&filter).await;
        deleted
            .map_err(|e| crate::Error::Catalog(format!("deleting the rows of versions {list} from {table}: {e}")))?;
        self.record(dataset_name, &dataset).await
    }

    /// Each stored advisory's `modified` time and the load that wrote it (of its newest rows,
    /// should a load that crashed have left two sets), and whether other rows of it remain.
    pub async fn stored_advisories(&self) -> Result<HashMap<String, StoredAdvisory>> {
        let mut stored: HashMap<String, StoredAdvisory> = HashMap::new();
        self.scan_each(super::AdvisoryRow::NAME, &["id", "modified", "load"], None, |batch| {
            let c = Columns::new(super::AdvisoryRow::NAME, &batch);
            let (id, modified, load) = (c.str("id")?, c.time("modified")?, c.i64("load")?);
            for row in 0..c.rows() {
                let (modified, load) = (super::columns::time(modified, row), super::columns::int(load, row));
                let fresh = StoredAdvisory { modified, load, stale: false };
                let had = stored.entry(super::columns::text(id, row)).or_insert(fresh);
                if had.load != load {
                    let stale = true;
                    *had = if (modified, load) > (had.modified, had.load) {
                        StoredAdvisory { modified, load, stale }
                    } else {
                        StoredAdvisory { stale, ..*had }
                    };
                }
            }
            Ok(())
        })
        .await?;
        Ok(stored)
    }

    /// Deletes the rows of the advisories `ids` that a load other than `load` wrote (the rows
    /// newer records replace, or a crashed load's leftovers).
    pub async fn delete_replaced_advisories(&self, ids: &[String], load: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut dataset = self.dataset(super::AdvisoryRow::NAME).await?;
        for group in ids.chunks(LOOKUP_GROUP * 8) {
            let filter = format!("id IN ({}) AND load <> {load}", quoted_list(group));
            let deleted = dataset.delete(&filter).await;
            deleted.map_err(|e| crate::Error::Catalog(format!("deleting replaced advisories: {e}")))?;
        }
        self.record(super::AdvisoryRow::NAME, &dataset).await
    }

    /// Every VEX statement, revoked ones included, oldest first.
    pub async fn vex_statements(&self) -> Result<Vec<super::VexRow>> {
        let columns: Vec<String> = super::VexRow::schema().fields().iter().map(|f| f.name().clone()).collect();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let mut rows: Vec<super::VexRow> = self.rows(&columns, None).await?;
        rows.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        Ok(rows)
    }

    /// Marks the VEX statement `id` revoked by `actor` at `at` (nanoseconds).
    pub async fn revoke_vex(&self, id: &str, actor: &str, at: i64) -> Result<()> {
        let revoked_at = format!("arrow_cast({at}, 'Timestamp(Nanosecond, Some(\"UTC\"))')");
        let filter = format!("id = {} AND revoked_at IS NULL", quote(id));
        let sets = [("revoked_by", quote(actor)), ("revoked_at", revoked_at)];
        self.update(super::VexRow::NAME, &filter, &sets, &format!("revoking VEX statement {id}")).await
    }

    /// Deletes the `chunks` rows of the given packs.
    pub async fn delete_pack_rows(&self, packs: &[&str]) -> Result<()> {
        let mut chunks = self.dataset(ChunkRow::NAME).await?;
        let deleted = chunks.delete(&format!("pack IN ({})", quoted_list(packs))).await;
        deleted.map_err(|e| crate::Error::Catalog(format!("deleting the rows of retired packs: {e}")))?;
        self.record(ChunkRow::NAME, &chunks).await
    }

    /// Sets a version's `images.state` (delete, undelete, gc's purge).
    pub async fn set_state(&self, image_id: i64, state: super::ImageState, label: &str) -> Result<()> {
        let sets = [("state", quote(state.as_str()))];
        self.update(ImageRow::NAME, &format!("image_id = {image_id}"), &sets, &format!("marking {label} {state}")).await
    }

    /// Sets columns (each to an SQL expression) of the rows of `table` that `filter` picks, in
    /// one Lance commit; `doing` says what for, in errors.
    async fn update(&self, table: &str, filter: &str, sets: &[(&str, String)], doing: &str) -> Result<()> {
        let dataset = std::sync::Arc::new(self.dataset(table).await?);
        let err = |e: lance::Error| crate::Error::Catalog(format!("{doing}: {e}"));
        let mut builder = lance::dataset::UpdateBuilder::new(dataset).update_where(filter).map_err(err)?;
        for (column, value) in sets {
            builder = builder.set(column, value).map_err(err)?;
        }
        let updated = builder.build().map_err(err)?.execute().await.map_err(err)?;
        self.record(table, &updated.new_dataset).await
    }
}

/// The `chunks` columns that say where a chunk is.
const LOCATION_COLUMNS: [&str; 6] = ["chunk_hash", "size", "pack", "pack_offset", "frame_size", "frame_offset"];

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u8) -> ChunkRow {
        ChunkRow {
            chunk_hash: hex(&[n; 32]),
            size: 100 + i64::from(n),
            stored_size: 50,
            pack: format!("pack-{}", n % 3),
            pack_offset: 1000 * i64::from(n),
            frame_size: 4096,
            frame_offset: i64::from(n),
        }
    }

    /// A few chunks come through the index, most of the table through one scan: both ways
    /// answer exactly the stored ones of those asked, where they are.
    #[tokio::test]
    async fn chunk_locations_answer_the_same_by_index_and_by_scan() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(crate::storage::Storage::Folder(dir.path().to_path_buf())).await.unwrap();
        let rows: Vec<ChunkRow> = (1..=200).map(row).collect();
        catalog.append(&rows).await.unwrap();
        catalog.maintain(crate::catalog::Maintenance::FULL).await.unwrap();
        let unknown = [255u8; 32];
        for asked in [vec![3u8, 77, 150], (1..=120).collect()] {
            let mut hashes: Vec<ChunkHash> = asked.iter().map(|n| [*n; 32]).collect();
            hashes.push(unknown);
            let found = catalog.chunk_locations(&hashes).await.unwrap();
            assert_eq!(found.len(), asked.len(), "asked for {} chunks and one unknown", asked.len());
            for n in asked {
                assert_eq!(found[&[n; 32]], row(n).location().unwrap().1, "chunk {n}");
            }
        }
    }
}
