//! A minimal server-sent-events reader for tests: one message at a time, with a deadline.

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

/// An open event stream.
#[derive(Debug)]
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
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
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` once the stream ended. Fails
    /// the test if nothing comes within [`DEADLINE`].
    pub async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(message) = parse(&block) {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("an event within the deadline")
                .expect("read the event stream")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn parse(block: &str) -> Option<SseMessage> {
    let (mut id, mut event, mut data) = (None, "message".to_owned(), Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => value.clone_into(&mut event),
            "data" => data.push(value),
            _ => {} // comments (empty field) and unknown fields
        }
    }
    (!data.is_empty()).then(|| SseMessage {
        id,
        event,
        data: data.join("\n"),
    })
}
