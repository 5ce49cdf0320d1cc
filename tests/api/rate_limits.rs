//! Rate limits across real `bldst server` processes (each on its copy of one SQLite file, as a
//! SQLite file serves one process; the limits' only shared state is Redis): failed
//! authentications per address and writes per token, shared through a `redis-server` of the
//! test's own (never the machine's), counted per process without `REDIS_URL` or while Redis is
//! down — with no 5xx, one log line each way and `/status` saying which store counts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::process::ServerProcess;
use crate::support::redis::RedisProcess;

const WRONG_TOKEN: &str = "bst_this0token0was0never0issued0by0this0server";

/// The processes wait up to 5 s for the test's Redis instead of the default 50 ms: on a busy
/// machine a Redis that is up can take longer than 50 ms to answer, and the process would then
/// rightly count on its own (a fresh window), which is the outage test's subject, not these.
const PATIENT_WITH_REDIS: (&str, &str) = ("BUILDSTATE_REDIS_TIMEOUT_MILLIS", "5000");

/// A fresh SQLite file and its first admin token.
fn database() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
    let token = ServerProcess::bootstrap(&url);
    (dir, url, token)
}

/// Two server processes with `env`, as two replicas behind a balancer: one on `database_url`,
/// the other on a copy of it, so the same token works on both.
async fn two_processes(database_url: &str, env: &[(&str, &str)]) -> [ServerProcess; 2] {
    let path = database_url
        .strip_prefix("sqlite://")
        .expect("a SQLite URL");
    let copy = format!("{path}-copy.db");
    for suffix in ["", "-wal"] {
        if std::path::Path::new(&format!("{path}{suffix}")).exists() {
            std::fs::copy(format!("{path}{suffix}"), format!("{copy}{suffix}")).expect("copy");
        }
    }
    [
        ServerProcess::start(database_url, &[], env).await,
        ServerProcess::start(&format!("sqlite://{copy}"), &[], env).await,
    ]
}

