//! A library on object storage: the S3-compatible server the tests run (SeaweedFS, started
//! and stopped by each test) and the property commits on it rest on.

use imagelake_engine::catalog::{Catalog, lance_stores};
use imagelake_engine::storage::{Bucket, Lease, LeaseState, ObjectInfo, S3Settings, Storage, claims};
use imagelake_engine::store::{ChunkReader, Compression, PackReader, PackWriter, Packs, pack_key};
use imagelake_tests::s3::{self, S3Server};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Conditional puts decide every race of a library on object storage (Lance's commits,
/// version numbers, leases): on the server the tests use, each of five more rounds of 32
/// racers to a fresh key has exactly one winner, whose content the key holds, and a key once
/// written cannot be taken again.
#[test]
fn one_of_many_conditional_puts_wins() {
    let server = S3Server::start();
    for round in 0..5 {
        assert_eq!(server.conditional_put_winners(&format!("probe/round-{round}")), 1, "round {round}");
    }
    assert_eq!(server.conditional_put_winners("probe/round-0"), 0, "a key already written was taken again");
}

/// The probe fails loudly against a server that ignores `If-None-Match` (as SeaweedFS 4.16
/// did): every racer wins there, and the probe counts them all.
#[test]
fn the_probe_catches_a_server_that_ignores_the_condition() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in listener.incoming() {
            let held = held.clone();
            std::thread::spawn(move || careless_s3(stream.unwrap(), &held));
        }
    });
    assert_eq!(s3::conditional_put_winners(&endpoint, s3::BUCKET, "k"), s3::RACERS);
}

/// Answers every PUT with 200 OK, whatever its conditions, and every GET with the last body
/// put: an object store that does not decide races.
fn careless_s3(stream: std::net::TcpStream, held: &std::sync::Mutex<Vec<u8>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let answer = if request.starts_with("PUT") {
            *held.lock().unwrap() = body;
            Vec::new()
        } else {
            held.lock().unwrap().clone()
        };
        let head = format!("HTTP/1.1 200 OK\r\nETag: \"1\"\r\nContent-Length: {}\r\n\r\n", answer.len());
        if writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(&answer)).is_err() {
            return;
        }
    }
}

/// The engine's settings for the tests' server, as a user's `AWS_*` variables give them.
fn settings(server: &S3Server) -> S3Settings {
    server
        .env()
        .into_iter()
        .fold(S3Settings::default(), |settings, (key, value)| settings.with(&key.to_ascii_lowercase(), &value))
}

/// Chunks of mixed sizes that zstd cannot shrink much, so that they fill several frames.
fn chunks(count: usize, seed: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = 4096 + (i * 7919) % 20_000;
            let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64);
            (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect()
        })
        .collect()
}

