//! The catalog's Lance datasets on `s3://` URLs: Lance is built without its `aws` feature
//! (the AWS SDK, opendal and a second TLS provider), so its registry is handed an `s3`
//! provider that builds the same object_store S3 client [`crate::storage::Bucket`] uses. Lance picks
//! its commit handler by scheme, so `s3://` datasets commit with a conditional put
//! (`If-None-Match: *` on the next manifest), retried on conflict.

use crate::storage::S3Settings;
use lance::io::{ObjectStore, ObjectStoreParams, ObjectStoreRegistry};
use lance_io::object_store::ObjectStoreProvider;
use std::sync::Arc;
use url::Url;

/// Requests Lance keeps in flight per dataset, and how often it retries a failed read: as
/// Lance's own S3 provider does.
const IO_PARALLELISM: usize = 64;
const DOWNLOAD_RETRIES: usize = 3;

struct S3Provider(S3Settings);

impl std::fmt::Debug for S3Provider {
    // Not the settings: they hold the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3Provider")
    }
}

#[async_trait::async_trait]
impl ObjectStoreProvider for S3Provider {
    async fn new_store(&self, base: Url, params: &ObjectStoreParams) -> lance::Result<ObjectStore> {
        let bucket = base.host_str().unwrap_or_default().to_string();
        let store = self.0.store(&bucket).map_err(|e| lance::Error::invalid_input(e.to_string()))?;
        Ok(ObjectStore::new(
            Arc::new(store),
            base,
            params.block_size,
            params.object_store_wrapper.clone(),
            false,
            true,
            IO_PARALLELISM,
            DOWNLOAD_RETRIES,
            None,
        ))
    }
}

/// Lance's registry of object stores, with `s3` served by object_store's S3 client as
/// `settings` configure it.
pub fn lance_stores(settings: &S3Settings) -> Arc<ObjectStoreRegistry> {
    let registry = ObjectStoreRegistry::default();
    registry.insert("s3", Arc::new(S3Provider(settings.clone())));
    Arc::new(registry)
}
