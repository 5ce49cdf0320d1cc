//! Server-sent events: transitions as they are recorded, by every server process sharing the
//! database ([`crate::events`]).
//!
//! Each event is `event: transition`, its `id`, and `data:` a JSON `{"build": …, "entry": …}`
//! (the history entry and the build right after it). A client that reconnects sends the last
//! id it saw as `Last-Event-ID` and first gets what it missed, from the history:
//! - `GET /builds/{id}/events`: one build; ids are the history's sequence numbers (`after=N`
//!   also starts after entry N, so `after=0` replays the whole history first);
//! - `GET /events`: every build; ids are `recorded-at-ms:build-id:seq`, the history's order.
//!
//! A client that falls too far behind is disconnected, and catches up the same way.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse as _;
use buildstate_domain::wire::ErrorBody;
use buildstate_domain::{BuildId, Scope};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{ApiQuery, Authenticated, Id};
use crate::db::FeedPoint;
use crate::events::{BuildEvent, Published};
use crate::state::AppState;

/// Entries replayed per read while catching a client up.
const REPLAY_PAGE: u32 = 500;

/// Where a build's stream starts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BuildEventsQuery {
    /// Replay the entries after this sequence number first (`Last-Event-ID` wins).
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

fn sse_event(event: &BuildEvent, id: String) -> Option<Event> {
    Event::default()
        .event("transition")
        .id(id)
        .json_data(event)
        .ok()
}

/// Sends one event to the client as `id`; false once the client has gone.
async fn send(sender: &mpsc::Sender<Event>, event: &BuildEvent, id: String) -> bool {
    match sse_event(event, id) {
        Some(sse) => sender.send(sse).await.is_ok(),
        // Not serializable: skipped, as the history's reader would never produce one.
        None => true,
    }
}

/// Forwards live events to the client until it goes away, falls too far behind or the server
/// shuts down (a client that lagged reconnects with `Last-Event-ID`): each event `id_of`
/// gives an id, that is, the ones this stream has not sent yet.
async fn forward_live(
    mut live: broadcast::Receiver<Published>,
    sender: &mpsc::Sender<Event>,
    mut id_of: impl FnMut(&BuildEvent) -> Option<String>,
) {
    loop {
        let published = match live.recv().await {
            Ok(published) => published,
            Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => {
                return;
            }
        };
        let Some(id) = id_of(&published.event) else {
            continue;
        };
        if !send(sender, &published.event, id).await {
            return;
        }
    }
}

/// A history sequence number as the OpenAPI document declares it (`0` or more, plain digits):
/// `after` and a build stream's `Last-Event-ID`.
fn sequence_number(raw: &str) -> Option<i64> {
    let plain = !raw.is_empty() && raw.len() <= 18 && raw.bytes().all(|byte| byte.is_ascii_digit());
    plain.then(|| raw.parse().ok()).flatten()
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| ApiError::invalid_field("Last-Event-ID", "is not text"))
        })
        .transpose()
}

/// The answer: an SSE body.
type EventStream = axum::response::Response;

