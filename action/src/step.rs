//! What every command of a step shares: the step's log, output and summary files and run
//! identity ([`Step`]), why a step failed ([`Failure`]), and the helpers the commands call
//! (resolving the build, reading its history, setting outputs, the summary, the commit status).

use buildstate_client::env::EnvMap;
use buildstate_client::failure::{self, exit, Hints};
use buildstate_client::{Client, ClientError};
use buildstate_domain::wire::{Build, BuildQuery, HistoryEntry};
use buildstate_domain::BuildId;

use crate::commands::{Level, Log};
use crate::commit_status;
use crate::files::{OutputFile, SummaryFile};
use crate::github::Run;
use crate::inputs::{self, BuildRef, Inputs, Summary};
use crate::summary;

/// How the failure sentences tell an action user to fix the URL or the token.
const HINTS: Hints<'static> = Hints {
    no_token: "set the `api-token` input, e.g. `api-token: ${{ secrets.BUILDSTATE_TOKEN }}`",
    bad_token: "replace the secret given as `api-token` with a valid token (`bldst token create`)",
    api_url: "the `api-url` input",
};

/// Why a step failed: one sentence for the `::error` annotation and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code,
        }
    }

    pub(crate) fn api(attempted: &str, error: &ClientError) -> Self {
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

/// One step as it runs: where it prints and writes, and the run it belongs to.
pub(crate) struct Step<'l, 'o> {
    pub(crate) log: &'l mut Log<'o>,
    pub(crate) outputs: OutputFile,
    pub(crate) summary: SummaryFile,
    pub(crate) run: Run,
    pub(crate) env: &'l EnvMap,
}

impl Step<'_, '_> {
    /// The build the step is about: `build-id`, or the newest build with `key`.
    pub(crate) async fn resolve(
        &mut self,
        client: &Client,
        inputs: &Inputs,
    ) -> Result<BuildId, Failure> {
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
    pub(crate) async fn history(
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

    pub(crate) fn set(&mut self, name: &str, value: &str) -> Result<(), Failure> {
        let value = self.log.redact(value);
        self.log.debug(&format!("output {name}={value}"));
        self.outputs
            .set(name, &value)
            .map_err(|problem| Failure::new(exit::FAILURE, problem))
    }

    /// The outputs every command sets from the build.
    pub(crate) fn set_build_outputs(&mut self, build: &Build) -> Result<(), Failure> {
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

    pub(crate) fn dashboard_url_of(&self, build: &Build) -> String {
        dashboard_url(self.env, &build.id)
    }

    pub(crate) fn summary_context(&self, _inputs: &Inputs, build: &Build) -> summary::Context {
        summary::Context {
            dashboard_url: Some(self.dashboard_url_of(build)),
            source: self.run.source(self.env),
            run_attempt: self.run.run_attempt.clone(),
            resumed: None,
        }
    }

    pub(crate) fn gate_summary(
        &mut self,
        inputs: &Inputs,
        id: &BuildId,
        line: &str,
    ) -> Result<(), Failure> {
        match inputs.summary {
            Summary::None => Ok(()),
            _ => self.write_summary(&format!("- buildstate `{id}`: {line}\n")),
        }
    }

    pub(crate) fn write_summary(&mut self, markdown: &str) -> Result<(), Failure> {
        let markdown = self.log.redact(markdown);
        self.summary
            .append(&markdown)
            .map_err(|problem| Failure::new(exit::FAILURE, problem))
    }

    /// Posts the commit status when asked to. A 403 is a warning; other failures fail the step
    /// (the buildstate report itself has been recorded, and the message says so).
    pub(crate) async fn post_commit_status(
        &mut self,
        inputs: &Inputs,
        build: &Build,
    ) -> Result<(), Failure> {
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
