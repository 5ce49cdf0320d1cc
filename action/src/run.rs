//! One step of the action, from the runner's environment to printed lines, output and summary
//! files and an exit code. The API calls go through `buildstate-client`; the rules are the
//! server's; this module only decides what to print and write.

use std::io::{Read, Write};
use std::path::PathBuf;

use buildstate_client::api::insecure_host;
use buildstate_client::env::EnvMap;
use buildstate_client::failure::{self, exit, Hints};
use buildstate_client::gate_wait::{self, GateOutcome, NotWaited, WaitPolicy};
use buildstate_client::message::read_message_file;
use buildstate_client::{Client, ClientConfig, ClientError};
use buildstate_domain::wire::{Build, BuildQuery, HistoryEntry, ReportTransition, StartBuild};
use buildstate_domain::{BuildId, BuildStatus, EventKind, GateDecision, ReportStatus, StateCode};

use crate::commands::{Level, Log};
use crate::commit_status;
use crate::files::{OutputFile, SummaryFile};
use crate::github::Run;
use crate::inputs::{self, BuildRef, Command, Inputs, OnBackoff, Summary};
use crate::summary;

/// How the failure sentences tell an action user to fix the URL or the token.
const HINTS: Hints<'static> = Hints {
    no_token: "set the `api-token` input, e.g. `api-token: ${{ secrets.BUILDSTATE_TOKEN }}`",
    bad_token: "replace the secret given as `api-token` with a valid token (`bldst token create`)",
    api_url: "the `api-url` input",
    allow_insecure: "set the input `allow-insecure: true`",
    field: input_of_field,
};

/// The input that sets a request field (`max_retries` is input `max-retries`).
fn input_of_field(field: &str) -> String {
    format!("input `{}`", field.replace('_', "-"))
}

/// Why a step failed: one sentence for the `::error` annotation and the exit code.
#[derive(Debug)]
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code,
        }
    }

    fn api(attempted: &str, error: &ClientError) -> Self {
        Failure::new(
            failure::exit_code(error),
            format!("{attempted}: {}", failure::describe(error, &HINTS)),
        )
    }
}

impl From<inputs::InputError> for Failure {
    fn from(error: inputs::InputError) -> Self {
        Failure::new(exit::USAGE, error.to_string())
    }
}

/// Runs one step of the action in the environment `env` (the runner's: `INPUT_*`, `GITHUB_*`,
/// `RUNNER_DEBUG`), printing to `stdout` and returning the exit code. `stdin` is read only for
/// `message-file: -`; nothing is printed on `stderr` (the runner shows both, and workflow
/// commands are read from stdout).
///
/// On every path: the tokens are masked before anything else is printed, groups are closed,
/// and a failure is one `::error title=buildstate::` annotation with a non-zero code; outputs
/// written before the failure stay valid.
pub async fn run(
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    _stderr: &mut dyn Write,
    env: &EnvMap,
) -> u8 {
    let mut log = Log::new(stdout, env.get("RUNNER_DEBUG").as_deref() == Some("1"));
    for secret in inputs::secrets(env) {
        log.add_mask(&secret);
    }
    let mut step = Step {
        outputs: OutputFile::new(env.get("GITHUB_OUTPUT").map(PathBuf::from)),
        summary: SummaryFile::new(env.get("GITHUB_STEP_SUMMARY").map(PathBuf::from)),
        run: Run::from_env(env),
        env,
        log: &mut log,
    };
    let code = match step.execute(stdin).await {
        Ok(code) => code,
        Err(failure) => {
            step.log.annotate(Level::Error, &failure.message);
            failure.code
        }
    };
    log.finish();
    code
}

struct Step<'l, 'o> {
    log: &'l mut Log<'o>,
    outputs: OutputFile,
    summary: SummaryFile,
    run: Run,
    env: &'l EnvMap,
}