/// `GET /builds` with `token`: the answer's status and `Retry-After`, if any.
async fn read_with(server: &ServerProcess, token: &str) -> (StatusCode, Option<u64>, Value) {
    let response = reqwest::Client::new()
        .get(server.url("/builds"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the server answers");
    answer(response).await
}

/// `POST /builds` with `token`.
async fn write_with(server: &ServerProcess, token: &str) -> (StatusCode, Option<u64>, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/builds"))
        .bearer_auth(token)
        .json(&json!({"platform": "aws", "image_type": "rhel8"}))
        .send()
        .await
        .expect("the server answers");
    answer(response).await
}

async fn answer(response: reqwest::Response) -> (StatusCode, Option<u64>, Value) {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().expect("text").parse().expect("seconds"));
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// `/status`'s `rate_limits`.
async fn rate_limits(server: &ServerProcess, token: &str) -> Value {
    let status: Value = reqwest::Client::new()
        .get(server.url("/status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON");
    status["rate_limits"].clone()
}

/// Waits (up to a minute) until `/status` says `store`; the switch back happens in the
/// background, so the test waits for it rather than for a fixed time.
async fn wait_for_store(server: &ServerProcess, token: &str, store: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = rate_limits(server, token).await;
        if last["store"] == store {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`/status` never said `{store}`: {last}");
}

fn lines_containing(server: &ServerProcess, text: &str) -> usize {
    server
        .log()
        .iter()
        .filter(|line| line.contains(text))
        .count()
}

#[tokio::test]
async fn failed_authentications_and_writes_through_one_process_count_on_the_other() {
    // Arrange: three failed authentications per address, three writes per token.
    let redis = RedisProcess::start().await;
    let (_dir, url, token) = database();
    let redis_url = redis.url();
    let [a, b] = two_processes(
        &url,
        &[
            ("REDIS_URL", redis_url.as_str()),
            PATIENT_WITH_REDIS,
            ("BUILDSTATE_RATE_LIMIT_FAILED_AUTHS", "3"),
            ("BUILDSTATE_RATE_LIMIT_WRITES", "3"),
        ],
    )
    .await;
    for server in [&a, &b] {
        assert_eq!(
            rate_limits(server, &token).await,
            json!({"store": "redis", "redis_configured": true})
        );
    }

    // Act + Assert: failed authentications, spread over both.
    for server in [&a, &a, &b] {
        let (status, _, body) = read_with(server, WRONG_TOKEN).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, retry_after, body) = read_with(&b, WRONG_TOKEN).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the fourth, on the other process"
    );
    let retry_after = retry_after.expect("Retry-After");
    assert!(
        (61..=300).contains(&retry_after),
        "the 5-minute cool-down, not what is left of the 1-minute window: {retry_after}"
    );
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["details"]["limit"], "failed_authentications");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("the bearer token is unknown or revoked; too many failed authentications from this address"),
        "the cause, then the limit: {message}"
    );
    let (status, _, _) = read_with(&a, WRONG_TOKEN).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "and on the first process"
    );
    let (status, _, _) = read_with(&b, &token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a valid token from the address is still served"
    );

    // Writes with one token, spread over both.
    for server in [&a, &b, &a] {
        let (status, _, body) = write_with(server, &token).await;
        assert!(status.is_success(), "{status} {body}");
    }
    let (status, retry_after, body) = write_with(&b, &token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!((1..=60).contains(&retry_after.expect("Retry-After")));
    assert_eq!(body["error"]["details"]["limit"], "writes");
    let (status, _, _) = read_with(&b, &token).await;
    assert_eq!(status, StatusCode::OK, "reads are not writes");
}

#[tokio::test]
async fn when_redis_stops_the_limits_hold_per_process_and_are_shared_again_when_it_is_back() {
    // Arrange
    let mut redis = RedisProcess::start().await;
    let (_dir, url, token) = database();
    let redis_url = redis.url();
    let [a, b] = two_processes(
        &url,
        &[
            ("REDIS_URL", redis_url.as_str()),
            PATIENT_WITH_REDIS,
            ("BUILDSTATE_RATE_LIMIT_FAILED_AUTHS", "2"),
        ],
    )
    .await;

    // Act: Redis goes away mid-test.
    redis.stop();

    // Assert: every request is still answered, never with a 5xx; the limits hold per process.
    for _ in 0..3 {
        for server in [&a, &b] {
            let (status, _, body) = write_with(server, &token).await;
            assert!(
                status.is_success(),
                "a write without Redis: {status} {body}"
            );
            let (status, _, body) = read_with(server, &token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(read_with(&a, WRONG_TOKEN).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "the limit, counted by the process alone"
    );
    let (status, _, _) = read_with(&b, WRONG_TOKEN).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the other process counts apart"
    );
    for server in [&a, &b] {
        let limits = rate_limits(server, &token).await;
        assert_eq!(limits["store"], "process", "{limits}");
        assert_eq!(limits["redis_configured"], true);
        assert!(
            limits["redis_unreachable_since"].is_string(),
            "since when: {limits}"
        );
        assert_eq!(
            lines_containing(server, "Redis does not answer"),
            1,
            "logged once: {:#?}",
            server.log()
        );
    }

    // Act: Redis is back (empty: it saved nothing).
    redis.restart().await;

    // Assert: shared again, said once, and counted across the processes again.
    for server in [&a, &b] {
        let limits = wait_for_store(server, &token, "redis").await;
        assert_eq!(limits, json!({"store": "redis", "redis_configured": true}));
        assert_eq!(lines_containing(server, "Redis answers again"), 1);
        assert_eq!(lines_containing(server, "Redis does not answer"), 1);
    }
    let statuses = [
        read_with(&a, WRONG_TOKEN).await.0,
        read_with(&b, WRONG_TOKEN).await.0,
        read_with(&a, WRONG_TOKEN).await.0,
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "one count for both processes again"
    );
}

#[tokio::test]
async fn without_redis_url_each_process_enforces_the_limits_on_its_own() {
    // Arrange
    let (_dir, url, token) = database();
    let [a, b] = two_processes(&url, &[("BUILDSTATE_RATE_LIMIT_FAILED_AUTHS", "2")]).await;

    // Act
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(read_with(&a, WRONG_TOKEN).await.0);
    }
    let (other, _, _) = read_with(&b, WRONG_TOKEN).await;
    let (good, _, _) = read_with(&a, &token).await;

    // Assert
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(other, StatusCode::UNAUTHORIZED, "not shared without Redis");
    assert_eq!(
        good,
        StatusCode::OK,
        "a valid token is served during the cool-down"
    );
    assert_eq!(
        rate_limits(&a, &token).await,
        json!({"store": "process", "redis_configured": false})
    );
}

#[tokio::test]
async fn a_malformed_redis_url_stops_the_server_at_start_naming_the_setting() {
    let (_dir, url, _token) = database();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bldst"))
        .args(["server", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &url)
        .env("SECRET_KEY", "test-secret-key-of-32-bytes-or-more")
        .env("REDIS_URL", "http://user:hunter2@cache.example")
        .output()
        .expect("bldst runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("REDIS_URL is not a usable Redis URL"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password is never printed: {stderr}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_address_is_counted() {
    // Arrange: one failed authentication per address; the proxy appends the client's address.
    let app = crate::support::TestApp::spawn_with(crate::support::Backend::Sqlite, |config| {
        config.rate_limit_failed_auths = 1;
        config.client_address_header = Some("x-forwarded-for".parse().expect("header name"));
    })
    .await
    .expect("SQLite is always there");
    let from = |client: &'static str| {
        app.http()
            .get(app.url("/builds"))
            .bearer_auth(WRONG_TOKEN)
            // What a client wrote comes first; the proxy's entry, last, is the one trusted.
            .header("x-forwarded-for", format!("203.0.113.9, {client}"))
            .send()
    };

    // Act
    let first = from("10.0.0.1").await.expect("answer").status();
    let second = from("10.0.0.1").await.expect("answer").status();
    let other = from("10.0.0.2").await.expect("answer").status();

    // Assert
    assert_eq!(first, StatusCode::UNAUTHORIZED);
    assert_eq!(
        second,
        StatusCode::TOO_MANY_REQUESTS,
        "the same client, over its limit"
    );
    assert_eq!(
        other,
        StatusCode::UNAUTHORIZED,
        "another client behind the same proxy"
    );
}
