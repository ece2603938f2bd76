//! Row-level access: a session that may read only some images sees exactly their rows in
//! every table and function, learns nothing of the others, and runs only what its grants allow.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::{ParamValues, ScalarValue};
use imagelake_engine::access::{Pattern, Principal, Right, User};
use imagelake_engine::{CheckinOptions, Library};
use imagelake_sql::{Access, ErrorKind, Session, error_kind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Fixture {
    dir: tempfile::TempDir,
    library: Arc<Library>,
    owner: Session,
    /// The ids of the web* images (web@1, web@2, webapp@1) and of db@1.
    web: Vec<i64>,
    db: i64,
}

fn image(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let tree = dir.join(format!("tree-{name}"));
    for (path, content) in files {
        let path = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let out = dir.join(format!("{name}.img"));
    imagelake_tests::mkfs_ext(&tree, &out, "ext4", "8M", &[]);
    out
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let library = Arc::new(Library::open(&dir.path().join("lib")).await.unwrap());
    let shared = ("/etc/motd", "welcome\n");
    let images = [
        ("web", image(dir.path(), "web1", &[shared, ("/etc/hostname", "web\n"), ("/srv/index.html", "<p>1</p>")])),
        ("web", image(dir.path(), "web2", &[shared, ("/etc/hostname", "web\n"), ("/srv/index.html", "<p>2</p>")])),
        ("webapp", image(dir.path(), "webapp", &[shared, ("/etc/hostname", "webapp\n")])),
        ("db", image(dir.path(), "db", &[shared, ("/etc/hostname", "db\n"), ("/var/lib/db/secret", "s3cret\n")])),
    ];
    let mut ids = Vec::new();
    for (name, img) in &images {
        ids.push(library.checkin(img, name, CheckinOptions::default()).await.unwrap().image_id);
    }
    let owner = Session::open(library.clone()).await.unwrap();
    Fixture { dir, library, owner, web: ids[..3].to_vec(), db: ids[3] }
}

fn user(name: &str, admin: bool, grants: &[(Right, &str)]) -> Principal {
    Principal::User(User {
        name: name.into(),
        admin,
        grants: grants.iter().map(|(r, p)| (*r, Pattern::parse(p).unwrap())).collect(),
    })
}

impl Fixture {
    async fn session(&self, principal: Principal) -> Session {
        let roots = vec![self.dir.path().to_path_buf()];
        Session::open_as(self.library.clone(), Access { principal, data_roots: Some(roots) }).await.unwrap()
    }

    fn web_ids(&self) -> String {
        self.web.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
    }
}

async fn text(session: &Session, sql: &str) -> String {
    let answer = session.run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&answer.batches).unwrap().to_string()
}

async fn count(session: &Session, sql: &str) -> i64 {
    let answer = session.run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batch: &RecordBatch = &answer.batches[0];
    datafusion::arrow::compute::cast(batch.column(0), &datafusion::arrow::datatypes::DataType::Int64)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0)
}

