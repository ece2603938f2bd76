//! Versions and their provenance: `clone`, and the history of an image (its versions and the
//! versions they were made from, with the operation that made each).

use crate::catalog::{ImageRow, ImageState, ProvenanceRow};
use crate::library::Origin;
use crate::{Error, Library, Result};
use arrow::array::{Int64Array, RecordBatch};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Tables whose rows describe one version's disk, copied by `clone` (which lists the
/// segments of `files` and `extents` again).
const DISK_TABLES: [&str; 2] = ["partitions", "packages"];

/// What `clone` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CloneSummary {
    pub image_id: i64,
    pub name: String,
    pub version: i64,
    /// The version it is a copy of, as `name@version`.
    pub parent: String,
    pub seconds: f64,
}

/// One version in a history, with the operation that made it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    pub image_id: i64,
    pub name: String,
    pub version: i64,
    pub parent_id: Option<i64>,
    /// The parent as `name@version`.
    pub parent: Option<String>,
    pub operation: String,
    /// The operation's arguments as a JSON object.
    pub arguments: String,
    pub actor: String,
    /// Nanoseconds since the epoch.
    pub at: i64,
    pub state: ImageState,
}

impl Library {
    /// `clone(image, new_name)`: version 1 of a new image whose disk is the version `spec`
    /// names. Only catalog rows are copied; every byte is already in the store.
    pub async fn clone_image(&self, spec: &str, new_name: &str) -> Result<CloneSummary> {
        crate::library::check_name(new_name)?;
        let started = Instant::now();
        let source = self.resolve(spec).await?;
        let parent = format!("{}@{}", source.name, source.version);
        if self.images().await?.iter().any(|i| i.name == new_name) {
            return Err(Error::User(format!("an image {new_name} exists already; clone makes a new image")));
        }
        // gc must not free what the copied rows use before they commit; and the source is
        // resolved again once gc cannot run, since one may have purged it while this waited.
        let writing = self.writing().await?;
        let source = self.resolve(spec).await?;
        let image_id = self.allocate_image_id(&writing.holder())?;
        // Rows of an id in flight are not leftovers to `check --reclaim`.
        let in_flight = self.in_flight(image_id)?;
        for table in DISK_TABLES {
            let batches = self.catalog().rows_of(table, source.image_id).await?;
            let copies = batches.iter().map(|b| with_image_id(b, image_id)).collect::<Result<Vec<_>>>()?;
            self.catalog().append_batches(table, copies).await?;
        }
        // The disk map and the files are shared, segment by segment.
        self.catalog().copy_manifests(source.image_id, image_id).await?;
        let source_id = source.image_id;
        let mut image = ImageRow {
            image_id,
            name: new_name.to_string(),
            version: 0,
            parent_id: None,
            created_at: crate::now_ns(),
            created_by: crate::library::actor(),
            state: ImageState::Active,
            stored_bytes_new: 0,
            ..source
        };
        let origin = Origin {
            operation: "clone".into(),
            arguments: serde_json::json!({ "image": parent, "new_name": new_name }),
            parent: Some(source_id),
        };
        self.commit(&mut image, origin, &writing).await?;
        drop((in_flight, writing));
        Ok(CloneSummary {
            image_id,
            name: image.name,
            version: image.version,
            parent,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The versions of image `name`, newest first, then the versions they were made from
    /// under other names (a clone's source and its ancestors), each with its provenance.
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryRow>> {
        let images = self.images().await?;
        if !images.iter().any(|i| i.name == name) {
            return Err(Error::NoImage(name.to_string()));
        }
        let by_id: HashMap<i64, &ImageRow> = images.iter().map(|i| (i.image_id, i)).collect();
        let provenance = self.provenance().await?;
        let mut own: Vec<&ImageRow> = images.iter().filter(|i| i.name == name).collect();
        own.sort_by_key(|i| std::cmp::Reverse(i.version));
        // Ancestors under other names, nearest first.
        let mut ancestors = Vec::new();
        let mut next = own.iter().filter_map(|i| i.parent_id).find(|p| by_id.get(p).is_some_and(|i| i.name != name));
        while let Some(id) = next {
            let Some(image) = by_id.get(&id) else { break };
            if ancestors.iter().any(|a: &&ImageRow| a.image_id == id) {
                break;
            }
            ancestors.push(*image);
            next = image.parent_id;
        }
        Ok(own.into_iter().chain(ancestors).map(|i| history_row(i, &by_id, &provenance)).collect())
    }

    /// Every version related to image `name`: the roots its versions descend from, and all
    /// that descends from those roots (other images' branches included), for `imagelake log`.
    pub async fn family(&self, name: &str) -> Result<Vec<HistoryRow>> {
        let images = self.images().await?;
        if !images.iter().any(|i| i.name == name) {
            return Err(Error::NoImage(name.to_string()));
        }
        let by_id: HashMap<i64, &ImageRow> = images.iter().map(|i| (i.image_id, i)).collect();
        let root_of = |i: &ImageRow| root(i.image_id, &by_id);
        let roots: std::collections::HashSet<i64> = images.iter().filter(|i| i.name == name).map(root_of).collect();
        let provenance = self.provenance().await?;
        Ok(images.iter().filter(|i| roots.contains(&root_of(i))).map(|i| history_row(i, &by_id, &provenance)).collect())
    }

    /// The provenance row of the operation that made each committed version, by image id
    /// (rows of `delete`, `undelete` and `gc`, which change a version's state, are left out).
    pub async fn provenance(&self) -> Result<HashMap<i64, ProvenanceRow>> {
        let rows = self.catalog().provenance().await?.into_iter();
        // A version's state changes are not what made it.
        let made = rows.filter(|p| !matches!(p.operation.as_str(), "delete" | "undelete" | "gc"));
        let rows = made.map(|p| (p.image_id, p)).collect();
        Ok(rows)
    }
}

/// The version a version descends from, following parents (bounded: a parent chain cannot be
/// longer than the library).
fn root(mut id: i64, by_id: &HashMap<i64, &ImageRow>) -> i64 {
    for _ in 0..by_id.len() {
        match by_id.get(&id).and_then(|i| i.parent_id).filter(|p| by_id.contains_key(p)) {
            Some(parent) => id = parent,
            None => break,
        }
    }
    id
}

fn history_row(i: &ImageRow, by_id: &HashMap<i64, &ImageRow>, provenance: &HashMap<i64, ProvenanceRow>) -> HistoryRow {
    let p = provenance.get(&i.image_id);
    HistoryRow {
        image_id: i.image_id,
        name: i.name.clone(),
        version: i.version,
        parent_id: i.parent_id,
        parent: i.parent_id.and_then(|id| by_id.get(&id)).map(|p| format!("{}@{}", p.name, p.version)),
        operation: p.map_or_else(|| "checkin".into(), |p| p.operation.clone()),
        arguments: p.map_or_else(|| "{}".into(), |p| p.arguments.clone()),
        actor: i.created_by.clone(),
        at: i.created_at,
        state: i.state,
    }
}

/// The batch with every row's `image_id` set to `id`.
fn with_image_id(batch: &RecordBatch, id: i64) -> Result<RecordBatch> {
    let schema = batch.schema();
    let column = schema.index_of("image_id").map_err(|e| Error::Catalog(format!("copying rows: {e}")))?;
    let mut columns = batch.columns().to_vec();
    columns[column] = Arc::new(Int64Array::from(vec![id; batch.num_rows()]));
    Ok(RecordBatch::try_new(schema, columns)?)
}
