//! The resource's `source.retry_policy`: `out` starts builds with it, `in` writes it to
//! `retry_policy.json` (and `build.json`), a failure at a stage with `restart_from` reopens the
//! earlier stages in the gate files, and a bad policy fails the step with one line naming the
//! rule, starting nothing.

use serde_json::{json, Value};

use crate::helpers::{read, Resource};
use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends!(
    out_starts_builds_with_the_sources_policy_and_in_writes_it,
    a_bad_policy_in_source_fails_with_one_line_and_starts_nothing,
);

fn policy() -> Value {
    json!({"rules": [
        {"stages": 5, "max_retries": 3, "backoff_base_secs": 600, "backoff_cap_secs": 3600},
        {"stages": "15-45", "max_retries": 2, "restart_from": 10}
    ]})
}

async fn out_starts_builds_with_the_sources_policy_and_in_writes_it(app: TestApp) {
    let resource = Resource::new(&app).in_concourse_build("2001");
    let source = resource.source("aws/rhel8/policy", json!({"retry_policy": policy()}));
    let dir = resource.dir();
    let mut version = Value::Null;
    for (state, status) in [
        (10, "completed"),
        (15, "completed"),
        (20, "completed"),
        (25, "failed"),
    ] {
        let put = resource
            .put(
                dir.path(),
                &json!({"source": source, "params": {"state": state, "status": status}}),
            )
            .await
            .json();
        version = put["version"].clone();
    }
    let get_dir = resource.dir();
    resource
        .get(
            get_dir.path(),
            &json!({"source": source, "version": version}),
        )
        .await
        .json();
    let written: Value =
        serde_json::from_str(&read(get_dir.path(), "retry_policy.json")).expect("json");
    assert_eq!(written, policy());
    let build: Value = serde_json::from_str(&read(get_dir.path(), "build.json")).expect("json");
    assert_eq!(build["retry_policy"], policy());
    assert_eq!(
        (build["state"].as_i64(), build["reopened_until"].as_i64()),
        (Some(10), Some(25))
    );
    // The reopened stages read `run` again in turn: 10 first (the test server's backoff is 0);
    // nothing after it runs before it completes.
    let gates: Vec<String> = [5, 10, 15, 25, 30]
        .iter()
        .map(|stage| {
            read(get_dir.path(), &format!("gate/{stage}"))
                .trim()
                .to_owned()
        })
        .collect();
    assert_eq!(gates, ["skip", "run", "stop", "stop", "stop"]);
}

async fn a_bad_policy_in_source_fails_with_one_line_and_starts_nothing(app: TestApp) {
    let resource = Resource::new(&app).in_concourse_build("2002");
    for (policy, words) in [
        (
            json!({"rules": [{"stages": 25, "restart_from": 30}]}),
            "rule 1 (stages 25): `restart_from` 30 must be earlier than stage 25",
        ),
        (
            json!({"rules": [{"stages": "15-45", "max_retries": 1}, {"stages": 20, "max_retries": 1}]}),
            "rule 2 (stages 20) overlaps rule 1 (stages 15-45)",
        ),
        (
            json!({"rules": [{"stages": 25, "retries": 1}]}),
            "unknown field `retries`",
        ),
    ] {
        let source = resource.source("aws/rhel8/bad", json!({"retry_policy": policy}));
        let dir = resource.dir();
        let line = resource
            .put(dir.path(), &json!({"source": source}))
            .await
            .failure();
        assert!(line.contains(words), "{line}");
    }
    let builds = app
        .client()
        .list_builds(&Default::default())
        .await
        .expect("list");
    assert!(builds.builds.is_empty(), "nothing was started");
}
