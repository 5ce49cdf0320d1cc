//! `kill -9` in the middle of a storm of reports: every report the server acknowledged (answered
//! 2xx) is in the database when the server starts again, and nothing is half-written (each
//! build's history is gapless and its state is where its last completion left it). The outside
//! trial's crash test, kept in the suite, on both databases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildstate::client::{Client, ClientConfig};
use buildstate_domain::{BuildId, BuildStatus, EventKind, ReportStatus};

use crate::helpers::{code, report, start_request};
use crate::support::process::ServerProcess;
use crate::support::ScratchDatabase;

/// Builds reported on at once, each by a task of its own.
const BUILDS: usize = 8;

/// Acknowledged reports to wait for before the kill: enough that some are in flight when it
/// lands, few enough that no build reaches stage 100 first (8 builds × 21 stages).
const ACKNOWLEDGED_BEFORE_KILL: usize = 60;

/// A client that tries once: an error after the kill must not be retried into the restarted
/// server, or "acknowledged" would no longer mean "acknowledged by the killed process".
fn single_attempt_client(server: &ServerProcess, token: &str) -> Client {
    let mut config = ClientConfig::new(&server.base_url, Some(token.to_owned()));
    config.timeout = Duration::from_secs(20);
    config.max_attempts = 1;
    Client::new(config).expect("client")
}

async fn acknowledged_reports_survive_kill_9(database_url: &str) {
    let token = ServerProcess::bootstrap(database_url);
    let mut server = ServerProcess::start(database_url, &[], &[]).await;
    let client = single_attempt_client(&server, &token);
    let mut builds: Vec<BuildId> = Vec::new();
    for _ in 0..BUILDS {
        let started = client
            .start_build(&start_request(None))
            .await
            .expect("start a build");
        builds.push(started.build.id);
    }

    // Each task completes its build's stages in order until a report fails (the kill), and
    // keeps the stages the server acknowledged.
    let acknowledged: Arc<Mutex<Vec<(usize, i64)>>> = Arc::default();
    let tasks: Vec<_> = builds
        .iter()
        .enumerate()
        .map(|(index, id)| {
            let (client, id, acknowledged) =
                (client.clone(), id.clone(), Arc::clone(&acknowledged));
            tokio::spawn(async move {
                for stage in (0..=100).step_by(5) {
                    let sent = client
                        .report_transition(&id, &report(stage, ReportStatus::Completed), None)
                        .await;
                    if sent.is_err() {
                        return;
                    }
                    acknowledged.lock().expect("lock").push((index, stage));
                }
            })
        })
        .collect();
    for _ in 0..1200 {
        if acknowledged.lock().expect("lock").len() >= ACKNOWLEDGED_BEFORE_KILL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server.kill();
    for task in tasks {
        task.await.expect("task");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() >= ACKNOWLEDGED_BEFORE_KILL,
        "the server acknowledged only {} reports before the kill",
        acknowledged.len()
    );

    let restarted = ServerProcess::start(database_url, &[], &[]).await;
    let client = single_attempt_client(&restarted, &token);
    for (index, id) in builds.iter().enumerate() {
        let build = client.get_build(id).await.expect("get build");
        let history = client.history(id, 0, 1000).await.expect("history");
        let seqs: Vec<i64> = history.entries.iter().map(|entry| entry.seq).collect();
        assert_eq!(
            seqs,
            (1..=build.last_seq).collect::<Vec<_>>(),
            "build {id}: its history is gapless up to its last_seq"
        );
        let completed: Vec<i64> = history
            .entries
            .iter()
            .filter(|entry| entry.kind == EventKind::Completed)
            .map(|entry| i64::from(entry.state.value()))
            .collect();
        for stage in acknowledged
            .iter()
            .filter(|(of, _)| *of == index)
            .map(|(_, stage)| *stage)
        {
            assert!(
                completed.contains(&stage),
                "build {id}: stage {stage} was acknowledged before the kill but is not in its \
                 history: {completed:?}"
            );
        }
        // The build row and its history agree: it is at the stage after its last completion.
        let last = completed.last().copied();
        let expected = last.map_or(0, |stage| stage + 5);
        if expected <= 100 {
            assert_eq!(
                (build.state, build.status),
                (code(expected), BuildStatus::Running),
                "build {id}: completions {completed:?}"
            );
        } else {
            assert_eq!(build.status, BuildStatus::Completed, "build {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_report_across_kill_9() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database_url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
    acknowledged_reports_survive_kill_9(&database_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_report_across_kill_9() {
    // One turn covers the process's pool and its listening connection, and the restart's.
    let Some(database) = ScratchDatabase::create().await else {
        return;
    };
    acknowledged_reports_survive_kill_9(&database.url).await;
}
