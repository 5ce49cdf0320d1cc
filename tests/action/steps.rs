//! The action's commands as a workflow uses them: start, gate, report, get, and a re-run that
//! resumes the build and skips what the first attempt completed.

use buildstate_domain::BuildId;
use serde_json::Value;

use crate::helpers::{Action, Step, Workflow};
use crate::support::{Backend, TestApp};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("JSON ({error}): {text}"))
}

async fn a_rerun_resumes_the_build_and_skips_what_the_first_attempt_completed(app: TestApp) {
    // Arrange: the first attempt of a workflow run.
    let action = Action::new(&app.base_url, &app.admin_token);
    let first = Workflow::default();
    let start = Step::new(
        "start",
        &[
            ("command", "start"),
            ("platform", "aws"),
            ("image-type", "rhel8"),
            ("labels", "git_sha=0a1b2c3\npacker=1.11\n"),
        ],
    );

    // Act + Assert: start.
    let started = action.run(&first, &start).await.ok();
    assert_eq!(started.output("resumed"), "false");
    assert_eq!(started.output("state"), "0");
    assert_eq!(started.output("status"), "running");
    assert_eq!(started.output("attempt"), "1");
    assert_eq!(json(started.output("completed")), serde_json::json!([]));
    assert_eq!(
        json(started.output("pending")).as_array().map(Vec::len),
        Some(21)
    );
    assert_eq!(json(started.output("outputs")), serde_json::json!({}));
    let id = started.output("build-id").to_owned();
    assert!(started
        .log_lines()
        .iter()
        .any(|line| line.starts_with(&format!("started build `{id}`"))));
    assert!(
        started.summary.starts_with(&format!(
            "### buildstate: `org/images/4242/aws/rhel8` (build `{id}`)"
        )),
        "{}",
        started.summary
    );
    assert!(
        started.summary.contains("started by this run"),
        "{}",
        started.summary
    );
    let with_id = |step: &str, inputs: &[(&str, &str)]| {
        let mut all = vec![("build-id", id.as_str())];
        all.extend_from_slice(inputs);
        Step::new(step, &all)
    };

    let gate0 = with_id("gate_kickstart", &[("command", "gate"), ("state", "0")]);
    let run0 = action.run(&first, &gate0).await.ok();
    assert_eq!(
        (run0.output("decision"), run0.output("skip")),
        ("run", "false")
    );
    for status in ["in_progress", "completed"] {
        let report = with_id(
            &format!("report_0_{status}"),
            &[("command", "report"), ("state", "0"), ("status", status)],
        );
        let reported = action.run(&first, &report).await.ok();
        assert_eq!(reported.output("changed"), "true");
    }
    let gate5 = with_id("gate_5", &[("command", "gate"), ("state", "5")]);
    assert_eq!(
        action.run(&first, &gate5).await.ok().output("decision"),
        "run"
    );
    let fail5 = with_id(
        "report_5_failed",
        &[
            ("command", "report"),
            ("state", "5"),
            ("status", "failed"),
            ("message", "packer: timeout\nwaiting for SSH"),
        ],
    );
    let failed = action.run(&first, &fail5).await.ok();
    assert_eq!(failed.output("status"), "failed");
    assert_eq!(failed.output("attempt"), "2");
    assert_eq!(json(failed.output("completed")), serde_json::json!([0]));
    assert!(
        failed
            .summary
            .contains("| ❌ | 5 | kickstart | failed 1 time(s)"),
        "{}",
        failed.summary
    );

    // Act: "Re-run failed jobs": same run id, attempt 2, the same workflow from the top.
    let second = first.rerun();
    let resumed = action.run(&second, &start).await.ok();
    assert_eq!(resumed.output("resumed"), "true");
    assert_eq!(
        resumed.output("build-id"),
        id,
        "the default key resumes the same build"
    );
    assert!(resumed
        .log_lines()
        .iter()
        .any(|line| line.starts_with(&format!("resumed build `{id}`"))));
    let skipped = action.run(&second, &gate0).await.ok();
    assert_eq!(
        (skipped.output("decision"), skipped.output("skip")),
        ("skip", "true")
    );
    let first_source = first.source();
    assert!(
        skipped
            .log_lines()
            .iter()
            .any(|line| line.contains(&format!("completed in {first_source}"))),
        "the skip says where the stage was done: {}",
        skipped.stdout
    );
    assert!(
        skipped.summary.contains(&format!(
            "**skip** — completed in [run 4242, attempt 1]({first_source})"
        )),
        "{}",
        skipped.summary
    );
    assert_eq!(
        action.run(&second, &gate5).await.ok().output("decision"),
        "run"
    );
    let complete5 = with_id(
        "report_5_completed",
        &[
            ("command", "report"),
            ("state", "5"),
            ("status", "completed"),
        ],
    );
    assert_eq!(
        action.run(&second, &complete5).await.ok().output("state"),
        "10"
    );

    // Assert: the ladder links each stage to the attempt that did it.
    let got = action
        .run(&second, &with_id("get", &[("command", "get")]))
        .await
        .ok();
    assert_eq!(got.output("status"), "running");
    assert_eq!(json(got.output("completed")), serde_json::json!([0, 5]));
    assert!(
        got.summary.contains(&format!(
            "| ✅ | 0 | triggered | completed | [run 4242, attempt 1]({first_source}) |"
        )),
        "{}",
        got.summary
    );
    assert!(
        got.summary.contains(&format!(
            "| ✅ | 5 | kickstart | completed | [run 4242, attempt 2]({}) |",
            second.source()
        )),
        "{}",
        got.summary
    );
    assert!(
        got.summary.contains("this run resumed at stage 5"),
        "{}",
        got.summary
    );
    // What resuming saved, as the server recorded it with the re-run's report on stage 5:
    // stage 0, which the first attempt ran, was not run again.
    assert!(
        got.summary
            .contains("⏩ **resumed at stage 5: 1 stage not re-run, "),
        "{}",
        got.summary
    );
    assert!(
        got.summary.contains(&format!(
            "[dashboard]({}/dashboard/#/builds/{id})",
            app.base_url
        )),
        "{}",
        got.summary
    );
}

