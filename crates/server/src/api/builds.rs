//! Build endpoints: start-or-resume, read, list, report a transition, heartbeat and release a
//! stage's lease, history, gate, and the operator actions.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use buildstate_domain::limits::{
    BUILD_PAGE_DEFAULT, BUILD_PAGE_MAX, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX,
    MAX_DESCRIPTION_CHARS, MAX_IDEMPOTENCY_KEY_LEN, MAX_MESSAGE_CHARS, MAX_RETRIES_LIMIT,
    MAX_RUN_CHARS, MAX_SOURCE_CHARS,
};
use buildstate_domain::wire::{
    Build, BuildPage, BuildQuery, ErrorBody, GateAnswer, HistoryPage, HistoryQuery, LeaseRequest,
    OperatorReason, ReportTransition, ResetBuild, StartBuild, StartedBuild, TransitionResult,
    MAX_OFFSET,
};
use buildstate_domain::{
    fields::check_free_text, gate, BuildId, InvalidOutputs, Lease, OperatorAction, Report, Scope,
    StateCode,
};
use chrono::Utc;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{bearer_token, ApiJson, ApiQuery, Authenticated, Id};
use crate::db::{Started, StoreError, TransitionRequest};
use crate::state::AppState;

fn invalid_outputs(error: InvalidOutputs) -> ApiError {
    ApiError::invalid_field(error.field.clone(), error.to_string())
}

/// Maps a store error for build `id`, turning rule refusals into 409s that name the build.
fn for_build(id: &BuildId) -> impl Fn(StoreError) -> ApiError + '_ {
    move |error| match error {
        StoreError::Refused(refusal) => ApiError::refused(id, &refusal),
        StoreError::RefusedAt {
            refusal,
            build,
            last_entry,
        } => ApiError::refused_at(id, &refusal, *build, *last_entry),
        other => other.into(),
    }
}

fn state_param(field: &str, raw: &str) -> Result<StateCode, ApiError> {
    raw.parse()
        .map_err(|error: buildstate_domain::InvalidStateCode| {
            ApiError::invalid_field(field, error.to_string())
        })
}

fn check_text(field: &'static str, text: Option<&str>, max: usize) -> Result<(), ApiError> {
    match text {
        Some(text) => check_free_text(field, text, max)
            .map_err(|error| ApiError::invalid_field(field, error.to_string())),
        None => Ok(()),
    }
}

/// Where a started build's id is in the answer: what its links (to reading it, reporting on it,
/// its history, its gate and the operator actions) pass as their `id`.
const STARTED_BUILD_ID: &str = "$response.body#/build/id";

/// Start a build, or resume the unfinished build with the same `key`.
#[utoipa::path(post, path = "/builds", tag = "builds", request_body = StartBuild,
    responses(
        (status = 201, description = "a new build", body = StartedBuild, links(
            ("GetBuild" = (operation_id = "get_build", parameters(("id" = STARTED_BUILD_ID)))),
            ("ReportTransition" = (operation_id = "report_transition", parameters(("id" = STARTED_BUILD_ID)))),
            ("GetHistory" = (operation_id = "get_history", parameters(("id" = STARTED_BUILD_ID)))),
            ("GateStage" = (operation_id = "gate_stage", parameters(("id" = STARTED_BUILD_ID)))),
            ("RetryBuild" = (operation_id = "retry_build", parameters(("id" = STARTED_BUILD_ID)))),
            ("ResetBuild" = (operation_id = "reset_build", parameters(("id" = STARTED_BUILD_ID)))),
            ("CancelBuild" = (operation_id = "cancel_build", parameters(("id" = STARTED_BUILD_ID)))),
        )),
        (status = 200, description = "the unfinished build with this key, resumed", body = StartedBuild, links(
            ("GetBuild" = (operation_id = "get_build", parameters(("id" = STARTED_BUILD_ID)))),
            ("ReportTransition" = (operation_id = "report_transition", parameters(("id" = STARTED_BUILD_ID)))),
            ("GetHistory" = (operation_id = "get_history", parameters(("id" = STARTED_BUILD_ID)))),
            ("GateStage" = (operation_id = "gate_stage", parameters(("id" = STARTED_BUILD_ID)))),
            ("RetryBuild" = (operation_id = "retry_build", parameters(("id" = STARTED_BUILD_ID)))),
            ("ResetBuild" = (operation_id = "reset_build", parameters(("id" = STARTED_BUILD_ID)))),
            ("CancelBuild" = (operation_id = "cancel_build", parameters(("id" = STARTED_BUILD_ID)))),
        )),
        (status = 409, description = "a build with this key was started at the same moment; try again", body = ErrorBody),
        (status = 422, description = "a field broke a rule", body = ErrorBody),
    ),
    security(("bearer" = ["write"])))]
