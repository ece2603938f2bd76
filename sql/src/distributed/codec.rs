//! The codec of a cluster's plans (see the module docs): imagelake's tables, functions and plan
//! nodes as protobuf messages, everything else left to the codec it wraps (Ballista's).

use super::Called;
use super::fragments::{Fragments, Read};
use crate::access::Access;
use crate::functions::{self, Lib};
use crate::segmented::{Expand, Users};
use crate::tables::{CatalogTable, Tables};
use crate::visible::Visible;
use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::TableProvider;
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::logical_plan::from_proto::parse_exprs;
use datafusion_proto::logical_plan::to_proto::serialize_exprs;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use datafusion_proto::protobuf::{LogicalExprNode, Schema as SchemaNode};
use imagelake_engine::Library;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;

/// What every message of ours starts with; anything else is the wrapped codec's.
const MARK: &[u8] = b"imagelake\0";

/// A table: a catalog table by name, or a read table function's call.
#[derive(Clone, PartialEq, Message)]
struct TableNode {
    #[prost(string, tag = "1")]
    library: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(bool, tag = "3")]
    function: bool,
    #[prost(message, repeated, tag = "4")]
    args: Vec<LogicalExprNode>,
}

#[derive(Clone, PartialEq, Message)]
struct PlanNode {
    #[prost(string, tag = "1")]
    library: String,
    #[prost(oneof = "Node", tags = "2, 3, 4")]
    node: Option<Node>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Node {
    #[prost(message, tag = "2")]
    Fragments(FragmentsNode),
    #[prost(message, tag = "3")]
    Expand(ExpandNode),
    #[prost(message, tag = "4")]
    Visible(VisibleNode),
}

#[derive(Clone, PartialEq, Message)]
struct FragmentsNode {
    #[prost(string, tag = "1")]
    table: String,
    #[prost(uint64, tag = "2")]
    version: u64,
    #[prost(string, repeated, tag = "3")]
    columns: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    filters: Vec<LogicalExprNode>,
    #[prost(uint64, optional, tag = "5")]
    limit: Option<u64>,
    #[prost(message, repeated, tag = "6")]
    groups: Vec<Group>,
    #[prost(message, optional, tag = "7")]
    schema: Option<SchemaNode>,
}

#[derive(Clone, PartialEq, Message)]
struct Group {
    #[prost(uint64, repeated, tag = "1")]
    fragments: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct ExpandNode {
    #[prost(string, tag = "1")]
    manifest: String,
    #[prost(int64, repeated, tag = "2")]
    shown: Vec<i64>,
    #[prost(message, optional, tag = "3")]
    schema: Option<SchemaNode>,
}

#[derive(Clone, PartialEq, Message)]
struct VisibleNode {
    #[prost(int64, repeated, tag = "1")]
    readable: Vec<i64>,
    #[prost(uint64, repeated, tag = "2")]
    projection: Vec<u64>,
}

/// The codec of one process of a cluster serving one library. The library's owner asks the
/// cluster's questions: a session of a server user is not sent to a cluster.
pub struct Codec {
    lib: Lib,
    /// The catalog tables as a scheduler plans them.
    tables: HashMap<&'static str, Arc<dyn TableProvider>>,
    functions: HashMap<&'static str, Arc<dyn TableFunctionImpl>>,
    logical: Arc<dyn LogicalExtensionCodec>,
    physical: Arc<dyn PhysicalExtensionCodec>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({})", self.lib.library.location())
    }
}

fn malformed(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("a {what} from the cluster does not decode: {e}"))
}

impl Codec {
    /// The codec of a process serving `library`, wrapping `logical` and `physical` (Ballista's).
    pub async fn new(
        library: Arc<Library>,
        logical: Arc<dyn LogicalExtensionCodec>,
        physical: Arc<dyn PhysicalExtensionCodec>,
    ) -> Result<Codec> {
        let access = Arc::new(Access::owner());
        let shared = Tables::distributed(library.clone(), access.clone());
        let mut tables: HashMap<&'static str, Arc<dyn TableProvider>> = HashMap::new();
        for table in imagelake_engine::catalog::TABLES {
            tables.insert(table, Arc::new(CatalogTable::new(shared.clone(), table).await?));
        }
        let lib = Lib { library, access };
        let functions = functions::read_table_functions(&lib).into_iter().collect();
        Ok(Codec { lib, tables, functions, logical, physical })
    }

    /// A scheduler's session: its catalog tables and functions, for the read table functions
    /// that run SQL of their own while the scheduler plans.
    pub fn session_state(&self, config: SessionConfig) -> Result<SessionState> {
        let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
        let ctx = SessionContext::new_with_state(state);
        for (table, provider) in &self.tables {
            ctx.register_table(TableReference::bare(*table), provider.clone())?;
        }
        functions::register(&ctx, &self.lib);
        Ok(ctx.state())
    }

    fn location(&self) -> String {
        self.lib.library.location()
    }

    /// Refuses a plan made against another library than this process serves.
    fn check_library(&self, library: &str) -> Result<()> {
        if library == self.location() {
            return Ok(());
        }
        Err(DataFusionError::Plan(format!(
            "this cluster serves the library {}, and the question was asked of {library}",
            self.location()
        )))
    }

    fn ours(buf: &[u8]) -> Option<&[u8]> {
        buf.strip_prefix(MARK)
    }

