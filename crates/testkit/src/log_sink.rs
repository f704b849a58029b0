//! A fake log service: a [`FakeService`] named `LogService` that also takes seed `POST /log`
//! lines, records them, and can be told to refuse them for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::watch;

use crate::{DEADLINE, FakeService, eventually};

#[derive(Debug)]
struct Sink {
    lines: watch::Sender<Vec<String>>,
    refusing: AtomicBool,
}

/// A fake `LogService` recording the lines it receives.
#[derive(Debug)]
pub struct LogSink {
    /// The fake service that serves `/log`, `/heartbeat` and `/services`.
    pub service: FakeService,
    sink: Arc<Sink>,
}

impl LogSink {
    /// Starts one (not yet registered anywhere).
    pub async fn spawn() -> Self {
        let sink = Arc::new(Sink {
            lines: watch::Sender::new(Vec::new()),
            refusing: AtomicBool::new(false),
        });
        let routes = Router::new().route("/log", post(log)).with_state(Arc::clone(&sink));
        let service = FakeService::spawn_with_routes("LogService", &[], routes).await;
        Self { service, sink }
    }

    /// While `refuse` is true, `/log` answers 503 and records nothing.
    pub fn refuse(&self, refuse: bool) {
        self.sink.refusing.store(refuse, Ordering::SeqCst);
    }

    /// The lines received so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.sink.lines.borrow().clone()
    }

    /// Waits until a received line contains `text`, and returns every line received by then.
    pub async fn wait_for_line(&self, text: &str) -> Vec<String> {
        eventually(&format!("a log line with {text:?}"), DEADLINE, || async {
            let lines = self.lines();
            lines.iter().any(|l| l.contains(text)).then_some(lines)
        })
        .await
    }
}

async fn log(State(sink): State<Arc<Sink>>, body: Bytes) -> StatusCode {
    if sink.refusing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if body.is_empty() {
        return StatusCode::BAD_REQUEST;
    }
    let line = String::from_utf8_lossy(&body).into_owned();
    sink.lines.send_modify(|lines| lines.push(line));
    StatusCode::OK
}
