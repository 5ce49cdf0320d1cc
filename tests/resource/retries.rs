//! The Concourse loop of retries that happen by themselves, with the resource binary as
//! Concourse runs it: a stage fails; the server's scheduler records `retry_due`; `check` on a
//! resource filtered to `retry_due` emits it (the trigger); the next Concourse build's puts
//! resume the build at the failed stage. And a put that comes during the backoff waits it out.

use std::time::Duration;

use buildstate_domain::EventKind;
use buildstate_server::ServerConfig;
use serde_json::{json, Value};

use crate::helpers::{read, versions, Resource};
use crate::on_both_backends_with;
use crate::support::TestApp;

/// The scheduler looks for due retries every 50 ms; no backoff, so a retry is due at once.
fn fast_retries(config: &mut ServerConfig) {
    config.retry_check_millis = 50;
}

/// A two-second backoff after a first failure, and no scheduler.
fn short_backoff(config: &mut ServerConfig) {
    config.backoff_base_secs = 2;
}

/// How long the loop waits for the scheduler before the test calls it broken (never reached
/// when it works).
const HANG: Duration = Duration::from_secs(60);

/// Puts `params` as Concourse build `concourse_build`, expecting success; returns the answer
/// and the put's stderr.
async fn put(
    resource: &mut Resource,
    concourse_build: &str,
    source: &Value,
    params: Value,
) -> (Value, String) {
    resource.set_env("BUILD_ID", concourse_build);
    let dir = resource.dir();
    let outcome = resource
        .put(dir.path(), &json!({"source": source, "params": params}))
        .await;
    let answer = outcome.json();
    (answer, outcome.stderr)
}

/// The kinds of stage `code`'s history entries.
async fn kinds_at(app: &TestApp, build_id: &str, code: u8) -> Vec<EventKind> {
    app.client()
        .history(&build_id.parse().expect("id"), 0, 1000)
        .await
        .expect("history")
        .entries
        .into_iter()
        .filter(|entry| entry.state.value() == code)
        .map(|entry| entry.kind)
        .collect()
}

async fn check_emits_retry_due_and_the_next_concourse_build_resumes_the_failed_stage(app: TestApp) {
    // Arrange: Concourse build 1 completes stage 5 and fails stage 15
    let mut resource = Resource::new(&app).in_concourse_build("1");
    let source = resource.source("aws/rhel8", json!({}));
    let retry_source = resource.source("aws/rhel8", json!({"filter": {"events": ["retry_due"]}}));
    let (started, _) = put(&mut resource, "1", &source, json!({})).await;
    let build_id = started["version"]["build_id"]
        .as_str()
        .expect("build id")
        .to_owned();
    for (state, status) in [
        (5, "in_progress"),
        (5, "completed"),
        (15, "in_progress"),
        (15, "failed"),
    ] {
        put(
            &mut resource,
            "1",
            &source,
            json!({"state": state, "status": status}),
        )
        .await;
    }

    // Act 1: Concourse checks the retry resource until the server has made the retry due
    let due = tokio::time::timeout(HANG, async {
        loop {
            let answer = resource
                .check(&json!({"source": retry_source}))
                .await
                .json();
            if let Some(version) = versions(&answer).into_iter().next() {
                return version;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("check emits the retry_due version");

    // Assert 1: the version is the retry of stage 15
    assert_eq!(
        (
            due["build_id"].as_str(),
            due["state"].as_str(),
            due["event"].as_str()
        ),
        (Some(build_id.as_str()), Some("15"), Some("retry_due"))
    );

    // Act 2: the triggered Concourse build 2 gets the version and runs the job's puts
    resource.set_env("BUILD_ID", "2");
    let get_dir = resource.dir();
    resource
        .get(
            get_dir.path(),
            &json!({"source": retry_source, "version": due}),
        )
        .await
        .json();
    let (_, resumed) = put(&mut resource, "2", &source, json!({})).await;
    let (_, skipped) = put(
        &mut resource,
        "2",
        &source,
        json!({"state": 5, "status": "in_progress"}),
    )
    .await;
    put(
        &mut resource,
        "2",
        &source,
        json!({"state": 15, "status": "in_progress"}),
    )
    .await;
    let (completed, _) = put(
        &mut resource,
        "2",
        &source,
        json!({"state": 15, "status": "completed"}),
    )
    .await;

    // Assert 2: it ran stage 15 again in the same build, and moved on
    assert_eq!(read(get_dir.path(), "gate/15"), "run\n");
    assert!(
        resumed.contains(&format!("resumed build `{build_id}` at stage 15 (failed)")),
        "{resumed}"
    );
    assert!(skipped.contains("stage 5 already completed"), "{skipped}");
    assert_eq!(completed["version"]["build_id"], build_id.as_str());
    assert_eq!(
        kinds_at(&app, &build_id, 15).await,
        [
            EventKind::InProgress,
            EventKind::Failed,
            EventKind::RetryDue,
            EventKind::InProgress,
            EventKind::Completed
        ]
    );
    // The next check from the retry's version emits nothing new: no second retry.
    let after = resource
        .check(&json!({"source": retry_source, "version": due}))
        .await
        .json();
    assert_eq!(versions(&after), [due]);
}

async fn a_put_during_the_backoff_waits_it_out_within_its_bound(app: TestApp) {
    // Arrange: stage 5 failed; its retry may start two seconds later
    let mut resource = Resource::new(&app).in_concourse_build("1");
    let source = resource.source("aws/rhel8", json!({}));
    put(&mut resource, "1", &source, json!({})).await;
    put(
        &mut resource,
        "1",
        &source,
        json!({"state": 5, "status": "failed"}),
    )
    .await;

    // Act 1: a put that may not wait at all
    resource.set_env("BUILD_ID", "2");
    let dir = resource.dir();
    let refused = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 5, "status": "in_progress", "backoff_max_wait_seconds": 0}}),
        )
        .await;

    // Act 2: the same put with the default bound
    let (waited, log) = put(
        &mut resource,
        "2",
        &source,
        json!({"state": 5, "status": "in_progress"}),
    )
    .await;

    // Assert: the first failed with the server's sentence, the second waited and reported
    let refused = refused.failure();
    assert!(refused.contains("retry in"), "{refused}");
    assert!(
        log.contains("is backing off after a failure: waiting")
            && log.contains("`backoff_max_wait_seconds`"),
        "{log}"
    );
    assert_eq!(
        (
            waited["version"]["state"].as_str(),
            waited["version"]["event"].as_str()
        ),
        (Some("5"), Some("in_progress"))
    );
}

on_both_backends_with!(fast_retries =>
    check_emits_retry_due_and_the_next_concourse_build_resumes_the_failed_stage,
);

on_both_backends_with!(short_backoff => a_put_during_the_backoff_waits_it_out_within_its_bound);