/// Packs on a bucket: each is one object, published at once (nothing under `packs/` while it
/// is written, nothing left in the writer's temporary folder after), read back by ranged
/// reads with every chunk checked; a prefix never sees another's packs; a flipped byte in
/// the object is found; a removed pack is an error that names it.
#[test]
fn packs_on_a_bucket() {
    let server = S3Server::start();
    let settings = settings(&server);
    let bucket = Bucket::open(&settings, s3::BUCKET, "factory/lib").unwrap();
    let packs = Packs(Storage::Bucket(bucket.clone()));
    assert_eq!(packs.ids().unwrap(), Vec::<String>::new(), "a fresh prefix has no packs");

    let tmp = tempfile::tempdir().unwrap();
    let frames = Compression { level: 3, frame: 64 << 10, window_log: 0 };
    let mut writer = PackWriter::new(&packs, tmp.path(), "test".into(), frames);
    let data = chunks(120, 1);
    for (i, chunk) in data.iter().enumerate() {
        if let Some(full) = writer.add(*blake3::hash(chunk).as_bytes(), chunk) {
            writer.write(full.compress().unwrap()).unwrap();
        }
        if i == 60 {
            assert!(bucket.list("packs").unwrap().is_empty(), "a pack being written is not published");
        }
    }
    let written = writer.finish().unwrap();
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "the temporary pack file is gone");

    let ids: BTreeSet<String> = written.iter().map(|c| c.location.pack.clone()).collect();
    assert_eq!(ids.len(), 1, "120 chunks of under 24 KiB fit one pack");
    let id = ids.first().unwrap();
    let objects = bucket.list("").unwrap();
    assert_eq!(objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), vec![pack_key(id)], "one object per pack");
    assert_eq!(packs.ids().unwrap(), vec![id.clone()]);
    assert_eq!(packs.size(id).unwrap(), objects[0].size);

    let reader = ChunkReader::new(&packs);
    for (chunk, stored) in data.iter().zip(&written) {
        assert_eq!(&reader.read(&stored.hash, &stored.location).unwrap(), chunk);
    }
    let pack = PackReader::open(&packs, id).unwrap();
    assert_eq!(pack.index().unwrap(), written.iter().map(|c| (c.hash, c.location.clone())).collect::<Vec<_>>());
    assert_eq!(pack.prove_whole().unwrap(), None, "the pack's bytes match its trailer's blake3");
    let frames: BTreeSet<u64> = written.iter().map(|c| c.location.offset).collect();
    assert!(frames.len() > 10, "several frames, each read by its own range ({} frames)", frames.len());

    // Prefixes are folders: "factory" and "factory/li" hold none of "factory/lib"'s packs.
    for other in ["factory/li", "factory/lib2", "other"] {
        let elsewhere = Packs(Storage::Bucket(Bucket::open(&settings, s3::BUCKET, other).unwrap()));
        assert_eq!(elsewhere.ids().unwrap(), Vec::<String>::new(), "prefix {other}");
    }

    // A byte flipped in the object: the chunk of that frame is refused, the others still read.
    let key = pack_key(id);
    let mut bytes = bucket.get(&key).unwrap().unwrap();
    let hit = &written[50].location;
    // The chunks do not compress, so zstd stores them as they are, after a few header bytes.
    bytes[(hit.offset + u64::from(hit.frame_offset + hit.size / 2)) as usize] ^= 0x40;
    bucket.put(&key, bytes).unwrap();
    let reader = ChunkReader::new(&packs);
    let Err(error) = reader.read(&written[50].hash, hit) else { panic!("a damaged chunk was returned") };
    let error = error.to_string();
    assert!(error.contains(&format!("pack {id} is damaged")), "{error}");
    assert_eq!(reader.read(&written[0].hash, &written[0].location).unwrap(), data[0]);
    assert!(PackReader::open(&packs, id).unwrap().prove_whole().unwrap().is_some());

    packs.remove(id).unwrap();
    packs.remove(id).unwrap();
    assert_eq!(packs.ids().unwrap(), Vec::<String>::new());
    let Err(error) = ChunkReader::new(&packs).read(&written[0].hash, &written[0].location) else {
        panic!("a removed pack was read")
    };
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert!(error.to_string().contains(id.as_str()), "{error}");
}

