//! `in`: writes the tracked build's record and gate answers into the step's directory, for
//! `load_var`, for one-line shell tests, and for `across`. Every file is described in
//! `resource/README.md`.
//!
//! The files describe the build as it is now (its history is append-only; the version only
//! names the transition that triggered the get), so a re-run skips what completed meanwhile.

use std::path::Path;

use buildstate_client::api::{Client, ClientError};
use buildstate_client::env::EnvMap;
use buildstate_client::lease::env_lines;
use buildstate_domain::wire::{Build, ErrorCode};
use buildstate_domain::{gate, BuildId, StateCode};
use serde_json::{json, Value};

use crate::connection::{concourse_run, describe};
use crate::log::Log;
use crate::schema::{GivenVersion, InRequest, Version};

/// Runs `in` into `directory`.
pub async fn get(
    client: &Client,
    request: &InRequest,
    directory: &Path,
    env: &EnvMap,
    log: &Log,
) -> Result<Value, String> {
    let source = &request.source;
    source.validate()?;
    log.set_debug(source.debug);
    let version = match &request.version {
        Some(GivenVersion::Known(version)) => version,
        Some(GivenVersion::Unknown(map)) => {
            return Err(format!(
                "the version {} was not emitted by this resource (it needs build_id, seq, state and event)",
                serde_json::to_string(map).unwrap_or_default()
            ))
        }
        None => return Err("`in` needs a version; run `check` first".to_owned()),
    };
    let id: BuildId = version
        .build_id
        .parse()
        .map_err(|_| format!("the version's build id `{}` is not valid", version.build_id))?;
    let build = client.get_build(&id).await.map_err(|error| match &error {
        ClientError::Api {
            code: ErrorCode::BuildNotFound,
            ..
        } => format!(
            "build `{id}` of version seq {} no longer exists on the server",
            version.seq
        ),
        _ => describe(&error),
    })?;
    if version.seq() > build.last_seq {
        return Err(format!(
            "build `{id}` has no transition {} (its newest is {}): the server no longer has this version",
            version.seq, build.last_seq
        ));
    }
    log.debug(|| format!("writing build `{id}` into {}", directory.display()));
    write_files(directory, &build, version, concourse_run(env).as_deref())?;
    Ok(json!({
        "version": version,
        "metadata": metadata(&build, &source.api_url),
    }))
}

/// The `metadata` list Concourse shows beside a version.
pub fn metadata(build: &Build, api_url: &str) -> Value {
    let attempt = attempt(build);
    let mut pairs = json!([
        {"name": "build_id", "value": build.id.to_string()},
        {"name": "state", "value": build.state.to_string()},
        {"name": "state_name", "value": build.state_name},
        {"name": "status", "value": build.status.as_str()},
        {"name": "attempt", "value": attempt.to_string()},
        {"name": "dashboard", "value": buildstate_client::api::dashboard_url(api_url, &build.id)},
    ]);
    // What the build's latest resume saved, as the server recorded it.
    if let (Some(resume), Some(pairs)) = (&build.last_resume, pairs.as_array_mut()) {
        pairs.push(json!({"name": "resumed", "value": resume.describe()}));
    }
    pairs
}

/// The attempt at the build's state that runs next (or runs now): failures so far plus one.
fn attempt(build: &Build) -> u32 {
    build.failures + 1
}

fn write_files(
    directory: &Path,
    build: &Build,
    version: &Version,
    run: Option<&str>,
) -> Result<(), String> {
    let write = |name: &str, contents: &str| {
        let path = directory.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| format!("cannot create `{}`: {error}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .map_err(|error| format!("cannot write `{}`: {error}", path.display()))
    };
    write("build.json", &pretty(build))?;
    write("version.json", &pretty(version))?;
    write("id", &line(build.id.as_str()))?;
    write("state", &line(&build.state.to_string()))?;
    write("state_name", &line(&build.state_name))?;
    write("status", &line(build.status.as_str()))?;
    write("attempt", &line(&attempt(build).to_string()))?;
    write(
        "key",
        &line(build.key.as_ref().map_or("", |key| key.as_str())),
    )?;
    let now = chrono::Utc::now();
    let progress = build.progress();
    let mut gates = serde_json::Map::new();
    let (mut completed, mut pending) = (Vec::new(), Vec::new());
    for stage in StateCode::all() {
        // Asked as this Concourse build: the stage it holds reads `run`, a stage another run
        // holds reads `wait`.
        let decision = gate(&progress, stage, run, now).decision;
        write(&format!("gate/{stage}"), &line(decision.as_str()))?;
        gates.insert(stage.to_string(), json!(decision.as_str()));
        if build.has_completed(stage) {
            completed.push(stage);
        } else {
            pending.push(stage);
        }
    }
    write("gate.json", &pretty(&Value::Object(gates)))?;
    write("completed.json", &pretty(&completed))?;
    write("pending.json", &pretty(&pending))?;
    write("completed", &codes(&completed))?;
    write("pending", &codes(&pending))?;
    // What the completed stages produced, for a resumed job's tasks: one file per key (the
    // value and a newline, for `$(cat ...)`), the map with the stage that set each key, and
    // `KEY=value` lines for `. outputs.env`.
    let outputs_dir = directory.join("outputs");
    std::fs::create_dir_all(&outputs_dir)
        .map_err(|error| format!("cannot create `{}`: {error}", outputs_dir.display()))?;
    for (key, output) in &build.outputs {
        write(&format!("outputs/{key}"), &line(&output.value))?;
    }
    write("outputs.json", &pretty(&build.outputs))?;
    write("outputs.env", &env_lines(&build.outputs))?;
    write("lease.json", &pretty(&build.lease))?;
    write("resume.json", &pretty(&build.last_resume))?;
    // The policy the build started with (`{"rules": []}` without one), for tasks that show it
    // or decide by it; `build.json` has it too.
    write(
        "retry_policy.json",
        &pretty(&build.retry_policy.clone().unwrap_or_default()),
    )?;
    Ok(())
}

/// `text` and a newline.
fn line(text: &str) -> String {
    format!("{text}\n")
}

/// One code per line.
fn codes(codes: &[StateCode]) -> String {
    codes.iter().map(|code| format!("{code}\n")).collect()
}

/// Pretty JSON with a final newline.
fn pretty<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
