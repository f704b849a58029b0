//! Queries over the store: filters by service, minimum level, time range and substring, newest
//! (or oldest) first, a page at a time.
//!
//! Blocks whose header rules them out (services, level range, time range, ids past the cursor)
//! are never read; a substring is first looked for in a block's raw bytes, so a block without it
//! is never decoded. Queries are blocking file reads: run them on the blocking pool.

use std::borrow::Cow;

use memchr::memmem;
use rollcall_wire::Level;
use serde::Deserialize;

use crate::record::Entry;
use crate::store::{BlockHeader, Payload, Store, read, read_payload};

/// What a record must be to match. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// Any of these services.
    pub services: Vec<String>,
    pub min_level: Option<Level>,
    /// Unix nanoseconds, inclusive.
    pub since: Option<i64>,
    /// Unix nanoseconds, exclusive.
    pub until: Option<i64>,
    /// A substring of the message.
    pub contains: Option<String>,
    /// A LogQL query every record must pass besides (the fields above are its fast path).
    pub logql: Option<std::sync::Arc<crate::logql::Query>>,
}

/// A whole stored line, for a LogQL query.
#[derive(Deserialize)]
struct Full<'a> {
    #[serde(borrow)]
    service: Cow<'a, str>,
    level: Level,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Full<'_> {
    fn passes(&self, query: &crate::logql::Query) -> bool {
        query.matches(&crate::logql::Record {
            service: &self.service,
            level: self.level,
            message: &self.message,
            fields: &self.fields,
        })
    }
}

/// Whether stored `line` passes `query` (when there is one).
fn passes_logql(query: Option<&crate::logql::Query>, line: &[u8]) -> bool {
    query.is_none_or(|query| serde_json::from_slice::<Full<'_>>(line).is_ok_and(|full| full.passes(query)))
}

impl Filter {
    /// The filter of a LogQL `query` between `since` and `until`: its exact service, lowest
    /// level and first line filter narrow the scan as the native filters do.
    pub(crate) fn of_logql(query: crate::logql::Query, since: Option<i64>, until: Option<i64>) -> Self {
        Self {
            services: query.service().map(str::to_owned).into_iter().collect(),
            min_level: query.min_level(),
            since,
            until,
            contains: query.first_contains().map(str::to_owned),
            logql: Some(std::sync::Arc::new(query)),
        }
    }
}

/// Which way a page runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    NewestFirst,
    OldestFirst,
}

/// The fields a filter needs, borrowed from a stored line.
#[derive(Deserialize)]
struct Light<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    service: Cow<'a, str>,
    level: Level,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

impl Filter {
    fn header_may_match(&self, header: &BlockHeader) -> bool {
        let level_ok = |level: Level| self.min_level.is_none_or(|min| level >= min);
        level_ok(header.max_level)
            && self.since.is_none_or(|since| header.max_time >= since)
            && self.until.is_none_or(|until| header.min_time < until)
            && (self.services.is_empty()
                || header
                    .services
                    .iter()
                    .any(|(s, level)| level_ok(*level) && self.services.iter().any(|w| **w == **s)))
    }

