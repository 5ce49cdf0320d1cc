//! `bldst build watch ID`: follows a build over its event stream
//! ([`buildstate_client::events::follow_build`]), one line per transition, until the build is
//! completed, blocked or cancelled, or the user presses Ctrl-C.

use std::ops::ControlFlow;

use buildstate_client::events::follow_build;
use buildstate_domain::wire::{BuildEvent, HistoryEntry};
use buildstate_domain::{BuildId, BuildStatus};

use super::context::Context;
use super::error::CliError;
use super::output::{next_attempt, time};
use buildstate_client::failure::exit;

/// Exit code after Ctrl-C, the shell's convention for SIGINT.
pub const INTERRUPTED: u8 = 130;

/// Follows build `id` from now on, or after history entry `after` (0: the whole history).
pub async fn run(id: &BuildId, after: Option<i64>, context: &Context<'_>) -> Result<u8, CliError> {
    let client = context.client_telling_retries()?;
    let build = client.get_build(id).await?;
    let printer = &context.printer;
    let start = after.unwrap_or(build.last_seq).min(build.last_seq);
    if start >= build.last_seq && build.status.is_settled() {
        printer.note(&format!(
            "build `{id}` is {} at stage {} ({}): nothing more will happen",
            build.status, build.state, build.state_name
        ));
        return Ok(exit_code(build.status));
    }
    printer.note(&format!(
        "following build `{id}` at stage {} ({}), {}; Ctrl-C stops",
        build.state, build.state_name, build.status
    ));
    let mut failed_print = None;
    let mut final_status = None;
    let follow = follow_build(&client, id, start, |event| {
        let printed = if printer.is_json() {
            serde_json::to_string(event)
                .map_err(|error| CliError::failure(format!("cannot encode an event: {error}")))
                .and_then(|line| printer.line(&line))
        } else {
            printer.line(&transition_line(event))
        };
        if let Err(error) = printed {
            failed_print = Some(error);
            return ControlFlow::Break(());
        }
        if event.settles_the_build() {
            final_status = Some(event.build.status);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    tokio::select! {
        followed = follow => followed?,
        _ = tokio::signal::ctrl_c() => return Ok(INTERRUPTED),
    }
    if let Some(error) = failed_print {
        return Err(error);
    }
    Ok(final_status.map_or(exit::SUCCESS, exit_code))
}

fn exit_code(status: BuildStatus) -> u8 {
    match status {
        BuildStatus::Completed => exit::SUCCESS,
        _ => exit::GATE_STOP,
    }
}

/// One transition: when, the entry, and where it left the build, e.g.
/// `2025-01-02T10:00:00Z  #7  55 failed (attempt 2)  -> failed at 55 run_tests, next attempt:
/// 2025-01-02T10:01:00Z (in 60s), attempt 3 of 4  "mirror down"`.
fn transition_line(event: &BuildEvent) -> String {
    let HistoryEntry {
        seq,
        state,
        kind,
        attempt,
        message,
        recorded_at,
        ..
    } = &event.entry;
    let attempt = attempt.map_or_else(String::new, |n| format!(" (attempt {n})"));
    let mut line = format!(
        "{}  #{seq}  {state} {kind}{attempt}",
        time(recorded_at),
        kind = kind.as_str()
    );
    // A replayed entry carries the build as it is now: only the latest says where it is.
    if *seq >= event.build.last_seq {
        let build = &event.build;
        line.push_str(&format!(
            "  -> {} at {} {}",
            build.status, build.state, build.state_name
        ));
        // A failed or blocked build: when it runs again, or that it will not by itself.
        if matches!(build.status, BuildStatus::Failed | BuildStatus::Blocked) {
            line.push_str(&format!(", next attempt: {}", next_attempt(build)));
        }
    }
    if let Some(first) = message
        .as_deref()
        .and_then(|text| text.trim().lines().next())
    {
        line.push_str(&format!("  {first:?}"));
    }
    line
}