/// The bucket client: a range is answered exactly or is an error; a conditional put has one
/// winner among racing threads; what is absent reads as absent.
#[test]
fn bucket_reads_writes_and_races() {
    let server = S3Server::start();
    let bucket = Bucket::open(&settings(&server), s3::BUCKET, "lib").unwrap();
    assert_eq!(bucket.get("nothing").unwrap(), None);
    assert_eq!(bucket.size("nothing").unwrap(), None);
    bucket.put("a/b", (0..=255u8).collect()).unwrap();
    assert_eq!(bucket.get_range("a/b", 10..14).unwrap(), vec![10, 11, 12, 13]);
    assert_eq!(bucket.size("a/b").unwrap(), Some(256));
    let error = bucket.get_range("a/b", 250..260).unwrap_err().to_string();
    assert!(error.contains("s3://imagelake/lib/a/b"), "{error}");
    let winners: Vec<bool> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8u8)
            .map(|i| {
                scope.spawn({
                    let bucket = &bucket;
                    move || bucket.put_new("claim", vec![i]).unwrap()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    let winner = winners.iter().position(|w| *w).unwrap() as u8;
    assert_eq!(bucket.get("claim").unwrap(), Some(vec![winner]));
    assert_eq!(bucket.list("").unwrap().iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["a/b", "claim"]);
    bucket.remove("claim").unwrap();
    bucket.remove("claim").unwrap();
    assert_eq!(bucket.list("a").unwrap(), vec![ObjectInfo { key: "a/b".into(), size: 256 }]);
}

/// Lance datasets on the bucket, through the engine's `s3` provider: 8 writers, each with a
/// session and a runtime of its own, append 25 rows one commit at a time. Every row is there
/// once, and the versions run from 1 to 201 without a gap: Lance's conditional put of each
/// manifest decided every race, and every loser retried.
#[test]
fn lance_commits_race_on_the_bucket() {
    use arrow::array::{Int64Array, RecordBatch, RecordBatchIterator};
    use arrow::datatypes::{DataType, Field, Schema};
    use lance::dataset::{Dataset, WriteMode, WriteParams};
    const WRITERS: i64 = 8;
    const APPENDS: i64 = 25;
    let server = S3Server::start();
    let settings = settings(&server);
    let uri = format!("{}/race.lance", server.url("catalog-test"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("writer", DataType::Int64, false),
        Field::new("n", DataType::Int64, false),
    ]));
    let batch = |writer: i64, n: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![writer])), Arc::new(Int64Array::from(vec![n]))],
        )
        .unwrap()
    };
    let write = |writer: i64, n: i64, mode: WriteMode| {
        let session = lance::session::Session::new(0, 0, lance_stores(&settings));
        let params = WriteParams { mode, session: Some(Arc::new(session)), ..Default::default() };
        let rows = RecordBatchIterator::new([Ok(batch(writer, n))], schema.clone());
        (rows, params)
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (rows, params) = write(-1, 0, WriteMode::Create);
    runtime.block_on(Dataset::write(rows, uri.as_str(), Some(params))).unwrap();
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (write, uri) = (&write, &uri);
            scope.spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                for n in 0..APPENDS {
                    let (rows, params) = write(writer, n, WriteMode::Append);
                    runtime.block_on(Dataset::write(rows, uri.as_str(), Some(params))).unwrap();
                }
            });
        }
    });
    let session = Arc::new(lance::session::Session::new(0, 0, lance_stores(&settings)));
    let dataset =
        runtime.block_on(lance::dataset::builder::DatasetBuilder::from_uri(&uri).with_session(session).load()).unwrap();
    let versions: Vec<u64> = runtime.block_on(dataset.versions()).unwrap().iter().map(|v| v.version).collect();
    assert_one_version_per_commit(&versions, 1 + WRITERS * APPENDS);
    let batches: Vec<RecordBatch> = runtime.block_on(async {
        use futures::TryStreamExt;
        dataset.scan().try_into_stream().await.unwrap().try_collect().await.unwrap()
    });
    let mut rows: Vec<(i64, i64)> = Vec::new();
    for b in &batches {
        let column = |i: usize| b.column(i).as_any().downcast_ref::<Int64Array>().unwrap().clone();
        rows.extend(column(0).values().iter().zip(column(1).values()).map(|(w, n)| (*w, *n)));
    }
    rows.sort();
    let mut expected = vec![(-1, 0)];
    expected.extend((0..WRITERS).flat_map(|w| (0..APPENDS).map(move |n| (w, n))));
    assert_eq!(rows, expected, "every append's row, once");
}

