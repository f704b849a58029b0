//! One open tail, whatever carries it (server-sent events at `/v1/records/tail`, a WebSocket at
//! Loki's `/loki/api/v1/tail`): the past matches it starts with, then every new match as it is
//! committed, and a count of the records it missed when its client was too slow (the store's
//! broadcast dropped them; ingest never waits for a tail). At most `--max-tails` are open.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, broadcast};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::records::run_query;
use crate::error::ApiError;
use crate::query::{Filter, Order, render};
use crate::store::{Committed, Store};

/// The most past matches a resumed tail catches up with.
const MAX_CATCH_UP: usize = 10_000;

/// What a tail hands its client next.
pub(super) enum Followed {
    /// A matching record: its id and its JSON as the API shows it.
    Record(u64, Vec<u8>),
    /// This many records (of any service) went by unseen.
    Dropped(u64),
}

/// One open tail.
pub(super) struct Tail {
    pending: VecDeque<Followed>,
    live: broadcast::Receiver<Arc<Committed>>,
    filter: Filter,
    last_sent: Option<u64>,
    /// The id the next committed block should start at; a later one means records were missed.
    expected_next: u64,
    shutdown: CancellationToken,
    open: OpenTail,
}

/// Counts the tail as open until it ends, and holds its place among the bounded tails.
struct OpenTail {
    store: Store,
    _permit: OwnedSemaphorePermit,
}

impl Drop for OpenTail {
    fn drop(&mut self) {
        self.store.metrics().tails.dec();
    }
}

impl Tail {
    /// Opens a tail of `filter`: every match after id `resume_after` when given, else the last
    /// `last` matches, then the live ones. 429 when every tail slot is taken.
    pub(super) async fn open(
        state: &AppState,
        filter: Filter,
        resume_after: Option<u64>,
        last: usize,
    ) -> Result<Self, ApiError> {
        let permit = Arc::clone(&state.tails)
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyTails)?;
        // Subscribe before reading the past, so nothing falls between the two.
        let live = state.store.subscribe();
        let expected_next = state.store.next_id();
        let past = if let Some(id) = resume_after {
            run_query(&state.store, filter.clone(), Order::OldestFirst, Some(id), MAX_CATCH_UP)
                .await?
                .records
        } else {
            let mut newest = run_query(&state.store, filter.clone(), Order::NewestFirst, None, last)
                .await?
                .records;
            newest.reverse();
            newest
        };
        let last_sent = past.last().map(|(id, _)| *id).or(resume_after);
        let pending = past
            .into_iter()
            .map(|(id, record)| Followed::Record(id, record))
            .collect();
        state.store.metrics().tails.inc();
        Ok(Self {
            pending,
            live,
            filter,
            last_sent,
            expected_next,
            shutdown: CancellationToken::clone(&state.shutdown),
            open: OpenTail {
                store: state.store.clone(),
                _permit: permit,
            },
        })
    }

    /// What to hand the client next; `None` once the service stops.
    pub(super) async fn next(&mut self) -> Option<Followed> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            let received = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                received = self.live.recv() => received,
            };
            match received {
                Ok(block) => self.take(&block),
                // The next block tells how many records were missed.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn take(&mut self, block: &Committed) {
        if block.first > self.expected_next {
            let missed = block.first - self.expected_next;
            self.open.store.metrics().tail_dropped.inc_by(missed);
            self.pending.push_back(Followed::Dropped(missed));
        }
        self.expected_next = self.expected_next.max(block.first + block.entries.len() as u64);
        for (id, entry) in (block.first..).zip(&block.entries) {
            if self.last_sent.is_some_and(|last| id <= last) || !self.filter.entry_matches(entry) {
                continue;
            }
            self.pending.push_back(Followed::Record(id, render(id, &entry.line)));
            self.last_sent = Some(id);
        }
    }
}
