//! `bldst report ...` against the real server: every report as a table (snapshot, ids, times
//! and durations redacted) and as the API's JSON, with the window and threshold flags.

use buildstate_domain::reports::{
    DurationReport, FailureReport, RecoveryReport, StuckReport, SuccessReport,
};
use buildstate_domain::resumes::SavingsReport;

use crate::helpers::{json, Bldst};
use crate::support::TestApp;

crate::on_both_backends!(
    reports_print_as_tables_and_json,
    bad_report_flags_are_refused_before_asking,
    savings_print_as_a_sentence_tables_and_json,
);

/// The report tables with the durations (which depend on how fast the test ran) redacted
/// too, columns separated by two spaces.
macro_rules! assert_report_snapshot {
    ($name:expr, $text:expr) => {{
        let mut filters = crate::helpers::redactions();
        filters.push((r"\b\d+(\.\d+)?(ms|s)\b|\b\d+m \d{2}s\b", "[dur]"));
        // The savings sentence says its time in words ("under a second", "2 h 13 min").
        filters.push((r"resuming saved .+? in the last", "resuming saved [dur] in the last"));
        // The columns' widths follow the durations' lengths: one gap of two spaces instead.
        filters.push((r" {2,}", "  "));
        insta::with_settings!({filters => filters}, {
            insta::assert_snapshot!($name, $text);
        })
    }};
}

/// Starts a build with `bldst build create FLAGS --quiet`.
async fn start(bldst: &Bldst, flags: &[&str]) -> buildstate_domain::BuildId {
    let mut args = vec!["build", "create", "--quiet"];
    args.extend_from_slice(flags);
    bldst
        .run(&args)
        .await
        .ok()
        .stdout
        .trim()
        .parse()
        .expect("a build id")
}

