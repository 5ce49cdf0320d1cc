//! Stage leases through the API: an identified `in_progress` claims the stage, heartbeats
//! extend it, other runs are refused naming the holder and the gate tells them to wait; an
//! expired lease is taken over (and the history says so), and the run that lost it is fenced
//! off. The races: many runs claiming one stage, and a heartbeat racing a takeover.

use buildstate::client::{Client, ClientError};
use buildstate_domain::wire::{ErrorCode, LeaseRequest, ReportTransition, TransitionResult};
use buildstate_domain::{BuildId, BuildStatus, EventKind, GateDecision, ReportStatus};
use futures::future::join_all;

use crate::helpers::{code, report, start_build};
use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends!(
    a_claimed_stage_refuses_other_runs_naming_the_holder_until_it_completes,
    heartbeats_extend_only_the_holders_lease,
    a_released_stage_can_be_claimed_at_once,
    many_runs_racing_to_claim_a_stage_have_exactly_one_winner,
);

/// The lease time of the servers in the expiry tests: short, so they wait little.
const SHORT_LEASE_SECS: f64 = 1.0;

/// Runs `scenario` on both backends with a short lease time.
macro_rules! with_short_leases {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                async fn on(backend: $crate::support::Backend) {
                    if let Some(app) = $crate::support::TestApp::spawn_with(backend, |config| {
                        config.lease_secs = super::SHORT_LEASE_SECS;
                    })
                    .await
                    {
                        super::$scenario(app).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    on($crate::support::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    on($crate::support::Backend::Postgres).await;
                }
            }
        )+
    };
}

with_short_leases!(
    an_expired_lease_is_taken_over_and_the_stale_run_is_fenced_off,
    a_heartbeat_racing_a_takeover_loses_or_wins_whole,
);

fn by(run: &str, state: i64, status: ReportStatus) -> ReportTransition {
    ReportTransition {
        run: Some(run.to_owned()),
        ..report(state, status)
    }
}

fn fenced(run: &str, fence: i64, state: i64, status: ReportStatus) -> ReportTransition {
    ReportTransition {
        fence: Some(fence),
        ..by(run, state, status)
    }
}

fn beat(run: Option<&str>, fence: Option<i64>, state: i64) -> LeaseRequest {
    LeaseRequest {
        state: code(state),
        run: run.map(str::to_owned),
        fence,
    }
}

async fn claim(client: &Client, id: &BuildId, run: &str, state: i64) -> TransitionResult {
    client
        .report_transition(id, &by(run, state, ReportStatus::InProgress), None)
        .await
        .unwrap_or_else(|error| panic!("{run} claims {state}: {error}"))
}

