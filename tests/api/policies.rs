//! Retry policies through the API: set when a build starts and kept when it is resumed; a
//! failure at a stage with `restart_from` reopens the earlier stages (their gates run again,
//! the history says why, their outputs are superseded), the failed stage's allowance and
//! backoff apply across the pass, the scheduler announces its retries, and an operator's
//! retry of the blocked build reopens the same way. Bad policies are a 422 naming the field,
//! with nothing started.

use std::collections::BTreeMap;
use std::time::Duration;

use buildstate::client::Client;
use buildstate_domain::wire::{Build, ErrorCode, HistoryEntry, ReportTransition, StartBuild};
use buildstate_domain::{
    BuildId, BuildRetryPolicy, BuildStatus, EventKind, GateDecision, Outputs, ReportStatus,
};
use reqwest::Method;

use crate::helpers::{code, raw, report, send, start_request};
use crate::on_both_backends_with;
use crate::support::TestApp;

on_both_backends_with!(with_the_scheduler =>
    a_failure_with_restart_from_reopens_the_earlier_stages_until_the_failed_one_completes,
    bad_policies_are_a_422_naming_the_field_and_start_nothing,
    a_resumed_build_keeps_the_policy_it_started_with_and_says_so,
);

/// The retry scheduler on, every 50 ms.
fn with_the_scheduler(config: &mut buildstate_server::ServerConfig) {
    config.retry_check_millis = 50;
}

/// The example pipelines' policy, with short waits: kickstart retried 3 times, the in-VM
/// stages 15-45 twice, restarting from the green image (10) after a 1 s backoff.
fn policy() -> BuildRetryPolicy {
    serde_json::from_str(
        r#"{"rules": [
            {"stages": 5, "max_retries": 3, "backoff_base_secs": 600},
            {"stages": "15-45", "max_retries": 2, "backoff_base_secs": 1, "restart_from": 10}
        ]}"#,
    )
    .expect("valid policy")
}

fn completed_with(state: i64, key: &str, value: &str) -> ReportTransition {
    let outputs = BTreeMap::from([(key.to_owned(), value.to_owned())]);
    ReportTransition {
        outputs: Outputs::try_from(outputs).expect("valid outputs"),
        ..report(state, ReportStatus::Completed)
    }
}

async fn complete(client: &Client, id: &BuildId, state: i64, key: &str, value: &str) -> Build {
    client
        .report_transition(id, &completed_with(state, key, value), None)
        .await
        .unwrap_or_else(|error| panic!("complete {state}: {error}"))
        .build
}

async fn history(client: &Client, id: &BuildId) -> Vec<HistoryEntry> {
    client.history(id, 0, 1000).await.expect("history").entries
}

async fn gates(client: &Client, id: &BuildId, stages: &[i64]) -> Vec<GateDecision> {
    let mut decisions = Vec::new();
    for &stage in stages {
        decisions.push(client.gate(id, code(stage)).await.expect("gate").decision);
    }
    decisions
}

