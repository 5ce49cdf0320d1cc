//! The retry scheduler: every tick, records the `retry_due` entry of each failed build whose
//! backoff has ended and that has retries left (docs/rules.md, "Retries"), and publishes it like
//! any change a report makes: the event streams (here and, through the hub, on every other
//! process), `/metrics` and the `retry_due` webhook alert.
//!
//! Every process runs one. The rule is the domain's ([`buildstate_domain::retry_due`]); the
//! store decides it under the build's row lock ([`Database::record_retry_due`]), which is what
//! makes the entry exactly once however many processes scan. A scan reads the state of the
//! builds, not a queue of timers, so a process that was stopped across a due time records the
//! entry at its first tick after it starts.

use std::time::Duration;

use futures_util::StreamExt as _;
use rand::seq::SliceRandom as _;

use crate::db::{Database, Dialect, DueCursor};
use crate::state::AppState;

/// How often each process looks for due retries unless told (`--retry-check-millis`).
pub const DEFAULT_RETRY_CHECK_MILLIS: u64 = 1000;

/// Builds read per query; a scan goes on from where a full page ended.
const PAGE: u32 = 500;

/// Due retries one process records at once on PostgreSQL, each in its own short transaction
/// on a connection of the pool: a burst of failures (a mirror down for every build) is
/// announced in a fraction of the time one at a time takes, while requests keep most of the
/// pool. SQLite has one writer, so there it is one at a time.
const AT_ONCE_ON_POSTGRES: usize = 4;

/// Starts the scheduler: a scan at once, then one every `every`, until the task is aborted.
pub fn start(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // A scan that outlasts a tick (a burst) is followed by the next one a tick later,
        // not by a catch-up run of scans.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = announce_due_retries(&state).await {
                tracing::warn!(error = %error, "failed to look for due retries");
            }
        }
    })
}

/// One scan: records and publishes every retry due now; returns how many this process
/// recorded (the others were recorded by another process, or are held by a change in
/// progress and left to the next scan).
pub async fn announce_due_retries(state: &AppState) -> anyhow::Result<usize> {
    let now = chrono::Utc::now();
    let at_once = match state.db.dialect() {
        Dialect::Postgres => AT_ONCE_ON_POSTGRES,
        Dialect::Sqlite => 1,
    };
    let mut after = DueCursor::start();
    let mut recorded = 0;
    loop {
        let mut page = state.db.builds_with_retry_due(now, &after, PAGE).await?;
        let Some((_, last)) = page.last() else {
            break;
        };
        after = last.clone();
        let full = page.len() == PAGE as usize;
        // Every process reads the same builds in the same order: each takes them in an order
        // of its own, so that two rarely reach for the same row at the same moment.
        page.shuffle(&mut rand::thread_rng());
        recorded += futures_util::stream::iter(page)
            .map(|(id, _)| record_one(&state.db, id))
            .buffer_unordered(at_once)
            .filter_map(|change| async move { change })
            .map(|change| {
                tracing::info!(
                    build = %change.build.id,
                    stage = %change.build.state,
                    attempt = change.recorded.first().and_then(|entry| entry.attempt),
                    "retry due"
                );
                state.announce(&change.build, &change.recorded);
            })
            .count()
            .await;
        if !full {
            break;
        }
    }
    Ok(recorded)
}

/// Records one build's due retry; a failure is logged and leaves it to the next scan.
async fn record_one(
    db: &Database,
    id: buildstate_domain::BuildId,
) -> Option<buildstate_domain::wire::TransitionResult> {
    match db.record_retry_due(&id).await {
        Ok(change) => change,
        Err(error) => {
            tracing::warn!(build = %id, error = %error, "failed to record a due retry");
            None
        }
    }
}
