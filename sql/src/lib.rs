//! SQL over the catalog: a DataFusion session whose tables are the library's Lance tables.
//!
//! The Lance datasets are registered in the `internal` schema; the tables users query are
//! views over them that keep only rows of committed images (an image's `images` row is its
//! commit point, written last), so a checkin in flight or a crashed one is never seen.

use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::TableReference;
use imagelake_engine::Library;
use lance::Dataset;
use lance::datafusion::LanceTableProvider;
use std::sync::Arc;

pub mod output;

/// Tables with an `image_id` column: filtered down to committed images.
const IMAGE_TABLES: [&str; 5] = ["partitions", "files", "packages", "extents", "provenance"];

/// A session over every catalog table of `library`, as of now.
pub async fn session(library: &Library) -> datafusion::error::Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    ctx.sql("CREATE SCHEMA internal").await?;
    for table in imagelake_engine::catalog::TABLES {
        let uri = library.catalog().table_uri(table);
        let dataset =
            Dataset::open(&uri).await.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let provider = Arc::new(LanceTableProvider::new(Arc::new(dataset), false, false));
        ctx.register_table(TableReference::partial("internal", table), provider)?;
    }
    ctx.sql("CREATE VIEW images AS SELECT * FROM internal.images").await?;
    ctx.sql("CREATE VIEW chunks AS SELECT * FROM internal.chunks").await?;
    for table in IMAGE_TABLES {
        ctx.sql(&format!(
            "CREATE VIEW {table} AS SELECT * FROM internal.{table} \
             WHERE image_id IN (SELECT image_id FROM internal.images)"
        ))
        .await?;
    }
    Ok(ctx)
}
