//! Stage outputs and stage leases through the resource: `out` sends outputs and claims the
//! stage for its Concourse build, `in` hands the outputs to a resumed job and asks the gate as
//! that build.

use serde_json::{json, Value};

use crate::helpers::{read, Resource};
use crate::on_both_backends;
use crate::support::TestApp;

/// The build a version names, as the server has it.
async fn build_of(app: &TestApp, version: &Value) -> buildstate_domain::wire::Build {
    let id = version["build_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("id");
    app.client().get_build(&id).await.expect("build")
}

async fn outputs_put_by_out_are_written_by_in_for_the_resumed_job(app: TestApp) {
    let first_run = Resource::new(&app).in_concourse_build("4001");
    let source = first_run.source("o1", json!({}));
    let dir = first_run.dir();
    let mut answers = Vec::new();
    for params in [
        json!({"state": 5, "status": "completed"}),
        json!({"state": 10, "status": "in_progress"}),
        json!({"state": 10, "status": "completed", "outputs": {"ami_id": "ami-0abc", "region": "eu-west-1"}}),
        json!({"state": 15, "status": "failed"}),
    ] {
        let request = json!({"source": source, "params": params});
        answers.push(first_run.put(dir.path(), &request).await.json());
    }
    let failed = answers.pop().expect("the failure");
    // The re-run (another Concourse build) reads what stage 10 produced.
    let rerun = Resource::new(&app).in_concourse_build("4002");
    let (get_dir, _) = rerun.get_version(&source, &failed["version"]).await;
    assert_eq!(read(get_dir.path(), "outputs/ami_id"), "ami-0abc\n");
    assert_eq!(read(get_dir.path(), "outputs/region"), "eu-west-1\n");
    let outputs: Value =
        serde_json::from_str(&read(get_dir.path(), "outputs.json")).expect("outputs.json");
    assert_eq!(
        outputs,
        json!({
            "ami_id": {"value": "ami-0abc", "stage": 10},
            "region": {"value": "eu-west-1", "stage": 10},
        })
    );
    assert_eq!(
        read(get_dir.path(), "outputs.env"),
        "ami_id=ami-0abc\nregion=eu-west-1\n"
    );
    assert_eq!(read(get_dir.path(), "gate/10"), "skip\n");
    assert_eq!(read(get_dir.path(), "gate/15"), "run\n");
    // A build without outputs still gets the directory and an empty map.
    let other = rerun.source("o1-empty", json!({}));
    let started = rerun
        .put(dir.path(), &json!({"source": other}))
        .await
        .json();
    let (empty_dir, _) = rerun.get_version(&other, &started["version"]).await;
    assert!(empty_dir.path().join("outputs").is_dir());
    assert_eq!(read(empty_dir.path(), "outputs.json"), "{}\n");
    assert_eq!(read(empty_dir.path(), "lease.json"), "null\n");
    app.stop().await;
}

async fn outputs_in_a_file_report_are_recorded(app: TestApp) {
    let resource = Resource::new(&app).in_concourse_build("4101");
    let source = resource.source("o2", json!({}));
    let dir = resource.dir();
    std::fs::write(
        dir.path().join("state.json"),
        r#"{"state": 5, "status": "completed", "outputs": {"kickstart_iso": "rhel-8.9.iso"}}"#,
    )
    .expect("write");
    let answer = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"file": "state.json"}}),
        )
        .await
        .json();
    let build = build_of(&app, &answer["version"]).await;
    let output = build.outputs.get("kickstart_iso").expect("recorded");
    assert_eq!(
        (output.value.as_str(), output.stage.to_string()),
        ("rhel-8.9.iso", "5".to_owned())
    );
    app.stop().await;
}

