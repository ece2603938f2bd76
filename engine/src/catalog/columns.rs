//! Reading catalog rows by column name. A scan reads the columns a question needs; a row type
//! decodes whichever of its columns the batch holds, each found by name and checked for its
//! type, and leaves the others at their defaults (0, empty, None). A column of another type
//! than the schema says is an error naming the table and the column, never a wrong value read
//! from the column next to it.

use crate::{Error, Result};
use arrow::array::{Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray, TimestampNanosecondArray};

/// The columns of one record batch of `table`, by name.
#[derive(Clone, Copy)]
pub(crate) struct Columns<'a> {
    table: &'a str,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(table: &'a str, batch: &'a RecordBatch) -> Columns<'a> {
        Columns { table, batch }
    }

    pub(crate) fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The column `name`, if the batch holds it; an error if it is of another type.
    fn get<T: Array + 'static>(&self, name: &str, type_name: &str) -> Result<Option<&'a T>> {
        let Some(column) = self.batch.column_by_name(name) else { return Ok(None) };
        let typed = column.as_any().downcast_ref::<T>();
        let wrong = || Error::Catalog(format!("{}.{name} is {}, not {type_name}", self.table, column.data_type()));
        typed.map(Some).ok_or_else(wrong)
    }

    pub(crate) fn i64(&self, name: &str) -> Result<Option<&'a Int64Array>> {
        self.get(name, "Int64")
    }

    pub(crate) fn str(&self, name: &str) -> Result<Option<&'a StringArray>> {
        self.get(name, "Utf8")
    }

    pub(crate) fn time(&self, name: &str) -> Result<Option<&'a TimestampNanosecondArray>> {
        self.get(name, "Timestamp(ns)")
    }

    pub(crate) fn list(&self, name: &str) -> Result<Option<&'a ListArray>> {
        self.get(name, "List")
    }

    /// A text column whose values are the words of an enum (`ImageState`, `ExtentKind`, ...);
    /// a word the enum does not know is an error naming it.
    pub(crate) fn words<T>(&self, name: &str, parse: fn(&str) -> Option<T>) -> Result<Option<Vec<T>>> {
        let Some(column) = self.str(name)? else { return Ok(None) };
        let words = (0..column.len()).map(|r| {
            let word = if column.is_valid(r) { column.value(r) } else { "" };
            parse(word).ok_or_else(|| Error::Catalog(format!("{}.{name} holds {word:?}", self.table)))
        });
        words.collect::<Result<Vec<T>>>().map(Some)
    }

    /// The struct items of a list column at `row` (`files.xattrs`, `files.extent_map`).
    pub(crate) fn items(&self, list: &ListArray, name: &str, row: usize) -> Result<StructArray> {
        let items = list.value(row);
        let items = items.as_any().downcast_ref::<StructArray>();
        items.cloned().ok_or_else(|| Error::Catalog(format!("{}.{name} is not a list of structs", self.table)))
    }

    /// A field of a struct column, by name and type.
    pub(crate) fn field<'s, T: Array + 'static>(&self, items: &'s StructArray, name: &str) -> Result<&'s T> {
        let field = items.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<T>());
        field.ok_or_else(|| Error::Catalog(format!("{}: no item field {name} of the expected type", self.table)))
    }
}

/// A value of a column that may be absent from the batch (then 0) and is never null.
pub(crate) fn int(column: Option<&Int64Array>, row: usize) -> i64 {
    column.map_or(0, |c| c.value(row))
}

/// A time (nanoseconds) of a column that may be absent from the batch (then 0).
pub(crate) fn time(column: Option<&TimestampNanosecondArray>, row: usize) -> i64 {
    column.map_or(0, |c| c.value(row))
}

/// A text of a column that may be absent from the batch (then empty) and is never null.
pub(crate) fn text(column: Option<&StringArray>, row: usize) -> String {
    column.map_or_else(String::new, |c| c.value(row).to_string())
}

/// A value, or None where it is null or the column absent.
pub(crate) fn opt_int(column: Option<&Int64Array>, row: usize) -> Option<i64> {
    column.and_then(|c| c.is_valid(row).then(|| c.value(row)))
}

/// A text, or None where it is null or the column absent.
pub(crate) fn opt_text(column: Option<&StringArray>, row: usize) -> Option<String> {
    column.and_then(|c| c.is_valid(row).then(|| c.value(row).to_string()))
}

/// A time, or None where it is null or the column absent.
pub(crate) fn opt_time(column: Option<&TimestampNanosecondArray>, row: usize) -> Option<i64> {
    column.and_then(|c| c.is_valid(row).then(|| c.value(row)))
}