pub async fn start_build(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(request): ApiJson<StartBuild>,
) -> Result<(StatusCode, Json<StartedBuild>), ApiError> {
    let actor = auth.require(Scope::Write)?;
    check_text(
        "description",
        request.description.as_deref(),
        MAX_DESCRIPTION_CHARS,
    )?;
    let max_retries = request.max_retries.unwrap_or(state.default_max_retries);
    if max_retries > MAX_RETRIES_LIMIT {
        return Err(ApiError::invalid_field(
            "max_retries",
            format!(
                "must be 0 to {MAX_RETRIES_LIMIT}: the failures a stage may have before its build \
                 is blocked for a person"
            ),
        ));
    }
    let started = state
        .db
        .start_build(&request, max_retries, actor, Utc::now())
        .await?;
    Ok(match started {
        Started::New { build, started } => {
            // The event stream shows the new build with its first entry ("started").
            state.announce(&build, std::slice::from_ref(&started));
            let answer = StartedBuild {
                build,
                resumed: false,
                warning: None,
            };
            (StatusCode::CREATED, Json(answer))
        }
        Started::Resumed(build) => {
            let warning = request.policy_not_applied(&build);
            if let Some(warning) = &warning {
                tracing::info!(build = %build.id, "{warning}");
            }
            let answer = StartedBuild {
                build,
                resumed: true,
                warning,
            };
            (StatusCode::OK, Json(answer))
        }
    })
}

/// List builds, newest first.
#[utoipa::path(get, path = "/builds", tag = "builds", params(BuildQuery),
    responses((status = 200, body = BuildPage), (status = 400, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn list_builds(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<BuildQuery>,
) -> Result<Json<BuildPage>, ApiError> {
    auth.require(Scope::Read)?;
    let filter = query
        .filter()
        .map_err(|error| ApiError::invalid_field(error.field, error.message))?;
    let limit = query.limit.unwrap_or(BUILD_PAGE_DEFAULT);
    if limit == 0 || limit > BUILD_PAGE_MAX {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be 1 to {BUILD_PAGE_MAX}"),
        ));
    }
    let offset = query.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::invalid_field(
            "offset",
            format!(
                "must be at most {MAX_OFFSET}: narrow the list (platform, image type, status, key) \
                 instead of paging that far"
            ),
        ));
    }
    let page = state.db.list_builds(&filter, limit, offset).await?;
    Ok(Json(page))
}

/// One build.
#[utoipa::path(get, path = "/builds/{id}", tag = "builds",
    params(("id" = String, Path, description = "build id")),
    responses((status = 200, body = Build), (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn get_build(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
) -> Result<Json<Build>, ApiError> {
    auth.require(Scope::Read)?;
    Ok(Json(state.db.get_build(&id).await?))
}

/// Report a transition: a stage is in progress, completed or failed.
///
/// With an `Idempotency-Key` header, a report that was already applied returns its first
/// answer again and changes nothing.
///
/// A `completed` report may carry `outputs` for the runs that resume the build. An
/// `in_progress` report from an identified run (`run`, else `source`) claims the stage for a
/// lease time; while the lease is live, other runs' reports on the stage are refused with
/// `stage_leased`; a report carrying a `fence` that is no longer the lease's is refused with
/// `lease_lost`.
#[utoipa::path(post, path = "/builds/{id}/transitions", tag = "builds",
    request_body = ReportTransition,
    params(
        ("id" = String, Path, description = "build id"),
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, min_length = 1,
            pattern = "^[\\x21-\\x7e]([\\x20-\\x7e]{0,253}[\\x21-\\x7e])?$",
            description = "makes the report safe to retry: 1 to 255 visible ASCII characters"),
    ),
    responses(
        (status = 200, description = "applied, or already done (`changed: false`, with the build's `last_entry`)", body = TransitionResult),
        (status = 404, body = ErrorBody),
        (status = 409, description = "a transition rule refused the report: `stage_leased` (another run holds the stage), `lease_lost` (a stale fence) and the rule codes; `stage_already_completed` says where the build stands in its `details` (`StageAlreadyCompletedDetails`)", body = ErrorBody),
        (status = 422, description = "a field broke a rule, e.g. `outputs.ami_id`", body = ErrorBody),
    ),
    security(("bearer" = ["write"])))]
