//! Transitions as they happen, for the event stream, the metrics and the webhooks.
//!
//! Every change a handler commits is [`EventHub::publish`]ed: subscribers in this process get
//! it at once through a broadcast channel. Only what the store recorded just now is published:
//! the store says when it answers a retried report with its first answer (nothing recorded),
//! so the hub keeps no memory of what it published. On PostgreSQL the hub also announces it to the
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
//! goes out at once; under load, one notification carries a few dozen. The task takes its clock
//! and its sink as an [`Announcer`], so a test checks that pacing on a clock it moves by hand.
//!
//! A subscriber that falls behind is dropped; the stream's client then reconnects with
//! `Last-Event-ID` and reads what it missed from the history.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use buildstate_domain::wire::{Build, HistoryEntry};
use buildstate_domain::BuildId;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

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
            announcements: Arc::default(),
            relays: Arc::default(),
            unannounced: Arc::default(),
        }
    }

    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.sender.subscribe()
    }

    /// Hands `entries` (just recorded and committed on `build`: never an idempotent replay's,
    /// which the store tells apart) to this process's subscribers and queues their
    /// announcement to the other processes. `false` when there was nothing to publish.
    pub fn publish(&self, build: &Build, entries: &[HistoryEntry]) -> bool {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return false;
        };
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
        let announcer = tokio::spawn(announce(
            queued,
            ToPostgres(db.clone()),
            self.unannounced.clone(),
        ));
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

/// Where the announcing task sends notifications, and the clock it paces itself by.
trait Announcer: Send + 'static {
    fn now(&self) -> Instant;
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send;
    fn notify(&self, payload: String) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The server's announcer: `pg_notify` on [`CHANNEL`], paced by tokio's clock.
struct ToPostgres(Database);

impl Announcer for ToPostgres {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline)
    }

    fn notify(&self, payload: String) -> impl Future<Output = anyhow::Result<()>> + Send {
        let db = self.0.clone();
        async move { Ok(db.notify(CHANNEL, &payload).await?) }
    }
}

/// Sends queued announcements until the queue closes: each time, everything that queued since
/// the previous notification, as few notifications as fit (one line per change), then waits
/// out the rest of [`ANNOUNCE_EVERY`]. Under load that is one notification for many reports;
/// idle, one per report, right after it.
async fn announce(
    mut queued: mpsc::UnboundedReceiver<String>,
    announcer: impl Announcer,
    unannounced: Arc<AtomicUsize>,
) {
    let mut lines = Vec::new();
    while queued.recv_many(&mut lines, 10_000).await > 0 {
        let next_at = announcer.now() + ANNOUNCE_EVERY;
        for payload in payloads(&lines) {
            if let Err(error) = announcer.notify(payload).await {
                // Their streams catch up when their clients reconnect.
                tracing::warn!(error = %error, "failed to announce transitions to the other server processes");
            }
        }
        unannounced.fetch_sub(lines.len(), Ordering::SeqCst);
        lines.clear();
        announcer.sleep_until(next_at).await;
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

    /// An [`Announcer`] on a clock the test moves: `sleep_until` jumps the clock to its deadline
    /// at once, and each notification is recorded with the clock's time, then held until the
    /// test lets it finish (so the test decides what queues meanwhile).
    struct HandMoved {
        start: Instant,
        elapsed: Arc<std::sync::Mutex<Duration>>,
        sent: mpsc::UnboundedSender<(Duration, String)>,
        finish: Arc<tokio::sync::Semaphore>,
    }

    impl HandMoved {
        fn elapsed(&self) -> std::sync::MutexGuard<'_, Duration> {
            self.elapsed.lock().expect("clock")
        }
    }

    impl Announcer for HandMoved {
        fn now(&self) -> Instant {
            self.start + *self.elapsed()
        }

        fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send {
            let mut elapsed = self.elapsed();
            *elapsed = (*elapsed).max(deadline - self.start);
            std::future::ready(())
        }

        fn notify(&self, payload: String) -> impl Future<Output = anyhow::Result<()>> + Send {
            let _ = self.sent.send((*self.elapsed(), payload));
            let finish = self.finish.clone();
            async move {
                finish.acquire().await?.forget();
                Ok(())
            }
        }
    }

    /// The pacing, on a clock the test moves (what the machine is doing cannot change the
    /// answer): a change on an idle hub goes out at once; what queues while a notification is
    /// out waits until [`ANNOUNCE_EVERY`] after it, and then goes out together; an idle spell
    /// later, the next change goes out at once again. Nothing is lost or sent twice.
    #[tokio::test]
    async fn announcements_go_out_at_most_once_every_20_ms_each_carrying_what_queued() {
        let elapsed = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let (sent_to, mut sent) = mpsc::unbounded_channel();
        let finish = Arc::new(tokio::sync::Semaphore::new(0));
        let announcer = HandMoved {
            start: Instant::now(),
            elapsed: elapsed.clone(),
            sent: sent_to,
            finish: finish.clone(),
        };
        let (queue, queued) = mpsc::unbounded_channel();
        let unannounced = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(announce(queued, announcer, unannounced.clone()));
        let publish = |line: &str| {
            unannounced.fetch_add(1, Ordering::SeqCst);
            queue.send(line.to_owned()).expect("queued");
        };
        let ms = Duration::from_millis;

        publish("a");
        assert_eq!(sent.recv().await, Some((ms(0), "a".to_owned())));
        // While `a` goes out, two more changes queue.
        publish("b");
        publish("c");
        finish.add_permits(1);
        assert_eq!(sent.recv().await, Some((ms(20), "b\nc".to_owned())));
        finish.add_permits(1);
        // An idle spell: the next change does not wait.
        {
            let mut elapsed = elapsed.lock().expect("clock");
            *elapsed = (*elapsed).max(ms(100));
        }
        publish("d");
        assert_eq!(sent.recv().await, Some((ms(100), "d".to_owned())));
        finish.add_permits(1);
        drop(queue);
        task.await.expect("the announcing task ends with its queue");
        assert_eq!(unannounced.load(Ordering::SeqCst), 0, "all announced");
        assert_eq!(sent.recv().await, None, "nothing else was sent");
    }

    #[test]
    fn one_line_is_one_payload() {
        assert_eq!(payloads(&["p b_1 2 3".to_owned()]), vec!["p b_1 2 3"]);
        assert!(payloads(&[]).is_empty());
    }
}
