//! Event streams as a hostile or careless client meets them: a stream ends when its token is
//! revoked (through this process or another) or expires; streams have limits of their own,
//! per token and in total, and do not hold the connection cap; and they end at once when the
//! server shuts down.

use std::time::Duration;

use buildstate_domain::wire::{CreateToken, CreateUser};
use buildstate_domain::{Role, Scope};
use reqwest::StatusCode;

use crate::on_both_backends;
use crate::support::process::ServerProcess;
use crate::support::{Backend, TestApp};

on_both_backends!(a_stream_ends_when_its_token_is_revoked_on_this_process_or_another);
on_both_backends!(a_stream_ends_when_its_token_expires);

/// A guard against a test hanging forever, far beyond what any answer here takes: a stream
/// that should end and does not fails the test instead.
const HANG: Duration = Duration::from_secs(20);

/// A new `read` token of a new member `username`, expiring in `expires_in_seconds` if given.
async fn read_token(
    app: &TestApp,
    username: &str,
    expires_in_seconds: Option<u64>,
) -> (String, String) {
    let admin = app.client();
    admin
        .create_user(&CreateUser {
            username: username.parse().expect("username"),
            email: format!("{username}@example.com").parse().expect("email"),
            role: Role::Member,
        })
        .await
        .expect("create user");
    let created = admin
        .create_token(&CreateToken {
            username: username.parse().expect("username"),
            description: "a dashboard".to_owned(),
            scope: Scope::Read,
            expires_in_seconds,
        })
        .await
        .expect("create token");
    (created.token.id.to_string(), created.secret)
}

/// Opens `GET {base_url}/events` with `token`; the answer as it stands.
async fn open(base_url: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base_url}/events"))
        .bearer_auth(token)
        .send()
        .await
        .expect("open the stream")
}

/// An open stream, checked.
async fn stream(base_url: &str, token: &str) -> reqwest::Response {
    let answer = open(base_url, token).await;
    assert_eq!(answer.status(), StatusCode::OK);
    answer
}

/// Reads the stream until the server ends it; panics if it does not within [`HANG`].
async fn ends(mut answer: reqwest::Response, what: &str) {
    let read_to_end = async {
        // Keep-alive comments may come first; an error is a closed connection too.
        while let Ok(Some(_)) = answer.chunk().await {}
    };
    tokio::time::timeout(HANG, read_to_end)
        .await
        .unwrap_or_else(|_| panic!("{what}: the stream was still open"));
}

async fn a_stream_ends_when_its_token_is_revoked_on_this_process_or_another(app: TestApp) {
    let (id, secret) = read_token(&app, "dashboard", None).await;
    let here = stream(&app.base_url, &secret).await;
    // On PostgreSQL a second process shares the database: the revocation reaches it too.
    let peer = (app.backend == Backend::Postgres).then_some(app.spawn_peer(|_| {}).await);
    let there = match &peer {
        Some(peer) => Some(stream(&peer.base_url, &secret).await),
        None => None,
    };

    app.client().revoke_token(&id).await.expect("revoke");

    ends(here, "revoked through this process").await;
    if let Some(there) = there {
        ends(there, "revoked through another process").await;
    }
    let again = open(&app.base_url, &secret).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

async fn a_stream_ends_when_its_token_expires(app: TestApp) {
    let (_, secret) = read_token(&app, "shortlived", Some(2)).await;
    let answer = stream(&app.base_url, &secret).await;
    ends(answer, "the token expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_have_their_own_limits_and_leave_the_connections_to_requests_on_sqlite() {
    streams_have_their_own_limits_and_leave_the_connections_to_requests(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_have_their_own_limits_and_leave_the_connections_to_requests_on_postgres() {
    streams_have_their_own_limits_and_leave_the_connections_to_requests(Backend::Postgres).await;
}

async fn streams_have_their_own_limits_and_leave_the_connections_to_requests(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.max_connections = 3;
        config.max_streams = 3;
        config.max_streams_per_token = 2;
    })
    .await
    else {
        return;
    };
    let (_, first) = read_token(&app, "first", None).await;
    let (_, second) = read_token(&app, "second", None).await;
    let _open = [
        stream(&app.base_url, &first).await,
        stream(&app.base_url, &first).await,
    ];

    let refused = open(&app.base_url, &first).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = refused.headers().get("retry-after").cloned();
    let body: serde_json::Value = refused.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(
        body["error"]["details"]["limit"], "streams_per_token",
        "{body}"
    );
    assert!(retry_after.is_some(), "{body}");

    let _third = stream(&app.base_url, &second).await;
    let full = open(&app.base_url, &second).await;
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.headers().get("retry-after").is_some());
    let body: serde_json::Value = full.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // Three streams open under a cap of three connections: requests are still served.
    for _ in 0..3 {
        let health = tokio::time::timeout(HANG, reqwest::get(app.url("/health")))
            .await
            .expect("/health is answered while the streams are open")
            .expect("health");
        assert_eq!(health.status(), StatusCode::OK);
    }
}

/// SIGTERM with a stream open: the stream ends at once and the process exits 0, long before
/// the request timeout that bounds the drain of real requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_at_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
    let token = ServerProcess::bootstrap(&url);
    // A drain bound longer than `exited` waits: only ending the stream lets the process go.
    let mut server = ServerProcess::start(&url, &["--request-timeout-secs", "300"], &[]).await;
    let answer = stream(&server.base_url, &token).await;

    server.terminate();

    ends(answer, "the server shut down").await;
    assert!(server.exited().await.success());
}
