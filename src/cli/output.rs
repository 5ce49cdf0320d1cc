//! How answers are shown: tables for people, JSON for scripts.
//!
//! JSON output is the wire types of `buildstate_domain::wire` serialized as they are, so its
//! field names are the API's stable ones. Tables use colour only for status words, only when
//! stdout is a terminal and `NO_COLOR` is unset. Nothing here writes to stdout on failure:
//! errors go to stderr through the caller.
//!
//! Tables fit the terminal: on a terminal (or whenever `COLUMNS` is set) the columns that can
//! give way — messages, sources, keys, descriptions — are cut with `…` so every row stays one
//! line; ids, codes and times are never cut. Piped without `COLUMNS`, rows are printed whole,
//! one per line, for `grep` and `awk`.

use buildstate_domain::wire::{Build, GateAnswer, HistoryEntry, TokenInfo, User};
use buildstate_domain::{BuildStatus, GateDecision, Phase};
use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{presets, Cell, Color, ColumnConstraint, ContentArrangement, Row, Table};
use serde::Serialize;

use super::error::CliError;
use super::streams::Output;
use buildstate_client::failure::exit;

/// `--output`: how answers are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, with its stable field names, for scripts.
    Json,
}

/// Prints answers on stdout (the [`Output`] it was given) in the chosen format, and notes for
/// people on stderr (the other [`Output`]).
#[derive(Debug, Clone)]
pub struct Printer {
    pub format: OutputFormat,
    out: Output,
    /// Notes beside the answer (stderr), so that stdout holds only the answer.
    notes: Output,
    colour: bool,
    /// The width tables must fit in; `None`: print rows whole.
    width: Option<u16>,
}

impl Printer {
    /// A printer for `format` writing answers to `out` and notes to `notes`; colour is used
    /// only when `out` is a terminal (`terminal`) and `no_color` (the `NO_COLOR` convention) is
    /// false.
    pub fn new(
        format: OutputFormat,
        no_color: bool,
        out: Output,
        notes: Output,
        terminal: bool,
    ) -> Self {
        Printer {
            format,
            out,
            notes,
            colour: terminal && !no_color,
            // On a terminal, comfy-table asks the terminal for its width.
            width: if terminal { Table::new().width() } else { None },
        }
    }

