//! `imagelake serve` end to end: the real binary on a port the system picks, a real library,
//! and arrow-flight's own Flight SQL client (statuses checked through its raw gRPC client,
//! since the SQL client folds them into text).

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    ActionBeginTransactionRequest, CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandStatementQuery, ProstMessageExt,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, FlightDescriptor, FlightInfo, HandshakeRequest, IpcMessage, Ticket,
};
use futures::TryStreamExt;
use imagelake_tests::{Library, small_library};
use prost::Message;
use std::io::{BufRead, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Users through the command line: ana writes every image, bob reads them.
fn add_users(lib: &Library) {
    for (name, password, right) in [("ana", "secret", "write"), ("bob", "hunter2", "read")] {
        let mut child = lib.command().args(["user", "add", name]).stdin(Stdio::piped()).spawn().expect("user add");
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "user add {name}");
        imagelake_tests::run(lib.command().args(["grant", name, right, "on", "*"]));
    }
}

/// A running `imagelake serve`, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    /// The `listening on` address, as a URL tonic connects to.
    url: String,
}

impl Server {
    fn start(lib: &Library, args: &[&str]) -> Server {
        add_users(lib);
        let mut child = lib
            .command()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start imagelake serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let (scheme, address) = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.split_once("://"))
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"));
        assert!(address.starts_with("127.0.0.1:") && !address.ends_with(":0"), "{line}");
        let url = match scheme {
            "grpc" => format!("http://{address}"),
            "grpc+tls" => format!("https://localhost:{}", address.rsplit(':').next().unwrap()),
            other => panic!("scheme {other}"),
        };
        Server { child, url }
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::new(self.url.clone()).unwrap().connect().await.expect("connect")
    }

    /// A Flight SQL client logged in as `user`.
    async fn login(&self, user: &str, password: &str) -> FlightSqlServiceClient<Channel> {
        let mut client = FlightSqlServiceClient::new(self.channel().await);
        let payload = client.handshake(user, password).await.expect("handshake");
        assert_eq!(client.token().map(|t| t.as_bytes()), Some(payload.as_ref()), "token in header and payload");
        client
    }

    async fn raw(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel().await)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every batch of `info`'s endpoints; asserts that each stream's schema is exactly the
/// FlightInfo's (as ADBC does).
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: &FlightInfo) -> Vec<RecordBatch> {
    let expected = info.clone().try_decode_schema().expect("FlightInfo schema");
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        assert!(endpoint.location.is_empty(), "no location: the client reuses its connection");
        let ticket = endpoint.ticket.clone().expect("ticket");
        let mut stream = client.do_get(ticket).await.expect("do_get");
        while let Some(batch) = stream.try_next().await.expect("batch") {
            assert_eq!(batch.schema().as_ref(), &expected, "batch schema");
            batches.push(batch);
        }
        assert_eq!(stream.schema().map(|s| s.as_ref()), Some(&expected), "stream schema");
    }
    batches
}

async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.to_string(), None).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    fetch(client, &info).await
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        let column = arrow::compute::cast(batch.column_by_name(column).expect("column"), &DataType::Utf8).unwrap();
        let column = column.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..column.len()).map(|i| column.value(i).to_string()));
    }
    out
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn descriptor(command: impl ProstMessageExt) -> FlightDescriptor {
    FlightDescriptor::new_cmd(command.as_any().encode_to_vec())
}

