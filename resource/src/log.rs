//! The resource's stderr: lines kept until the command ends, each scrubbed of the token.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Lines for stderr, kept until the command ends (the client's retry callback may run on the
/// runtime's thread), each scrubbed of the token.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    lines: Vec<String>,
    secrets: Vec<String>,
    debug: bool,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Log")
    }
}

impl Log {
    pub(crate) fn new() -> Self {
        Log::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        // A poisoned lock only means a panic elsewhere; the lines are still good.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Never print `secret`.
    pub(crate) fn redact(&self, secret: &str) {
        if !secret.is_empty() {
            self.lock().secrets.push(secret.to_owned());
        }
    }

    /// `text` with every secret replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let inner = self.lock();
        let mut text = text.to_owned();
        for secret in &inner.secrets {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        text
    }

    /// Adds one line for stderr.
    pub fn line(&self, line: String) {
        let line = self.scrub(&line);
        self.lock().lines.push(line);
    }

    /// Turns on `debug:` lines (the source's `debug`).
    pub fn set_debug(&self, on: bool) {
        self.lock().debug = on;
    }

    /// Adds a `debug:` line when debugging is on.
    pub fn debug(&self, line: impl FnOnce() -> String) {
        if self.lock().debug {
            self.line(format!("debug: {}", line()));
        }
    }

    pub(crate) fn flush_to(&mut self, stderr: &mut dyn Write) {
        let lines = std::mem::take(&mut self.lock().lines);
        for line in lines {
            // Nowhere to report a broken stderr.
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }
}