async fn a_retried_report_step_records_one_transition(app: TestApp) {
    // Arrange
    let action = Action::new(&app.base_url, &app.admin_token);
    let workflow = Workflow::default();
    let id = start(&action, &workflow).await;
    let report = Step::new(
        "report_failed",
        &[
            ("build-id", id.as_str()),
            ("command", "report"),
            ("state", "0"),
            ("status", "failed"),
        ],
    );

    // Act: the same step twice in one attempt (a retried request looks the same to the server).
    let once = action.run(&workflow, &report).await.ok();
    let twice = action.run(&workflow, &report).await.ok();

    // Assert: one failure, one history entry; the next attempt's failure counts again.
    assert_eq!(once.output("attempt"), "2");
    assert_eq!(twice.output("attempt"), "2");
    let history = app.client().history(&id, 0, 100).await.expect("history");
    let failures = history
        .entries
        .iter()
        .filter(|entry| entry.kind.as_str() == "failed")
        .count();
    assert_eq!(failures, 1);
    let again = action.run(&workflow.rerun(), &report).await.ok();
    assert_eq!(again.output("attempt"), "3");
}

async fn a_build_can_be_found_by_its_key(app: TestApp) {
    let action = Action::new(&app.base_url, &app.admin_token);
    let workflow = Workflow::default();
    let id = start(&action, &workflow).await;
    let gate = Step::new(
        "gate",
        &[
            ("key", "org/images/4242/aws/rhel8"),
            ("command", "gate"),
            ("state", "0"),
        ],
    );
    let answer = action.run(&workflow, &gate).await.ok();
    assert_eq!(answer.output("build-id"), id.as_str());
    assert_eq!(answer.output("decision"), "run");
}

async fn start_takes_the_retry_policy_input_and_a_rerun_keeps_it(app: TestApp) {
    let action = Action::new(&app.base_url, &app.admin_token);
    let workflow = Workflow::default();
    let policy = "rules:\n  - {stages: 5, max_retries: 3, backoff_base_secs: 600}\n  - {stages: \"15-45\", max_retries: 2, restart_from: 10}\n";
    let step = |policy: &str| {
        Step::new(
            "start",
            &[
                ("command", "start"),
                ("platform", "aws"),
                ("image-type", "rhel8"),
                ("summary", "none"),
                ("retry-policy", policy),
            ],
        )
    };
    let started = action.run(&workflow, &step(policy)).await.ok();
    let id: BuildId = started.output("build-id").parse().expect("build id");
    let build = app.client().get_build(&id).await.expect("get");
    let rules: Vec<String> = build
        .retry_policy
        .as_ref()
        .expect("the policy")
        .rules()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rules,
        [
            "stages 5: max_retries 3, backoff_base_secs 600",
            "stages 15-45: max_retries 2, restart_from 10"
        ]
    );
    // The re-run of the workflow with another policy resumes the build, which keeps its own,
    // and says so in a warning annotation.
    let rerun = action
        .run(
            &workflow.rerun(),
            &step(r#"{"rules": [{"stages": 25, "max_retries": 9}]}"#),
        )
        .await
        .ok();
    assert_eq!(rerun.output("build-id"), id.as_str());
    assert!(
        rerun
            .stdout
            .lines()
            .any(|line| line.starts_with("::warning") && line.contains("was not applied")),
        "{}",
        rerun.stdout
    );
    assert_eq!(
        app.client().get_build(&id).await.expect("get").retry_policy,
        build.retry_policy
    );
}

