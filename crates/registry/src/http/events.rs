//! `GET /v1/events`: every catalog change as server-sent events.
//!
//! Each event has an `id:` (send it back as `Last-Event-ID` to resume), an `event:` name
//! (`reset`, `registered`, `deregistered`, `state_changed`) and a JSON `data:` line. A stream
//! that cannot resume starts with `reset`. A client too slow for the live feed is sent `lagged`
//! and closed; reconnecting with its last id resumes without a gap. Streams end when the
//! registry stops; a comment line keeps idle connections alive.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use rollcall_wire::CatalogEvent;
use tokio::sync::broadcast::error::RecvError;

use crate::core::Core;
use crate::events::Numbered;

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new().route("/v1/events", get(events))
}

#[tracing::instrument(level = "debug", skip_all)]
async fn events(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (first, live) = {
        let catalog = core.catalog();
        core.events.subscribe(&catalog, last_seen)
    };
    // After a lag, say so once and end the stream: the client resumes from its last id.
    let live = stream::unfold(Some(live), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Ok(numbered) => Some((to_sse(&numbered), Some(receiver))),
            Err(RecvError::Lagged(missed)) => {
                let lagged = SseEvent::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{missed}}}"));
                Some((lagged, None))
            }
            Err(RecvError::Closed) => None,
        }
    });
    let stream = stream::iter(first.iter().map(to_sse).collect::<Vec<_>>())
        .chain(live)
        .map(Ok)
        .take_until(core.shutdown.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn to_sse((id, event): &Numbered) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    SseEvent::default()
        .id(id.to_string())
        .event(CatalogEvent::kind(event))
        .data(data)
}
