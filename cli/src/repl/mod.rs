//! `imagelake sql`: SQL from a command line, a script, standard input, or an interactive shell.
//!
//! Input is cut into statements by [`split::Splitter`], which knows quotes and comments, so
//! that a statement may span lines and a line may hold several. DataFusion parses and runs
//! each statement on its own, padded with the newlines and spaces that precede it, so that the
//! parser's "Line: X, Column: Y" is a position in the input. A line starting with `.` between
//! statements is a meta-command (`.help` lists them).
//!
//! The shell ([`shell`]) reads lines with rustyline: history in `$IMAGELAKE_HISTORY` (else
//! `~/.imagelake_history`), saved after each entry; completion ([`complete`]) of keywords,
//! tables, columns, functions, image names and meta-commands; Ctrl-C cancels a running query.

mod complete;
mod shell;
mod split;

pub use shell::run;
use std::path::PathBuf;

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
