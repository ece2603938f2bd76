//! `imagelake sql`: SQL from a command line, a script, standard input, or an interactive shell.
//!
//! Input is cut into statements by [`Splitter`], which knows quotes and comments, so that a
//! statement may span lines and a line may hold several. DataFusion parses and runs each
//! statement on its own, padded with the newlines and spaces that precede it, so that the
//! parser's "Line: X, Column: Y" is a position in the input. A line starting with `.` between
//! statements is a meta-command (`.help` lists them).
//!
//! The shell reads lines with rustyline: history in `$IMAGELAKE_HISTORY` (else
//! `~/.imagelake_history`), saved after each entry; completion of keywords, tables, columns,
//! functions, image names and meta-commands; Ctrl-C cancels a running query.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::ValueEnum;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::parser::ParserError;
use imagelake_sql::Session;
use crate::output::{self, Format};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, Helper};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub const PROMPT: &str = "imagelake> ";
pub const CONTINUATION: &str = "      ..> ";

/// Where the statements come from.
pub enum Input {
    /// `-c '...'`.
    Command(String),
    /// `imagelake sql FILE.sql`.
    File(PathBuf),
    /// A script on standard input (not a terminal).
    Stdin,
    /// The interactive shell.
    Terminal,
}

/// Runs `input` in `session`. A script stops at its first error, returned with its line.
pub async fn run(
    session: Arc<Session>,
    input: Input,
    format: Format,
    library: &Path,
    stdout: &mut dyn Write,
) -> anyhow::Result<()> {
    // Planning errors then carry the position of what they are about ("No field named x").
    let _ = session.context().sql("SET datafusion.sql_parser.collect_spans = true").await;
    let interactive = matches!(input, Input::Terminal);
    let mut shell = Shell { session, format, timer: false, stdout, output: None, interactive };
    match input {
        Input::Command(text) => shell.script(&text, None).await,
        Input::File(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            shell.script(&text, Some(&path.display().to_string())).await
        }
        Input::Stdin => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| anyhow::anyhow!("cannot read stdin: {e}"))?;
            shell.script(&text, None).await
        }
        Input::Terminal => shell.interact(library).await,
    }
}

/// One statement of the input and where it starts (1-based line and column, in characters).
#[derive(Debug, PartialEq, Eq)]
struct Statement {
    text: String,
    line: usize,
    column: usize,
}

impl Statement {
    /// The text preceded by as many newlines and spaces as precede it in the input, so that
    /// the positions the parser reports are the input's.
    fn padded(&self) -> String {
        let mut s = "\n".repeat(self.line.saturating_sub(1));
        s.push_str(&" ".repeat(self.column.saturating_sub(1)));
        s.push_str(&self.text);
        s
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Item {
    Meta { text: String, line: usize },
    Sql(Statement),
}

/// Where the lexer is at the end of what it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Code,
    /// Inside '...', "..." or `...`; `backslash` for E'...' strings.
    Quote { close: char, backslash: bool },
    /// Inside /* ... */ (they nest).
    Comment { depth: u32 },
}

/// Cuts lines into statements at `;` outside quotes and comments.
#[derive(Debug, Default)]
struct Splitter {
    lex: Lex,
    text: String,
    start: Option<(usize, usize)>,
}

impl Splitter {
    /// Between statements: no statement begun, no quote or comment open.
    fn is_idle(&self) -> bool {
        self.start.is_none() && self.lex == Lex::Code
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn keep(&mut self, s: &str) {
        if self.start.is_some() {
            self.text.push_str(s);
        }
    }

    /// Feeds line number `number`; returns the meta-command or the statements it completes.
    fn line(&mut self, line: &str, number: usize) -> Vec<Item> {
        if self.is_idle() && line.trim_start().starts_with('.') {
            return vec![Item::Meta { text: line.trim().to_string(), line: number }];
        }
        let chars: Vec<char> = line.chars().collect();
        let mut items = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match self.lex {
                Lex::Code => match c {
                    '-' if next == Some('-') => {
                        let rest: String = chars[i..].iter().collect();
                        self.keep(&rest);
                        break;
                    }
                    '/' if next == Some('*') => {
                        self.lex = Lex::Comment { depth: 1 };
                        self.keep("/*");
                        i += 2;
                        continue;
                    }
                    ';' => {
                        if let Some((line, column)) = self.start.take() {
                            items.push(Item::Sql(Statement { text: std::mem::take(&mut self.text), line, column }));
                        }
                    }
                    c if c.is_whitespace() => {
                        if self.start.is_some() {
                            self.text.push(c);
                        }
                    }
                    c => {
                        if self.start.is_none() {
                            self.start = Some((number, i + 1));
                        }
                        if matches!(c, '\'' | '"' | '`') {
                            let escapes = c == '\''
                                && i >= 1
                                && matches!(chars[i - 1], 'e' | 'E')
                                && (i < 2 || !is_word(chars[i - 2]));
                            self.lex = Lex::Quote { close: c, backslash: escapes };
                        }
                        self.text.push(c);
                    }
                },
                Lex::Quote { close, backslash } => {
                    self.text.push(c);
                    if backslash && c == '\\' {
                        if let Some(n) = next {
                            self.text.push(n);
                            i += 2;
                            continue;
                        }
                    } else if c == close {
                        if next == Some(close) {
                            self.text.push(close);
                            i += 2;
                            continue;
                        }
                        self.lex = Lex::Code;
                    }
                }
                Lex::Comment { depth } => {
                    if c == '*' && next == Some('/') {
                        self.keep("*/");
                        self.lex = if depth <= 1 { Lex::Code } else { Lex::Comment { depth: depth - 1 } };
                        i += 2;
                        continue;
                    }
                    if c == '/' && next == Some('*') {
                        self.keep("/*");
                        self.lex = Lex::Comment { depth: depth + 1 };
                        i += 2;
                        continue;
                    }
                    if self.start.is_some() {
                        self.text.push(c);
                    }
                }
            }
            i += 1;
        }
        if self.start.is_some() {
            self.text.push('\n');
        }
        items
    }

