//! Alerts: webhooks configured on the server, fired when a build is blocked, becomes stuck,
//! fails, has a retry due, or completes.
//!
//! Each hook is a URL, a secret of its own and the alerts it wants. A delivery is a JSON POST
//! signed with HMAC-SHA256 of the exact body under the hook's secret, in
//! `X-Buildstate-Signature: sha256=<hex>`, with the alert in `X-Buildstate-Alert` and a
//! delivery id in `X-Buildstate-Delivery` (the same on every retry, so a receiver can drop
//! repeats). A delivery that fails (no answer, or a 408/429/5xx) is retried with exponential
//! backoff; a 4xx other than those is final (the receiver refused it).
//!
//! Blocked, failed, retry_due and completed fire from the process that recorded the change,
//! once (a retry_due is recorded by exactly one process: [`crate::retries`]).
//! Stuck is noticed by a periodic scan; the database marks each quiet spell as alerted, so
//! however many processes scan, one alert goes out.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use buildstate_domain::reports::StuckThresholds;
use buildstate_domain::wire::{Build, HistoryEntry};
use buildstate_domain::{notes, BuildStatus, EventKind, StateCode};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::broadcast;

use crate::db::Database;
use crate::events::{EventHub, Published};

/// What a hook may be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alert {
    /// A stage failed more times than allowed: a person must act.
    Blocked,
    /// Nothing was recorded for longer than the stuck threshold.
    Stuck,
    /// A stage failed and will be retried.
    Failed,
    /// Stage 100 completed: the image is published.
    Completed,
    /// A failed stage's backoff ended and it has retries left: start its next attempt (e.g.
    /// point the hook at a Concourse resource's check webhook).
    RetryDue,
}

impl Alert {
    pub fn as_str(self) -> &'static str {
        match self {
            Alert::Blocked => "blocked",
            Alert::Stuck => "stuck",
            Alert::Failed => "failed",
            Alert::Completed => "completed",
            Alert::RetryDue => "retry_due",
        }
    }

    /// The sentence a delivery of this alert carries on what to do (see [`Delivery`]).
    pub fn next_step(self, build: &Build, entry: &HistoryEntry) -> Option<String> {
        match self {
            Alert::Blocked => Some(notes::blocked_next_step(&build.id, build.state)),
            Alert::RetryDue => entry.message.clone().map(|due| {
                format!(
                    "{due}: start stage {} of build `{}` again",
                    entry.state, build.id
                )
            }),
            Alert::Stuck | Alert::Failed | Alert::Completed => None,
        }
    }

    /// The alert a history entry raises, given the build right after it.
    pub fn for_entry(build: &Build, entry: &HistoryEntry) -> Option<Alert> {
        match entry.kind {
            EventKind::Failed if build.status == BuildStatus::Blocked => Some(Alert::Blocked),
            EventKind::Failed => Some(Alert::Failed),
            EventKind::Completed if entry.state == StateCode::PUBLISHED => Some(Alert::Completed),
            EventKind::RetryDue => Some(Alert::RetryDue),
            _ => None,
        }
    }
}

/// One configured hook (an element of the webhooks file's JSON array).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub url: String,
    /// The HMAC key for this hook's signatures.
    pub secret: String,
    /// The alerts it wants; all of them when absent.
    #[serde(default)]
    pub alerts: Option<BTreeSet<Alert>>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret; the URL may carry a token of the receiver's, too.
        f.debug_struct("Hook")
            .field("alerts", &self.alerts)
            .finish_non_exhaustive()
    }
}

impl Hook {
    fn wants(&self, alert: Alert) -> bool {
        self.alerts
            .as_ref()
            .is_none_or(|alerts| alerts.contains(&alert))
    }
}

/// Reads the hooks from a JSON file: `[{"url": …, "secret": …, "alerts": ["blocked", …]}]`.
pub fn read_hooks(path: &Path) -> anyhow::Result<Vec<Hook>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the webhooks file `{}`", path.display()))?;
    let hooks: Vec<Hook> = serde_json::from_str(&text).with_context(|| {
        format!(
            "the webhooks file `{}` is not a list of hooks",
            path.display()
        )
    })?;
    for (index, hook) in hooks.iter().enumerate() {
        let url = reqwest::Url::parse(&hook.url).with_context(|| {
            format!(
                "webhook {index} in `{}`: `url` is not a URL",
                path.display()
            )
        })?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "webhook {index} in `{}`: `url` must be http or https",
            path.display()
        );
        anyhow::ensure!(
            !hook.secret.is_empty(),
            "webhook {index} in `{}`: `secret` is empty",
            path.display()
        );
    }
    Ok(hooks)
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPlan {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait after the first failure; doubles after each further one.
    pub base: Duration,
    pub cap: Duration,
}