async fn bad_outputs_fail_with_one_line_and_record_nothing(app: TestApp) {
    let resource = Resource::new(&app).in_concourse_build("4201");
    let source = resource.source("o3", json!({}));
    let dir = resource.dir();
    let started = resource
        .put(dir.path(), &json!({"source": source}))
        .await
        .json();
    let before = build_of(&app, &started["version"]).await.last_seq;
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"state": 5, "status": "completed", "outputs": {"ami id": "x"}}"#,
    )
    .expect("write");
    let too_long = "x".repeat(2000);
    let too_many: serde_json::Map<String, Value> =
        (0..40).map(|n| (format!("k{n}"), json!("v"))).collect();
    let token = resource.token.clone();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a key that is no variable name",
            json!({"state": 5, "status": "completed", "outputs": {"ami-id": "x"}}),
            "`params.outputs`",
        ),
        (
            "an empty value",
            json!({"state": 5, "status": "completed", "outputs": {"ami_id": ""}}),
            "must not be empty",
        ),
        (
            "a value too long",
            json!({"state": 5, "status": "completed", "outputs": {"ami_id": too_long}}),
            "at most",
        ),
        (
            "a control character",
            json!({"state": 5, "status": "completed", "outputs": {"ami_id": "a\nb"}}),
            "control character",
        ),
        (
            "too many",
            json!({"state": 5, "status": "completed", "outputs": too_many}),
            "at most 32 outputs",
        ),
        (
            "a value that is not a string",
            json!({"state": 5, "status": "completed", "outputs": {"count": 3}}),
            "`params.outputs.count`",
        ),
        (
            "outputs on a failure",
            json!({"state": 5, "status": "failed", "outputs": {"ami_id": "x"}}),
            "only a `completed` report carries outputs",
        ),
        (
            "the token in a value",
            json!({"state": 5, "status": "completed", "outputs": {"leak": format!("Bearer {token}")}}),
            "API token",
        ),
        (
            "outputs beside a file",
            json!({"file": "bad.json", "outputs": {"ami_id": "x"}}),
            "leave out",
        ),
        (
            "outputs without a stage",
            json!({"outputs": {"ami_id": "x"}}),
            "`params.state` is missing",
        ),
        (
            "a bad key in the file",
            json!({"file": "bad.json"}),
            "`params.file`",
        ),
    ];
    for (name, params, expected) in cases {
        let outcome = resource
            .put(dir.path(), &json!({"source": source, "params": params}))
            .await;
        let line = outcome.failure();
        assert_eq!(
            outcome.stderr.lines().count(),
            1,
            "{name}: one line: {}",
            outcome.stderr
        );
        assert!(line.contains(expected), "{name}: {line}");
    }
    let build = build_of(&app, &started["version"]).await;
    assert_eq!(build.last_seq, before, "nothing recorded");
    assert!(build.outputs.is_empty());
    app.stop().await;
}

async fn a_stage_held_by_another_concourse_build_is_refused_naming_it(app: TestApp) {
    let holder = Resource::new(&app).in_concourse_build("4301");
    let mut other = Resource::new(&app).in_concourse_build("4302");
    other.set_env("BUILD_NAME", "8");
    let source = holder.source("o4", json!({}));
    let dir = holder.dir();
    let claimed = holder
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 5, "status": "in_progress"}}),
        )
        .await;
    assert!(
        claimed.stderr.contains("held by this run"),
        "{}",
        claimed.stderr
    );
    let claimed = claimed.json();
    let build = build_of(&app, &claimed["version"]).await;
    let lease = build.lease.clone().expect("the put claimed the stage");
    assert_eq!(lease.holder, "https://ci.example/builds/4301");
    // The other build's put is refused, naming the holder; nothing is recorded.
    for status in ["in_progress", "completed", "failed"] {
        let line = other
            .put(
                dir.path(),
                &json!({"source": source, "params": {"state": 5, "status": status}}),
            )
            .await
            .failure();
        assert!(
            line.contains("https://ci.example/builds/4301"),
            "{status}: {line}"
        );
    }
    assert_eq!(
        build_of(&app, &claimed["version"]).await.last_seq,
        build.last_seq
    );
    // Each build's `in` asks the gate as itself: the holder runs the stage, the other waits.
    let request = json!({"source": source, "version": claimed["version"]});
    let holder_dir = holder.dir();
    holder.get(holder_dir.path(), &request).await.json();
    assert_eq!(read(holder_dir.path(), "gate/5"), "run\n");
    let lease_file: Value =
        serde_json::from_str(&read(holder_dir.path(), "lease.json")).expect("lease.json");
    assert_eq!(lease_file["holder"], "https://ci.example/builds/4301");
    assert_eq!(lease_file["fence"], json!(lease.fence));
    let other_dir = other.dir();
    other.get(other_dir.path(), &request).await.json();
    assert_eq!(read(other_dir.path(), "gate/5"), "wait\n");
    app.stop().await;
}

async fn the_holding_builds_later_puts_are_accepted_without_a_fence(app: TestApp) {
    let resource = Resource::new(&app).in_concourse_build("4401");
    let source = resource.source("o5", json!({}));
    let claim = resource.dir();
    resource
        .put(
            claim.path(),
            &json!({"source": source, "params": {"state": 5, "status": "in_progress"}}),
        )
        .await
        .json();
    // The hook's put is a separate step and process, with its own directory; the same
    // Concourse build's metadata is all it shares with the claim.
    let hook = resource.dir();
    let done = resource
        .put(
            hook.path(),
            &json!({"source": source, "params": {"state": 5, "status": "completed", "outputs": {"iso": "rhel.iso"}}}),
        )
        .await
        .json();
    assert_eq!(done["version"]["event"], "completed");
    let build = build_of(&app, &done["version"]).await;
    assert_eq!(build.state.to_string(), "10");
    assert!(build.lease.is_none(), "the completion ends the lease");
    assert_eq!(
        build.outputs.get("iso").map(|output| output.value.as_str()),
        Some("rhel.iso")
    );
    app.stop().await;
}

on_both_backends!(
    outputs_put_by_out_are_written_by_in_for_the_resumed_job,
    outputs_in_a_file_report_are_recorded,
    bad_outputs_fail_with_one_line_and_record_nothing,
    a_stage_held_by_another_concourse_build_is_refused_naming_it,
    the_holding_builds_later_puts_are_accepted_without_a_fence,
);
