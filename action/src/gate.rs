//! `command: gate`: asks whether a stage should run (waiting out a backoff when allowed) and
//! sets `decision` and `skip` for the step's `if:`.

use buildstate_client::failure::exit;
use buildstate_client::gate_wait::{self, GateOutcome, NotWaited, WaitPolicy};
use buildstate_client::Client;
use buildstate_domain::wire::HistoryEntry;
use buildstate_domain::{BuildStatus, EventKind, GateDecision, StateCode};

use crate::commands::Level;
use crate::inputs::{Inputs, OnBackoff};
use crate::step::{Failure, Step};
use crate::summary;

impl Step<'_, '_> {
    pub(crate) async fn gate(&mut self, client: &Client, inputs: &Inputs) -> Result<u8, Failure> {
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