    /// Fits tables in `columns` (the `COLUMNS` variable: it wins over the terminal's width,
    /// and applies when piped too), or prints rows whole with `None`.
    pub fn with_columns(mut self, columns: Option<&str>) -> Self {
        if let Some(columns) = columns.and_then(|text| text.trim().parse::<u16>().ok()) {
            self.width = Some(columns);
        }
        self
    }

    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints `value` as pretty JSON.
    pub fn json<T: Serialize>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|error| CliError::failure(format!("cannot encode the answer: {error}")))?;
        self.line(&text)
    }

    /// Prints one line of text.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        write_line(&mut *self.out.lock(), text)
    }

    /// Writes one note for people on stderr: progress, what was done, a warning. A note that
    /// cannot be written is dropped (there is nowhere left to say so); the answer still goes
    /// to stdout.
    pub fn note(&self, text: &str) {
        let _ = write_line(&mut *self.notes.lock(), text);
    }

    /// Prints a table made by [`Printer::table`], none of whose columns may be cut.
    pub fn print_table(&self, table: Table) -> Result<(), CliError> {
        self.print_fitted(table, &[])
    }

    /// Prints a table made by [`Printer::table`]; when it must fit a width, the columns
    /// numbered in `can_shrink` give way (cut with `…`), the others keep their content's width,
    /// and each row stays one line.
    pub fn print_fitted(&self, mut table: Table, can_shrink: &[usize]) -> Result<(), CliError> {
        // Two spaces between columns and none before the first, so `awk` and people both
        // find the columns where they expect them.
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        if let Some(width) = self.width {
            table
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(width)
                .set_truncation_indicator("…");
            for column in table.column_iter_mut() {
                if !can_shrink.contains(&column.index) {
                    column.set_constraint(ColumnConstraint::ContentWidth);
                }
            }
            for row in table.row_iter_mut() {
                row.max_height(1);
            }
        }
        let text = table
            .lines()
            .map(|line| line.trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n");
        self.line(&text)
    }

    /// An empty table with `header`, in the house style: no borders, like `kubectl get`.
    ///
    /// Rows are never wrapped: an id or a time cut in two is worse than a long line, and
    /// `grep` and `awk` see one row per line. [`Printer::print_fitted`] cuts them to fit.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut table = Table::new();
        table.load_style(presets::NOTHING);
        table.set_content_arrangement(ContentArrangement::Disabled);
        if !self.colour {
            table.force_no_tty();
        }
        if !header.is_empty() {
            // When fitted, a header gives way like its column rather than wrapping.
            let mut header = Row::from(header.iter().copied());
            header.max_height(1);
            table.set_header(header);
        }
        table
    }

    /// A status word, coloured by how well things are going.
    pub fn status_cell(&self, status: BuildStatus) -> Cell {
        let colour = match status {
            BuildStatus::Running | BuildStatus::InProgress => Color::Cyan,
            BuildStatus::Completed => Color::Green,
            BuildStatus::Failed => Color::Yellow,
            BuildStatus::Blocked => Color::Red,
            BuildStatus::Cancelled => Color::DarkGrey,
        };
        let cell = Cell::new(status.as_str());
        if self.colour {
            cell.fg(colour)
        } else {
            cell
        }
    }

    // ----- the shapes the commands print --------------------------------------------------

    /// One build, as field/value rows.
    pub fn build(&self, build: &Build) -> Result<(), CliError> {
        if self.is_json() {
            return self.json(build);
        }
        let mut table = self.table(&[]);
        let text = |label: &str, value: String| vec![Cell::new(label), Cell::new(value)];
        table.add_row(text("id", build.id.to_string()));
        table.add_row(text("key", optional(build.key.as_ref())));
        table.add_row(text("platform", build.platform.to_string()));
        table.add_row(text("image type", build.image_type.to_string()));
        table.add_row(text("description", optional(build.description.as_ref())));
        table.add_row(text("labels", labels(build)));
        table.add_row(text(
            "state",
            format!(
                "{} {} ({} phase)",
                build.state,
                build.state_name,
                phase_name(build.phase)
            ),
        ));
        table.add_row(vec![Cell::new("status"), self.status_cell(build.status)]);
        table.add_row(text(
            "failures",
            format!("{} of {} allowed", build.failures, build.allowed_retries()),
        ));
        // Shown only when there is something to show: builds without a policy print as before.
        if let Some(policy) = &build.retry_policy {
            let rules: Vec<String> = policy.rules().iter().map(ToString::to_string).collect();
            table.add_row(text("retry policy", rules.join("\n")));
        }
        if let Some(until) = build.reopened_until {
            table.add_row(text(
                "reopened",
                format!(
                    "retrying stage {until} from stage {}: no stage after {until} runs until it completes",
                    build.state
                ),
            ));
        }
        table.add_row(text("next attempt", next_attempt(build)));
        table.add_row(text("last message", optional(build.last_message.as_ref())));
        table.add_row(text(
            "lease",
            build.lease.as_ref().map_or_else(
                || "-".to_owned(),
                |lease| {
                    format!(
                        "stage {} held by `{}` until {} (fence {})",
                        lease.stage,
                        lease.holder,
                        time(&lease.expires_at),
                        lease.fence
                    )
                },
            ),
        ));
        table.add_row(text(
            "last resume",
            build
                .last_resume
                .as_ref()
                .map_or_else(|| "-".to_owned(), |resume| resume.describe()),
        ));
        table.add_row(text(
            "outputs",
            if build.outputs.is_empty() {
                "-".to_owned()
            } else {
                build
                    .outputs
                    .iter()
                    .map(|(key, output)| format!("{key}={} (stage {})", output.value, output.stage))
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        ));
        table.add_row(text("created", time(&build.created_at)));
        table.add_row(text("updated", time(&build.updated_at)));
        self.print_fitted(table, &[1])
    }

    /// A build's merged outputs: key, value and the stage that set it.
    pub fn outputs(
        &self,
        outputs: &std::collections::BTreeMap<String, buildstate_domain::StageOutput>,
    ) -> Result<(), CliError> {
        if self.is_json() {
            return self.json(outputs);
        }
        let mut table = self.table(&["KEY", "VALUE", "STAGE"]);
        for (key, output) in outputs {
            table.add_row(vec![
                Cell::new(key),
                Cell::new(&output.value),
                Cell::new(output.stage),
            ]);
        }
        self.print_table(table)
    }

    /// Builds, one per row.
    pub fn builds(&self, builds: &[Build]) -> Result<(), CliError> {
        let mut table = self.table(&[
            "ID",
            "KEY",
            "PLATFORM",
            "IMAGE TYPE",
            "STATE",
            "STATUS",
            "FAILURES",
            "UPDATED",
        ]);
        for build in builds {
            table.add_row(vec![
                Cell::new(build.id.as_str()),
                Cell::new(optional(build.key.as_ref())),
                Cell::new(build.platform.as_str()),
                Cell::new(build.image_type.as_str()),
                Cell::new(format!("{} {}", build.state, build.state_name)),
                self.status_cell(build.status),
                Cell::new(format!("{}/{}", build.failures, build.allowed_retries())),
                Cell::new(time(&build.updated_at)),
            ]);
        }
        // Everything but the id, the status and the time gives way (short values lose only
        // their header's end).
        self.print_fitted(table, &[1, 2, 3, 4, 6])
    }

    /// History entries, oldest first.
    pub fn history(&self, entries: &[HistoryEntry]) -> Result<(), CliError> {
        let mut table = self.table(&[
            "SEQ", "STATE", "EVENT", "ATTEMPT", "BY", "SOURCE", "WHEN", "MESSAGE",
        ]);
        for entry in entries {
            table.add_row(vec![
                Cell::new(entry.seq),
                Cell::new(entry.state),
                Cell::new(entry.kind.as_str()),
                Cell::new(
                    entry
                        .attempt
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                ),
                Cell::new(optional(entry.reported_by.as_ref())),
                Cell::new(optional(entry.source.as_ref())),
                Cell::new(time(&entry.recorded_at)),
                Cell::new(first_line(entry.message.as_deref(), 72)),
            ]);
        }
        // SOURCE and MESSAGE give way.
        self.print_fitted(table, &[5, 7])
    }

    /// A gate answer: the decision word, then the reason.
    pub fn gate(&self, answer: &GateAnswer) -> Result<(), CliError> {
        if self.is_json() {
            return self.json(answer);
        }
        let word = answer.decision.as_str();
        let word = if self.colour {
            let code = match answer.decision {
                GateDecision::Run => "32",
                GateDecision::Skip => "36",
                GateDecision::Wait => "33",
                GateDecision::Stop => "31",
            };
            format!("\x1b[{code}m{word}\x1b[0m")
        } else {
            word.to_owned()
        };
        self.line(&format!("{word}: {}", answer.reason))
    }

    /// Users, one per row.
    pub fn users(&self, users: &[User]) -> Result<(), CliError> {
        let mut table = self.table(&["ID", "USERNAME", "EMAIL", "ROLE", "CREATED"]);
        for user in users {
            table.add_row(vec![
                user.id.clone(),
                user.username.to_string(),
                user.email.to_string(),
                user.role.to_string(),
                time(&user.created_at),
            ]);
        }
        // EMAIL gives way.
        self.print_fitted(table, &[2])
    }

    /// Tokens, one per row, never their secrets.
    pub fn tokens(&self, tokens: &[TokenInfo]) -> Result<(), CliError> {
        let mut table = self.table(&[
            "ID",
            "USER",
            "SCOPE",
            "DESCRIPTION",
            "CREATED",
            "EXPIRES",
            "LAST USED",
            "REVOKED",
        ]);
        let when = |at: &Option<DateTime<Utc>>| at.as_ref().map_or_else(|| "-".to_owned(), time);
        for token in tokens {
            table.add_row(vec![
                token.id.clone(),
                token.username.to_string(),
                token.scope.to_string(),
                token.description.clone(),
                time(&token.created_at),
                when(&token.expires_at),
                when(&token.last_used_at),
                when(&token.revoked_at),
            ]);
        }
        // DESCRIPTION gives way.
        self.print_fitted(table, &[3])
    }
}

