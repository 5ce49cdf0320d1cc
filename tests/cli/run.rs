//! `bldst build run`: a pipeline step made resumable in one line. The command's output streams
//! through, its failure is reported with the end of its stderr, a completed stage is skipped
//! and a blocked build or a backoff stops it, each with its documented exit code.

use buildstate_domain::wire::HistoryPage;
use buildstate_domain::BuildId;

use crate::assert_cli_snapshot;
use crate::helpers::{build_of, json, Bldst, Outcome};
use crate::support::{Backend, TestApp};

/// The words of `bldst build run ID --state STATE FLAGS… -- COMMAND…`.
fn build_run<'a>(
    id: &'a str,
    state: &'a str,
    flags: &[&'a str],
    command: &[&'a str],
) -> Vec<&'a str> {
    [
        &["build", "run", id, "--state", state][..],
        flags,
        &["--"],
        command,
    ]
    .concat()
}

/// A new build (by an admin's client) whose stage 0 runs `command` through `bldst build run`:
/// the client, the build and how the run ended.
async fn run_stage_0_of_a_new_build(app: &TestApp, command: &[&str]) -> (Bldst, BuildId, Outcome) {
    let bldst = Bldst::admin(app);
    let id = bldst.create_build(&[]).await;
    let ran = bldst.run(&build_run(id.as_str(), "0", &[], command)).await;
    (bldst, id, ran)
}

async fn a_command_that_succeeds_completes_its_stage(app: TestApp) {
    // Arrange, Act
    let (bldst, id, ran) = run_stage_0_of_a_new_build(
        &app,
        &[
            "sh",
            "-c",
            "echo \"hello from $BUILDSTATE_BUILD_ID at $BUILDSTATE_STATE\"; echo progress >&2",
        ],
    )
    .await;
    let ran = ran.ok();

    // Assert
    assert_cli_snapshot!("run_success_stdout", ran.stdout);
    assert_cli_snapshot!("run_success_stderr", ran.stderr);
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!((build.state.value(), build.status.as_str()), (5, "running"));
}

async fn a_command_that_fails_twice_then_succeeds_resumes_at_the_failed_stage(app: TestApp) {
    // Arrange: a step that breaks on its first two attempts, counted in a file
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 0, "completed").await;
    let flaky = "n=$(cat attempts 2>/dev/null || echo 0); n=$((n + 1)); echo $n > attempts; \
                 if [ $n -le 2 ]; then echo \"attempt $n: mirror timed out\" >&2; exit 7; fi; \
                 echo \"attempt $n: installed\"";
    let work = tempfile::tempdir().expect("work directory");
    let step = build_run(id.as_str(), "5", &[], &["sh", "-c", flaky]);

    // Act
    let first = bldst.run_in(&step, None, Some(work.path())).await;
    let second = bldst.run_in(&step, None, Some(work.path())).await;
    let third = bldst.run_in(&step, None, Some(work.path())).await;

    // Assert
    assert_eq!([first.code, second.code, third.code], [7, 7, 0]);
    assert_cli_snapshot!("run_failure_stderr", first.stderr);
    // Each later attempt resumed after a failure, and its last line says what that saved:
    // stage 0, reported completed without an in_progress, has no recorded duration.
    for (attempt, ran) in [("second", &second), ("third", &third)] {
        assert_eq!(
            ran.stderr.lines().last(),
            Some("bldst: resumed at stage 5: 1 stage not re-run, time saved unknown (no recorded durations)"),
            "{attempt}: {}",
            ran.stderr
        );
    }
    assert_eq!(third.stdout, "attempt 3: installed\n");
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!(
        (build.state.value(), build.status.as_str(), build.failures),
        (10, "running", 0)
    );
    let history = bldst.run(&["build", "history", id.as_str()]).await.ok();
    assert_cli_snapshot!("run_retried_history", history.stdout);
    let page: HistoryPage = json(
        &bldst
            .run(&["build", "history", id.as_str(), "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    let failure = page
        .entries
        .iter()
        .find(|entry| entry.kind.as_str() == "failed")
        .and_then(|entry| entry.message.clone())
        .expect("a failure message");
    assert!(
        failure.ends_with("attempt 1: mirror timed out"),
        "{failure}"
    );
}

async fn a_stage_already_completed_is_skipped_without_running_the_command(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 0, "completed").await;
    let work = tempfile::tempdir().expect("work directory");

    // Act
    let skipped = bldst
        .run_in(
            &build_run(id.as_str(), "0", &[], &["touch", "ran"]),
            None,
            Some(work.path()),
        )
        .await
        .ok();

    // Assert
    assert!(!work.path().join("ran").exists(), "the command did not run");
    assert_eq!(skipped.stdout, "");
    assert_cli_snapshot!("run_skip_stderr", skipped.stderr);
}

async fn a_blocked_build_does_not_run_the_command(app: TestApp) {
    // Arrange: one failure blocks this build
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&["--max-retries", "0"]).await;
    let failed = bldst
        .run(&build_run(id.as_str(), "0", &[], &["false"]))
        .await
        .expect_code(1);
    assert!(failed.stderr.contains("blocked"), "{}", failed.stderr);

    // Act
    let stopped = bldst
        .run(&build_run(id.as_str(), "0", &[], &["true"]))
        .await
        .expect_code(12);

    // Assert
    stopped.expect_one_error_line();
    assert_cli_snapshot!("run_stop_stderr", stopped.stderr);
}

async fn a_command_that_cannot_start_is_reported_failed_with_code_127(app: TestApp) {
    // Arrange, Act
    let (bldst, id, missing) = run_stage_0_of_a_new_build(&app, &["no-such-program-here"]).await;
    let missing = missing.expect_code(127);

    // Assert
    assert!(
        missing
            .stderr
            .contains("cannot start `no-such-program-here`"),
        "{}",
        missing.stderr
    );
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!(build.status.as_str(), "failed");
}

