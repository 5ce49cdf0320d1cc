//! A report refused by the server's per-token write limit (429 with `Retry-After`), through
//! the real `bldst` binary: retried after the wait and applied, or — when the wait asked for
//! is longer than the client ever waits — a clear sentence and exit code 7.

use buildstate_domain::wire::Build;
use serde_json::Value;

use crate::helpers::{json, Bldst};
use crate::support::{Backend, TestApp};

/// A server that allows one write per token in each `window_secs`.
async fn one_write_per(window_secs: u64) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |config| {
        config.rate_limit_writes = 1;
        config.rate_limit_writes_window_secs = window_secs;
    })
    .await
    .expect("SQLite is always there")
}

#[tokio::test]
async fn a_rate_limited_report_is_retried_after_the_wait_and_lands() {
    // Arrange: the build's creation uses the window's one write.
    let app = one_write_per(2).await;
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await.to_string();

    // Act: refused with Retry-After (at most 2 s), retried once the window has ended.
    let updated = bldst
        .run(&[
            "--verbose",
            "build",
            "update",
            &id,
            "--state",
            "0",
            "--status",
            "completed",
        ])
        .await
        .ok();

    // Assert
    let requests: Vec<&str> = updated
        .stderr
        .lines()
        .filter(|line| line.contains("/transitions -> "))
        .collect();
    assert_eq!(
        requests.len(),
        2,
        "refused, then retried: {}",
        updated.stderr
    );
    assert!(requests[0].contains("-> 429"), "{}", updated.stderr);
    assert!(requests[1].contains("-> 200"), "{}", updated.stderr);
    let build: Build = json(
        &bldst
            .run(&["build", "get", &id, "--output", "json"])
            .await
            .ok()
            .stdout,
    );
    assert_eq!(build.state.value(), 5, "the report was applied once");
}

#[tokio::test]
async fn a_limit_longer_than_the_client_waits_exits_7_naming_the_limit() {
    // Arrange: a 10-minute window, far past the client's longest wait (30 s).
    let app = one_write_per(600).await;
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await.to_string();

    // Act
    let refused = bldst
        .run(&[
            "build",
            "update",
            &id,
            "--state",
            "0",
            "--status",
            "completed",
        ])
        .await
        .expect_code(7);
    let as_json = bldst
        .run(&[
            "build",
            "update",
            &id,
            "--state",
            "0",
            "--status",
            "completed",
            "--output",
            "json",
        ])
        .await
        .expect_code(7);

    // Assert
    refused.expect_one_error_line();
    assert!(
        refused
            .stderr
            .contains("too many writes with this token (more than 1 in 600 s): retry in"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("retrying"),
        "no pointless retry: {}",
        refused.stderr
    );
    let error: Value = json(as_json.stderr.trim());
    assert_eq!(error["error"]["code"], "rate_limited");
    assert_eq!(error["error"]["exit_code"], 7);
    let build: Build = json(
        &bldst
            .run(&["build", "get", &id, "--output", "json"])
            .await
            .ok()
            .stdout,
    );
    assert_eq!(build.state.value(), 0, "nothing was applied");
}
