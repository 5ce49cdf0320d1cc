//! The database away is a 503, not a 500: a pool that times out, a write lock held too long
//! (SQLite's "database is locked"), answered 503 `unavailable` with `Retry-After` and nothing
//! written; a serialization failure or deadlock is run again inside the server, so racing
//! reports all succeed even when PostgreSQL serializes them by aborting.

use buildstate_domain::ReportStatus;
use futures::future::join_all;
use sqlx::Connection as _;

use crate::helpers::{report, start_request};
use crate::support::{Backend, TestApp};

/// A build whose stage 0 may fail a hundred times.
async fn start_with_retries(app: &TestApp) -> buildstate_domain::BuildId {
    let request = buildstate_domain::wire::StartBuild {
        max_retries: Some(100),
        ..start_request(None)
    };
    app.client()
        .start_build(&request)
        .await
        .expect("start")
        .build
        .id
}

/// One of the racing reports, as the server answered it.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: serde_json::Value,
}

async fn report_failure(app: &TestApp, path: &str) -> Answer {
    let response = app
        .http()
        .post(app.url(path))
        .bearer_auth(&app.admin_token)
        .json(&report(0, ReportStatus::Failed))
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or_default();
    Answer {
        status,
        retry_after,
        body,
    }
}

/// With the database's write lock held elsewhere (SQLite: a writer's `BEGIN IMMEDIATE`;
/// PostgreSQL: an exclusive lock on `builds` and a pool of one), reports are answered 503 with
/// `Retry-After` — never 500 — and once the lock is gone, what was answered 503 left no trace.
async fn a_database_that_cannot_answer_gets_503_with_retry_after(backend: Backend) {
    let Some(app) =
        TestApp::spawn_with(backend, |config| config.database_max_connections = 1).await
    else {
        return;
    };
    let id = start_with_retries(&app).await;
    let mut holder = sqlx::AnyConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let hold = match backend {
        Backend::Sqlite => vec!["BEGIN IMMEDIATE"],
        Backend::Postgres => vec!["BEGIN", "LOCK TABLE builds IN ACCESS EXCLUSIVE MODE"],
    };
    for statement in hold {
        sqlx::query(statement)
            .execute(&mut holder)
            .await
            .expect(statement);
    }

    let path = format!("/builds/{id}/transitions");
    let mut racing: Vec<_> = (0..2)
        .map(|_| Box::pin(report_failure(&app, &path)))
        .collect();
    // Wait for a first answer while the lock is held (on PostgreSQL the report holding the one
    // connection waits for the lock itself, so only the other can answer), then let go.
    let (first, _, rest) = futures::future::select_all(racing.drain(..)).await;
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("let go");
    let mut answers = vec![first];
    answers.extend(join_all(rest).await);

    for answer in &answers {
        assert!(
            answer.status == 200 || answer.status == 503,
            "{}: {}",
            answer.status,
            answer.body
        );
    }
    let unavailable = answers
        .iter()
        .find(|answer| answer.status == 503)
        .expect("a report answered while the database could not");
    assert_eq!(unavailable.body["error"]["code"], "unavailable");
    assert_eq!(unavailable.retry_after.as_deref(), Some("1"));
    let recorded = answers.iter().filter(|answer| answer.status == 200).count();
    let build = app.client().get_build(&id).await.expect("build");
    assert_eq!(
        build.failures as usize, recorded,
        "only the reports answered 200 were recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_answer_gets_503_with_retry_after_on_sqlite() {
    a_database_that_cannot_answer_gets_503_with_retry_after(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_answer_gets_503_with_retry_after_on_postgres() {
    a_database_that_cannot_answer_gets_503_with_retry_after(Backend::Postgres).await;
}

/// Every transaction of the server's runs `SERIALIZABLE`, so PostgreSQL aborts a report that
/// waited for the build's row lock while another changed the row ("could not serialize
/// access"): the server runs it again, and every racing failure is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_are_run_again_inside_the_server() {
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |config| {
        config.database_url = format!(
            "{}?options[default_transaction_isolation]=serializable",
            config.database_url
        );
    })
    .await
    else {
        return;
    };
    let client = app.client();
    let id = start_with_retries(&app).await;
    const REPORTS: usize = 16;
    let sends = (0..REPORTS).map(|_| {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            client
                .report_transition(&id, &report(0, ReportStatus::Failed), None)
                .await
        })
    });
    for sent in join_all(sends).await {
        sent.expect("task").expect("every racing report succeeds");
    }
    let build = client.get_build(&id).await.expect("build");
    assert_eq!(
        (build.failures as usize, build.last_seq),
        (REPORTS, REPORTS as i64 + 1)
    );
}
