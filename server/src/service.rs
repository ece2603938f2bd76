//! The Flight SQL service: each call checks its caller's bearer token, runs in that user's
//! SQL session, and answers through `results` (one wire schema, streamed batches).
//!
//! Statements go GetFlightInfo (plan only: the schema, and a signed ticket holding the SQL)
//! then DoGet (plan again and stream). Prepared statements go CreatePreparedStatement
//! (describe), DoPut of parameter rows (a new handle carrying them), GetFlightInfo, DoGet,
//! ClosePreparedStatement, as Python's DBAPI always does. Several parameter rows run the
//! statement once per row (executemany). What Flight SQL has and imagelake does not
//! (Substrait, transactions, savepoints, bulk ingest, keys) answers UNIMPLEMENTED.

use crate::auth::{Auth, Caller, caller};
use crate::metadata;
use crate::results::{self, BatchStream, FlightStream, Kept, Memo, Running, status, wire_schema};
use crate::tickets::{Body, Kind, Signer, decode_params, encode_params};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{DoPutError, FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor, FlightEndpoint,
    FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::CastOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::{ParamValues, ScalarValue};
use futures::{Stream, StreamExt, TryStreamExt};
use imagelake_engine::Library;
use imagelake_engine::access::Principal;
use imagelake_sql::{Access, Planned, Session};
use prost::Message;
use prost::bytes::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

/// Parameters a client may bind at once (a DoPut's batches, decoded).
const MAX_PARAMS_BYTES: usize = 64 << 20;

pub struct Service {
    library: Arc<Library>,
    auth: Arc<Auth>,
    signer: Signer,
    /// One session per user, kept while their principal (grants, admin flag) stays the same.
    sessions: Mutex<HashMap<String, (Principal, Arc<Session>)>>,
    data_roots: Vec<PathBuf>,
    running: Arc<Running>,
    memo: Memo,
    /// The parameters last bound to each prepared statement, for clients that keep using the
    /// handle they had before the DoPut (the handle DoPut returns carries them itself).
    bound: Kept<Arc<Vec<u8>>>,
    /// The scheduler of the cluster that answers questions, if any.
    cluster: Option<String>,
}

impl Service {
    pub fn new(
        library: Arc<Library>,
        data_roots: Vec<PathBuf>,
        token_ttl: Duration,
        cluster: Option<String>,
    ) -> imagelake_engine::Result<Service> {
        let signer = Signer::new().map_err(|e| imagelake_engine::Error::Internal(format!("no random numbers: {e}")))?;
        Ok(Service {
            auth: Arc::new(Auth::new(library.clone(), token_ttl)),
            library,
            signer,
            sessions: Mutex::new(HashMap::new()),
            data_roots,
            running: Arc::default(),
            memo: Memo::default(),
            bound: Kept::default(),
            cluster,
        })
    }

    /// The bearer check every call but Handshake must pass, for [`crate::auth::Authenticated`].
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    /// The caller's session: the one kept for them, or a new one when their rights changed.
    async fn session(&self, caller: &Caller) -> Result<Arc<Session>, Status> {
        let kept = self.sessions.lock().ok().and_then(|s| {
            s.get(&caller.name).filter(|(principal, _)| *principal == caller.principal).map(|(_, s)| s.clone())
        });
        if let Some(session) = kept {
            return Ok(session);
        }
        let access = Access { principal: caller.principal.clone(), data_roots: Some(self.data_roots.clone()) };
        let session = match &self.cluster {
            Some(scheduler) => imagelake_cluster::session(self.library.clone(), access, scheduler).await,
            None => Session::open_as(self.library.clone(), access).await,
        };
        let session = Arc::new(session.map_err(|e| status(&e))?);
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(caller.name.clone(), (caller.principal.clone(), session.clone()));
        }
        Ok(session)
    }

    /// The parameters a prepared statement's handle carries, or those last bound to it.
    fn params_of(&self, handle: &Body) -> Result<Option<RecordBatch>, Status> {
        match &handle.params {
            Some(bytes) => decode_params(bytes).map(Some),
            None => self.bound.get(&handle.id).map(|bytes| decode_params(&bytes)).transpose(),
        }
    }

    /// A FlightInfo of one endpoint (no location: the client reuses its connection).
    fn flight_info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding a schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor))
    }

    /// The FlightInfo of a statement: its wire schema and a ticket of its own.
    fn statement_info(
        &self,
        planned: &Planned,
        caller: &Caller,
        sql: &str,
        params: Option<Vec<u8>>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = wire_schema(planned.schema());
        let body = Body::new(Kind::Statement, &caller.name, sql, params)?;
        let ticket = TicketStatementQuery { statement_handle: self.signer.sign(&body) };
        Ok(Response::new(self.flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)?))
    }

    /// The results of the statement `body` holds, run once per parameter row. A statement
    /// that runs commands runs at most once per ticket: its outcome is kept and replayed.
    async fn results(&self, caller: &Caller, body: Body, params: Option<RecordBatch>) -> Result<FlightStream, Status> {
        let cell = self.memo.get(&body.id);
        if let Some((schema, outcome)) = cell.as_ref().and_then(|c| c.get()) {
            return Ok(results::flight_stream(schema.clone(), results::replay(outcome), None));
        }
        let session = self.session(caller).await?;
        let plans = plan_rows(&session, &body.sql, params.as_ref()).await?;
        let schema = wire_schema(plans.first().map(|p| p.schema()).unwrap_or_else(|| Arc::new(Schema::empty())));
        if plans.iter().any(|p| p.runs_commands()) {
            let cell = self.memo.get_or_insert_with(&body.id, Default::default);
            let (schema, outcome) =
                cell.get_or_init(|| async { (schema.clone(), results::collect(execute_all(plans)).await) }).await;
            return Ok(results::flight_stream(schema.clone(), results::replay(outcome), None));
        }
        let cancel = self.running.register(&body.id);
        Ok(results::flight_stream(schema, execute_all(plans), Some(cancel)))
    }

    /// Runs the statement once per parameter row, to the end; the records it changed or
    /// returned (-1 for a statement without a result, such as SET).
    async fn update(&self, caller: &Caller, sql: &str, params: Option<RecordBatch>) -> Result<i64, Status> {
        let session = self.session(caller).await?;
        let plans = plan_rows(&session, sql, params.as_ref()).await?;
        let mut total = None;
        for planned in plans {
            let (schema, returns_rows) = (planned.schema(), planned.returns_rows());
            let batches = results::batches(planned.execute().await.map_err(|e| status(&e))?);
            let count =
                batches.try_fold(0i64, |n, batch| futures::future::ready(Ok(n + records(&schema, &batch)))).await?;
            if returns_rows {
                total = Some(total.unwrap_or(0) + count);
            }
        }
        Ok(total.unwrap_or(-1))
    }

    /// Metadata answers as a DoGet stream of one batch.
    fn one_batch(batch: RecordBatch) -> Response<FlightStream> {
        let schema = wire_schema(batch.schema());
        Response::new(results::flight_stream(schema, futures::stream::iter([Ok(batch)]).boxed(), None))
    }

    /// Cancels the tickets of `info`'s endpoints that belong to the caller.
    fn cancel(&self, caller: &Caller, info: &FlightInfo) -> Result<bool, Status> {
        let mut any = false;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else { continue };
            let any_message = Any::decode(&*ticket.ticket).map_err(|_| Status::invalid_argument("not a ticket"))?;
            let Ok(Some(statement)) = any_message.unpack::<TicketStatementQuery>() else {
                // Metadata tickets: nothing long-running to cancel.
                continue;
            };
            let body = self.signer.open(&statement.statement_handle, Kind::Statement, &caller.name)?;
            self.running.cancel(&body.id);
            any = true;
        }
        Ok(any)
    }
}

