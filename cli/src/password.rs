//! Passwords for `user add` and `user passwd`: typed at the terminal without echo, twice, or,
//! when standard input is not a terminal, its first line (for scripts: `echo "$PW" | imagelake
//! user add ana`).
//!
//! While echo is off, Ctrl-C restores the terminal before the process ends (status 130), so
//! that an interrupted prompt does not leave the shell typing blind.

use crate::exit;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::OnceLock;

/// The new password of `user`.
pub fn new_password(user: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let line = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
        if line.is_empty() {
            return Err(exit::Error::usage(format!(
                "no password for {user}: standard input is not a terminal, and its first line is empty"
            )));
        }
        return Ok(line.to_string());
    }
    let first = prompt(&format!("password for {user}: "))?;
    if first.is_empty() {
        return Err(exit::Error::usage("the password is empty; nothing changed"));
    }
    let second = prompt("the same again: ")?;
    if first != second {
        return Err(exit::Error::usage("the two passwords differ; nothing changed"));
    }
    Ok(first)
}

/// The terminal's settings before echo went off, for the Ctrl-C handler.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

extern "C" fn interrupted(_: libc::c_int) {
    // SAFETY: tcsetattr, write and _exit are async-signal-safe; SAVED is set before the
    // handler is installed, and OnceLock::get is an atomic load.
    unsafe {
        if let Some(saved) = SAVED.get() {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
        }
        libc::write(libc::STDERR_FILENO, b"\n".as_ptr().cast(), 1);
        libc::_exit(130);
    }
}

/// Reads one line from the terminal on standard input with echo off, `text` shown on
/// standard error.
fn prompt(text: &str) -> anyhow::Result<String> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{text}")?;
    stderr.flush()?;
    // SAFETY: termios is plain data, filled by tcgetattr before it is read.
    let mut settings: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: standard input is a terminal (checked by the caller); the pointer is valid.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut settings) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let saved = *SAVED.get_or_init(|| settings);
    let mut quiet = settings;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: a handler of the right type, and the previous one put back below; the
    // terminal's settings are valid, as tcgetattr gave them.
    let previous = unsafe {
        let previous = libc::signal(libc::SIGINT, interrupted as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet);
        previous
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: as above.
    unsafe {
        libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &saved);
        libc::signal(libc::SIGINT, previous);
    }
    read?;
    Ok(line.strip_suffix('\n').unwrap_or(&line).to_string())
}
