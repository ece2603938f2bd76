//! Query results on a terminal or for scripts: an aligned table, CSV, or JSON.

use arrow::array::RecordBatch;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
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
                writer.write(b)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut *out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs)?;
            writer.finish()?;
            writeln!(out)?;
        }
    }
    Ok(())
}
