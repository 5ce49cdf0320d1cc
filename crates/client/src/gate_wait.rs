//! Gate-then-wait: ask the gate whether a stage may run and, while it is backing off after a
//! failure or another run holds it, wait and ask again — within a limit. The front ends decide what to print and how
//! to exit for each outcome.

use std::time::Duration;

use buildstate_domain::wire::GateAnswer;
use buildstate_domain::{BuildId, GateDecision, StateCode};

use crate::api::{Client, ClientError};

/// How long to wait out a backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    /// Do not wait at all: a backoff ends the loop with [`GateOutcome::NotWaited`].
    pub no_wait: bool,
    /// The most time spent waiting, over all backoffs.
    pub max_wait: Duration,
}

/// Why a backoff was not waited out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotWaited {
    /// The policy says not to wait.
    NoWait,
    /// The next wait would go past the policy's `max_wait`.
    LongerThanMaxWait,
}

/// Where gate-then-wait ended.
#[derive(Debug, Clone, PartialEq)]
pub enum GateOutcome {
    /// Run the stage.
    Run(GateAnswer),
    /// The stage already completed: skip it.
    Skip(GateAnswer),
    /// Do not run: the build is blocked, cancelled or completed, or an earlier stage failed.
    Stop(GateAnswer),
    /// The stage is still backing off and the policy said not to wait (longer).
    NotWaited(GateAnswer, NotWaited),
}

/// Asks the gate for `stage` of build `id` until the answer is not "wait", or until the wait
/// policy gives up. Before each wait, `on_wait` is told the answer and how long the wait is.
///
/// Fails only when the API call fails.
pub async fn gate_until_runnable(
    client: &Client,
    id: &BuildId,
    stage: StateCode,
    policy: WaitPolicy,
    on_wait: &mut dyn FnMut(&GateAnswer, Duration),
) -> Result<GateOutcome, ClientError> {
    gate_until_runnable_for_run(client, id, stage, None, policy, on_wait).await
}

/// [`gate_until_runnable`] asked by run `run`: it also waits (within the policy) while another
/// run holds the stage's lease, and runs at once if `run` holds it.
pub async fn gate_until_runnable_for_run(
    client: &Client,
    id: &BuildId,
    stage: StateCode,
    run: Option<&str>,
    policy: WaitPolicy,
    on_wait: &mut dyn FnMut(&GateAnswer, Duration),
) -> Result<GateOutcome, ClientError> {
    let mut waited = Duration::ZERO;
    loop {
        let answer = client.gate_for_run(id, stage, run).await?;
        match answer.decision {
            GateDecision::Run => return Ok(GateOutcome::Run(answer)),
            GateDecision::Skip => return Ok(GateOutcome::Skip(answer)),
            GateDecision::Stop => return Ok(GateOutcome::Stop(answer)),
            GateDecision::Wait => {
                let wait = Duration::from_secs(answer.wait_seconds.unwrap_or(1).max(1));
                if policy.no_wait {
                    return Ok(GateOutcome::NotWaited(answer, NotWaited::NoWait));
                }
                if waited + wait > policy.max_wait {
                    return Ok(GateOutcome::NotWaited(answer, NotWaited::LongerThanMaxWait));
                }
                on_wait(&answer, wait);
                tokio::time::sleep(wait).await;
                waited += wait;
            }
        }
    }
}
