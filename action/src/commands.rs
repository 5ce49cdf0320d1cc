//! GitHub's workflow commands (`::error title=...::message`, `::add-mask::`, `::group::`,
//! `::debug::`), written to the step's stdout, which the runner reads line by line.
//!
//! [`Log`] is the action's only way to print. It keeps the three promises the runner's
//! contract needs on every path: secrets are masked before anything else is printed (and
//! redacted from every later line, in case a server echoes one back), `::group::` blocks are
//! balanced, and `::debug::` lines appear only when the runner asked for them (`RUNNER_DEBUG=1`).

use std::io::Write;

/// Escapes a command's message: `%`, CR and LF, as the runner's `toolkit/core` does.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a command property's value (`title=...`): also `:` and `,`, which would otherwise end
/// the property list.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// The severity of an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Notice,
    Warning,
    Error,
}

impl Level {
    fn command(self) -> &'static str {
        match self {
            Level::Notice => "notice",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// The title every annotation of this action carries.
pub const TITLE: &str = "buildstate";

/// One annotation line: `::error title=buildstate::message`.
pub fn annotation(level: Level, title: &str, message: &str) -> String {
    format!(
        "::{} title={}::{}",
        level.command(),
        escape_property(title),
        escape_data(message)
    )
}

/// The step's log: workflow commands and plain lines on the runner's stdout.
pub struct Log<'a> {
    out: &'a mut dyn Write,
    debug: bool,
    group_open: bool,
    secrets: Vec<String>,
}

impl std::fmt::Debug for Log<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("debug", &self.debug)
            .field("group_open", &self.group_open)
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl<'a> Log<'a> {
    /// A log on `out`; `debug` turns `::debug::` lines on (the runner's `RUNNER_DEBUG=1`).
    pub fn new(out: &'a mut dyn Write, debug: bool) -> Self {
        Log {
            out,
            debug,
            group_open: false,
            secrets: Vec::new(),
        }
    }

    /// Tells the runner to mask `secret` in every log line from now on, and redacts it from
    /// every line this log prints itself. Call it before printing anything else.
    pub fn add_mask(&mut self, secret: &str) {
        if secret.is_empty() || self.secrets.iter().any(|known| known == secret) {
            return;
        }
        // The mask command is the one line that must carry the secret itself.
        self.raw(&format!("::add-mask::{}", escape_data(secret)));
        self.secrets.push(secret.to_owned());
    }

    /// `text` with every masked secret replaced by `***`: for lines and files this action writes.
    pub fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
    }

    /// A plain log line (each line of `text`).
    pub fn line(&mut self, text: &str) {
        let text = self.redact(text);
        for line in text.lines() {
            // A line that happens to start with `::` would be read as a command.
            if line.starts_with("::") {
                self.raw(&format!(" {line}"));
            } else {
                self.raw(line);
            }
        }
    }

    /// A `::debug::` line, printed only when the runner's debug logging is on.
    pub fn debug(&mut self, message: &str) {
        if self.debug {
            let line = format!("::debug::{}", escape_data(&self.redact(message)));
            self.raw(&line);
        }
    }

    /// Whether debug lines are printed.
    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    /// An annotation titled `buildstate`.
    pub fn annotate(&mut self, level: Level, message: &str) {
        let line = annotation(level, TITLE, &self.redact(message));
        self.raw(&line);
    }

    /// Opens a collapsible group, closing the one before if still open: groups never nest.
    pub fn group(&mut self, title: &str) {
        self.end_group();
        let line = format!("::group::{}", escape_data(&self.redact(title)));
        self.raw(&line);
        self.group_open = true;
    }

    /// Closes the open group, if any.
    pub fn end_group(&mut self) {
        if self.group_open {
            self.raw("::endgroup::");
            self.group_open = false;
        }
    }

    /// Closes what is open and flushes: the last call on every path.
    pub fn finish(&mut self) {
        self.end_group();
        let _ = self.out.flush();
    }

    fn raw(&mut self, line: &str) {
        // The runner reads stdout; if it has gone there is nobody left to tell.
        let _ = writeln!(self.out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_escape_percent_cr_and_lf() {
        assert_eq!(escape_data("100% done\r\nnext"), "100%25 done%0D%0Anext");
        assert_eq!(escape_data("a:b,c"), "a:b,c");
        // `%` first, or the escapes themselves would be escaped again.
        assert_eq!(escape_data("%0A"), "%250A");
    }

    #[test]
    fn properties_also_escape_colon_and_comma() {
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }

    #[test]
    fn an_annotation_is_one_line_with_an_escaped_title_and_message() {
        assert_eq!(
            annotation(Level::Error, "build: x, y", "line 1\nline 2: 50%"),
            "::error title=build%3A x%2C y::line 1%0Aline 2: 50%25"
        );
        assert_eq!(
            annotation(Level::Warning, TITLE, "w"),
            "::warning title=buildstate::w"
        );
    }

    fn printed(write: impl FnOnce(&mut Log<'_>)) -> String {
        let mut out = Vec::new();
        let mut log = Log::new(&mut out, false);
        write(&mut log);
        log.finish();
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_masked_secret_is_announced_once_then_redacted_everywhere() {
        let text = printed(|log| {
            log.add_mask("s3cret");
            log.add_mask("s3cret");
            log.line("the server said s3cret");
            log.annotate(Level::Error, "token s3cret refused");
            log.group("with s3cret");
        });
        assert_eq!(
            text,
            "::add-mask::s3cret\nthe server said ***\n::error title=buildstate::token *** refused\n\
             ::group::with ***\n::endgroup::\n"
        );
    }

    #[test]
    fn groups_stay_balanced_whatever_the_order_of_calls() {
        let text = printed(|log| {
            log.end_group();
            log.group("one");
            log.group("two");
            log.line("inside");
        });
        assert_eq!(
            text,
            "::group::one\n::endgroup::\n::group::two\ninside\n::endgroup::\n"
        );
    }

    #[test]
    fn debug_lines_appear_only_when_debug_is_on() {
        assert_eq!(printed(|log| log.debug("detail")), "");
        let mut out = Vec::new();
        let mut log = Log::new(&mut out, true);
        log.debug("detail\nmore");
        log.finish();
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "::debug::detail%0Amore\n"
        );
    }

    #[test]
    fn a_plain_line_never_reads_as_a_command() {
        assert_eq!(
            printed(|log| log.line("::error::from a server\nok")),
            " ::error::from a server\nok\n"
        );
    }
}
