//! Every stage task of the example pipelines under `pipelines/concourse/`, run as Concourse runs
//! it (its `run.path` and `args`, its `params` as the environment, in a directory holding its
//! inputs and outputs) with every command it calls failing. The task must fail, and the hook its
//! exit status selects (`on_failure`, or `on_success` if it wrongly succeeded) — put through the
//! real resource binary against a real server — must leave the build `failed` at that stage with
//! the command's output in the message. A `script | tee log` under plain `sh -e` exits with tee's
//! status and would end in `completed`: this is the test that catches it.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};
use serde_norway::Value;

use crate::helpers::Resource;
use crate::on_both_backends;
use crate::support::examples::{
    assert_failed_at, example_pipelines, failing_program, failing_tools, path_with, FAILURE_CODE,
    FAILURE_LINE,
};
use crate::support::TestApp;

fn json(value: &Value) -> Json {
    serde_json::to_value(value).expect("YAML is JSON-compatible")
}

/// One stage task of an example: what it runs, and what the pipeline puts around it.
struct StageTask {
    name: String,
    /// The `state-store` resource the job puts its stages to (its directory after the get).
    resource: String,
    /// The stage of the `in_progress` put right before the task.
    stage: i64,
    path: String,
    args: Vec<String>,
    params: BTreeMap<String, String>,
    on_success: Option<Json>,
    on_failure: Option<Json>,
}

/// The names of the pipeline's resources of type `state-store`, whatever each is called.
fn state_stores(pipeline: &Value) -> Vec<String> {
    pipeline["resources"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|resource| resource["type"].as_str() == Some("state-store"))
        .filter_map(|resource| resource["name"].as_str().map(str::to_owned))
        .collect()
}

/// The `put` params of `hook` when it puts to one of the `state-store` resources `stores`.
fn hook_params(hook: &Value, stores: &[String]) -> Option<Json> {
    let put = hook["put"].as_str()?;
    stores
        .iter()
        .any(|store| store == put)
        .then(|| json(&hook["params"]))
}

