//! `bldst build run --retry`: retries that happen by themselves. The real binary runs a command
//! that fails, waits for the `retry_due` entry the server's scheduler records once the backoff
//! has elapsed, and runs it again, until it succeeds or the build is blocked; `build get` and
//! `build watch` say when the next attempt is due, or that a person must act.

use std::path::Path;
use std::time::Duration;

use buildstate_domain::wire::HistoryEntry;
use buildstate_domain::{BuildId, EventKind};
use buildstate_server::ServerConfig;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::helpers::{build_of, Bldst, Outcome};
use crate::on_both_backends_with;
use crate::support::TestApp;

/// A server whose scheduler looks for due retries every 50 ms, with no backoff: a failure's
/// retry is due at once and recorded within a tick.
fn fast_retries(config: &mut ServerConfig) {
    config.retry_check_millis = 50;
}

/// A step that fails (exit 7) until its attempt number, counted in `attempts` in its working
/// directory, passes `failures`.
fn flaky(failures: u32) -> String {
    format!(
        "n=$(cat attempts 2>/dev/null || echo 0); n=$((n + 1)); echo $n > attempts; \
         if [ $n -le {failures} ]; then echo \"attempt $n: mirror timed out\" >&2; exit 7; fi; \
         echo \"attempt $n: installed\""
    )
}

/// The kinds of stage `code`'s history entries, without the `in_progress` claims.
async fn outcomes_at(app: &TestApp, id: &str, code: u8) -> Vec<EventKind> {
    let entries: Vec<HistoryEntry> = app
        .client()
        .history(&id.parse().expect("id"), 0, 1000)
        .await
        .expect("history")
        .entries;
    entries
        .into_iter()
        .filter(|entry| entry.state.value() == code && entry.kind != EventKind::InProgress)
        .map(|entry| entry.kind)
        .collect()
}

/// `bldst build run ID --state 5 --retry -- sh -c STEP` in `work`.
async fn run_with_retry(bldst: &Bldst, id: &BuildId, step: &str, work: &Path) -> Outcome {
    bldst
        .run_in(
            &[
                "build",
                "run",
                id.as_str(),
                "--state",
                "5",
                "--retry",
                "--",
                "sh",
                "-c",
                step,
            ],
            None,
            Some(work),
        )
        .await
}

async fn a_stage_that_fails_twice_then_succeeds_is_retried_by_itself(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 0, "completed").await;
    let work = tempfile::tempdir().expect("work directory");
    let step = flaky(2);

    // Act: one `build run`, no human action
    let ran = run_with_retry(&bldst, &id, &step, work.path()).await;

    // Assert: three attempts, two of them retries the server made due
    let ran = ran.ok();
    assert_eq!(ran.stdout, "attempt 3: installed\n");
    assert_eq!(
        std::fs::read_to_string(work.path().join("attempts")).expect("attempts"),
        "3\n"
    );
    for attempt in ["attempt 2 of 4", "attempt 3 of 4"] {
        assert!(
            ran.stderr.contains(&format!("is due: running {attempt}")),
            "{attempt}: {}",
            ran.stderr
        );
    }
    assert_eq!(
        outcomes_at(&app, id.as_str(), 5).await,
        [
            EventKind::Failed,
            EventKind::RetryDue,
            EventKind::Failed,
            EventKind::RetryDue,
            EventKind::Completed
        ]
    );
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!(
        (build.state.value(), build.status.as_str()),
        (10, "running")
    );
}

async fn a_stage_that_always_fails_is_retried_max_retries_times_then_blocked(app: TestApp) {
    // Arrange: two retries allowed
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&["--max-retries", "2"]).await;
    bldst.report(&id, 0, "completed").await;
    let work = tempfile::tempdir().expect("work directory");
    let step = flaky(u32::MAX);

    // Act
    let ran = run_with_retry(&bldst, &id, &step, work.path()).await;

    // Assert: the first run and exactly two retries, then blocked, with what a person can do
    let ran = ran.expect_code(7);
    assert_eq!(
        std::fs::read_to_string(work.path().join("attempts")).expect("attempts"),
        "3\n"
    );
    assert!(
        ran.stderr
            .contains("the build is blocked and needs a person")
            && ran
                .stderr
                .contains(&format!("`bldst build retry {id} --reason ...`")),
        "{}",
        ran.stderr
    );
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!((build.state.value(), build.status.as_str()), (5, "blocked"));
    let blocked = [
        EventKind::Failed,
        EventKind::RetryDue,
        EventKind::Failed,
        EventKind::RetryDue,
        EventKind::Failed,
    ];
    assert_eq!(outcomes_at(&app, id.as_str(), 5).await, blocked);
    // Many scheduler ticks later, still no retry for the blocked build.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(outcomes_at(&app, id.as_str(), 5).await, blocked);
    let shown = bldst.run(&["build", "get", id.as_str()]).await.ok();
    assert!(
        shown.stdout.contains("none: needs a person"),
        "{}",
        shown.stdout
    );
}

on_both_backends_with!(fast_retries =>
    a_stage_that_fails_twice_then_succeeds_is_retried_by_itself,
    a_stage_that_always_fails_is_retried_max_retries_times_then_blocked,
);

/// A server with a minute's backoff and no scheduler: a failed build waits, visibly.
fn a_minute_of_backoff(config: &mut ServerConfig) {
    config.backoff_base_secs = 60;
}

async fn get_and_watch_say_when_the_next_attempt_is_due(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 0, "failed").await;
    let build = build_of(&bldst, id.as_str()).await;
    let due = build
        .next_attempt_at
        .expect("a failed build has its next attempt")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // Act
    let shown = bldst.run(&["build", "get", id.as_str()]).await.ok();
    let mut watch = bldst.spawn(&["build", "watch", id.as_str(), "--after", "0"]);
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut failed_line = None;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("watch prints the history")
        .expect("read stdout")
    {
        if line.contains("0 failed (attempt 1)") {
            failed_line = Some(line);
            break;
        }
    }
    let _ = watch.kill().await;

    // Assert: the time, how long until it, and which attempt of how many
    let row = shown
        .stdout
        .lines()
        .find(|line| line.contains("next attempt"))
        .unwrap_or_else(|| panic!("a next attempt row: {}", shown.stdout));
    assert!(row.contains(&due), "{row}");
    assert!(
        row.contains("(in ") && row.contains("attempt 2 of 4"),
        "{row}"
    );
    let failed_line = failed_line.expect("the failure's line");
    assert!(
        failed_line.contains(&format!("next attempt: {due} (in "))
            && failed_line.contains("attempt 2 of 4"),
        "{failed_line}"
    );
}

on_both_backends_with!(a_minute_of_backoff => get_and_watch_say_when_the_next_attempt_is_due);