    /// The end of the input: what is left is a statement without its `;`.
    fn finish(&mut self) -> Option<Statement> {
        let statement = self.start.map(|(line, column)| Statement {
            text: std::mem::take(&mut self.text).trim_end().to_string(),
            line,
            column,
        });
        self.reset();
        statement
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

enum Flow {
    Continue,
    Quit,
}

/// Why an item did not complete.
enum Failure {
    /// An error, with the line of its statement (or of its position, with the column).
    Error { line: usize, column: Option<usize>, message: String },
    /// Ctrl-C while the query ran.
    Cancelled,
}

impl Failure {
    fn at(line: usize, message: impl Into<String>) -> Self {
        Failure::Error { line, column: None, message: message.into() }
    }
}

struct Shell<'a> {
    session: Arc<Session>,
    format: Format,
    timer: bool,
    stdout: &'a mut dyn Write,
    /// `.output FILE`: results go there.
    output: Option<std::fs::File>,
    interactive: bool,
}

impl Shell<'_> {
    /// Runs a script, stopping at the first error.
    async fn script(&mut self, text: &str, name: Option<&str>) -> anyhow::Result<()> {
        let mut splitter = Splitter::default();
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate() {
            items.extend(splitter.line(line, i + 1));
            for item in items.drain(..) {
                if let Flow::Quit = self.item(&item).await.map_err(|f| script_error(name, f))? {
                    return Ok(());
                }
            }
        }
        if let Some(statement) = splitter.finish() {
            self.item(&Item::Sql(statement)).await.map_err(|f| script_error(name, f))?;
        }
        Ok(())
    }

    async fn item(&mut self, item: &Item) -> Result<Flow, Failure> {
        match item {
            Item::Meta { text, line } => self.meta(text).await.map_err(|f| match f {
                Failure::Error { message, .. } => Failure::at(*line, message),
                cancelled => cancelled,
            }),
            Item::Sql(statement) => {
                let started = Instant::now();
                let sql = statement.padded();
                let imagelake_sql::Answer { schema, batches } = self.query(sql, statement.line).await?;
                // Statements such as CREATE VIEW have no columns: nothing to print.
                if let Some(schema) = schema.filter(|s| !s.fields().is_empty()) {
                    self.print(schema, batches).map_err(|e| Failure::at(statement.line, format!("{e:#}")))?;
                }
                if self.timer {
                    let _ = writeln!(self.stdout, "Run Time: {:.3} s", started.elapsed().as_secs_f64());
                    let _ = self.stdout.flush();
                }
                Ok(Flow::Continue)
            }
        }
    }

