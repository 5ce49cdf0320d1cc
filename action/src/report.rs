//! `command: report`: reports a stage `in_progress`, `completed` or `failed` (with its message
//! and outputs) and sets the build's outputs.

use std::io::Read;

use buildstate_client::failure::exit;
use buildstate_client::message::read_message_file;
use buildstate_client::Client;
use buildstate_domain::wire::ReportTransition;
use buildstate_domain::{BuildStatus, ReportStatus};

use crate::inputs::{Inputs, Summary};
use crate::step::{Failure, Step};
use crate::summary;

impl Step<'_, '_> {
    pub(crate) async fn report(
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
}