    fn write(message: &impl Message, buf: &mut Vec<u8>) -> Result<()> {
        buf.extend_from_slice(MARK);
        message.encode(buf).map_err(|e| DataFusionError::Internal(format!("encoding a plan: {e}")))
    }

    fn decode_plan(
        &self,
        node: PlanNode,
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.check_library(&node.library)?;
        let schema = |s: Option<SchemaNode>| -> Result<Arc<Schema>> {
            let s = s.ok_or_else(|| malformed("plan", "a node without its schema"))?;
            Ok(Arc::new(Schema::try_from(&s).map_err(|e| malformed("schema", e))?))
        };
        let input = || inputs.first().cloned().ok_or_else(|| malformed("plan", "a node without its input"));
        match node.node.ok_or_else(|| malformed("plan", "an empty node"))? {
            Node::Fragments(f) => {
                let read = Read {
                    table: f.table,
                    version: f.version,
                    columns: f.columns,
                    filters: parse_exprs(&f.filters, ctx, self).map_err(|e| malformed("filter", e))?,
                    limit: f.limit.map(|l| l as usize),
                    groups: f.groups.into_iter().map(|g| g.fragments).collect(),
                    schema: schema(f.schema)?,
                };
                Ok(Arc::new(Fragments::new(self.lib.library.clone(), read)))
            }
            Node::Expand(e) => {
                let manifest = imagelake_engine::catalog::MANIFESTS
                    .iter()
                    .find(|m| **m == e.manifest)
                    .ok_or_else(|| malformed("plan", format!("no table {} is stored in segments", e.manifest)))?;
                let users = Users::later(self.lib.library.clone(), manifest, Arc::new(e.shown.into_iter().collect()));
                Ok(Expand::over(input()?, users, schema(e.schema)?))
            }
            Node::Visible(v) => {
                let projection = v.projection.into_iter().map(|p| p as usize).collect();
                Visible::over(input()?, Arc::new(v.readable.into_iter().collect()), projection)
            }
        }
    }
}

impl LogicalExtensionCodec for Codec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.logical.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.logical.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: Arc<Schema>,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let Some(ours) = Codec::ours(buf) else {
            return self.logical.try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        let node = TableNode::decode(ours).map_err(|e| malformed("table", e))?;
        self.check_library(&node.library)?;
        if !node.function {
            return self.tables.get(node.name.as_str()).cloned().ok_or_else(|| malformed("table", node.name));
        }
        let function = self.functions.get(node.name.as_str()).ok_or_else(|| malformed("function", &node.name))?;
        let args = parse_exprs(&node.args, ctx, self).map_err(|e| malformed("function's arguments", e))?;
        let state = SessionStateBuilder::new()
            .with_config(ctx.session_config().clone())
            .with_runtime_env(ctx.runtime_env())
            .build();
        function.call_with_args(TableFunctionArgs::new(&args, &state))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let library = self.location();
        let message = if let Some(table) = node.downcast_ref::<CatalogTable>() {
            TableNode { library, name: table.name().to_string(), function: false, args: Vec::new() }
        } else if let Some(called) = node.downcast_ref::<Called>() {
            let args = serialize_exprs(&called.args, self)?;
            TableNode { library, name: called.function.clone(), function: true, args }
        } else {
            return self.logical.try_encode_table_provider(table_ref, node, buf);
        };
        Codec::write(&message, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match functions::read_scalar_function(&self.lib, name) {
            Some(udf) => Ok(Arc::new(udf)),
            None => self.logical.try_decode_udf(name, buf),
        }
    }
}

impl PhysicalExtensionCodec for Codec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(ours) = Codec::ours(buf) else {
            return self.physical.try_decode(buf, inputs, ctx);
        };
        self.decode_plan(PlanNode::decode(ours).map_err(|e| malformed("plan", e))?, inputs, ctx)
    }

    fn try_encode(&self, node: Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>) -> Result<()> {
        let schema = |s: &Schema| -> Result<Option<SchemaNode>> { Ok(Some(s.try_into()?)) };
        let encoded = if let Some(f) = node.downcast_ref::<Fragments>() {
            let read = &f.read;
            Node::Fragments(FragmentsNode {
                table: read.table.clone(),
                version: read.version,
                columns: read.columns.clone(),
                filters: serialize_exprs(&read.filters, self)?,
                limit: read.limit.map(|l| l as u64),
                groups: read.groups.iter().map(|g| Group { fragments: g.clone() }).collect(),
                schema: schema(&read.schema)?,
            })
        } else if let Some(e) = node.downcast_ref::<Expand>() {
            let (manifest, shown) = e.users();
            Node::Expand(ExpandNode {
                manifest: manifest.to_string(),
                shown: shown.iter().copied().collect(),
                schema: schema(&e.schema())?,
            })
        } else if let Some(v) = node.downcast_ref::<Visible>() {
            let (readable, projection) = v.parts();
            Node::Visible(VisibleNode {
                readable: readable.iter().copied().collect(),
                projection: projection.iter().map(|p| *p as u64).collect(),
            })
        } else {
            return self.physical.try_encode(node, buf);
        };
        Codec::write(&PlanNode { library: self.location(), node: Some(encoded) }, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match functions::read_scalar_function(&self.lib, name) {
            Some(udf) => Ok(Arc::new(udf)),
            None => self.physical.try_decode_udf(name, buf),
        }
    }
}