pub async fn report_transition(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    headers: HeaderMap,
    ApiJson(report): ApiJson<ReportTransition>,
) -> Result<Json<TransitionResult>, ApiError> {
    let actor = auth.require(Scope::Write)?;
    check_text("message", report.message.as_deref(), MAX_MESSAGE_CHARS)?;
    check_text("source", report.source.as_deref(), MAX_SOURCE_CHARS)?;
    check_run("run", report.run.as_deref())?;
    report
        .outputs
        .check_status(report.status)
        .map_err(invalid_outputs)?;
    if let Some(token) = bearer_token(&headers) {
        report
            .outputs
            .refuse_token(token)
            .map_err(invalid_outputs)?;
    }
    let idempotency = idempotency_key(&headers)?.map(|key| {
        // The canonical re-serialisation, so whitespace or key order do not matter.
        let canonical = serde_json::to_vec(&report).unwrap_or_default();
        (key, hex::encode(Sha256::digest(canonical)))
    });
    let request = TransitionRequest {
        report: Report::from(&report),
        message: report.message,
        source: report.source,
        idempotency,
    };
    let change = state
        .db
        .record_transition(&id, &request, &state.retry_policy, actor)
        .await
        .map_err(for_build(&id))?;
    // A replayed answer's entries were published when they were recorded.
    state.announce(change.build(), change.recorded_now());
    if let Some(resume) = change.resumed_now() {
        state.metrics.observe_resume(change.build(), resume);
    }
    Ok(Json(change.into_answer()))
}

