//! `check`: versions are string maps, one per transition, oldest first.

use serde_json::{json, Value};

use crate::helpers::{assert_strings_only, seqs, versions, Resource};
use crate::on_both_backends;
use crate::support::TestApp;

/// Puts `state`/`status` on the line `key` and returns the version put answered with.
async fn put(resource: &Resource, key: &str, state: i64, status: &str) -> Value {
    let dir = resource.dir();
    let answer = resource
        .put(
            dir.path(),
            &json!({"source": resource.source(key, json!({})), "params": {"state": state, "status": status}}),
        )
        .await
        .json();
    answer["version"].clone()
}

async fn nothing_tracked_yet_is_no_version_whatever_the_version_given(app: TestApp) {
    let resource = Resource::new(&app);
    let source = resource.source("aws/rhel8/none", json!({}));
    for request in [
        json!({"source": source}),
        json!({"source": source, "version": null}),
        json!({"source": source, "version": {}}),
    ] {
        assert_eq!(resource.check(&request).await.json(), json!([]));
    }
    app.stop().await;
}

async fn without_a_version_check_emits_only_the_latest(app: TestApp) {
    let resource = Resource::new(&app);
    put(&resource, "k1", 5, "completed").await;
    let last = put(&resource, "k1", 10, "in_progress").await;
    let source = resource.source("k1", json!({}));
    for request in [
        json!({"source": source}),
        json!({"source": source, "version": null}),
        json!({"source": source, "version": {}}),
    ] {
        let found = versions(&resource.check(&request).await.json());
        assert_eq!(found, vec![last.clone()]);
        assert_strings_only(&found[0]);
    }
    app.stop().await;
}

async fn a_given_version_comes_back_with_every_later_one_oldest_first(app: TestApp) {
    let resource = Resource::new(&app);
    let first = put(&resource, "k2", 5, "in_progress").await;
    put(&resource, "k2", 5, "failed").await;
    put(&resource, "k2", 5, "failed").await;
    put(&resource, "k2", 5, "completed").await;
    let source = resource.source("k2", json!({}));
    let request = json!({"source": source, "version": first});
    let found = versions(&resource.check(&request).await.json());
    assert_eq!(found[0], first, "the given version first");
    let order = seqs(&found);
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{order:?}");
    let failures: Vec<&Value> = found
        .iter()
        .filter(|version| version["event"] == "failed" && version["state"] == "5")
        .collect();
    assert_eq!(
        failures.len(),
        2,
        "two failures at one code are two versions: {found:?}"
    );
    assert_ne!(failures[0], failures[1]);
    found.iter().for_each(assert_strings_only);
    // Deterministic: the same question gets the same answer.
    assert_eq!(versions(&resource.check(&request).await.json()), found);
    app.stop().await;
}

async fn an_unknown_version_gets_the_latest(app: TestApp) {
    let resource = Resource::new(&app);
    let first = put(&resource, "k3", 5, "completed").await;
    let last = put(&resource, "k3", 10, "completed").await;
    let source = resource.source("k3", json!({}));
    let mut unknown_seq = first.clone();
    unknown_seq["seq"] = json!("9999");
    // A version of a build the server does not know (pruned, another server's): not "every
    // transition of the current build", only the latest.
    let mut unknown_build = first.clone();
    unknown_build["build_id"] = json!("b_00000000000000000000");
    let mut unparsable_build = first.clone();
    unparsable_build["build_id"] = json!("not a build id");
    for version in [
        json!({"ref": "abc"}),
        unknown_seq,
        unknown_build,
        unparsable_build,
    ] {
        let found = versions(
            &resource
                .check(&json!({"source": source, "version": version}))
                .await
                .json(),
        );
        assert_eq!(found, vec![last.clone()], "given {version}");
    }
    app.stop().await;
}

async fn a_filter_emits_only_the_transitions_asked_for(app: TestApp) {
    let resource = Resource::new(&app);
    let first = put(&resource, "k4", 5, "in_progress").await;
    put(&resource, "k4", 5, "completed").await;
    put(&resource, "k4", 10, "in_progress").await;
    put(&resource, "k4", 10, "failed").await;
    let only_completed = resource.source("k4", json!({"filter": {"events": ["completed"]}}));
    let latest = versions(
        &resource
            .check(&json!({"source": only_completed}))
            .await
            .json(),
    );
    assert_eq!(latest.len(), 1);
    assert_eq!(
        (latest[0]["event"].as_str(), latest[0]["state"].as_str()),
        (Some("completed"), Some("5"))
    );
    let every = versions(
        &resource
            .check(&json!({"source": only_completed, "version": first}))
            .await
            .json(),
    );
    let events: Vec<&str> = every.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(
        events,
        ["in_progress", "completed"],
        "the given one, then matches only"
    );
    let only_10 = resource.source("k4", json!({"filter": {"states": [10]}}));
    let latest = versions(&resource.check(&json!({"source": only_10})).await.json());
    assert_eq!(latest[0]["state"], "10");
    app.stop().await;
}

