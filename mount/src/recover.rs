//! The changes of a writable mount that ended without committing them (killed, or its
//! machine down): its scratch area's journal made again onto the version it served, and
//! committed as the next version, as the mount's own commit would have. `imagelake commit DIR`
//! does this when no live mount is on DIR; `check --reclaim` drops such an area instead.

use crate::control::about;
use crate::{commit, journal, tree::Tree};
use imagelake_engine::catalog::TREE_COLUMNS;
use imagelake_engine::{EditSummary, Error, Library, Result, Scratch};
use std::path::Path;

/// What committing an unsaved area did.
pub enum Recovered {
    /// Its changes, as this version.
    Committed(EditSummary),
    /// Its changes were committed already, as `name@version`, before the mount ended.
    Already(String),
    /// It holds no change.
    Nothing,
}

/// Commits what the unsaved `area` holds, once: the area goes once its changes are in a version.
pub async fn recover(library: &Library, area: &Path) -> Result<Recovered> {
    let scratch = Scratch::adopt(area)?;
    let done = commit_area(library, area).await;
    if done.is_err() {
        // Kept for another try, or for `check --reclaim`.
        std::mem::forget(scratch);
    }
    done
}

async fn commit_area(library: &Library, area: &Path) -> Result<Recovered> {
    let unsaved = |why: String| Error::User(format!("the unsaved mount in {}: {why}", area.display()));
    let changes = journal::read(area).map_err(unsaved)?;
    let session = area.file_name().map(|s| s.to_string_lossy().into_owned());
    let base = changes.base.clone();
    // The mount may have committed this journal and ended before it started the next. Its
    // provenance row says so only if the version's `images` row, the commit point, followed:
    // a mount killed between the two left a row of a version never made.
    let provenance = library.catalog().provenance().await?;
    let images = library.images().await?;
    let committed = provenance.iter().find_map(|p| {
        let arguments: serde_json::Value = serde_json::from_str(&p.arguments).unwrap_or_default();
        let ours = p.operation == "mount"
            && arguments["session"].as_str() == session.as_deref()
            && arguments["generation"].as_u64() == Some(base.generation);
        images.iter().find(|i| ours && i.image_id == p.image_id)
    });
    if let Some(image) = committed {
        return Ok(Recovered::Already(format!("{}@{}", image.name, image.version)));
    }
    if changes.is_empty() {
        return Ok(Recovered::Nothing);
    }
    let image = library.resolve(&base.image).await?;
    let rows = library.catalog().files(image.image_id, Some(base.partition), &TREE_COLUMNS).await?;
    let mut tree =
        Tree::build_numbered(rows, &base.renumber).map_err(|why| unsaved(format!("{}: {why}", base.image)))?;
    changes.apply(&mut tree).map_err(unsaved)?;
    let dir = about(area).and_then(|a| a["dir"].as_str().map(str::to_string));
    let arguments = serde_json::json!({
        "mount": dir, "session": session, "generation": base.generation, "recovered": true
    });
    let made = library.edit_to(&base.image, base.partition, &commit::nodes(&tree), "mount", arguments).await?;
    Ok(made.map_or(Recovered::Nothing, Recovered::Committed))
}
