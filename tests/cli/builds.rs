//! `bldst build ...` against the real server: create and resume, report, read, list, history,
//! gate, and the operator actions, with their tables and JSON snapshot-tested.

use buildstate_domain::wire::{Build, GateAnswer, HistoryPage, StartedBuild};
use serde_json::Value;

use crate::assert_cli_snapshot;
use crate::helpers::{json, Bldst};
use crate::support::{Backend, TestApp};

async fn a_build_is_created_reported_and_read_back(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let created = bldst
        .run(&[
            "build",
            "create",
            "--platform",
            "aws",
            "--image-type",
            "rhel8",
            "--description",
            "RHEL 8 base image",
            "--key",
            "aws/rhel8/0a1b2c3",
            "--label",
            "git_sha=0a1b2c3",
            "--label",
            "packer=1.11",
        ])
        .await
        .ok();
    assert_cli_snapshot!("build_create_table", created.stdout);
    assert!(
        created.stderr.starts_with("started build `b_"),
        "{}",
        created.stderr
    );
    let id = bldst
        .run(&["build", "list", "--quiet"])
        .await
        .ok()
        .stdout
        .trim()
        .to_owned();

    // Act
    let triggered = bldst
        .run(&[
            "build",
            "update",
            &id,
            "--state",
            "0",
            "--status",
            "completed",
            "--message",
            "pipeline triggered",
        ])
        .await
        .ok();
    let jumped = bldst
        .run(&[
            "build",
            "update",
            &id,
            "--state",
            "10",
            "--status",
            "completed",
        ])
        .await
        .ok();
    let working = bldst
        .run(&[
            "build",
            "update",
            &id,
            "--state",
            "15",
            "--status",
            "in_progress",
            "--source",
            "https://ci.example.com/job/42",
        ])
        .await
        .ok();

    // Assert
    assert_cli_snapshot!(
        "build_update_notes",
        [triggered.stdout, jumped.stdout, working.stdout].concat()
    );
    let table = bldst.run(&["build", "get", &id]).await.ok();
    assert_cli_snapshot!("build_get_table", table.stdout);
    let document = bldst
        .run(&["build", "get", &id, "--output", "json"])
        .await
        .ok();
    assert_cli_snapshot!("build_get_json", document.stdout);
    let build: Build = json(&document.stdout);
    assert_eq!(
        (build.state.value(), build.status.as_str()),
        (15, "in_progress")
    );
    let history = bldst.run(&["build", "history", &id]).await.ok();
    assert_cli_snapshot!("build_history_table", history.stdout);
    let page: HistoryPage = json(
        &bldst
            .run(&["build", "history", &id, "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    let kinds: Vec<&str> = page
        .entries
        .iter()
        .map(|entry| entry.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "completed",
            "skipped",
            "completed",
            "in_progress"
        ]
    );
    let limited: HistoryPage = json(
        &bldst
            .run(&[
                "build", "history", &id, "--after", "1", "--limit", "2", "-o", "json",
            ])
            .await
            .ok()
            .stdout,
    );
    let seqs: Vec<i64> = limited.entries.iter().map(|entry| entry.seq).collect();
    assert_eq!((seqs, limited.next_after), (vec![2, 3], Some(3)));
    let listed = bldst.run(&["build", "list"]).await.ok();
    assert_cli_snapshot!("build_list_table", listed.stdout);
}

async fn a_key_resumes_the_unfinished_build_and_lists_filter_by_it(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let first = bldst.create_build(&["--key", "aws/rhel8/abc"]).await;
    bldst.report(&first, 0, "completed").await;
    let _other = bldst.create_build(&["--key", "gcp/rhel8/abc"]).await;

    // Act
    let again = bldst
        .run(&[
            "build",
            "create",
            "--platform",
            "aws",
            "--image-type",
            "rhel8",
            "--key",
            "aws/rhel8/abc",
            "-o",
            "json",
        ])
        .await
        .ok();

    // Assert
    let started: StartedBuild = json(&again.stdout);
    assert!(started.resumed);
    assert_eq!(started.build.id, first);
    assert_eq!(started.build.state.value(), 5, "resumed where it stopped");
    let by_key = bldst
        .run(&["build", "list", "--key", "aws/rhel8/abc", "--quiet"])
        .await
        .ok();
    assert_eq!(by_key.stdout.trim(), first.as_str());
    let at_five = bldst
        .run(&["build", "list", "--state", "5", "--quiet"])
        .await
        .ok();
    assert_eq!(at_five.stdout.trim(), first.as_str());
    let none = bldst
        .run(&[
            "build",
            "list",
            "--status",
            "failed",
            "--platform",
            "aws",
            "-q",
        ])
        .await
        .ok();
    assert_eq!(none.stdout, "");
    let page: Value = json(
        &bldst
            .run(&["build", "list", "--limit", "1", "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    assert_eq!(page["builds"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["next_offset"], 1);
}

async fn completing_a_stage_twice_succeeds_and_changes_nothing(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 0, "completed").await;

    // Act
    let again = bldst.report(&id, 0, "completed").await;

    // Assert
    assert_cli_snapshot!("build_update_already_done", again.stdout);
    let result: Value = json(
        &bldst
            .run(&[
                "build",
                "update",
                id.as_str(),
                "--state",
                "0",
                "--status",
                "completed",
                "-o",
                "json",
            ])
            .await
            .ok()
            .stdout,
    );
    assert_eq!(result["changed"], false);
    assert_eq!(result["build"]["last_seq"], 2, "no second history entry");
}

async fn operators_retry_reset_and_cancel_a_build(app: TestApp) {
    // Arrange: a build that blocks on its first failure
    let bldst = Bldst::admin(&app);
    let build = bldst.create_build(&["--max-retries", "0"]).await;
    let id = build.as_str();
    bldst.report(&build, 0, "completed").await;
    bldst.report(&build, 5, "failed").await;
    let blocked = bldst
        .run(&[
            "build",
            "update",
            id,
            "--state",
            "5",
            "--status",
            "in_progress",
        ])
        .await
        .expect_code(4);
    blocked.expect_one_error_line();
    assert!(
        blocked.stderr.contains("bldst build retry"),
        "{}",
        blocked.stderr
    );

    // Act
    let retried = bldst
        .run(&["build", "retry", id, "--reason", "mirror fixed"])
        .await
        .ok();
    bldst.report(&build, 5, "completed").await;
    let reset = bldst
        .run(&[
            "build",
            "reset",
            id,
            "--state",
            "5",
            "--reason",
            "kickstart changed",
        ])
        .await
        .ok();
    let forward = bldst
        .run(&[
            "build",
            "reset",
            id,
            "--state",
            "50",
            "--reason",
            "skip ahead",
        ])
        .await
        .expect_code(4);
    let cancelled = bldst
        .run(&["build", "cancel", id, "--reason", "superseded"])
        .await
        .ok();
    let after_cancel = bldst
        .run(&[
            "build",
            "update",
            id,
            "--state",
            "5",
            "--status",
            "completed",
        ])
        .await;

    // Assert
    assert_cli_snapshot!(
        "operator_actions",
        [
            retried.stdout,
            reset.stdout,
            forward.stderr.clone(),
            cancelled.stdout
        ]
        .concat()
    );
    forward.expect_one_error_line();
    let after_cancel = after_cancel.expect_code(4);
    after_cancel.expect_one_error_line();
    let retry_cancelled = bldst
        .run(&["build", "retry", id, "--reason", "again"])
        .await
        .expect_code(4);
    retry_cancelled.expect_one_error_line();
}

async fn a_stale_expected_state_is_a_conflict_not_an_overwrite(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 0, "completed").await;

    // Act
    let stale = bldst
        .run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            "5",
            "--status",
            "in_progress",
            "--expected-state",
            "0",
        ])
        .await
        .expect_code(4);
    let current = bldst
        .run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            "5",
            "--status",
            "in_progress",
            "--expected-state",
            "5",
        ])
        .await;

    // Assert
    stale.expect_one_error_line();
    assert!(
        stale.stderr.contains("not the expected 0"),
        "{}",
        stale.stderr
    );
    current.ok();
}

