//! What resuming saved (docs/rules.md, "What resuming saved"), on both backends: one resume
//! per stop however the run comes back (a retry after a failure, a start-or-resume on a key
//! first, an operator's retry, a lease taken over, a reset), the stages completed before it
//! with their in_progress -> completed durations (unknown ones counted apart), none for a
//! replay, and `GET /reports/savings` and `/metrics` adding them up.

use std::time::Duration;

use buildstate::client::Client;
use buildstate_domain::resumes::Resume;
use buildstate_domain::wire::{HistoryEntry, ReportTransition};
use buildstate_domain::{BuildId, EventKind, ReportStatus};
use serde_json::Value;

use crate::helpers::{code, report, send, start_request};
use crate::on_both_backends_with;
use crate::support::TestApp;

on_both_backends_with!(no_backoff =>
    a_retry_after_a_failure_resumes_once_saving_the_stages_before_it,
    a_start_or_resume_on_the_key_then_the_retry_counts_once,
    a_stage_completed_without_in_progress_counts_as_unknown_not_zero,
    an_idempotent_replay_records_no_second_resume,
    an_operator_retry_a_takeover_and_a_reset_each_resume_once,
    the_savings_report_adds_up_its_window_by_platform_image_type_and_build,
    metrics_count_resumes_stages_not_rerun_and_seconds_saved,
    stages_reopened_by_restart_from_are_not_counted_as_saved,
);

/// Retries may follow a failure at once; leases last a second (the takeover test waits one out).
fn no_backoff(config: &mut buildstate_server::ServerConfig) {
    config.backoff_base_secs = 0;
    config.lease_secs = 1.0;
}

/// Starts a build (with `key`, if given) on `platform`.
async fn start(client: &Client, key: Option<&str>, platform: &str) -> BuildId {
    let mut request = start_request(key);
    request.platform = platform.parse().expect("platform");
    client.start_build(&request).await.expect("start").build.id
}

/// Stages `from..=to` (step 5) each reported in_progress then, a few milliseconds later,
/// completed: durations the history records.
async fn run_stages(client: &Client, id: &BuildId, from: i64, to: i64) {
    for stage in (from..=to).step_by(5) {
        send(client, id, stage, ReportStatus::InProgress).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
        send(client, id, stage, ReportStatus::Completed).await;
    }
}

async fn history(client: &Client, id: &BuildId) -> Vec<HistoryEntry> {
    client.history(id, 0, 1000).await.expect("history").entries
}

/// The time from each stage's in_progress to its completion, as the history shows them, for
/// `stages`: what the server must have added up.
fn recorded_durations(history: &[HistoryEntry], stages: &[i64]) -> u64 {
    stages
        .iter()
        .map(|&stage| {
            let at = |kind| {
                history
                    .iter()
                    .rev()
                    .find(|entry| entry.state == code(stage) && entry.kind == kind)
                    .unwrap_or_else(|| panic!("stage {stage} has a {kind} entry"))
                    .recorded_at
            };
            let millis = (at(EventKind::Completed) - at(EventKind::InProgress)).num_milliseconds();
            u64::try_from(millis).expect("not negative")
        })
        .sum()
}