    /// Whether a stored line matches; `header` tells which checks its block already settled.
    fn line_matches(&self, line: &[u8], header: &BlockHeader) -> bool {
        let Ok(light) = serde_json::from_slice::<Light<'_>>(line) else {
            return false;
        };
        let time_settled =
            self.since.is_none_or(|s| header.min_time >= s) && self.until.is_none_or(|u| header.max_time < u);
        let time_ok = time_settled || {
            let time = humantime::parse_rfc3339(&light.time)
                .ok()
                .and_then(|t| crate::record::unix_nanos(t).ok())
                .unwrap_or(0);
            self.since.is_none_or(|s| time >= s) && self.until.is_none_or(|u| time < u)
        };
        time_ok
            && self.min_level.is_none_or(|min| light.level >= min)
            && (self.services.is_empty() || self.services.iter().any(|s| *s == light.service))
            && self.contains.as_deref().is_none_or(|c| light.message.contains(c))
            && passes_logql(self.logql.as_deref(), line)
    }

    /// Whether a freshly stored entry matches (for tails).
    pub(crate) fn entry_matches(&self, entry: &Entry) -> bool {
        self.min_level.is_none_or(|min| entry.level >= min)
            && self.since.is_none_or(|s| entry.time >= s)
            && self.until.is_none_or(|u| entry.time < u)
            && (self.services.is_empty() || self.services.iter().any(|s| **s == *entry.service))
            && self
                .contains
                .as_deref()
                .is_none_or(|c| serde_json::from_slice::<Light<'_>>(&entry.line).is_ok_and(|l| l.message.contains(c)))
            && passes_logql(self.logql.as_deref(), &entry.line)
    }

    /// Byte patterns one of which every matching stored line contains, from the service and
    /// level filters (stored lines begin `{"time":...,"service":...,"level":...`), so that only
    /// the lines holding one are decoded. Empty when those filters are empty.
    fn line_patterns(&self) -> Vec<Vec<u8>> {
        let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
        let levels: Vec<Level> = match self.min_level {
            Some(min) => Level::ALL.into_iter().filter(|l| *l >= min).collect(),
            None => Vec::new(),
        };
        match (self.services.is_empty(), levels.is_empty()) {
            (true, true) => Vec::new(),
            (true, false) => levels
                .iter()
                .map(|l| format!(r#","level":"{l}","#).into_bytes())
                .collect(),
            (false, true) => self
                .services
                .iter()
                .map(|s| format!(r#","service":{},"level":"#, quoted(s)).into_bytes())
                .collect(),
            (false, false) => self
                .services
                .iter()
                .flat_map(|s| {
                    levels
                        .iter()
                        .map(move |l| format!(r#","service":{},"level":"{l}","#, quoted(s)).into_bytes())
                })
                .collect(),
        }
    }

    /// The substring as it appears inside a stored line (JSON-escaped), to search raw bytes.
    fn needle(&self) -> Option<Vec<u8>> {
        let contains = self.contains.as_deref()?;
        let quoted = serde_json::to_string(contains).ok()?;
        Some(quoted.as_bytes()[1..quoted.len() - 1].to_vec())
    }
}

/// Where each line of a payload starts.
fn line_starts(payload: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(
        memchr::memchr_iter(b'\n', payload)
            .map(|i| i + 1)
            .filter(|i| *i < payload.len()),
    );
    starts
}

/// The lines (by index) that hold one of the patterns, in order; every line when there are none.
fn candidate_lines(payload: &[u8], starts: &[usize], finders: &[memmem::Finder<'_>]) -> Vec<usize> {
    if finders.is_empty() {
        return (0..starts.len()).collect();
    }
    let mut lines: Vec<usize> = finders
        .iter()
        .flat_map(|finder| finder.find_iter(payload))
        .map(|at| starts.partition_point(|start| *start <= at) - 1)
        .collect();
    lines.sort_unstable();
    lines.dedup();
    lines
}

/// One page: the records as JSON objects with their ids, and the cursor of the next page.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// `(id, record)` pairs.
    pub records: Vec<(u64, Vec<u8>)>,
    pub next_cursor: Option<u64>,
}

/// A stored line as the API shows it: `{"id":N,` and the rest of the line.
pub(crate) fn render(id: u64, line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 24);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(b',');
    out.extend_from_slice(&line[1..]);
    out
}

/// Runs a query. `cursor` is the id of the last record of the previous page.
pub(crate) fn run(
    store: &Store,
    filter: &Filter,
    order: Order,
    cursor: Option<u64>,
    limit: usize,
) -> std::io::Result<Page> {
    let mut page = Page::default();
    if limit == 0 {
        return Ok(page);
    }
    let needle = filter.needle();
    let finder = needle.as_deref().map(memmem::Finder::new);
    let patterns = filter.line_patterns();
    let finders: Vec<memmem::Finder<'_>> = patterns.iter().map(memmem::Finder::new).collect();
    let mut segments = store.segments();
    if order == Order::NewestFirst {
        segments.reverse();
    }
    for segment in &segments {
        let count = read(&segment.blocks).len();
        for position in 0..count {
            let index = if order == Order::NewestFirst {
                count - 1 - position
            } else {
                position
            };
            let block = std::sync::Arc::clone(&read(&segment.blocks)[index]);
            let header = &block.header;
            let past_cursor = match (order, cursor) {
                (Order::NewestFirst, Some(c)) => header.first >= c,
                (Order::OldestFirst, Some(c)) => block.end() <= c + 1,
                (_, None) => false,
            };
            if past_cursor || !filter.header_may_match(header) {
                continue;
            }
            if block.is_damaged() {
                continue; // found damaged by an earlier read, counted then
            }
            let Payload::Intact(payload) = read_payload(&segment.file, &block)? else {
                store.metrics().damaged_blocks.inc();
                tracing::error!(
                    segment = %segment.path.display(),
                    first = header.first,
                    count = header.count,
                    "a block failed its checksum: its records are skipped, never served"
                );
                continue;
            };
            if finder.as_ref().is_some_and(|f| f.find(&payload).is_none()) {
                continue;
            }
            let starts = line_starts(&payload);
            let candidates = candidate_lines(&payload, &starts, &finders);
            let ids = candidates.into_iter().map(|j| {
                let end = starts.get(j + 1).map_or(payload.len(), |next| next - 1);
                (header.first + j as u64, &payload[starts[j]..end])
            });
            let mut take = |id: u64, line: &[u8]| {
                let in_page = match (order, cursor) {
                    (Order::NewestFirst, Some(c)) => id < c,
                    (Order::OldestFirst, Some(c)) => id > c,
                    (_, None) => true,
                };
                if in_page && filter.line_matches(line, header) {
                    page.records.push((id, render(id, line)));
                    if page.records.len() == limit {
                        page.next_cursor = Some(id);
                        return true;
                    }
                }
                false
            };
            let full = if order == Order::NewestFirst {
                ids.rev().any(|(id, line)| take(id, line))
            } else {
                { ids }.any(|(id, line)| take(id, line))
            };
            if full {
                return Ok(page);
            }
        }
    }
    Ok(page)
}
