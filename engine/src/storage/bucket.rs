//! A blocking client of one bucket prefix: the engine's store reads and writes packs from
//! plain threads (rayon, `spawn_blocking`), so each call here runs on a small runtime of the
//! client's own and the calling thread waits for its answer. That works from any thread,
//! inside another runtime too, where a nested `block_on` would panic.

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// One bucket prefix on S3-compatible storage, with keys relative to the prefix.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    settings: S3Settings,
    bucket: String,
    prefix: String,
}

/// An object as a conditional write sees it: its bytes, the ETag to replace it with
/// (`If-Match`), and when the server last wrote it (its clock, not ours).
#[derive(Debug, Clone)]
pub struct Tagged {
    pub bytes: Vec<u8>,
    pub etag: String,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// An object found by [`Bucket::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the bucket's prefix.
    pub key: String,
    pub size: u64,
}

/// The runtime every bucket's requests run on (two threads: requests wait on the network).
/// A process that cannot start its threads gets the reason on every request.
fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("imagelake-s3")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|why| io::Error::other(format!("starting the object storage client: {why}")))
}

/// rustls needs one process-wide provider of its cryptography; ring is the one the build has
/// (tonic's TLS uses it too). Installing it twice is harmless.
pub(crate) fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How to reach S3-compatible storage: object_store's S3 configuration keys and values
/// (`aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_secret_access_key`,
/// `aws_session_token`, `aws_allow_http`, ...).
#[derive(Clone, Default)]
pub struct S3Settings(Vec<(String, String)>);

impl S3Settings {
    /// The user's `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, ...).
    pub fn from_env() -> S3Settings {
        let known = |key: &str| key.parse::<AmazonS3ConfigKey>().is_ok();
        S3Settings(
            std::env::vars()
                .filter(|(key, _)| key.starts_with("AWS_"))
                .map(|(key, value)| (key.to_ascii_lowercase(), value))
                .filter(|(key, _)| known(key))
                .collect(),
        )
    }

    /// These settings and `key` set to `value` (a later setting wins).
    pub fn with(mut self, key: &str, value: &str) -> S3Settings {
        self.0.push((key.to_string(), value.to_string()));
        self
    }

    /// The S3 store of `bucket`.
    pub(crate) fn store(&self, bucket: &str) -> io::Result<AmazonS3> {
        install_tls_provider();
        let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, format!("s3://{bucket}: {e}"));
        let mut builder = AmazonS3Builder::new();
        for (key, value) in &self.0 {
            let key: AmazonS3ConfigKey = key.parse().map_err(|e: object_store::Error| bad(e.to_string()))?;
            builder = builder.with_config(key, value);
        }
        builder.with_bucket_name(bucket).with_http_connector(Counting).build().map_err(|e| bad(e.to_string()))
    }
}

/// The requests this process has sent to object storage, every retry counted (the packs',
/// the catalog's and the leases' alike: Lance's store is made by [`S3Settings::store`] too).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Requests {
    pub get: u64,
    pub head: u64,
    pub put: u64,
    pub list: u64,
    pub delete: u64,
    /// POST and anything else (multipart uploads, batch deletes).
    pub other: u64,
}

impl Requests {
    pub fn total(&self) -> u64 {
        self.get + self.head + self.put + self.list + self.delete + self.other
    }
}

/// Get, head, put, list, delete, other.
static SENT: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// The requests sent so far by this process.
pub fn requests() -> Requests {
    let [get, head, put, list, delete, other] = std::array::from_fn(|i| SENT[i].load(Ordering::Relaxed));
    Requests { get, head, put, list, delete, other }
}

/// object_store's own HTTP client, each request counted on its way out.
#[derive(Debug)]
struct Counting;

impl HttpConnector for Counting {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Counted(ReqwestConnector::default().connect(options)?)))
    }
}

#[derive(Debug)]
struct Counted(HttpClient);

