//! Library-wide SQL on Apache DataFusion Ballista: `imagelake cluster scheduler`, `imagelake
//! cluster executor` and the client side of `imagelake sql --cluster`.
//!
//! Every process of a cluster opens the same library (a bucket, or a folder they all reach).
//! The client plans a question as one process would (the catalog's tables, imagelake's
//! functions) and sends its logical plan to the scheduler; the scheduler plans it physically
//! against the library (catalog scans become fragment reads pinned to the table versions it
//! planned against) and hands its stages to the executors, which read the catalog themselves.
//! `imagelake_sql::distributed::Codec` carries what is imagelake's in those plans, and who
//! asks (the owner, or a user of `serve --cluster`); Ballista's own codecs the rest. Commands
//! (`checkin(...)`, edits, gc) run in the client's process.

use ballista::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::serde::protobuf::UpdateTaskStatusParams;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpc;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service};
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use imagelake_engine::Library;
use imagelake_sql::distributed::Codec;
use imagelake_sql::{Access, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How the processes of a cluster notice one another's death.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// How often an executor tells the scheduler it lives.
    pub heartbeat: Duration,
    /// How long the scheduler waits for a heartbeat before it takes an executor for dead and
    /// runs its tasks elsewhere.
    pub timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness { heartbeat: Duration::from_secs(5), timeout: Duration::from_secs(30) }
    }
}

/// Ballista's log records at `level` or above, to standard error: a cluster process tells its
/// operator what the scheduler and executors decided (an executor taken for dead, a task
/// retried).
pub fn log_to_stderr(level: log::LevelFilter) {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::max_level()
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                eprintln!("{} {}: {}", record.level(), record.target(), record.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

fn ballista_error(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("{what}: {e}"))
}

fn codec(library: Arc<Library>) -> Arc<Codec> {
    let logical = Arc::new(BallistaLogicalExtensionCodec::default());
    let physical = Arc::new(BallistaPhysicalExtensionCodec::default());
    Arc::new(Codec::new(library, logical, physical))
}

/// Runs a scheduler on `address` for `library` until the process is stopped.
pub async fn scheduler(library: Arc<Library>, address: SocketAddr, liveness: Liveness) -> Result<()> {
    let codec = codec(library);
    let config = SchedulerConfig {
        bind_host: address.ip().to_string(),
        bind_port: address.port(),
        external_host: address.ip().to_string(),
        override_logical_codec: Some(codec.clone()),
        override_physical_codec: Some(codec),
        executor_timeout_seconds: liveness.timeout.as_secs().max(1),
        expire_dead_executor_interval_seconds: (liveness.timeout.as_secs() / 3).max(1),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| ballista_error("the scheduler", e))?;
    let server = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
        .await
        .map_err(|e| ballista_error("the scheduler", e))?;
    tokio::spawn(reoffer(server.clone()));
    start_grpc_service(address, server).await.map_err(|e| ballista_error(&format!("the scheduler on {address}"), e))
}

/// Ballista 54.1 offers an executor's free task slots again only when a task reports to the
/// scheduler (push scheduling). When an executor dies while the others have no task left to
/// report, the tasks its death resets are never offered and the question waits for ever (seen
/// in this project's tests; Ballista's issue #2226 is one such path). Once a second while a
/// question runs, a live executor's empty report makes the scheduler offer its slots again.
async fn reoffer(server: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if server.running_job_number() == 0 {
            continue;
        }
        let Ok(executors) = server.state.executor_manager.get_executors_state().await else { continue };
        let now = Duration::from_secs(ballista_scheduler::scheduler_server::timestamp_secs());
        // The executor heard from last: a dead one's report would make nothing run.
        let live = executors.iter().filter_map(|(metadata, seen, _)| Some((seen.as_ref()?, &metadata.id)));
        if let Some((seen, id)) = live.max()
            && now.saturating_sub(*seen) < Duration::from_secs(5)
        {
            let report = UpdateTaskStatusParams { executor_id: id.clone(), task_status: Vec::new() };
            let _ = SchedulerGrpc::update_task_status(&server, tonic::Request::new(report)).await;
        }
    }
}

/// Where an executor listens: its Arrow Flight service (results and shuffles) and its gRPC
/// service (tasks).
#[derive(Debug, Clone, Copy)]
pub struct ExecutorPorts {
    pub flight: SocketAddr,
    pub grpc_port: u16,
}

/// Runs an executor of the scheduler at `scheduler` (`host:port`) for `library` until the
/// process is stopped; shuffle files go to a folder of its own in the system's temporary
/// folder, removed when it stops.
pub async fn executor(
    library: Arc<Library>,
    scheduler: &str,
    ports: ExecutorPorts,
    tasks: usize,
    liveness: Liveness,
) -> Result<()> {
    let (scheduler_host, scheduler_port) = scheduler_address(scheduler)?;
    // Shuffle files are the executor's, not the library's: `check` would take a folder in the
    // library's tmp/ for a crashed writer's leftovers.
    let work = tempfile::Builder::new()
        .prefix("imagelake-executor-")
        .tempdir()
        .map_err(|e| ballista_error("the executor's work folder", e))?;
    let codec = codec(library);
    let config = ExecutorProcessConfig {
        bind_host: ports.flight.ip().to_string(),
        external_host: Some(ports.flight.ip().to_string()),
        port: ports.flight.port(),
        grpc_port: ports.grpc_port,
        scheduler_host,
        scheduler_port,
        scheduler_connect_timeout_seconds: 10,
        concurrent_tasks: tasks,
        work_dir: Some(work.path().display().to_string()),
        executor_heartbeat_interval_seconds: liveness.heartbeat.as_secs().max(1),
        override_logical_codec: Some(codec.clone()),
        override_physical_codec: Some(codec),
        ..Default::default()
    };
    let ran = start_executor_process(Arc::new(config)).await;
    drop(work);
    ran.map_err(|e| ballista_error(&format!("the executor on {}", ports.flight), e))
}

/// `host:port` (or `df://host:port`, `http://host:port`) as a host and a port.
fn scheduler_address(url: &str) -> Result<(String, u16)> {
    let bare = url.split("://").last().unwrap_or(url).trim_end_matches('/');
    let (host, port) = bare.rsplit_once(':').ok_or_else(|| {
        DataFusionError::Configuration(format!("the scheduler {url} has no port (host:port, e.g. 127.0.0.1:50050)"))
    })?;
    let port =
        port.parse().map_err(|_| DataFusionError::Configuration(format!("the scheduler {url} has no port number")))?;
    Ok((host.to_string(), port))
}

/// A SQL session of `access` (the library's owner, or a server's user) whose questions run on
/// the cluster whose scheduler is at `scheduler` (`host:port`), within the same grants; its
/// commands run in this process.
pub async fn session(library: Arc<Library>, access: Access, scheduler: &str) -> Result<Session> {
    let (host, port) = scheduler_address(scheduler)?;
    let url = format!("http://{host}:{port}");
    let codec = codec(library.clone());
    let state = move |config: datafusion::prelude::SessionConfig| -> Result<SessionState> {
        let config = config
            .upgrade_for_ballista()
            .with_ballista_logical_extension_codec(codec.clone())
            .with_ballista_physical_extension_codec(codec);
        let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
        state.upgrade_for_ballista(url)
    };
    Session::open_in(library, access, state).await
}