/// What a receiver gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub alert: Alert,
    pub build: Build,
    /// The history entry that raised it (absent for `stuck`).
    pub entry: Option<HistoryEntry>,
    /// For `stuck`: seconds since anything was recorded.
    pub idle_secs: Option<u64>,
    /// What to do about it, in a sentence: for `blocked`, the operator commands that release
    /// the build; for `retry_due`, which retry of which stage to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    pub sent_at: DateTime<Utc>,
}

/// `sha256=<hex>`: the signature of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The configured hooks and how to reach them.
#[derive(Debug, Clone)]
pub struct Webhooks {
    hooks: Arc<Vec<Hook>>,
    http: reqwest::Client,
    retry: RetryPlan,
}

impl Webhooks {
    pub fn new(hooks: Vec<Hook>, retry: RetryPlan) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("buildstate/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("failed to set up the webhook client")?;
        Ok(Webhooks {
            hooks: Arc::new(hooks),
            http,
            retry,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Sends `delivery` to every hook that wants it, each in the background with its retries.
    pub fn send(&self, delivery: &Delivery) {
        let body = match serde_json::to_vec(delivery) {
            Ok(body) => Arc::new(body),
            Err(error) => {
                tracing::warn!(error = %error, "failed to encode a webhook delivery");
                return;
            }
        };
        let id = crate::secrets::random_id(16);
        for (index, hook) in self.hooks.iter().enumerate() {
            if !hook.wants(delivery.alert) {
                continue;
            }
            let this = self.clone();
            let (body, id, alert) = (Arc::clone(&body), id.clone(), delivery.alert);
            let build = delivery.build.id.to_string();
            tokio::spawn(async move {
                this.deliver(index, alert, &build, &id, &body).await;
            });
        }
    }

    async fn deliver(&self, index: usize, alert: Alert, build: &str, id: &str, body: &[u8]) {
        let hook = &self.hooks[index];
        let signature = signature(&hook.secret, body);
        let mut wait = self.retry.base;
        for attempt in 1..=self.retry.attempts.max(1) {
            let sent = self
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-buildstate-alert", alert.as_str())
                .header("x-buildstate-delivery", id)
                .header("x-buildstate-signature", &signature)
                .body(body.to_vec())
                .send()
                .await;
            let retryable = match sent {
                Ok(answer) if answer.status().is_success() => return,
                Ok(answer) => {
                    let status = answer.status();
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                    tracing::warn!(
                        hook = index,
                        alert = alert.as_str(),
                        build,
                        attempt,
                        status = status.as_u16(),
                        "webhook delivery refused"
                    );
                    retryable
                }
                Err(error) => {
                    // reqwest's error names the URL; print only its kind.
                    let error = error.without_url();
                    tracing::warn!(hook = index, alert = alert.as_str(), build, attempt, error = %error, "webhook delivery failed");
                    true
                }
            };
            if !retryable || attempt == self.retry.attempts {
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.retry.cap);
        }
        tracing::warn!(
            hook = index,
            alert = alert.as_str(),
            build,
            "gave up on a webhook delivery"
        );
    }

    /// Fires blocked/failed/completed for changes this process records, until aborted.
    pub fn follow(&self, hub: &EventHub) -> tokio::task::JoinHandle<()> {
        let mut events = hub.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Published {
                        event,
                        made_here: true,
                    }) => {
                        if let Some(alert) = Alert::for_entry(&event.build, &event.entry) {
                            this.send(&Delivery {
                                alert,
                                build: event.build.clone(),
                                entry: Some(event.entry.clone()),
                                idle_secs: None,
                                next_step: alert.next_step(&event.build, &event.entry),
                                sent_at: Utc::now(),
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "webhooks fell behind: some alerts were not sent");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// Every `every`, alerts once for each build that became stuck, until aborted.
    pub fn watch_stuck(
        &self,
        db: Database,
        thresholds: StuckThresholds,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                if let Err(error) = this.alert_stuck(&db, &thresholds).await {
                    tracing::warn!(error = %error, "failed to look for stuck builds");
                }
            }
        })
    }

    async fn alert_stuck(&self, db: &Database, thresholds: &StuckThresholds) -> anyhow::Result<()> {
        let now = Utc::now();
        let report = db.stuck_report(thresholds, now).await?;
        for stuck in report.stuck {
            if db
                .mark_stuck_alerted(&stuck.id, stuck.quiet_since, now)
                .await?
            {
                let build = db.get_build(&stuck.id).await?;
                self.send(&Delivery {
                    alert: Alert::Stuck,
                    build,
                    entry: None,
                    idle_secs: Some(stuck.idle_secs),
                    next_step: None,
                    sent_at: now,
                });
            }
        }
        Ok(())
    }
}