async fn savings(app: &TestApp, query: &str) -> Value {
    let answer = app
        .http()
        .get(app.url(&format!("/reports/savings{query}")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status(), 200, "GET /reports/savings{query}");
    answer.json().await.expect("json")
}

/// A build that completed 0..20 with in_progress/completed pairs and failed at 25.
async fn failed_at_25(client: &Client, key: Option<&str>, platform: &str) -> BuildId {
    let id = start(client, key, platform).await;
    run_stages(client, &id, 0, 20).await;
    send(client, &id, 25, ReportStatus::InProgress).await;
    send(client, &id, 25, ReportStatus::Failed).await;
    id
}

fn expect_resume(resume: Option<&Resume>, stage: i64, stages: u32, saved_ms: u64, unknown: u32) {
    let resume = resume.expect("the report resumed the build");
    assert_eq!(
        (
            resume.stage,
            resume.stages_not_rerun,
            resume.saved_ms,
            resume.unknown_durations
        ),
        (code(stage), stages, saved_ms, unknown),
        "{resume:?}"
    );
}

async fn a_retry_after_a_failure_resumes_once_saving_the_stages_before_it(app: TestApp) {
    let client = app.client();
    let id = failed_at_25(&client, None, "aws").await;
    let saved = recorded_durations(&history(&client, &id).await, &[0, 5, 10, 15, 20]);
    assert!(saved > 0);

    let retry = send(&client, &id, 25, ReportStatus::InProgress).await;
    expect_resume(retry.resumed.as_ref(), 25, 5, saved, 0);
    assert_eq!(
        retry.resumed.as_ref().map(|r| r.seq),
        Some(retry.build.last_seq)
    );
    assert_eq!(retry.build.last_resume, retry.resumed, "the build shows it");

    // The same run carries on: nothing more is a resume.
    for (stage, status) in [
        (25, ReportStatus::Completed),
        (30, ReportStatus::InProgress),
    ] {
        let answer = send(&client, &id, stage, status).await;
        assert_eq!(answer.resumed, None, "{stage} {status}");
        assert_eq!(
            answer.build.last_resume, retry.resumed,
            "the latest is kept"
        );
    }
    let report = savings(&app, "").await;
    assert_eq!(report["totals"]["resumes"], 1);
    assert_eq!(report["totals"]["stages_not_rerun"], 5);
    assert_eq!(report["totals"]["saved_ms"], saved);
    assert_eq!(report["totals"]["unknown_durations"], 0);
    assert_eq!(report["days"], 7, "the default window");
}

async fn a_start_or_resume_on_the_key_then_the_retry_counts_once(app: TestApp) {
    let client = app.client();
    let id = failed_at_25(&client, Some("aws/rhel8/savings"), "aws").await;
    // The re-run finds its build by the key: that records nothing by itself.
    let again = client
        .start_build(&start_request(Some("aws/rhel8/savings")))
        .await
        .expect("start or resume");
    assert!(again.resumed);
    assert_eq!(again.build.id, id);
    assert_eq!(again.build.last_resume, None);
    // Its first report at the failed stage is the resume; a second start changes nothing.
    let first = send(&client, &id, 25, ReportStatus::InProgress).await;
    expect_resume(
        first.resumed.as_ref(),
        25,
        5,
        first.resumed.as_ref().map_or(0, |r| r.saved_ms),
        0,
    );
    client
        .start_build(&start_request(Some("aws/rhel8/savings")))
        .await
        .expect("start or resume");
    let completed = send(&client, &id, 25, ReportStatus::Completed).await;
    assert_eq!(completed.resumed, None);
    assert_eq!(savings(&app, "").await["totals"]["resumes"], 1);
}

async fn a_stage_completed_without_in_progress_counts_as_unknown_not_zero(app: TestApp) {
    let client = app.client();
    let id = start(&client, None, "aws").await;
    run_stages(&client, &id, 0, 0).await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    // Stage 5 reports only its completion: its time is not recorded as its own.
    send(&client, &id, 5, ReportStatus::Completed).await;
    send(&client, &id, 10, ReportStatus::Failed).await;
    let saved = recorded_durations(&history(&client, &id).await, &[0]);
    let retry = send(&client, &id, 10, ReportStatus::InProgress).await;
    expect_resume(retry.resumed.as_ref(), 10, 2, saved, 1);
    let report = savings(&app, "").await;
    assert_eq!(report["totals"]["unknown_durations"], 1);
    assert_eq!(report["totals"]["saved_ms"], saved);
}

async fn an_idempotent_replay_records_no_second_resume(app: TestApp) {
    let client = app.client();
    let id = failed_at_25(&client, None, "aws").await;
    let request = report(25, ReportStatus::InProgress);
    let first = client
        .report_transition(&id, &request, Some("resume-once"))
        .await
        .expect("first");
    let replay = client
        .report_transition(&id, &request, Some("resume-once"))
        .await
        .expect("replay");
    assert!(first.resumed.is_some());
    assert_eq!(replay.resumed, first.resumed, "the same answer again");
    let report = savings(&app, "").await;
    assert_eq!(report["totals"]["resumes"], 1);
    assert_eq!(report["totals"]["stages_not_rerun"], 5);
}

async fn an_operator_retry_a_takeover_and_a_reset_each_resume_once(app: TestApp) {
    let client = app.client();
    // Blocked at 10 (max_retries 0): the operator's retry is not a run; the run after it is.
    let mut request = start_request(None);
    request.max_retries = Some(0);
    let id = client.start_build(&request).await.expect("start").build.id;
    run_stages(&client, &id, 0, 5).await;
    send(&client, &id, 10, ReportStatus::Failed).await;
    client
        .retry_build(&id, "mirror fixed")
        .await
        .expect("retry");
    let after_retry = send(&client, &id, 10, ReportStatus::InProgress).await;
    expect_resume(
        after_retry.resumed.as_ref(),
        10,
        2,
        after_retry.resumed.as_ref().map_or(0, |r| r.saved_ms),
        0,
    );

    // Run `a` claims 15 and disappears; once its lease expired, run `b` takes over: a resume.
    send(&client, &id, 10, ReportStatus::Completed).await;
    let claim = |run: &str, state: i64| ReportTransition {
        run: Some(run.to_owned()),
        ..report(state, ReportStatus::InProgress)
    };
    let held = client
        .report_transition(&id, &claim("a", 15), None)
        .await
        .expect("a claims");
    assert_eq!(held.resumed, None);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let taken = client
        .report_transition(&id, &claim("b", 15), None)
        .await
        .expect("b takes over");
    expect_resume(
        taken.resumed.as_ref(),
        15,
        3,
        taken.resumed.as_ref().map_or(0, |r| r.saved_ms),
        0,
    );

    // A reset to 5 reopens 5 and 10: the resume at 5 saves stage 0 only, never a stage at or
    // after the one it resumed at.
    client
        .reset_build(&id, code(5), "rebuild from 5")
        .await
        .expect("reset");
    let after_reset = send(&client, &id, 5, ReportStatus::InProgress).await;
    expect_resume(
        after_reset.resumed.as_ref(),
        5,
        1,
        after_reset.resumed.as_ref().map_or(0, |r| r.saved_ms),
        0,
    );
    assert_eq!(savings(&app, "").await["totals"]["resumes"], 3);
}

async fn the_savings_report_adds_up_its_window_by_platform_image_type_and_build(app: TestApp) {
    let client = app.client();
    let aws = failed_at_25(&client, None, "aws").await;
    let gcp = failed_at_25(&client, None, "gcp").await;
    let old = failed_at_25(&client, None, "gcp").await;
    for id in [&aws, &gcp, &old] {
        send(&client, id, 25, ReportStatus::InProgress).await;
    }
    // The gcp build fails once more at 30 and resumes again: 6 stages more.
    run_stages(&client, &gcp, 25, 25).await;
    send(&client, &gcp, 30, ReportStatus::Failed).await;
    send(&client, &gcp, 30, ReportStatus::InProgress).await;
    // One resume ten days ago: outside the default window, inside a 30-day one.
    app.execute_sql(&format!(
        "UPDATE build_resumes SET resumed_at = resumed_at - 864000000 WHERE build_id = '{old}'"
    ))
    .await;

    let week = savings(&app, "").await;
    assert_eq!(week["totals"]["resumes"], 3);
    assert_eq!(week["totals"]["stages_not_rerun"], 5 + 5 + 6);
    let platforms: Vec<(String, u64)> = week["by_platform"]
        .as_array()
        .expect("by_platform")
        .iter()
        .map(|group| {
            (
                group["name"].as_str().unwrap_or("").to_owned(),
                group["resumes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(platforms, [("aws".to_owned(), 1), ("gcp".to_owned(), 2)]);
    assert_eq!(week["by_image_type"][0]["name"], "rhel8");
    assert_eq!(week["by_image_type"][0]["resumes"], 3);
    let top = week["top_builds"].as_array().expect("top_builds");
    assert_eq!(top.len(), 2, "{top:?}");
    assert_eq!(
        top[0]["id"],
        gcp.as_str(),
        "the build that saved most comes first"
    );
    assert_eq!(top[0]["resumes"], 2);
    assert_eq!(top[0]["platform"], "gcp");

    let month = savings(&app, "?days=30").await;
    assert_eq!(month["totals"]["resumes"], 4);
    assert_eq!(month["days"], 30);
    for bad in ["?days=0", "?days=367", "?days=soon"] {
        let answer = app
            .http()
            .get(app.url(&format!("/reports/savings{bad}")))
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .expect("request");
        assert!(
            answer.status().is_client_error(),
            "{bad}: {}",
            answer.status()
        );
        let body: Value = answer.json().await.expect("json error");
        assert!(body.to_string().contains("days"), "{bad}: {body}");
    }
}

async fn metrics_count_resumes_stages_not_rerun_and_seconds_saved(app: TestApp) {
    let client = app.client();
    let id = failed_at_25(&client, None, "aws").await;
    let resume = send(&client, &id, 25, ReportStatus::InProgress)
        .await
        .resumed
        .expect("resumed");
    let text = app
        .http()
        .get(app.url("/metrics"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{platform=\"aws\",image_type=\"rhel8\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in {text}"))
            .parse()
            .expect("a number")
    };
    assert_eq!(value("buildstate_resumes_total"), 1.0);
    assert_eq!(value("buildstate_stages_not_rerun_total"), 5.0);
    let seconds = value("buildstate_resume_saved_seconds_total");
    assert!(
        (seconds - resume.saved_ms as f64 / 1000.0).abs() < 1e-9,
        "{seconds}"
    );
}

/// With a retry policy's `restart_from: 10` on stages 15-45, a failure at 25 reopens 10..25:
/// the resume is at 10 and saved only 0 and 5, never the reopened stages that run again.
async fn stages_reopened_by_restart_from_are_not_counted_as_saved(app: TestApp) {
    let client = app.client();
    let policy = serde_json::from_str(
        r#"{"rules": [{"stages": "15-45", "max_retries": 2, "restart_from": 10}]}"#,
    )
    .expect("valid policy");
    let request = buildstate_domain::wire::StartBuild {
        retry_policy: Some(policy),
        ..start_request(None)
    };
    let id = client.start_build(&request).await.expect("start").build.id;
    run_stages(&client, &id, 0, 20).await;
    send(&client, &id, 25, ReportStatus::InProgress).await;
    let failed = send(&client, &id, 25, ReportStatus::Failed).await;
    assert_eq!(failed.build.state, code(10), "the failure reopened 10..25");
    let saved = recorded_durations(&history(&client, &id).await, &[0, 5]);

    let retry = send(&client, &id, 10, ReportStatus::InProgress).await;
    expect_resume(retry.resumed.as_ref(), 10, 2, saved, 0);
    let report = savings(&app, "").await;
    assert_eq!(report["totals"]["resumes"], 1);
    assert_eq!(report["totals"]["stages_not_rerun"], 2);
}
