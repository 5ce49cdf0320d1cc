//! The real binary's log: every line written while serving a request carries its id, the
//! answer returns that id in `X-Request-Id` (the client's own if it sent a usable one), and
//! `BUILDSTATE_LOG_FORMAT=json` makes each line one JSON object.

use std::time::Duration;

use crate::support::process::ServerProcess;

/// Sends `GET /health` with an optional `X-Request-Id`; returns the id the answer carries.
async fn answered_id(server: &ServerProcess, sent: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(server.url("/health"));
    if let Some(id) = sent {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.expect("health");
    assert_eq!(response.status(), 200);
    response
        .headers()
        .get("x-request-id")
        .expect("every answer carries X-Request-Id")
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Waits (briefly: the log is read on another thread) for a line matching `wanted`.
async fn logged(server: &ServerProcess, wanted: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        if let Some(line) = server.log().into_iter().find(|line| wanted(line)) {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such log line; the log:\n{}", server.log().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_an_id_in_its_answer_and_its_log_lines() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
    // tower_http at debug: a line per request, written inside the request's span.
    let env = [("RUST_LOG", "info,tower_http=debug")];
    let text = ServerProcess::start(&url, &[], &env).await;

    assert_eq!(answered_id(&text, Some("ci-run-42")).await, "ci-run-42");
    let made = answered_id(&text, None).await;
    assert!(made.len() >= 16, "a made-up id: {made}");
    assert_ne!(made, answered_id(&text, None).await, "one per request");
    let forged = "x\" level=ERROR";
    let replaced = answered_id(&text, Some(forged)).await;
    assert_ne!(
        replaced, forged,
        "an id that could forge log fields is replaced"
    );
    logged(&text, |line| line.contains("request_id=ci-run-42")).await;
    logged(&text, |line| line.contains(&format!("request_id={made}"))).await;
    drop(text);

    let mut env = env.to_vec();
    env.push(("BUILDSTATE_LOG_FORMAT", "json"));
    let json = ServerProcess::start(&url, &[], &env).await;
    assert_eq!(answered_id(&json, Some("ci-run-43")).await, "ci-run-43");
    let line = logged(&json, |line| line.contains("ci-run-43")).await;
    let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(line["span"]["request_id"], "ci-run-43", "{line}");
    assert_eq!(line["span"]["path"], "/health", "{line}");
    for line in json.log() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&line);
        assert!(parsed.is_ok(), "every line is JSON: {line}");
    }
}
