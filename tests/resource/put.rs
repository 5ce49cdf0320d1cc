//! `out`: start-or-resume, report, idempotency, hooks, files, and the bad-input contract.

use std::collections::BTreeMap;

use buildstate_domain::wire::ReportTransition;
use buildstate_domain::{ReportStatus, StateCode};
use serde_json::{json, Value};

use crate::helpers::{metadata, read, Resource};
use crate::on_both_backends;
use crate::support::TestApp;

/// A report of `status` on `state`.
pub fn report(state: i64, status: ReportStatus) -> ReportTransition {
    ReportTransition::new(StateCode::new(state).expect("valid code"), status)
}

async fn history_len(app: &TestApp, version: &Value) -> usize {
    let id = version["build_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("id");
    app.client()
        .history(&id, 0, 1000)
        .await
        .expect("history")
        .entries
        .len()
}

async fn out_starts_resumes_and_reports_and_in_reads_it_back(app: TestApp) {
    let resource = Resource::new(&app).in_concourse_build("1001");
    let source = resource.source("p1", json!({"labels": {"team": "images"}}));
    let dir = resource.dir();
    let started = resource.put(dir.path(), &json!({"source": source})).await;
    assert!(
        started.stderr.contains("started build"),
        "{}",
        started.stderr
    );
    let started = started.json();
    assert_eq!(started["version"]["event"], "started");
    let reported = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 5, "status": "in_progress", "message": "kickstart"}}),
        )
        .await;
    assert!(
        reported.stderr.contains("resumed build"),
        "{}",
        reported.stderr
    );
    let reported = reported.json();
    assert_eq!(
        reported["version"]["build_id"],
        started["version"]["build_id"]
    );
    assert_eq!(
        (
            reported["version"]["state"].as_str(),
            reported["version"]["event"].as_str()
        ),
        (Some("5"), Some("in_progress"))
    );
    assert_eq!(metadata(&reported, "status"), "in_progress");
    // The implicit get after the put.
    let (get_dir, got) = resource.get_version(&source, &reported["version"]).await;
    assert_eq!(got["version"], reported["version"]);
    assert_eq!(read(get_dir.path(), "status"), "in_progress\n");
    let build: Value = serde_json::from_str(&read(get_dir.path(), "build.json")).expect("json");
    assert_eq!(build["labels"]["team"], "images");
    assert_eq!(build["labels"]["concourse_job"], "rhel8");
    assert_eq!(build["labels"]["concourse_url"], "https://ci.example");
    // The history says where the report came from.
    let id = build["id"].as_str().expect("id").parse().expect("id");
    let history = app.client().history(&id, 0, 100).await.expect("history");
    assert_eq!(
        history
            .entries
            .last()
            .and_then(|entry| entry.source.as_deref()),
        Some("https://ci.example/teams/main/pipelines/images/jobs/rhel8/builds/7")
    );
    app.stop().await;
}

async fn a_repeated_put_in_one_concourse_build_records_one_transition(app: TestApp) {
    let resource = Resource::new(&app).in_concourse_build("2002");
    let source = resource.source("p2", json!({}));
    let dir = resource.dir();
    let request =
        json!({"source": source, "params": {"state": 5, "status": "failed", "message": "boom"}});
    let first = resource.put(dir.path(), &request).await.json();
    let before = history_len(&app, &first["version"]).await;
    let again = resource.put(dir.path(), &request).await.json();
    assert_eq!(again["version"], first["version"], "the same version again");
    assert_eq!(
        history_len(&app, &first["version"]).await,
        before,
        "no second transition"
    );
    // Another Concourse build (a re-run) is a new failure.
    let mut rerun = Resource::new(&app).in_concourse_build("2003");
    rerun.token = resource.token.clone();
    let second = rerun.put(dir.path(), &request).await.json();
    assert_ne!(second["version"], first["version"]);
    app.stop().await;
}

async fn a_report_file_written_by_a_task_is_put(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("p3", json!({}));
    let dir = resource.dir();
    std::fs::create_dir_all(dir.path().join("out")).expect("dir");
    std::fs::write(
        dir.path().join("out/state.json"),
        r#"{"state": 10, "status": "completed", "message": "green image"}"#,
    )
    .expect("write");
    let answer = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"file": "out/state.json"}}),
        )
        .await
        .json();
    assert_eq!(answer["version"]["state"], "10");
    assert_eq!(answer["version"]["event"], "completed");
    assert_eq!(metadata(&answer, "state"), "15");
    app.stop().await;
}