/// A time as RFC 3339 in UTC, to the second.
/// When the build's failed stage runs again, e.g. `2026-12-06T21:40:00Z (in 30s), attempt 2
/// of 4`; for a blocked build, what a person can do.
pub fn next_attempt(build: &Build) -> String {
    use buildstate_client::retry_wait::{needs_a_person, next_attempt_words};
    match (build.status, build.next_attempt_at) {
        (BuildStatus::Failed, Some(at)) => {
            let left = (at - Utc::now()).num_seconds();
            let when = if left > 0 {
                format!("in {left}s")
            } else {
                "due now".to_owned()
            };
            format!("{} ({when}), {}", time(&at), next_attempt_words(build))
        }
        (BuildStatus::Blocked, _) => format!("none: {}", needs_a_person(&build.id)),
        _ => "-".to_owned(),
    }
}

pub fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Initial => "initial",
        Phase::Infrastructure => "infrastructure",
        Phase::Application => "application",
        Phase::Validation => "validation",
        Phase::Delivered => "delivered",
    }
}

fn optional(value: Option<&impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), ToString::to_string)
}

fn labels(build: &Build) -> String {
    if build.labels.is_empty() {
        return "-".to_owned();
    }
    build
        .labels
        .as_map()
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first line of `text`, cut to `max` characters with an ellipsis.
fn first_line(text: Option<&str>, max: usize) -> String {
    let Some(text) = text else {
        return "-".to_owned();
    };
    let mut lines = text.trim().lines();
    let line = lines.next().unwrap_or("");
    let more = lines.next().is_some();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else if more {
        format!("{line} …")
    } else {
        line.to_owned()
    }
}

/// Writes `text` and a newline on `stdout`. A closed pipe (`bldst build list | head`) is not
/// an error: the reader has what it wanted.
fn write_line(stdout: &mut dyn std::io::Write, text: &str) -> Result<(), CliError> {
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(CliError::new(
            exit::FAILURE,
            format!("cannot write to stdout: {error}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_or_multi_line_message_is_cut_to_its_first_line() {
        assert_eq!(first_line(None, 10), "-");
        assert_eq!(first_line(Some("short"), 10), "short");
        assert_eq!(first_line(Some("one\ntwo"), 10), "one …");
        assert_eq!(first_line(Some("abcdefghijkl"), 5), "abcd…");
    }
}