impl Step<'_, '_> {
    async fn execute(&mut self, stdin: &mut dyn Read) -> Result<u8, Failure> {
        let inputs = inputs::parse(self.env)?;
        if !self.outputs.is_set() {
            self.log.annotate(
                Level::Warning,
                "GITHUB_OUTPUT is not set, so this step has no outputs: run the action from a workflow",
            );
        }
        let mut config = ClientConfig::new(inputs.api_url.clone(), Some(inputs.api_token.clone()));
        config.max_attempts = 3;
        config.allow_insecure = inputs.allow_insecure;
        if inputs.allow_insecure {
            if let Some(host) = insecure_host(&inputs.api_url) {
                self.log.annotate(
                    Level::Warning,
                    &format!(
                        "sending the token over plain http:// to `{host}` (`allow-insecure: true`): \
                         anyone on the network path can read it; prefer an https:// `api-url`"
                    ),
                );
            }
        }
        let client = Client::new(config).map_err(|error| {
            Failure::new(
                failure::exit_code(&error),
                failure::describe(&error, &HINTS),
            )
        })?;
        self.log.debug(&format!(
            "buildstate {} against {}",
            inputs.command.as_str(),
            client.base_url()
        ));
        match inputs.command {
            Command::Start => self.start(&client, &inputs).await,
            Command::Report => self.report(&client, &inputs, stdin).await,
            Command::Gate => self.gate(&client, &inputs).await,
            Command::Get => self.get(&client, &inputs).await,
        }
    }

    // ----- commands -----------------------------------------------------------------------

    async fn start(&mut self, client: &Client, inputs: &Inputs) -> Result<u8, Failure> {
        let (Some(platform), Some(image_type)) = (&inputs.platform, &inputs.image_type) else {
            return Err(Failure::new(exit::USAGE, "input `platform`: required"));
        };
        let key = inputs
            .key
            .clone()
            .or_else(|| self.run.default_key(platform, image_type));
        let request = StartBuild {
            platform: platform.clone(),
            image_type: image_type.clone(),
            description: inputs.description.clone(),
            key: key.clone(),
            labels: inputs.labels.clone(),
            max_retries: inputs.max_retries,
        };
        self.log.group("buildstate: start");
        let started = client
            .start_build(&request)
            .await
            .map_err(|error| Failure::api("cannot start the build", &error))?;
        let build = &started.build;
        self.set("resumed", if started.resumed { "true" } else { "false" })?;
        self.set_build_outputs(build)?;
        let key_text = key.map(|key| format!(" (key `{key}`)")).unwrap_or_default();
        if started.resumed {
            self.log.line(&format!(
                "resumed build `{}`{key_text} at stage {} ({}), {}, stage attempt {}",
                build.id,
                build.state,
                build.state_name,
                build.status,
                summary::attempt(build)
            ));
        } else {
            self.log
                .line(&format!("started build `{}`{key_text}", build.id));
        }
        let history = self.history(client, &build.id).await?;
        if inputs.summary != Summary::None {
            let context = summary::Context {
                resumed: Some(started.resumed),
                ..self.summary_context(inputs, build)
            };
            self.write_summary(&summary::ladder(build, &history, &context))?;
        }
        self.post_commit_status(inputs, build).await?;
        Ok(exit::SUCCESS)
    }