async fn status_from_build_maps_the_hooks_build_status(app: TestApp) {
    let mut resource = Resource::new(&app);
    let source = resource.source("p4", json!({}));
    let dir = resource.dir();
    let request = json!({"source": source, "params": {"state": 5, "status_from_build": true}});
    let error = resource.put(dir.path(), &request).await.failure();
    assert!(error.contains("BUILD_STATUS"), "{error}");
    resource.set_env("BUILD_STATUS", "failed");
    let failed = resource.put(dir.path(), &request).await.json();
    assert_eq!(failed["version"]["event"], "failed");
    resource.set_env("BUILD_STATUS", "succeeded");
    let done = resource.put(dir.path(), &request).await.json();
    assert_eq!(done["version"]["event"], "completed");
    app.stop().await;
}

async fn a_message_file_is_read_from_the_input_directory_and_never_outside_it(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("p5", json!({}));
    let dir = resource.dir();
    std::fs::write(dir.path().join("ansible.log"), "line 1\nfatal: no route\n").expect("write");
    let answer = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 5, "status": "failed", "message_file": "ansible.log"}}),
        )
        .await
        .json();
    let id = answer["version"]["build_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("id");
    let build = app.client().get_build(&id).await.expect("build");
    assert_eq!(
        build.last_message.as_deref(),
        Some("line 1\nfatal: no route\n")
    );
    let before = build.last_seq;
    let outside = tempfile::NamedTempFile::new().expect("file");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).expect("symlink");
    for path in ["../etc/passwd", "/etc/passwd", "link"] {
        let error = resource
            .put(
                dir.path(),
                &json!({"source": source, "params": {"state": 5, "status": "failed", "message_file": path}}),
            )
            .await
            .failure();
        assert!(error.contains("message_file"), "{path}: {error}");
    }
    let after = app.client().get_build(&id).await.expect("build").last_seq;
    assert_eq!(after, before, "nothing recorded for a refused put");
    app.stop().await;
}

async fn bad_input_fails_with_one_line_and_nothing_on_stdout(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("p6", json!({}));
    let dir = resource.dir();
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("check", "not json", b"{not json".to_vec(), "not JSON"),
        ("in", "empty stdin", Vec::new(), "not JSON"),
        ("out", "binary", vec![0xff, 0xfe, 0x00], "not JSON"),
        (
            "check",
            "no source",
            b"{}".to_vec(),
            "missing field `source`",
        ),
        (
            "check",
            "unknown source key",
            json!({"source": {"api_url": "x", "token": "y", "platfrom": "aws"}})
                .to_string()
                .into_bytes(),
            "unknown field `platfrom`",
        ),
        (
            "out",
            "unknown params key",
            json!({"source": source, "params": {"satus": "failed"}})
                .to_string()
                .into_bytes(),
            "unknown field `satus`",
        ),
        (
            "out",
            "invalid state",
            json!({"source": source, "params": {"state": 7, "status": "failed"}})
                .to_string()
                .into_bytes(),
            "`params.state`",
        ),
        (
            "out",
            "no status",
            json!({"source": source, "params": {"state": 5}})
                .to_string()
                .into_bytes(),
            "`params.status` is missing",
        ),
        (
            "check",
            "no line",
            json!({"source": {"api_url": resource.api_url, "token": resource.token}})
                .to_string()
                .into_bytes(),
            "build line",
        ),
        ("check", "array", b"[]".to_vec(), "invalid request"),
    ];
    for (command, name, stdin, expected) in cases {
        let outcome = resource.run(command, Some(dir.path()), &stdin).await;
        let line = outcome.failure();
        assert_eq!(
            outcome.stderr.lines().count(),
            1,
            "{name}: one line: {}",
            outcome.stderr
        );
        assert!(line.contains(expected), "{name}: {line}");
    }
    app.stop().await;
}

async fn a_rejected_token_is_a_clear_error_that_never_shows_it(app: TestApp) {
    let mut resource = Resource::new(&app);
    resource.token = "bst_not_a_real_token_0123456789".to_owned();
    let source = resource.source("p7", json!({"debug": true}));
    let outcome = resource.check(&json!({"source": source})).await;
    let line = outcome.failure();
    assert!(line.contains("`token`"), "{line}");
    app.stop().await;
}

async fn debug_logs_steps_but_never_the_token(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("p8", json!({"debug": true}));
    let outcome = resource
        .put(
            resource.dir().path(),
            &json!({"source": source, "params": {"state": 5, "status": "in_progress"}}),
        )
        .await;
    outcome.json();
    assert!(outcome.stderr.contains("debug: "), "{}", outcome.stderr);
    app.stop().await;
}