crate::on_both_backends!(
    a_rerun_resumes_the_build_and_skips_what_the_first_attempt_completed,
    a_retried_report_step_records_one_transition,
    a_build_can_be_found_by_its_key,
    start_takes_the_retry_policy_input_and_a_rerun_keeps_it,
);

/// Starts the default build of `workflow` and returns its id.
async fn start(action: &Action, workflow: &Workflow) -> BuildId {
    let step = Step::new(
        "start",
        &[
            ("command", "start"),
            ("platform", "aws"),
            ("image-type", "rhel8"),
            ("summary", "none"),
        ],
    );
    let outcome = action.run(workflow, &step).await.ok();
    assert_eq!(outcome.summary, "", "summary: none writes nothing");
    outcome.output("build-id").parse().expect("build id")
}

fn gate_step(id: &BuildId, state: &str, extra: &[(&str, &str)]) -> Step {
    let mut inputs = vec![
        ("build-id", id.as_str()),
        ("command", "gate"),
        ("state", state),
    ];
    inputs.extend_from_slice(extra);
    Step::new("gate", &inputs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_on_a_backing_off_stage_fails_when_told_not_to_wait_or_it_would_wait_too_long() {
    // Arrange: a backoff of an hour after the first failure.
    let app = TestApp::spawn_with(Backend::Sqlite, |config| config.backoff_base_secs = 3600)
        .await
        .expect("server");
    let action = Action::new(&app.base_url, &app.admin_token);
    let workflow = Workflow::default();
    let id = start(&action, &workflow).await;
    let fail = Step::new(
        "fail",
        &[
            ("build-id", id.as_str()),
            ("command", "report"),
            ("state", "0"),
            ("status", "failed"),
        ],
    );
    action.run(&workflow, &fail).await.ok();

    for (extra, fix) in [
        (&[("on-backoff", "fail")][..], "set `on-backoff: wait`"),
        (
            &[("on-backoff", "wait"), ("max-wait", "60")][..],
            "raise `max-wait` (now 60s)",
        ),
    ] {
        // Act
        let outcome = action.run(&workflow, &gate_step(&id, "0", extra)).await;

        // Assert: an error that says what to change, and outputs that say why.
        let message = outcome.failed();
        assert!(message.contains("cannot run for"), "{message}");
        assert!(message.contains(fix), "{message}");
        assert_eq!(outcome.code, 11);
        assert_eq!(outcome.output("decision"), "wait");
        assert_eq!(outcome.output("skip"), "true");
        let seconds: u64 = outcome.output("wait-seconds").parse().expect("seconds");
        assert!(seconds > 60, "{seconds}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_waits_out_a_short_backoff_then_says_run() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| config.backoff_base_secs = 1)
        .await
        .expect("server");
    let action = Action::new(&app.base_url, &app.admin_token);
    let workflow = Workflow::default();
    let id = start(&action, &workflow).await;
    let fail = Step::new(
        "fail",
        &[
            ("build-id", id.as_str()),
            ("command", "report"),
            ("state", "0"),
            ("status", "failed"),
        ],
    );
    action.run(&workflow, &fail).await.ok();

    let outcome = action.run(&workflow, &gate_step(&id, "0", &[])).await.ok();

    assert_eq!(outcome.output("decision"), "run");
    assert_eq!(outcome.output("skip"), "false");
    assert!(
        outcome
            .log_lines()
            .iter()
            .any(|line| line.contains("must wait") && line.contains("asking again in")),
        "{}",
        outcome.stdout
    );
}

async fn a_gate_says_stop_as_an_error_unless_the_build_is_completed(app: TestApp) {
    let action = Action::new(&app.base_url, &app.admin_token);
    let workflow = Workflow::default();

    // A completed build: nothing to do is not a failure.
    let id = start(&action, &workflow).await;
    let publish = Step::new(
        "publish",
        &[
            ("build-id", id.as_str()),
            ("command", "report"),
            ("state", "100"),
            ("status", "completed"),
        ],
    );
    let published = action.run(&workflow, &publish).await.ok();
    assert_eq!(published.output("status"), "completed");
    assert!(
        published.summary.contains("### buildstate:"),
        "a finished build gets the ladder"
    );
    let done = action.run(&workflow, &gate_step(&id, "50", &[])).await.ok();
    assert_eq!(
        (done.output("decision"), done.output("skip")),
        ("stop", "true")
    );
    assert!(
        done.stdout.contains("::notice title=buildstate::"),
        "{}",
        done.stdout
    );

    // A cancelled build: an error.
    let other = Workflow {
        run_id: "999".into(),
        ..Workflow::default()
    };
    let id = start(&action, &other).await;
    app.client()
        .cancel_build(&id, "obsolete image")
        .await
        .expect("cancel");
    let stopped = action.run(&other, &gate_step(&id, "5", &[])).await;
    let message = stopped.failed();
    assert_eq!(stopped.code, 12);
    assert!(
        message.contains(&format!("stage 5 (kickstart) of build `{id}` must not run")),
        "{message}"
    );
    assert_eq!(
        (stopped.output("decision"), stopped.output("skip")),
        ("stop", "true")
    );
    assert_eq!(stopped.output("status"), "cancelled");
}

crate::on_both_backends!(a_gate_says_stop_as_an_error_unless_the_build_is_completed);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_lines_appear_only_when_the_runner_asks_for_them() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("server");
    let action = Action::new(&app.base_url, &app.admin_token);
    let workflow = Workflow::default();
    let id = start(&action, &workflow).await;

    let quiet = action.run(&workflow, &gate_step(&id, "0", &[])).await.ok();
    let verbose = action
        .run(
            &workflow,
            &gate_step(&id, "0", &[]).env("RUNNER_DEBUG", "1"),
        )
        .await
        .ok();

    assert!(!quiet.stdout.contains("::debug::"), "{}", quiet.stdout);
    assert!(
        verbose.stdout.contains("::debug::output decision=run"),
        "{}",
        verbose.stdout
    );
}

async fn a_completed_stages_outputs_come_back_to_the_rerun_as_json(app: TestApp) {
    // Arrange: attempt 1 completes stage 0 with an AMI id, then fails stage 5.
    let action = Action::new(&app.base_url, &app.admin_token);
    let first = Workflow::default();
    let id = start(&action, &first).await;
    let report = |state: &'static str, status: &'static str, outputs: &'static str| {
        Step::new(
            &format!("report_{state}_{status}"),
            &[
                ("build-id", id.as_str()),
                ("command", "report"),
                ("state", state),
                ("status", status),
                ("outputs", outputs),
            ],
        )
    };
    let completed = action
        .run(
            &first,
            &report("0", "completed", "ami_id=ami-0abc123\nregion = eu-west-1\n"),
        )
        .await
        .ok();
    assert!(
        completed
            .stdout
            .contains("recorded outputs: ami_id, region"),
        "{}",
        completed.stdout
    );
    action.run(&first, &report("5", "failed", "")).await.ok();

    // Act: the re-run's gate on the failed stage.
    let gate = action
        .run(&first.rerun(), &gate_step(&id, "5", &[]))
        .await
        .ok();

    // Assert: `fromJSON(steps.gate.outputs.outputs).ami_id` would read the first attempt's value.
    assert_eq!(gate.output("decision"), "run");
    assert_eq!(
        json(gate.output("outputs")),
        serde_json::json!({"ami_id": "ami-0abc123", "region": "eu-west-1"})
    );
}

async fn an_in_progress_report_holds_the_stage_for_its_run_until_it_reports_again(app: TestApp) {
    // Arrange: attempt 1 claims stage 0.
    let action = Action::new(&app.base_url, &app.admin_token);
    let first = Workflow::default();
    let id = start(&action, &first).await;
    let report = |status: &'static str| {
        Step::new(
            &format!("report_{status}"),
            &[
                ("build-id", id.as_str()),
                ("command", "report"),
                ("state", "0"),
                ("status", status),
            ],
        )
    };
    let claimed = action.run(&first, &report("in_progress")).await.ok();
    assert!(
        claimed.stdout.contains("this run holds stage 0 until"),
        "{}",
        claimed.stdout
    );

    // Act + Assert: the holder may run; another run (a second attempt) must wait.
    let holder = action.run(&first, &gate_step(&id, "0", &[])).await.ok();
    assert_eq!(holder.output("decision"), "run");
    let other = action
        .run(
            &first.rerun(),
            &gate_step(&id, "0", &[("on-backoff", "fail")]),
        )
        .await;
    let message = other.failed();
    assert_eq!(other.output("decision"), "wait");
    assert!(message.contains("cannot run for"), "{message}");

    // The holder's completion releases it: the stage is done for everyone.
    action.run(&first, &report("completed")).await.ok();
    let after = action
        .run(&first.rerun(), &gate_step(&id, "0", &[]))
        .await
        .ok();
    assert_eq!(after.output("decision"), "skip");
}

crate::on_both_backends!(
    a_completed_stages_outputs_come_back_to_the_rerun_as_json,
    an_in_progress_report_holds_the_stage_for_its_run_until_it_reports_again,
);