fn statement(sql: &str) -> FlightDescriptor {
    descriptor(CommandStatementQuery { query: sql.into(), transaction_id: None })
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_flight_sql_clients() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "small");
    let mut server = Server::start(&lib, &[]);
    let mut ana = server.login("ana", "secret").await;
    let token = ana.token().cloned().unwrap();

    // Queries, also empty ones and aggregates, stream exactly their FlightInfo's schema.
    let rows = query(&mut ana, "SELECT name, version FROM images ORDER BY name").await;
    assert_eq!(strings(&rows, "name"), ["small"]);
    assert_eq!(strings(&rows, "version"), ["1"]);
    assert!(query(&mut ana, "SELECT name FROM images WHERE false").await.iter().all(|b| b.num_rows() == 0));
    let counted = query(&mut ana, "SELECT count(*) AS n FROM files WHERE path = '/nothing'").await;
    assert_eq!(strings(&counted, "n"), ["0"]);

    // A prepared statement with a parameter, as DBAPI runs it: create, bind, execute, close.
    let mut prepared = ana.prepare("SELECT name FROM images WHERE name = $1".into(), None).await.expect("prepare");
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
    assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "name");
    for (name, expected) in [("small", vec!["small".to_string()]), ("other", vec![])] {
        let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![name]))]).unwrap();
        prepared.set_parameters(batch).unwrap();
        let info = prepared.execute().await.expect("execute prepared");
        assert_eq!(strings(&fetch(&mut ana, &info).await, "name"), expected);
    }
    prepared.close().await.expect("close");

    // Metadata: tables with their schemas, and the rest of what get_objects and BI tools ask.
    let tables = CommandGetTables {
        table_name_filter_pattern: Some("imag%".into()),
        include_schema: true,
        ..Default::default()
    };
    let info = ana.get_tables(tables).await.expect("get_tables");
    let rows = fetch(&mut ana, &info).await;
    assert_eq!(strings(&rows, "table_name"), ["images"]);
    let schema_column = rows[0].column_by_name("table_schema").unwrap();
    let schema_bytes = schema_column.as_any().downcast_ref::<arrow::array::BinaryArray>().unwrap().value(0);
    let images_schema = Schema::try_from(IpcMessage(schema_bytes.to_vec().into())).expect("table schema");
    assert!(images_schema.field_with_name("name").is_ok());
    let info = ana.get_catalogs().await.unwrap();
    assert!(!fetch(&mut ana, &info).await.is_empty());
    let info = ana.get_db_schemas(CommandGetDbSchemas::default()).await.unwrap();
    assert!(strings(&fetch(&mut ana, &info).await, "db_schema_name").contains(&"information_schema".to_string()));
    let info = ana.get_table_types().await.unwrap();
    assert!(strings(&fetch(&mut ana, &info).await, "table_type").contains(&"TABLE".to_string()));
    let info = ana.get_sql_info(vec![]).await.unwrap();
    assert!(fetch(&mut ana, &info).await.iter().map(|b| b.num_rows()).sum::<usize>() > 5);
    let info = ana.get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None }).await.unwrap();
    assert!(fetch(&mut ana, &info).await.iter().map(|b| b.num_rows()).sum::<usize>() > 5);
    let _ = (CommandGetCatalogs {}, CommandGetTableTypes {}, CommandGetSqlInfo::default());

    // Bad credentials and tokens: UNAUTHENTICATED, all alike.
    let mut raw = server.raw().await;
    for basic in ["Basic YW5hOndyb25n", "Basic bm9ib2R5OnNlY3JldA", "Basic ???"] {
        let mut request = Request::new(futures::stream::iter([HandshakeRequest::default()]));
        request.metadata_mut().insert("authorization", basic.parse().unwrap());
        assert_eq!(raw.handshake(request).await.unwrap_err().code(), Code::Unauthenticated, "{basic}");
    }
    let err = raw.get_flight_info(authed(statement("SELECT 1"), "not-a-token")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = raw.get_flight_info(Request::new(statement("SELECT 1"))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Statuses by kind; what imagelake lacks is UNIMPLEMENTED, never INTERNAL.
    let err = raw.get_flight_info(authed(statement("SELECT * FROM nosuch"), &token)).await.unwrap_err();
    assert!(matches!(err.code(), Code::InvalidArgument | Code::NotFound), "{err:?}");
    let keys = CommandGetPrimaryKeys { table: "images".into(), ..Default::default() };
    let err = raw.get_flight_info(authed(descriptor(keys), &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let begin = Action::new("BeginTransaction", ActionBeginTransactionRequest {}.as_any().encode_to_vec());
    assert_eq!(raw.do_action(authed(begin, &token)).await.unwrap_err().code(), Code::Unimplemented);
    let unknown = Action::new("NoSuchAction", Vec::new());
    assert_eq!(raw.do_action(authed(unknown, &token)).await.unwrap_err().code(), Code::Unimplemented);
    let in_transaction = CommandStatementQuery { query: "SELECT 1".into(), transaction_id: Some("t".into()) };
    let err = raw.get_flight_info(authed(descriptor(in_transaction), &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // Tickets belong to their user and cannot be altered.
    let info = ana.execute("SELECT name FROM images".into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let bob = server.login("bob", "hunter2").await;
    let bob_token = bob.token().cloned().unwrap();
    assert_eq!(raw.do_get(authed(ticket.clone(), &bob_token)).await.unwrap_err().code(), Code::PermissionDenied);
    let any = arrow_flight::sql::Any::decode(&*ticket.ticket).unwrap();
    let mut inner = any.unpack::<TicketStatementQuery>().unwrap().unwrap();
    let mut handle = inner.statement_handle.to_vec();
    let middle = handle.len() / 2;
    handle[middle] ^= 0x20;
    inner.statement_handle = handle.into();
    let tampered = Ticket::new(inner.as_any().encode_to_vec());
    assert_eq!(raw.do_get(authed(tampered, &token)).await.unwrap_err().code(), Code::InvalidArgument);

    // A statement that runs a command runs once per ticket: a second DoGet replays it.
    let info = ana.execute("SELECT * FROM clone('small', 'copy')".into(), None).await.expect("plan clone");
    let first = fetch(&mut ana, &info).await;
    let second = fetch(&mut ana, &info).await;
    assert_eq!(first, second);
    assert_eq!(strings(&query(&mut ana, "SELECT name FROM images WHERE name = 'copy'").await, "name"), ["copy"]);
    // Run again (a new ticket), the same clone fails: the replay above did not run it.
    let again = ana.execute("SELECT * FROM clone('small', 'copy')".into(), None).await;
    let failed = match again {
        Err(_) => true,
        Ok(info) => {
            let ticket = info.endpoint[0].ticket.clone().unwrap();
            match ana.do_get(ticket).await {
                Err(_) => true,
                Ok(stream) => stream.try_collect::<Vec<_>>().await.is_err(),
            }
        }
    };
    assert!(failed, "a second clone to the same name must fail");

    assert!(server.stop().success(), "SIGTERM ends the server with status 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_flight_info_stops_a_running_query() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "small");
    let mut server = Server::start(&lib, &[]);
    let mut ana = server.login("ana", "secret").await;
    let sql = "SELECT count(*) AS n FROM generate_series(1, 1000000000000) t(v) WHERE v % 7 = 3";
    let info = ana.execute(sql.into(), None).await.expect("plan");
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = ana.do_get(ticket).await.expect("do_get");
    let started = Instant::now();
    let mut canceller = ana.clone();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let action = Action::new("CancelFlightInfo", CancelFlightInfoRequest::new(info).encode_to_vec());
        canceller.do_action(action).await.expect("cancel").try_collect::<Vec<_>>().await.expect("cancel result")
    });
    let ended = tokio::time::timeout(Duration::from_secs(60), stream.try_collect::<Vec<_>>()).await;
    let error = ended.expect("the query ended after the cancel").expect_err("a cancelled query fails");
    assert!(error.to_string().contains("cancelled"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let result = cancel.await.unwrap();
    let status = arrow_flight::CancelFlightInfoResult::decode(&*result[0].body).unwrap();
    assert_eq!(status.status, arrow_flight::CancelStatus::Cancelled as i32);
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "small");
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let sh = |script: &str| imagelake_tests::run(Command::new("sh").arg("-c").arg(script).current_dir(&pki));
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null");
    for name in ["server", "client"] {
        sh(&format!(
            "openssl req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN=localhost 2>/dev/null && \
             printf 'subjectAltName=DNS:localhost\\n' > {name}.ext && \
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 \
               -extfile {name}.ext 2>/dev/null"
        ));
    }
    let path = |f: &str| pki.join(f).to_string_lossy().into_owned();
    let args =
        ["--tls-cert", &path("server.pem"), "--tls-key", &path("server.key"), "--tls-client-ca", &path("ca.pem")];
    let mut server = Server::start(&lib, &args);
    assert!(server.url.starts_with("https://"));
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
    let ca = tonic::transport::Certificate::from_pem(read("ca.pem"));
    let identity = tonic::transport::Identity::from_pem(read("client.pem"), read("client.key"));
    let endpoint = tonic::transport::Endpoint::new(server.url.clone()).unwrap();

    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(ca.clone()).domain_name("localhost");
    let refused = match endpoint.clone().tls_config(tls.clone()).unwrap().connect().await {
        Err(_) => true,
        Ok(channel) => FlightSqlServiceClient::new(channel).handshake("ana", "secret").await.is_err(),
    };
    assert!(refused, "a client without a certificate is refused");

    let channel = endpoint.tls_config(tls.identity(identity)).unwrap().connect().await.expect("connect with TLS");
    let mut ana = FlightSqlServiceClient::new(channel);
    ana.handshake("ana", "secret").await.expect("handshake over TLS");
    assert_eq!(strings(&query(&mut ana, "SELECT name FROM images").await, "name"), ["small"]);
    assert!(server.stop().success());
}
