//! A put that arrives while its stage backs off after a failure (a job re-triggered by hand, or
//! by a version that came before the backoff ended) waits the backoff out and reports then,
//! instead of failing the step with `retry_too_soon`. The wait is bounded
//! (`backoff_max_wait_seconds`, in `source` or `params`) and every wait is logged on stderr.

use std::time::Duration;

use buildstate_client::api::{Client, ClientError};
use buildstate_domain::wire::{ErrorCode, ReportTransition, TransitionResult};
use buildstate_domain::BuildId;

use crate::log::Log;

/// The longest a put waits out a backoff when neither `source` nor `params` says:
/// the server's backoffs are 30 s, 60 s, 120 s by default, all well within it.
pub const DEFAULT_MAX_WAIT_SECONDS: u64 = 900;

/// Reports `report` on build `id`; while the server answers `retry_too_soon`, waits the
/// seconds it names and reports again, as long as the waits add up to at most `max_wait`.
/// Past that (or with a zero `max_wait`) the refusal is returned as it came.
pub async fn report_after_backoff(
    client: &Client,
    id: &BuildId,
    report: &ReportTransition,
    idempotency_key: Option<&str>,
    max_wait: Duration,
    log: &Log,
) -> Result<TransitionResult, ClientError> {
    let mut waited = Duration::ZERO;
    loop {
        let error = match client.report_transition(id, report, idempotency_key).await {
            Err(error @ ClientError::Api { .. })
                if error.code() == Some(&ErrorCode::RetryTooSoon) =>
            {
                error
            }
            other => return other,
        };
        let seconds = wait_seconds(&error).max(1);
        let wait = Duration::from_secs(seconds);
        if waited + wait > max_wait {
            log.line(format!(
                "stage {} of build `{id}` is backing off for {seconds}s more, beyond `backoff_max_wait_seconds` ({}s): not waiting",
                report.state,
                max_wait.as_secs()
            ));
            return Err(error);
        }
        log.line(format!(
            "stage {} of build `{id}` is backing off after a failure: waiting {seconds}s before reporting `{}` (at most {}s in all, `backoff_max_wait_seconds`)",
            report.state,
            report.status,
            max_wait.as_secs()
        ));
        tokio::time::sleep(wait).await;
        waited += wait;
    }
}

/// `details.wait_seconds` of a `retry_too_soon` refusal (1 when absent).
fn wait_seconds(error: &ClientError) -> u64 {
    match error {
        ClientError::Api { details, .. } => details
            .as_ref()
            .and_then(|details| details.get("wait_seconds"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1),
        _ => 1,
    }
}
