//! TEMPORARY stand-ins for the APIs being written on other branches, with their exact
//! signatures, so that the server builds and runs now: the engine's `Library::login` and
//! `Library::principal` (branch `access`) and the SQL crate's `Access`, `Session::open_as`,
//! `Session::plan`, `Session::describe`, `Planned` and `error_kind`. Deleted once they land on
//! main: inherent methods then take precedence over these extension traits.
//!
//! Users come from `IMAGELAKE_SERVE_STANDIN_USERS`: `name:password[:admin]` entries separated
//! by `;`, each with a read grant on `*`.

#![allow(dead_code)] // Stand-ins carry the whole API they stand in for.

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, ParamValues, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use imagelake_engine::Library;
use imagelake_engine::access::{Pattern, Principal, Right, User};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Token {
    pub secret: String,
    pub user: String,
    pub expires_at: i64,
}

static TOKENS: Mutex<Option<HashMap<String, (String, bool, i64)>>> = Mutex::new(None);

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub trait LibraryAccess {
    fn login(&self, name: &str, password: &str, ttl: Duration) -> imagelake_engine::Result<Option<Token>>;
    fn principal(&self, secret: &str) -> imagelake_engine::Result<Option<Principal>>;
}

impl LibraryAccess for Library {
    fn login(&self, name: &str, password: &str, ttl: Duration) -> imagelake_engine::Result<Option<Token>> {
        let users = std::env::var("IMAGELAKE_SERVE_STANDIN_USERS").unwrap_or_default();
        let found = users.split(';').find_map(|entry| {
            let mut parts = entry.split(':');
            let (n, p) = (parts.next()?, parts.next()?);
            (n == name && p == password).then(|| parts.next() == Some("admin"))
        });
        let Some(admin) = found else { return Ok(None) };
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let expires_at = now() + ttl.as_secs() as i64;
        let mut tokens = TOKENS.lock().map_err(|_| imagelake_engine::Error::Internal("tokens".into()))?;
        tokens.get_or_insert_default().insert(secret.clone(), (name.to_string(), admin, expires_at));
        Ok(Some(Token { secret, user: name.to_string(), expires_at }))
    }

    fn principal(&self, secret: &str) -> imagelake_engine::Result<Option<Principal>> {
        let tokens = TOKENS.lock().map_err(|_| imagelake_engine::Error::Internal("tokens".into()))?;
        let Some((name, admin, expires_at)) = tokens.as_ref().and_then(|t| t.get(secret)) else { return Ok(None) };
        if *expires_at <= now() {
            return Ok(None);
        }
        let grants = vec![(Right::Read, Pattern::parse("*")?)];
        Ok(Some(Principal::User(User { name: name.clone(), admin: *admin, grants })))
    }
}

pub struct Access {
    pub principal: Principal,
    pub data_roots: Option<Vec<PathBuf>>,
}

pub trait SessionPlanning: Sized {
    fn open_as(library: Arc<Library>, access: Access) -> impl std::future::Future<Output = Result<Self>> + Send;
    fn plan(&self, sql: &str, params: Option<ParamValues>)
    -> impl std::future::Future<Output = Result<Planned>> + Send;
    fn describe(&self, sql: &str) -> impl std::future::Future<Output = Result<(SchemaRef, SchemaRef)>> + Send;
}

impl SessionPlanning for imagelake_sql::Session {
    async fn open_as(library: Arc<Library>, _access: Access) -> Result<Self> {
        imagelake_sql::Session::open(library).await
    }

    async fn plan(&self, sql: &str, params: Option<ParamValues>) -> Result<Planned> {
        let ctx = self.context().clone();
        let mut plan = ctx.state().create_logical_plan(sql).await?;
        if let Some(params) = params {
            plan = plan.with_param_values(params)?;
        }
        let schema = match &plan {
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => Arc::new(Schema::empty()),
            plan => Arc::new(plan.schema().as_arrow().clone()),
        };
        let lower = sql.to_ascii_lowercase();
        let commands = ["checkin(", "checkout(", "checkout_to(", "clone(", "delete(", "undelete(", "gc(", "patch("];
        let runs_commands = commands.iter().any(|c| lower.contains(c));
        Ok(Planned { ctx, plan, schema, runs_commands })
    }

    async fn describe(&self, sql: &str) -> Result<(SchemaRef, SchemaRef)> {
        let plan = self.context().state().create_logical_plan(sql).await?;
        let mut params: Vec<(String, Field)> = plan
            .get_parameter_fields()?
            .into_iter()
            .map(|(id, field)| {
                let data_type =
                    field.map(|f| f.data_type().clone()).unwrap_or(datafusion::arrow::datatypes::DataType::Null);
                (id.clone(), Field::new(id, data_type, true))
            })
            .collect();
        params.sort_by_key(|(id, _)| (id[1..].parse::<u64>().unwrap_or(u64::MAX), id.clone()));
        let schema = match &plan {
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => Arc::new(Schema::empty()),
            plan => Arc::new(plan.schema().as_arrow().clone()),
        };
        Ok((schema, Arc::new(Schema::new(params.into_iter().map(|(_, f)| f).collect::<Vec<_>>()))))
    }
}

pub struct Planned {
    ctx: SessionContext,
    plan: LogicalPlan,
    schema: SchemaRef,
    runs_commands: bool,
}

impl Planned {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn runs_commands(&self) -> bool {
        self.runs_commands
    }

    pub async fn execute(self) -> Result<SendableRecordBatchStream> {
        self.ctx.execute_logical_plan(self.plan).await?.execute_stream().await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Invalid,
    Denied,
    NotFound,
    Unsupported,
    Internal,
}

pub fn error_kind(e: &DataFusionError) -> ErrorKind {
    use imagelake_engine::Error as Engine;
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => error_kind(inner),
        DataFusionError::Shared(inner) => error_kind(inner),
        DataFusionError::External(inner) => match inner.downcast_ref::<Engine>() {
            Some(Engine::NotFound(_)) => ErrorKind::NotFound,
            Some(Engine::User(_)) => ErrorKind::Invalid,
            Some(_) => ErrorKind::Internal,
            None => ErrorKind::Invalid,
        },
        DataFusionError::NotImplemented(_) => ErrorKind::Unsupported,
        DataFusionError::Internal(_) | DataFusionError::ExecutionJoin(_) => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    }
}
