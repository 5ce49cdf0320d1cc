//! Stage outputs through the API: set on a completion, merged with the stage that set each
//! key, dropped by a reset for the stages it reopens, returned again by an idempotent replay,
//! and every bad output a 422 naming it with nothing written.

use std::collections::BTreeMap;

use buildstate_domain::wire::{ErrorCode, ReportTransition};
use buildstate_domain::{EventKind, Outputs, ReportStatus};
use serde_json::json;

use crate::helpers::{code, raw, report, start_build};
use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends!(
    completions_set_outputs_and_the_build_shows_them_merged_by_stage,
    a_reset_drops_the_outputs_of_the_stages_it_reopens,
    a_replayed_completion_returns_the_same_outputs,
    every_bad_output_is_a_422_naming_it_and_writes_nothing,
    a_build_whose_outputs_predate_the_merged_column_shows_and_updates_them,
);

fn outputs(pairs: &[(&str, &str)]) -> Outputs {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Outputs::try_from(map).expect("valid outputs")
}

fn completed_with(state: i64, pairs: &[(&str, &str)]) -> ReportTransition {
    ReportTransition {
        outputs: outputs(pairs),
        ..report(state, ReportStatus::Completed)
    }
}

fn merged(build: &buildstate_domain::wire::Build) -> Vec<(String, String, i64)> {
    build
        .outputs
        .iter()
        .map(|(k, o)| (k.clone(), o.value.clone(), i64::from(o.stage)))
        .collect()
}

async fn completions_set_outputs_and_the_build_shows_them_merged_by_stage(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let first = client
        .report_transition(
            &id,
            &completed_with(10, &[("ami_id", "ami-0aaa"), ("region", "eu-west-1")]),
            None,
        )
        .await
        .expect("stage 10");
    let entry = first.recorded.last().expect("the completed entry");
    assert_eq!(entry.kind, EventKind::Completed);
    assert_eq!(
        entry.outputs,
        Some(outputs(&[("ami_id", "ami-0aaa"), ("region", "eu-west-1")]))
    );
    assert!(
        first.recorded[..2].iter().all(|e| e.outputs.is_none()),
        "skipped stages carry none"
    );
    client
        .report_transition(&id, &completed_with(15, &[("ami_id", "ami-0bbb")]), None)
        .await
        .expect("stage 15");

    let build = client.get_build(&id).await.expect("get");
    assert_eq!(
        merged(&build),
        [
            ("ami_id".into(), "ami-0bbb".into(), 15),
            ("region".into(), "eu-west-1".into(), 10)
        ]
    );
    assert_eq!(client.outputs(&id).await.expect("outputs"), build.outputs);
    // The history keeps each stage's own outputs.
    let history = client.history(&id, 0, 100).await.expect("history");
    let with_outputs: Vec<i64> = history
        .entries
        .iter()
        .filter(|e| e.outputs.is_some())
        .map(|e| i64::from(e.state))
        .collect();
    assert_eq!(with_outputs, [10, 15]);
}

async fn a_reset_drops_the_outputs_of_the_stages_it_reopens(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    for (state, pairs) in [
        (10, vec![("ami_id", "ami-0aaa")]),
        (
            15,
            vec![("ami_id", "ami-0bbb"), ("instance_ip", "10.0.0.7")],
        ),
        (20, vec![("snapshot_id", "snap-1")]),
    ] {
        client
            .report_transition(&id, &completed_with(state, &pairs), None)
            .await
            .expect("complete");
    }
    let reset = client
        .reset_build(&id, code(15), "rebuild the instance")
        .await
        .expect("reset");
    assert_eq!(
        merged(&reset.build),
        [("ami_id".into(), "ami-0aaa".into(), 10)],
        "15 and 20 are reopened; stage 10's image id shows again"
    );
    let rerun = client
        .report_transition(
            &id,
            &completed_with(15, &[("instance_ip", "10.0.0.9")]),
            None,
        )
        .await
        .expect("re-run 15");
    assert_eq!(
        merged(&rerun.build),
        [
            ("ami_id".into(), "ami-0aaa".into(), 10),
            ("instance_ip".into(), "10.0.0.9".into(), 15)
        ]
    );
}

async fn a_replayed_completion_returns_the_same_outputs(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let request = completed_with(10, &[("ami_id", "ami-0aaa")]);
    let first = client
        .report_transition(&id, &request, Some("step-10"))
        .await
        .expect("first");
    let again = client
        .report_transition(&id, &request, Some("step-10"))
        .await
        .expect("replay");
    assert_eq!(first, again, "the first answer, outputs and all");
    // A retried completion without the key changes nothing, outputs included.
    let retried = client
        .report_transition(&id, &completed_with(10, &[("ami_id", "ami-0zzz")]), None)
        .await
        .expect("retried");
    assert!(!retried.changed);
    assert_eq!(
        merged(&retried.build),
        [("ami_id".into(), "ami-0aaa".into(), 10)]
    );
}

