//! Raw-HTTP helpers for requests the typed client would never send, and small builders.

use buildstate::client::Client;
use buildstate_domain::wire::{ReportTransition, StartBuild, StartedBuild, TransitionResult};
use buildstate_domain::{BuildId, ReportStatus, StateCode};
use serde_json::Value;

use crate::support::TestApp;

/// A state code from a number the test knows is valid.
pub fn code(n: i64) -> StateCode {
    StateCode::new(n).expect("test state codes are valid")
}

pub fn start_request(key: Option<&str>) -> StartBuild {
    StartBuild {
        platform: "aws".parse().expect("platform"),
        image_type: "rhel8".parse().expect("image type"),
        description: Some("RHEL 8 base image".into()),
        key: key.map(|key| key.parse().expect("key")),
        labels: Default::default(),
        max_retries: None,
        retry_policy: None,
    }
}

pub fn report(state: i64, status: ReportStatus) -> ReportTransition {
    ReportTransition::new(code(state), status)
}

pub async fn start_build(client: &Client) -> BuildId {
    let StartedBuild { build, .. } = client
        .start_build(&start_request(None))
        .await
        .expect("start build");
    build.id
}

pub async fn send(
    client: &Client,
    id: &BuildId,
    state: i64,
    status: ReportStatus,
) -> TransitionResult {
    client
        .report_transition(id, &report(state, status), None)
        .await
        .unwrap_or_else(|error| panic!("report {state} {status}: {error}"))
}

/// Sends `method path` with `token` and an optional raw body; returns status and JSON body.
pub async fn raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut request = app.http().request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, body)) = body {
        request = request
            .header("content-type", content_type)
            .body(body.to_owned());
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}
