//! The open event streams (`GET /events`, `GET /builds/{id}/events`): how many each token and
//! the whole process may hold, and when one must end.
//!
//! A stream holds its connection for hours, so streams are not counted against the connection
//! cap (the listener gives a stream's connection slot back, see `serving::ConnectionSlot`):
//! twenty streams must not starve `/health` under `--max-connections 20`. They have limits of
//! their own instead — per token, so one read token cannot hold them all, and in total — and
//! each ends, so its client reconnects with `Last-Event-ID`:
//! - when its token is revoked, through this process or another (on PostgreSQL the revocation
//!   is announced, see [`crate::peers`]): every stream then asks the store whether its token
//!   still works;
//! - when its token expires;
//! - at once when the server shuts down, instead of holding the drain for its whole timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::db::{Actor, Database};

/// The limits, as configured (`--max-streams`, `--max-streams-per-token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Streams open at once in this process.
    pub total: usize,
    /// Streams one token may hold open at once in this process.
    pub per_token: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            total: 256,
            per_token: 8,
        }
    }
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The token already holds `allowed` streams.
    PerToken { allowed: usize },
    /// The process already serves `allowed` streams.
    Total { allowed: usize },
}

/// The open streams of this process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Streams(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    limits: StreamLimits,
    /// Open streams per token id.
    open: Mutex<HashMap<String, usize>>,
    /// Bumped at every revocation seen; each stream then checks its token again.
    revocations: watch::Sender<u64>,
    /// Set once the server shuts down.
    shutting_down: watch::Sender<bool>,
}

impl Streams {
    pub fn new(limits: StreamLimits) -> Self {
        Streams(Arc::new(Inner {
            limits,
            open: Mutex::new(HashMap::new()),
            revocations: watch::Sender::new(0),
            shutting_down: watch::Sender::new(false),
        }))
    }

    /// Counts a new stream for `token_id`, or refuses it over a limit. The stream is counted
    /// until the returned [`OpenStream`] is dropped.
    pub fn open(&self, token_id: &str) -> Result<OpenStream, StreamRefusal> {
        let limits = self.0.limits;
        let mut open = self
            .0
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.values().sum::<usize>() >= limits.total {
            return Err(StreamRefusal::Total {
                allowed: limits.total,
            });
        }
        let held = open.entry(token_id.to_owned()).or_default();
        if *held >= limits.per_token {
            return Err(StreamRefusal::PerToken {
                allowed: limits.per_token,
            });
        }
        *held += 1;
        Ok(OpenStream {
            streams: self.clone(),
            token_id: token_id.to_owned(),
        })
    }

    /// How many streams are open in this process.
    pub fn count(&self) -> usize {
        let open = self
            .0
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.values().sum()
    }

    /// A token was revoked (here, or announced by another process), or an announcement may
    /// have been missed: every stream checks its token again.
    pub fn token_revoked(&self) {
        self.0
            .revocations
            .send_modify(|seen| *seen = seen.wrapping_add(1));
    }

    /// The server is shutting down: every stream ends now.
    pub fn shut_down(&self) {
        self.0.shutting_down.send_replace(true);
    }

    fn close(&self, token_id: &str) {
        let mut open = self
            .0
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = open.get_mut(token_id) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(token_id);
            }
        }
    }
}

/// One open stream, counted until dropped.
#[derive(Debug)]
pub struct OpenStream {
    streams: Streams,
    token_id: String,
}

impl OpenStream {
    /// Completes when the stream must end: its token was revoked or has expired, or the server
    /// is shutting down. A store that cannot answer the check keeps the stream open (the next
    /// revocation, or expiry, asks again).
    pub async fn must_end(&self, db: &Database, actor: &Actor) {
        let inner = &self.streams.0;
        let mut revocations = inner.revocations.subscribe();
        let mut shutting_down = inner.shutting_down.subscribe();
        let expiry = until(actor.expires_at);
        // The guard `wait_for` answers with is dropped inside: it must not live across awaits.
        let shutdown = async move {
            let _ = shutting_down.wait_for(|down| *down).await;
        };
        tokio::pin!(expiry, shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = &mut expiry => return,
                changed = revocations.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    match db.token_is_live(&self.token_id, Utc::now()).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(error) => tracing::warn!(
                            error = %error,
                            "cannot check whether an event stream's token was revoked; keeping the stream"
                        ),
                    }
                }
            }
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.streams.close(&self.token_id);
    }
}

/// Completes at `at`, never when there is none.
async fn until(at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => {
            let left = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_token_and_in_total_and_freed_when_dropped() {
        let streams = Streams::new(StreamLimits {
            total: 3,
            per_token: 2,
        });
        let a1 = streams.open("a").expect("first of a");
        let _a2 = streams.open("a").expect("second of a");
        assert_eq!(
            streams.open("a").expect_err("a third of a"),
            StreamRefusal::PerToken { allowed: 2 }
        );
        let _b1 = streams.open("b").expect("first of b");
        assert_eq!(
            streams.open("c").expect_err("over the total"),
            StreamRefusal::Total { allowed: 3 }
        );
        drop(a1);
        assert_eq!(streams.count(), 2);
        let _c1 = streams.open("c").expect("a freed place");
    }
}