async fn every_bad_output_is_a_422_naming_it_and_writes_nothing(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let before = client.get_build(&id).await.expect("get");
    let many: serde_json::Map<String, serde_json::Value> = (0..=Outputs::MAX_COUNT)
        .map(|i| (format!("k{i}"), json!("v")))
        .collect();
    let cases = [
        ("an empty key", json!({"": "v"}), "outputs"),
        ("an empty value", json!({"ami_id": ""}), "outputs.ami_id"),
        (
            "a key with a dash",
            json!({"ami-id": "x"}),
            "outputs.ami-id",
        ),
        (
            "a key too long",
            json!({"k".repeat(65): "x"}),
            "outputs.kkkk",
        ),
        (
            "a value too long",
            json!({"k": "v".repeat(1025)}),
            "outputs.k",
        ),
        ("a control character", json!({"k": "a\u{7}b"}), "outputs.k"),
        ("a newline", json!({"k": "a\nb"}), "outputs.k"),
        ("too many", json!(many), "outputs"),
        ("a number", json!({"k": 1}), "outputs"),
        (
            "the caller's own token",
            json!({"token": app.admin_token}),
            "outputs.token",
        ),
    ];
    for (name, bad, field) in cases {
        let body = json!({"state": 10, "status": "completed", "outputs": bad}).to_string();
        let (status, answer) = raw(
            &app,
            reqwest::Method::POST,
            &format!("/builds/{id}/transitions"),
            Some(&app.admin_token),
            Some(("application/json", &body)),
        )
        .await;
        assert_eq!(status, 422, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field", "{name}");
        let named = answer["error"]["field"].as_str().unwrap_or("");
        assert!(named.starts_with(field), "{name}: field {named}");
        assert!(
            !answer.to_string().contains(&app.admin_token),
            "{name}: the token is never echoed"
        );
    }
    // Outputs belong to completions only.
    let refused = client
        .report_transition(
            &id,
            &ReportTransition {
                outputs: outputs(&[("ami_id", "ami-1")]),
                ..report(10, ReportStatus::InProgress)
            },
            None,
        )
        .await
        .expect_err("outputs on in_progress");
    assert_eq!(refused.code(), Some(&ErrorCode::InvalidField));
    let after = client.get_build(&id).await.expect("get");
    assert_eq!(after, before, "nothing was written");
}

/// Builds that had outputs before migration 0007 have no merged view stored (NULL): they are
/// shown from their per-stage outputs, reports that leave the outputs alone keep it that way,
/// and the next change of outputs writes the merged view.
async fn a_build_whose_outputs_predate_the_merged_column_shows_and_updates_them(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    for (state, pairs) in [
        (10, vec![("ami_id", "ami-0aaa")]),
        (
            15,
            vec![("ami_id", "ami-0bbb"), ("instance_ip", "10.0.0.7")],
        ),
    ] {
        client
            .report_transition(&id, &completed_with(state, &pairs), None)
            .await
            .expect("complete");
    }
    let before = client.get_build(&id).await.expect("get");
    let expected = [
        ("ami_id".into(), "ami-0bbb".into(), 15),
        ("instance_ip".into(), "10.0.0.7".into(), 15),
    ];
    assert_eq!(merged(&before), expected);
    let merged_column = format!("SELECT outputs FROM builds WHERE id = '{id}'");
    assert!(
        app.execute_sql(&merged_column).await.is_some(),
        "written by the completions"
    );

    app.execute_sql(&format!(
        "UPDATE builds SET outputs = NULL WHERE id = '{id}'"
    ))
    .await;
    assert_eq!(merged(&client.get_build(&id).await.expect("get")), expected);
    let listed = client.list_builds(&Default::default()).await.expect("list");
    assert_eq!(
        merged(&listed.builds[0]),
        expected,
        "the list shows them too"
    );
    let started = client
        .report_transition(&id, &report(20, ReportStatus::InProgress), None)
        .await
        .expect("in_progress 20");
    assert_eq!(merged(&started.build), expected);
    assert_eq!(app.execute_sql(&merged_column).await, None, "left alone");

    let completed = client
        .report_transition(&id, &completed_with(20, &[("snapshot_id", "snap-1")]), None)
        .await
        .expect("complete 20");
    let with_snapshot = [
        ("ami_id".into(), "ami-0bbb".into(), 15),
        ("instance_ip".into(), "10.0.0.7".into(), 15),
        ("snapshot_id".into(), "snap-1".into(), 20),
    ];
    assert_eq!(merged(&completed.build), with_snapshot);
    assert!(
        app.execute_sql(&merged_column).await.is_some(),
        "written again"
    );
    assert_eq!(
        merged(&client.get_build(&id).await.expect("get")),
        with_snapshot
    );
}
