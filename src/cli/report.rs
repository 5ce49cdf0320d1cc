//! `bldst report ...`: the server's reports (the dashboard's reports page) as tables, or as
//! the API's JSON with `--output json`. The numbers are the server's; definitions live in
//! `buildstate_domain::reports`, `buildstate_domain::resumes` and `docs/cli.md`.

use buildstate_domain::reports::{
    AttentionBuild, DurationStats, StageRecovery, SuccessCounts, MAX_WINDOW_DAYS,
};
use buildstate_domain::resumes::{SavingsGroup, SavingsTotals};
use buildstate_domain::StateCode;
use clap::{Args, Subcommand};
use comfy_table::Cell;

use super::context::Context;
use super::error::CliError;
use super::output::{time, Printer};
use super::values::parse_duration;
use buildstate_client::failure::exit;

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
}

/// The window of a report.
#[derive(Debug, Args)]
struct WindowArgs {
    /// How many days back to look (1 to 366) [default: the server's, 7].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_WINDOW_DAYS)))]
    days: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Success rate by platform and by image type, over builds started in the window.
    #[command(
        after_help = "A build succeeded when it is completed, failed when it is blocked or \
cancelled; the rest are still going. SUCCESS is completed ÷ (completed + blocked + cancelled).

Examples:
  bldst report success
  bldst report success --days 30 --output json"
    )]
    Success(WindowArgs),
    /// Where builds fail: failures, builds and retries per stage code, and builds blocked there now.
    #[command(after_help = "Examples:
  bldst report failures
  bldst report failures --days 1")]
    Failures(WindowArgs),
    /// How long each stage takes: p50, p90 and max per code, over completions in the window.
    #[command(
        after_help = "A stage's duration runs from its in_progress report (else from the \
build's previous record) to its completion.

Examples:
  bldst report durations
  bldst report durations --days 30 --output json"
    )]
    Durations(WindowArgs),
    /// Builds stuck (no report for longer than a threshold) and builds blocked (waiting for a person).
    #[command(
        after_help = "Without --after or --after-code, the server's thresholds apply \
(`bldst server --stuck-after-secs`, `--stuck-after-by-code`). A build waiting out a retry backoff is quiet from the backoff's \
end.

Examples:
  bldst report stuck
  bldst report stuck --after 2h --after-code 10=6h --after-code 55=30m
  bldst report stuck --output json | jq -r '.blocked[].id'"
    )]
    Stuck(StuckArgs),
    /// Time to recover: from a stage's first failure in a build to that stage's completion.
    #[command(after_help = "Examples:
  bldst report recovery
  bldst report recovery --days 30")]
    Recovery(WindowArgs),
    /// What resuming saved: stages not re-run and their recorded durations, over resumes in the window.
    #[command(
        after_help = "A resume is a run carrying on where a build had stopped (a failure, an \
operator's retry or reset, a lost lease); it saved the stages completed before it, each with \
the time from its in_progress to its completion. Stages completed without an in_progress have \
no recorded duration: UNKNOWN counts them (they are not in SAVED).

Examples:
  bldst report savings
  bldst report savings --days 30 --output json"
    )]
    Savings(WindowArgs),
}

#[derive(Debug, Args)]
struct StuckArgs {
    /// Quiet longer than this is stuck, e.g. 90m or 2h [default: the server's].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    after: Option<std::time::Duration>,
    /// A threshold for one stage code, CODE=DURATION (e.g. 10=6h); repeat for more.
    #[arg(long = "after-code", value_name = "CODE=DURATION", value_parser = parse_code_threshold)]
    after_code: Vec<(StateCode, std::time::Duration)>,
}

fn parse_code_threshold(text: &str) -> Result<(StateCode, std::time::Duration), String> {
    let (code, duration) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not CODE=DURATION, e.g. 10=6h"))?;
    let code: StateCode = code
        .trim()
        .parse()
        .map_err(|error| format!("`{text}`: {error}"))?;
    Ok((code, parse_duration(duration)?))
}

