//! Metadata answers: catalogs, schemas and tables as the caller's session sees them (its
//! DataFusion catalog, `information_schema` included), table types, SqlInfo and the XDBC type
//! list (which Power BI asks for). arrow-flight's builders apply the request's filters.

use crate::results::wire_schema;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables, Nullable, Searchable, SqlInfo, SqlNullOrdering,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, SupportedSqlGrammar, XdbcDataType, XdbcDatetimeSubcode,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, InformationSchemaProvider};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use std::sync::{Arc, LazyLock};
use tonic::Status;

fn arrow_status(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("metadata: {e}"))
}

pub fn catalogs(ctx: &SessionContext, query: CommandGetCatalogs) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for name in ctx.catalog_names() {
        builder.append(name);
    }
    builder.build().map_err(arrow_status)
}

/// Every schema of the session, by catalog: the catalogs' own, and `information_schema`
/// where the session has it (DataFusion answers it beside the catalogs, not in them).
fn schemas(ctx: &SessionContext) -> Vec<(String, String, Arc<dyn SchemaProvider>)> {
    let state = ctx.state();
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else { continue };
        for schema_name in catalog.schema_names() {
            if let Some(schema) = catalog.schema(&schema_name) {
                out.push((catalog_name.clone(), schema_name, schema));
            }
        }
        if state.config().information_schema() {
            let info = InformationSchemaProvider::new(state.catalog_list().clone());
            out.push((catalog_name.clone(), INFORMATION_SCHEMA.to_string(), Arc::new(info) as Arc<dyn SchemaProvider>));
        }
    }
    out
}

pub fn db_schemas(ctx: &SessionContext, query: CommandGetDbSchemas) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for (catalog_name, schema_name, _) in schemas(ctx) {
        builder.append(catalog_name, schema_name);
    }
    builder.build().map_err(arrow_status)
}

/// DataFusion's table types under the names JDBC and ODBC use.
fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

pub const TABLE_TYPES: [&str; 3] = ["TABLE", "VIEW", "LOCAL TEMPORARY"];

pub async fn tables(ctx: &SessionContext, query: CommandGetTables) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for (catalog_name, schema_name, schema) in schemas(ctx) {
        let mut names = schema.table_names();
        names.sort();
        for table_name in names {
            let table = schema.table(&table_name).await.map_err(|e| crate::results::status(&e))?;
            let Some(table) = table else { continue };
            // The schema a `SELECT *` of the table streams.
            let table_schema = wire_schema(table.schema());
            builder
                .append(&catalog_name, &schema_name, &table_name, table_type_name(table.table_type()), &table_schema)
                .map_err(arrow_status)?;
        }
    }
    builder.build().map_err(arrow_status)
}

/// What the server tells of itself and its SQL.
pub static SQL_INFO: LazyLock<Result<SqlInfoData, String>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "imagelake");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow columnar format version (Schema.fbs), as the Flight SQL spec asks; arrow-rs 58.
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    // Commands (checkin, patch, gc, ...) change the library through SQL.
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // DataFusion folds unquoted identifiers to lower case and keeps quoted ones.
    b.append(SqlInfo::SqlIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32);
    b.append(SqlInfo::SqlQuotedIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    // NULLs sort last ascending, first descending: as the largest value.
    b.append(SqlInfo::SqlNullOrdering, SqlNullOrdering::SqlNullsSortedHigh as i32);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32) | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    // A bit mask of SupportedAnsi92SqlGrammarLevel (not exported by arrow-flight): entry SQL.
    b.append(SqlInfo::SqlAnsi92SupportedLevel, 1i32);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlBatchUpdatesSupported, true);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.build().map_err(|e| e.to_string())
});

pub fn sql_info() -> Result<&'static SqlInfoData, Status> {
    SQL_INFO.as_ref().map_err(|e| Status::internal(format!("SqlInfo: {e}")))
}

/// The SQL types DataFusion takes, for GetXdbcTypeInfo.
pub static XDBC: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    use XdbcDataType as X;
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types: [(&str, X, Option<i32>, Option<&str>, bool, Option<i32>); 14] = [
        ("BOOLEAN", X::XdbcBit, Some(1), None, false, None),
        ("TINYINT", X::XdbcTinyint, Some(3), None, false, Some(10)),
        ("SMALLINT", X::XdbcSmallint, Some(5), None, false, Some(10)),
        ("INTEGER", X::XdbcInteger, Some(10), None, false, Some(10)),
        ("BIGINT", X::XdbcBigint, Some(19), None, false, Some(10)),
        ("REAL", X::XdbcReal, Some(24), None, false, Some(2)),
        ("DOUBLE", X::XdbcDouble, Some(53), None, false, Some(2)),
        ("DECIMAL", X::XdbcDecimal, Some(38), None, false, Some(10)),
        ("VARCHAR", X::XdbcVarchar, None, Some("'"), true, None),
        ("BYTEA", X::XdbcVarbinary, None, None, false, None),
        ("DATE", X::XdbcDate, Some(10), Some("DATE '"), false, None),
        ("TIME", X::XdbcTime, Some(18), Some("TIME '"), false, None),
        ("TIMESTAMP", X::XdbcTimestamp, Some(29), Some("TIMESTAMP '"), false, None),
        ("INTERVAL", X::XdbcInterval, None, Some("INTERVAL '"), false, None),
    ];
    for (name, data_type, column_size, prefix, case_sensitive, radix) in types {
        let (sql_data_type, datetime_subcode) = match data_type {
            X::XdbcDate => (X::XdbcDatetime, Some(XdbcDatetimeSubcode::XdbcSubcodeYear)),
            X::XdbcTime => (X::XdbcDatetime, Some(XdbcDatetimeSubcode::XdbcSubcodeTime)),
            X::XdbcTimestamp => (X::XdbcDatetime, Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp)),
            // The proto's XDBC_SUBCODE_DATE is an alias of YEAR (1), which prost keeps.
            other => (other, None),
        };
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size,
            literal_prefix: prefix.map(Into::into),
            literal_suffix: prefix.map(|_| "'".into()),
            create_params: (name == "DECIMAL").then(|| vec!["precision".into(), "scale".into()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive,
            searchable: Searchable::Full,
            unsigned_attribute: radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: radix.map(|_| false),
            local_type_name: Some(name.into()),
            minimum_scale: (name == "DECIMAL").then_some(0),
            maximum_scale: (name == "DECIMAL").then_some(38),
            sql_data_type,
            datetime_subcode,
            num_prec_radix: radix,
            interval_precision: None,
        });
    }
    b.build().map_err(|e| e.to_string())
});

pub fn xdbc() -> Result<&'static XdbcTypeInfoData, Status> {
    XDBC.as_ref().map_err(|e| Status::internal(format!("XdbcTypeInfo: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_answers_build() {
        assert!(sql_info().is_ok());
        let xdbc = xdbc().unwrap();
        assert_eq!(xdbc.record_batch(None).unwrap().num_rows(), 14);
    }
}
