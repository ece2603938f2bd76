//! The one-time upgrades of a catalog: [`add_columns`] gives a table the columns a newer
//! format added (format 5: the inventories' source versions, rpm's epoch, release and source
//! rpm, and licenses, on `packages`), and the rewrite of a catalog of library format 2 or 3,
//! whose `files` and `extents` hold every version's rows under its `image_id`, into format 4,
//! where they are stored in segments (see `segments.rs`).
//!
//! The new catalog is built beside the old one, in `catalog.next/`: the other tables' files
//! are hard-linked (Lance never changes a file it wrote), the checksums copied, and the rows of
//! `files` and `extents` read version by version and stored in segments. Then `catalog/`
//! becomes `catalog.old/`, `catalog.next/` becomes `catalog/`, the marker says 4, and
//! `catalog.old/` goes. [`finish`] completes a rewrite a crash cut short at any of those
//! steps; before the first rename, the rewrite starts again.

use super::{Catalog, ExtentRow, FileRow, Maintenance, PackageRow, Segmented, Table};
use crate::{Error, IoContext, Result};
use futures::TryStreamExt;
use lance::Dataset;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Adds to each table the columns its schema has and its dataset lacks (all nullable: the
/// rows written before hold NULL there), in one metadata-only Lance commit per table, with
/// no writer meanwhile. Rows are not read again: their images are not.
pub(crate) async fn add_columns(catalog: &Catalog) -> Result<()> {
    add_missing::<PackageRow>(catalog).await
}

async fn add_missing<T: Table>(catalog: &Catalog) -> Result<()> {
    let mut dataset = catalog.dataset(T::NAME).await?;
    let have = arrow::datatypes::Schema::from(dataset.schema());
    let missing: Vec<_> =
        T::stored_schema().fields().iter().filter(|f| have.field_with_name(f.name()).is_err()).cloned().collect();
    if missing.is_empty() {
        return Ok(());
    }
    if let Some(f) = missing.iter().find(|f| !f.is_nullable()) {
        return Err(Error::Internal(format!("upgrading {}: a new column {} must be nullable", T::NAME, f.name())));
    }
    let columns = std::sync::Arc::new(arrow::datatypes::Schema::new(missing));
    let transform = lance::dataset::NewColumnTransform::AllNulls(columns);
    let added = dataset.add_columns(transform, None, None).await;
    added.map_err(|e| Error::Catalog(format!("upgrading {}: adding columns: {e}", T::NAME)))?;
    catalog.record(T::NAME, &dataset).await
}

/// Versions read from the old tables at a time.
const VERSIONS_AT_ONCE: usize = 64;

fn next(root: &Path) -> PathBuf {
    root.join("catalog.next")
}
fn old(root: &Path) -> PathBuf {
    root.join("catalog.old")
}

/// Rewrites the catalog of the library at `root` (its lock held): builds `catalog.next/` and
/// swaps it in. The caller writes the marker, then calls [`finish`].
pub(crate) async fn rewrite(root: &Path) -> Result<()> {
    let (current, next) = (root.join("catalog"), next(root));
    if next.exists() {
        fs::remove_dir_all(&next).io_context(|| format!("removing {}", next.display()))?;
    }
    fs::create_dir_all(&next).io_context(|| format!("creating {}", next.display()))?;
    for entry in fs::read_dir(&current).io_context(|| format!("reading {}", current.display()))? {
        let entry = entry.io_context(|| format!("reading {}", current.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "files.lance" || name == "extents.lance" || name.ends_with(".lock") {
            continue;
        }
        link_tree(&entry.path(), &next.join(&*name))?;
    }
    let catalog = Catalog::open(crate::storage::Storage::Folder(next.clone())).await?;
    segment::<FileRow>(&catalog, &current).await?;
    segment::<ExtentRow>(&catalog, &current).await?;
    catalog.maintain(Maintenance::FULL).await?;
    catalog.record_all().await?;
    fs::rename(&current, old(root)).io_context(|| format!("renaming {}", current.display()))?;
    fs::rename(&next, &current).io_context(|| format!("renaming {}", next.display()))?;
    Ok(())
}

/// Completes a rewrite cut short after its first rename (`catalog/` moved away): true if one
/// was, and the marker is to be written. Removes what remains of the old catalog.
pub(crate) fn finish(root: &Path) -> Result<bool> {
    let (current, old) = (root.join("catalog"), old(root));
    if !old.exists() {
        return Ok(false);
    }
    if !current.exists() {
        let next = next(root);
        fs::rename(&next, &current).io_context(|| format!("renaming {}", next.display()))?;
    }
    Ok(true)
}

/// Deletes the old catalog, once the marker says 4.
pub(crate) fn remove_old(root: &Path) -> Result<()> {
    let old = old(root);
    if old.exists() {
        fs::remove_dir_all(&old).io_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// A folder's files hard-linked into `to` (copied where a link cannot be made).
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        fs::create_dir_all(to).io_context(|| format!("creating {}", to.display()))?;
        for entry in fs::read_dir(from).io_context(|| format!("reading {}", from.display()))? {
            let entry = entry.io_context(|| format!("reading {}", from.display()))?;
            link_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    // Files Lance or imagelake write again in place are copied: the old catalog stays as
    // it was, should the rewrite start again.
    let rewritten = from.file_name().is_some_and(|n| n == "checksums" || n == "latest_version_hint.json");
    if rewritten || fs::hard_link(from, to).is_err() {
        fs::copy(from, to).io_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

/// The rows of the old table `T` (under `image_id`) stored in segments in `catalog`.
async fn segment<T: Segmented>(catalog: &Catalog, old_catalog: &Path) -> Result<()> {
    let uri = old_catalog.join(format!("{}.lance", T::NAME));
    let err = |e: lance::Error| Error::Catalog(format!("upgrading {}: reading {}: {e}", T::NAME, uri.display()));
    let dataset = Dataset::open(&uri.to_string_lossy()).await.map_err(err)?;
    let mut ids = std::collections::BTreeSet::new();
    let mut scanner = dataset.scan();
    scanner.project(&["image_id"]).map_err(err)?;
    let mut stream = scanner.try_into_stream().await.map_err(err)?;
    while let Some(batch) = stream.try_next().await.map_err(err)? {
        let column = super::columns::Columns::new(T::NAME, &batch).i64("image_id")?;
        ids.extend(column.iter().flat_map(|c| c.values().iter().copied()));
    }
    let ids: Vec<i64> = ids.into_iter().collect();
    for group in ids.chunks(VERSIONS_AT_ONCE) {
        let list = group.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let mut scanner = dataset.scan();
        scanner.filter(&format!("image_id IN ({list})")).map_err(err)?;
        let mut stream = scanner.try_into_stream().await.map_err(err)?;
        let mut versions: BTreeMap<i64, Vec<T>> = BTreeMap::new();
        while let Some(batch) = stream.try_next().await.map_err(err)? {
            let id = super::columns::Columns::new(T::NAME, &batch).i64("image_id")?;
            let id = id.ok_or_else(|| Error::Catalog(format!("upgrading {}: no image_id column", T::NAME)))?;
            for (r, row) in T::decode(&batch)?.into_iter().enumerate() {
                versions.entry(id.value(r)).or_default().push(row);
            }
        }
        catalog.append_manifests(versions.into_iter().collect()).await?;
    }
    Ok(())
}