fn details(error: &ClientError) -> serde_json::Value {
    match error {
        ClientError::Api { details, .. } => details.clone().unwrap_or_default(),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn a_claimed_stage_refuses_other_runs_naming_the_holder_until_it_completes(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let claimed = claim(&client, &id, "ci/run/1", 0).await;
    let lease = claimed.build.lease.clone().expect("the stage is leased");
    assert_eq!(
        (lease.stage, lease.holder.as_str(), lease.fence),
        (code(0), "ci/run/1", claimed.recorded[0].seq),
        "the fence is the claiming entry's sequence number"
    );

    for (name, request) in [
        ("in_progress", by("ci/run/2", 0, ReportStatus::InProgress)),
        ("completed", by("ci/run/2", 0, ReportStatus::Completed)),
        ("failed", by("ci/run/2", 0, ReportStatus::Failed)),
        (
            "a jump past it",
            by("ci/run/2", 10, ReportStatus::Completed),
        ),
        ("an unidentified report", report(0, ReportStatus::Completed)),
    ] {
        let error = client
            .report_transition(&id, &request, None)
            .await
            .expect_err(name);
        assert_eq!(error.code(), Some(&ErrorCode::StageLeased), "{name}");
        assert_eq!(error.status(), Some(409), "{name}");
        let details = details(&error);
        assert_eq!(details["holder"], "ci/run/1", "{name}");
        assert!(
            details["wait_seconds"].as_u64().is_some_and(|s| s > 0),
            "{name}"
        );
        assert!(details["expires_at"].is_string(), "{name}");
        assert!(error.to_string().contains("`ci/run/1`"), "{name}: {error}");
    }

    let other = client
        .gate_for_run(&id, code(0), Some("ci/run/2"))
        .await
        .expect("gate");
    assert_eq!(other.decision, GateDecision::Wait);
    assert!(other.wait_seconds.is_some_and(|s| s > 0));
    let holder = client
        .gate_for_run(&id, code(0), Some("ci/run/1"))
        .await
        .expect("gate");
    assert_eq!(holder.decision, GateDecision::Run);

    // The holder finishes, proving itself with the fence: the lease ends with the stage.
    let done = client
        .report_transition(
            &id,
            &ReportTransition {
                outputs: Default::default(),
                ..fenced("ci/run/1", lease.fence, 0, ReportStatus::Completed)
            },
            None,
        )
        .await
        .expect("the holder completes");
    assert_eq!(done.build.lease, None);
    assert_eq!(done.build.state, code(5));
    // The next stage is free for anyone.
    claim(&client, &id, "ci/run/2", 5).await;
}

async fn heartbeats_extend_only_the_holders_lease(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let lease = claim(&client, &id, "run-a", 0)
        .await
        .build
        .lease
        .expect("lease");

    let by_run = client
        .heartbeat(&id, &beat(Some("run-a"), None, 0))
        .await
        .expect("the holder beats");
    assert_eq!(by_run.fence, lease.fence);
    assert!(by_run.expires_at >= lease.expires_at);
    let by_fence = client
        .heartbeat(&id, &beat(None, Some(lease.fence), 0))
        .await
        .expect("the fence proves the holder");
    assert_eq!(by_fence.holder, "run-a");
    let history = client.history(&id, 0, 100).await.expect("history");
    assert_eq!(history.entries.len(), 2, "heartbeats append no history");

    let cases: [(&str, LeaseRequest, ErrorCode); 3] = [
        (
            "another run",
            beat(Some("run-b"), None, 0),
            ErrorCode::StageLeased,
        ),
        (
            "a stale fence",
            beat(Some("run-a"), Some(lease.fence - 1), 0),
            ErrorCode::LeaseLost,
        ),
        (
            "a stage not held",
            beat(Some("run-a"), None, 5),
            ErrorCode::NotLeased,
        ),
    ];
    for (name, request, expected) in cases {
        let error = client.heartbeat(&id, &request).await.expect_err(name);
        assert_eq!(error.code(), Some(&expected), "{name}: {error}");
    }
    let error = client
        .heartbeat(&id, &beat(None, None, 0))
        .await
        .expect_err("neither run nor fence");
    assert_eq!(error.code(), Some(&ErrorCode::InvalidField));
    let unknown = client
        .heartbeat(
            &"b_doesnotexist0000000".parse().expect("id"),
            &beat(Some("run-a"), None, 0),
        )
        .await
        .expect_err("unknown build");
    assert_eq!(unknown.code(), Some(&ErrorCode::BuildNotFound));

    // A build nobody leases: a heartbeat names the stage and says how to claim it.
    let plain = start_build(&client).await;
    client
        .report_transition(&plain, &report(0, ReportStatus::InProgress), None)
        .await
        .expect("unidentified in_progress");
    let error = client
        .heartbeat(&plain, &beat(Some("run-a"), None, 0))
        .await
        .expect_err("nothing to beat");
    assert_eq!(error.code(), Some(&ErrorCode::NotLeased));
    assert!(error.to_string().contains("claim the stage"), "{error}");
}

async fn a_released_stage_can_be_claimed_at_once(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let lease = claim(&client, &id, "run-a", 0)
        .await
        .build
        .lease
        .expect("lease");
    let refused = client
        .release(&id, &beat(Some("run-b"), None, 0))
        .await
        .expect_err("only the holder releases");
    assert_eq!(refused.code(), Some(&ErrorCode::StageLeased));
    let released = client
        .release(&id, &beat(None, Some(lease.fence), 0))
        .await
        .expect("release");
    assert_eq!(
        (released.lease, released.status),
        (None, BuildStatus::InProgress)
    );
    let taken = claim(&client, &id, "run-b", 0).await;
    assert_eq!(
        taken.recorded.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::InProgress],
        "a released stage is claimed, not taken over"
    );
}

async fn many_runs_racing_to_claim_a_stage_have_exactly_one_winner(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let claims = (0..16).map(|n| {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let run = format!("run-{n}");
            let result = client
                .report_transition(&id, &by(&run, 0, ReportStatus::InProgress), None)
                .await;
            (run, result)
        })
    });
    let results: Vec<_> = join_all(claims)
        .await
        .into_iter()
        .map(|joined| joined.expect("task"))
        .collect();
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, result)| result.is_ok())
        .map(|(run, _)| run)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one run claims the stage");
    let winner = winners[0];
    for (run, result) in &results {
        if let Err(error) = result {
            assert_eq!(
                error.code(),
                Some(&ErrorCode::StageLeased),
                "{run}: {error}"
            );
            assert_eq!(
                details(error)["holder"],
                winner.as_str(),
                "{run} is told the winner"
            );
        }
    }
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(build.lease.map(|l| l.holder), Some(winner.clone()));
    assert_eq!(build.last_seq, 2, "one claim recorded");
}