    /// Plans and runs one statement in a task of its own; in the shell, Ctrl-C drops it.
    async fn query(&mut self, sql: String, line: usize) -> Result<imagelake_sql::Answer, Failure> {
        let session = self.session.clone();
        let mut task = tokio::spawn(async move { session.run(&sql).await });
        let joined = if self.interactive {
            tokio::select! {
                joined = &mut task => joined,
                Ok(()) = tokio::signal::ctrl_c() => {
                    task.abort();
                    return Err(Failure::Cancelled);
                }
            }
        } else {
            task.await
        };
        match joined {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => {
                let (position, message) = describe(&e);
                Err(match position {
                    Some((l, c)) => Failure::Error { line: l, column: Some(c), message },
                    None => Failure::at(line, message),
                })
            }
            Err(e) if e.is_panic() => Err(Failure::at(line, "internal error: the query panicked")),
            Err(e) => Err(Failure::at(line, format!("the query did not finish: {e}"))),
        }
    }

    fn print(&mut self, schema: SchemaRef, mut batches: Vec<RecordBatch>) -> anyhow::Result<()> {
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        match &mut self.output {
            Some(file) => {
                output::write(file, &batches, self.format)?;
                file.flush()?;
            }
            None => {
                output::write(self.stdout, &batches, self.format)?;
                self.stdout.flush()?;
            }
        }
        Ok(())
    }

    /// Runs a query of a meta-command and prints its result; `Ok(false)` if it has no rows.
    async fn show(&mut self, sql: String) -> Result<bool, Failure> {
        let batches = self.query(sql, 0).await?.batches;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if let Some(schema) = batches.first().map(|b| b.schema())
            && rows > 0
        {
            self.print(schema, batches).map_err(|e| Failure::at(0, format!("{e:#}")))?;
        }
        Ok(rows > 0)
    }

    async fn meta(&mut self, text: &str) -> Result<Flow, Failure> {
        let text = text.trim().trim_end_matches(';').trim_end();
        let (name, arg) = match text.split_once(char::is_whitespace) {
            Some((name, arg)) => (name, arg.trim()),
            None => (text, ""),
        };
        let fail = |message: String| Err(Failure::at(0, message));
        match name {
            ".help" => {
                let _ = self.stdout.write_all(HELP.as_bytes());
                let _ = self.stdout.flush();
            }
            ".quit" | ".exit" => return Ok(Flow::Quit),
            ".tables" => {
                self.show(
                    "SELECT table_name AS name FROM information_schema.tables \
                     WHERE table_schema = 'public' ORDER BY table_name"
                        .into(),
                )
                .await?;
            }
            ".schema" if arg.is_empty() => {
                self.show(
                    "SELECT table_name AS \"table\", column_name AS \"column\", data_type AS type, \
                     is_nullable AS nullable FROM information_schema.columns \
                     WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
                        .into(),
                )
                .await?;
            }
            ".schema" => {
                let (schema, table) = arg.split_once('.').unwrap_or(("public", arg));
                let sql = format!(
                    "SELECT column_name AS \"column\", data_type AS type, is_nullable AS nullable \
                     FROM information_schema.columns WHERE lower(table_schema) = lower({}) \
                     AND lower(table_name) = lower({}) ORDER BY ordinal_position",
                    quote(schema),
                    quote(table)
                );
                if !self.show(sql).await? {
                    return fail(format!("no table named {arg} (.tables lists them)"));
                }
            }
            ".images" => {
                self.show(
                    "SELECT name, version, image_id, created_at, \
                     nullif(concat_ws(' ', os_name, os_version), '') AS os \
                     FROM images ORDER BY name, version"
                        .into(),
                )
                .await?;
            }
            ".timer" => match arg {
                "on" => self.timer = true,
                "off" => self.timer = false,
                _ => return fail(format!(".timer takes on or off, not '{arg}'")),
            },
            ".mode" => match Format::from_str(arg, true) {
                Ok(format) => self.format = format,
                Err(_) => return fail(format!("unknown mode '{arg}': .mode takes table, csv, json or line")),
            },
            ".output" if arg.is_empty() => self.output = None,
            ".output" => {
                let path = PathBuf::from(arg.trim_matches(|c| c == '\'' || c == '"'));
                match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(file) => self.output = Some(file),
                    Err(e) => return fail(format!("cannot open {}: {e}", path.display())),
                }
            }
            _ => return fail(format!("unknown command {name} (.help lists the commands)")),
        }
        Ok(Flow::Continue)
    }

