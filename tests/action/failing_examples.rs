//! Every stage step of the example workflows under `pipelines/github/` (a `run:` step whose
//! failure a later step reports with `if: failure() && steps.ID.outcome == 'failure'`), run
//! with the shell GitHub picks for it and every command it calls failing. The step must fail,
//! and the `failed` report it leads to — the action binary against a real server — must leave
//! the build `failed` at that stage with the command's output in the message. GitHub's default
//! `bash -e` has no `pipefail`: `packer build | tee log` would succeed and report `completed`.

use std::collections::BTreeMap;
use std::path::Path;

use buildstate_domain::wire::StartBuild;
use serde_norway::Value;

use crate::helpers::{Action, Step, Workflow};
use crate::on_both_backends;
use crate::support::examples::{
    assert_failed_at, example_pipelines, failing_program, failing_tools, path_with, FAILURE_CODE,
    FAILURE_LINE,
};
use crate::support::TestApp;

/// The command line GitHub runs a `run:` script with, for the step's `shell` (the step's own,
/// else the job's `defaults.run.shell`, else the workflow's): GitHub's documented templates.
fn shell_command(shell: Option<&str>, script: &Path) -> Vec<String> {
    let script = script.display().to_string();
    let words: &[&str] = match shell {
        None => &["bash", "-e"],
        Some("bash") => &["bash", "--noprofile", "--norc", "-eo", "pipefail"],
        Some("sh") => &["sh", "-e"],
        Some(other) => panic!("a shell this test knows: {other}"),
    };
    words
        .iter()
        .map(|word| (*word).to_owned())
        .chain([script])
        .collect()
}

/// `${{ ... }}` expressions replaced by `value`, as the runner would have filled them in.
fn without_expressions(text: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("a closed expression") + start + 2;
        out.push_str(value);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => panic!("a scalar: {other:?}"),
    }
}

async fn every_example_stage_step_that_fails_reports_failed(app: TestApp) {
    let tools = failing_tools();
    let action = Action::new(&app.base_url, &app.admin_token);
    let mut checked = 0;
    for (file, workflow) in example_pipelines("github") {
        let Some(jobs) = workflow["jobs"].as_mapping() else {
            continue;
        };
        for (job_name, job) in jobs {
            let steps = job["steps"].as_sequence().cloned().unwrap_or_default();
            for step in &steps {
                let (Some(id), Some(script)) = (step["id"].as_str(), step["run"].as_str()) else {
                    continue;
                };
                // The step that reports this one's failure.
                let condition = format!("failure() && steps.{id}.outcome == 'failure'");
                let Some(report) = steps
                    .iter()
                    .find(|other| other["if"].as_str() == Some(condition.as_str()))
                else {
                    continue;
                };
                let what = format!("{file}: job `{}` step `{id}`", text(job_name));
                let with = &report["with"];
                assert_eq!(with["command"].as_str(), Some("report"), "{what}");
                assert_eq!(with["status"].as_str(), Some("failed"), "{what}");
                let stage = with["state"].as_i64().expect("the reported state");

                // A build at that stage, as the earlier steps would have left it.
                let build = app
                    .client()
                    .start_build(&StartBuild {
                        platform: "aws".parse().expect("platform"),
                        image_type: "rhel8".parse().expect("image type"),
                        description: Some(what.clone()),
                        key: None,
                        labels: Default::default(),
                        max_retries: None,
                        retry_policy: None,
                    })
                    .await
                    .expect("start")
                    .build;

                let workspace = tempfile::tempdir().expect("workspace");
                failing_program(&workspace.path().join("scripts/publish-image.sh"));
                let script_path = workspace.path().join("step.sh");
                std::fs::write(&script_path, without_expressions(script, "x")).expect("script");
                let shell = step["shell"]
                    .as_str()
                    .or_else(|| job["defaults"]["run"]["shell"].as_str())
                    .or_else(|| workflow["defaults"]["run"]["shell"].as_str());
                let command = shell_command(shell, &script_path);
                let env: BTreeMap<String, String> = step["env"]
                    .as_mapping()
                    .map(|env| {
                        env.iter()
                            .map(|(name, value)| {
                                (text(name), without_expressions(&text(value), "x"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let ran = tokio::process::Command::new(&command[0])
                    .args(&command[1..])
                    .current_dir(workspace.path())
                    .env_clear()
                    .envs(&env)
                    .env("GITHUB_OUTPUT", workspace.path().join("github_output"))
                    .env("PATH", path_with(tools.path()))
                    .output()
                    .await
                    .unwrap_or_else(|error| panic!("{what}: run {command:?}: {error}"));
                let stdout = String::from_utf8_lossy(&ran.stdout);
                assert!(
                    stdout.contains(FAILURE_LINE),
                    "{what}: the command ran: {stdout:?} {:?}",
                    String::from_utf8_lossy(&ran.stderr)
                );
                assert_eq!(
                    ran.status.code(),
                    Some(FAILURE_CODE),
                    "{what}: the step fails with its command's status (with {command:?}), so `failure()` reports it"
                );

                // The report step, its inputs as the workflow writes them.
                let mut inputs: Vec<(String, String)> = Vec::new();
                for (name, value) in with.as_mapping().expect("with") {
                    let name = text(name);
                    let value = match name.as_str() {
                        "api-url" | "api-token" => continue,
                        // No GitHub API here: the commit status is tested on its own.
                        "commit-status" => "false".to_owned(),
                        "build-id" => build.id.to_string(),
                        "message-file" => workspace.path().join(text(value)).display().to_string(),
                        _ => without_expressions(&text(value), ""),
                    };
                    inputs.push((name, value));
                }
                let inputs: Vec<(&str, &str)> = inputs
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                action
                    .run(&Workflow::default(), &Step::new("report", &inputs))
                    .await
                    .ok();

                let with_output = with.get("message-file").is_some();
                assert_failed_at(&app, &build.id, stage, with_output, &what).await;
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 3,
        "every stage step of every example was run: {checked}"
    );
}

on_both_backends!(every_example_stage_step_that_fails_reports_failed);
