//! The build lifecycle through the API: start or resume, transitions, history, gate, list and
//! the operator actions.

use buildstate::client::BuildQuery;
use buildstate_domain::wire::ErrorCode;
use buildstate_domain::wire::ReportTransition;
use buildstate_domain::{
    BuildStatus, EventKind, GateDecision, OperatorAction, Report, ReportStatus, RetryPolicy, Role,
    Scope,
};
use buildstate_server::db::{Actor, StoreError, TransitionRequest};
use futures::future::join_all;

use crate::helpers::{code, report, send, start_build, start_request};
use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends!(
    a_build_resumes_at_the_failed_stage_and_runs_to_published,
    starting_with_a_key_resumes_the_unfinished_build,
    concurrent_starts_with_one_key_create_one_build,
    a_finished_build_frees_its_key_for_a_new_one,
    a_stage_that_fails_past_max_retries_blocks_until_an_operator_retries,
    the_gate_answers_run_skip_wait_and_stop,
    a_retried_report_with_its_idempotency_key_changes_nothing,
    a_stale_expected_state_is_a_conflict,
    history_pages_after_a_sequence_number,
    builds_list_newest_first_with_filters_and_pages,
    reset_and_cancel_need_a_reason_and_are_recorded,
    a_database_error_names_the_operation_and_the_build,
);

/// The product's story: 0 → 10 (skipping 0 and 5), 15 fails, the re-run resumes at 15.
async fn a_build_resumes_at_the_failed_stage_and_runs_to_published(app: TestApp) {
    let client = app.client();
    let started = client
        .start_build(&start_request(Some("aws/rhel8/0a1b2c3")))
        .await
        .expect("start");
    assert!(!started.resumed);
    let id = started.build.id;

    let jumped = send(&client, &id, 10, ReportStatus::Completed).await;
    assert_eq!(
        (jumped.build.state, jumped.build.status),
        (code(15), BuildStatus::Running)
    );
    let kinds: Vec<_> = jumped.recorded.iter().map(|e| (e.state, e.kind)).collect();
    assert_eq!(
        kinds,
        [
            (code(0), EventKind::Completed),
            (code(5), EventKind::Skipped),
            (code(10), EventKind::Completed)
        ]
    );
    let notes: Vec<_> = jumped
        .recorded
        .iter()
        .map(|e| e.message.as_deref())
        .collect();
    assert_eq!(
        notes[..2],
        [
            Some("triggered when the build was created"),
            Some("not used by this pipeline: skipped by a later report")
        ],
        "stage 0 was triggered by the build's creation, not skipped"
    );

    send(&client, &id, 15, ReportStatus::InProgress).await;
    let failed = client
        .report_transition(
            &id,
            &ReportTransition {
                message: Some("ansible: task `install httpd` failed".into()),
                source: Some("https://ci.example.com/builds/42".into()),
                ..report(15, ReportStatus::Failed)
            },
            None,
        )
        .await
        .expect("report failure");
    assert_eq!(
        (
            failed.build.state,
            failed.build.status,
            failed.build.failures
        ),
        (code(15), BuildStatus::Failed, 1)
    );

    // The re-run: same key → same build, and the gate says where to pick up.
    let resumed = client
        .start_build(&start_request(Some("aws/rhel8/0a1b2c3")))
        .await
        .expect("resume");
    assert!(resumed.resumed);
    assert_eq!(resumed.build.id, id);
    for (stage, decision) in [
        (5, GateDecision::Skip),
        (10, GateDecision::Skip),
        (15, GateDecision::Run),
    ] {
        let answer = client.gate(&id, code(stage)).await.expect("gate");
        assert_eq!(
            answer.decision, decision,
            "stage {stage}: {}",
            answer.reason
        );
    }

    let mut stage = 15;
    while stage <= 100 {
        send(&client, &id, stage, ReportStatus::Completed).await;
        stage += 5;
    }
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(
        (build.state, build.status),
        (code(100), BuildStatus::Completed)
    );

    let history = client.history(&id, 0, 1000).await.expect("history");
    let seqs: Vec<i64> = history.entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "gapless and increasing"
    );
    assert_eq!(history.entries.last().map(|e| e.seq), Some(build.last_seq));
    let failure = history
        .entries
        .iter()
        .find(|e| e.kind == EventKind::Failed)
        .expect("failure recorded");
    assert_eq!(
        failure.message.as_deref(),
        Some("ansible: task `install httpd` failed")
    );
    assert_eq!(
        failure.source.as_deref(),
        Some("https://ci.example.com/builds/42")
    );
    assert_eq!(failure.reported_by.as_deref(), Some("admin"));
    assert_eq!(failure.attempt, Some(1));
    let completed_15: Vec<_> = history
        .entries
        .iter()
        .filter(|e| e.state == code(15) && e.kind == EventKind::Completed)
        .collect();
    assert_eq!(completed_15.len(), 1);
    assert_eq!(
        completed_15[0].attempt,
        Some(2),
        "the retry was the second attempt"
    );
}