/// The number of records a batch stands for: DataFusion's DML answers with `count` rows.
fn records(schema: &SchemaRef, batch: &RecordBatch) -> i64 {
    if let [field] = schema.fields().as_ref()
        && field.name() == "count"
        && field.data_type().is_integer()
    {
        return (0..batch.num_rows())
            .filter_map(|row| ScalarValue::try_from_array(batch.column_by_name("count")?, row).ok())
            .filter_map(|v| match v.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(Some(n))) => Some(n),
                _ => None,
            })
            .sum();
    }
    batch.num_rows() as i64
}

/// Plans `sql` once per parameter row (once without parameters).
async fn plan_rows(session: &Session, sql: &str, params: Option<&RecordBatch>) -> Result<Vec<Planned>, Status> {
    let rows = match params {
        None => vec![None],
        Some(batch) => param_rows(batch)?.into_iter().map(Some).collect(),
    };
    let mut plans = Vec::with_capacity(rows.len());
    for row in rows {
        plans.push(session.plan(sql, row).await.map_err(|e| status(&e))?);
    }
    Ok(plans)
}

/// The results of `plans`, one after the other, streamed.
fn execute_all(plans: Vec<Planned>) -> BatchStream {
    futures::stream::iter(plans)
        .then(|planned| async move { planned.execute().await.map(results::batches).map_err(|e| status(&e)) })
        .try_flatten()
        .boxed()
}