/// Three builds: aws/rhel8 published, aws/ubuntu blocked at 10, gcp/rhel8 failed at 10 once
/// and recovered, still going.
async fn reports_print_as_tables_and_json(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let published = bldst.create_build(&[]).await;
    bldst.report(&published, 10, "in_progress").await;
    bldst.report(&published, 10, "completed").await;
    bldst.report(&published, 100, "completed").await;
    let blocked = start(
        &bldst,
        &[
            "--platform",
            "aws",
            "--image-type",
            "ubuntu",
            "--max-retries",
            "1",
        ],
    )
    .await;
    bldst.report(&blocked, 10, "failed").await;
    bldst.report(&blocked, 10, "failed").await;
    let recovered = start(&bldst, &["--platform", "gcp", "--image-type", "rhel8"]).await;
    bldst.report(&recovered, 10, "failed").await;
    bldst.report(&recovered, 10, "completed").await;

    // Act
    let success = bldst.run(&["report", "success"]).await.ok();
    let failures = bldst.run(&["report", "failures", "--days", "1"]).await.ok();
    let durations = bldst.run(&["report", "durations"]).await.ok();
    let stuck = bldst
        .run(&["report", "stuck", "--after", "0s", "--after-code", "10=2h"])
        .await
        .ok();
    let recovery = bldst.run(&["report", "recovery"]).await.ok();

    // Assert
    assert_report_snapshot!("report_success_table", success.stdout);
    assert!(
        success.stderr.starts_with("builds started since "),
        "{}",
        success.stderr
    );
    assert_report_snapshot!("report_failures_table", failures.stdout);
    assert_report_snapshot!("report_durations_table", durations.stdout);
    assert_report_snapshot!("report_stuck_table", stuck.stdout);
    assert_eq!(
        stuck.stderr.trim(),
        "stuck: quiet for more than 0s (10 after 2h 00m)"
    );
    assert_report_snapshot!("report_recovery_table", recovery.stdout);

    let success: SuccessReport = json(
        &bldst
            .run(&["report", "success", "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    let aws = success
        .by_platform
        .iter()
        .find(|counts| counts.name == "aws")
        .expect("aws");
    assert_eq!((aws.builds, aws.completed, aws.blocked), (2, 1, 1));
    assert_eq!(aws.success_rate, Some(0.5));
    let failures: FailureReport = json(
        &bldst
            .run(&["report", "failures", "--days", "366", "--output", "json"])
            .await
            .ok()
            .stdout,
    );
    let at_ten = &failures.stages[0];
    assert_eq!(
        (
            at_ten.state.value(),
            at_ten.failures,
            at_ten.builds,
            at_ten.blocked_now
        ),
        (10, 3, 2, 1)
    );
    let durations: DurationReport = json(
        &bldst
            .run(&["report", "durations", "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    assert!(durations
        .stages
        .iter()
        .any(|stage| stage.state.value() == 10));
    // The blocked build is quiet at 10 (2 h allowed there); the recovered one at 15 (0 s).
    let stuck: StuckReport = json(
        &bldst
            .run(&[
                "report",
                "stuck",
                "--after",
                "0",
                "--after-code",
                "10=2h",
                "-o",
                "json",
            ])
            .await
            .ok()
            .stdout,
    );
    let ids = |builds: &[buildstate_domain::reports::AttentionBuild]| {
        builds
            .iter()
            .map(|build| build.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&stuck.stuck), [recovered]);
    assert_eq!(ids(&stuck.blocked), [blocked]);
    assert_eq!(stuck.stuck_after_by_code.get("10"), Some(&7200));
    let recovery: RecoveryReport = json(
        &bldst
            .run(&["report", "recovery", "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    assert_eq!(
        (recovery.overall.recovered, recovery.overall.unrecovered),
        (1, 1)
    );
}

async fn bad_report_flags_are_refused_before_asking(app: TestApp) {
    let bldst = Bldst::admin(&app);
    for (args, expected) in [
        (&["report", "success", "--days", "0"][..], "--days"),
        (&["report", "failures", "--days", "367"][..], "--days"),
        (
            &["report", "stuck", "--after", "soon"][..],
            "is not a duration",
        ),
        (&["report", "stuck", "--after-code", "12=1h"][..], "`12=1h`"),
        (
            &["report", "stuck", "--after-code", "10"][..],
            "is not CODE=DURATION",
        ),
    ] {
        let outcome = bldst.run(args).await.expect_code(2);
        outcome.expect_one_error_line();
        assert!(
            outcome.stderr.contains(expected),
            "{args:?}: {}",
            outcome.stderr
        );
    }
    let unauthenticated = Bldst::with_token(&app, None)
        .run(&["report", "success"])
        .await
        .expect_code(5);
    unauthenticated.expect_one_error_line();
}

/// One build resumed at 10 after a failure: 0 ran with in_progress/completed, 5 reported only
/// its completion (its duration unknown).
async fn savings_print_as_a_sentence_tables_and_json(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    for (state, status) in [
        (0, "in_progress"),
        (0, "completed"),
        (5, "completed"),
        (10, "failed"),
        (10, "in_progress"),
    ] {
        bldst.report(&id, state, status).await;
    }

    // Act
    let table = bldst.run(&["report", "savings"]).await.ok();
    let report: SavingsReport = json(
        &bldst
            .run(&["report", "savings", "--days", "30", "-o", "json"])
            .await
            .ok()
            .stdout,
    );

    // Assert
    assert_report_snapshot!("report_savings_table", table.stdout);
    assert!(
        table.stderr.starts_with("resumes since "),
        "{}",
        table.stderr
    );
    assert_eq!(
        (
            report.days,
            report.totals.resumes,
            report.totals.stages_not_rerun,
            report.totals.unknown_durations
        ),
        (30, 1, 2, 1)
    );
    assert_eq!(report.top_builds[0].id, id);
    assert!(
        report.summary.starts_with("resuming saved ")
            && report.summary.ends_with(
                " in the last 30 days, 2 stages not re-run (1 without a recorded duration)"
            ),
        "{}",
        report.summary
    );
}
