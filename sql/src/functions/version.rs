//! `version_cmp(a, b)`: -1, 0 or 1 as package version `a` sorts before, with or after `b`, by
//! Debian's rules (`dpkg --compare-versions`: epoch, then upstream version, then revision; `~`
//! sorts before anything, even the end). rpm and apk versions of ordinary form (`1.2.3-4`)
//! order the same way under these rules.

use datafusion::arrow::array::{Array, AsArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use std::cmp::Ordering;

pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb).then_with(|| compare_part(ua, ub)).then_with(|| compare_part(ra, rb))
}

/// `epoch:upstream-revision`; a missing epoch is 0 and a missing revision empty.
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(u64::MAX), rest),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// dpkg's `order`: `~` first, then the end of the string, letters, and other characters.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // The non-digit stretch, character by character.
        while a.first().is_some_and(|c| !c.is_ascii_digit()) || b.first().is_some_and(|c| !c.is_ascii_digit()) {
            let (wa, wb) = (weight(a.first().copied()), weight(b.first().copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            a = a.get(1..).unwrap_or_default();
            b = b.get(1..).unwrap_or_default();
        }
        // The digit stretch, as a number.
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (na, nb) = (digits(a), digits(b));
        let trim = |s: &[u8]| -> Vec<u8> { s.iter().skip_while(|c| **c == b'0').copied().collect() };
        let (da, db) = (trim(a.get(..na).unwrap_or_default()), trim(b.get(..nb).unwrap_or_default()));
        let by_number = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
        if by_number != Ordering::Equal {
            return by_number;
        }
        a = a.get(na..).unwrap_or_default();
        b = b.get(nb..).unwrap_or_default();
    }
    Ordering::Equal
}

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
            return datafusion::common::exec_err!("version_cmp(a, b) takes two versions");
        };
        let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
        let out: Int32Array = (0..args.number_rows)
            .map(|i| (a.is_valid(i) && b.is_valid(i)).then(|| compare_versions(a.value(i), b.value(i)) as i32))
            .collect();
        Ok(ColumnarValue::Array(std::sync::Arc::new(out)))
    }
}

pub fn version_cmp() -> ScalarUDF {
    let signature =
        Signature::one_of(vec![TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8])], Volatility::Immutable);
    ScalarUDF::from(VersionCmp { signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_dpkg_does() {
        // Pairs checked with `dpkg --compare-versions A lt B`.
        let less = [
            ("1.0", "1.1"),
            ("1.9", "1.10"),
            ("1.0~rc1", "1.0"),
            ("1.0", "1.0-1"),
            ("1.0-1", "1.0-2"),
            ("1:0.9", "2:0.1"),
            ("0.9", "1:0.1"),
            ("2.36-9+deb12u4", "2.36-9+deb12u10"),
            ("1.0a", "1.0b"),
            ("1.0", "1.0a"),
            ("1.0~", "1.0"),
            ("1.0+b1", "1.0.1"),
        ];
        for (a, b) in less {
            assert_eq!(compare_versions(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare_versions(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(compare_versions("1.01", "1.1"), Ordering::Equal);
        assert_eq!(compare_versions("0:1.0", "1.0"), Ordering::Equal);
    }
}
