//! The shell and scripts: runs each statement in a task of its own (Ctrl-C cancels it in the
//! shell), prints its result, runs the meta-commands, and stops a script at its first error,
//! reported with its line (and column, for a position the parser or planner gives).

use super::complete::{Completion, Names};
use super::split::{Item, Splitter};
use super::{CONTINUATION, Input, PROMPT};
use crate::exit::{self, Kind};
use crate::output::{self, Format};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::ValueEnum;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use imagelake_sql::Session;
use rustyline::completion::FilenameCompleter;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
            let text = std::fs::read_to_string(&path)
                .map_err(|e| exit::Error::usage(format!("cannot read {}: {e}", path.display())))?;
            shell.script(&text, Some(&path.display().to_string())).await
        }
        Input::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| exit::Error::of(Kind::Environment, format!("cannot read stdin: {e}")))?;
            shell.script(&text, None).await
        }
        Input::Terminal => shell.interact(library).await,
    }
}

enum Flow {
    Continue,
    Quit,
}

/// Why an item did not complete.
enum Failure {
    /// An error, with the line of its statement (or of its position, with the column), and
    /// its kind: a problem (the statement failed), or internal (a bug).
    Error { line: usize, column: Option<usize>, message: String, kind: Kind },
    /// Ctrl-C while the query ran.
    Cancelled,
    /// Standard output's reader went away: stop, quietly.
    Closed,
}

impl Failure {
    fn at(line: usize, message: impl Into<String>) -> Self {
        Failure::Error { line, column: None, message: message.into(), kind: Kind::Problem }
    }

    /// A result that could not be printed.
    fn printing(line: usize, error: anyhow::Error) -> Self {
        if exit::is_closed_output(&error) { Failure::Closed } else { Failure::at(line, format!("{error:#}")) }
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
                Failure::Error { message, kind, .. } => Failure::Error { line: *line, column: None, message, kind },
                other => other,
            }),
            Item::Sql(statement) => {
                let started = Instant::now();
                let sql = statement.padded();
                let imagelake_sql::Answer { schema, batches } = self.query(sql, statement.line).await?;
                // Statements such as CREATE VIEW have no columns: nothing to print.
                if let Some(schema) = schema.filter(|s| !s.fields().is_empty()) {
                    self.print(schema, batches).map_err(|e| Failure::printing(statement.line, e))?;
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
                // A statement that fails is the script's problem (1), unless it is a bug (70).
                let kind = match exit::datafusion_kind(&e) {
                    Some(Kind::Internal) => Kind::Internal,
                    _ => Kind::Problem,
                };
                let (line, column) = match position {
                    Some((l, c)) => (l, Some(c)),
                    None => (line, None),
                };
                Err(Failure::Error { line, column, message, kind })
            }
            Err(e) if e.is_panic() => {
                let message = format!("the query panicked: {}", exit::panic_message(e.into_panic().as_ref()));
                Err(Failure::Error { line, column: None, message, kind: Kind::Internal })
            }
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
            self.print(schema, batches).map_err(|e| Failure::printing(0, e))?;
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
                    Err(Failure::Error { line, column, message, kind }) => {
                        let bug = if kind == Kind::Internal {
                            "internal error (a bug in imagelake, please report it): "
                        } else {
                            ""
                        };
                        match column {
                            Some(column) => eprintln!("error: {bug}line {line}, column {column}: {message}"),
                            None => eprintln!("error: {bug}{message}"),
                        }
                        break;
                    }
                    Err(Failure::Closed) => return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into()),
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

/// A script's error: where it happened and what it is.
fn script_error(name: Option<&str>, failure: Failure) -> anyhow::Error {
    match failure {
        Failure::Cancelled => exit::Error::problem("query cancelled"),
        Failure::Closed => std::io::Error::from(std::io::ErrorKind::BrokenPipe).into(),
        Failure::Error { line, column, message, kind } => {
            let file = name.map(|n| format!("{n}, ")).unwrap_or_default();
            let column = column.map(|c| format!(", column {c}")).unwrap_or_default();
            exit::Error::of(kind, format!("{file}line {line}{column}: {message}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_positions_become_line_and_column() {
        assert_eq!(
            split_position("Expected: an SQL statement, found: SELEC at Line: 2, Column: 8"),
            ("Expected: an SQL statement, found: SELEC", Some((2, 8)))
        );
        assert_eq!(split_position("no position"), ("no position", None));
    }
}