async fn error(session: &Session, sql: &str) -> (ErrorKind, String) {
    match session.run(sql).await {
        Ok(answer) => panic!("{sql} answered {:?}", pretty_format_batches(&answer.batches).map(|t| t.to_string())),
        Err(e) => (error_kind(&e), e.strip_backtrace()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_sees_only_the_images_granted() {
    let f = fixture().await;
    let reader = f.session(user("ana", false, &[(Right::Read, "web*")])).await;
    let web = f.web_ids();

    // Every table: the same rows as the owner's over the granted images, whether the small
    // tables are kept in memory (a small library, as here) or read through Lance (a large one).
    for kept in [usize::MAX, 0] {
        f.library.catalog().keep_small_tables_up_to(kept);
        for table in ["partitions", "files", "packages", "extents", "provenance", "images"] {
            let mine = count(&reader, &format!("SELECT count(*) FROM {table}")).await;
            let theirs = count(&f.owner, &format!("SELECT count(*) FROM {table} WHERE image_id IN ({web})")).await;
            assert_eq!(mine, theirs, "{table}");
            assert!(theirs > 0 || table == "packages", "{table} holds rows of the web images");
        }
        let chunks = count(&reader, "SELECT count(*) FROM chunks").await;
        let used = count(
            &f.owner,
            &format!(
                "SELECT count(*) FROM chunks WHERE chunk_hash IN (SELECT chunk_hash FROM extents WHERE image_id IN ({web}))"
            ),
        )
        .await;
        assert_eq!(chunks, used);
        assert!(used < count(&f.owner, "SELECT count(*) FROM chunks").await, "db@1 has chunks of its own");
    }
    f.library.catalog().keep_small_tables_up_to(usize::MAX);

    // Sums, joins, CTEs, unions and window functions equal the same questions over the subset.
    let pairs = [
        (
            "SELECT sum(size), count(DISTINCT content_hash) FROM files".to_string(),
            format!("SELECT sum(size), count(DISTINCT content_hash) FROM files WHERE image_id IN ({web})"),
        ),
        (
            "SELECT i.name, count(*) AS n FROM files f JOIN images i USING (image_id) GROUP BY i.name ORDER BY i.name".into(),
            format!("SELECT i.name, count(*) AS n FROM files f JOIN images i USING (image_id) WHERE i.image_id IN ({web}) GROUP BY i.name ORDER BY i.name"),
        ),
        (
            "WITH h AS (SELECT content_hash FROM files WHERE path = '/etc/hostname') SELECT count(*) FROM h".into(),
            format!("WITH h AS (SELECT content_hash FROM files WHERE path = '/etc/hostname' AND image_id IN ({web})) SELECT count(*) FROM h"),
        ),
        (
            "SELECT path FROM files WHERE kind = 'file' UNION SELECT name FROM images ORDER BY 1".into(),
            format!("SELECT path FROM files WHERE kind = 'file' AND image_id IN ({web}) UNION SELECT name FROM images WHERE image_id IN ({web}) ORDER BY 1"),
        ),
        (
            "SELECT image_id, path, rank() OVER (PARTITION BY path ORDER BY image_id) AS r FROM files WHERE kind = 'file' ORDER BY path, image_id".into(),
            format!("SELECT image_id, path, rank() OVER (PARTITION BY path ORDER BY image_id) AS r FROM files WHERE kind = 'file' AND image_id IN ({web}) ORDER BY path, image_id"),
        ),
    ];
    for (mine, theirs) in &pairs {
        assert_eq!(text(&reader, mine).await, text(&f.owner, theirs).await, "{mine}");
    }
    assert!(!text(&reader, "SELECT path FROM files").await.contains("secret"));

    // A filter that fails on a hidden row fails for the owner, and raises nothing here.
    let probe = format!("SELECT count(*) FROM files WHERE 1 / (CASE WHEN image_id = {} THEN 0 ELSE 1 END) = 1", f.db);
    assert!(f.owner.run(&probe).await.is_err(), "the probe divides by zero on db@1's rows");
    let files = count(&f.owner, &format!("SELECT count(*) FROM files WHERE image_id IN ({web})")).await;
    assert_eq!(count(&reader, &probe).await, files);

    // An ungranted image answers as a missing one, in every function.
    let db = f.db.to_string();
    for (hidden, missing) in [
        ("SELECT * FROM compare('db@1', 'web@1')", "SELECT * FROM compare('nosuch@1', 'web@1')"),
        ("SELECT * FROM ls('db@1', '/etc')", "SELECT * FROM ls('nosuch@1', '/etc')"),
        ("SELECT * FROM file_lines('db@1', '/etc/motd')", "SELECT * FROM file_lines('nosuch@1', '/etc/motd')"),
        ("SELECT * FROM image_stats('db@1')", "SELECT * FROM image_stats('nosuch@1')"),
        ("SELECT read_text('db@1', '/etc/motd')", "SELECT read_text('nosuch@1', '/etc/motd')"),
        ("SELECT read_bytes('db', '/etc/motd')", "SELECT read_bytes('nosuch', '/etc/motd')"),
        ("SELECT * FROM history('db')", "SELECT * FROM history('nosuch')"),
        (&format!("SELECT * FROM ls('{db}', '/')") as &str, "SELECT * FROM ls('999', '/')"),
    ] {
        let (kind, message) = error(&reader, hidden).await;
        let (missing_kind, missing_message) = error(&reader, missing).await;
        let (hidden_name, missing_name) =
            if hidden.contains(&format!("'{db}'")) { (db.as_str(), "999") } else { ("db", "nosuch") };
        assert_eq!((kind, message.replace(hidden_name, missing_name)), (missing_kind, missing_message), "{hidden}");
        assert_eq!(kind, ErrorKind::NotFound, "{hidden}: {message}");
    }
    // ... and the granted ones answer.
    assert!(text(&reader, "SELECT * FROM compare('web@1', 'web@2')").await.contains("/srv/index.html"));
    assert!(text(&reader, "SELECT read_text('webapp@1', '/etc/hostname')").await.contains("webapp"));
    assert_eq!(count(&reader, "SELECT count(*) FROM history('web')").await, 2);
    let stats = text(&reader, "SELECT name, files FROM image_stats('web@1')").await;
    assert!(stats.contains("web"), "{stats}");

    // Nothing outside the catalog, nothing that counts hidden rows, nothing that changes.
    for (sql, what) in [
        ("SET datafusion.execution.batch_size = 10", "SET"),
        ("CREATE VIEW v AS SELECT 1", "CREATE"),
        (&format!("COPY (SELECT 1) TO '{}/out.csv'", f.dir.path().display()) as &str, "COPY"),
        ("EXPLAIN ANALYZE SELECT count(*) FROM files", "EXPLAIN ANALYZE"),
        ("EXPLAIN VERBOSE SELECT count(*) FROM files", "EXPLAIN VERBOSE"),
        (&format!("SELECT * FROM checkin('{}/web1.img', 'web')", f.dir.path().display()) as &str, "checkin"),
        ("SELECT * FROM gc()", "gc"),
        ("SELECT * FROM clone('web@1', 'web9')", "clone"),
        ("SELECT * FROM delete('web@1')", "delete"),
    ] {
        let (kind, message) = error(&reader, sql).await;
        assert_eq!(kind, ErrorKind::Denied, "{sql}: {message}");
        assert!(message.contains("permission denied"), "{what}: {message}");
    }
    // Each scan keeps the readable images' rows alone: `Visible` above `packages`, and
    // `Expand`, which makes rows of readable versions only, above the segments of `files`.
    let explained = text(&reader, "EXPLAIN SELECT count(*) FROM packages").await;
    assert!(explained.contains("Visible"), "{explained}");
    let explained = text(&reader, "EXPLAIN SELECT count(*) FROM files").await;
    assert!(explained.contains("Expand"), "{explained}");
    assert_eq!(count(&f.owner, "SELECT count(*) FROM images").await, 4, "nothing changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_changes_only_the_names_granted_from_the_data_roots() {
    let f = fixture().await;
    let writer = f.session(user("bo", false, &[(Right::Write, "web*"), (Right::Read, "db")])).await;
    let outside = tempfile::tempdir().unwrap();
    let img = f.dir.path().join("web1.img");
    std::fs::copy(&img, outside.path().join("web1.img")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("web1.img"), f.dir.path().join("link.img")).unwrap();

    for sql in [
        format!("SELECT * FROM checkin('{}/web1.img', 'web')", outside.path().display()),
        format!("SELECT * FROM checkin('{}/link.img', 'web')", f.dir.path().display()),
        format!("SELECT * FROM checkin('{}', 'db')", img.display()),
        "SELECT * FROM checkin('relative.img', 'web')".to_string(),
        format!("SELECT * FROM checkout('web@1', '{}/out.raw')", outside.path().display()),
        "SELECT * FROM clone('db@1', 'dbcopy')".to_string(),
        "SELECT * FROM replace_content('db@1', '/etc/motd', '/etc/passwd')".to_string(),
        format!("SELECT * FROM replace_content('web@1', '/etc/motd', '{}/web1.img')", outside.path().display()),
        "SELECT * FROM patch('db@1', 'web@1', 'web@2')".to_string(),
        "SELECT * FROM undelete('web@1')".to_string(),
    ] {
        let (kind, message) = error(&writer, &sql).await;
        assert_eq!(kind, ErrorKind::Denied, "{sql}: {message}");
    }
    assert_eq!(count(&f.owner, "SELECT count(*) FROM images").await, 4, "nothing changed");

    // What the grants allow runs, once, and is the next version.
    let made = text(&writer, &format!("SELECT name, version FROM checkin('{}', 'web')", img.display())).await;
    assert!(made.contains("| web  | 3 "), "{made}");
    let made = text(&writer, "SELECT name, version FROM clone('web@1', 'webcopy')").await;
    assert!(made.contains("webcopy"), "{made}");
    // What a server user makes names them, not the user the server runs as.
    let actors = text(&f.owner, "SELECT DISTINCT i.created_by, p.actor FROM images i JOIN provenance p USING (image_id) WHERE i.name = 'webcopy' OR i.version = 3").await;
    assert!(actors.contains("| bo         | bo    |") && actors.lines().count() == 5, "{actors}");
    let out = f.dir.path().join("out.raw");
    text(&writer, &format!("SELECT * FROM checkout('db@1', '{}')", out.display())).await;
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(f.dir.path().join("db.img")).unwrap());
    assert_eq!(count(&f.owner, "SELECT count(*) FROM images").await, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_planned_at_once_keep_their_own_commands_and_parameters() {
    let f = fixture().await;
    // Two statements planned before either runs: each runs its own command, once.
    let a = f.owner.plan("SELECT * FROM clone('web@1', 'a')", None).await.unwrap();
    let b = f.owner.plan("SELECT * FROM clone('web@1', 'b')", None).await.unwrap();
    assert!(a.runs_commands() && b.runs_commands());
    for planned in [b, a] {
        let batches: Vec<RecordBatch> =
            futures::TryStreamExt::try_collect(planned.execute().await.unwrap()).await.unwrap();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    }
    assert_eq!(count(&f.owner, "SELECT count(*) FROM images WHERE name IN ('a', 'b')").await, 2);

    // `?` placeholders, described then bound; a wrong type is the caller's error.
    let sql = "SELECT name, version FROM images WHERE name = ? AND version >= ? ORDER BY version";
    let (result, parameters) = f.owner.describe(sql).await.unwrap();
    assert_eq!(result.fields().len(), 2);
    assert_eq!(parameters.fields().len(), 2);
    let params = ParamValues::List(vec![ScalarValue::from("web").into(), ScalarValue::Int64(Some(2)).into()]);
    let planned = f.owner.plan(sql, Some(params)).await.unwrap();
    let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(planned.execute().await.unwrap()).await.unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    assert_eq!(batches[0].column(1).as_primitive::<Int64Type>().value(0), 2);
    let wrong = ParamValues::List(vec![ScalarValue::Int64(Some(1)).into(), ScalarValue::from("x").into()]);
    match f.owner.plan(sql, Some(wrong)).await {
        Err(e) => assert_eq!(error_kind(&e), ErrorKind::Invalid, "{e}"),
        Ok(p) => {
            let run: Result<Vec<RecordBatch>, _> = futures::TryStreamExt::try_collect(p.execute().await.unwrap()).await;
            let e = run.expect_err("a text where a number belongs");
            assert_eq!(error_kind(&e), ErrorKind::Invalid, "{e}");
        }
    }
    // An empty answer carries the schema announced when planning.
    let planned = f.owner.plan("SELECT name FROM images WHERE false", None).await.unwrap();
    let announced = planned.schema();
    let stream = planned.execute().await.unwrap();
    assert_eq!(stream.schema(), announced);
    assert_eq!(announced.field(0).name(), "name");
}

#[tokio::test(flavor = "multi_thread")]
async fn administrators_manage_users_and_grants_from_sql() {
    let f = fixture().await;
    let admin = f.session(user("root", true, &[])).await;
    let reader = f.session(user("ana", false, &[(Right::Read, "*")])).await;

    text(&admin, "SELECT * FROM user_add('ana', 'correct horse')").await;
    text(&admin, "SELECT * FROM user_add('bo', 'battery staple', true)").await;
    text(&admin, "SELECT * FROM grant('ana', 'read', 'web*')").await;
    text(&admin, "SELECT * FROM grant('ana', 'write', 'webapp')").await;
    let users = text(&admin, "SELECT name, admin FROM users() ORDER BY name").await;
    assert!(users.contains("| ana  | false |") && users.contains("| bo   | true  |"), "{users}");
    let grants = text(&admin, "SELECT * FROM grants() ORDER BY \"right\"").await;
    assert!(grants.contains("| ana  | read  | web*    |") && grants.contains("| ana  | write | webapp  |"), "{grants}");
    let principal = f.library.principal_for("ana").unwrap().unwrap();
    assert!(
        principal.may(Right::Write, "webapp") && principal.may(Right::Read, "web") && !principal.may(Right::Read, "db")
    );

    // A password set from SQL signs in; a revoked grant is gone.
    assert!(f.library.login("ana", "correct horse", std::time::Duration::from_secs(60)).unwrap().is_some());
    text(&admin, "SELECT * FROM revoke('ana', 'write', 'webapp')").await;
    text(&admin, "SELECT * FROM user_passwd('ana', 'new one')").await;
    assert!(f.library.login("ana", "correct horse", std::time::Duration::from_secs(60)).unwrap().is_none());
    assert!(!f.library.principal_for("ana").unwrap().unwrap().may(Right::Write, "webapp"));

    // Nobody else may, and bad arguments are refused while planning, before anything runs.
    for sql in [
        "SELECT * FROM users()",
        "SELECT * FROM grants()",
        "SELECT * FROM user_add('eve', 'x')",
        "SELECT * FROM grant('ana', 'admin', '*')",
        "SELECT * FROM user_remove('bo')",
    ] {
        assert_eq!(error(&reader, sql).await.0, ErrorKind::Denied, "{sql}");
    }
    for sql in ["SELECT * FROM grant('ana', 'own', 'web')", "SELECT * FROM grant('ana', 'read', 'a b')"] {
        assert_eq!(error(&admin, sql).await.0, ErrorKind::Invalid, "{sql}");
    }
    assert_eq!(f.library.users().unwrap().len(), 2);
}

/// A VEX statement is seen by a session that reads an image it names (so every statement that
/// hides a row the session sees is among those it sees), and by no other.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_sees_the_vex_statements_of_the_images_it_reads() {
    let f = fixture().await;
    for image in ["web*", "db", "*", "webapp@1", "nothing-yet"] {
        let statement = imagelake_engine::vex::Statement {
            advisory: "CVE-2024-0001".into(),
            image: image.into(),
            state: "false_positive".into(),
            ..Default::default()
        };
        f.library.add_vex(&statement).await.unwrap();
    }
    let all = vex_images(&f.owner, "SELECT image FROM vex").await;
    assert_eq!(all, ["*", "db", "nothing-yet", "web*", "webapp"]);
    let reader = f.session(user("ana", false, &[(Right::Read, "web*")])).await;
    assert_eq!(vex_images(&reader, "SELECT image FROM vex").await, ["*", "web*", "webapp"]);
    let db_reader = f.session(user("bo", false, &[(Right::Read, "db")])).await;
    assert_eq!(vex_images(&db_reader, "SELECT image FROM vex WHERE state = 'false_positive'").await, ["*", "db"]);
}

/// The first column of `sql`'s answer, sorted.
async fn vex_images(session: &Session, sql: &str) -> Vec<String> {
    let answer = session.run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut seen: Vec<String> = answer
        .batches
        .iter()
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten().map(str::to_string).collect::<Vec<_>>())
        .collect();
    seen.sort();
    seen
}
