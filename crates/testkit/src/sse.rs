//! A server-sent-events reader for tests: one message at a time, with a deadline.

use std::pin::Pin;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};

use crate::DEADLINE;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// Its `id:` field, if any.
    pub id: Option<String>,
    /// Its `event:` field (`message` when absent).
    pub event: String,
    /// Its `data:` lines, joined with newlines.
    pub data: String,
}

impl SseMessage {
    /// The data parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not the JSON expected ({e}): {}", self.data))
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An open event stream.
pub struct SseClient {
    events: Events,
}

impl std::fmt::Debug for SseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseClient")
    }
}

impl SseClient {
    /// `GET url` with `Accept: text/event-stream` (and `Last-Event-ID` when given).
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET event stream");
        assert_eq!(response.status(), 200);
        Self {
            events: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` once the stream ended. Fails
    /// the test if nothing comes within [`DEADLINE`].
    pub async fn next(&mut self) -> Option<SseMessage> {
        loop {
            let event = tokio::time::timeout(DEADLINE, self.events.next())
                .await
                .expect("an event within the deadline")?
                .ok()?;
            if event.data.is_empty() {
                continue;
            }
            let id = (!event.id.is_empty()).then_some(event.id);
            return Some(SseMessage {
                id,
                event: event.event,
                data: event.data,
            });
        }
    }
}
