//! Tab completion in the shell: keywords, tables, columns, functions, image names (inside
//! '...'), meta-commands and their arguments, and file names where a path is expected.

use super::split::is_word;
use datafusion::prelude::SessionContext;
use rustyline::Helper;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use std::collections::BTreeSet;

const META: [&str; 9] = [".exit", ".help", ".images", ".mode", ".output", ".quit", ".schema", ".tables", ".timer"];
const MODES: [&str; 4] = ["csv", "json", "line", "table"];

const KEYWORDS: &[&str] = &[
    "ALL",
    "AND",
    "ANALYZE",
    "ANY",
    "ARRAY",
    "AS",
    "ASC",
    "BETWEEN",
    "BIGINT",
    "BOOLEAN",
    "BY",
    "CASE",
    "CAST",
    "COPY",
    "COUNT",
    "CREATE",
    "CROSS",
    "CURRENT_DATE",
    "CURRENT_TIMESTAMP",
    "DATE",
    "DESC",
    "DESCRIBE",
    "DISTINCT",
    "DOUBLE",
    "DROP",
    "ELSE",
    "END",
    "EXCEPT",
    "EXISTS",
    "EXPLAIN",
    "EXTERNAL",
    "FALSE",
    "FILTER",
    "FIRST",
    "FOLLOWING",
    "FORMAT",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "ILIKE",
    "IN",
    "INNER",
    "INSERT",
    "INTEGER",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "IS",
    "JOIN",
    "LAST",
    "LATERAL",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOCATION",
    "NATURAL",
    "NOT",
    "NULL",
    "NULLS",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "PARQUET",
    "PARTITION",
    "PRECEDING",
    "QUALIFY",
    "RANGE",
    "RECURSIVE",
    "REPLACE",
    "RIGHT",
    "ROWS",
    "SELECT",
    "SET",
    "SHOW",
    "SIMILAR",
    "STORED",
    "TABLE",
    "TABLES",
    "THEN",
    "TIMESTAMP",
    "TO",
    "TRUE",
    "TRY_CAST",
    "UNBOUNDED",
    "UNION",
    "UNNEST",
    "USING",
    "VALUES",
    "VARCHAR",
    "VIEW",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

/// What the shell completes besides keywords, as of the last statement.
#[derive(Debug, Default)]
pub struct Names {
    /// `public` tables bare, the others qualified (`internal.files`).
    pub tables: BTreeSet<String>,
    pub columns: BTreeSet<String>,
    pub functions: BTreeSet<String>,
    pub images: BTreeSet<String>,
}

impl Names {
    pub async fn of(ctx: &SessionContext) -> Names {
        let state = ctx.state();
        let functions = (state.scalar_functions().keys())
            .chain(state.aggregate_functions().keys())
            .chain(state.window_functions().keys())
            .chain(state.table_functions().keys())
            .cloned()
            .collect();
        let tables = strings(ctx, "SELECT table_schema, table_name FROM information_schema.tables")
            .await
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [schema, table] if schema == "public" => Some(table.clone()),
                [schema, table] => Some(format!("{schema}.{table}")),
                _ => None,
            })
            .collect();
        let columns = first_column(ctx, "SELECT DISTINCT column_name FROM information_schema.columns").await;
        let images = first_column(ctx, "SELECT DISTINCT name FROM images").await;
        Names { tables, columns, functions, images }
    }

    fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = line.get(..pos).unwrap_or(line);
        let lead = before.len() - before.trim_start().len();
        let command = &before[lead..];
        if command.starts_with('.') {
            let Some((name, _)) = command.split_once(char::is_whitespace) else {
                return (lead, matching(META.iter().copied(), command));
            };
            let start = after_last(before, char::is_whitespace);
            let prefix = &before[start..];
            let list: Vec<&str> = match name {
                ".schema" => self.tables.iter().map(String::as_str).collect(),
                ".mode" => MODES.to_vec(),
                ".timer" => vec!["off", "on"],
                _ => Vec::new(),
            };
            return (start, matching(list.into_iter(), prefix));
        }
        if let Some((open, quote)) = open_quote(before) {
            let start = open + 1;
            let prefix = &before[start..];
            let close =
                if line.get(pos..).unwrap_or("").starts_with(quote) { String::new() } else { quote.to_string() };
            let names: Box<dyn Iterator<Item = &str>> = match quote {
                '\'' => Box::new(self.images.iter().map(String::as_str)),
                '"' => Box::new(self.tables.iter().chain(&self.columns).map(String::as_str)),
                _ => Box::new(std::iter::empty()),
            };
            let found = matching(names, prefix).into_iter().map(|n| format!("{n}{close}")).collect();
            return (start, found);
        }
        let start = after_last(before, |c| !(is_word(c) || c == '.'));
        let word = &before[start..];
        if let Some((qualifier, prefix)) = word.rsplit_once('.') {
            let start = before.len() - prefix.len();
            let schema = format!("{}.", qualifier.to_lowercase());
            let tables: Vec<&str> = self.tables.iter().filter_map(|t| t.strip_prefix(schema.as_str())).collect();
            return if tables.is_empty() {
                (start, matching(self.columns.iter().map(String::as_str), prefix))
            } else {
                (start, matching(tables.into_iter(), prefix))
            };
        }
        let previous = before[..start].trim_end();
        let previous = &previous[after_last(previous, |c| !is_word(c))..];
        if ["FROM", "JOIN", "INTO", "TABLE", "DESCRIBE"].iter().any(|k| k.eq_ignore_ascii_case(previous)) {
            return (start, matching(self.tables.iter().map(String::as_str), word));
        }
        if word.is_empty() {
            return (start, Vec::new());
        }
        let upper = word.chars().any(char::is_uppercase);
        let keywords =
            KEYWORDS.iter().map(|k| if upper { k.to_string() } else { k.to_lowercase() }).collect::<Vec<_>>();
        let names = (self.tables.iter().chain(&self.columns).chain(&self.functions)).map(String::as_str);
        (start, matching(keywords.iter().map(String::as_str).chain(names), word))
    }
}

