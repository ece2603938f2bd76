//! Query results on a terminal or for scripts: an aligned table, CSV, JSON, or one
//! `column = value` line per column (`line`, like sqlite's and DuckDB's `.mode line`).

use arrow::array::{Array, RecordBatch};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Line,
}

pub fn write(out: &mut dyn Write, batches: &[RecordBatch], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(batches)?)?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            for b in batches {
                writer.write(&flatten_nested(b)?)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut *out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs)?;
            writer.finish()?;
            writeln!(out)?;
        }
        Format::Line => write_lines(out, batches)?,
    }
    Ok(())
}

/// One `column = value` line per column, names right-aligned, a blank line between rows.
fn write_lines(out: &mut dyn Write, batches: &[RecordBatch]) -> anyhow::Result<()> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut first = true;
    for batch in batches {
        let schema = batch.schema();
        let width = schema.fields().iter().map(|f| f.name().chars().count()).max().unwrap_or(0);
        let formatters =
            batch.columns().iter().map(|c| ArrayFormatter::try_new(c, &options)).collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            if !first {
                writeln!(out)?;
            }
            first = false;
            for (field, formatter) in schema.fields().iter().zip(&formatters) {
                writeln!(out, "{:>width$} = {}", field.name(), formatter.value(row))?;
            }
        }
    }
    Ok(())
}

/// CSV has no lists or structs: render such columns as the text the table format shows.
fn flatten_nested(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use std::sync::Arc;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = ArrayFormatter::try_new(column, &FormatOptions::default())?;
            let text: StringArray =
                (0..column.len()).map(|i| column.is_valid(i).then(|| formatter.value(i).to_string())).collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}