async fn starting_with_a_key_resumes_the_unfinished_build(app: TestApp) {
    let client = app.client();
    let first = client
        .start_build(&start_request(Some("gcp/ubuntu")))
        .await
        .expect("start");
    send(&client, &first.build.id, 0, ReportStatus::Completed).await;
    let second = client
        .start_build(&start_request(Some("gcp/ubuntu")))
        .await
        .expect("resume");
    assert!(second.resumed);
    assert_eq!(second.build.id, first.build.id);
    assert_eq!(second.build.state, code(5), "it resumes where it got to");
    let other = client
        .start_build(&start_request(Some("gcp/rhel9")))
        .await
        .expect("other key");
    assert_ne!(other.build.id, first.build.id);
}

async fn concurrent_starts_with_one_key_create_one_build(app: TestApp) {
    let client = app.client();
    let starts = (0..16).map(|_| {
        let client = client.clone();
        async move {
            client
                .start_build(&start_request(Some("azure/win2022")))
                .await
        }
    });
    let answers: Vec<_> = join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start"))
        .collect();
    let first = &answers[0].build.id;
    assert!(
        answers.iter().all(|a| &a.build.id == first),
        "one build for one key"
    );
    assert_eq!(
        answers.iter().filter(|a| !a.resumed).count(),
        1,
        "exactly one creation"
    );
    let page = client
        .list_builds(&BuildQuery {
            key: Some("azure/win2022".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.builds.len(), 1);
}

async fn a_finished_build_frees_its_key_for_a_new_one(app: TestApp) {
    let client = app.client();
    let first = client
        .start_build(&start_request(Some("aws/al2023")))
        .await
        .expect("start");
    client
        .cancel_build(&first.build.id, "wrong base AMI")
        .await
        .expect("cancel");
    let second = client
        .start_build(&start_request(Some("aws/al2023")))
        .await
        .expect("start again");
    assert!(!second.resumed);
    assert_ne!(second.build.id, first.build.id);
}

async fn a_stage_that_fails_past_max_retries_blocks_until_an_operator_retries(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    for attempt in 1..=3u32 {
        let failed = send(&client, &id, 0, ReportStatus::Failed).await;
        assert_eq!(
            failed.build.status,
            BuildStatus::Failed,
            "attempt {attempt}"
        );
        assert_eq!(failed.recorded[0].attempt, Some(attempt));
    }
    let blocked = send(&client, &id, 0, ReportStatus::Failed).await;
    assert_eq!(
        (blocked.build.status, blocked.build.failures),
        (BuildStatus::Blocked, 4)
    );

    let refused = client
        .report_transition(&id, &report(0, ReportStatus::InProgress), None)
        .await
        .expect_err("blocked");
    assert_eq!(refused.status(), Some(409));
    assert_eq!(refused.code(), Some(&ErrorCode::BuildBlocked));
    assert!(
        refused
            .to_string()
            .contains(&format!("bldst build retry {id}")),
        "{refused}"
    );

    let retried = client
        .retry_build(&id, "fixed the kickstart mirror")
        .await
        .expect("retry");
    assert_eq!(
        (retried.build.status, retried.build.failures),
        (BuildStatus::Running, 0)
    );
    assert_eq!(retried.recorded[0].kind, EventKind::Retried);
    assert_eq!(
        retried.recorded[0].message.as_deref(),
        Some("fixed the kickstart mirror")
    );
    send(&client, &id, 0, ReportStatus::Completed).await;
}

async fn the_gate_answers_run_skip_wait_and_stop(app: TestApp) {
    // A real backoff for this test: the wait must be visible.
    let backend = app.backend;
    drop(app);
    let Some(app) = TestApp::spawn_with(backend, |config| config.backoff_base_secs = 120).await
    else {
        return;
    };
    let client = app.client();
    let id = start_build(&client).await;
    send(&client, &id, 20, ReportStatus::Completed).await;
    assert_eq!(
        client.gate(&id, code(10)).await.expect("gate").decision,
        GateDecision::Skip
    );
    assert_eq!(
        client.gate(&id, code(25)).await.expect("gate").decision,
        GateDecision::Run
    );
    assert_eq!(
        client.gate(&id, code(40)).await.expect("gate").decision,
        GateDecision::Run
    );

    send(&client, &id, 25, ReportStatus::Failed).await;
    let wait = client.gate(&id, code(25)).await.expect("gate");
    assert_eq!(wait.decision, GateDecision::Wait);
    let seconds = wait.wait_seconds.expect("wait seconds");
    assert!((100..=120).contains(&seconds), "{seconds}");
    let too_soon = client
        .report_transition(&id, &report(25, ReportStatus::InProgress), None)
        .await
        .expect_err("inside the backoff");
    assert_eq!(too_soon.code(), Some(&ErrorCode::RetryTooSoon));

    client
        .cancel_build(&id, "superseded")
        .await
        .expect("cancel");
    let stop = client.gate(&id, code(25)).await.expect("gate");
    assert_eq!(stop.decision, GateDecision::Stop);
    assert_eq!(stop.build_status, BuildStatus::Cancelled);
}

async fn a_retried_report_with_its_idempotency_key_changes_nothing(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let failure = report(0, ReportStatus::Failed);
    let first = client
        .report_transition(&id, &failure, Some("concourse-build-77"))
        .await
        .expect("first");
    let again = client
        .report_transition(&id, &failure, Some("concourse-build-77"))
        .await
        .expect("again");
    assert_eq!(first, again, "the first answer, again");
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(build.failures, 1, "counted once");
    assert_eq!(build.last_seq, 2, "one history entry after the start");

    let different = client
        .report_transition(
            &id,
            &report(0, ReportStatus::Completed),
            Some("concourse-build-77"),
        )
        .await
        .expect_err("reused key");
    assert_eq!(different.status(), Some(409));
    assert!(
        different.to_string().contains("concourse-build-77"),
        "{different}"
    );
    assert_eq!(
        client.get_build(&id).await.expect("get").last_seq,
        2,
        "nothing written"
    );

    // Once the key's answer has been forgotten (after the TTL), the key is free again.
    let forgotten = app
        .state
        .db
        .forget_idempotency_keys_before(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("forget");
    assert_eq!(forgotten, 1);
    let reused = client
        .report_transition(&id, &failure, Some("concourse-build-77"))
        .await
        .expect("a new report");
    assert_eq!(reused.build.failures, 2, "applied as a new report");

    // Without a key, a retried completion of a past stage is still success without an entry.
    send(&client, &id, 0, ReportStatus::Completed).await;
    let repeat = send(&client, &id, 0, ReportStatus::Completed).await;
    assert!(!repeat.changed);
    assert!(repeat.recorded.is_empty());
    assert_eq!(client.get_build(&id).await.expect("get").last_seq, 4);
}

async fn a_stale_expected_state_is_a_conflict(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    send(&client, &id, 0, ReportStatus::Completed).await;
    let stale = ReportTransition {
        expected_state: Some(code(0)),
        ..report(5, ReportStatus::Failed)
    };
    let error = client
        .report_transition(&id, &stale, None)
        .await
        .expect_err("stale");
    assert_eq!(error.code(), Some(&ErrorCode::StaleExpectedState));
    let details = match &error {
        buildstate::client::ClientError::Api { details, .. } => details.clone().expect("details"),
        other => panic!("{other}"),
    };
    assert_eq!(details["actual_state"], 5);
    let build = client.get_build(&id).await.expect("get");
    assert_eq!(
        (build.status, build.failures),
        (BuildStatus::Running, 0),
        "not overwritten"
    );

    let fresh = ReportTransition {
        expected_state: Some(code(5)),
        ..stale
    };
    assert!(
        client
            .report_transition(&id, &fresh, None)
            .await
            .expect("fresh")
            .changed
    );
}

async fn history_pages_after_a_sequence_number(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    send(&client, &id, 45, ReportStatus::Completed).await; // 9 skipped + 1 completed
    let first = client.history(&id, 0, 4).await.expect("page 1");
    assert_eq!(
        first.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(first.next_after, Some(4));
    let rest = client.history(&id, 4, 100).await.expect("page 2");
    assert_eq!(rest.entries.first().map(|e| e.seq), Some(5));
    assert_eq!(
        rest.entries.last().map(|e| (e.seq, e.kind)),
        Some((11, EventKind::Completed))
    );
    assert_eq!(rest.next_after, None);
    assert!(client
        .history(&id, 11, 10)
        .await
        .expect("empty")
        .entries
        .is_empty());
}

async fn builds_list_newest_first_with_filters_and_pages(app: TestApp) {
    let client = app.client();
    let mut ids = Vec::new();
    for (platform, image) in [
        ("aws", "rhel8"),
        ("azure", "rhel8"),
        ("aws", "ubuntu-22.04"),
        ("gcp", "rhel8"),
    ] {
        let mut request = start_request(None);
        request.platform = platform.parse().expect("platform");
        request.image_type = image.parse().expect("image");
        ids.push(client.start_build(&request).await.expect("start").build.id);
        // Creation times are in milliseconds: keep the order unambiguous.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    send(&client, &ids[3], 0, ReportStatus::Failed).await;

    let all = client
        .list_builds(&BuildQuery::default())
        .await
        .expect("list");
    let listed: Vec<_> = all.builds.iter().map(|b| b.id.clone()).collect();
    assert_eq!(
        listed,
        ids.iter().rev().cloned().collect::<Vec<_>>(),
        "newest first"
    );

    let aws = client
        .list_builds(&BuildQuery {
            platform: Some("aws".into()),
            ..Default::default()
        })
        .await
        .expect("aws");
    assert_eq!(aws.builds.len(), 2);
    let rhel_on_aws = client
        .list_builds(&BuildQuery {
            platform: Some("aws".into()),
            image_type: Some("rhel8".into()),
            ..Default::default()
        })
        .await
        .expect("aws rhel8");
    assert_eq!(
        rhel_on_aws.builds.iter().map(|b| &b.id).collect::<Vec<_>>(),
        [&ids[0]]
    );
    let failed = client
        .list_builds(&BuildQuery {
            status: Some("failed".into()),
            ..Default::default()
        })
        .await
        .expect("failed");
    assert_eq!(
        failed.builds.iter().map(|b| &b.id).collect::<Vec<_>>(),
        [&ids[3]]
    );
    let at_zero = client
        .list_builds(&BuildQuery {
            state: Some(code(0).to_string()),
            ..Default::default()
        })
        .await
        .expect("state 0");
    assert_eq!(at_zero.builds.len(), 4);

    let page1 = client
        .list_builds(&BuildQuery {
            limit: Some(3),
            ..Default::default()
        })
        .await
        .expect("page 1");
    assert_eq!((page1.builds.len(), page1.next_offset), (3, Some(3)));
    let page2 = client
        .list_builds(&BuildQuery {
            limit: Some(3),
            offset: page1.next_offset,
            ..Default::default()
        })
        .await
        .expect("page 2");
    assert_eq!(
        page2.builds.iter().map(|b| &b.id).collect::<Vec<_>>(),
        [&ids[0]]
    );
    assert_eq!(page2.next_offset, None);

    let status = client.status().await.expect("status");
    assert_eq!(status.builds, 4);
    assert_eq!(status.by_platform.get("aws"), Some(&2));
    assert_eq!(status.by_status.get("failed"), Some(&1));
    assert_eq!(status.by_status.get("running"), Some(&3));
}

async fn reset_and_cancel_need_a_reason_and_are_recorded(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    send(&client, &id, 60, ReportStatus::Completed).await;
    let blank = client
        .reset_build(&id, code(40), "  ")
        .await
        .expect_err("blank reason");
    assert_eq!(
        (blank.status(), blank.code()),
        (Some(422), Some(&ErrorCode::InvalidField))
    );
    let forward = client
        .reset_build(&id, code(90), "skip ahead")
        .await
        .expect_err("forward");
    assert_eq!(forward.code(), Some(&ErrorCode::ResetForward));

    let reset = client
        .reset_build(&id, code(40), "network role changed")
        .await
        .expect("reset");
    assert_eq!(
        (reset.build.state, reset.build.status),
        (code(40), BuildStatus::Running)
    );
    assert_eq!(
        client.gate(&id, code(40)).await.expect("gate").decision,
        GateDecision::Run
    );

    let cancelled = client
        .cancel_build(&id, "image retired")
        .await
        .expect("cancel");
    assert_eq!(cancelled.build.status, BuildStatus::Cancelled);
    let again = client
        .cancel_build(&id, "twice")
        .await
        .expect_err("already cancelled");
    assert_eq!(again.code(), Some(&ErrorCode::BuildFinished));
    let report_after = client
        .report_transition(&id, &report(40, ReportStatus::Completed), None)
        .await
        .expect_err("cancelled");
    assert_eq!(report_after.code(), Some(&ErrorCode::BuildFinished));

    let history = client.history(&id, 0, 100).await.expect("history");
    let operator: Vec<_> = history
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Reset | EventKind::Cancelled))
        .map(|e| (e.kind, e.message.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        operator,
        [
            (EventKind::Reset, "network role changed".to_owned()),
            (EventKind::Cancelled, "image retired".to_owned())
        ]
    );
    let completed_before_reset: Vec<_> = history
        .entries
        .iter()
        .filter(|e| e.kind == EventKind::Completed)
        .map(|e| e.state)
        .collect();
    assert_eq!(
        completed_before_reset,
        [code(0), code(60)],
        "history is never rewritten by a reset (0 triggered, then the jump to 60)"
    );
}

/// A database error says what the store was doing and to which build: with the builds table
/// gone, every build verb fails, each naming itself (refusals and not-found answers are
/// tested with the verbs; they keep their own wording).
async fn a_database_error_names_the_operation_and_the_build(app: TestApp) {
    let id = start_build(&app.client()).await;
    // Both SQLite and PostgreSQL rename a table in place; the server's pooled connections
    // then find no `builds`.
    app.execute_sql("ALTER TABLE builds RENAME TO builds_gone")
        .await;
    let db = &app.state.db;
    let actor = Actor {
        token_id: "t_test".into(),
        user_id: "u_test".into(),
        username: "admin".parse().expect("username"),
        role: Role::Admin,
        scope: Scope::Admin,
        expires_at: None,
        last_used_at: None,
    };
    let policy = RetryPolicy::default();
    let transition = TransitionRequest {
        report: Report::new(code(15), ReportStatus::InProgress),
        message: None,
        source: None,
        idempotency: None,
    };
    let answers: Vec<(String, Result<(), StoreError>)> = vec![
        (
            "start a build".into(),
            db.start_build(&start_request(None), 3, &actor, chrono::Utc::now())
                .await
                .map(drop),
        ),
        (
            format!("read build `{id}`"),
            db.get_build(&id).await.map(drop),
        ),
        (
            format!("read the history of build `{id}`"),
            db.history_after(&id, 0, 10).await.map(drop),
        ),
        (
            format!("record a transition on build `{id}`"),
            db.record_transition(&id, &transition, &policy, &actor)
                .await
                .map(drop),
        ),
        (
            format!("cancel build `{id}`"),
            db.apply_operator_action(&id, OperatorAction::Cancel, "testing", &actor)
                .await
                .map(drop),
        ),
        (
            format!("renew the lease on stage 15 of build `{id}`"),
            db.renew_lease(&id, code(15), Some("run-1"), None, &policy)
                .await
                .map(drop),
        ),
        (
            format!("release the lease on stage 15 of build `{id}`"),
            db.release_lease(&id, code(15), Some("run-1"), None)
                .await
                .map(drop),
        ),
    ];
    let unnamed: Vec<String> = answers
        .into_iter()
        .filter_map(|(operation, answer)| match answer {
            Err(StoreError::Other(error)) => {
                let error = format!("{error:#}");
                let named = error.starts_with(&format!("failed to {operation}: "))
                    && error.contains("database query failed");
                (!named).then(|| format!("{operation}: {error}"))
            }
            other => Some(format!("{operation}: not a database error: {other:?}")),
        })
        .collect();
    assert!(unnamed.is_empty(), "{unnamed:#?}");
}
