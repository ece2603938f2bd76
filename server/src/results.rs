//! Results on the wire: errors as gRPC statuses, the one schema a stream and its FlightInfo
//! share, batches streamed (never collected) through the Flight encoder, cancellation, and the
//! memo that answers a second DoGet of a command's ticket without running it again.

use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt, TryStreamExt};
use imagelake_sql::{ErrorKind, error_kind};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::{Code, Status};

pub type BatchStream = BoxStream<'static, Result<RecordBatch, Status>>;
pub type FlightStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The status of a failed statement, by the kind the SQL crate gives it. An internal error's
/// text may name files of the library: it goes to the server's log, and the client gets a
/// message without it.
pub fn status(e: &DataFusionError) -> Status {
    let message = e.to_string();
    match error_kind(e) {
        ErrorKind::Invalid => Status::invalid_argument(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::Denied => Status::permission_denied(message),
        ErrorKind::Unsupported => Status::unimplemented(message),
        ErrorKind::Internal => internal(&message),
    }
}

/// The status of an engine error outside SQL (login, tokens).
pub fn engine_status(e: &imagelake_engine::Error) -> Status {
    use imagelake_engine::Error as E;
    match e {
        E::User(m) => Status::invalid_argument(m.clone()),
        E::NoImage(_) => Status::not_found(e.to_string()),
        E::NotFound(m) => Status::not_found(m.clone()),
        e => internal(&e.to_string()),
    }
}

fn internal(message: &str) -> Status {
    eprintln!("imagelake serve: internal error: {message}");
    Status::internal("internal error in the imagelake server (its log has the details)")
}

/// The schema a stream of `schema` has on the wire: what arrow-flight's encoder makes of it
/// (dictionaries hydrated to their values, as it sends them). FlightInfo, CreatePreparedStatement
/// and the stream all use this one, so that ADBC never finds them inconsistent.
pub fn wire_schema(schema: SchemaRef) -> SchemaRef {
    FlightDataEncoderBuilder::new()
        .with_schema(schema.clone())
        .build(futures::stream::empty())
        .known_schema()
        .unwrap_or(schema)
}

/// `batch` with exactly `schema` (a wire schema): columns cast where their types differ
/// (dictionaries, views), fields and metadata taken from `schema`.
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Status> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(internal(&format!(
            "a batch of {} columns in a result of {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| match column.data_type() == field.data_type() {
            true => Ok(column.clone()),
            false => datafusion::arrow::compute::cast(column, field.data_type()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| internal(&format!("result column: {e}")))?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .map_err(|e| internal(&format!("result batch: {e}")))
}

/// A DataFusion stream as a stream of statuses.
pub fn batches(stream: datafusion::execution::SendableRecordBatchStream) -> BatchStream {
    stream.map_err(|e| status(&e)).boxed()
}

/// The DoGet answer: `batches` conformed to `schema` (a wire schema), encoded lazily. Nothing
/// polls the batches but the response itself, so a client that goes away drops them, and the
/// query with them; `cancel` ends them early with CANCELLED.
pub fn flight_stream(schema: SchemaRef, batches: BatchStream, cancel: Option<Cancellation>) -> FlightStream {
    let conformed_schema = schema.clone();
    let mut conformed = batches.map(move |b| b.and_then(|b| conform(b, &conformed_schema))).boxed();
    if let Some(cancel) = cancel {
        conformed = Cancellable { inner: Some(conformed), cancel }.boxed();
    }
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(conformed.map_err(FlightError::from))
        .map_err(Status::from);
    Box::pin(encoded)
}

/// Streams running per ticket id, for CancelFlightInfo.
/// A ticket cancelled before its DoGet starts stays cancelled (kept in `cancelled`).
#[derive(Default)]
pub struct Running {
    tickets: Mutex<HashMap<Vec<u8>, Vec<Weak<Flag>>>>,
    cancelled: Kept<()>,
}

#[derive(Default)]
struct Flag {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

/// One running stream's registration; dropping it unregisters the stream.
pub struct Cancellation {
    running: Arc<Running>,
    id: Vec<u8>,
    flag: Arc<Flag>,
}

impl Running {
    pub fn register(self: &Arc<Self>, id: &[u8]) -> Cancellation {
        let flag = Arc::new(Flag::default());
        if self.cancelled.get(id).is_some() {
            flag.cancelled.store(true, Ordering::SeqCst);
        }
        if let Ok(mut tickets) = self.tickets.lock() {
            tickets.entry(id.to_vec()).or_default().push(Arc::downgrade(&flag));
        }
        Cancellation { running: self.clone(), id: id.to_vec(), flag }
    }

    /// Cancels every stream of ticket `id`, and any DoGet of it still to come; false when
    /// none was running.
    pub fn cancel(&self, id: &[u8]) -> bool {
        self.cancelled.insert(id, ());
        let flags = self.tickets.lock().ok().and_then(|t| t.get(id).cloned()).unwrap_or_default();
        let mut any = false;
        for flag in flags.iter().filter_map(Weak::upgrade) {
            flag.cancelled.store(true, Ordering::SeqCst);
            flag.waker.wake();
            any = true;
        }
        any
    }
}

impl Drop for Cancellation {
    fn drop(&mut self) {
        if let Ok(mut tickets) = self.running.tickets.lock()
            && let Some(flags) = tickets.get_mut(&self.id)
        {
            flags.retain(|f| f.strong_count() > 0 && !std::ptr::eq(f.as_ptr(), Arc::as_ptr(&self.flag)));
            if flags.is_empty() {
                tickets.remove(&self.id);
            }
        }
    }
}

/// A stream that ends with CANCELLED once its ticket is cancelled, dropping what it wraps.
struct Cancellable {
    inner: Option<BatchStream>,
    cancel: Cancellation,
}

impl Stream for Cancellable {
    type Item = Result<RecordBatch, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        this.cancel.flag.waker.register(cx.waker());
        if this.cancel.flag.cancelled.load(Ordering::SeqCst) {
            this.inner = None;
            return Poll::Ready(Some(Err(Status::cancelled("the query was cancelled"))));
        }
        let next = inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            this.inner = None;
        }
        next
    }
}

/// A map of ticket or handle ids, bounded in time and size: entries expire after an hour,
/// and past `CAPACITY` the oldest go first. Clients that never come back cost nothing lasting.
pub struct Kept<V> {
    entries: Mutex<HashMap<Vec<u8>, (Instant, V)>>,
}

const CAPACITY: usize = 4096;
const KEEP: Duration = Duration::from_secs(3600);

impl<V: Clone> Default for Kept<V> {
    fn default() -> Self {
        Kept { entries: Mutex::new(HashMap::new()) }
    }
}

impl<V: Clone> Kept<V> {
    pub fn get(&self, id: &[u8]) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        entries.get(id).filter(|(made, _)| made.elapsed() < KEEP).map(|(_, v)| v.clone())
    }

    /// The value of `id`, made by `make` when there is none.
    pub fn get_or_insert_with(&self, id: &[u8], make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.get(id) {
            return v;
        }
        let v = make();
        self.insert(id, v.clone());
        v
    }

    pub fn insert(&self, id: &[u8], value: V) {
        let Ok(mut entries) = self.entries.lock() else { return };
        let now = Instant::now();
        if !entries.contains_key(id) {
            entries.retain(|_, (made, _)| now.duration_since(*made) < KEEP);
            while entries.len() >= CAPACITY {
                let Some(oldest) = entries.iter().min_by_key(|(_, (made, _))| *made).map(|(k, _)| k.clone()) else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(id.to_vec(), (now, value));
    }

    pub fn remove(&self, id: &[u8]) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(id);
        }
    }
}

/// What a command's run gave: its batches, or its error (kept too: a failed command may have
/// done part of its work, and must not run again either).
pub type Outcome = Result<Arc<Vec<RecordBatch>>, (Code, String)>;

/// The results of statements that run commands, per ticket id, with their wire schema: a
/// second DoGet of the ticket (a client retrying) is answered from here, so that a command
/// runs exactly once per ticket. Concurrent DoGets of one ticket wait for the one run.
pub type Memo = Kept<Arc<tokio::sync::OnceCell<(SchemaRef, Outcome)>>>;

/// Command results are summaries; one larger than this is not kept for a replay.
pub const MAX_KEPT_BYTES: usize = 16 << 20;

/// Runs `batches` to the end and keeps what it gave, for [`Memo`].
pub async fn collect(batches: BatchStream) -> Outcome {
    let batches: Vec<RecordBatch> = batches.try_collect().await.map_err(|s| (s.code(), s.message().to_string()))?;
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    if bytes > MAX_KEPT_BYTES {
        return Err((Code::ResourceExhausted, "the command ran, but its result is too large to send".into()));
    }
    Ok(Arc::new(batches))
}

/// A kept outcome as a stream again.
pub fn replay(outcome: &Outcome) -> BatchStream {
    match outcome {
        Ok(batches) => futures::stream::iter(batches.as_ref().clone().into_iter().map(Ok)).boxed(),
        Err((code, message)) => {
            futures::stream::once(futures::future::ready(Err(Status::new(*code, message.clone())))).boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};

    #[test]
    fn dictionaries_are_hydrated_in_the_schema_and_the_batches() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![Field::new("k", dict, true), Field::new("n", DataType::Int32, false)]));
        let wire = wire_schema(schema.clone());
        assert_eq!(wire.field(0).data_type(), &DataType::Utf8);
        assert_eq!(wire.field(1), schema.field(1));
        let keys: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(keys) as ArrayRef, Arc::new(Int32Array::from(vec![1, 2, 3]))])
                .unwrap();
        let conformed = conform(batch, &wire).unwrap();
        assert_eq!(conformed.schema(), wire);
        let strings = conformed.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(strings.value(2), "a");
    }

    #[test]
    fn kept_entries_are_per_id_and_bounded() {
        let memo = Memo::default();
        let a = memo.get_or_insert_with(b"a", Default::default);
        assert!(Arc::ptr_eq(&a, &memo.get_or_insert_with(b"a", Default::default)));
        assert!(!Arc::ptr_eq(&a, &memo.get_or_insert_with(b"b", Default::default)));
        for i in 0..CAPACITY + 10 {
            memo.insert(&i.to_le_bytes(), Default::default());
        }
        assert!(memo.entries.lock().unwrap().len() <= CAPACITY);
        assert!(memo.get(&(CAPACITY + 9).to_le_bytes()).is_some());
    }
}
