//! The codec of a cluster's plans (see the module docs): imagelake's tables, functions and plan
//! nodes as protobuf messages, everything else left to the codec it wraps (Ballista's).

use super::fragments::{Fragments, Read};
use super::{Called, Scoped};
use crate::access::Access;
use crate::functions::{self, Lib};
use crate::segmented::{Expand, Users};
use crate::tables::{CatalogTable, Tables};
use crate::visible::Visible;
use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::TableProvider;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::logical_plan::from_proto::parse_exprs;
use datafusion_proto::logical_plan::to_proto::serialize_exprs;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use datafusion_proto::protobuf::{LogicalExprNode, Schema as SchemaNode};
use imagelake_engine::Library;
use imagelake_engine::access::{Pattern, Principal, Right, User};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// Who asks; absent for the library's owner.
    #[prost(message, optional, tag = "5")]
    user: Option<UserNode>,
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

/// Who asks a question: a server user, or (absent) the library's owner.
#[derive(Clone, PartialEq, Message)]
struct UserNode {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bool, tag = "2")]
    admin: bool,
    #[prost(message, repeated, tag = "3")]
    grants: Vec<GrantNode>,
}

#[derive(Clone, PartialEq, Message)]
struct GrantNode {
    #[prost(string, tag = "1")]
    right: String,
    #[prost(string, tag = "2")]
    pattern: String,
}

/// A scalar function that reads for someone (`read_text`, `read_bytes`).
#[derive(Clone, PartialEq, Message)]
struct ReaderNode {
    #[prost(string, tag = "1")]
    library: String,
    #[prost(message, optional, tag = "2")]
    user: Option<UserNode>,
}

fn user_node(access: &Access) -> Option<UserNode> {
    match &access.principal {
        Principal::Owner => None,
        Principal::User(user) => Some(UserNode {
            name: user.name.clone(),
            admin: user.admin,
            grants: user
                .grants
                .iter()
                .map(|(right, pattern)| GrantNode { right: right.to_string(), pattern: pattern.to_string() })
                .collect(),
        }),
    }
}

fn principal(user: Option<UserNode>) -> Result<Principal> {
    let Some(user) = user else { return Ok(Principal::Owner) };
    let grants = user
        .grants
        .into_iter()
        .map(|g| Ok((Right::parse(&g.right)?, Pattern::parse(&g.pattern)?)))
        .collect::<imagelake_engine::Result<_>>()
        .map_err(|e| malformed("user", e))?;
    Ok(Principal::User(User { name: user.name, admin: user.admin, grants }))
}

/// What a scheduler or executor answers one principal with: their tables and functions.
struct Scope {
    lib: Lib,
    tables: Arc<Tables>,
    functions: HashMap<&'static str, Arc<dyn TableFunctionImpl>>,
}

/// The codec of one process of a cluster serving one library (see the module docs).
pub struct Codec {
    library: Arc<Library>,
    /// Each principal's scope, by user name (None for the owner), made again when their
    /// grants change.
    scopes: Mutex<HashMap<Option<String>, Arc<Scope>>>,
    logical: Arc<dyn LogicalExtensionCodec>,
    physical: Arc<dyn PhysicalExtensionCodec>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({})", self.library.location())
    }
}

fn malformed(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("a {what} from the cluster does not decode: {e}"))
}

impl Codec {
    /// The codec of a process serving `library`, wrapping `logical` and `physical` (Ballista's).
    pub fn new(
        library: Arc<Library>,
        logical: Arc<dyn LogicalExtensionCodec>,
        physical: Arc<dyn PhysicalExtensionCodec>,
    ) -> Codec {
        Codec { library, scopes: Mutex::default(), logical, physical }
    }