/// The byte offset just after the last character of `text` that `stop` accepts (0 if none).
fn after_last(text: &str, stop: impl Fn(char) -> bool) -> usize {
    text.char_indices().rev().find(|&(_, c)| stop(c)).map_or(0, |(i, c)| i + c.len_utf8())
}

/// `names` that start with `prefix`, ignoring case, sorted and without duplicates.
fn matching<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<String> {
    let prefix = prefix.to_lowercase();
    let found: BTreeSet<String> = names.filter(|n| n.to_lowercase().starts_with(&prefix)).map(str::to_string).collect();
    found.into_iter().collect()
}

/// The byte offset and kind of the quote `text` ends inside, if it does.
fn open_quote(text: &str) -> Option<(usize, char)> {
    let mut open: Option<(usize, char)> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match open {
            Some((_, q)) if c == q => {
                if chars.peek().map(|&(_, n)| n) == Some(q) {
                    chars.next();
                } else {
                    open = None;
                }
            }
            Some(_) => {}
            None if c == '\'' || c == '"' => open = Some((i, c)),
            None if c == '-' && chars.peek().map(|&(_, n)| n) == Some('-') => return None,
            None => {}
        }
    }
    open
}

async fn first_column(ctx: &SessionContext, sql: &str) -> BTreeSet<String> {
    strings(ctx, sql).await.into_iter().filter_map(|row| row.into_iter().next()).collect()
}

/// The rows of a query as text (nothing if it fails: completion is best effort).
async fn strings(ctx: &SessionContext, sql: &str) -> Vec<Vec<String>> {
    let Ok(frame) = ctx.sql(sql).await else { return Vec::new() };
    let Ok(batches) = frame.collect().await else { return Vec::new() };
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|c| arrow::util::display::array_value_to_string(c, row).unwrap_or_default())
                .collect();
            rows.push(values);
        }
    }
    rows
}

pub struct Completion {
    pub names: Names,
    pub files: FilenameCompleter,
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        // File names: after .output, and in a string that starts like a path (COPY ... TO '/tmp/x').
        let path_string = open_quote(before)
            .is_some_and(|(open, _)| ["/", "./", "../", "~"].iter().any(|p| before[open + 1..].starts_with(p)));
        if path_string || before.trim_start().starts_with(".output ") {
            return self.files.complete(line, pos, ctx);
        }
        let (start, found) = self.names.complete(line, pos);
        Ok((start, found.into_iter().map(|n| Pair { display: n.clone(), replacement: n }).collect()))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_by_context() {
        let names = Names {
            tables: ["images", "files", "internal.files"].iter().map(|s| s.to_string()).collect(),
            columns: ["image_id", "content_hash", "name"].iter().map(|s| s.to_string()).collect(),
            functions: ["concat", "compare"].iter().map(|s| s.to_string()).collect(),
            images: ["debian", "alpine"].iter().map(|s| s.to_string()).collect(),
        };
        let at_end = |line: &str| names.complete(line, line.len());
        assert_eq!(at_end("SELECT * FROM ima"), (14, vec!["images".to_string()]));
        assert_eq!(at_end("sel"), (0, vec!["select".to_string()]));
        assert_eq!(at_end("SEL"), (0, vec!["SELECT".to_string()]));
        assert_eq!(at_end("SELECT conte"), (7, vec!["content_hash".to_string()]));
        assert_eq!(at_end("SELECT compare('deb"), (16, vec!["debian'".to_string()]));
        assert_eq!(names.complete("x = 'al'", 7), (5, vec!["alpine".to_string()]));
        assert_eq!(at_end(".sch"), (0, vec![".schema".to_string()]));
        assert_eq!(at_end(".mode c"), (6, vec!["csv".to_string()]));
        assert_eq!(at_end("SELECT * FROM internal.fi"), (23, vec!["files".to_string()]));
        assert_eq!(at_end("SELECT f.conte"), (9, vec!["content_hash".to_string()]));
        assert_eq!(at_end("SELECT "), (7, Vec::<String>::new()));
        // Separators of more than one byte.
        assert_eq!(at_end("SELECT\u{3000}ima"), (9, vec!["image_id".to_string(), "images".to_string()]));
        assert_eq!(at_end(".schema\u{3000}fi"), (10, vec!["files".to_string()]));
        assert_eq!(at_end("SELECT «»ima"), (11, vec!["image_id".to_string(), "images".to_string()]));
    }
}
