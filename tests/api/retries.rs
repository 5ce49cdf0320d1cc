//! Retries that happen by themselves: the server records one `retry_due` entry when a failed
//! stage's backoff ends with retries left, and nothing for a blocked build; exactly once per
//! failure across server processes and restarts; never past a live lease or an idempotent
//! replay; announced on the event stream, `/metrics` and a signed `retry_due` webhook. The
//! reports are the test's, made as a CI system would make them on each `retry_due`.

use std::time::Duration;

use buildstate::client::Client;
use buildstate_domain::wire::{ErrorCode, HistoryEntry, ReportTransition, StartBuild};
use buildstate_domain::{BuildId, BuildStatus, EventKind, GateDecision, ReportStatus};
use futures::future::join_all;
use serde_json::Value;

use crate::helpers::{code, report, send, start_request};
use crate::reports::{receiver, wait_for, EventReader};
use crate::support::process::ServerProcess;
use crate::support::{Backend, ScratchDatabase, TestApp};

/// The scheduler's tick in these tests (the default is a second).
const TICK_MILLIS: u64 = 50;

/// Runs each `async fn NAME(backend: Backend)` on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario($crate::support::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario($crate::support::Backend::Postgres).await;
                }
            }
        )+
    };
}

on_both!(
    a_stage_that_fails_twice_then_succeeds_is_retried_twice_by_itself,
    a_stage_that_always_fails_gets_exactly_max_retries_retries_then_none,
    a_retry_never_lets_a_run_take_a_stage_another_run_holds,
    an_idempotent_replay_of_a_failure_gets_no_second_retry,
    retries_reach_the_event_stream_the_metrics_and_a_signed_webhook,
    a_server_stopped_across_a_due_time_records_it_once_after_it_starts,
);

/// A server with the retry scheduler on (every [`TICK_MILLIS`]) and a 1 s backoff base, so a
/// first failure is due a second later and a second failure two seconds later.
async fn spawn(
    backend: Backend,
    adjust: impl FnOnce(&mut buildstate_server::ServerConfig),
) -> Option<TestApp> {
    TestApp::spawn_with(backend, |config| {
        config.retry_check_millis = TICK_MILLIS;
        config.backoff_base_secs = 1;
        adjust(config);
    })
    .await
}

async fn start(client: &Client, max_retries: u32) -> BuildId {
    client
        .start_build(&StartBuild {
            max_retries: Some(max_retries),
            ..start_request(None)
        })
        .await
        .unwrap_or_else(|error| panic!("start a build: {error}"))
        .build
        .id
}

async fn history(client: &Client, id: &BuildId) -> Vec<HistoryEntry> {
    client.history(id, 0, 1000).await.expect("history").entries
}

fn kinds(entries: &[HistoryEntry]) -> Vec<EventKind> {
    entries.iter().map(|entry| entry.kind).collect()
}

fn count(entries: &[HistoryEntry], kind: EventKind) -> usize {
    entries.iter().filter(|entry| entry.kind == kind).count()
}

