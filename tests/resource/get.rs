//! `in`: the build's record, basics, gate answers and stage lists as files.

use serde_json::json;

use crate::helpers::{metadata, read, Resource};
use crate::on_both_backends;
use crate::support::TestApp;

async fn in_writes_the_build_the_gates_and_the_stage_lists(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("g1", json!({}));
    let put_dir = resource.dir();
    resource
        .put(
            put_dir.path(),
            &json!({"source": source, "params": {"state": 10, "status": "completed"}}),
        )
        .await
        .json();
    let failed = resource
        .put(
            put_dir.path(),
            &json!({"source": source, "params": {"state": 15, "status": "failed", "message": "ansible failed"}}),
        )
        .await
        .json();
    let (dir, answer) = resource.get_version(&source, &failed["version"]).await;
    assert_eq!(answer["version"], failed["version"]);
    let path = dir.path();
    let build: buildstate_domain::wire::Build =
        serde_json::from_str(&read(path, "build.json")).expect("build.json is the build record");
    assert_eq!(read(path, "id"), format!("{}\n", build.id));
    assert_eq!(read(path, "state"), "15\n");
    assert_eq!(read(path, "status"), "failed\n");
    assert_eq!(read(path, "attempt"), "2\n");
    assert_eq!(read(path, "key"), "g1\n");
    assert_eq!(read(path, "gate/10"), "skip\n");
    assert_eq!(
        read(path, "gate/15"),
        "run\n",
        "no backoff in tests: run the failed stage"
    );
    assert_eq!(read(path, "gate/20"), "stop\n", "never past a failed stage");
    let completed: Vec<u8> = serde_json::from_str(&read(path, "completed.json")).expect("json");
    assert_eq!(completed, [0, 5, 10]);
    let pending: Vec<u8> = serde_json::from_str(&read(path, "pending.json")).expect("json");
    assert_eq!(pending.first(), Some(&15));
    assert_eq!(pending.last(), Some(&100));
    assert_eq!(read(path, "completed"), "0\n5\n10\n");
    let gates: serde_json::Value = serde_json::from_str(&read(path, "gate.json")).expect("json");
    assert_eq!(gates["5"], "skip");
    // One line of POSIX shell skips a completed stage.
    let skip = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"read -r gate < "$1/gate/10"; [ "$gate" = skip ]"#)
        .arg("sh")
        .arg(path)
        .status()
        .expect("sh");
    assert!(skip.success());
    assert_eq!(metadata(&answer, "state"), "15");
    assert_eq!(metadata(&answer, "status"), "failed");
    assert_eq!(metadata(&answer, "attempt"), "2");
    assert_eq!(metadata(&answer, "build_id"), build.id.to_string());
    assert!(metadata(&answer, "dashboard").ends_with(&format!("/dashboard/#/builds/{}", build.id)));
    assert!(answer["metadata"]
        .as_array()
        .expect("list")
        .iter()
        .all(|m| m["value"].is_string()));
    assert_eq!(read(path, "resume.json"), "null\n", "not resumed yet");
    assert!(!answer.to_string().contains("\"resumed\""), "{answer}");

    // The re-run's put on the failed stage resumes the build: `in` shows what that saved, as
    // the server recorded it. Stage 10 was reported completed without an in_progress, so its
    // duration is unknown; stage 0 (completed by the jump) and skipped 5 are not counted.
    let resumed = resource
        .put(
            put_dir.path(),
            &json!({"source": source, "params": {"state": 15, "status": "in_progress"}}),
        )
        .await
        .json();
    let (dir, answer) = resource.get_version(&source, &resumed["version"]).await;
    assert_eq!(
        metadata(&answer, "resumed"),
        "resumed at stage 15: 1 stage not re-run, time saved unknown (no recorded durations)"
    );
    let resume: serde_json::Value =
        serde_json::from_str(&read(dir.path(), "resume.json")).expect("resume.json");
    assert_eq!(
        (
            &resume["stage"],
            &resume["stages_not_rerun"],
            &resume["unknown_durations"]
        ),
        (&json!(15), &json!(1), &json!(1))
    );
    app.stop().await;
}

async fn params_may_be_absent_null_or_empty(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("g2", json!({}));
    let put = resource
        .put(resource.dir().path(), &json!({"source": source}))
        .await
        .json();
    for params in [None, Some(json!(null)), Some(json!({}))] {
        let mut request = json!({"source": source, "version": put["version"]});
        if let Some(params) = params {
            request["params"] = params;
        }
        let dir = resource.dir();
        resource.get(dir.path(), &request).await.json();
        assert_eq!(read(dir.path(), "state"), "0\n");
    }
    let error = resource
        .get(resource.dir().path(), &json!({"source": source, "version": put["version"], "params": {"skip_download": true}}))
        .await
        .failure();
    assert!(error.contains("unknown field `skip_download`"), "{error}");
    app.stop().await;
}

async fn a_version_the_server_no_longer_has_fails_clearly(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("g3", json!({}));
    let put = resource
        .put(resource.dir().path(), &json!({"source": source}))
        .await
        .json();
    let mut gone = put["version"].clone();
    gone["build_id"] = json!("b_00000000000000000000");
    let dir = resource.dir();
    let error = resource
        .get(dir.path(), &json!({"source": source, "version": gone}))
        .await
        .failure();
    assert!(error.contains("no longer exists"), "{error}");
    let mut beyond = put["version"].clone();
    beyond["seq"] = json!("999");
    let error = resource
        .get(dir.path(), &json!({"source": source, "version": beyond}))
        .await
        .failure();
    assert!(error.contains("no longer has this version"), "{error}");
    app.stop().await;
}

on_both_backends!(
    in_writes_the_build_the_gates_and_the_stage_lists,
    params_may_be_absent_null_or_empty,
    a_version_the_server_no_longer_has_fails_clearly,
);