/// One set of parameter values per row of `batch`: positional (`$1`, `$2`, ... in column
/// order), or by name when every column is named `$name`.
fn param_rows(batch: &RecordBatch) -> Result<Vec<ParamValues>, Status> {
    let schema = batch.schema();
    let named = !schema.fields().is_empty()
        && schema
            .fields()
            .iter()
            .all(|f| f.name().strip_prefix('$').is_some_and(|n| n.chars().next().is_some_and(|c| !c.is_ascii_digit())));
    (0..batch.num_rows())
        .map(|row| {
            let values = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
            Ok(match named {
                false => ParamValues::from(values),
                true => ParamValues::Map(
                    schema.fields().iter().zip(values).map(|(f, v)| (f.name()[1..].to_string(), v.into())).collect(),
                ),
            })
        })
        .collect()
}

/// `batch` cast to the statement's parameter types, where it declares them (a client sends
/// Python ints as Int64 for an Int32 placeholder, say), and named as its placeholders.
fn cast_params(batch: RecordBatch, parameters: &Schema) -> Result<RecordBatch, Status> {
    if parameters.fields().len() != batch.num_columns() {
        return Err(Status::invalid_argument(format!(
            "the statement takes {} parameters, {} were bound",
            parameters.fields().len(),
            batch.num_columns()
        )));
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (want, column) in parameters.fields().iter().zip(batch.columns()) {
        let column = match want.data_type() {
            DataType::Null => column.clone(),
            t if t == column.data_type() => column.clone(),
            // Strict: a value that does not convert is an error, not a NULL.
            t => datafusion::arrow::compute::cast_with_options(
                column,
                t,
                &CastOptions { safe: false, ..Default::default() },
            )
            .map_err(|e| Status::invalid_argument(format!("parameter {}: {e}", want.name())))?,
        };
        fields.push(Field::new(want.name(), column.data_type().clone(), true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))
}

/// The parameter rows of a DoPut stream, as one batch (None when it sent no rows).
async fn read_params(stream: PeekableFlightDataStream) -> Result<Option<RecordBatch>, Status> {
    let mut decoded = FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from));
    let mut batches = Vec::new();
    let mut bytes = 0;
    while let Some(batch) = decoded.next().await {
        let batch = batch.map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
        bytes += batch.get_array_memory_size();
        if bytes > MAX_PARAMS_BYTES {
            return Err(Status::resource_exhausted(format!("parameters over {} MiB", MAX_PARAMS_BYTES >> 20)));
        }
        batches.push(batch);
    }
    let Some(schema) = batches.first().map(|b| b.schema()) else { return Ok(None) };
    let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
    Ok((batch.num_rows() > 0).then_some(batch))
}

fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| Status::internal(format!("encoding a schema: {e}")))?;
    Ok(bytes)
}

