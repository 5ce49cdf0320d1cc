//! The load: N clients, each with its own keep-alive connection and its own build, sending
//! transition reports back to back for a warm-up and then a measured window.
//!
//! Every report of the cycle is one the rules accept and one that writes: per stage S of 0..95,
//! `in_progress S`, `failed S` (a retry is allowed: backoff is zero, 100 failures allowed),
//! `completed S` — each locks the build row, appends a history row and updates the build row.
//! After stage 95 the build stands at 100 and an operator reset takes it back to 0 (one request
//! in 61, the same kind of write, kept out of the latency figures), so a client never runs out
//! of work and never touches another client's row. The [`ReportKind`] decides what the reports
//! carry besides: nothing, outputs on every completion, or the client's run identity (so every
//! `in_progress` claims a lease and the other two release it).
//!
//! The heartbeat load ([`run_heartbeats`]) keeps many leased stages alive, each heartbeating at
//! a fixed interval, spread evenly so the server sees a steady rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::options::ReportKind;

/// Latencies are recorded in microseconds, up to a minute, to 3 significant figures.
const LATENCY_MAX_MICROS: u64 = 60_000_000;
/// No request may take longer than this; one that does counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Error descriptions kept per phase, for the report.
const ERRORS_KEPT: usize = 5;

/// When a phase's clients start, start measuring, and stop.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let measure_from = Instant::now() + warmup;
        Window {
            measure_from,
            end: measure_from + duration,
        }
    }

    pub fn measured(&self) -> Duration {
        self.end.duration_since(self.measure_from)
    }
}

/// What one phase measured.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Accepted transition reports that started and finished inside the measured window.
    pub transitions: u64,
    /// Their latencies, in microseconds.
    pub latency_micros: Histogram<u64>,
    /// Operator resets sent to start a new lap (any time during the phase).
    pub resets: u64,
    /// Non-2xx answers and transport failures (any time during the phase).
    pub errors: u64,
    pub first_errors: Vec<String>,
}

/// Where the clients send their reports: one server process, or several on one database.
#[derive(Debug, Clone)]
pub struct Target {
    /// Never empty.
    pub base_urls: Vec<String>,
    pub token: String,
}

impl Target {
    /// The process client `index` talks to: the processes in turn, as a round-robin load
    /// balancer spreads connections.
    pub fn base_url(&self, index: usize) -> &str {
        &self.base_urls[index % self.base_urls.len()]
    }