/// Waits (at most 30 s) for the build's `n`-th `retry_due` entry, as a CI system waits for the
/// version or the alert that starts its retry.
async fn nth_retry_due(client: &Client, id: &BuildId, n: usize) -> HistoryEntry {
    for _ in 0..1500 {
        let due: Vec<HistoryEntry> = history(client, id)
            .await
            .into_iter()
            .filter(|entry| entry.kind == EventKind::RetryDue)
            .collect();
        if let Some(entry) = due.get(n - 1) {
            return entry.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("build `{id}` did not get {n} retry_due entries within 30 s");
}

fn merged(build: &Build) -> Vec<(String, String, i64)> {
    build
        .outputs
        .iter()
        .map(|(key, output)| (key.clone(), output.value.clone(), i64::from(output.stage)))
        .collect()
}

/// Runs stages 10 to 20 (10 makes the image, 15 and 20 configure the VM) and fails 25.
async fn run_10_to_25_failing(client: &Client, id: &BuildId, image: &str) -> Build {
    complete(client, id, 10, "ami_id", image).await;
    complete(client, id, 15, "vm_ip", "10.0.0.7").await;
    complete(client, id, 20, "agent", "installed").await;
    send(client, id, 25, ReportStatus::InProgress).await;
    send(client, id, 25, ReportStatus::Failed).await.build
}

async fn a_failure_with_restart_from_reopens_the_earlier_stages_until_the_failed_one_completes(
    app: TestApp,
) {
    let client = app.client();
    let started = client
        .start_build(&StartBuild {
            retry_policy: Some(policy()),
            ..start_request(None)
        })
        .await
        .expect("start with a policy");
    let id = started.build.id.clone();
    assert_eq!(
        started.build.retry_policy,
        Some(policy()),
        "the answer shows it"
    );
    assert_eq!(
        client.get_build(&id).await.expect("get").retry_policy,
        Some(policy()),
        "and so does every read"
    );
    complete(&client, &id, 5, "kickstart", "ks-1").await;

    // The first failure at 25 moves the build back to 10, with 25's count and backoff.
    let reopened = run_10_to_25_failing(&client, &id, "ami-A").await;
    assert_eq!(
        (
            reopened.state,
            reopened.status,
            reopened.failures,
            reopened.reopened_until
        ),
        (code(10), BuildStatus::Failed, 1, Some(code(25)))
    );
    assert!(reopened.next_attempt_at.is_some(), "25's backoff");
    let entries = history(&client, &id).await;
    let last_two: Vec<(i64, EventKind)> = entries[entries.len() - 2..]
        .iter()
        .map(|entry| (i64::from(entry.state), entry.kind))
        .collect();
    assert_eq!(
        last_two,
        [(25, EventKind::Failed), (10, EventKind::Reopened)]
    );
    assert_eq!(
        entries.last().and_then(|entry| entry.message.as_deref()),
        Some("stage 25 failed; the result of stage 25 does not survive without stage 10 (restart_from): stages 10 to 25 run again")
    );
    // The outputs of 10..25 are superseded; the history keeps them.
    assert_eq!(
        merged(&reopened),
        [("kickstart".into(), "ks-1".into(), 5)],
        "no image id from the discarded pass"
    );
    assert_eq!(
        client.outputs(&id).await.expect("outputs").len(),
        1,
        "GET outputs agrees"
    );
    assert!(
        entries.iter().any(|entry| entry.state == code(10)
            && entry.kind == EventKind::Completed
            && entry.outputs.is_some()),
        "the history keeps what stage 10 produced"
    );
    // Gates: 10 waits out 25's backoff; nothing after it runs; 5 stays done.
    assert_eq!(
        gates(&client, &id, &[5, 10, 15, 25, 30]).await,
        [
            GateDecision::Skip,
            GateDecision::Wait,
            GateDecision::Stop,
            GateDecision::Stop,
            GateDecision::Stop
        ]
    );

    // The scheduler announces the retry of 25, from 10.
    let due = nth_retry_due(&client, &id, 1).await;
    assert_eq!(
        (i64::from(due.state), due.message.as_deref()),
        (
            10,
            Some("retry 1 of 2 of stage 25 is due: stages 10 to 25 run again")
        )
    );
    assert_eq!(gates(&client, &id, &[10]).await, [GateDecision::Run]);

    // The pass: 10 runs again, the count stays, and nothing may move past 25.
    let rerun = complete(&client, &id, 10, "ami_id", "ami-B").await;
    assert_eq!(
        (rerun.state, rerun.failures, rerun.reopened_until),
        (code(15), 1, Some(code(25)))
    );
    assert_eq!(
        gates(&client, &id, &[10, 15, 25, 30]).await,
        [
            GateDecision::Skip,
            GateDecision::Run,
            GateDecision::Run,
            GateDecision::Stop
        ]
    );
    let refused = client
        .report_transition(&id, &report(30, ReportStatus::Completed), None)
        .await
        .expect_err("no jump past the failed stage");
    assert_eq!(
        refused.code(),
        Some(&ErrorCode::FailedStageFirst),
        "{refused}"
    );

    // A second failure at 25 counts 2 and reopens again; the third blocks the build at 25.
    complete(&client, &id, 15, "vm_ip", "10.0.0.8").await;
    complete(&client, &id, 20, "agent", "installed").await;
    send(&client, &id, 25, ReportStatus::InProgress).await;
    let second = send(&client, &id, 25, ReportStatus::Failed).await.build;
    assert_eq!(
        (second.state, second.status, second.failures),
        (code(10), BuildStatus::Failed, 2)
    );
    nth_retry_due(&client, &id, 2).await;
    let blocked = run_10_to_25_failing(&client, &id, "ami-C").await;
    assert_eq!(
        (blocked.state, blocked.status, blocked.failures),
        (code(25), BuildStatus::Blocked, 3),
        "25's allowance (2), not the build's (3)"
    );
    assert_eq!(
        gates(&client, &id, &[10, 25]).await,
        [GateDecision::Stop, GateDecision::Stop]
    );

    // An operator's retry reopens from 10 as the failure would have.
    let retried = client
        .retry_build(&id, "quota raised")
        .await
        .expect("operator retry");
    assert_eq!(
        (
            retried.build.state,
            retried.build.status,
            retried.build.failures,
            retried.build.reopened_until
        ),
        (code(10), BuildStatus::Running, 0, Some(code(25)))
    );
    let kinds: Vec<(i64, EventKind)> = retried
        .recorded
        .iter()
        .map(|entry| (i64::from(entry.state), entry.kind))
        .collect();
    assert_eq!(kinds, [(25, EventKind::Retried), (10, EventKind::Reopened)]);

    // 25 completing ends the pass: the build is normal again with the new outputs.
    complete(&client, &id, 10, "ami_id", "ami-D").await;
    complete(&client, &id, 15, "vm_ip", "10.0.0.9").await;
    complete(&client, &id, 20, "agent", "installed").await;
    let done = complete(&client, &id, 25, "hardened", "yes").await;
    assert_eq!(
        (done.state, done.status, done.failures, done.reopened_until),
        (code(30), BuildStatus::Running, 0, None)
    );
    assert_eq!(
        done.outputs.get("ami_id").map(|o| o.value.as_str()),
        Some("ami-D")
    );
    let seqs: Vec<i64> = history(&client, &id).await.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "never rewritten"
    );
}

async fn bad_policies_are_a_422_naming_the_field_and_start_nothing(app: TestApp) {
    let token = app.admin_token.clone();
    let cases = [
        (
            r#"{"rules": [{"stages": 25, "restart_from": 30}]}"#,
            "rule 1 (stages 25): `restart_from` 30 must be earlier than stage 25",
        ),
        (
            r#"{"rules": [{"stages": 25, "restart_from": 12}]}"#,
            "`12` is not a state code",
        ),
        (
            r#"{"rules": [{"stages": "15-45", "max_retries": 1}, {"stages": "40-50", "max_retries": 1}]}"#,
            "rule 2 (stages 40-50) overlaps rule 1 (stages 15-45)",
        ),
        (
            r#"{"rules": [{"stages": 25, "max_retries": 1, "retries": 2}]}"#,
            "unknown field `retries`",
        ),
        (
            r#"{"rules": [{"stages": 25, "max_retries": 101}]}"#,
            "`max_retries` is 101; it must be 0 to 100",
        ),
        (r#"{"stages": 25}"#, "unknown field `stages`"),
    ];
    for (policy, words) in cases {
        let body =
            format!(r#"{{"platform": "aws", "image_type": "rhel8", "retry_policy": {policy}}}"#);
        let (status, answer) = raw(
            &app,
            Method::POST,
            "/builds",
            Some(&token),
            Some(("application/json", &body)),
        )
        .await;
        assert_eq!(status, 422, "{policy}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field", "{answer}");
        let field = answer["error"]["field"].as_str().unwrap_or_default();
        assert!(field.starts_with("retry_policy"), "{policy}: {answer}");
        if words.starts_with("unknown field `retries`") {
            assert_eq!(field, "retry_policy.rules[0].retries", "the path to it");
        }
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{policy}: {message}");
    }
    let page = app
        .client()
        .list_builds(&Default::default())
        .await
        .expect("list");
    assert!(page.builds.is_empty(), "nothing was started");
}

async fn a_resumed_build_keeps_the_policy_it_started_with_and_says_so(app: TestApp) {
    let client = app.client();
    let first = client
        .start_build(&StartBuild {
            retry_policy: Some(policy()),
            ..start_request(Some("aws/rhel8"))
        })
        .await
        .expect("start");
    assert_eq!(first.warning, None);
    let same = client
        .start_build(&StartBuild {
            retry_policy: Some(policy()),
            ..start_request(Some("aws/rhel8"))
        })
        .await
        .expect("resume");
    assert!(same.resumed);
    assert_eq!(same.warning, None, "the same policy: nothing to say");
    let unsaid = client
        .start_build(&start_request(Some("aws/rhel8")))
        .await
        .expect("resume without one");
    assert_eq!(
        unsaid.warning, None,
        "a request without a policy asks nothing"
    );
    assert_eq!(unsaid.build.retry_policy, Some(policy()));
    let other: BuildRetryPolicy =
        serde_json::from_str(r#"{"rules": [{"stages": 25, "max_retries": 9}]}"#).expect("valid");
    let different = client
        .start_build(&StartBuild {
            retry_policy: Some(other),
            ..start_request(Some("aws/rhel8"))
        })
        .await
        .expect("resume with another");
    assert_eq!(different.build.id, first.build.id);
    assert_eq!(different.build.retry_policy, Some(policy()), "kept");
    let warning = different.warning.expect("a warning");
    assert!(
        warning.contains("keeps the retry policy it started with")
            && warning.contains("was not applied"),
        "{warning}"
    );
    // A build without a policy answers as it always did: no `retry_policy` field at all.
    let plain = client
        .start_build(&start_request(None))
        .await
        .expect("start plain");
    let (_, body) = raw(
        &app,
        Method::GET,
        &format!("/builds/{}", plain.build.id),
        Some(&app.admin_token),
        None,
    )
    .await;
    assert!(body.get("retry_policy").is_none(), "{body}");
    assert!(body.get("reopened_until").is_none(), "{body}");
}
