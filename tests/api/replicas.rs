//! Three `bldst server` processes (the real binary) on one PostgreSQL database, as a
//! deployment behind a load balancer runs them: reports spread across them keep every rule,
//! and a token revoked through one is refused by the others at once (LISTEN/NOTIFY), not
//! after the token cache window.

use std::time::Duration;

use buildstate::client::Client;
use buildstate_domain::wire::{CreateToken, StartBuild};
use buildstate_domain::{BuildStatus, EventKind, ReportStatus, Scope};
use futures::future::join_all;

use crate::helpers::{code, report, start_request};
use crate::support::process::ServerProcess;
use crate::support::{Backend, TestApp};

const REPORTS: usize = 60;

/// A trust window far longer than any test: only the notification can end it.
const LONG_TOKEN_CACHE: (&str, &str) = ("BUILDSTATE_TOKEN_CACHE_MILLIS", "600000");

/// A test server whose PostgreSQL turns cover the three processes too: 5 + 3 × 5 connections,
/// and the test's own, within two turns (see `support::POSTGRES_SERVERS_AT_ONCE`).
async fn spawn_for_three_processes() -> Option<TestApp> {
    TestApp::spawn_taking(Backend::Postgres, 2, |_| {}).await
}

async fn three_processes(app: &TestApp) -> Vec<ServerProcess> {
    let mut processes = Vec::new();
    for _ in 0..3 {
        // No backoff, so racing failures of one stage are all accepted.
        let env = [LONG_TOKEN_CACHE, ("BUILDSTATE_BACKOFF_BASE_SECS", "0")];
        processes.push(ServerProcess::start(&app.database_url, &[], &env).await);
    }
    processes
}

/// Connections to the database that `LISTEN` (the last thing a following connection ran).
async fn listening_connections(database_url: &str) -> i64 {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(database_url)
        .await
        .expect("connect");
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("pg_stat_activity")
}

/// One client per process, taken in turn: what a round-robin load balancer does.
fn spread(clients: &[Client], i: usize) -> Client {
    clients[i % clients.len()].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_spread_across_three_processes_keep_every_rule() {
    let Some(app) = spawn_for_three_processes().await else {
        return;
    };
    let processes = three_processes(&app).await;
    let clients: Vec<Client> = processes
        .iter()
        .map(|process| process.client_with(&app.admin_token))
        .collect();

    // Failures of one stage, racing through all three: each counted once.
    let start = StartBuild {
        max_retries: Some(100),
        ..start_request(None)
    };
    let failing = clients[0]
        .start_build(&start)
        .await
        .expect("start")
        .build
        .id;
    let sends = (0..REPORTS).map(|i| {
        let (client, id) = (spread(&clients, i), failing.clone());
        tokio::spawn(async move {
            client
                .report_transition(&id, &report(0, ReportStatus::Failed), None)
                .await
        })
    });
    for sent in join_all(sends).await {
        sent.expect("task")
            .expect("every failure report is accepted");
    }
    let build = clients[1].get_build(&failing).await.expect("get");
    assert_eq!(build.failures, REPORTS as u32, "every failure counted once");
    let history = clients[2]
        .history(&failing, 0, 1000)
        .await
        .expect("history");
    let seqs: Vec<i64> = history.entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=REPORTS as i64 + 1).collect::<Vec<_>>(),
        "history is gapless and increasing"
    );
    let mut attempts: Vec<u32> = history
        .entries
        .iter()
        .filter(|e| e.kind == EventKind::Failed)
        .filter_map(|e| e.attempt)
        .collect();
    attempts.sort_unstable();
    assert_eq!(attempts, (1..=REPORTS as u32).collect::<Vec<_>>());

    // Completions of one stage, racing through all three: one applies.
    let completing = clients[1]
        .start_build(&start)
        .await
        .expect("start")
        .build
        .id;
    let sends = (0..REPORTS).map(|i| {
        let (client, id) = (spread(&clients, i), completing.clone());
        tokio::spawn(async move {
            client
                .report_transition(&id, &report(0, ReportStatus::Completed), None)
                .await
        })
    });
    let results: Vec<_> = join_all(sends)
        .await
        .into_iter()
        .map(|sent| sent.expect("task").expect("every completion is accepted"))
        .collect();
    let applied = results.iter().filter(|result| result.changed).count();
    assert_eq!(
        applied, 1,
        "one completion applies, the others were already done"
    );
    let build = clients[2].get_build(&completing).await.expect("get");
    assert_eq!(
        (build.state, build.status, build.last_seq),
        (code(5), BuildStatus::Running, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_through_one_process_is_refused_by_the_others_at_once() {
    let Some(app) = spawn_for_three_processes().await else {
        return;
    };
    let processes = three_processes(&app).await;
    let created = app
        .client()
        .create_token(&CreateToken {
            username: "admin".parse().expect("username"),
            description: "pipeline".into(),
            scope: Scope::Write,
            expires_in_seconds: None,
        })
        .await
        .expect("create token");
    // Revocations and transitions arrive on one connection per process (peers.rs): PostgreSQL
    // wakes every listening connection for every notification, so a second one per process
    // would double what each announcement costs the database. This test's own server and the
    // three processes: four. Each listens before it serves, and all four have answered by now
    // (the processes their readiness check, this test's server the token), so none is still
    // connecting.
    assert_eq!(listening_connections(&app.database_url).await, 4);
    // Each process checks the token once and then trusts it for the (long) window.
    for process in &processes {
        process
            .client_with(&created.secret)
            .whoami()
            .await
            .expect("the new token works everywhere");
    }

    processes[0]
        .client_with(&app.admin_token)
        .revoke_token(&created.token.id)
        .await
        .expect("revoke through the first process");

    for (n, process) in processes.iter().enumerate() {
        let client = process.client_with(&created.secret);
        // The notification travels asynchronously (PostgreSQL to each listener), so allow it
        // a moment; without it the token would keep working for the ten-minute window.
        let mut tries = 0;
        let refusal = loop {
            tries += 1;
            match client.whoami().await {
                Err(error) => break error,
                Ok(_) if tries < 200 => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(_) => panic!("process {n} still accepts the revoked token after 10 s"),
            }
        };
        assert_eq!(refusal.status(), Some(401), "process {n}: {refusal}");
        eprintln!("process {n} refused the revoked token on try {tries}");
    }
}
