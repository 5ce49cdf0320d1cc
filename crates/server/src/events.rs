//! Transitions as they happen, for the event stream, the metrics and the webhooks.
//!
//! Every change a handler commits is [`EventHub::publish`]ed: subscribers in this process get
//! it at once through a broadcast channel. On PostgreSQL the hub also announces it to the
//! other server processes with `pg_notify` on [`CHANNEL`] (one line per change: the process that
//! made it, the build, its first and last new sequence numbers); every other process `LISTEN`s
//! ([`crate::peers`], the connection that also hears token revocations: no extra component),
//! and its hub reads those entries back and hands them to its own subscribers. Events carry
//! whether they were made here, so webhooks fire once (from the process that recorded the
//! change), not once per process.
//!
//! Announcements go out after the change commits, from one task per process: never for a
//! change that rolled back (only committed changes are published). Not inside the report's own
//! transaction: PostgreSQL serializes the commits of every notifying transaction behind one
//! database-wide lock, so a report that notified as it committed queued behind every other
//! report's commit and its WAL flush (a quarter of the database's throughput at 8 clients,
//! measured with pgbench: see BENCHMARKS.md). The price: a process killed between a commit and
//! its announcement leaves the other processes' live streams without that change until their
//! clients reconnect with `Last-Event-ID`, which reads it from the history.
//!
//! The task sends at most one notification every [`ANNOUNCE_EVERY`], carrying everything that
//! queued meanwhile: a notification is a transaction of its own (PostgreSQL gives it a
//! transaction id, so its commit flushes the WAL) and wakes every listening connection of the
//! database, so what costs is how many there are, not how long they are. Idle, a change still
//! goes out at once; under load, one notification carries a few dozen.
//!
//! A subscriber that falls behind is dropped; the stream's client then reconnects with
//! `Last-Event-ID` and reads what it missed from the history.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use buildstate_domain::wire::{Build, HistoryEntry};
use buildstate_domain::BuildId;
use tokio::sync::{broadcast, mpsc};

use crate::db::Database;

/// The channel transitions are announced on.
pub const CHANNEL: &str = "buildstate_transition";

/// How many events a slow subscriber may fall behind before it is dropped.
const BACKLOG: usize = 1024;

/// The least time between two notifications from one process: what a peer's live stream
/// may lag behind under load, in exchange for one notification per this time instead of one
/// per report.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(20);

/// The most one notification carries: PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;

/// How long a stopping server waits for its last announcements to go out.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// One history entry with its build as it stood right after it (a wire type: the clients
/// read the same shape from the event stream).
pub use buildstate_domain::wire::BuildEvent;

/// An event and whether this process recorded it.
#[derive(Debug, Clone)]
pub struct Published {
    pub event: Arc<BuildEvent>,
    pub made_here: bool,
}