async fn a_long_message_file_keeps_the_end_of_the_log(app: TestApp) {
    // Arrange: a log longer than the server keeps, whose last line is the error
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    let log: String = (0..3000)
        .map(|n| format!("line {n:05} of the ansible log\n"))
        .collect();
    let log = format!("{log}FATAL: package httpd not found\n");
    let path = bldst.home.path().join("ansible.log");
    std::fs::write(&path, &log).expect("write log");

    // Act
    bldst
        .run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            "0",
            "--status",
            "failed",
            "--message-file",
            path.to_str().expect("utf-8 path"),
        ])
        .await
        .ok();
    let piped = bldst
        .run_with_stdin(
            &[
                "build",
                "update",
                id.as_str(),
                "--state",
                "0",
                "--status",
                "failed",
                "--message-file",
                "-",
            ],
            "from stdin\n",
        )
        .await
        .ok();

    // Assert
    assert!(piped.stdout.contains("2 of 3"), "{}", piped.stdout);
    let page: HistoryPage = json(
        &bldst
            .run(&["build", "history", id.as_str(), "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    let first = page.entries[1].message.clone().expect("a message");
    assert_eq!(
        first.chars().count(),
        buildstate_domain::wire::MAX_MESSAGE_CHARS
    );
    assert!(first.ends_with("FATAL: package httpd not found\n"));
    assert_eq!(page.entries[2].message.as_deref(), Some("from stdin\n"));
}

crate::on_both_backends!(
    a_build_is_created_reported_and_read_back,
    a_key_resumes_the_unfinished_build_and_lists_filter_by_it,
    completing_a_stage_twice_succeeds_and_changes_nothing,
    operators_retry_reset_and_cancel_a_build,
    a_stale_expected_state_is_a_conflict_not_an_overwrite,
    a_long_message_file_keeps_the_end_of_the_log,
);

/// The gate's four answers as exit codes, on a server whose backoff is long enough to see
/// `wait`.
async fn the_gate_exit_code_says_run_skip_wait_or_stop(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |config| config.backoff_base_secs = 600).await
    else {
        return;
    };
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 0, "completed").await;
    bldst.report(&id, 5, "failed").await;
    let gate = |state: &'static str| {
        let id = id.to_string();
        let bldst = &bldst;
        async move { bldst.run(&["build", "gate", &id, "--state", state]).await }
    };

    // Act
    let skip = gate("0").await;
    let wait = gate("5").await;
    let after_failure = gate("10").await;
    let fresh = bldst.create_build(&[]).await;
    let run = bldst
        .run(&["build", "gate", fresh.as_str(), "--state", "0"])
        .await;
    let wait_json = bldst
        .run(&["build", "gate", id.as_str(), "--state", "5", "-o", "json"])
        .await;
    bldst
        .run(&["build", "cancel", id.as_str(), "--reason", "done testing"])
        .await
        .ok();
    let stop = gate("10").await;

    // Assert
    let codes = [
        skip.code,
        wait.code,
        after_failure.code,
        run.code,
        stop.code,
    ];
    assert_eq!(codes, [10, 11, 12, 0, 12]);
    assert_cli_snapshot!(
        "gate_answers",
        [
            skip.stdout,
            wait.stdout,
            after_failure.stdout,
            run.stdout,
            stop.stdout
        ]
        .concat()
    );
    let answer: GateAnswer = json(&wait_json.stdout);
    assert_eq!(answer.decision.as_str(), "wait");
    assert!(answer.wait_seconds.is_some_and(|seconds| seconds > 500));
    assert_eq!(wait_json.code, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_exit_code_says_run_skip_wait_or_stop_on_sqlite() {
    the_gate_exit_code_says_run_skip_wait_or_stop(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_exit_code_says_run_skip_wait_or_stop_on_postgres() {
    the_gate_exit_code_says_run_skip_wait_or_stop(Backend::Postgres).await;
}

/// On a terminal of `COLUMNS` columns the tables fit it: every row one line, no line longer
/// than the width, the long columns (message, source, key) cut with `…`. Piped without
/// `COLUMNS`, rows are printed whole.
async fn tables_fit_a_fixed_width_and_stay_whole_when_piped(app: TestApp) {
    // Arrange: a build whose key, source and message are long
    let admin = Bldst::admin(&app);
    let id = admin
        .create_build(&["--key", "aws/ubuntu-22.04-web/0123456789abcdef0123456789"])
        .await;
    let long_message = "the playbook failed while installing packages from a mirror that timed \
                        out after several minutes of waiting";
    admin
        .run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            "10",
            "--status",
            "failed",
            "--source",
            "https://ci.example.com/job/images/job/aws-ubuntu/1234/console",
            "--message",
            long_message,
        ])
        .await
        .ok();
    let narrow = admin.env("COLUMNS", "80");

    for (name, args) in [
        ("history", vec!["build", "history", id.as_str()]),
        ("list", vec!["build", "list"]),
        ("get", vec!["build", "get", id.as_str()]),
    ] {
        // Act
        let fitted = narrow.run(&args).await.ok();
        let whole = Bldst::admin(&app).run(&args).await.ok();

        // Assert
        for line in fitted.stdout.lines() {
            assert!(
                line.chars().count() <= 80,
                "{name}: a line wider than 80:\n{}",
                fitted.stdout
            );
        }
        assert_eq!(
            fitted.stdout.lines().count(),
            whole.stdout.lines().count(),
            "{name}: one line per row, as when piped"
        );
        assert!(fitted.stdout.contains('…'), "{name}: something was cut");
        assert!(
            whole.stdout.lines().any(|line| line.chars().count() > 80),
            "{name}: piped rows are whole"
        );
        if name == "history" {
            assert!(
                whole.stdout.contains(&long_message[..60]),
                "{}",
                whole.stdout
            );
            assert_cli_snapshot!("history_in_80_columns", fitted.stdout);
        }
    }
}

crate::on_both_backends!(tables_fit_a_fixed_width_and_stay_whole_when_piped);
