//! `append-rows CATALOG WRITER COUNT`: appends COUNT `provenance` rows to the catalog at
//! CATALOG (a folder, or `s3://BUCKET/PREFIX` with the `AWS_*` variables set), one commit
//! each, with image ids WRITER * 1,000,000 + 0, 1, ... The object-storage tests run several
//! at once, as separate processes, to race the catalog's commits.

use imagelake_engine::catalog::{Catalog, ProvenanceRow};
use imagelake_engine::storage::{Bucket, Location, S3Settings, Storage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [catalog, writer, count] = args.as_slice() else {
        return Err("usage: append-rows CATALOG WRITER COUNT".into());
    };
    let (writer, count): (i64, i64) = (writer.parse()?, count.parse()?);
    let files = match Location::parse(catalog)? {
        Location::Folder(path) => Storage::Folder(path),
        Location::Bucket { bucket, prefix } => {
            Storage::Bucket(Bucket::open(&S3Settings::from_env(), &bucket, &prefix)?)
        }
    };
    let catalog = Catalog::open(files).await?;
    for n in 0..count {
        let row = ProvenanceRow {
            image_id: writer * 1_000_000 + n,
            parent_id: None,
            operation: "append-rows".into(),
            arguments: "{}".into(),
            actor: format!("writer {writer}"),
            at: n,
        };
        catalog.append(&[row]).await?;
    }
    Ok(())
}