/// Runs `bldst report ...`.
pub async fn run(args: ReportArgs, context: &Context<'_>) -> Result<u8, CliError> {
    let client = context.client()?;
    let printer = &context.printer;
    match args.command {
        ReportCommand::Success(window) => {
            let report = client.success_report(window.days).await?;
            if printer.is_json() {
                return json(printer, &report);
            }
            printer.note(&format!("builds started since {}", time(&report.since)));
            success_table(printer, "PLATFORM", &report.by_platform)?;
            printer.line("")?;
            success_table(printer, "IMAGE TYPE", &report.by_image_type)?;
        }
        ReportCommand::Failures(window) => {
            let report = client.failure_report(window.days).await?;
            if printer.is_json() {
                return json(printer, &report);
            }
            printer.note(&format!("failures reported since {}", time(&report.since)));
            let mut table = printer.table(&[
                "STATE",
                "NAME",
                "FAILURES",
                "BUILDS",
                "RETRIES",
                "BLOCKED NOW",
            ]);
            for stage in &report.stages {
                table.add_row(vec![
                    Cell::new(stage.state),
                    Cell::new(&stage.state_name),
                    Cell::new(stage.failures),
                    Cell::new(stage.builds),
                    Cell::new(stage.retries),
                    Cell::new(stage.blocked_now),
                ]);
            }
            printer.print_fitted(table, &[1])?;
        }
        ReportCommand::Durations(window) => {
            let report = client.duration_report(window.days).await?;
            if printer.is_json() {
                return json(printer, &report);
            }
            printer.note(&format!("stages completed since {}", time(&report.since)));
            let mut table = printer.table(&["STATE", "NAME", "COUNT", "P50", "P90", "MAX"]);
            for stage in &report.stages {
                let mut row = vec![Cell::new(stage.state), Cell::new(&stage.state_name)];
                row.extend(stats_cells(Some(&stage.stats)));
                table.add_row(row);
            }
            printer.print_fitted(table, &[1])?;
        }
        ReportCommand::Stuck(args) => {
            let by_code = (!args.after_code.is_empty()).then(|| {
                args.after_code
                    .iter()
                    .map(|(code, after)| format!("{code}={}", after.as_secs()))
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let after = args.after.map(|after| after.as_secs());
            let report = client.stuck_report(after, by_code.as_deref()).await?;
            if printer.is_json() {
                return json(printer, &report);
            }
            let overrides: Vec<String> = report
                .stuck_after_by_code
                .iter()
                .map(|(code, secs)| format!("{code} after {}", human_secs(*secs as f64)))
                .collect();
            printer.note(&format!(
                "stuck: quiet for more than {}{}",
                human_secs(report.stuck_after_secs as f64),
                if overrides.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", overrides.join(", "))
                }
            ));
            printer.line(&format!("STUCK ({})", report.stuck.len()))?;
            attention_table(printer, &report.stuck)?;
            printer.line("")?;
            printer.line(&format!("BLOCKED ({})", report.blocked.len()))?;
            attention_table(printer, &report.blocked)?;
        }
        ReportCommand::Recovery(window) => {
            let report = client.recovery_report(window.days).await?;
            if printer.is_json() {
                return json(printer, &report);
            }
            printer.note(&format!("first failures since {}", time(&report.since)));
            let mut table = printer.table(&[
                "STATE",
                "NAME",
                "RECOVERED",
                "UNRECOVERED",
                "P50",
                "P90",
                "MAX",
            ]);
            let row = |state: String, name: &str, recovered: u64, unrecovered: u64, stats| {
                let mut row = vec![
                    Cell::new(state),
                    Cell::new(name),
                    Cell::new(recovered),
                    Cell::new(unrecovered),
                ];
                row.extend(stats_cells(stats).into_iter().skip(1));
                row
            };
            for StageRecovery {
                state,
                state_name,
                recovered,
                unrecovered,
                time_to_recover,
            } in &report.stages
            {
                table.add_row(row(
                    state.to_string(),
                    state_name,
                    *recovered,
                    *unrecovered,
                    time_to_recover.as_ref(),
                ));
            }
            let overall = &report.overall;
            table.add_row(row(
                "all".to_owned(),
                "every stage",
                overall.recovered,
                overall.unrecovered,
                overall.time_to_recover.as_ref(),
            ));
            printer.print_fitted(table, &[1])?;
        }
        ReportCommand::Savings(window) => {
            let report = client.savings_report(window.days).await?;
            if printer.is_json() {
                return json(printer, &report);
            }
            printer.note(&format!("resumes since {}", time(&report.since)));
            printer.line(&report.summary)?;
            printer.line("")?;
            let all = SavingsGroup {
                name: "all".to_owned(),
                totals: report.totals,
            };
            savings_table(printer, "PLATFORM", &report.by_platform, &all)?;
            printer.line("")?;
            savings_table(printer, "IMAGE TYPE", &report.by_image_type, &all)?;
            printer.line("")?;
            let mut table = printer.table(&[
                "ID",
                "PLATFORM",
                "IMAGE TYPE",
                "RESUMES",
                "STAGES NOT RE-RUN",
                "SAVED",
                "UNKNOWN",
            ]);
            for build in &report.top_builds {
                let mut row = vec![
                    Cell::new(build.id.as_str()),
                    Cell::new(build.platform.as_str()),
                    Cell::new(build.image_type.as_str()),
                ];
                row.extend(savings_cells(&build.totals));
                table.add_row(row);
            }
            printer.print_fitted(table, &[1, 2])?;
        }
    }
    Ok(exit::SUCCESS)
}

fn savings_table(
    printer: &Printer,
    group: &str,
    rows: &[SavingsGroup],
    all: &SavingsGroup,
) -> Result<(), CliError> {
    let mut table = printer.table(&[group, "RESUMES", "STAGES NOT RE-RUN", "SAVED", "UNKNOWN"]);
    for group in rows.iter().chain([all]) {
        let mut row = vec![Cell::new(&group.name)];
        row.extend(savings_cells(&group.totals));
        table.add_row(row);
    }
    printer.print_fitted(table, &[0])
}

/// RESUMES, STAGES NOT RE-RUN, SAVED and UNKNOWN cells.
fn savings_cells(totals: &SavingsTotals) -> Vec<Cell> {
    vec![
        Cell::new(totals.resumes),
        Cell::new(totals.stages_not_rerun),
        Cell::new(human_secs(totals.saved_ms as f64 / 1000.0)),
        Cell::new(totals.unknown_durations),
    ]
}

fn json<T: serde::Serialize>(printer: &Printer, report: &T) -> Result<u8, CliError> {
    printer.json(report)?;
    Ok(exit::SUCCESS)
}

fn success_table(printer: &Printer, group: &str, rows: &[SuccessCounts]) -> Result<(), CliError> {
    let mut table = printer.table(&[
        group,
        "BUILDS",
        "COMPLETED",
        "BLOCKED",
        "CANCELLED",
        "UNFINISHED",
        "SUCCESS",
    ]);
    for counts in rows {
        table.add_row(vec![
            Cell::new(&counts.name),
            Cell::new(counts.builds),
            Cell::new(counts.completed),
            Cell::new(counts.blocked),
            Cell::new(counts.cancelled),
            Cell::new(counts.unfinished),
            Cell::new(
                counts
                    .success_rate
                    .map_or_else(|| "-".to_owned(), |rate| format!("{:.1}%", rate * 100.0)),
            ),
        ]);
    }
    printer.print_fitted(table, &[0])
}

fn attention_table(printer: &Printer, builds: &[AttentionBuild]) -> Result<(), CliError> {
    let mut table = printer.table(&[
        "ID",
        "PLATFORM",
        "IMAGE TYPE",
        "STATE",
        "STATUS",
        "FAILURES",
        "QUIET SINCE",
        "QUIET FOR",
        "LAST MESSAGE",
    ]);
    for build in builds {
        table.add_row(vec![
            Cell::new(build.id.as_str()),
            Cell::new(build.platform.as_str()),
            Cell::new(build.image_type.as_str()),
            Cell::new(format!("{} {}", build.state, build.state_name)),
            printer.status_cell(build.status),
            Cell::new(build.failures),
            Cell::new(time(&build.quiet_since)),
            Cell::new(human_secs(build.idle_secs as f64)),
            Cell::new(first_line(build.last_message.as_deref())),
        ]);
    }
    printer.print_fitted(table, &[1, 2, 3, 8])
}

/// COUNT, P50, P90 and MAX cells; dashes when there is nothing to measure.
fn stats_cells(stats: Option<&DurationStats>) -> Vec<Cell> {
    match stats {
        Some(stats) => vec![
            Cell::new(stats.count),
            Cell::new(human_secs(stats.p50_secs)),
            Cell::new(human_secs(stats.p90_secs)),
            Cell::new(human_secs(stats.max_secs)),
        ],
        None => vec![Cell::new(0), Cell::new("-"), Cell::new("-"), Cell::new("-")],
    }
}

/// A duration for people: `850ms`, `42.5s`, `7m 05s`, `3h 20m`, `2d 04h`.
pub fn human_secs(secs: f64) -> String {
    if secs <= 0.0 {
        return "0s".to_owned();
    }
    if secs < 1.0 {
        return format!("{}ms", (secs * 1000.0).round() as u64);
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let whole = secs.round() as u64;
    let (days, hours, minutes, seconds) = (
        whole / 86_400,
        whole / 3600 % 24,
        whole / 60 % 60,
        whole % 60,
    );
    if days > 0 {
        format!("{days}d {hours:02}h")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m")
    } else {
        format!("{minutes}m {seconds:02}s")
    }
}

fn first_line(text: Option<&str>) -> String {
    text.and_then(|text| text.trim().lines().next())
        .map_or_else(|| "-".to_owned(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_secs(0.0), "0s");
        assert_eq!(human_secs(0.25), "250ms");
        assert_eq!(human_secs(42.46), "42.5s");
        assert_eq!(human_secs(425.0), "7m 05s");
        assert_eq!(human_secs(12_000.0), "3h 20m");
        assert_eq!(human_secs(187_200.0), "2d 04h");
    }

    #[test]
    fn a_code_threshold_is_a_code_and_a_duration() {
        let (code, after) = parse_code_threshold("10=6h").expect("valid");
        assert_eq!((code.value(), after.as_secs()), (10, 21_600));
        assert!(parse_code_threshold("12=6h").is_err());
        assert!(parse_code_threshold("10").is_err());
        assert!(parse_code_threshold("10=soon").is_err());
    }
}