    /// The interactive shell.
    async fn interact(&mut self, library: &Path) -> anyhow::Result<()> {
        // From now on SIGINT (Ctrl-C outside line editing) is tokio's to report, never fatal.
        let _sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let config = Config::builder()
            .max_history_size(10_000)?
            .history_ignore_dups(true)?
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .build();
        let mut editor: Editor<Completion, FileHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(Completion {
            names: Names::of(self.session.context()).await,
            files: FilenameCompleter::new(),
        }));
        let history = history_path();
        if let Some(path) = &history
            && path.exists()
            && let Err(e) = editor.load_history(path)
        {
            eprintln!("warning: cannot read the history {}: {e}", path.display());
        }
        let mut history_warned = false;
        writeln!(
            self.stdout,
            "imagelake {}: SQL over the library {}. End statements with ';'. Enter .help for the commands.",
            env!("CARGO_PKG_VERSION"),
            library.display()
        )?;
        self.stdout.flush()?;

        let mut splitter = Splitter::default();
        let mut entry = String::new();
        let mut line_number = 0;
        loop {
            let prompt = if splitter.is_idle() { PROMPT } else { CONTINUATION };
            let read = tokio::task::block_in_place(|| editor.readline(prompt));
            let text = match read {
                Ok(text) => text,
                Err(ReadlineError::Interrupted) => {
                    splitter.reset();
                    entry.clear();
                    line_number = 0;
                    continue;
                }
                Err(ReadlineError::Eof) => {
                    writeln!(self.stdout)?;
                    return Ok(());
                }
                Err(ReadlineError::Signal(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut items = Vec::new();
            for line in text.split('\n') {
                line_number += 1;
                items.extend(splitter.line(line.trim_end_matches('\r'), line_number));
            }
            if !entry.is_empty() {
                entry.push('\n');
            }
            entry.push_str(&text);
            if splitter.is_idle() {
                // Saved before the statements run, so that a kill during a query keeps it.
                if !entry.trim().is_empty() {
                    let _ = editor.add_history_entry(entry.trim());
                    if let Some(path) = &history
                        && let Err(e) = editor.append_history(path)
                        && !history_warned
                    {
                        eprintln!("warning: cannot save the history in {}: {e}", path.display());
                        history_warned = true;
                    }
                }
                entry.clear();
                line_number = 0;
            }
            if items.is_empty() {
                continue;
            }
            for item in &items {
                match self.item(item).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Quit) => return Ok(()),
                    Err(Failure::Cancelled) => {
                        eprintln!("query cancelled");
                        break;
                    }
                    Err(Failure::Error { line, column, message }) => {
                        match column {
                            Some(column) => eprintln!("error: line {line}, column {column}: {message}"),
                            None => eprintln!("error: {message}"),
                        }
                        break;
                    }
                }
            }
            // Tables, views and images may have changed.
            let names = Names::of(self.session.context()).await;
            if let Some(helper) = editor.helper_mut() {
                helper.names = names;
            }
        }
    }
}

const HELP: &str = "\
.tables             the tables
.schema [TABLE]     columns and types of TABLE (of every table without one)
.images             every image version: name, version, image_id, created_at, os
.mode MODE          print results as table, csv, json or line (one `column = value` per line)
.timer on|off       print the run time of each statement
.output [FILE]      append results to FILE (to the terminal again without one)
.help               this list
.quit, .exit        leave (Ctrl-D too)
End each SQL statement with ';'. Tab completes keywords, tables, columns, functions,
image names (inside '...') and these commands. Ctrl-C cancels a running query.
";

const META: [&str; 9] = [".exit", ".help", ".images", ".mode", ".output", ".quit", ".schema", ".tables", ".timer"];
const MODES: [&str; 4] = ["csv", "json", "line", "table"];