/// The stage tasks of a job's plan (each after an `in_progress` put to one of `stores`, with a
/// hook), in order.
fn stage_tasks(file: &str, plan: &Value, stores: &[String]) -> Vec<StageTask> {
    let mut tasks = Vec::new();
    let mut stage = None;
    for step in plan.as_sequence().expect("a plan is a list") {
        let put = step["put"].as_str();
        if put.is_some_and(|put| stores.iter().any(|store| store == put))
            && step["params"]["status"].as_str() == Some("in_progress")
        {
            stage = step["params"]["state"].as_i64().zip(put.map(str::to_owned));
            continue;
        }
        let Some(name) = step["task"].as_str() else {
            continue;
        };
        let (on_success, on_failure) = (
            hook_params(&step["on_success"], stores),
            hook_params(&step["on_failure"], stores),
        );
        if on_success.is_none() && on_failure.is_none() {
            continue;
        }
        let (stage, resource) = stage.clone().unwrap_or_else(|| {
            panic!("{file}: task `{name}` reports on a stage it put `in_progress` first")
        });
        let config = &step["config"];
        let run = &config["run"];
        let params = config["params"]
            .as_mapping()
            .map(|params| {
                params
                    .iter()
                    .map(|(name, value)| {
                        let value = match value {
                            Value::String(text) => text.clone(),
                            other => json(other).to_string(),
                        };
                        (name.as_str().expect("param name").to_owned(), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        tasks.push(StageTask {
            name: name.to_owned(),
            resource,
            stage,
            path: run["path"].as_str().expect("run.path").to_owned(),
            args: run["args"]
                .as_sequence()
                .map(|args| {
                    args.iter()
                        .map(|arg| arg.as_str().expect("a string arg").to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            params,
            on_success,
            on_failure,
        });
    }
    tasks
}

/// Every example pipeline, its merge keys (`<<: *stage-task`) applied as Concourse applies them.
fn examples() -> Vec<(String, Value)> {
    example_pipelines("concourse")
        .into_iter()
        .map(|(file, mut pipeline)| {
            pipeline.apply_merge().expect("merge keys");
            (file, pipeline)
        })
        .collect()
}

/// The `repo/ci/NAME.sh` scripts a task's script calls, `$STEP` filled in from its params.
fn repo_scripts(task: &StageTask) -> Vec<String> {
    let mut scripts = Vec::new();
    for arg in &task.args {
        for (start, _) in arg.match_indices("repo/ci/") {
            let rest = &arg[start + "repo/ci/".len()..];
            let Some(end) = rest.find(".sh") else {
                continue;
            };
            let mut name = rest[..end].to_owned();
            for (param, value) in &task.params {
                name = name.replace(&format!("${param}"), value);
            }
            scripts.push(name);
        }
    }
    scripts
}

async fn every_example_stage_that_fails_reports_failed(app: TestApp) {
    let resource = Resource::new(&app).in_concourse_build("4711");
    let tools = failing_tools();
    let mut checked = 0;
    for (file, pipeline) in examples() {
        let Some(jobs) = pipeline["jobs"].as_sequence() else {
            continue;
        };
        let stores = state_stores(&pipeline);
        for job in jobs {
            for task in stage_tasks(&file, &job["plan"], &stores) {
                let what = format!("{file}: task `{}` (stage {})", task.name, task.stage);
                let mut source = resource.source(
                    &format!("examples/{file}/{}", task.name),
                    json!({"description": what}),
                );
                // The pipeline's own source keys the test server understands (not its CA).
                if let Some(own) = pipeline["resources"].as_sequence().and_then(|all| {
                    all.iter()
                        .find(|r| r["name"].as_str() == Some(task.resource.as_str()))
                }) {
                    for key in ["timeout_seconds", "max_attempts"] {
                        if let Some(value) = own["source"].get(key) {
                            source[key] = json(value);
                        }
                    }
                }

                // The job's puts before the task, and the implicit get into the resource's
                // directory.
                let dir = resource.dir();
                resource
                    .put(dir.path(), &json!({"source": source}))
                    .await
                    .json();
                let claimed = resource
                    .put(
                        dir.path(),
                        &json!({"source": source, "params": {"state": task.stage, "status": "in_progress"}}),
                    )
                    .await
                    .json();
                let build_id: buildstate_domain::BuildId = claimed["version"]["build_id"]
                    .as_str()
                    .expect("build id")
                    .parse()
                    .expect("build id");
                resource
                    .get(
                        &dir.path().join(&task.resource),
                        &json!({"source": source, "version": claimed["version"]}),
                    )
                    .await
                    .json();
                std::fs::create_dir_all(dir.path().join("out")).expect("out");
                for script in repo_scripts(&task) {
                    failing_program(&dir.path().join(format!("repo/ci/{script}.sh")));
                }

                let ran = tokio::process::Command::new(&task.path)
                    .args(&task.args)
                    .current_dir(dir.path())
                    .env_clear()
                    .envs(&task.params)
                    .env("PATH", path_with(tools.path()))
                    .output()
                    .await
                    .unwrap_or_else(|error| panic!("{what}: run `{}`: {error}", task.path));
                let stdout = String::from_utf8_lossy(&ran.stdout);
                assert!(
                    stdout.contains(FAILURE_LINE),
                    "{what}: the command ran and its output is in the task's log: {stdout:?} {:?}",
                    String::from_utf8_lossy(&ran.stderr)
                );

                // Concourse picks the hook by the task's exit status.
                let (hook, build_status) = if ran.status.success() {
                    (task.on_success.as_ref(), "succeeded")
                } else {
                    (task.on_failure.as_ref(), "failed")
                };
                assert_eq!(
                    ran.status.code(),
                    Some(FAILURE_CODE),
                    "{what}: the task fails with its command's status"
                );
                let hook = hook.unwrap_or_else(|| panic!("{what}: has an `on_failure` put"));
                let mut hook_resource = Resource::new(&app).in_concourse_build("4711");
                hook_resource.set_env("BUILD_STATUS", build_status);
                hook_resource
                    .put(dir.path(), &json!({"source": source, "params": hook}))
                    .await
                    .json();

                assert_failed_at(&app, &build_id, task.stage, true, &what).await;
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 6,
        "every stage task of every example was run: {checked}"
    );
}

on_both_backends!(every_example_stage_that_fails_reports_failed);
