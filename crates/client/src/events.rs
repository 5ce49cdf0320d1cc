//! Following a build live over `GET /builds/{id}/events` (server-sent events).
//!
//! [`crate::Client::build_events`] opens one connection; [`BuildEvents::next`] reads its
//! `transition` events. [`follow_build`] is what a front end wants: it reconnects when the
//! connection drops or goes silent, sending the last sequence number it saw as
//! `Last-Event-ID`, so no transition is missed or told twice, and stops when the handler
//! says so.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::time::Duration;

use buildstate_domain::wire::BuildEvent;
use buildstate_domain::BuildId;
use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};

use crate::api::{Client, ClientError, MAX_RETRY_WAIT};

/// A connection silent for this long is taken for dead (the server sends a keep-alive every
/// 15 s).
pub const IDLE_LIMIT: Duration = Duration::from_secs(45);

/// The overall timeout of a stream's request: in effect none.
pub(crate) const STREAM_TIMEOUT: Duration = Duration::from_secs(60 * 60 * 24 * 365);

type SseStream =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// One open event stream of a build.
pub struct BuildEvents {
    url: String,
    events: SseStream,
}

impl std::fmt::Debug for BuildEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildEvents")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why a stream stopped giving events.
#[derive(Debug)]
pub enum StreamEnd {
    /// The server closed the connection (e.g. it is shutting down, or this client fell behind).
    Closed,
    /// Nothing, not even a keep-alive, for [`IDLE_LIMIT`].
    Silent,
    /// The connection failed.
    Broken(String),
    /// An event that is not the documented JSON: reconnecting would not help.
    Invalid(ClientError),
}

impl BuildEvents {
    pub(crate) fn new(url: String, response: reqwest::Response) -> Self {
        let bytes = futures_util::stream::unfold(response, |mut response| async move {
            match response.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), response)),
                Ok(None) => None,
                Err(error) => Some((Err(error), response)),
            }
        });
        BuildEvents {
            url,
            events: Box::pin(bytes.eventsource()),
        }
    }

    /// The next transition and its sequence number, or why there is none.
    pub async fn next(&mut self) -> Result<BuildEvent, StreamEnd> {
        loop {
            let item = match tokio::time::timeout(IDLE_LIMIT, self.events.next()).await {
                Err(_) => return Err(StreamEnd::Silent),
                Ok(None) => return Err(StreamEnd::Closed),
                Ok(Some(item)) => item,
            };
            let event = item.map_err(|error| StreamEnd::Broken(error.to_string()))?;
            if event.event != "transition" {
                continue;
            }
            return serde_json::from_str(&event.data).map_err(|error| {
                StreamEnd::Invalid(ClientError::Protocol {
                    url: self.url.clone(),
                    status: 200,
                    detail: format!("an event is not the documented JSON: {error}"),
                })
            });
        }
    }
}

/// Follows build `id`'s transitions after history entry `after` (the build's `last_seq`:
/// from now on; 0: its whole history first), calling `on_event` with each in order until it returns [`ControlFlow::Break`].
///
/// A dropped or silent connection is opened again with the last sequence seen as
/// `Last-Event-ID`; the client's `max_attempts` bounds the tries in a row that get no stream
/// (then [`ClientError::Unreachable`]), and `on_retry` hears of every reconnection. A refusal
/// (no such build, a bad token) ends the follow with that error.
pub async fn follow_build<F>(
    client: &Client,
    id: &BuildId,
    after: i64,
    mut on_event: F,
) -> Result<(), ClientError>
where
    F: FnMut(&BuildEvent) -> ControlFlow<()>,
{
    let mut last_seq = after;
    loop {
        let mut events = client.build_events(id, Some(last_seq)).await?;
        let end = loop {
            match events.next().await {
                Ok(event) => {
                    if event.entry.seq <= last_seq {
                        continue;
                    }
                    last_seq = event.entry.seq;
                    if on_event(&event).is_break() {
                        return Ok(());
                    }
                }
                Err(end) => break end,
            }
        };
        let why = match end {
            StreamEnd::Invalid(error) => return Err(error),
            StreamEnd::Closed => "the server closed the stream".to_owned(),
            StreamEnd::Silent => format!("nothing heard for {}s", IDLE_LIMIT.as_secs()),
            StreamEnd::Broken(cause) => format!("the connection broke: {cause}"),
        };
        if let Some(log) = &client.config().on_retry {
            log(&format!(
                "events of build `{id}`: {why}; reconnecting after entry {last_seq}"
            ));
        }
        (client.config().sleep)(client.config().retry_base.min(MAX_RETRY_WAIT)).await;
    }
}