async fn a_rerun_putting_in_progress_on_a_completed_stage_records_nothing_and_skips(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("p9", json!({}));
    let dir = resource.dir();
    let done = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 5, "status": "completed"}}),
        )
        .await
        .json();
    let before = history_len(&app, &done["version"]).await;
    let rerun = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 5, "status": "in_progress"}}),
        )
        .await;
    assert!(
        rerun.stderr.contains("stage 5 already completed"),
        "{}",
        rerun.stderr
    );
    let rerun = rerun.json();
    assert_eq!(
        rerun["version"], done["version"],
        "the newest transition, unchanged"
    );
    assert_eq!(history_len(&app, &done["version"]).await, before);
    let (get_dir, _) = resource.get_version(&source, &rerun["version"]).await;
    assert_eq!(read(get_dir.path(), "gate/5"), "skip\n");
    // A failure on a completed stage is still refused.
    let error = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 5, "status": "failed"}}),
        )
        .await
        .failure();
    assert!(error.contains("already completed"), "{error}");
    app.stop().await;
}

/// Requests the server has answered, per `METHOD route status`, from its request metrics (the
/// reads of `/metrics` itself left out).
async fn requests_answered(app: &TestApp) -> BTreeMap<String, u64> {
    app.metrics_text()
        .await
        .lines()
        .filter_map(|line| line.strip_prefix("buildstate_http_requests_total{"))
        .filter(|line| !line.contains("route=\"/metrics\""))
        .map(|line| {
            let (labels, count) = line.rsplit_once("} ").expect("a sample");
            (labels.to_owned(), count.parse().expect("a count"))
        })
        .collect()
}

/// What the server answered between two [`requests_answered`].
fn answered_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(labels, count)| {
            let earlier = before.get(labels).copied().unwrap_or(0);
            (labels.clone(), count - earlier)
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// A re-run's put on a stage that already completed (`in_progress` before its task, or
/// `completed` again) gets where the build stands in the report's answer: it makes the one
/// call every put makes (start or resume) and the report, nothing after, and prints what a
/// put without a report prints for the same build.
async fn a_put_on_a_completed_stage_asks_nothing_after_its_report(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("p10", json!({}));
    let dir = resource.dir();
    resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 5, "status": "completed"}}),
        )
        .await
        .json();
    let standing = resource
        .put(dir.path(), &json!({"source": source}))
        .await
        .json();
    for status in ["in_progress", "completed"] {
        let before = requests_answered(&app).await;
        let rerun = resource
            .put(
                dir.path(),
                &json!({"source": source, "params": {"state": 5, "status": status}}),
            )
            .await
            .json();
        let after = requests_answered(&app).await;
        assert_eq!(rerun, standing, "{status}: the same output as before");
        let refused_or_done = if status == "in_progress" {
            "409"
        } else {
            "200"
        };
        assert_eq!(
            answered_between(&before, &after),
            [
                (
                    "method=\"POST\",route=\"/builds\",status=\"200\"".to_owned(),
                    1
                ),
                (
                    format!(
                        "method=\"POST\",route=\"/builds/{{id}}/transitions\",status=\"{refused_or_done}\""
                    ),
                    1
                ),
            ],
            "{status}: resume, report, and nothing else"
        );
    }
    app.stop().await;
}

on_both_backends!(
    a_put_on_a_completed_stage_asks_nothing_after_its_report,
    a_rerun_putting_in_progress_on_a_completed_stage_records_nothing_and_skips,
    out_starts_resumes_and_reports_and_in_reads_it_back,
    a_repeated_put_in_one_concourse_build_records_one_transition,
    a_report_file_written_by_a_task_is_put,
    status_from_build_maps_the_hooks_build_status,
    a_message_file_is_read_from_the_input_directory_and_never_outside_it,
    bad_input_fails_with_one_line_and_nothing_on_stdout,
    a_rejected_token_is_a_clear_error_that_never_shows_it,
    debug_logs_steps_but_never_the_token,
);

/// An unreachable server is retried, each retry logged, then one clear error.
#[tokio::test]
async fn an_unreachable_server_is_retried_then_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let root = tempfile::tempdir().expect("root");
    let source = json!({
        "api_url": format!("http://127.0.0.1:{port}"), "token": "secret-token-value",
        "platform": "aws", "image_type": "rhel8", "max_attempts": 2, "timeout_seconds": 2,
    });
    let bin = root.path().join("check");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bldst"), &bin).expect("link");
    let outcome = crate::helpers::run_program(
        &bin,
        None,
        json!({ "source": source }).to_string().as_bytes(),
        &[],
        "secret-token-value",
    )
    .await;
    let line = outcome.failure();
    assert!(line.contains("cannot reach"), "{line}");
    assert!(outcome.stderr.contains("retrying"), "{}", outcome.stderr);
}
