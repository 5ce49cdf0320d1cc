//! The typed client against the real server: retries on connection errors, 429 with
//! `Retry-After` and 502/503/504 from a gateway in front of it; no retry on other 4xx; a
//! retried report applied once thanks to its idempotency key.
//!
//! The gateway is the one stand-in here: a load balancer is what answers 502/503/504 in real
//! deployments, and it is outside our control. It forwards to the real server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use buildstate::client::{Client, ClientConfig, ClientError};
use buildstate_domain::ReportStatus;

use crate::helpers::{report, start_build};
use crate::support::{Backend, TestApp};

/// What the gateway does with the n-th request.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Answer with this status (and `Retry-After` seconds) without forwarding.
    Refuse(u16, Option<u64>),
    /// Forward, but lose the answer: the client sees a 502.
    ForwardAndLoseAnswer,
}

struct Gateway {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl Gateway {
    /// A gateway to `upstream` that applies `plan` to the first requests, then forwards.
    async fn spawn(upstream: &str, plan: Vec<Step>) -> Gateway {
        let requests = Arc::new(AtomicUsize::new(0));
        let plan = Arc::new(Mutex::new(plan.into_iter()));
        let upstream = upstream.to_owned();
        let counter = requests.clone();
        let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let upstream = upstream.clone();
            let step = plan.lock().expect("plan").next();
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if let Some(Step::Refuse(status, retry_after)) = step {
                    let mut response = StatusCode::from_u16(status)
                        .expect("status")
                        .into_response();
                    if let Some(seconds) = retry_after {
                        response.headers_mut().insert("retry-after", seconds.into());
                    }
                    return response;
                }
                let mut request =
                    reqwest::Client::new().request(method, format!("{upstream}{uri}"));
                for (name, value) in &headers {
                    if name != "host" {
                        request = request.header(name, value);
                    }
                }
                let answer = request.body(body).send().await.expect("upstream answers");
                if matches!(step, Some(Step::ForwardAndLoseAnswer)) {
                    return StatusCode::BAD_GATEWAY.into_response();
                }
                let status = answer.status();
                let bytes = answer.bytes().await.expect("upstream body");
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(bytes))
                    .expect("response")
            }
        };
        let router = axum::Router::new().fallback(forward);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Gateway { url, requests }
    }

    fn client(&self, app: &TestApp) -> Client {
        let mut config = ClientConfig::new(&self.url, Some(app.admin_token.clone()));
        config.retry_base = Duration::from_millis(10);
        Client::new(config).expect("client")
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn app() -> TestApp {
    TestApp::spawn(Backend::Sqlite).await.expect("sqlite")
}

#[tokio::test]
async fn gateway_errors_are_retried_until_the_server_answers() {
    let app = app().await;
    let gateway = Gateway::spawn(
        &app.base_url,
        vec![
            Step::Refuse(503, None),
            Step::Refuse(502, None),
            Step::Refuse(504, None),
        ],
    )
    .await;
    let health = gateway
        .client(&app)
        .health()
        .await
        .expect("answered on the fourth attempt");
    assert_eq!(health.status, "ok");
    assert_eq!(gateway.requests(), 4);
}

#[tokio::test]
async fn retries_are_bounded() {
    let app = app().await;
    let gateway = Gateway::spawn(&app.base_url, vec![Step::Refuse(503, None); 10]).await;
    let error = gateway
        .client(&app)
        .health()
        .await
        .expect_err("still 503 after 4 attempts");
    assert_eq!(error.status(), Some(503));
    assert_eq!(gateway.requests(), 4, "the default is four attempts");
}

#[tokio::test]
async fn a_429_waits_as_long_as_retry_after_says() {
    let app = app().await;
    let gateway = Gateway::spawn(&app.base_url, vec![Step::Refuse(429, Some(1))]).await;
    let started = Instant::now();
    gateway
        .client(&app)
        .health()
        .await
        .expect("answered after the wait");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(gateway.requests(), 2);
}

/// A client through `gateway` whose waits between attempts are recorded instead of slept.
fn client_recording_waits(
    gateway: &Gateway,
    app: &TestApp,
    max_attempts: u32,
) -> (Client, Arc<Mutex<Vec<Duration>>>) {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let recorded = waits.clone();
    let mut config = ClientConfig::new(&gateway.url, Some(app.admin_token.clone()));
    config.max_attempts = max_attempts;
    config.sleep = Arc::new(move |wait| {
        recorded.lock().expect("waits").push(wait);
        Box::pin(std::future::ready(()))
    });
    (Client::new(config).expect("client"), waits)
}

/// Opens a build's event stream through a gateway that refuses as `plan` says, with
/// `max_attempts`; returns the final error, the requests the gateway saw and the waits.
async fn refused_event_stream(
    plan: Vec<Step>,
    max_attempts: u32,
) -> (ClientError, usize, Vec<Duration>) {
    let app = app().await;
    let id = start_build(&app.client()).await;
    let gateway = Gateway::spawn(&app.base_url, plan).await;
    let (client, waits) = client_recording_waits(&gateway, &app, max_attempts);
    let error = client
        .build_events(&id, None)
        .await
        .expect_err("refused on the last attempt");
    let waits = waits.lock().expect("waits").clone();
    (error, gateway.requests(), waits)
}

#[tokio::test]
async fn an_event_stream_answering_503_is_retried_after_its_retry_after() {
    let plan = vec![Step::Refuse(503, Some(3)), Step::Refuse(429, Some(5))];
    let (error, requests, waits) = refused_event_stream(plan, 2).await;
    assert_eq!(error.status(), Some(429), "{error:?}");
    assert_eq!(requests, 2);
    assert_eq!(
        waits,
        [Duration::from_secs(3)],
        "the wait the server asked for, not the client's backoff"
    );
}

#[tokio::test]
async fn an_event_stream_asked_to_wait_longer_than_the_client_ever_waits_is_not_retried() {
    let (error, requests, waits) =
        refused_event_stream(vec![Step::Refuse(429, Some(120)); 4], 4).await;
    assert_eq!(error.status(), Some(429), "{error:?}");
    assert_eq!(requests, 1, "the server's answer is final");
    assert!(waits.is_empty());
}

#[tokio::test]
async fn client_errors_are_never_retried_and_read_back_from_the_envelope() {
    let app = app().await;
    let gateway = Gateway::spawn(&app.base_url, vec![]).await;
    let client = gateway.client(&app);
    let missing = client
        .get_build(&"b_nosuchbuild000000000".parse().expect("id"))
        .await
        .expect_err("404");
    assert_eq!(gateway.requests(), 1, "a 404 is final");
    match missing {
        ClientError::Api {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((status, code.as_str()), (404, "build_not_found"));
            assert_eq!(message, "build `b_nosuchbuild000000000` not found");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_report_whose_answer_was_lost_is_applied_once() {
    let app = app().await;
    let id = start_build(&app.client()).await;
    let gateway = Gateway::spawn(&app.base_url, vec![Step::ForwardAndLoseAnswer]).await;
    let result = gateway
        .client(&app)
        .report_transition(&id, &report(0, ReportStatus::Failed), None)
        .await
        .expect("the retry gets the first answer");
    assert_eq!(gateway.requests(), 2);
    assert_eq!(result.build.failures, 1);
    let build = app.client().get_build(&id).await.expect("get");
    assert_eq!((build.failures, build.last_seq), (1, 2), "applied once");
}

#[tokio::test]
async fn an_unreachable_server_is_reported_after_the_bounded_attempts() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let mut config = ClientConfig::new(format!("http://127.0.0.1:{port}"), None);
    config.retry_base = Duration::from_millis(10);
    config.max_attempts = 3;
    let error = Client::new(config)
        .expect("client")
        .health()
        .await
        .expect_err("nothing listens");
    match &error {
        ClientError::Unreachable { attempts, url, .. } => {
            assert_eq!(*attempts, 3);
            assert_eq!(url, &format!("http://127.0.0.1:{port}"));
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_starts_late_is_reached_by_retrying() {
    let app = app().await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let state = app.state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind late");
        buildstate_server::serve(listener, state, std::future::pending()).await
    });
    let mut config = ClientConfig::new(format!("http://127.0.0.1:{port}"), None);
    config.retry_base = Duration::from_millis(200);
    let health = Client::new(config)
        .expect("client")
        .health()
        .await
        .expect("reached on a retry");
    assert_eq!(health.status, "ok");
}

#[test]
fn a_url_without_a_scheme_is_refused_with_the_fix() {
    let error = Client::new(ClientConfig::new("localhost:8000", None)).expect_err("no scheme");
    assert!(
        error
            .to_string()
            .contains("must start with http:// or https://"),
        "{error}"
    );
}

#[test]
fn the_token_never_appears_in_debug_output() {
    let config = ClientConfig::new("http://127.0.0.1:1", Some("bst_supersecret".into()));
    let client = Client::new(config.clone()).expect("client");
    assert!(!format!("{config:?}").contains("supersecret"));
    assert!(!format!("{client:?}").contains("supersecret"));
}

/// A client for an `http://` server loads no TLS roots (BENCHMARKS.md, the per-stage overhead),
/// so it does not follow a redirect to `https://`: the caller sees the 3xx that was answered,
/// not a certificate error. A redirect that stays on `http://` is still followed.
#[tokio::test]
async fn an_http_client_reports_a_redirect_to_https_and_follows_one_to_http() {
    use axum::routing::get;

    /// `/health` answers `status` with `location` (a path on the same server when it starts
    /// with `/`); `/moved` answers the health JSON.
    async fn redirecting(status: StatusCode, location: &'static str) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let router = axum::Router::new()
            .route(
                "/health",
                get(move || async move { (status, [("location", location)]) }),
            )
            .route(
                "/moved",
                get(|| async { axum::Json(serde_json::json!({"status": "ok", "version": "x"})) }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Client::new(ClientConfig::new(base, None)).expect("client")
    }

    let to_https = redirecting(StatusCode::MOVED_PERMANENTLY, "https://127.0.0.1:1/health").await;
    let error = to_https.health().await.expect_err("a redirect to https");
    assert_eq!(error.status(), Some(301), "{error}");

    let to_http = redirecting(StatusCode::FOUND, "/moved").await;
    let health = to_http.health().await.expect("followed to /moved");
    assert_eq!(health.status, "ok");
}