/// The catalog on a bucket, raced by 8 writer processes appending 25 rows each, one commit
/// per row: every row is there once, the table's versions run from its creation to the 200th
/// append without a gap, every file of the newest versions has its checksum recorded (one
/// object per table version), and hashing them all again finds nothing wrong.
#[test]
fn the_catalog_on_a_bucket_under_racing_writer_processes() {
    const WRITERS: i64 = 8;
    const APPENDS: i64 = 25;
    let server = S3Server::start();
    let url = server.url("racing/catalog");
    let writers: Vec<std::process::Child> = (0..WRITERS)
        .map(|writer| {
            std::process::Command::new(env!("CARGO_BIN_EXE_append-rows"))
                .args([&url, &writer.to_string(), &APPENDS.to_string()])
                .envs(server.env())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut writer in writers {
        assert!(writer.wait().unwrap().success(), "a writer failed (its error is above)");
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let files = Storage::Bucket(Bucket::open(&settings(&server), s3::BUCKET, "racing/catalog").unwrap());
    let catalog = runtime.block_on(Catalog::open(files.clone())).unwrap();
    let mut rows: Vec<(i64, i64)> =
        runtime.block_on(catalog.provenance()).unwrap().iter().map(|r| (r.image_id / 1_000_000, r.at)).collect();
    rows.sort();
    let expected: Vec<(i64, i64)> = (0..WRITERS).flat_map(|w| (0..APPENDS).map(move |n| (w, n))).collect();
    assert_eq!(rows, expected, "every append's row, once");
    let dataset = runtime.block_on(catalog.dataset("provenance")).unwrap();
    let versions: Vec<u64> = runtime.block_on(dataset.versions()).unwrap().iter().map(|v| v.version).collect();
    assert_one_version_per_commit(&versions, 1 + WRITERS * APPENDS);

    let leftovers: Vec<String> =
        files.list("").unwrap().into_iter().map(|o| o.key).filter(|k| k.ends_with(".creating")).collect();
    assert!(leftovers.is_empty(), "every table's creation lease is released: {leftovers:?}");

    let logs = files.list("checksums/provenance").unwrap();
    assert!(
        logs.len() > (WRITERS * APPENDS) as usize / 2,
        "one checksum object per version that added files: {}",
        logs.len()
    );
    let (problems, unrecorded) = runtime.block_on(catalog.check_files()).unwrap();
    assert_eq!((problems, unrecorded), (Vec::new(), Vec::new()));
    let proof = runtime.block_on(catalog.prove()).unwrap();
    assert!(proof.damaged.is_empty(), "{:?}", proof.damaged);
    assert!(proof.files > (WRITERS * APPENDS) as usize, "every file hashed again: {}", proof.files);

    // A byte changed in one of the files is found, by name.
    let data = files.list("provenance.lance/data").unwrap();
    let victim = &data[data.len() / 2].key;
    let mut bytes = files.read(victim).unwrap().unwrap();
    bytes[10] ^= 0x01;
    files.put(victim, bytes).unwrap();
    let proof = runtime.block_on(catalog.prove()).unwrap();
    assert_eq!(proof.damaged.iter().map(|d| d.file.as_str()).collect::<Vec<_>>(), [victim.as_str()]);
}

/// Leases on the bucket: one holder at a time, even among racers; renewed by its holder only;
/// dead once its term passes on the server's clock, then taken over, and the old holder's
/// renewal refused; a damaged lease object held for the taker's term, then taken over.
#[test]
fn leases_are_taken_renewed_and_taken_over() {
    let server = S3Server::start();
    let bucket = Bucket::open(&settings(&server), s3::BUCKET, "leases").unwrap();
    // Three seconds (and the server's second of slack): a lease renewed 1.5 s ago is alive
    // by a margin that a loaded machine's slow requests do not eat.
    let term = Duration::from_secs(3);
    let take = |key: &str| Lease::take(&bucket, key, "maintenance", None, term).unwrap();

    let first = take("maintenance.json").unwrap();
    let Err(LeaseState::Live { body: Some(holder), .. }) = take("maintenance.json") else {
        panic!("a live lease was taken twice")
    };
    assert_eq!(holder, *first.body(), "the live holder is named");
    assert!(first.renew().unwrap(), "the holder renews its lease");

    // Sixteen takers at once: one lease.
    let won: usize = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| Lease::take(&bucket, "raced.json", "writer", Some(7), Duration::from_secs(60))))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap().unwrap()).filter(Result::is_ok).count()
    });
    assert_eq!(won, 1, "of 16 racers for one free lease, exactly one holds it");

    // Renewed within its term, the lease lives on; left alone past it, it is taken over and
    // its old holder learns so at its next renewal.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(first.renew().unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(matches!(take("maintenance.json"), Err(LeaseState::Live { .. })), "renewed 1.5 s ago: alive");
    std::thread::sleep(Duration::from_millis(4500));
    let second = take("maintenance.json").expect("a lease past its term is taken over");
    assert!(!first.renew().unwrap(), "the old holder's renewal is refused");
    first.release().unwrap();
    let Err(LeaseState::Live { body: Some(holder), .. }) = take("maintenance.json") else {
        panic!("the old holder's release removed the new holder's lease")
    };
    assert_eq!(holder.holder, second.body().holder);
    second.release().unwrap();
    assert_eq!(Lease::state(&bucket, "maintenance.json", term).unwrap(), LeaseState::Free);

    // Sixteen takers of one dead lease at once: one takes it over (the If-Match race). The
    // takers ask for a minute: a taker's few requests can take longer than three seconds on
    // a loaded machine, and it would then rightly find the winner's lease dead in its turn.
    let stale = take("stale.json").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let won: usize = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| Lease::take(&bucket, "stale.json", "maintenance", None, Duration::from_secs(60))))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap().unwrap()).filter(Result::is_ok).count()
    });
    assert_eq!(won, 1, "of 16 racers for one dead lease, exactly one takes it over");
    assert!(!stale.renew().unwrap(), "the dead lease's holder learns it lost it");

    // An object that is not a lease is held for the taker's term, then taken over.
    bucket.put("damaged.json", b"\x00 not json".to_vec()).unwrap();
    assert!(matches!(take("damaged.json"), Err(LeaseState::Live { body: None, .. })));
    std::thread::sleep(Duration::from_secs(5));
    let taken = take("damaged.json").expect("a damaged lease past the term is taken over");
    taken.release().unwrap();
}