/// Waits (polling, at most 30 s) until the build's history holds `n` `retry_due` entries, as
/// a CI system waits for the version or the alert that starts its retry.
async fn retry_due_entries(client: &Client, id: &BuildId, n: usize) -> Vec<HistoryEntry> {
    for _ in 0..1500 {
        let entries = history(client, id).await;
        if count(&entries, EventKind::RetryDue) >= n {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("build `{id}` did not get {n} retry_due entries within 30 s");
}

/// One scan of this process's scheduler, run now: how many retries it recorded.
async fn scan(app: &TestApp) -> usize {
    buildstate_server::retries::announce_due_retries(&app.state)
        .await
        .expect("scan for due retries")
}

/// Several of the scheduler's ticks: long enough for a retry to be recorded twice, if it could.
async fn some_ticks() {
    tokio::time::sleep(Duration::from_millis(6 * TICK_MILLIS)).await;
}

/// The build's history once a scan run now has recorded nothing and the scheduler has ticked
/// several times more, checked to hold exactly `retries` `retry_due` entries.
async fn history_after_more_scans(
    app: &TestApp,
    client: &Client,
    id: &BuildId,
    retries: usize,
) -> Vec<HistoryEntry> {
    assert_eq!(scan(app).await, 0, "nothing more is due");
    some_ticks().await;
    let entries = history(client, id).await;
    assert_eq!(
        count(&entries, EventKind::RetryDue),
        retries,
        "{:?}",
        kinds(&entries)
    );
    entries
}

/// A build (3 retries) whose next stage is 15, and a client of `app` for it.
async fn at_stage_15(app: &TestApp) -> (Client, BuildId) {
    let client = app.client();
    let id = start(&client, 3).await;
    send(&client, &id, 10, ReportStatus::Completed).await;
    (client, id)
}

async fn a_stage_that_fails_twice_then_succeeds_is_retried_twice_by_itself(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let (client, id) = at_stage_15(&app).await;

    // The CI system: run stage 15; on failure, wait for the server to say a retry is due.
    for (attempt, outcome) in [
        ReportStatus::Failed,
        ReportStatus::Failed,
        ReportStatus::Completed,
    ]
    .into_iter()
    .enumerate()
    {
        send(&client, &id, 15, ReportStatus::InProgress).await;
        let answer = send(&client, &id, 15, outcome).await;
        if outcome == ReportStatus::Failed {
            let due_at = answer.build.next_attempt_at.expect("a failure backs off");
            let entries = retry_due_entries(&client, &id, attempt + 1).await;
            let due = entries.last().expect("the retry_due entry");
            assert_eq!(due.kind, EventKind::RetryDue, "{entries:?}");
            assert!(
                due.recorded_at >= due_at,
                "never before the backoff ends: due {due_at}, recorded {}",
                due.recorded_at
            );
            let gate = client.gate(&id, code(15)).await.expect("gate");
            assert_eq!(gate.decision, GateDecision::Run, "{}", gate.reason);
        }
    }
    send(&client, &id, 100, ReportStatus::Completed).await;

    let entries = history(&client, &id).await;
    let stage_15: Vec<EventKind> = entries
        .iter()
        .filter(|entry| entry.state == code(15) && entry.kind != EventKind::InProgress)
        .map(|entry| entry.kind)
        .collect();
    assert_eq!(
        stage_15,
        [
            EventKind::Failed,
            EventKind::RetryDue,
            EventKind::Failed,
            EventKind::RetryDue,
            EventKind::Completed,
        ]
    );
    let announced: Vec<(Option<u32>, Option<&str>, Option<&str>)> = entries
        .iter()
        .filter(|entry| entry.kind == EventKind::RetryDue)
        .map(|entry| {
            (
                entry.attempt,
                entry.message.as_deref(),
                entry.reported_by.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        announced,
        [
            (Some(2), Some("retry 1 of 3 of stage 15 is due"), None),
            (Some(3), Some("retry 2 of 3 of stage 15 is due"), None),
        ],
        "the attempt now due, the server's sentence, and no user: the server recorded them"
    );
    let seqs: Vec<i64> = entries.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, (1..=entries.len() as i64).collect::<Vec<_>>());
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(build.status, BuildStatus::Completed);
    assert_eq!(build.retry_due_seq, None);
}

async fn a_stage_that_always_fails_gets_exactly_max_retries_retries_then_none(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let client = app.client();
    let id = start(&client, 2).await;
    for failure in 1..=3 {
        send(&client, &id, 20, ReportStatus::InProgress).await;
        let answer = send(&client, &id, 20, ReportStatus::Failed).await;
        if failure <= 2 {
            assert_eq!(answer.build.status, BuildStatus::Failed);
            retry_due_entries(&client, &id, failure).await;
        } else {
            assert_eq!(answer.build.status, BuildStatus::Blocked);
        }
    }

    // Blocked: it waits for a person, however many scans pass.
    let entries = history_after_more_scans(&app, &client, &id, 2).await;
    assert_eq!(
        entries.last().map(|entry| entry.kind),
        Some(EventKind::Failed)
    );
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(
        (build.status, build.failures, build.retry_due_seq),
        (BuildStatus::Blocked, 3, None)
    );
    let gate = client.gate(&id, code(20)).await.expect("gate");
    assert_eq!(gate.decision, GateDecision::Stop);

    // An operator's retry starts the count again; its next failure gets a retry again.
    client
        .retry_build(&id, "mirror replaced")
        .await
        .expect("operator retry");
    send(&client, &id, 20, ReportStatus::Failed).await;
    let entries = retry_due_entries(&client, &id, 3).await;
    assert_eq!(
        entries.last().map(|entry| (entry.kind, entry.attempt)),
        Some((EventKind::RetryDue, Some(2)))
    );
}

fn by(run: &str, state: i64, status: ReportStatus) -> ReportTransition {
    ReportTransition {
        run: Some(run.to_owned()),
        ..report(state, status)
    }
}

async fn a_retry_never_lets_a_run_take_a_stage_another_run_holds(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let (client, id) = at_stage_15(&app).await;

    // Run a holds stage 15: another run's failure is refused, so the build never becomes
    // failed under a live lease and no retry can be announced.
    client
        .report_transition(&id, &by("run-a", 15, ReportStatus::InProgress), None)
        .await
        .expect("run a claims 15");
    let error = client
        .report_transition(&id, &by("run-b", 15, ReportStatus::Failed), None)
        .await
        .expect_err("run b may not fail a stage run a holds");
    assert_eq!(error.code(), Some(&ErrorCode::StageLeased));
    assert_eq!(scan(&app).await, 0);

    // Run a fails it: the retry comes due, and the first run to claim the stage holds it.
    client
        .report_transition(&id, &by("run-a", 15, ReportStatus::Failed), None)
        .await
        .expect("run a fails 15");
    retry_due_entries(&client, &id, 1).await;
    client
        .report_transition(&id, &by("run-b", 15, ReportStatus::InProgress), None)
        .await
        .expect("run b takes the retry");
    for run in ["run-a", "run-c"] {
        let error = client
            .report_transition(&id, &by(run, 15, ReportStatus::InProgress), None)
            .await
            .expect_err("the retry is run b's while its lease lasts");
        assert_eq!(error.code(), Some(&ErrorCode::StageLeased), "{run}");
        let gate = client
            .gate_for_run(&id, code(15), Some(run))
            .await
            .expect("gate");
        assert_eq!(gate.decision, GateDecision::Wait, "{run}");
    }
    // An in-progress stage has no retry due.
    history_after_more_scans(&app, &client, &id, 1).await;
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(build.status, BuildStatus::InProgress);
    assert_eq!(
        build.lease.map(|lease| lease.holder),
        Some("run-b".to_owned())
    );
}

async fn an_idempotent_replay_of_a_failure_gets_no_second_retry(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let client = app.client();
    let id = start(&client, 3).await;
    let failure = report(0, ReportStatus::Failed);
    let first = client
        .report_transition(&id, &failure, Some("ci-run-7-step-0"))
        .await
        .expect("fail");
    retry_due_entries(&client, &id, 1).await;

    // The CI step's HTTP retry of the same report, after the retry was announced.
    let replayed = client
        .report_transition(&id, &failure, Some("ci-run-7-step-0"))
        .await
        .expect("replay");
    assert_eq!(replayed, first, "the first answer, again");
    let entries = history_after_more_scans(&app, &client, &id, 1).await;
    assert_eq!(
        kinds(&entries),
        [EventKind::Started, EventKind::Failed, EventKind::RetryDue]
    );
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(
        (build.status, build.failures, build.retry_due_seq),
        (BuildStatus::Failed, 1, Some(3))
    );
}

/// The sum of one counter over every line of a `/metrics` text.
fn counter_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_text(base_url: &str, token: &str) -> String {
    let answer = reqwest::Client::new()
        .get(format!("{base_url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(answer.status(), 200);
    answer.text().await.expect("metrics text")
}

async fn retries_reach_the_event_stream_the_metrics_and_a_signed_webhook(backend: Backend) {
    let (url, received) = receiver(0).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("webhooks.json");
    let hooks =
        serde_json::json!([{"url": url, "secret": "s3cret", "alerts": ["retry_due", "blocked"]}]);
    std::fs::write(&file, hooks.to_string()).expect("write hooks");
    let Some(app) = spawn(backend, |config| {
        config.webhooks_file = Some(file.clone());
        config.webhook_retry_base_millis = 10;
    })
    .await
    else {
        return;
    };
    let client = app.client();
    let id = start(&client, 1).await;
    let mut stream = EventReader::open(
        &app.url(&format!("/builds/{id}/events")),
        &app.admin_token,
        None,
    )
    .await;
    send(&client, &id, 5, ReportStatus::Failed).await;

    // The stream: the failure, then the retry, each with its own id (its seq).
    let kinds: Vec<(String, Value)> = [
        stream.next().await,
        stream.next().await,
        stream.next().await,
    ]
    .into_iter()
    .map(|(event_id, data)| (event_id, data["entry"]["kind"].clone()))
    .collect();
    assert_eq!(
        kinds,
        [
            ("2".to_owned(), Value::from("completed")),
            ("3".to_owned(), Value::from("failed")),
            ("4".to_owned(), Value::from("retry_due")),
        ]
    );

    // The hook: signed like every alert, saying which retry to start.
    let body = wait_for(&received, "retry_due").await;
    let signature = received
        .lock()
        .expect("lock")
        .iter()
        .find(|(alert, _, _)| alert == "retry_due")
        .map(|(_, signature, _)| signature.clone())
        .expect("a retry_due delivery");
    assert_eq!(
        signature,
        buildstate_server::webhooks::signature("s3cret", &body)
    );
    let delivery: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(delivery["alert"], "retry_due");
    assert_eq!(delivery["build"]["id"], id.to_string());
    assert_eq!(delivery["build"]["status"], "failed");
    assert_eq!(delivery["build"]["retry_due_seq"], 4);
    assert_eq!(delivery["entry"]["kind"], "retry_due");
    assert_eq!(delivery["entry"]["attempt"], 2);
    assert_eq!(
        delivery["next_step"],
        format!("retry 1 of 1 of stage 5 is due: start stage 5 of build `{id}` again")
    );

    // /metrics counts it once, beside the failure it follows.
    let metrics = metrics_text(&app.base_url, &app.admin_token).await;
    assert!(
        metrics.contains(
            "buildstate_retries_due_total{platform=\"aws\",image_type=\"rhel8\",code=\"5\"} 1"
        ),
        "{metrics}"
    );

    // The next failure blocks the build: no retry, and the alert names the commands.
    send(&client, &id, 5, ReportStatus::Failed).await;
    let blocked: Value =
        serde_json::from_slice(&wait_for(&received, "blocked").await).expect("json");
    let next_step = blocked["next_step"].as_str().expect("a next step");
    for command in [
        format!("bldst build retry {id} --reason TEXT"),
        format!("bldst build reset {id} --state CODE --reason TEXT"),
        format!("bldst build cancel {id} --reason TEXT"),
    ] {
        assert!(next_step.contains(&command), "{next_step}");
    }
    some_ticks().await;
    let retry_alerts = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|(alert, _, _)| alert == "retry_due")
        .count();
    assert_eq!(retry_alerts, 1);
}

/// A fresh database for server processes: a SQLite file in `dir`, or a scratch PostgreSQL one.
async fn database(
    backend: Backend,
    dir: &tempfile::TempDir,
) -> Option<(String, Option<ScratchDatabase>)> {
    match backend {
        Backend::Sqlite => Some((
            format!("sqlite://{}", dir.path().join("buildstate.db").display()),
            None,
        )),
        Backend::Postgres => {
            let scratch = ScratchDatabase::create().await?;
            Some((scratch.url.clone(), Some(scratch)))
        }
    }
}

async fn a_server_stopped_across_a_due_time_records_it_once_after_it_starts(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let Some((url, _scratch)) = database(backend, &dir).await else {
        return;
    };
    let token = ServerProcess::bootstrap(&url);
    // A 3 s backoff: the first process is long stopped when the retry comes due.
    let env = [
        ("BUILDSTATE_RETRY_CHECK_MILLIS", "50"),
        ("BUILDSTATE_BACKOFF_BASE_SECS", "3"),
    ];
    let mut first = ServerProcess::start(&url, &[], &env).await;
    let client = first.client_with(&token);
    let id = start(&client, 3).await;
    let failed = send(&client, &id, 0, ReportStatus::Failed).await;
    let due_at = failed.build.next_attempt_at.expect("backing off");
    first.terminate();
    assert!(first.exited().await.success());

    // Asleep across the due time.
    let wait = (due_at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(500)).await;
    let restarted_at = chrono::Utc::now();
    let second = ServerProcess::start(&url, &[], &env).await;
    let client = second.client_with(&token);
    let entries = retry_due_entries(&client, &id, 1).await;
    some_ticks().await;
    let entries_later = history(&client, &id).await;
    assert_eq!(entries_later, entries, "once: later scans add nothing");
    assert_eq!(
        kinds(&entries),
        [EventKind::Started, EventKind::Failed, EventKind::RetryDue]
    );
    let due = &entries[2];
    assert!(
        due.recorded_at >= restarted_at,
        "recorded by the restarted process: {} before its start at {restarted_at}",
        due.recorded_at
    );
}

/// The builds the three-process test fails at once.
const BUILDS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_postgresql_record_exactly_one_retry_due_per_failure() {
    // The test's own server has no scheduler: only the three processes record retries.
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    // The suite's pool size: three processes must not take a third of the database's
    // connections each.
    let pool = crate::support::TEST_POOL_SIZE.to_string();
    let env = [
        ("BUILDSTATE_RETRY_CHECK_MILLIS", "20"),
        ("BUILDSTATE_BACKOFF_BASE_SECS", "1"),
        ("BUILDSTATE_DATABASE_MAX_CONNECTIONS", pool.as_str()),
    ];
    let mut processes = Vec::new();
    for _ in 0..3 {
        processes.push(ServerProcess::start(&app.database_url, &[], &env).await);
    }
    let clients: Vec<Client> = processes
        .iter()
        .map(|process| process.client_with(&app.admin_token))
        .collect();
    let starts = (0..BUILDS).map(|i| {
        let client = clients[i % 3].clone();
        async move { start(&client, 3).await }
    });
    let ids: Vec<BuildId> = join_all(starts).await;

    for round in 1..=2 {
        // Every build fails at once, through the three processes in turn.
        let failures = ids.iter().enumerate().map(|(i, id)| {
            let client = clients[i % 3].clone();
            async move { send(&client, id, 0, ReportStatus::Failed).await }
        });
        join_all(failures).await;
        let recorded = || async {
            app.execute_sql(
                "SELECT CAST(COUNT(*) AS TEXT) FROM build_history WHERE kind = 'retry_due'",
            )
            .await
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
        };
        for _ in 0..1500 {
            if recorded().await >= round * BUILDS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        some_ticks().await;
        assert_eq!(recorded().await, round * BUILDS, "round {round}");
        let doubled = app
            .execute_sql(
                "SELECT CAST(COUNT(*) AS TEXT) FROM (SELECT build_id, state, attempt \
                 FROM build_history WHERE kind = 'retry_due' \
                 GROUP BY build_id, state, attempt HAVING COUNT(*) > 1) AS twice",
            )
            .await;
        assert_eq!(
            doubled.as_deref(),
            Some("0"),
            "round {round}: one per failure"
        );
    }

    // Each process counts what it recorded: together, every retry once.
    let mut total = 0.0;
    for process in &processes {
        total += counter_total(
            &metrics_text(&process.base_url, &app.admin_token).await,
            "buildstate_retries_due_total",
        );
    }
    assert_eq!(total, (2 * BUILDS) as f64);
    for id in ids.iter().take(3) {
        let entries = history(&clients[0], id).await;
        assert_eq!(
            kinds(&entries),
            [
                EventKind::Started,
                EventKind::Failed,
                EventKind::RetryDue,
                EventKind::Failed,
                EventKind::RetryDue,
            ]
        );
    }
}