    fn authorization(&self) -> anyhow::Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .context("the admin token is not a valid header value")?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// A retry policy of 21 rules, one per stage, each allowing the cycle's failure (100 a
/// stage, no backoff) without `restart_from`: the largest policy a build may have, on reports
/// that follow the same cycle as the plain ones.
pub fn policy_of_21_rules() -> serde_json::Value {
    let rules: Vec<serde_json::Value> = (0..=100)
        .step_by(5)
        .map(|stage| {
            serde_json::json!({
                "stages": stage, "max_retries": 100, "backoff_base_secs": 0, "backoff_cap_secs": 0,
            })
        })
        .collect();
    serde_json::json!({ "rules": rules })
}

/// Starts one build per client (allowing 100 failures a stage) and returns their ids; for
/// [`ReportKind::Policy`] each with [`policy_of_21_rules`].
pub async fn create_builds(
    target: &Target,
    clients: u32,
    kind: ReportKind,
) -> anyhow::Result<Vec<String>> {
    let http = http_client()?;
    let mut ids = Vec::with_capacity(clients as usize);
    for client in 0..clients {
        let response = http
            .post(format!("{}/builds", target.base_url(client as usize)))
            .header(AUTHORIZATION, target.authorization()?)
            .json(&{
                let mut body = serde_json::json!({
                    "platform": "aws",
                    "image_type": "bench",
                    "description": format!("bldst-bench client {client}"),
                    "max_retries": 100,
                });
                if kind == ReportKind::Policy {
                    body["retry_policy"] = policy_of_21_rules();
                }
                body
            })
            .send()
            .await
            .context("failed to start a build")?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.context("unreadable build")?;
        anyhow::ensure!(
            status.is_success(),
            "starting a build failed: {status} {body}"
        );
        let id = body["build"]["id"]
            .as_str()
            .context("the started build has no id")?;
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// Runs one client per build until `window.end`, at most `max_requests` each.
pub async fn run_clients(
    target: &Target,
    build_ids: &[String],
    kind: ReportKind,
    window: Window,
    max_requests: u64,
    answered: Arc<AtomicU64>,
) -> anyhow::Result<LoadOutcome> {
    let mut clients = tokio::task::JoinSet::new();
    for (index, build_id) in build_ids.iter().enumerate() {
        let client = Client::new(target, build_id, kind, index)?;
        clients.spawn(client.run(window, max_requests, answered.clone()));
    }
    let mut total = LoadOutcome {
        transitions: 0,
        latency_micros: new_histogram()?,
        resets: 0,
        errors: 0,
        first_errors: Vec::new(),
    };
    while let Some(outcome) = clients.join_next().await {
        let outcome = outcome.context("a client task failed")??;
        total.transitions += outcome.transitions;
        total
            .latency_micros
            .add(&outcome.latency_micros)
            .context("latency histograms do not merge")?;
        total.resets += outcome.resets;
        total.errors += outcome.errors;
        for error in outcome.first_errors {
            if total.first_errors.len() < ERRORS_KEPT {
                total.first_errors.push(error);
            }
        }
    }
    Ok(total)
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3).context("histogram bounds")
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(1)
        .build()
        .context("failed to build the HTTP client")
}

/// One request of the cycle, its body serialized once up front.
#[derive(Debug, Clone)]
struct Step {
    url: String,
    body: String,
    is_transition: bool,
}

/// The requests of one lap: three reports per stage 0..95, then the reset to 0.
fn lap(
    base_url: &str,
    build_id: &str,
    kind: ReportKind,
    client: usize,
) -> Vec<(String, String, bool)> {
    let transitions = format!("{base_url}/builds/{build_id}/transitions");
    let mut steps = Vec::with_capacity(61);
    for stage in (0..=95).step_by(5) {
        for status in ["in_progress", "failed", "completed"] {
            let mut body = serde_json::json!({
                "state": stage,
                "status": status,
                "message": "bldst-bench report",
            });
            match kind {
                ReportKind::Plain | ReportKind::Policy => {}
                ReportKind::Outputs if status == "completed" => {
                    body["outputs"] = serde_json::json!({
                        "ami_id": format!("ami-0bench{client:04}{stage:03}"),
                        "instance_ip": "10.0.3.17",
                        "snapshot_id": format!("snap-0bench{stage:03}"),
                    });
                }
                ReportKind::Outputs => {}
                ReportKind::Leased => {
                    body["run"] = serde_json::json!(format!("bldst-bench/client-{client}"));
                }
            }
            steps.push((transitions.clone(), body.to_string(), true));
        }
    }
    let reset = serde_json::json!({"state": 0, "reason": "bldst-bench: next lap"});
    steps.push((
        format!("{base_url}/builds/{build_id}/reset"),
        reset.to_string(),
        false,
    ));
    steps
}

/// One simulated CI pipeline: its own connection, its own build.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    authorization: HeaderValue,
    steps: Vec<Step>,
}

impl Client {
    fn new(
        target: &Target,
        build_id: &str,
        kind: ReportKind,
        index: usize,
    ) -> anyhow::Result<Self> {
        let steps = lap(target.base_url(index), build_id, kind, index)
            .into_iter()
            .map(|(url, body, is_transition)| Step {
                url,
                body,
                is_transition,
            })
            .collect();
        Ok(Client {
            http: http_client()?,
            authorization: target.authorization()?,
            steps,
        })
    }

