//! The standard streams as the command line sees them: handed in by [`super::main`] (the
//! process's stdin, stdout and stderr) so that commands never reach for the process's own, and
//! tests or another caller can hand in buffers. Only the final `error:` line is printed by
//! `main` on the process's stderr: [`super::run`] returns the failure as a value.

use std::io::{IsTerminal as _, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Where answers go and where piped input (`--token -`, `--message-file -`) comes from.
#[derive(Debug)]
pub struct Streams {
    pub stdin: Input,
    pub stdout: Output,
    /// Where notes, progress and warnings go (`started build ...`, `bldst: running ...`).
    pub stderr: Output,
    /// Whether stdin is a person at a terminal rather than a pipe or a file.
    pub stdin_is_terminal: bool,
    /// Whether stdout is a terminal: colour and fitting tables to its width.
    pub stdout_is_terminal: bool,
}

impl Streams {
    /// The process's stdin, stdout and stderr.
    pub fn process() -> Self {
        Streams {
            stdin_is_terminal: std::io::stdin().is_terminal(),
            stdout_is_terminal: std::io::stdout().is_terminal(),
            stdin: Input::new(std::io::stdin()),
            stdout: Output::new(std::io::stdout()),
            stderr: Output::new(std::io::stderr()),
        }
    }
}

/// A reader shared by the commands (one command reads it at most once).
#[derive(Clone)]
pub struct Input(Arc<Mutex<dyn Read + Send>>);

impl Input {
    pub fn new(reader: impl Read + Send + 'static) -> Self {
        Input(Arc::new(Mutex::new(reader)))
    }

    /// The reader, for as long as the guard lives.
    pub fn lock(&self) -> MutexGuard<'_, dyn Read + Send + 'static> {
        // A poisoned lock only means a panic elsewhere; the stream is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

/// A writer shared by the printer's copies.
#[derive(Clone)]
pub struct Output(Arc<Mutex<dyn Write + Send>>);

impl Output {
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Output(Arc::new(Mutex::new(writer)))
    }

    /// The writer, for as long as the guard lives.
    pub fn lock(&self) -> MutexGuard<'_, dyn Write + Send + 'static> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}
