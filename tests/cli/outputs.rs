//! Outputs and leases from the command line: `build update --set/--outputs-file`,
//! `build outputs` (table, one key, `--format env`, JSON), and `build run` writing outputs
//! through `$BLDST_OUTPUTS_FILE`, heartbeating its lease, and refusing a stage another run holds.

use std::collections::BTreeMap;

use buildstate_domain::StageOutput;

use crate::helpers::{build_of, json, Bldst};
use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    outputs_set_on_update_are_read_back_as_a_table_a_value_env_lines_and_json,
    bad_outputs_are_refused_with_exit_2_and_nothing_written,
    build_run_reports_what_the_command_wrote_to_the_outputs_file,
    build_run_does_not_run_on_a_stage_another_run_holds,
);

async fn outputs_set_on_update_are_read_back_as_a_table_a_value_env_lines_and_json(app: TestApp) {
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    let work = tempfile::tempdir().expect("work directory");
    std::fs::write(
        work.path().join("packer.json"),
        r#"{"ami_id": "ami-0file", "snapshot_id": "snap-1"}"#,
    )
    .expect("write outputs file");
    bldst
        .run_in(
            &[
                "build",
                "update",
                id.as_str(),
                "--state",
                "10",
                "--status",
                "completed",
                "--outputs-file",
                "packer.json",
                "--set",
                "ami_id=ami-0abc",
                "--set",
                "note=it's built",
            ],
            None,
            Some(work.path()),
        )
        .await
        .ok();

    let table = bldst.run(&["build", "outputs", id.as_str()]).await.ok();
    assert!(
        table.stdout.contains("ami-0abc") && table.stdout.contains("STAGE"),
        "{}",
        table.stdout
    );
    let value = bldst
        .run(&["build", "outputs", id.as_str(), "ami_id"])
        .await
        .ok();
    assert_eq!(value.stdout, "ami-0abc\n", "--set wins over the file");
    let env = bldst
        .run(&["build", "outputs", id.as_str(), "--format", "env"])
        .await
        .ok();
    assert_eq!(
        env.stdout,
        "ami_id=ami-0abc\nnote='it'\\''s built'\nsnapshot_id=snap-1\n"
    );
    // The env lines survive a shell's eval unchanged.
    let evaluated = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("{}\nprintf '%s|%s' \"$ami_id\" \"$note\"", env.stdout),
        ])
        .output()
        .expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&evaluated.stdout),
        "ami-0abc|it's built"
    );
    let all: BTreeMap<String, StageOutput> = json(
        &bldst
            .run(&["build", "outputs", id.as_str(), "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    assert_eq!(all.get("snapshot_id").map(|o| o.stage.value()), Some(10));

    let missing = bldst
        .run(&["build", "outputs", id.as_str(), "instance_ip"])
        .await
        .expect_code(3);
    missing.expect_one_error_line();
    assert!(
        missing.stderr.contains("it has: ami_id, note, snapshot_id"),
        "{}",
        missing.stderr
    );
}

async fn bad_outputs_are_refused_with_exit_2_and_nothing_written(app: TestApp) {
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    let before = build_of(&bldst, id.as_str()).await;
    let work = tempfile::tempdir().expect("work directory");
    std::fs::write(work.path().join("list.json"), "[1, 2]").expect("write");
    std::fs::write(work.path().join("dash.env"), "ami-id=x\n").expect("write");
    for (name, flags) in [
        ("a key with a dash", vec!["--set", "ami-id=x"]),
        ("an empty value", vec!["--set", "ami_id="]),
        ("not KEY=VALUE", vec!["--set", "ami_id"]),
        ("a control character", vec!["--set", "k=a\u{1b}b"]),
        (
            "a file that is not an object",
            vec!["--outputs-file", "list.json"],
        ),
        ("a bad key in a file", vec!["--outputs-file", "dash.env"]),
    ] {
        let mut args = vec![
            "build",
            "update",
            id.as_str(),
            "--state",
            "0",
            "--status",
            "completed",
        ];
        args.extend(flags);
        let refused = bldst
            .run_in(&args, None, Some(work.path()))
            .await
            .expect_code(2);
        assert_eq!(refused.stdout, "", "{name}");
        assert!(
            refused.stderr.contains("error"),
            "{name}: {}",
            refused.stderr
        );
    }
    assert_eq!(
        build_of(&bldst, id.as_str()).await,
        before,
        "nothing was written"
    );
}

async fn build_run_reports_what_the_command_wrote_to_the_outputs_file(app: TestApp) {
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst
        .run(&[
            "build",
            "run",
            id.as_str(),
            "--state",
            "10",
            "--",
            "sh",
            "-c",
            "echo ami_id=ami-0run >> \"$BLDST_OUTPUTS_FILE\"",
        ])
        .await
        .ok();
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!(
        build
            .outputs
            .get("ami_id")
            .map(|o| (o.value.as_str(), o.stage.value())),
        Some(("ami-0run", 10))
    );
    assert_eq!(build.lease, None, "the completion released the lease");

    // A command that leaves unusable outputs fails its stage.
    let failed = bldst
        .run(&[
            "build",
            "run",
            id.as_str(),
            "--state",
            "15",
            "--",
            "sh",
            "-c",
            "echo 'bad key=1' > \"$BLDST_OUTPUTS_FILE\"",
        ])
        .await
        .expect_code(1);
    assert!(
        failed.stderr.contains("outputs cannot be used"),
        "{}",
        failed.stderr
    );
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!((build.state.value(), build.status.as_str()), (15, "failed"));
}

async fn build_run_does_not_run_on_a_stage_another_run_holds(app: TestApp) {
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst
        .run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            "0",
            "--status",
            "in_progress",
            "--run",
            "pipeline/42",
        ])
        .await
        .ok();
    let work = tempfile::tempdir().expect("work directory");
    let refused = bldst
        .run_in(
            &[
                "build",
                "run",
                id.as_str(),
                "--state",
                "0",
                "--no-wait",
                "--run",
                "pipeline/43",
                "--",
                "touch",
                "ran",
            ],
            None,
            Some(work.path()),
        )
        .await
        .expect_code(11);
    refused.expect_one_error_line();
    assert!(
        refused.stderr.contains("`pipeline/42`"),
        "{}",
        refused.stderr
    );
    assert!(!work.path().join("ran").exists(), "the command did not run");
    // A plain update from another run is a conflict naming the holder.
    let conflict = bldst
        .run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            "0",
            "--status",
            "completed",
            "--run",
            "pipeline/43",
        ])
        .await
        .expect_code(4);
    assert!(
        conflict.stderr.contains("held by run `pipeline/42`"),
        "{}",
        conflict.stderr
    );
}

/// While `build run`'s command works past the lease time, its heartbeats keep the stage: an
/// intruder trying to claim it then is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_run_heartbeats_keep_the_stage_while_the_command_runs() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |config| config.lease_secs = 1.0).await
    else {
        return;
    };
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    let script = format!(
        "sleep 2; \"{}\" build update \"$BUILDSTATE_BUILD_ID\" --state 0 --status in_progress \
         --run intruder; echo \"intruder exit $?\"",
        env!("CARGO_BIN_EXE_bldst")
    );
    let ran = bldst
        .run(&[
            "build",
            "run",
            id.as_str(),
            "--state",
            "0",
            "--heartbeat-every",
            "200ms",
            "--run",
            "runner",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .await
        .ok();
    assert!(
        ran.stdout.contains("intruder exit 4"),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
    let build = build_of(&bldst, id.as_str()).await;
    assert_eq!((build.state.value(), build.lease), (5, None));
}