    /// Sends the cycle until the window ends, counting every accepted report (warm-up
    /// included) in `answered`.
    async fn run(
        self,
        window: Window,
        max_requests: u64,
        answered: Arc<AtomicU64>,
    ) -> anyhow::Result<LoadOutcome> {
        let mut outcome = LoadOutcome {
            transitions: 0,
            latency_micros: new_histogram()?,
            resets: 0,
            errors: 0,
            first_errors: Vec::new(),
        };
        let reset_step = self.steps.len() - 1;
        let mut next = 0;
        for _ in 0..max_requests {
            let started = Instant::now();
            if started >= window.end {
                break;
            }
            let step = &self.steps[next];
            let answer = self.send(&step.url, step.body.clone()).await;
            let finished = Instant::now();
            match answer {
                Ok(()) => {
                    if step.is_transition {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    if !step.is_transition {
                        outcome.resets += 1;
                    } else if started >= window.measure_from && finished <= window.end {
                        outcome.transitions += 1;
                        let micros = finished.duration_since(started).as_micros();
                        outcome
                            .latency_micros
                            .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
                    }
                    next = (next + 1) % self.steps.len();
                }
                Err(error) => {
                    outcome.errors += 1;
                    if outcome.first_errors.len() < ERRORS_KEPT {
                        outcome.first_errors.push(format!("{error:#}"));
                    }
                    // Whatever went wrong, a reset puts the build back where the cycle starts.
                    next = reset_step;
                }
            }
        }
        Ok(outcome)
    }

    /// Sends one request and reads the whole answer (so the connection can be reused).
    async fn send(&self, url: &str, body: String) -> anyhow::Result<()> {
        let response = self
            .http
            .post(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url} failed"))?;
        let status = response.status();
        let answer = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer to POST {url} failed"))?;
        anyhow::ensure!(
            status.is_success(),
            "POST {url}: {status} {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
        Ok(())
    }
}

/// What the heartbeat phase measured.
#[derive(Debug)]
pub struct HeartbeatOutcome {
    /// Heartbeats answered 200 that started and finished inside the measured window.
    pub heartbeats: u64,
    pub latency_micros: Histogram<u64>,
    /// Non-2xx answers and transport failures (any time during the phase).
    pub errors: u64,
    pub first_errors: Vec<String>,
}

/// The run identity the heartbeat phase's stage `index` is claimed with.
fn heartbeat_run(index: usize) -> String {
    format!("bldst-bench/heartbeat-{index}")
}

/// Claims stage 0 of each build for a run of its own: the leases the heartbeats keep alive.
pub async fn claim_stages(target: &Target, build_ids: &[String]) -> anyhow::Result<()> {
    let http = http_client()?;
    for (index, build_id) in build_ids.iter().enumerate() {
        let response = http
            .post(format!(
                "{}/builds/{build_id}/transitions",
                target.base_url(index)
            ))
            .header(AUTHORIZATION, target.authorization()?)
            .json(&serde_json::json!({
                "state": 0,
                "status": "in_progress",
                "run": heartbeat_run(index),
            }))
            .send()
            .await
            .context("failed to claim a stage")?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "claiming stage 0 of `{build_id}` failed: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Sends every build's holder one heartbeat per `every`, the builds spread evenly over the
/// interval, from a few keep-alive connections, until `window.end`.
pub async fn run_heartbeats(
    target: &Target,
    build_ids: &[String],
    every: Duration,
    window: Window,
) -> anyhow::Result<HeartbeatOutcome> {
    const CONNECTIONS: usize = 8;
    let http: Vec<reqwest::Client> = (0..CONNECTIONS)
        .map(|_| http_client())
        .collect::<anyhow::Result<_>>()?;
    let authorization = target.authorization()?;
    let spacing = every / u32::try_from(build_ids.len().max(1)).unwrap_or(u32::MAX);
    let mut ticks = tokio::time::interval(spacing.max(Duration::from_micros(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = tokio::task::JoinSet::new();
    let mut next = 0usize;
    loop {
        ticks.tick().await;
        if Instant::now() >= window.end {
            break;
        }
        let index = next % build_ids.len().max(1);
        next += 1;
        let url = format!(
            "{}/builds/{}/heartbeat",
            target.base_url(index),
            build_ids[index]
        );
        let body = serde_json::json!({"state": 0, "run": heartbeat_run(index)}).to_string();
        let http = http[index % CONNECTIONS].clone();
        let authorization = authorization.clone();
        sent.spawn(async move {
            let started = Instant::now();
            let answer = async {
                let response = http
                    .post(&url)
                    .header(AUTHORIZATION, authorization)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("POST {url} failed"))?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                anyhow::ensure!(status.is_success(), "POST {url}: {status} {text}");
                Ok(())
            }
            .await;
            (started, Instant::now(), answer)
        });
    }
    let mut outcome = HeartbeatOutcome {
        heartbeats: 0,
        latency_micros: new_histogram()?,
        errors: 0,
        first_errors: Vec::new(),
    };
    while let Some(joined) = sent.join_next().await {
        let (started, finished, answer) = joined.context("a heartbeat task failed")?;
        match answer {
            Ok(()) if started >= window.measure_from && finished <= window.end => {
                outcome.heartbeats += 1;
                let micros = finished.duration_since(started).as_micros();
                outcome
                    .latency_micros
                    .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
            }
            Ok(()) => {}
            Err(error) => {
                outcome.errors += 1;
                if outcome.first_errors.len() < ERRORS_KEPT {
                    outcome.first_errors.push(format!("{error:#}"));
                }
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_and_leased_laps_add_only_their_field() {
        let outputs = lap("http://127.0.0.1:1", "b_x", ReportKind::Outputs, 7);
        assert!(
            !outputs[0].1.contains("outputs"),
            "in_progress carries none"
        );
        assert!(outputs[2].1.contains(r#""ami_id":"ami-0bench0007000""#));
        let leased = lap("http://127.0.0.1:1", "b_x", ReportKind::Leased, 7);
        assert!(leased[..60]
            .iter()
            .all(|(_, body, _)| body.contains(r#""run":"bldst-bench/client-7""#)));
    }

    #[test]
    fn a_lap_reports_every_stage_three_times_then_resets() {
        let steps = lap("http://127.0.0.1:1", "b_x", ReportKind::Plain, 0);
        assert_eq!(steps.len(), 61);
        assert!(steps[..60]
            .iter()
            .all(|(url, _, t)| *t && url.ends_with("/transitions")));
        assert_eq!(
            steps[0].1,
            r#"{"message":"bldst-bench report","state":0,"status":"in_progress"}"#
        );
        assert!(steps[59].1.contains(r#""state":95,"status":"completed""#));
        let (url, body, is_transition) = &steps[60];
        assert!(!is_transition && url.ends_with("/builds/b_x/reset"));
        assert_eq!(body, r#"{"reason":"bldst-bench: next lap","state":0}"#);
    }
}
