//! `out`: start or resume the build of the line, then (optionally) report a transition, and
//! answer with the version of the newest transition so the implicit `get` that follows reads it.
//!
//! The report is idempotent within a Concourse build: its `Idempotency-Key` is derived from the
//! build's `BUILD_*` metadata and the report itself, so a put re-run by `attempts:` or a request
//! retried after a lost answer records one transition. A report refused because its stage is
//! still backing off waits the backoff out first ([`crate::backoff`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buildstate_client::api::{Client, ClientError};
use buildstate_client::ci;
use buildstate_client::env::EnvMap;
use buildstate_client::message::{keep_tail, read_message};
use buildstate_domain::limits::MAX_MESSAGE_CHARS;
use buildstate_domain::wire::{
    Build, ErrorCode, HistoryQuery, ReportTransition, StageAlreadyCompletedDetails, StartBuild,
};
use buildstate_domain::{BuildKey, Labels, ReportStatus};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::backoff;
use crate::connection::{concourse_run, describe};
use crate::get::metadata;
use crate::log::Log;
use crate::schema::{OutParams, OutRequest, ReportFile, Source, Version};

/// Runs `out` with the put's inputs under `directory`.
pub async fn put(
    client: &Client,
    request: &OutRequest,
    directory: &Path,
    env: &EnvMap,
    log: &Log,
) -> Result<Value, String> {
    let source = &request.source;
    source.validate()?;
    log.set_debug(source.debug);
    let params = request.params.clone().unwrap_or_default();
    let lookup = |name: &str| env.get(name);
    // Everything the params say is read before any call, so bad input changes nothing.
    let run = concourse_run(env);
    let report = report_of(&params, directory, env, source.token.expose())?.map(|mut report| {
        report.source = ci::report_source(None, &lookup);
        report.run = run.clone();
        report
    });
    let build = start_or_resume(client, source, env, log).await?;
    let id = build.id.clone();
    let (build, version) = match report {
        Some(report) => {
            let key = idempotency_key(env, &id, &report);
            log.debug(|| {
                format!(
                    "reporting stage {} {} on build `{id}`",
                    report.state, report.status
                )
            });
            let max_wait = Duration::from_secs(
                params
                    .backoff_max_wait_seconds
                    .or(source.backoff_max_wait_seconds)
                    .unwrap_or(backoff::DEFAULT_MAX_WAIT_SECONDS),
            );
            let reported =
                backoff::report_after_backoff(client, &id, &report, key.as_deref(), max_wait, log)
                    .await;
            let result = match reported {
                Ok(result) => result,
                // A re-run puts `in_progress` on every stage before its task; on a stage that
                // already completed there is nothing to record, and the implicit get's gate
                // file tells the task to skip.
                Err(ClientError::Api {
                    code: ErrorCode::StageAlreadyCompleted,
                    details,
                    ..
                }) if report.status == ReportStatus::InProgress => {
                    log.line(format!(
                        "build `{id}`: stage {} already completed; nothing recorded, its gate says skip",
                        report.state
                    ));
                    // The refusal says where the build stands; a server from before it did
                    // is asked.
                    let (build, version) = match details.and_then(|details| {
                        serde_json::from_value::<StageAlreadyCompletedDetails>(details).ok()
                    }) {
                        Some(details) => {
                            let version = Version::of(&id, &details.last_entry);
                            (details.build, version)
                        }
                        None => {
                            let build = client
                                .get_build(&id)
                                .await
                                .map_err(|error| describe(&error))?;
                            let version = newest_version(client, &build).await?;
                            (build, version)
                        }
                    };
                    return Ok(json!({
                        "version": version,
                        "metadata": metadata(&build, &source.api_url),
                    }));
                }
                Err(error) => return Err(describe(&error)),
            };
            log.line(format!("build `{id}`: {}", result.note));
            if let Some(lease) = result
                .build
                .lease
                .as_ref()
                .filter(|lease| Some(&lease.holder) == run.as_ref())
            {
                log.line(format!(
                    "stage {} is held by this run (`{}`) until {}; its later puts in this build may report on it",
                    lease.stage,
                    lease.holder,
                    lease.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
            // Recorded: the newest entry is the last recorded; already done: the answer names it.
            match result.recorded.last().or(result.last_entry.as_ref()) {
                Some(entry) => (result.build.clone(), Version::of(&id, entry)),
                None => {
                    let version = newest_version(client, &result.build).await?;
                    (result.build, version)
                }
            }
        }
        None => {
            let version = newest_version(client, &build).await?;
            (build, version)
        }
    };
    Ok(json!({
        "version": version,
        "metadata": metadata(&build, &source.api_url),
    }))
}

/// The report the params describe, or `None` when they only ask to start or resume.
fn report_of(
    params: &OutParams,
    directory: &Path,
    env: &EnvMap,
    token: &str,
) -> Result<Option<ReportTransition>, String> {
    let from_file = match &params.file {
        Some(file) => {
            if params.state.is_some()
                || params.message.is_some()
                || params.expected_state.is_some()
                || params.outputs.is_some()
            {
                return Err(
                    "`params.file` holds the report: leave out `state`, `message`, `expected_state` and `outputs`"
                        .to_owned(),
                );
            }
            let path = inside(directory, file, "params.file")?;
            let text = std::fs::read_to_string(&path)
                .map_err(|error| format!("cannot read `params.file` `{file}`: {error}"))?;
            let report: ReportFile = serde_json::from_str(&text)
                .map_err(|error| format!("`params.file` `{file}` is not a report: {error}"))?;
            Some(report)
        }
        None => None,
    };
    let state = from_file.as_ref().map(|file| file.state).or(params.state);
    let Some(state) = state else {
        if params.status.is_some()
            || params.status_from_build
            || params.message.is_some()
            || params.message_file.is_some()
            || params.outputs.is_some()
        {
            return Err("`params.state` is missing: which stage is this report about?".to_owned());
        }
        return Ok(None);
    };
    let status = match (
        from_file.as_ref().and_then(|file| file.status),
        params.status,
        params.status_from_build,
    ) {
        (Some(_), Some(_), _) => {
            return Err("the status is in both `params.file` and `params.status`".to_owned())
        }
        (_, Some(_), true) => {
            return Err("set `params.status` or `params.status_from_build`, not both".to_owned())
        }
        (Some(status), None, false) | (None, Some(status), false) => status,
        (_, None, true) => status_from_build(env)?,
        (None, None, false) => {
            return Err(
                "`params.status` is missing: `in_progress`, `completed` or `failed` (or `status_from_build: true` in a hook)"
                    .to_owned(),
            )
        }
    };
    let message = match (&params.message, &params.message_file) {
        (Some(_), Some(_)) => {
            return Err("set `params.message` or `params.message_file`, not both".to_owned())
        }
        (Some(message), None) => Some(keep_tail(message, MAX_MESSAGE_CHARS)),
        (None, Some(file)) => {
            let path = inside(directory, file, "params.message_file")?;
            let mut reader = std::fs::File::open(&path)
                .map_err(|error| format!("cannot read `params.message_file` `{file}`: {error}"))?;
            Some(
                read_message(&mut reader).map_err(|error| {
                    format!("cannot read `params.message_file` `{file}`: {error}")
                })?,
            )
        }
        (None, None) => from_file.as_ref().and_then(|file| file.message.clone()),
    };
    let expected_state = from_file
        .as_ref()
        .and_then(|file| file.expected_state)
        .or(params.expected_state);
    let outputs = from_file
        .as_ref()
        .and_then(|file| file.outputs.clone())
        .or_else(|| params.outputs.clone())
        .unwrap_or_default();
    let where_from = if params.file.is_some() {
        "`params.file`"
    } else {
        "`params.outputs`"
    };
    outputs
        .check_status(status)
        .map_err(|error| format!("{where_from}: {error}"))?;
    outputs
        .refuse_token(token)
        .map_err(|error| format!("{where_from}: {error}"))?;
    Ok(Some(ReportTransition {
        state,
        status,
        message,
        expected_state,
        outputs,
        ..ReportTransition::new(state, status)
    }))
}

/// `BUILD_STATUS` (Concourse 8.2+, in hooks) as a report status.
fn status_from_build(env: &EnvMap) -> Result<ReportStatus, String> {
    match env.get("BUILD_STATUS").as_deref() {
        Some("succeeded") => Ok(ReportStatus::Completed),
        Some("failed" | "errored" | "aborted") => Ok(ReportStatus::Failed),
        Some(other) => Err(format!(
            "`status_from_build`: BUILD_STATUS is `{other}`, expected succeeded, failed, errored or aborted"
        )),
        None => Err(
            "`status_from_build` needs BUILD_STATUS, which Concourse sets only in on_success/on_failure/on_error/on_abort hooks (8.2 and later); set `params.status` instead"
                .to_owned(),
        ),
    }
}

/// `relative` under `directory`, refusing a path that leaves it (also through a symlink).
fn inside(directory: &Path, relative: &str, what: &str) -> Result<PathBuf, String> {
    let candidate = Path::new(relative);
    if candidate.is_absolute() {
        return Err(format!(
            "`{what}` `{relative}` must be relative to the put's input directory"
        ));
    }
    let root = directory.canonicalize().map_err(|error| {
        format!(
            "cannot read the directory `{}`: {error}",
            directory.display()
        )
    })?;
    let path = root
        .join(candidate)
        .canonicalize()
        .map_err(|error| format!("cannot read `{what}` `{relative}`: {error}"))?;
    if !path.starts_with(&root) {
        return Err(format!(
            "`{what}` `{relative}` leaves the put's input directory"
        ));
    }
    Ok(path)
}

/// Starts the line's build, or resumes its unfinished one (`build_id` given: reads that one).
async fn start_or_resume(
    client: &Client,
    source: &Source,
    env: &EnvMap,
    log: &Log,
) -> Result<Build, String> {
    if let Some(id) = &source.build_id {
        return client.get_build(id).await.map_err(|error| describe(&error));
    }
    let (Some(platform), Some(image_type)) = (&source.platform, &source.image_type) else {
        return Err("`source` needs `platform` and `image_type`".to_owned());
    };
    let key = match &source.key {
        Some(key) => key.clone(),
        None => format!("{platform}/{image_type}")
            .parse::<BuildKey>()
            .map_err(|error| {
                format!("cannot make a key from the platform and image type: {error}")
            })?,
    };
    let mut labels: BTreeMap<String, String> = source.labels.clone();
    for (label, variable) in [
        ("concourse_team", "BUILD_TEAM_NAME"),
        ("concourse_pipeline", "BUILD_PIPELINE_NAME"),
        ("concourse_job", "BUILD_JOB_NAME"),
        ("concourse_build", "BUILD_NAME"),
        ("concourse_url", "ATC_EXTERNAL_URL"),
    ] {
        if let Some(value) = env.get(variable) {
            labels.entry(label.to_owned()).or_insert(value);
        }
    }
    let labels = Labels::try_from(labels).map_err(|error| format!("labels: {error}"))?;
    let request = StartBuild {
        platform: platform.clone(),
        image_type: image_type.clone(),
        description: source.description.clone(),
        key: Some(key),
        labels,
        max_retries: source.max_retries,
        retry_policy: source.retry_policy.clone(),
    };
    let started = client
        .start_build(&request)
        .await
        .map_err(|error| describe(&error))?;
    if let Some(warning) = &started.warning {
        log.line(format!("warning: {warning}"));
    }
    let build = started.build;
    log.line(if started.resumed {
        format!(
            "resumed build `{}` at stage {} ({})",
            build.id, build.state, build.status
        )
    } else {
        format!("started build `{}`", build.id)
    });
    Ok(build)
}

/// The version of the build's newest transition.
async fn newest_version(client: &Client, build: &Build) -> Result<Version, String> {
    let query = HistoryQuery {
        after: Some(build.last_seq - 1),
        limit: Some(1),
    };
    let page = client
        .history_page(&build.id, &query)
        .await
        .map_err(|error| describe(&error))?;
    page.entries
        .first()
        .map(|entry| Version::of(&build.id, entry))
        .ok_or_else(|| {
            format!(
                "build `{}` has no history entry {}",
                build.id, build.last_seq
            )
        })
}

/// A key that is the same for the same report from the same Concourse build (so `attempts:`
/// and retried requests record it once), or `None` outside a Concourse build.
fn idempotency_key(
    env: &EnvMap,
    id: &buildstate_domain::BuildId,
    report: &ReportTransition,
) -> Option<String> {
    let concourse_build = env.get("BUILD_ID")?;
    let mut digest = Sha256::new();
    for part in [
        env.get("ATC_EXTERNAL_URL").unwrap_or_default(),
        env.get("BUILD_TEAM_NAME").unwrap_or_default(),
        concourse_build,
        id.to_string(),
        serde_json::to_string(report).unwrap_or_default(),
    ] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    Some(format!("concourse-{}", hex::encode(digest.finalize())))
}