/// Where transitions are published and subscribed to. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Published>,
    /// Identifies this process in announcements, to skip its own.
    process: Arc<str>,
    /// On PostgreSQL: the store to announce through and to read announced entries from.
    postgres: Option<Database>,
    /// Entries published lately (build id, seq): a report replayed for its idempotency key
    /// answers with the entries it recorded the first time, which must not be published twice.
    published: moka::sync::Cache<(String, i64), ()>,
    /// On PostgreSQL, once [`EventHub::start`] ran: where published changes queue for the
    /// announcing task, one line each.
    announcements: Arc<OnceLock<mpsc::UnboundedSender<String>>>,
    /// On PostgreSQL, once [`EventHub::start`] ran: where the other processes' notifications
    /// queue for the relaying task.
    relays: Arc<OnceLock<mpsc::UnboundedSender<String>>>,
    /// Announcements queued and not yet sent (what a stopping server waits for).
    unannounced: Arc<AtomicUsize>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl EventHub {
    /// A hub for `db`; on PostgreSQL it also spans processes, once [`EventHub::start`]ed.
    pub fn new(db: &Database) -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        let postgres = (db.dialect() == crate::db::Dialect::Postgres).then(|| db.clone());
        EventHub {
            sender,
            process: Arc::from(crate::secrets::random_id(12)),
            postgres,
            published: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            announcements: Arc::default(),
            relays: Arc::default(),
            unannounced: Arc::default(),
        }
    }

    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.sender.subscribe()
    }

    /// Hands `entries` (just committed on `build`) to this process's subscribers and queues
    /// their announcement to the other processes. `false` when there was nothing new.
    pub fn publish(&self, build: &Build, entries: &[HistoryEntry]) -> bool {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return false;
        };
        let key = (build.id.to_string(), last.seq);
        if self.published.contains_key(&key) {
            return false;
        }
        self.published.insert(key, ());
        for entry in entries {
            // No subscriber is fine.
            let _ = self.sender.send(Published {
                event: Arc::new(BuildEvent {
                    build: build.clone(),
                    entry: entry.clone(),
                }),
                made_here: true,
            });
        }
        if let Some(announcements) = self.announcements.get() {
            let line = format!("{} {} {} {}", self.process, build.id, first.seq, last.seq);
            self.unannounced.fetch_add(1, Ordering::SeqCst);
            if announcements.send(line).is_err() {
                // The announcing task has stopped: the server is shutting down.
                self.unannounced.fetch_sub(1, Ordering::SeqCst);
            }
        }
        true
    }

    /// Waits (a bounded time) until every change published so far has been announced to the
    /// other processes: a server that stops right after a report still tells them.
    pub async fn flush(&self) {
        let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
        while self.unannounced.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    unannounced = self.unannounced.load(Ordering::SeqCst),
                    "stopping before every change was announced to the other server processes"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// On PostgreSQL, starts announcing this process's changes to the other processes and
    /// relaying theirs ([`EventHub::relay`]) to this process's subscribers, until the returned
    /// task is aborted; `None` elsewhere, or if already started.
    pub fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        let db = self.postgres.clone()?;
        let (announce_to, queued) = mpsc::unbounded_channel();
        let (relay_to, relayed) = mpsc::unbounded_channel();
        if self.announcements.set(announce_to).is_err() || self.relays.set(relay_to).is_err() {
            return None;
        }
        let announcer = tokio::spawn(announce(queued, db.clone(), self.unannounced.clone()));
        let hub = self.clone();
        Some(tokio::spawn(async move {
            // Both run until the server aborts this task, after flushing.
            let _stops_with_this_task = AbortOnDrop(announcer.abort_handle());
            hub.relay_all(relayed, &db).await;
        }))
    }

    /// Takes a notification another process sent on [`CHANNEL`] (see [`crate::peers`]): its
    /// changes reach this process's subscribers, if it has any.
    pub fn relay(&self, payload: &str) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        if let Some(relays) = self.relays.get() {
            // Closed only while the server stops.
            let _ = relays.send(payload.to_owned());
        }
    }

    async fn relay_all(&self, mut relayed: mpsc::UnboundedReceiver<String>, db: &Database) {
        while let Some(payload) = relayed.recv().await {
            for line in payload.lines() {
                if let Err(error) = self.relay_one(line, db).await {
                    tracing::warn!(error = %error, "failed to relay a transition from another server process");
                }
            }
        }
    }

    async fn relay_one(&self, payload: &str, db: &Database) -> anyhow::Result<()> {
        let mut parts = payload.split(' ');
        let (Some(process), Some(build), Some(first), Some(last)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("unreadable announcement `{payload}`");
        };
        if process == &*self.process || self.sender.receiver_count() == 0 {
            return Ok(());
        }
        let id: BuildId = build
            .parse()
            .map_err(|error| anyhow::anyhow!("announced build `{build}`: {error}"))?;
        let build = db.get_build(&id).await?;
        let entries = db
            .history_between(&id, first.parse()?, last.parse()?)
            .await?;
        for entry in entries {
            let _ = self.sender.send(Published {
                event: Arc::new(BuildEvent {
                    build: build.clone(),
                    entry,
                }),
                made_here: false,
            });
        }
        Ok(())
    }
}

/// Sends queued announcements until the queue closes: each time, everything that queued since
/// the previous notification, as few notifications as fit (one line per change), then waits
/// out the rest of [`ANNOUNCE_EVERY`]. Under load that is one notification for many reports;
/// idle, one per report, right after it.
async fn announce(
    mut queued: mpsc::UnboundedReceiver<String>,
    db: Database,
    unannounced: Arc<AtomicUsize>,
) {
    let mut lines = Vec::new();
    while queued.recv_many(&mut lines, 10_000).await > 0 {
        let next_at = tokio::time::Instant::now() + ANNOUNCE_EVERY;
        for payload in payloads(&lines) {
            if let Err(error) = db.notify(CHANNEL, &payload).await {
                // Their streams catch up when their clients reconnect.
                tracing::warn!(error = %error, "failed to announce transitions to the other server processes");
            }
        }
        unannounced.fetch_sub(lines.len(), Ordering::SeqCst);
        lines.clear();
        tokio::time::sleep_until(next_at).await;
    }
}

/// `lines` joined by newlines into as few payloads as fit under [`MAX_PAYLOAD`] each.
fn payloads(lines: &[String]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for line in lines {
        if !current.is_empty() && current.len() + 1 + line.len() > MAX_PAYLOAD {
            payloads.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// Aborts a task when dropped: the announcing task ends with the relay that owns it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_fit_what_postgresql_accepts_and_keep_every_line() {
        let lines: Vec<String> = (0..400)
            .map(|n| format!("proc{n:08} b_{n:020} {n} {}", n + 1))
            .collect();
        let payloads = payloads(&lines);
        assert!(payloads.len() > 1, "400 lines do not fit one payload");
        assert!(payloads.iter().all(|payload| payload.len() <= MAX_PAYLOAD));
        let back: Vec<&str> = payloads
            .iter()
            .flat_map(|payload| payload.lines())
            .collect();
        assert_eq!(back, lines.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn one_line_is_one_payload() {
        assert_eq!(payloads(&["p b_1 2 3".to_owned()]), vec!["p b_1 2 3"]);
        assert!(payloads(&[]).is_empty());
    }
}