/// Numbers claimed on the bucket by racing writers are each taken once and leave no gap;
/// claims are per folder, and a key that is no claim's does not throw the count off.
#[test]
fn racing_claims_take_each_number_once() {
    const WRITERS: usize = 8;
    const EACH: usize = 6;
    let server = S3Server::start();
    let bucket = Bucket::open(&settings(&server), s3::BUCKET, "claims").unwrap();
    bucket.put("claims/image-ids/README", b"not a claim".to_vec()).unwrap();
    let mut claimed: Vec<(u64, String)> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let bucket = &bucket;
                scope.spawn(move || {
                    let holder = format!("writer-{w}");
                    (0..EACH)
                        .map(|_| (claims::claim_next(bucket, "claims/image-ids", &holder).unwrap(), holder.clone()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    claimed.sort();
    let numbers: Vec<u64> = claimed.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=(WRITERS * EACH) as u64).collect::<Vec<_>>(), "each number once, no gap");
    for (number, holder) in &claimed {
        assert_eq!(claims::claimant(&bucket, "claims/image-ids", *number).unwrap().as_ref(), Some(holder));
    }
    assert_eq!(claims::claim_next(&bucket, "claims/versions/web", "me").unwrap(), 1, "another folder counts apart");
    assert_eq!(claims::highest_claimed(&bucket, "claims/image-ids").unwrap(), (WRITERS * EACH) as u64);
}

/// A table's versions are 1 to `commits`, without a gap; a failure names the odd ones.
fn assert_one_version_per_commit(versions: &[u64], commits: i64) {
    let expected: Vec<u64> = (1..=commits as u64).collect();
    let missing: Vec<&u64> = expected.iter().filter(|v| !versions.contains(v)).collect();
    let extra: Vec<&u64> = versions.iter().filter(|v| !expected.contains(v)).collect();
    assert!(
        versions == expected,
        "one version per commit, no gap: {} versions, {missing:?} missing, {extra:?} more",
        versions.len()
    );
}