impl HttpService for Counted {
    // `async_trait`'s form, written out (the crate is not a dependency of ours).
    fn call<'a, 'b>(
        &'a self,
        request: HttpRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let listing = request.uri().query().is_some_and(|q| q.contains("list-type="));
        let kind = match request.method().as_str() {
            "GET" if listing => 3,
            "GET" => 0,
            "HEAD" => 1,
            "PUT" => 2,
            "DELETE" => 4,
            _ => 5,
        };
        SENT[kind].fetch_add(1, Ordering::Relaxed);
        Box::pin(self.0.execute(request))
    }
}

impl Bucket {
    pub fn open(settings: &S3Settings, bucket: &str, prefix: &str) -> io::Result<Bucket> {
        let store = Arc::new(settings.store(bucket)?);
        Ok(Bucket { store, settings: settings.clone(), bucket: bucket.into(), prefix: prefix.into() })
    }

    /// The settings the bucket was opened with (Lance's store of it is made from them too).
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The prefix `part` inside this one, through the same client.
    pub fn sub(&self, part: &str) -> Bucket {
        let prefix = if self.prefix.is_empty() { part.to_string() } else { format!("{}/{part}", self.prefix) };
        Bucket { store: self.store.clone(), settings: self.settings.clone(), bucket: self.bucket.clone(), prefix }
    }

