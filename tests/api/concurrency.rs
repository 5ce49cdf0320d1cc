//! Racing reports on one build are serialized: no lost update, no double-counted failure,
//! sequence numbers strictly increasing — checked against a replay of the pure rules.

use std::time::Duration;

use buildstate::client::Client;
use buildstate_domain::wire::{StartBuild, TransitionResult};
use buildstate_domain::{
    apply_report, BuildId, BuildStatus, EventKind, Progress, Report, ReportStatus, RetryPolicy,
    Transition,
};
use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::helpers::{code, report, start_request};
use crate::on_both_backends;
use crate::support::{Backend, TestApp};

const CLIENTS: usize = 64;

on_both_backends!(
    racing_failures_of_one_stage_are_each_counted_once,
    racing_completions_of_one_stage_advance_it_once,
    a_random_race_of_reports_matches_a_replay_of_the_rules,
);

async fn start_with_retries(client: &Client, max_retries: u32) -> BuildId {
    let request = StartBuild {
        max_retries: Some(max_retries),
        ..start_request(None)
    };
    client.start_build(&request).await.expect("start").build.id
}

async fn race(
    client: &Client,
    id: &BuildId,
    reports: Vec<(i64, ReportStatus)>,
) -> Vec<Result<TransitionResult, buildstate::client::ClientError>> {
    let sends = reports.into_iter().map(|(state, status)| {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .report_transition(&id, &report(state, status), None)
                .await
        })
    });
    join_all(sends)
        .await
        .into_iter()
        .map(|joined| joined.expect("task"))
        .collect()
}

async fn racing_failures_of_one_stage_are_each_counted_once(app: TestApp) {
    let client = app.client();
    let id = start_with_retries(&client, 100).await;
    let results = race(&client, &id, vec![(0, ReportStatus::Failed); CLIENTS]).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );

    let build = client.get_build(&id).await.expect("get");
    assert_eq!(build.failures, CLIENTS as u32, "every failure counted once");
    let history = client.history(&id, 0, 1000).await.expect("history");
    let seqs: Vec<i64> = history.entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=CLIENTS as i64 + 1).collect::<Vec<_>>(),
        "gapless, increasing"
    );
    let mut attempts: Vec<u32> = history
        .entries
        .iter()
        .filter(|e| e.kind == EventKind::Failed)
        .filter_map(|e| e.attempt)
        .collect();
    attempts.sort_unstable();
    assert_eq!(
        attempts,
        (1..=CLIENTS as u32).collect::<Vec<_>>(),
        "each attempt number once"
    );
}

async fn racing_completions_of_one_stage_advance_it_once(app: TestApp) {
    let client = app.client();
    let id = start_with_retries(&client, 3).await;
    let results = race(&client, &id, vec![(0, ReportStatus::Completed); CLIENTS]).await;
    let changed = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.changed))
        .count();
    let unchanged = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| !r.changed))
        .count();
    assert_eq!(
        (changed, unchanged),
        (1, CLIENTS - 1),
        "one applies, the rest are already done"
    );
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(
        (build.state, build.status, build.last_seq),
        (code(5), BuildStatus::Running, 2)
    );
}

async fn a_random_race_of_reports_matches_a_replay_of_the_rules(app: TestApp) {
    let client = app.client();
    let id = start_with_retries(&client, 100).await;
    let mut rng = StdRng::seed_from_u64(20261130);
    let reports: Vec<(i64, ReportStatus)> = (0..CLIENTS)
        .map(|_| {
            let state = 5 * rng.gen_range(0..8);
            let status = [
                ReportStatus::InProgress,
                ReportStatus::Completed,
                ReportStatus::Failed,
            ][rng.gen_range(0..3)];
            (state, status)
        })
        .collect();
    let results = race(&client, &id, reports.clone()).await;
    for result in &results {
        if let Err(error) = result {
            assert_eq!(
                error.status(),
                Some(409),
                "only rule refusals may fail: {error}"
            );
        }
    }
    assert_replay_matches(&client, &id, &results).await;
}

/// Replays the applied reports, in the order the server applied them, through the pure rules:
/// every step must produce exactly the recorded events, and the last one the stored build.
async fn assert_replay_matches(
    client: &Client,
    id: &BuildId,
    results: &[Result<TransitionResult, buildstate::client::ClientError>],
) {
    let mut applied: Vec<&TransitionResult> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|r| r.changed)
        .collect();
    applied.sort_by_key(|r| r.recorded[0].seq);
    let policy = RetryPolicy {
        max_retries: 100,
        backoff_base: Duration::ZERO,
        backoff_cap: Duration::ZERO,
        lease_duration: Duration::from_secs(60),
    };
    let mut progress = Progress::started();
    let mut expected_seq = 2;
    for result in &applied {
        let last = result
            .recorded
            .last()
            .expect("an applied report records something");
        let status = match last.kind {
            EventKind::Completed => ReportStatus::Completed,
            EventKind::Failed => ReportStatus::Failed,
            EventKind::InProgress => ReportStatus::InProgress,
            other => panic!("unexpected {other}"),
        };
        let report = Report::new(last.state, status);
        let Ok(Transition::Applied {
            progress: next,
            events,
        }) = apply_report(&progress, &report, &policy, chrono::Utc::now())
        else {
            panic!("the rules would not have applied {report:?} at {progress:?}: a lost update");
        };
        let recorded: Vec<_> = result
            .recorded
            .iter()
            .map(|e| (e.seq, e.state, e.kind, e.attempt))
            .collect();
        let replayed: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (expected_seq + i as i64, e.state, e.kind, e.attempt))
            .collect();
        assert_eq!(recorded, replayed);
        expected_seq += events.len() as i64;
        progress = next;
    }
    let build = client.get_build(id).await.expect("get");
    assert_eq!(
        (build.state, build.status, build.failures),
        (progress.state, progress.status, progress.failures)
    );
    assert_eq!(build.last_seq, expected_seq - 1);
    let history = client.history(id, 1, 1000).await.expect("history");
    let stored: Vec<i64> = history.entries.iter().map(|e| e.seq).collect();
    assert_eq!(stored, (2..expected_seq).collect::<Vec<_>>());
}

/// Several server processes may share one PostgreSQL: the row lock holds across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_serialize_reports_on_one_build() {
    let Some(first) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let second = first.spawn_peer(|_| {}).await;
    let via_first = first.client();
    let via_second = second.client_with(first.admin_token.clone());
    let id = start_with_retries(&via_first, 100).await;
    let sends = (0..CLIENTS).map(|i| {
        let client = if i % 2 == 0 {
            via_first.clone()
        } else {
            via_second.clone()
        };
        let id = id.clone();
        tokio::spawn(async move {
            client
                .report_transition(&id, &report(0, ReportStatus::Failed), None)
                .await
        })
    });
    for sent in join_all(sends).await {
        sent.expect("task").expect("report");
    }
    let build = via_second.get_build(&id).await.expect("get");
    assert_eq!(
        (build.failures, build.last_seq),
        (CLIENTS as u32, CLIENTS as i64 + 1)
    );
}
