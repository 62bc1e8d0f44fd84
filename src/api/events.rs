//! `GET /events`: the hub's events as server-sent events.
//!
//! Each SSE event carries the event's id as `id`, its type as `event` and the
//! event as JSON in `data`. A follower that reconnects with `Last-Event-ID`
//! first gets the buffered events after that id. The hub never waits for a
//! follower: one that falls more than the buffer behind gets an `events.missed`
//! event saying how many it lost, then the stream goes on. Streams end when
//! the hub has drained its clients at shutdown.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{self, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use crate::events::{Event, EventKind};
use crate::registry::Registry;

use super::problem::Problem;
use super::query::Params;
use super::{ApiError, AppState};

/// The SSE event name (and `type`) of the notice that events were lost.
const MISSED: &str = "events.missed";

/// Which events `GET /events` streams.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FollowParams {
    /// Only these types, comma-separated, e.g. `client.connected,client.disconnected`
    /// (default: every type).
    pub types: Option<String>,
    /// Only events about the client with this name (its name at the time of the event).
    pub name: Option<String>,
}

/// Sent instead of events a follower lost: it fell more than the event buffer
/// behind, or resumed from an id the buffer no longer reaches.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"type": "events.missed", "missed": 1200}))]
pub struct EventsMissed {
    /// Always `events.missed`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// How many events, of any type, the follower will never receive.
    pub missed: u64,
}

/// Follow the hub's events as server-sent events.
///
/// Each event is sent as `id: <id>`, `event: <type>` and `data: <Event as JSON>`.
/// Reconnecting with `Last-Event-ID` resumes after that event, from a buffer of
/// the latest `--event-buffer` events. When events were lost (the follower
/// fell behind, or the buffer no longer reaches its `Last-Event-ID`), an
/// `events.missed` event (`data: EventsMissed`, no id) says how many, then the
/// stream goes on. A comment line is sent every 15 s to keep the connection open.
/// At most `--max-event-streams` streams are open at once.
#[utoipa::path(
    get,
    path = "/events",
    operation_id = "follow_events",
    tag = "events",
    params(
        FollowParams,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]+$",
         description = "Resume after the event with this id (the SSE `id` of the last event received)"),
    ),
    responses(
        (status = 200, description = "A `text/event-stream`: per event the SSE fields `id` (the event's id), \
                                      `event` (its type) and `data` (an `Event` as JSON); for lost events, \
                                      `event: events.missed` with `data` an `EventsMissed` and no `id`",
         content_type = "text/event-stream", body = String,
         example = json!("id: 42\nevent: client.named\ndata: {\"id\":42,\"time\":\"2026-11-25T18:40:30.120Z\",\"clientId\":\"c7\",\"name\":\"Client-1\",\"peer\":\"127.0.0.1:50312\",\"type\":\"client.named\",\"oldName\":null}\n\n")),
        (status = 400, description = "`invalid_query` (an unknown type or parameter) or `invalid_header` (a malformed Last-Event-ID)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`too_many_streams`: `--max-event-streams` streams are open already", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn follow(
    State(state): State<AppState>,
    Params(params): Params<FollowParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let filter = Filter::new(params)?;
    let after = last_event_id(&headers)?;
    // Held by the stream: the slot frees when the follower goes away.
    let slot = Arc::clone(&state.event_streams)
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams(state.config.max_event_streams))?;
    let follow = state.registry().events().follow(after);
    // The response head goes out with the first bytes of the body: a comment
    // sends both at once, so the follower knows at once that it is subscribed.
    let mut head = vec![sse::Event::default().comment("following")];
    if follow.missed > 0 {
        head.push(missed(state.registry(), follow.missed));
    }
    head.extend(
        follow
            .backlog
            .iter()
            .filter(|event| filter.admits(event))
            .map(sse_event),
    );
    let live = stream::unfold(
        (follow.live, filter, state.registry().clone(), slot),
        |(mut live, filter, registry, slot)| async move {
            loop {
                let received = tokio::select! {
                    // Events first: closing ends the stream only once it is drained.
                    biased;
                    received = live.recv() => received,
                    () = registry.events().closed() => return None,
                };
                let next = match received {
                    Ok(event) if filter.admits(&event) => sse_event(&event),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(count)) => missed(&registry, count),
                    Err(RecvError::Closed) => return None,
                };
                return Some((next, (live, filter, registry, slot)));
            }
        },
    );
    let events = stream::iter(head).chain(live).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The `types` and `name` a follower asked for.
#[derive(Debug)]
struct Filter {
    types: Option<Vec<&'static str>>,
    name: Option<String>,
}

impl Filter {
    fn new(params: FollowParams) -> Result<Filter, ApiError> {
        let types = match params.types {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(known_type)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Filter {
            types,
            name: params.name,
        })
    }

    fn admits(&self, event: &Event) -> bool {
        let kind = event.kind.type_name();
        self.types
            .as_ref()
            .is_none_or(|types| types.contains(&kind))
            && self
                .name
                .as_deref()
                .is_none_or(|name| event.name.as_deref() == Some(name))
    }
}

fn known_type(name: &str) -> Result<&'static str, ApiError> {
    EventKind::TYPES
        .into_iter()
        .find(|known| *known == name)
        .ok_or_else(|| {
            ApiError::InvalidQuery(format!(
                "unknown event type {name:?}; the types are {}",
                EventKind::TYPES.join(", ")
            ))
        })
}

/// The id in `Last-Event-ID`, if the follower sent one.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::InvalidHeader("Last-Event-ID must be the id of an event (a number)".into())
    })
}

fn sse_event(event: &Arc<Event>) -> sse::Event {
    let data = serde_json::to_string(event.as_ref()).unwrap_or_else(|err| {
        // Serializing an event cannot fail: every map key is a string.
        unreachable!("event serialization failed: {err}")
    });
    sse::Event::default()
        .id(event.id.to_string())
        .event(event.kind.type_name())
        .data(data)
}

fn missed(registry: &Registry, count: u64) -> sse::Event {
    registry.metrics().events_missed.inc_by(count);
    let notice = EventsMissed {
        kind: MISSED,
        missed: count,
    };
    sse::Event::default()
        .event(MISSED)
        .data(serde_json::to_string(&notice).unwrap_or_default())
}
