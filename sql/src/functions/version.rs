//! `version_cmp(a, b [, manager])`: -1, 0 or 1 as package version `a` sorts before, with or
//! after `b`, by the order of `manager` (`'dpkg'`, the default; `'rpm'`; `'apk'`), as
//! `packages.manager` names it: `version_cmp(p.version, '3.0.11-1', p.manager)`. An unknown
//! manager is an error; a NULL argument gives NULL.

use datafusion::arrow::array::{Array, AsArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use imagelake_connectors::packages::versions;

#[derive(Debug, PartialEq, Eq, Hash)]
struct VersionCmp {
    signature: Signature,
}

impl ScalarUDFImpl for VersionCmp {
    fn name(&self) -> &str {
        "version_cmp"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (Some(a), Some(b)) = (arrays.first(), arrays.get(1)) else {
            return exec_err!("version_cmp(a, b [, manager]) takes two versions");
        };
        let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
        let manager = arrays.get(2).map(|m| m.as_string::<i32>());
        let mut out = Int32Array::builder(args.number_rows);
        for i in 0..args.number_rows {
            let manager = match manager {
                Some(m) if m.is_null(i) => None,
                Some(m) => Some(m.value(i)),
                None => Some("dpkg"),
            };
            let (Some(manager), true, true) = (manager, a.is_valid(i), b.is_valid(i)) else {
                out.append_null();
                continue;
            };
            match versions::compare(manager, a.value(i), b.value(i)) {
                Some(order) => out.append_value(order as i32),
                None => return exec_err!("version_cmp: no package manager {manager:?} (dpkg, rpm or apk)"),
            }
        }
        Ok(ColumnarValue::Array(std::sync::Arc::new(out.finish())))
    }
}

pub fn version_cmp() -> ScalarUDF {
    let text = |n| TypeSignature::Exact(vec![DataType::Utf8; n]);
    let signature = Signature::one_of(vec![text(2), text(3)], Volatility::Immutable);
    ScalarUDF::from(VersionCmp { signature })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn compares_by_the_managers_order() {
        let ctx = SessionContext::new();
        ctx.register_udf(super::version_cmp());
        let sql = "SELECT version_cmp('1.0~rc1', '1.0'), version_cmp('1.0', '1.0-1', 'rpm'), \
                   version_cmp('1.2_rc1', '1.2', 'apk'), version_cmp('1.2_p1', '1.2', 'apk'), \
                   version_cmp('2:1', '10:0', 'dpkg'), version_cmp('1.0', '1.1', NULL), version_cmp(NULL, '1')";
        let batch = &ctx.sql(sql).await.unwrap().collect().await.unwrap()[0];
        let values: Vec<String> = batch.columns().iter().map(|c| array_value_to_string(c, 0).unwrap()).collect();
        assert_eq!(values, ["-1", "-1", "-1", "1", "-1", "", ""]);
        let unknown = ctx.sql("SELECT version_cmp('1', '2', 'pip')").await.unwrap().collect().await;
        assert!(unknown.unwrap_err().to_string().contains("no package manager \"pip\""));
    }
}