async fn wait_out(lease_end: chrono::DateTime<chrono::Utc>) {
    let left = (lease_end - chrono::Utc::now()).num_milliseconds().max(0) as u64;
    tokio::time::sleep(std::time::Duration::from_millis(left + 100)).await;
}

async fn an_expired_lease_is_taken_over_and_the_stale_run_is_fenced_off(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let old = claim(&client, &id, "run-a", 0)
        .await
        .build
        .lease
        .expect("lease");
    wait_out(old.expires_at).await;

    let gate = client
        .gate_for_run(&id, code(0), Some("run-b"))
        .await
        .expect("gate");
    assert_eq!(
        gate.decision,
        GateDecision::Run,
        "an expired lease holds nobody up"
    );
    let taken = claim(&client, &id, "run-b", 0).await;
    let kinds: Vec<_> = taken.recorded.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::TakenOver, EventKind::InProgress]);
    let note = taken.recorded[0].message.as_deref().unwrap_or("");
    assert!(
        note.contains("run `run-a`") && note.contains("run `run-b`"),
        "{note}"
    );
    let new = taken.build.lease.expect("run-b holds it");
    assert!(new.fence > old.fence);

    // run-a wakes up and reports with its old fence: fenced off, nothing written.
    let before = client.get_build(&id).await.expect("get");
    for (name, request) in [
        (
            "completion",
            fenced("run-a", old.fence, 0, ReportStatus::Completed),
        ),
        (
            "failure",
            fenced("run-a", old.fence, 0, ReportStatus::Failed),
        ),
    ] {
        let error = client
            .report_transition(&id, &request, None)
            .await
            .expect_err(name);
        assert_eq!(error.code(), Some(&ErrorCode::LeaseLost), "{name}");
        assert_eq!(details(&error)["holder"], "run-b");
        assert_eq!(details(&error)["current_fence"], new.fence);
    }
    let error = client
        .heartbeat(&id, &beat(Some("run-a"), Some(old.fence), 0))
        .await
        .expect_err("stale heartbeat");
    assert_eq!(error.code(), Some(&ErrorCode::LeaseLost));
    assert_eq!(client.get_build(&id).await.expect("get"), before);

    client
        .report_transition(
            &id,
            &fenced("run-b", new.fence, 0, ReportStatus::Completed),
            None,
        )
        .await
        .expect("the new holder completes");
}

async fn a_heartbeat_racing_a_takeover_loses_or_wins_whole(app: TestApp) {
    let client = app.client();
    for round in 0..3 {
        let id = start_build(&client).await;
        let lease = claim(&client, &id, "run-a", 0)
            .await
            .build
            .lease
            .expect("lease");
        wait_out(lease.expires_at).await;
        let heartbeat = {
            let (client, id) = (client.clone(), id.clone());
            tokio::spawn(async move {
                client
                    .heartbeat(&id, &beat(Some("run-a"), Some(lease.fence), 0))
                    .await
            })
        };
        let takeover = {
            let (client, id) = (client.clone(), id.clone());
            tokio::spawn(async move {
                client
                    .report_transition(&id, &by("run-b", 0, ReportStatus::InProgress), None)
                    .await
            })
        };
        let heartbeat = heartbeat.await.expect("task");
        let takeover = takeover.await.expect("task");
        let holder = client
            .get_build(&id)
            .await
            .expect("get")
            .lease
            .expect("someone holds it")
            .holder;
        match (&heartbeat, &takeover) {
            (Ok(_), Err(error)) => {
                assert_eq!(error.code(), Some(&ErrorCode::StageLeased), "round {round}");
                assert_eq!(holder, "run-a", "round {round}");
            }
            (Err(error), Ok(_)) => {
                assert_eq!(error.code(), Some(&ErrorCode::LeaseLost), "round {round}");
                assert_eq!(holder, "run-b", "round {round}");
            }
            other => panic!("round {round}: exactly one may win, got {other:?}"),
        }
    }
}