fn stream_of(receiver: mpsc::Receiver<Event>) -> EventStream {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// One build's transitions, live (server-sent events).
#[utoipa::path(get, path = "/builds/{id}/events", tag = "events",
    params(("id" = String, Path, description = "the build's id"), BuildEventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, minimum = 0, description = "resume after this sequence number (an `id` of this stream)")),
    responses((status = 200, description = "server-sent `transition` events, without end; each one's `data` is a `BuildEvent` as one line of JSON", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn build_events(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<BuildId>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<BuildEventsQuery>,
) -> Result<EventStream, ApiError> {
    auth.require(Scope::Read)?;
    let after = match last_event_id(&headers)? {
        Some(raw) => Some(sequence_number(raw).ok_or_else(|| {
            ApiError::invalid_field(
                "Last-Event-ID",
                "must be a history sequence number (plain digits, 0 or more)",
            )
        })?),
        None => match query.after {
            Some(after) if after < 0 => {
                return Err(ApiError::invalid_field("after", "must be 0 or more"));
            }
            after => after,
        },
    };
    // Subscribe before reading the history, so nothing falls between the two.
    let live = state.events.subscribe();
    let mut build = state.db.get_build(&id).await?;
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut last_seq = after.unwrap_or(build.last_seq);
        if after.is_some() {
            loop {
                let page = match state.db.history_after(&id, last_seq, REPLAY_PAGE).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(error = %error, build = %id, "failed to replay a build's history");
                        return;
                    }
                };
                if let Ok(current) = state.db.get_build(&id).await {
                    build = current;
                }
                for entry in page.entries {
                    last_seq = entry.seq;
                    let event = BuildEvent {
                        build: build.clone(),
                        entry,
                    };
                    if !send(&sender, &event, last_seq.to_string()).await {
                        return;
                    }
                }
                if page.next_after.is_none() {
                    break;
                }
            }
        }
        forward_live(live, &sender, |event| {
            if event.build.id != id || event.entry.seq <= last_seq {
                return None;
            }
            last_seq = event.entry.seq;
            Some(last_seq.to_string())
        })
        .await;
    });
    Ok(stream_of(receiver))
}

/// `recorded-at-ms:build-id:seq`, exactly as the document's pattern for `GET /events`'s
/// `Last-Event-ID` says: `^[0-9]{1,18}:[^:]+:[0-9]{1,18}$`.
fn parse_feed_point(raw: &str) -> Option<FeedPoint> {
    let mut parts = raw.split(':');
    let recorded_at_ms = sequence_number(parts.next()?)?;
    let build_id = parts.next().filter(|id| !id.is_empty())?.to_owned();
    let seq = sequence_number(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some(FeedPoint {
        recorded_at_ms,
        build_id,
        seq,
    })
}

fn point_of(event: &BuildEvent) -> FeedPoint {
    FeedPoint {
        recorded_at_ms: event.entry.recorded_at.timestamp_millis(),
        build_id: event.build.id.to_string(),
        seq: event.entry.seq,
    }
}

fn is_after(point: &FeedPoint, than: &FeedPoint) -> bool {
    (point.recorded_at_ms, &point.build_id, point.seq)
        > (than.recorded_at_ms, &than.build_id, than.seq)
}

/// Every build's transitions, live (server-sent events); the dashboard follows this.
#[utoipa::path(get, path = "/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{1,18}:[^:]+:[0-9]{1,18}$", description = "resume after this event id (`recorded-at-ms:build-id:seq`, an `id` of this stream)")),
    responses((status = 200, description = "server-sent `transition` events, without end; each one's `data` is a `BuildEvent` as one line of JSON", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn all_events(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    auth.require(Scope::Read)?;
    let resume = last_event_id(&headers)?
        .map(|raw| {
            parse_feed_point(raw).ok_or_else(|| {
                ApiError::invalid_field(
                    "Last-Event-ID",
                    "must be an event id of this stream (`recorded-at-ms:build-id:seq`)",
                )
            })
        })
        .transpose()?;
    let live = state.events.subscribe();
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut last = resume.clone();
        if let Some(mut point) = resume {
            loop {
                let page = match state.db.feed_after(&point, REPLAY_PAGE).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(error = %error, "failed to replay the event stream");
                        return;
                    }
                };
                let full = page.len() == REPLAY_PAGE as usize;
                for (build, entry) in page {
                    let event = BuildEvent { build, entry };
                    point = point_of(&event);
                    if !send(&sender, &event, event.stream_id()).await {
                        return;
                    }
                }
                last = Some(point.clone());
                if !full {
                    break;
                }
            }
        }
        // Only what the replay did not already send.
        forward_live(live, &sender, |event| {
            let replayed = last
                .as_ref()
                .is_some_and(|last| !is_after(&point_of(event), last));
            (!replayed).then(|| event.stream_id())
        })
        .await;
    });
    Ok(stream_of(receiver))
}
