//! `bldst server prune` and `bldst server backup`, the real binary against a database a
//! running server uses.

use std::process::{Command, Output};

use buildstate_domain::{BuildStatus, ReportStatus};

use crate::helpers::{send, start_build};
use crate::on_both_backends;
use crate::support::process::ServerProcess;
use crate::support::TestApp;

on_both_backends!(prune_removes_finished_builds_in_batches_after_writing_them_out);

fn bldst_server(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bldst"))
        .arg("server")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("SECRET_KEY", "test-secret-key-of-32-bytes-or-more")
        .output()
        .expect("bldst server runs")
}

async fn prune_removes_finished_builds_in_batches_after_writing_them_out(app: TestApp) {
    let client = app.client();
    let completed = start_build(&client).await;
    send(&client, &completed, 0, ReportStatus::Completed).await;
    send(&client, &completed, 100, ReportStatus::Completed).await;
    let cancelled = start_build(&client).await;
    client
        .cancel_build(&cancelled, "superseded")
        .await
        .expect("cancel");
    let running = start_build(&client).await;
    send(&client, &running, 0, ReportStatus::Completed).await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let export = dir.path().join("pruned.jsonl");
    let export_arg = export.to_str().expect("utf-8 path");
    // Finished a day ago or earlier: nothing yet.
    let none = bldst_server(&app.database_url, &["prune", "--finished-before", "1d"]);
    assert!(
        none.status.success(),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    assert!(String::from_utf8_lossy(&none.stderr).contains("removed 0 build(s)"));

    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let pruned = bldst_server(
        &app.database_url,
        &[
            "prune",
            "--finished-before",
            &tomorrow,
            "--batch-size",
            "1",
            "--export",
            export_arg,
        ],
    );
    let stderr = String::from_utf8_lossy(&pruned.stderr);
    assert!(pruned.status.success(), "{stderr}");
    assert!(stderr.contains("removed 2 build(s)"), "{stderr}");

    for gone in [&completed, &cancelled] {
        let error = client.get_build(gone).await.expect_err("pruned");
        assert_eq!(error.status(), Some(404));
    }
    let kept = client
        .get_build(&running)
        .await
        .expect("the running build stays");
    assert_eq!(kept.status, BuildStatus::Running);
    assert_eq!(
        client
            .history(&running, 0, 100)
            .await
            .expect("history")
            .entries
            .len(),
        2
    );

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .expect("the export")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let mut exported: Vec<(String, usize)> = lines
        .iter()
        .map(|line| {
            (
                line["build"]["id"].as_str().expect("id").to_owned(),
                line["history"].as_array().expect("history").len(),
            )
        })
        .collect();
    exported.sort();
    let mut expected = vec![
        (
            completed.to_string(),
            client_history_len_before(&lines, &completed),
        ),
        (cancelled.to_string(), 2),
    ];
    expected.sort();
    assert_eq!(
        exported, expected,
        "each removed build with its whole history"
    );
}

/// The completed build's history: started, 0 completed, 5..95 skipped, 100 completed.
fn client_history_len_before(
    lines: &[serde_json::Value],
    id: &buildstate_domain::BuildId,
) -> usize {
    let line = lines
        .iter()
        .find(|line| line["build"]["id"] == id.to_string())
        .expect("exported");
    let history = line["history"].as_array().expect("history");
    let seqs: Vec<i64> = history
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
    assert!(history.len() > 3, "the skipped stages too: {history:?}");
    history.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_a_sqlite_database_in_use_and_refuses_postgres() {
    let Some(app) = TestApp::spawn(crate::support::Backend::Sqlite).await else {
        return;
    };
    let id = start_build(&app.client()).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let copy = dir.path().join("copy.db");
    let copy_arg = copy.to_str().expect("utf-8 path");
    let backed = bldst_server(&app.database_url, &["backup", copy_arg]);
    assert!(
        backed.status.success(),
        "{}",
        String::from_utf8_lossy(&backed.stderr)
    );

    let again = bldst_server(&app.database_url, &["backup", copy_arg]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // A server on the copy knows the build and the admin's token.
    let restored = ServerProcess::start(&format!("sqlite://{copy_arg}"), &[], &[]).await;
    let build = restored
        .client_with(&app.admin_token)
        .get_build(&id)
        .await
        .expect("get");
    assert_eq!(build.id, id);

    if let Some(postgres) = TestApp::spawn(crate::support::Backend::Postgres).await {
        let refused = bldst_server(&postgres.database_url, &["backup", copy_arg]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("pg_dump"));
    }
}
