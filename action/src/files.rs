//! The two files the runner gives a step: `$GITHUB_OUTPUT` (step outputs) and
//! `$GITHUB_STEP_SUMMARY` (Markdown shown on the run's summary page).
//!
//! Outputs are appended one at a time as they become known, so a step that fails halfway still
//! leaves valid outputs for `if: failure()` steps. A value with a line break uses the heredoc
//! form with a random delimiter that does not occur in the value; `::set-output` is never used
//! (GitHub turned it off).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::distributions::{Alphanumeric, DistString};

/// The most this action appends to the step summary (GitHub's limit is 1 MiB per step).
pub const MAX_SUMMARY_BYTES: usize = 64 * 1024;

/// One output in the file's syntax: `name=value`, or the heredoc form for a multi-line value.
pub fn format_output(name: &str, value: &str) -> String {
    if !value.contains('\n') && !value.contains('\r') {
        return format!("{name}={value}\n");
    }
    let delimiter = loop {
        let candidate = format!(
            "ghadelimiter_{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
        );
        if !value.contains(&candidate) && !name.contains(&candidate) {
            break candidate;
        }
    };
    format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new().append(true).create(true).open(path)?;
    file.write_all(text.as_bytes())
}

/// `$GITHUB_OUTPUT`, if the runner set it.
#[derive(Debug)]
pub struct OutputFile {
    path: Option<PathBuf>,
}

impl OutputFile {
    pub fn new(path: Option<PathBuf>) -> Self {
        OutputFile { path }
    }

    /// Whether there is a file to write to.
    pub fn is_set(&self) -> bool {
        self.path.is_some()
    }

    /// Appends one output. Without a file it does nothing (the action was not started by a
    /// runner); fails with a sentence naming the file.
    pub fn set(&self, name: &str, value: &str) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        append(path, &format_output(name, value)).map_err(|error| {
            format!(
                "cannot write the output `{name}` to GITHUB_OUTPUT `{}`: {error}",
                path.display()
            )
        })
    }
}

/// `$GITHUB_STEP_SUMMARY`, if the runner set it.
#[derive(Debug)]
pub struct SummaryFile {
    path: Option<PathBuf>,
}

impl SummaryFile {
    pub fn new(path: Option<PathBuf>) -> Self {
        SummaryFile { path }
    }

    /// Appends Markdown, cut at [`MAX_SUMMARY_BYTES`] (on a character boundary).
    pub fn append(&self, markdown: &str) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut end = markdown.len().min(MAX_SUMMARY_BYTES);
        while !markdown.is_char_boundary(end) {
            end -= 1;
        }
        append(path, &markdown[..end]).map_err(|error| {
            format!(
                "cannot write the job summary to GITHUB_STEP_SUMMARY `{}`: {error}",
                path.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_line_value_is_name_equals_value() {
        assert_eq!(format_output("skip", "true"), "skip=true\n");
        assert_eq!(format_output("empty", ""), "empty=\n");
    }

    #[test]
    fn a_multi_line_value_uses_a_heredoc_with_a_random_delimiter() {
        let text = format_output("outputs", "a\nb");
        let (first, rest) = text.split_once('\n').expect("first line");
        let delimiter = first.strip_prefix("outputs<<").expect("heredoc start");
        assert!(delimiter.starts_with("ghadelimiter_") && delimiter.len() > 20);
        assert_eq!(rest, format!("a\nb\n{delimiter}\n"));
        assert_ne!(format_output("outputs", "a\nb"), text, "random per value");
    }

    #[test]
    fn outputs_are_appended_and_summaries_are_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let outputs = OutputFile::new(Some(dir.path().join("out")));
        outputs.set("a", "1").expect("write");
        outputs.set("b", "2").expect("write");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).expect("read"),
            "a=1\nb=2\n"
        );
        let summary = SummaryFile::new(Some(dir.path().join("summary")));
        summary
            .append(&"é".repeat(MAX_SUMMARY_BYTES))
            .expect("write");
        let written = std::fs::read_to_string(dir.path().join("summary")).expect("read");
        assert!(written.len() <= MAX_SUMMARY_BYTES);
        let missing = OutputFile::new(Some(dir.path().join("no/such/dir")));
        let error = missing.set("a", "1").expect_err("no directory");
        assert!(error.starts_with("cannot write the output `a` to GITHUB_OUTPUT"));
    }
}
