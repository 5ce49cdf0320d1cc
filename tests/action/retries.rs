//! `command: retry`, the GitHub half of retries that happen by themselves: after a failed
//! workflow run, the action waits for the server's `retry_due` entry and asks a local fake of
//! GitHub's API (wiremock) to re-run the run's failed jobs: once per due retry, never for a
//! blocked build; a 403 (no `actions: write`) is one `::error` annotation.

use buildstate_server::ServerConfig;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Action, Outcome, Step, Workflow, GITHUB_TOKEN};
use crate::on_both_backends_with;
use crate::support::TestApp;

/// The scheduler looks for due retries every 50 ms; no backoff, so a retry is due at once.
fn fast_retries(config: &mut ServerConfig) {
    config.retry_check_millis = 50;
}

/// Where GitHub takes the re-run of run 4242's failed jobs.
const RERUN: &str = "/repos/org/images/actions/runs/4242/rerun-failed-jobs";

/// Runs `start` (one retry allowed) and a failed report on stage 5 in `workflow`'s attempt.
async fn fail_stage_5(action: &Action, workflow: &Workflow) {
    let started = action
        .run(
            workflow,
            &Step::new(
                "start",
                &[
                    ("command", "start"),
                    ("platform", "aws"),
                    ("image-type", "rhel8"),
                    ("max-retries", "1"),
                ],
            ),
        )
        .await
        .ok();
    let id = started.output("build-id").to_owned();
    action
        .run(
            workflow,
            &Step::new(
                "fail",
                &[
                    ("command", "report"),
                    ("build-id", id.as_str()),
                    ("state", "5"),
                    ("status", "failed"),
                ],
            ),
        )
        .await
        .ok();
}

/// The retry workflow's step for the failed run 4242.
async fn retry(action: &Action, workflow: &Workflow) -> Outcome {
    let retry_run = Workflow {
        run_id: "5151".into(),
        ..workflow.clone()
    };
    action
        .run(
            &retry_run,
            &Step::new(
                "retry",
                &[
                    ("command", "retry"),
                    ("platform", "aws"),
                    ("image-type", "rhel8"),
                    ("run-id", "4242"),
                    ("max-wait", "60"),
                ],
            ),
        )
        .await
}

async fn retry_reruns_the_failed_jobs_once_per_due_retry_and_never_for_a_blocked_build(
    app: TestApp,
) {
    // Arrange
    let (github, workflow) =
        github_answering(ResponseTemplate::new(201).set_body_json(serde_json::json!({}))).await;
    let action = Action::new(&app.base_url, &app.admin_token);

    // Act 1: attempt 1 fails at stage 5; the retry workflow runs
    fail_stage_5(&action, &workflow).await;
    let first = retry(&action, &workflow).await.ok();

    // Assert 1: re-run once, and the summary says which attempt
    assert_eq!(first.output("rerun"), "true");
    assert!(
        first
            .summary
            .contains("stage 5 (kickstart), attempt 2 of 2 due — failed jobs re-run"),
        "{}",
        first.summary
    );
    assert_eq!(reruns(&github).await, 1);

    // Act 2: the re-run (attempt 2) resumes the build and fails again: blocked
    let rerun = workflow.rerun();
    fail_stage_5(&action, &rerun).await;
    let second = retry(&action, &rerun).await.ok();

    // Assert 2: no re-run for the blocked build; a warning and a summary for a person
    assert_eq!(second.output("rerun"), "false");
    assert_eq!(reruns(&github).await, 1, "no re-run for a blocked build");
    assert!(
        second.stdout.lines().any(
            |line| line.starts_with("::warning title=buildstate::build `b_")
                && line.contains("is blocked at stage 5 after 2 failures")
        ),
        "{}",
        second.stdout
    );
    assert!(
        second
            .summary
            .contains("failed 2 times, blocked — needs a person: `bldst build retry"),
        "{}",
        second.summary
    );
}

async fn a_missing_actions_permission_is_one_error_annotation(app: TestApp) {
    // Arrange: GitHub refuses the workflow's token
    let (github, workflow) = github_answering(ResponseTemplate::new(403).set_body_json(
        serde_json::json!({
            "message": "Resource not accessible by integration",
            "documentation_url": "https://docs.github.com/rest/actions/workflow-runs#re-run-failed-jobs-from-a-workflow-run",
        }),
    ))
    .await;
    let action = Action::new(&app.base_url, &app.admin_token);
    fail_stage_5(&action, &workflow).await;

    // Act
    let outcome = retry(&action, &workflow).await;

    // Assert
    let message = outcome.failed();
    assert_eq!(outcome.code, 5);
    assert!(
        message.starts_with("GitHub refused to re-run the failed jobs of run 4242 (403: Resource not accessible by integration): give the workflow `permissions: actions: write`"),
        "{message}"
    );
    assert_eq!(outcome.output("rerun"), "false");
    assert_eq!(reruns(&github).await, 1);
}

/// A fake GitHub that answers `answer` to re-running run 4242's failed jobs with the step's
/// token, and a workflow run that talks to it.
async fn github_answering(answer: ResponseTemplate) -> (MockServer, Workflow) {
    let github = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RERUN))
        .and(header(
            "authorization",
            format!("Bearer {GITHUB_TOKEN}").as_str(),
        ))
        .respond_with(answer)
        .mount(&github)
        .await;
    let workflow = Workflow {
        api_url: github.uri(),
        ..Workflow::default()
    };
    (github, workflow)
}

/// How many re-runs GitHub was asked for.
async fn reruns(github: &MockServer) -> usize {
    github
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .filter(|request| request.url.path() == RERUN)
        .count()
}

on_both_backends_with!(fast_retries =>
    retry_reruns_the_failed_jobs_once_per_due_retry_and_never_for_a_blocked_build,
    a_missing_actions_permission_is_one_error_annotation,
);