    /// `s3://bucket/prefix/key`, as errors name objects.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(key))
    }

    fn key(&self, key: &str) -> Key {
        if self.prefix.is_empty() { Key::from(key) } else { Key::from(format!("{}/{key}", self.prefix)) }
    }

    /// Runs one request on the client's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        request: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let failed = |why: String| object_store::Error::Generic { store: "S3", source: why.into() };
        // The answer comes back on a plain channel: awaiting the task's handle here would tie
        // its wake-up to the caller's runtime, if it has one, which is blocked in this call.
        let (answer, receive) = std::sync::mpsc::sync_channel(1);
        runtime().map_err(|e| failed(e.to_string()))?.spawn(async move {
            let _ = answer.send(request.await);
        });
        receive.recv().unwrap_or_else(|_| Err(failed("the request's task ended without an answer".into())))
    }

    fn error(&self, doing: &str, key: &str, e: object_store::Error) -> io::Error {
        let kind = match e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
                io::ErrorKind::AlreadyExists
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{doing} {}: {e}", self.url(key)))
    }

    /// The whole object, or `None` if there is none.
    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let (store, path) = (self.store.clone(), self.key(key));
        match self.run(async move { store.get(&path).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("reading", key, e)),
        }
    }

    /// The bytes of `range`, exactly: a short answer (the object is shorter) is an error.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Vec<u8>> {
        let (store, path, want) = (self.store.clone(), self.key(key), range.clone());
        let bytes =
            self.run(async move { store.get_range(&path, want).await }).map_err(|e| self.error("reading", key, e))?;
        if bytes.len() as u64 != range.end - range.start {
            let message = format!(
                "reading {}: {} bytes at {}, {} answered",
                self.url(key),
                range.end - range.start,
                range.start,
                bytes.len()
            );
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
        }
        Ok(bytes.into())
    }

    /// The object's size, or `None` if there is none.
    pub fn size(&self, key: &str) -> io::Result<Option<u64>> {
        Ok(self.stat(key)?.map(|(size, _)| size))
    }

    /// The size of `key` and when the server last wrote it, or `None` if there is none.
    pub fn stat(&self, key: &str) -> io::Result<Option<(u64, std::time::SystemTime)>> {
        let (store, path) = (self.store.clone(), self.key(key));
        match self.run(async move { store.head(&path).await }) {
            Ok(meta) => Ok(Some((meta.size, meta.last_modified.into()))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("looking up", key, e)),
        }
    }

    /// Writes `bytes` as `key`, replacing what it held.
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.key(key));
        self.run(async move { store.put(&path, PutPayload::from(bytes)).await })
            .map(|_| ())
            .map_err(|e| self.error("writing", key, e))
    }

    /// Writes `bytes` as `key` only if no object has that key (`If-None-Match: *`): `false`
    /// if one has. Of writers racing for one key, exactly one gets `true`.
    pub fn put_new(&self, key: &str, bytes: Vec<u8>) -> io::Result<bool> {
        Ok(self.put_new_tagged(key, bytes)?.is_some())
    }

    /// The whole object with its ETag and server time, or `None` if there is none.
    pub fn get_tagged(&self, key: &str) -> io::Result<Option<Tagged>> {
        let (store, path) = (self.store.clone(), self.key(key));
        let read = self.run(async move {
            let answer = store.get(&path).await?;
            let meta = answer.meta.clone();
            Ok((meta, answer.bytes().await?))
        });
        match read {
            Ok((meta, bytes)) => {
                let etag = meta.e_tag.ok_or_else(|| self.no_etag(key))?;
                Ok(Some(Tagged { bytes: bytes.into(), etag, modified: meta.last_modified }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("reading", key, e)),
        }
    }

    /// [`Bucket::put_new`] that returns the new object's ETag, or `None` if an object has the key.
    pub fn put_new_tagged(&self, key: &str, bytes: Vec<u8>) -> io::Result<Option<String>> {
        self.put_mode(key, bytes, PutMode::Create)
    }

    /// Replaces `key` only if it still has ETag `etag` (`If-Match`): its new ETag, or `None`
    /// if it has another or is gone. Of writers racing from one ETag, exactly one wins.
    pub fn put_if_match(&self, key: &str, bytes: Vec<u8>, etag: &str) -> io::Result<Option<String>> {
        self.put_mode(key, bytes, PutMode::Update(UpdateVersion { e_tag: Some(etag.to_string()), version: None }))
    }

    fn put_mode(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> io::Result<Option<String>> {
        let (store, path) = (self.store.clone(), self.key(key));
        match self.run(async move { store.put_opts(&path, PutPayload::from(bytes), mode.into()).await }) {
            Ok(written) => Ok(Some(written.e_tag.ok_or_else(|| self.no_etag(key))?)),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(self.error("writing", key, e)),
        }
    }

    fn no_etag(&self, key: &str) -> io::Error {
        io::Error::other(format!("{}: the server gave no ETag; conditional writes need one", self.url(key)))
    }

    /// The server's clock now: the time it stamps on an object written for the purpose
    /// (under `clock/`, removed at once). Expiry is judged by this clock alone, so that
    /// hosts whose clocks disagree still agree on which leases are dead.
    pub fn server_now(&self) -> io::Result<chrono::DateTime<chrono::Utc>> {
        let key = format!("clock/{}", super::random_name()?);
        self.put(&key, Vec::new())?;
        let (store, path) = (self.store.clone(), self.key(&key));
        let meta = self.run(async move { store.head(&path).await }).map_err(|e| self.error("looking up", &key, e));
        self.remove(&key)?;
        Ok(meta?.last_modified)
    }

    /// Every object whose key starts with `under/` (or every object, for ""), in key order.
    pub fn list(&self, under: &str) -> io::Result<Vec<ObjectInfo>> {
        use futures::TryStreamExt;
        let (store, path) =
            (self.store.clone(), (!under.is_empty() || !self.prefix.is_empty()).then(|| self.key(under)));
        let path = path.map(|p| Key::from(p.as_ref().trim_end_matches('/')));
        let found = self
            .run(async move { store.list(path.as_ref()).try_collect::<Vec<_>>().await })
            .map_err(|e| self.error("listing", under, e))?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut objects: Vec<ObjectInfo> = found
            .into_iter()
            .filter_map(|meta| {
                let key = meta.location.as_ref().strip_prefix(&strip)?.to_string();
                Some(ObjectInfo { key, size: meta.size })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Removes `key`; removing what is not there is not an error (another deleter won).
    pub fn remove(&self, key: &str) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.key(key));
        match self.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("deleting", key, e)),
        }
    }
}