fn no_transactions(transaction_id: &Option<Bytes>) -> Result<(), Status> {
    match transaction_id {
        Some(_) => Err(Status::unimplemented("imagelake has no transactions")),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let secret = self.auth.login(request.metadata()).await?;
        let header = format!("Bearer {secret}").parse().map_err(|_| Status::internal("a token that is no header"))?;
        let reply = HandshakeResponse { protocol_version: 0, payload: secret.into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    // Statements.

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&request)?;
        no_transactions(&query.transaction_id)?;
        let session = self.session(&caller).await?;
        let planned = session.plan(&query.query, None).await.map_err(|e| status(&e))?;
        self.statement_info(&planned, &caller, &query.query, None, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = caller(&request)?;
        let body = self.signer.open(&ticket.statement_handle, Kind::Statement, &caller.name)?;
        let params = body.params.as_deref().map(decode_params).transpose()?;
        Ok(Response::new(self.results(&caller, body, params).await?))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = caller(&request)?;
        no_transactions(&command.transaction_id)?;
        self.update(&caller, &command.query, None).await
    }

    // Prepared statements.

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = caller(&request)?;
        no_transactions(&query.transaction_id)?;
        let session = self.session(&caller).await?;
        let (dataset, parameters) = session.describe(&query.query).await.map_err(|e| status(&e))?;
        let handle = Body::new(Kind::Prepared, &caller.name, &query.query, None)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.signer.sign(&handle),
            dataset_schema: schema_bytes(&wire_schema(dataset))?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = caller(&request)?;
        let handle = self.signer.open(&query.prepared_statement_handle, Kind::Prepared, &caller.name)?;
        let session = self.session(&caller).await?;
        let params = match read_params(request.into_inner()).await? {
            None => None,
            Some(batch) => {
                let (_, parameters) = session.describe(&handle.sql).await.map_err(|e| status(&e))?;
                Some(encode_params(&cast_params(batch, &parameters)?)?)
            }
        };
        match &params {
            Some(bytes) => self.bound.insert(&handle.id, Arc::new(bytes.clone())),
            None => self.bound.remove(&handle.id),
        }
        let rebound = Body { params, ..handle };
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(self.signer.sign(&rebound)) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&request)?;
        let handle = self.signer.open(&query.prepared_statement_handle, Kind::Prepared, &caller.name)?;
        let params = self.params_of(&handle)?;
        let session = self.session(&caller).await?;
        // The schema of the first row's statement: every row's is the same.
        let first = match &params {
            Some(batch) => param_rows(&batch.slice(0, batch.num_rows().min(1)))?.pop(),
            None => None,
        };
        let planned = session.plan(&handle.sql, first).await.map_err(|e| status(&e))?;
        let params = params.as_ref().map(encode_params).transpose()?;
        self.statement_info(&planned, &caller, &handle.sql, params, request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = caller(&request)?;
        let handle = self.signer.open(&query.prepared_statement_handle, Kind::Prepared, &caller.name)?;
        let params = self.params_of(&handle)?;
        Ok(Response::new(self.results(&caller, handle, params).await?))
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = caller(&request)?;
        let handle = self.signer.open(&query.prepared_statement_handle, Kind::Prepared, &caller.name)?;
        // ADBC sends the parameter rows with the update; arrow-rs binds them first.
        let params = match read_params(request.into_inner()).await? {
            Some(batch) => {
                let session = self.session(&caller).await?;
                let (_, parameters) = session.describe(&handle.sql).await.map_err(|e| status(&e))?;
                Some(cast_params(batch, &parameters)?)
            }
            None => self.params_of(&handle)?,
        };
        self.update(&caller, &handle.sql, params).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = caller(&request)?;
        let handle = self.signer.open(&query.prepared_statement_handle, Kind::Prepared, &caller.name)?;
        self.bound.remove(&handle.id);
        Ok(())
    }

    // Cancellation.

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        // ActionCancelQueryResult.CancelResult (its module is not exported): CANCELLED, NOT_CANCELLABLE.
        let caller = caller(&request)?;
        let info = FlightInfo::decode(query.info).map_err(|_| Status::invalid_argument("not a FlightInfo"))?;
        let result = match self.cancel(&caller, &info)? {
            true => 1,
            false => 3,
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type != "CancelFlightInfo" {
            return Err(Status::unimplemented(format!("no action {:?} in imagelake", request.get_ref().r#type)));
        }
        let caller = caller(&request)?;
        let cancel = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .map_err(|_| Status::invalid_argument("not a CancelFlightInfoRequest"))?;
        let info = cancel.info.ok_or_else(|| Status::invalid_argument("CancelFlightInfo without a FlightInfo"))?;
        let status = match self.cancel(&caller, &info)? {
            true => CancelStatus::Cancelled,
            false => CancelStatus::NotCancellable,
        };
        let result = CancelFlightInfoResult { status: status as i32 };
        let body = arrow_flight::Result { body: result.encode_to_vec().into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))))
    }

    /// Every ticket this server issues is a statement's or a metadata command's: anything else
    /// was made up or altered.
    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        caller(&request)?;
        Err(Status::invalid_argument("not a ticket this server issued"))
    }

    async fn do_put_error_callback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        error: DoPutError,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(Status::invalid_argument(format!("DoPut: {error}")))
    }

    // Metadata: the ticket of each is its own command; DoGet answers it afresh.

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        caller(&request)?;
        let schema = wire_schema(query.into_builder().schema());
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = caller(&request)?;
        let session = self.session(&caller).await?;
        Ok(Self::one_batch(metadata::catalogs(session.context(), query)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        caller(&request)?;
        let schema = wire_schema(query.clone().into_builder().schema());
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = caller(&request)?;
        let session = self.session(&caller).await?;
        Ok(Self::one_batch(metadata::db_schemas(session.context(), query)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        caller(&request)?;
        let schema = wire_schema(query.clone().into_builder().schema());
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = caller(&request)?;
        let session = self.session(&caller).await?;
        Ok(Self::one_batch(metadata::tables(session.context(), query).await?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        caller(&request)?;
        let schema = wire_schema(query.into_builder().schema());
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        caller(&request)?;
        let mut builder = query.into_builder();
        for table_type in metadata::TABLE_TYPES {
            builder.append(table_type);
        }
        Ok(Self::one_batch(builder.build().map_err(|e| Status::internal(format!("table types: {e}")))?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        caller(&request)?;
        let schema = wire_schema(query.clone().into_builder(metadata::sql_info()?).schema());
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        caller(&request)?;
        let batch = query.into_builder(metadata::sql_info()?).build();
        Ok(Self::one_batch(batch.map_err(|e| Status::internal(format!("SqlInfo: {e}")))?))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        caller(&request)?;
        let schema = wire_schema(query.into_builder(metadata::xdbc()?).schema());
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        caller(&request)?;
        let batch = query.into_builder(metadata::xdbc()?).build();
        Ok(Self::one_batch(batch.map_err(|e| Status::internal(format!("XdbcTypeInfo: {e}")))?))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