async fn a_success_that_cannot_be_reported_says_so_and_fails(app: TestApp) {
    // Arrange: a command that cancels its own build, so `completed` is refused
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    let cancel = format!(
        "{} build cancel {} --reason 'cancelled mid-stage'",
        env!("CARGO_BIN_EXE_bldst"),
        id
    );

    // Act
    let refused = bldst
        .run(&build_run(id.as_str(), "0", &[], &["sh", "-c", &cancel]))
        .await
        .expect_code(4);

    // Assert
    let last = refused.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: `sh` succeeded but stage 0 of build")
            && last.contains("could not be reported completed"),
        "{}",
        refused.stderr
    );
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!(build.status.as_str(), "cancelled");
}

async fn a_command_killed_by_a_signal_exits_128_plus_the_signal(app: TestApp) {
    // Arrange, Act
    let (bldst, id, killed) = run_stage_0_of_a_new_build(&app, &["sh", "-c", "kill -9 $$"]).await;
    let killed = killed.expect_code(137);

    // Assert
    assert!(
        killed.stderr.contains("`sh` was killed by signal 9"),
        "{}",
        killed.stderr
    );
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!((build.status.as_str(), build.failures), ("failed", 1));
}

async fn a_failure_with_coloured_stderr_is_reported_with_the_colours_removed(app: TestApp) {
    // Arrange, Act: a tool that colours its errors and draws progress with carriage returns
    let (bldst, id, ran) = run_stage_0_of_a_new_build(
        &app,
        &[
            "sh",
            "-c",
            r"printf '10%%\r100%%\n\033[31merror\033[0m: disk full\n' >&2; exit 3",
        ],
    )
    .await;

    // Assert: the failure is recorded (the server refuses control characters), as plain text
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!((build.status.as_str(), build.failures), ("failed", 1));
    let message = build.last_message.expect("a failure message");
    assert!(
        message.ends_with("10%\n100%\nerror: disk full"),
        "{message:?}"
    );
}

crate::on_both_backends!(
    a_failure_with_coloured_stderr_is_reported_with_the_colours_removed,
    a_command_killed_by_a_signal_exits_128_plus_the_signal,
    a_success_that_cannot_be_reported_says_so_and_fails,
    a_command_that_succeeds_completes_its_stage,
    a_command_that_fails_twice_then_succeeds_resumes_at_the_failed_stage,
    a_stage_already_completed_is_skipped_without_running_the_command,
    a_blocked_build_does_not_run_the_command,
    a_command_that_cannot_start_is_reported_failed_with_code_127,
);

/// A server whose backoff after a first failure is `seconds`, with a build whose stage 0 just
/// failed.
async fn backing_off(seconds: u64) -> Option<(TestApp, Bldst, String)> {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |config| config.backoff_base_secs = seconds).await?;
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 0, "failed").await;
    Some((app, bldst, id.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backoff_is_refused_with_exit_code_11_under_no_wait_or_a_short_max_wait() {
    let Some((_app, bldst, id)) = backing_off(600).await else {
        return;
    };
    let work = tempfile::tempdir().expect("work directory");
    for flags in [&["--no-wait"][..], &["--max-wait", "5s"][..]] {
        let args = build_run(id.as_str(), "0", flags, &["touch", "ran"]);
        let refused = bldst
            .run_in(&args, None, Some(work.path()))
            .await
            .expect_code(11);
        refused.expect_one_error_line();
        assert!(
            !work.path().join("ran").exists(),
            "{flags:?}: the command did not run"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_backoff_is_waited_out_before_the_command_runs() {
    let Some((_app, bldst, id)) = backing_off(2).await else {
        return;
    };
    let ran = bldst
        .run(&build_run(id.as_str(), "0", &[], &["echo", "retried"]))
        .await
        .ok();
    assert_eq!(ran.stdout, "retried\n");
    assert!(
        ran.stderr.contains("backing off; waiting"),
        "{}",
        ran.stderr
    );
}

/// With a 1 s lease, a command that runs four lease lengths keeps its stage without being told
/// how often to heartbeat: `build run` heartbeats a third of the way through the lease the
/// server granted. A run that claims the stage midway is refused, and the first run's success
/// is recorded.
async fn a_stage_running_several_short_leases_keeps_its_lease(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |config| config.lease_secs = 1.0).await else {
        return;
    };
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    let script = format!(
        "sleep 2; \"{}\" build update \"$BUILDSTATE_BUILD_ID\" --state 0 --status in_progress \
         --run intruder; echo \"intruder exit $?\"; sleep 2",
        env!("CARGO_BIN_EXE_bldst")
    );
    let ran = bldst
        .run(&build_run(
            id.as_str(),
            "0",
            &["--run", "runner"],
            &["sh", "-c", &script],
        ))
        .await
        .ok();
    assert!(
        ran.stdout.contains("intruder exit 4"),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(!ran.stderr.contains("lease"), "{}", ran.stderr);
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!((build.state.value(), build.lease), (5, None));
    let history: HistoryPage = json(
        &bldst
            .run(&["build", "history", id.as_str(), "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    assert!(
        history
            .entries
            .iter()
            .all(|entry| entry.kind.as_str() != "taken_over"),
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_running_several_short_leases_keeps_its_lease_on_sqlite() {
    a_stage_running_several_short_leases_keeps_its_lease(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_running_several_short_leases_keeps_its_lease_on_postgres() {
    a_stage_running_several_short_leases_keeps_its_lease(Backend::Postgres).await;
}