    /// The scope of the principal a message names.
    fn scope(&self, user: Option<UserNode>) -> Result<Arc<Scope>> {
        let principal = principal(user)?;
        let key = match &principal {
            Principal::Owner => None,
            Principal::User(user) => Some(user.name.clone()),
        };
        let mut scopes =
            self.scopes.lock().map_err(|_| DataFusionError::Internal("a codec's lock is poisoned".into()))?;
        if let Some(scope) = scopes.get(&key).filter(|s| s.lib.access.principal == principal) {
            return Ok(scope.clone());
        }
        let access = Arc::new(match principal {
            Principal::Owner => Access::owner(),
            // A cluster reads no host files for a server's user.
            user => Access { principal: user, data_roots: Some(Vec::new()) },
        });
        let lib = Lib { library: self.library.clone(), access };
        let tables = Tables::distributed(lib.library.clone(), lib.access.clone());
        let functions = functions::read_table_functions(&lib).into_iter().collect();
        let scope = Arc::new(Scope { lib, tables, functions });
        scopes.insert(key, scope.clone());
        Ok(scope)
    }

    fn location(&self) -> String {
        self.library.location()
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

    /// `read_text` and `read_bytes` with whom they read for; None for a function not ours.
    fn encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Option<Result<()>> {
        let access = functions::reads_for(node)?;
        Some(Codec::write(&ReaderNode { library: self.location(), user: user_node(access) }, buf))
    }

    /// One of imagelake's scalar functions: `read_text` and `read_bytes` reading for the
    /// principal their message names (never without one), `version_cmp` by its name alone;
    /// None for a function not ours.
    fn decode_udf(&self, name: &str, buf: &[u8]) -> Option<Result<Arc<ScalarUDF>>> {
        let lib = match Codec::ours(buf) {
            Some(ours) => {
                let scope = ReaderNode::decode(ours).map_err(|e| malformed("function", e)).and_then(|node| {
                    self.check_library(&node.library)?;
                    self.scope(node.user)
                });
                match scope {
                    Ok(scope) => scope.lib.clone(),
                    Err(e) => return Some(Err(e)),
                }
            }
            None => return functions::pure_scalar_function(name).map(|udf| Ok(Arc::new(udf))),
        };
        functions::read_scalar_function(&lib, name).map(|udf| Ok(Arc::new(udf)))
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
                Ok(Arc::new(Fragments::new(self.library.clone(), read)))
            }
            Node::Expand(e) => {
                let manifest = imagelake_engine::catalog::MANIFESTS
                    .iter()
                    .find(|m| **m == e.manifest)
                    .ok_or_else(|| malformed("plan", format!("no table {} is stored in segments", e.manifest)))?;
                let users = Users::later(self.library.clone(), manifest, Arc::new(e.shown.into_iter().collect()));
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
        let scope = self.scope(node.user)?;
        if !node.function {
            let table = imagelake_engine::catalog::TABLES
                .iter()
                .find(|t| **t == node.name)
                .ok_or_else(|| malformed("table", &node.name))?;
            return Ok(Arc::new(CatalogTable::with_schema(scope.tables.clone(), table, schema)));
        }
        let function = scope.functions.get(node.name.as_str()).ok_or_else(|| malformed("function", &node.name))?;
        let args = parse_exprs(&node.args, ctx, self).map_err(|e| malformed("function's arguments", e))?;
        let state = SessionStateBuilder::new()
            .with_config(ctx.session_config().clone())
            .with_runtime_env(ctx.runtime_env())
            .build();
        let table = function.call_with_args(TableFunctionArgs::new(&args, &state))?;
        Ok(Arc::new(Scoped { table, lib: scope.lib.clone() }))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let library = self.location();
        let message = if let Some(table) = node.downcast_ref::<CatalogTable>() {
            let (name, user) = (table.name().to_string(), user_node(table.access()));
            TableNode { library, name, function: false, args: Vec::new(), user }
        } else if let Some(called) = node.downcast_ref::<Called>() {
            let args = serialize_exprs(&called.args, self)?;
            TableNode { library, name: called.function.clone(), function: true, args, user: user_node(&called.access) }
        } else {
            return self.logical.try_encode_table_provider(table_ref, node, buf);
        };
        Codec::write(&message, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.decode_udf(name, buf).unwrap_or_else(|| self.logical.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.encode_udf(node, buf).unwrap_or_else(|| self.logical.try_encode_udf(node, buf))
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
        self.decode_udf(name, buf).unwrap_or_else(|| self.physical.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.encode_udf(node, buf).unwrap_or_else(|| self.physical.try_encode_udf(node, buf))
    }
}