async fn a_large_history_is_capped_and_still_ordered(app: TestApp) {
    let resource = Resource::new(&app);
    let first = put(&resource, "k5", 5, "in_progress").await;
    let client = app.client();
    let id = first["build_id"]
        .as_str()
        .expect("build id")
        .parse()
        .expect("id");
    for _ in 0..120 {
        client
            .report_transition(
                &id,
                &crate::put::report(5, buildstate_domain::ReportStatus::InProgress),
                None,
            )
            .await
            .expect("report");
    }
    let source = resource.source("k5", json!({}));
    let found = versions(
        &resource
            .check(&json!({"source": source, "version": first}))
            .await
            .json(),
    );
    assert_eq!(found.len(), 100, "capped");
    assert_eq!(found[0], first);
    let order = seqs(&found);
    assert!(
        order.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{order:?}"
    );
    // The next check goes on from the newest emitted.
    let last = found.last().expect("some").clone();
    let rest = versions(
        &resource
            .check(&json!({"source": source, "version": last}))
            .await
            .json(),
    );
    assert_eq!(rest[0], last);
    assert!(rest.len() > 1);
    app.stop().await;
}

async fn a_version_of_an_earlier_build_gets_the_new_builds_transitions(app: TestApp) {
    let resource = Resource::new(&app);
    let old = put(&resource, "k6", 100, "completed").await;
    // The finished build's key starts a new build.
    let new_first = put(&resource, "k6", 5, "completed").await;
    assert_ne!(old["build_id"], new_first["build_id"]);
    let source = resource.source("k6", json!({}));
    let found = versions(
        &resource
            .check(&json!({"source": source, "version": old}))
            .await
            .json(),
    );
    assert!(found
        .iter()
        .all(|version| version["build_id"] == new_first["build_id"]));
    assert!(found.contains(&new_first));
    app.stop().await;
}

async fn a_fixed_build_id_is_tracked(app: TestApp) {
    let resource = Resource::new(&app);
    let version = put(&resource, "k7", 10, "completed").await;
    let source = json!({"api_url": resource.api_url, "token": resource.token, "build_id": version["build_id"]});
    let found = versions(&resource.check(&json!({"source": source})).await.json());
    assert_eq!(found, vec![version]);
    app.stop().await;
}

on_both_backends!(
    nothing_tracked_yet_is_no_version_whatever_the_version_given,
    without_a_version_check_emits_only_the_latest,
    a_given_version_comes_back_with_every_later_one_oldest_first,
    an_unknown_version_gets_the_latest,
    a_filter_emits_only_the_transitions_asked_for,
    a_large_history_is_capped_and_still_ordered,
    a_version_of_an_earlier_build_gets_the_new_builds_transitions,
    a_fixed_build_id_is_tracked,
);

/// An internal server on plain `http://`: refused with the `source` key that allows it (not a
/// flag or variable a resource cannot pass), then, allowed, warned about on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_another_host_needs_allow_insecure_in_source_and_is_warned_about() {
    let app = TestApp::spawn(crate::support::Backend::Sqlite)
        .await
        .expect("a SQLite server");
    let resource = Resource::new(&app);
    let mut source = resource.source("k-insecure", json!({"max_attempts": 1}));
    source["api_url"] = json!("http://buildstate.invalid:8000");

    let refused = resource.check(&json!({"source": source})).await;
    assert_eq!(
        refused.failure(),
        "error: check: refusing to send the API token over plain http:// to \
         `buildstate.invalid`: anyone on the network path could read it and act as you; use an \
         https:// URL (`api_url` in the resource's `source`), or, on a network you trust, set \
         `allow_insecure: true` in the resource's `source`"
    );

    source["allow_insecure"] = json!(true);
    let tried = resource.check(&json!({"source": source})).await;
    let last = tried.failure();
    assert!(last.contains("cannot reach"), "past the refusal: {last}");
    assert!(
        tried.stderr.lines().any(|line| line
            == "warning: sending the token over plain http:// to `buildstate.invalid` \
                (`allow_insecure: true`): anyone on the network path can read it; prefer an \
                https:// `api_url`"),
        "{}",
        tried.stderr
    );
    app.stop().await;
}