    async fn report(
        &mut self,
        client: &Client,
        inputs: &Inputs,
        stdin: &mut dyn Read,
    ) -> Result<u8, Failure> {
        let (Some(state), Some(status)) = (inputs.state, inputs.status) else {
            return Err(Failure::new(exit::USAGE, "input `state`: required"));
        };
        let message = match &inputs.message_file {
            Some(path) => Some(read_message_file(path, stdin).map_err(|problem| {
                Failure::new(exit::USAGE, format!("input `message-file`: {problem}"))
            })?),
            None => inputs.message.clone(),
        };
        let id = self.resolve(client, inputs).await?;
        self.log
            .group(&format!("buildstate: report stage {state} {status}"));
        // The run identity that holds the stage's lease: this run attempt. An `in_progress`
        // report claims the stage for it; its `completed` or `failed` report releases it.
        let source = self.run.source(self.env);
        let report = ReportTransition {
            message,
            expected_state: inputs.expected_state,
            source: source.clone(),
            run: source.clone(),
            outputs: inputs.outputs.clone(),
            ..ReportTransition::new(state, status)
        };
        let idempotency_key = self.run.idempotency_key(&id, state, status);
        if let Some(key) = &idempotency_key {
            self.log.debug(&format!("Idempotency-Key: {key}"));
        }
        let result = client
            .report_transition(&id, &report, idempotency_key.as_deref())
            .await
            .map_err(|error| {
                Failure::api(
                    &format!("cannot report stage {state} `{status}` on build `{id}`"),
                    &error,
                )
            })?;
        let build = &result.build;
        self.set("changed", if result.changed { "true" } else { "false" })?;
        self.set_build_outputs(build)?;
        self.log.line(&format!(
            "build `{id}`: {} — now at stage {} ({}), {}",
            result.note, build.state, build.state_name, build.status
        ));
        if let Some(lease) = build
            .lease
            .as_ref()
            .filter(|lease| Some(&lease.holder) == source.as_ref())
        {
            self.log.line(&format!(
                "this run holds stage {} until {} (fence {}); its `completed` or `failed` report releases it",
                lease.stage, lease.expires_at.to_rfc3339(), lease.fence
            ));
        }
        if !inputs.outputs.is_empty() {
            self.log.line(&format!(
                "recorded outputs: {}",
                inputs
                    .outputs
                    .as_map()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let ladder = inputs.summary == Summary::Ladder
            || (inputs.summary == Summary::Auto
                && (status == ReportStatus::Failed
                    || matches!(build.status, BuildStatus::Completed | BuildStatus::Blocked)));
        if ladder {
            let history = self.history(client, &id).await?;
            let context = self.summary_context(inputs, build);
            self.write_summary(&summary::ladder(build, &history, &context))?;
        } else if inputs.summary == Summary::Auto {
            self.write_summary(&format!(
                "- buildstate `{id}`: stage {state} ({}) reported `{status}`: {}\n",
                state.default_name(),
                result.note.replace('\n', " ")
            ))?;
        }
        self.post_commit_status(inputs, build).await?;
        Ok(exit::SUCCESS)
    }

    async fn gate(&mut self, client: &Client, inputs: &Inputs) -> Result<u8, Failure> {
        let Some(stage) = inputs.state else {
            return Err(Failure::new(exit::USAGE, "input `state`: required"));
        };
        let id = self.resolve(client, inputs).await?;
        let policy = WaitPolicy {
            no_wait: inputs.on_backoff == OnBackoff::Fail,
            max_wait: inputs.max_wait,
        };
        // Asked as this run attempt: if it holds the stage's lease it may run; while another
        // run holds it, the answer is `wait`, like a backoff.
        let run_identity = self.run.source(self.env);
        let log = &mut *self.log;
        let outcome = gate_wait::gate_until_runnable_for_run(
            client,
            &id,
            stage,
            run_identity.as_deref(),
            policy,
            &mut |answer, wait| {
                log.line(&format!(
                    "stage {stage} must wait: {}; asking again in {}s",
                    answer.reason,
                    wait.as_secs()
                ));
            },
        )
        .await
        .map_err(|error| {
            Failure::api(
                &format!("cannot ask the gate for stage {stage} of build `{id}`"),
                &error,
            )
        })?;
        let answer = match &outcome {
            GateOutcome::Run(answer)
            | GateOutcome::Skip(answer)
            | GateOutcome::Stop(answer)
            | GateOutcome::NotWaited(answer, _) => answer.clone(),
        };
        let skip = answer.decision != GateDecision::Run;
        self.set("decision", answer.decision.as_str())?;
        self.set("skip", if skip { "true" } else { "false" })?;
        self.set(
            "wait-seconds",
            &answer
                .wait_seconds
                .map(|s| s.to_string())
                .unwrap_or_default(),
        )?;
        let build = client
            .get_build(&id)
            .await
            .map_err(|error| Failure::api(&format!("cannot read build `{id}`"), &error))?;
        self.set_build_outputs(&build)?;
        let stage_words = format!("stage {stage} ({})", stage.default_name());
        match outcome {
            GateOutcome::Run(_) => {
                self.log
                    .line(&format!("{stage_words}: run — {}", answer.reason));
                self.gate_summary(inputs, &id, &format!("{stage_words}: **run**"))?;
                Ok(exit::SUCCESS)
            }
            GateOutcome::Skip(_) => {
                let history = self.history(client, &id).await?;
                let done_in = done_in(&history, stage);
                self.log.line(&format!(
                    "{stage_words}: skip — {}{}",
                    answer.reason,
                    done_in
                        .as_ref()
                        .map(|(how, source)| format!(" ({how} in {source})"))
                        .unwrap_or_default()
                ));
                let link = done_in
                    .map(|(how, source)| format!(" — {how} in {}", summary::source_link(&source)))
                    .unwrap_or_default();
                self.gate_summary(inputs, &id, &format!("{stage_words}: **skip**{link}"))?;
                Ok(exit::SUCCESS)
            }
            GateOutcome::Stop(_) if answer.build_status == BuildStatus::Completed => {
                self.log.annotate(
                    Level::Notice,
                    &format!("build `{id}` is completed: {stage_words} has nothing to do"),
                );
                self.gate_summary(
                    inputs,
                    &id,
                    &format!("{stage_words}: **stop** (build completed)"),
                )?;
                Ok(exit::SUCCESS)
            }
            GateOutcome::Stop(_) => {
                self.gate_summary(
                    inputs,
                    &id,
                    &format!("{stage_words}: **stop** — {}", answer.reason),
                )?;
                Err(Failure::new(
                    exit::GATE_STOP,
                    format!(
                        "{stage_words} of build `{id}` must not run: {}",
                        answer.reason
                    ),
                ))
            }
            GateOutcome::NotWaited(_, why) => {
                let seconds = answer.wait_seconds.unwrap_or(0);
                let fix = match why {
                    NotWaited::NoWait => "set `on-backoff: wait` to wait it out".to_owned(),
                    NotWaited::LongerThanMaxWait => format!(
                        "raise `max-wait` (now {}s) or re-run the job later",
                        inputs.max_wait.as_secs()
                    ),
                };
                self.gate_summary(inputs, &id, &format!("{stage_words}: **wait** {seconds}s"))?;
                Err(Failure::new(
                    exit::GATE_WAIT,
                    format!(
                        "{stage_words} of build `{id}` cannot run for {seconds}s more: {}; {fix}",
                        answer.reason
                    ),
                ))
            }
        }
    }

    async fn get(&mut self, client: &Client, inputs: &Inputs) -> Result<u8, Failure> {
        let id = self.resolve(client, inputs).await?;
        let build = client
            .get_build(&id)
            .await
            .map_err(|error| Failure::api(&format!("cannot read build `{id}`"), &error))?;
        self.set_build_outputs(&build)?;
        self.log.line(&format!(
            "build `{id}`: stage {} ({}), {}, stage attempt {}",
            build.state,
            build.state_name,
            build.status,
            summary::attempt(&build)
        ));
        if inputs.summary != Summary::None {
            let history = self.history(client, &id).await?;
            let context = self.summary_context(inputs, &build);
            self.write_summary(&summary::ladder(&build, &history, &context))?;
        }
        self.post_commit_status(inputs, &build).await?;
        Ok(exit::SUCCESS)
    }

    // ----- helpers ------------------------------------------------------------------------

    /// The build the step is about: `build-id`, or the newest build with `key`.
    async fn resolve(&mut self, client: &Client, inputs: &Inputs) -> Result<BuildId, Failure> {
        match &inputs.build {
            Some(BuildRef::Id(id)) => Ok(id.clone()),
            Some(BuildRef::Key(key)) => {
                let query = BuildQuery {
                    key: Some(key.to_string()),
                    limit: Some(1),
                    ..BuildQuery::default()
                };
                let page = client.list_builds(&query).await.map_err(|error| {
                    Failure::api(
                        &format!("cannot look up the build with key `{key}`"),
                        &error,
                    )
                })?;
                let build = page.builds.into_iter().next().ok_or_else(|| {
                    Failure::new(
                        exit::NOT_FOUND,
                        format!("no build has the key `{key}`: run the action with `command: start` first"),
                    )
                })?;
                self.set("build-id", build.id.as_str())?;
                Ok(build.id)
            }
            None => Err(Failure::new(exit::USAGE, "input `build-id`: required")),
        }
    }

    /// Every history entry of the build, page by page.
    async fn history(
        &mut self,
        client: &Client,
        id: &BuildId,
    ) -> Result<Vec<HistoryEntry>, Failure> {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page = client
                .history(id, after, buildstate_domain::limits::HISTORY_PAGE_MAX)
                .await
                .map_err(|error| {
                    Failure::api(&format!("cannot read the history of build `{id}`"), &error)
                })?;
            entries.extend(page.entries);
            match page.next_after {
                Some(next) => after = next,
                None => return Ok(entries),
            }
        }
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), Failure> {
        let value = self.log.redact(value);
        self.log.debug(&format!("output {name}={value}"));
        self.outputs
            .set(name, &value)
            .map_err(|problem| Failure::new(exit::FAILURE, problem))
    }

    /// The outputs every command sets from the build.
    fn set_build_outputs(&mut self, build: &Build) -> Result<(), Failure> {
        self.set("build-id", build.id.as_str())?;
        self.set("state", &build.state.to_string())?;
        self.set("state-name", &build.state_name)?;
        self.set("status", build.status.as_str())?;
        self.set("attempt", &summary::attempt(build).to_string())?;
        self.set("completed", &json(&summary::completed_codes(build)))?;
        self.set("pending", &json(&summary::pending_codes(build)))?;
        self.set("outputs", &stage_outputs(build))?;
        self.set("dashboard-url", &self.dashboard_url_of(build))?;
        Ok(())
    }

    fn dashboard_url_of(&self, build: &Build) -> String {
        dashboard_url(self.env, &build.id)
    }

    fn summary_context(&self, _inputs: &Inputs, build: &Build) -> summary::Context {
        summary::Context {
            dashboard_url: Some(self.dashboard_url_of(build)),
            source: self.run.source(self.env),
            run_attempt: self.run.run_attempt.clone(),
            resumed: None,
        }
    }

    fn gate_summary(&mut self, inputs: &Inputs, id: &BuildId, line: &str) -> Result<(), Failure> {
        match inputs.summary {
            Summary::None => Ok(()),
            _ => self.write_summary(&format!("- buildstate `{id}`: {line}\n")),
        }
    }

    fn write_summary(&mut self, markdown: &str) -> Result<(), Failure> {
        let markdown = self.log.redact(markdown);
        self.summary
            .append(&markdown)
            .map_err(|problem| Failure::new(exit::FAILURE, problem))
    }

    /// Posts the commit status when asked to. A 403 is a warning; other failures fail the step
    /// (the buildstate report itself has been recorded, and the message says so).
    async fn post_commit_status(&mut self, inputs: &Inputs, build: &Build) -> Result<(), Failure> {
        if !inputs.commit_status {
            return Ok(());
        }
        let (Some(repository), Some(sha), Some(token)) = (
            self.run.repository.clone(),
            self.run.sha.clone(),
            inputs.github_token.clone(),
        ) else {
            return Err(Failure::new(
                exit::USAGE,
                "input `commit-status`: needs GITHUB_REPOSITORY and GITHUB_SHA, which only a workflow run sets",
            ));
        };
        let target = commit_status::Target {
            api_url: self
                .run
                .api_url
                .clone()
                .unwrap_or_else(|| "https://api.github.com".to_owned()),
            repository,
            sha,
            token,
        };
        let status = commit_status::for_build(build, Some(self.dashboard_url_of(build)));
        self.log.debug(&format!(
            "commit status {:?} `{}` on {}: {}",
            status.state, status.context, target.sha, status.description
        ));
        match commit_status::post(&target, &status).await {
            Ok(()) => {
                self.log.line(&format!(
                    "commit status `{}`: {}",
                    status.context, status.description
                ));
                Ok(())
            }
            Err(commit_status::PostError::Forbidden(message)) => {
                self.log.annotate(
                    Level::Warning,
                    &format!(
                        "{message}; the commit status was not set (a pull request from a fork gets a \
                         read-only token; otherwise give the job `permissions: statuses: write`)"
                    ),
                );
                Ok(())
            }
            Err(commit_status::PostError::Failed(message)) => Err(Failure::new(
                exit::FAILURE,
                format!("{message} (the buildstate change itself was recorded); check `github-token` and GITHUB_API_URL, or set `commit-status: false`"),
            )),
        }
    }
}

/// The build's page for people: `dashboard-url` with `{id}` replaced, else the server's own
/// dashboard (`/dashboard/#/builds/ID`).
fn dashboard_url(env: &EnvMap, id: &BuildId) -> String {
    match inputs::raw(env, "dashboard-url") {
        Some(template) if template.contains("{id}") => template.replace("{id}", id.as_str()),
        Some(base) => format!("{}/{id}", base.trim_end_matches('/')),
        None => buildstate_client::api::dashboard_url(
            &inputs::raw(env, "api-url").unwrap_or_default(),
            id,
        ),
    }
}

/// How and where `stage` was finished, from the history: ("completed", source) or
/// ("jumped past", source).
fn done_in(history: &[HistoryEntry], stage: StateCode) -> Option<(&'static str, String)> {
    let entry = summary::finished_by(history, stage)?;
    let how = if entry.kind == EventKind::Skipped {
        "jumped past"
    } else {
        "completed"
    };
    Some((how, entry.source.clone()?))
}

/// The build's stage outputs as a JSON object of `name: value`, for `fromJSON(...)`.
fn stage_outputs(build: &Build) -> String {
    let values: std::collections::BTreeMap<&str, &str> = build
        .outputs
        .iter()
        .map(|(key, output)| (key.as_str(), output.value.as_str()))
        .collect();
    json(&values)
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
