//! `imagelake serve`: an Arrow Flight SQL server over a library, for ADBC, JDBC and
//! arrow-flight clients.
//!
//! - [`auth`]: the Basic -> Bearer handshake, and the bearer token every other call carries.
//! - [`tickets`]: tickets and prepared-statement handles, self-contained and HMAC-signed, tied
//!   to the user they were issued to.
//! - [`service`]: the `FlightSqlService`: statements, prepared statements, cancellation.
//! - [`metadata`]: catalogs, schemas, tables, table types, SqlInfo, XDBC types.
//! - [`results`]: errors as statuses, the one wire schema of a stream and its FlightInfo,
//!   streaming, and the memo that runs a command once per ticket.
//!
//! The server prints nothing: [`Bound::url`] tells the command line what to announce.

mod auth;
mod metadata;
mod results;
mod service;
mod tickets;

use arrow_flight::flight_service_server::FlightServiceServer;
use imagelake_engine::{Error, Library, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// How to serve.
pub struct Options {
    /// `HOST:PORT`; port 0 lets the system choose.
    pub listen: String,
    /// The directories SQL may read host files from (`checkin('/path', ...)`); none when empty.
    pub data_roots: Vec<PathBuf>,
    pub tls: Option<Tls>,
    /// How long a token from the handshake stays valid.
    pub token_ttl: Duration,
    /// The scheduler (`HOST:PORT`) of the Ballista cluster that answers users' questions
    /// within their grants; None answers them in this process.
    pub cluster: Option<String>,
}

/// PEM files: the server's certificate chain and key, and, to require client certificates,
/// the CA that signs them.
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Messages up to this size are accepted (the Go client's default cap is 16 MiB too).
const MAX_MESSAGE: usize = 16 << 20;
/// Once asked to stop, streams still running get this long to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// A server bound to its address, not yet serving.
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<ServerTlsConfig>,
    service: service::Service,
}

/// Binds the address and reads the TLS files; errors here are the caller's to fix.
pub async fn bind(library: Arc<Library>, options: Options) -> Result<Bound> {
    let tls = options.tls.as_ref().map(tls_config).transpose()?;
    let listener = TcpListener::bind(&options.listen)
        .await
        .map_err(|error| Error::Io { context: format!("listening on {}", options.listen), error })?;
    let addr = listener
        .local_addr()
        .map_err(|error| Error::Io { context: format!("listening on {}", options.listen), error })?;
    let service = service::Service::new(library, options.data_roots, options.token_ttl, options.cluster)?;
    Ok(Bound { listener, addr, tls, service })
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::User(format!("cannot read the TLS {what} {}: {e}", path.display())))
}

fn tls_config(tls: &Tls) -> Result<ServerTlsConfig> {
    let identity = Identity::from_pem(read_pem(&tls.cert, "certificate")?, read_pem(&tls.key, "key")?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        // With a client CA, tonic requires a client certificate it signed.
        config = config.client_ca_root(Certificate::from_pem(read_pem(ca, "client CA")?));
    }
    Ok(config)
}

impl Bound {
    /// The address clients connect to, such as `grpc+tls://127.0.0.1:50051`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "grpc+tls" } else { "grpc" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until SIGINT or SIGTERM; then stops accepting, lets running streams finish for
    /// a few seconds, and returns.
    pub async fn run(self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let signal_error = |error| Error::Io { context: "installing signal handlers".into(), error };
        let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;

        let mut builder = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).map_err(|e| Error::User(format!("TLS: {e}")))?;
        }
        let auth = self.service.auth();
        let service = FlightServiceServer::new(self.service)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let service = auth::Authenticated::new(service, auth);
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = builder.add_service(service).serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
        tokio::pin!(server);
        let serve_error = |e: tonic::transport::Error| Error::Io {
            context: "serving".into(),
            error: std::io::Error::other(e.to_string()),
        };
        tokio::select! {
            result = &mut server => return result.map_err(serve_error),
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        let _ = stop.send(());
        match tokio::time::timeout(DRAIN, server).await {
            Ok(result) => result.map_err(serve_error),
            // Streams still running are dropped with the process.
            Err(_) => Ok(()),
        }
    }
}
