//! `put` against a server whose per-token write limit refuses the report (429 with
//! `Retry-After`): the resource waits as told, retries within its bounded attempts, and the
//! transition lands once.

use serde_json::json;

use crate::helpers::Resource;
use crate::support::{Backend, TestApp};

#[tokio::test]
async fn a_rate_limited_put_waits_retries_and_lands_once() {
    // Arrange: two writes per token in each 2-second window; starting the build takes one.
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.rate_limit_writes = 2;
        config.rate_limit_writes_window_secs = 2;
    })
    .await
    .expect("SQLite is always there");
    let resource = Resource::new(&app).in_concourse_build("2001");
    let source = resource.source("limited", json!({}));
    let dir = resource.dir();
    let started = resource
        .put(dir.path(), &json!({"source": source}))
        .await
        .json();

    // Act: resuming the build is the second write; the report is the third, refused at first.
    let reported = resource
        .put(
            dir.path(),
            &json!({"source": source, "params": {"state": 0, "status": "completed"}}),
        )
        .await;

    // Assert
    assert!(
        reported.stderr.contains("the server asked to retry later"),
        "the retry is logged: {}",
        reported.stderr
    );
    let reported = reported.json();
    assert_eq!(
        reported["version"]["build_id"],
        started["version"]["build_id"]
    );
    let id = reported["version"]["build_id"]
        .as_str()
        .expect("build id")
        .parse()
        .expect("a build id");
    let history = app.client().history(&id, 0, 100).await.expect("history");
    let completions = history
        .entries
        .iter()
        .filter(|entry| entry.kind.as_str() == "completed" && entry.state.value() == 0)
        .count();
    assert_eq!(completions, 1, "applied once: {:?}", history.entries);
}