/// A script's error: where it happened and what it is.
fn script_error(name: Option<&str>, failure: Failure) -> anyhow::Error {
    match failure {
        Failure::Cancelled => anyhow::anyhow!("query cancelled"),
        Failure::Error { line, column, message } => {
            let file = name.map(|n| format!("{n}, ")).unwrap_or_default();
            let column = column.map(|c| format!(", column {c}")).unwrap_or_default();
            anyhow::anyhow!("{file}line {line}{column}: {message}")
        }
    }
}

/// A DataFusion error on one line, and its position in the statement's input if it has one:
/// the parser's "at Line: X, Column: Y", or the span of a planning diagnostic.
fn describe(e: &DataFusionError) -> (Option<(usize, usize)>, String) {
    for inner in e.iter() {
        if let DataFusionError::SQL(parser, _) = inner {
            let text = match parser.as_ref() {
                ParserError::TokenizerError(s) | ParserError::ParserError(s) => s.as_str(),
                ParserError::RecursionLimitExceeded => "recursion limit exceeded",
            };
            let (text, position) = split_position(text);
            return (position, format!("syntax error: {}", one_line(text)));
        }
    }
    let position = e
        .diagnostic()
        .and_then(|d| d.span)
        .filter(|s| s.start.line > 0 && s.start.column > 0)
        .map(|s| (s.start.line as usize, s.start.column as usize));
    (position, one_line(&e.strip_backtrace()))
}

/// "… at Line: 2, Column: 8" into ("…", (2, 8)).
fn split_position(text: &str) -> (&str, Option<(usize, usize)>) {
    let Some(at) = text.rfind(" at Line: ") else { return (text, None) };
    let position = text[at + " at Line: ".len()..].split_once(", Column: ").and_then(|(line, column)| {
        let column: String = column.chars().take_while(char::is_ascii_digit).collect();
        Some((line.trim().parse().ok()?, column.parse().ok()?))
    });
    match position {
        Some(p) => (&text[..at], Some(p)),
        None => (text, None),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn history_path() -> Option<PathBuf> {
    match std::env::var_os("IMAGELAKE_HISTORY") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".imagelake_history")),
    }
}

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
struct Names {
    /// `public` tables bare, the others qualified (`internal.files`).
    tables: BTreeSet<String>,
    columns: BTreeSet<String>,
    functions: BTreeSet<String>,
    images: BTreeSet<String>,
}

impl Names {
    async fn of(ctx: &SessionContext) -> Names {
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

struct Completion {
    names: Names,
    files: FilenameCompleter,
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

    fn split(text: &str) -> Vec<Item> {
        let mut s = Splitter::default();
        let mut items: Vec<Item> = text.lines().enumerate().flat_map(|(i, l)| s.line(l, i + 1)).collect();
        items.extend(s.finish().map(Item::Sql));
        items
    }

    fn sql(text: &str, line: usize, column: usize) -> Item {
        Item::Sql(Statement { text: text.into(), line, column })
    }

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            split("SELECT 1; SELECT ';' -- not ; here\n  , \"a;b\"; /* ; */ SELECT E'\\';';\n.tables\nSELECT 3"),
            vec![
                sql("SELECT 1", 1, 1),
                sql("SELECT ';' -- not ; here\n  , \"a;b\"", 1, 11),
                sql("SELECT E'\\';'", 2, 20),
                Item::Meta { text: ".tables".into(), line: 3 },
                sql("SELECT 3", 4, 1),
            ]
        );
        // A meta-command only between statements; a statement may span lines.
        assert_eq!(split("SELECT\n.5;\n"), vec![sql("SELECT\n.5", 1, 1)]);
        assert_eq!(sql("x", 3, 2), sql("x", 3, 2));
        let Item::Sql(s) = sql("SELEC 1", 2, 3) else { unreachable!() };
        assert_eq!(s.padded(), "\n  SELEC 1");
    }

    #[test]
    fn parser_positions_become_line_and_column() {
        assert_eq!(
            split_position("Expected: an SQL statement, found: SELEC at Line: 2, Column: 8"),
            ("Expected: an SQL statement, found: SELEC", Some((2, 8)))
        );
        assert_eq!(split_position("no position"), ("no position", None));
    }

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