fn check_run(field: &'static str, run: Option<&str>) -> Result<(), ApiError> {
    if run.is_some_and(|run| run.trim().is_empty()) {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    check_text(field, run, MAX_RUN_CHARS)
}

fn lease_request(request: &LeaseRequest) -> Result<(), ApiError> {
    check_run("run", request.run.as_deref())?;
    if request.run.is_none() && request.fence.is_none() {
        return Err(ApiError::invalid_field(
            "run",
            "name the run holding the lease (`run`) or give its `fence`",
        ));
    }
    Ok(())
}

/// Heartbeat: the run holding the stage's lease extends it by the server's lease time.
///
/// Name the run (`run`) or prove it with the lease's `fence`. Refused with `stage_leased` when
/// another run holds the stage, `lease_lost` when the fence is no longer the lease's, and
/// `not_leased` when nobody (or not this run) holds it. Appends no history.
#[utoipa::path(post, path = "/builds/{id}/heartbeat", tag = "builds", request_body = LeaseRequest,
    params(("id" = String, Path, description = "build id")),
    responses(
        (status = 200, description = "the lease, extended", body = Lease),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`stage_leased`, `lease_lost` or `not_leased`", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = ["write"])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    ApiJson(request): ApiJson<LeaseRequest>,
) -> Result<Json<Lease>, ApiError> {
    auth.require(Scope::Write)?;
    lease_request(&request)?;
    let lease = state
        .db
        .renew_lease(
            &id,
            request.state,
            request.run.as_deref(),
            request.fence,
            &state.retry_policy,
        )
        .await
        .map_err(for_build(&id))?;
    Ok(Json(lease))
}

/// Release: the run holding the stage's lease gives it up without reporting on the stage (its
/// command was interrupted). The build stays `in_progress`; any run may claim the stage.
#[utoipa::path(post, path = "/builds/{id}/release", tag = "builds", request_body = LeaseRequest,
    params(("id" = String, Path, description = "build id")),
    responses(
        (status = 200, description = "the build, its stage no longer leased", body = Build),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`stage_leased`, `lease_lost` or `not_leased`", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = ["write"])))]
pub async fn release_lease(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    ApiJson(request): ApiJson<LeaseRequest>,
) -> Result<Json<Build>, ApiError> {
    auth.require(Scope::Write)?;
    lease_request(&request)?;
    let build = state
        .db
        .release_lease(&id, request.state, request.run.as_deref(), request.fence)
        .await
        .map_err(for_build(&id))?;
    Ok(Json(build))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // Visible ASCII and inner spaces, as the OpenAPI document's pattern says (HTTP already
    // strips the value's outer whitespace).
    let key = std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|key| {
            !key.is_empty()
                && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && key.bytes().all(|byte| (0x20..=0x7e).contains(&byte))
                && !key.starts_with(' ')
                && !key.ends_with(' ')
        })
        .ok_or_else(|| {
            ApiError::invalid_field(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// A build's history, oldest first, after a sequence number.
#[utoipa::path(get, path = "/builds/{id}/history", tag = "builds",
    params(("id" = String, Path, description = "build id"), HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn get_history(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    auth.require(Scope::Read)?;
    let limit = query.limit.unwrap_or(HISTORY_PAGE_DEFAULT);
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be 1 to {HISTORY_PAGE_MAX}"),
        ));
    }
    let page = state
        .db
        .history_after(&id, query.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GateQuery {
    /// The stage about to run (required: a 422 names it when absent).
    #[param(value_type = StateCode, required = true)]
    state: Option<String>,
    /// The asking run's identity: the run holding the stage gets `run`, every other `wait`.
    #[param(schema_with = buildstate_domain::wire::schemas::run)]
    run: Option<String>,
}

/// Should this stage run? `run`, `skip`, `wait` (with seconds) or `stop`.
///
/// `wait` also answers while another run holds the stage being worked on, with the seconds
/// left on its lease.
#[utoipa::path(get, path = "/builds/{id}/gate", tag = "builds",
    params(("id" = String, Path, description = "build id"), GateQuery),
    responses((status = 200, body = GateAnswer), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn gate_stage(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    ApiQuery(query): ApiQuery<GateQuery>,
) -> Result<Json<GateAnswer>, ApiError> {
    auth.require(Scope::Read)?;
    check_run("run", query.run.as_deref())?;
    let stage = query
        .state
        .as_deref()
        .ok_or_else(|| {
            ApiError::invalid_field("state", "the stage to gate is required: `?state=N`")
        })
        .and_then(|raw| state_param("state", raw))?;
    let build = state.db.get_build(&id).await?;
    let answer = gate(&build.progress(), stage, query.run.as_deref(), Utc::now());
    Ok(Json(GateAnswer {
        build_id: build.id,
        state: stage,
        decision: answer.decision,
        wait_seconds: answer.wait_seconds,
        reason: answer.reason,
        build_state: build.state,
        build_status: build.status,
    }))
}

async fn operator_action(
    state: &AppState,
    auth: &Authenticated,
    id: &BuildId,
    action: OperatorAction,
    reason: &str,
) -> Result<Json<TransitionResult>, ApiError> {
    let actor = auth.require(Scope::Admin)?;
    if reason.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "reason",
            "a reason is required: it goes into the build's history",
        ));
    }
    check_text("reason", Some(reason), MAX_MESSAGE_CHARS)?;
    let result = state
        .db
        .apply_operator_action(id, action, reason, actor)
        .await
        .map_err(for_build(id))?;
    state.announce(&result.build, &result.recorded);
    Ok(Json(result))
}

/// Operator: clear the failures of a blocked or failed stage so it runs again.
#[utoipa::path(post, path = "/builds/{id}/retry", tag = "operators", request_body = OperatorReason,
    params(("id" = String, Path, description = "build id")),
    responses((status = 200, body = TransitionResult), (status = 409, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub async fn retry_build(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    ApiJson(body): ApiJson<OperatorReason>,
) -> Result<Json<TransitionResult>, ApiError> {
    operator_action(&state, &auth, &id, OperatorAction::Retry, &body.reason).await
}

/// Operator: move the build back to the current or an earlier stage.
#[utoipa::path(post, path = "/builds/{id}/reset", tag = "operators", request_body = ResetBuild,
    params(("id" = String, Path, description = "build id")),
    responses((status = 200, body = TransitionResult), (status = 409, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub async fn reset_build(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    ApiJson(body): ApiJson<ResetBuild>,
) -> Result<Json<TransitionResult>, ApiError> {
    let action = OperatorAction::Reset { to: body.state };
    operator_action(&state, &auth, &id, action, &body.reason).await
}

/// Operator: give the build up.
#[utoipa::path(post, path = "/builds/{id}/cancel", tag = "operators", request_body = OperatorReason,
    params(("id" = String, Path, description = "build id")),
    responses((status = 200, body = TransitionResult), (status = 409, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub async fn cancel_build(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    ApiJson(body): ApiJson<OperatorReason>,
) -> Result<Json<TransitionResult>, ApiError> {
    operator_action(&state, &auth, &id, OperatorAction::Cancel, &body.reason).await
}
