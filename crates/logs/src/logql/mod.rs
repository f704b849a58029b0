//! The subset of LogQL the log service answers (Grafana's Loki data source, `logcli`): a stream
//! selector, then line filters, the `json` and `logfmt` parsers and label filters, in any order.
//!
//! ```text
//! {service="GradingService", level=~"warn|error"} |= "503" != "health" | json | status >= 500
//! ```
//!
//! - selector matchers `name op "value"` with `=`, `!=`, `=~`, `!~` (regexes anchored, as in
//!   Loki); the labels are `service` (also `service_name`), `level` (also `detected_level`) and
//!   every field a record carries (OTLP attributes, Loki's other labels and structured metadata);
//! - line filters `|= "text"`, `!= "text"`, `|~ "regex"`, `!~ "regex"` on the record's message;
//! - `| json` (the message's top-level JSON members become labels) and `| logfmt` (its
//!   `key=value` pairs);
//! - label filters `| name op "value"` (the four string operators) and `| name op number`
//!   (`==`, `!=`, `>`, `>=`, `<`, `<=`), a missing or non-numeric label failing a numeric one.
//!
//! Metric queries (`count_over_time` and `rate`, under `sum`) are in `metric`, answered by
//! Loki's query endpoints only. Anything else (`line_format`, `unwrap`, `and`/`or` between
//! label filters...) is refused with an error naming the unsupported part. Strings are
//! double-quoted with `\"` and `\\` escapes, or in backticks, raw.

use std::collections::BTreeMap;

mod metric;

pub(crate) use metric::{Expr, Metric, parse_expr};
use regex::Regex;
use rollcall_wire::Level;
use serde_json::Value;

/// A parsed query.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// The stream selector's matchers.
    pub matchers: Vec<Matcher>,
    /// What follows it, in order.
    pub stages: Vec<Stage>,
}

/// One `name op value` test of a label.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    pub name: String,
    pub test: Test,
}

/// How a label's value is tested.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Equal(String),
    NotEqual(String),
    Matches(Regex),
    NotMatches(Regex),
    /// A numeric comparison: the operator and the number.
    Number(&'static str, f64),
}

/// One stage after the selector.
#[derive(Debug, Clone)]
pub(crate) enum Stage {
    Contains(String),
    NotContains(String),
    LineMatches(Regex),
    LineNotMatches(Regex),
    Json,
    Logfmt,
    Label(Matcher),
}

impl Test {
    fn passes(&self, value: Option<&str>) -> bool {
        match self {
            Test::Equal(wanted) => value.unwrap_or("") == wanted,
            Test::NotEqual(unwanted) => value.unwrap_or("") != unwanted,
            Test::Matches(regex) => regex.is_match(value.unwrap_or("")),
            Test::NotMatches(regex) => !regex.is_match(value.unwrap_or("")),
            Test::Number(op, number) => value
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| match *op {
                    "==" => (v - number).abs() < f64::EPSILON,
                    "!=" => (v - number).abs() >= f64::EPSILON,
                    ">" => v > *number,
                    ">=" => v >= *number,
                    "<" => v < *number,
                    _ => v <= *number,
                }),
        }
    }
}

/// A stored record as a query sees it.
pub(crate) struct Record<'a> {
    pub service: &'a str,
    pub level: Level,
    pub message: &'a str,
    pub fields: &'a serde_json::Map<String, Value>,
}

impl Query {
    /// Whether `record` passes the selector and every stage.
    pub fn matches(&self, record: &Record<'_>) -> bool {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in record.fields {
            labels.insert(name.clone(), text_of(value));
        }
        let level = record.level.to_string();
        let label = |labels: &BTreeMap<String, String>, name: &str| -> Option<String> {
            match name {
                "service" | "service_name" => Some(record.service.to_owned()),
                "level" | "detected_level" => Some(level.clone()),
                other => labels.get(other).cloned(),
            }
        };
        if !self
            .matchers
            .iter()
            .all(|m| m.test.passes(label(&labels, &m.name).as_deref()))
        {
            return false;
        }
        for stage in &self.stages {
            let passed = match stage {
                Stage::Contains(text) => record.message.contains(text.as_str()),
                Stage::NotContains(text) => !record.message.contains(text.as_str()),
                Stage::LineMatches(regex) => regex.is_match(record.message),
                Stage::LineNotMatches(regex) => !regex.is_match(record.message),
                Stage::Json => {
                    if let Ok(Value::Object(members)) = serde_json::from_str::<Value>(record.message) {
                        for (name, value) in members {
                            labels.insert(name, text_of(&value));
                        }
                    }
                    true
                }
                Stage::Logfmt => {
                    labels.extend(logfmt(record.message));
                    true
                }
                Stage::Label(matcher) => matcher.test.passes(label(&labels, &matcher.name).as_deref()),
            };
            if !passed {
                return false;
            }
        }
        true
    }

    /// The service the selector names exactly, if it does (for the store's fast path).
    pub fn service(&self) -> Option<&str> {
        self.exact(&["service", "service_name"])
    }

    /// The lowest level the selector's level matchers let through, when they rule out lower
    /// ones (for the store's fast path: blocks of only lower levels are never read).
    pub fn min_level(&self) -> Option<Level> {
        let levels = ["level", "detected_level"];
        let tests: Vec<&Test> = self
            .matchers
            .iter()
            .filter(|m| levels.contains(&m.name.as_str()))
            .map(|m| &m.test)
            .collect();
        if tests.is_empty() {
            return None;
        }
        Level::ALL
            .into_iter()
            .find(|level| tests.iter().all(|test| test.passes(Some(&level.to_string()))))
            .filter(|lowest| *lowest > Level::ALL[0])
    }

    /// The first line filter's text when it comes before any parser (for the store's fast
    /// path: a block without it is never decoded).
    pub fn first_contains(&self) -> Option<&str> {
        match self.stages.first() {
            Some(Stage::Contains(text)) => Some(text),
            _ => None,
        }
    }

    fn exact(&self, names: &[&str]) -> Option<&str> {
        self.matchers.iter().find_map(|m| match &m.test {
            Test::Equal(value) if names.contains(&m.name.as_str()) => Some(value.as_str()),
            _ => None,
        })
    }
}

/// A label's value as text: a string as it is, anything else as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The `key=value` pairs of a logfmt line (values bare or double-quoted).
fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        let value = if let Some(after) = rest.strip_prefix('=') {
            if let Some(quoted) = after.strip_prefix('"') {
                let (value, used) = unquote(quoted);
                rest = &quoted[used..];
                value
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                rest = &after[end..];
                after[..end].to_owned()
            }
        } else {
            String::new()
        };
        if !key.is_empty() {
            pairs.push((key.to_owned(), value));
        }
        rest = rest.trim_start();
    }
    pairs
}

/// The text of a double-quoted string whose opening quote is gone, and the bytes it used
/// (closing quote included).
fn unquote(text: &str) -> (String, usize) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return (value, at + 1),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            c => value.push(c),
        }
    }
    (value, text.len())
}

/// Why a query cannot be read.
pub(crate) type ParseError = String;

/// Reads `text` as a log query of the supported LogQL.
pub(crate) fn parse(text: &str) -> Result<Query, ParseError> {
    let mut parser = Parser { rest: text.trim() };
    let query = log_query(&mut parser)?;
    parser.skip_space();
    if !parser.rest.is_empty() {
        return Err(parser.expected("the end of the query"));
    }
    Ok(query)
}

/// A log query at the start of `parser`, up to its end or a range (`[5m]`).
fn log_query(parser: &mut Parser<'_>) -> Result<Query, ParseError> {
    if !parser.rest.starts_with('{') {
        return Err(parser.not_a_start(
            "metric queries are answered by /loki/api/v1/query_range and query",
            "a query begins with a stream selector, {service=\"...\"}",
        ));
    }
    parser.rest = &parser.rest[1..];
    let mut matchers = Vec::new();
    loop {
        parser.skip_space();
        if parser.eat("}") {
            break;
        }
        if !matchers.is_empty() && !parser.eat(",") {
            return Err(parser.expected("a , or } in the stream selector"));
        }
        parser.skip_space();
        let name = parser.ident()?;
        parser.skip_space();
        let op = parser.string_op().ok_or_else(|| parser.expected("=, !=, =~ or !~"))?;
        parser.skip_space();
        let value = parser.string()?;
        matchers.push(Matcher {
            test: string_test(op, value)?,
            name,
        });
    }
    if matchers.is_empty() {
        return Err("a stream selector needs at least one matcher, {service=\"...\"}".to_owned());
    }
    let mut stages = Vec::new();
    loop {
        parser.skip_space();
        if parser.rest.is_empty() || parser.rest.starts_with(['[', ')']) {
            break;
        }
        let line_op = ["|=", "!=", "|~", "!~"].into_iter().find(|op| parser.eat(op));
        if let Some(op) = line_op {
            parser.skip_space();
            let text = parser.string()?;
            stages.push(match op {
                "|=" => Stage::Contains(text),
                "!=" => Stage::NotContains(text),
                "|~" => Stage::LineMatches(regex_of(&text, false)?),
                _ => Stage::LineNotMatches(regex_of(&text, false)?),
            });
            continue;
        }
        if !parser.eat("|") {
            return Err(parser.expected("|, |=, !=, |~ or !~"));
        }
        parser.skip_space();
        let name = parser.ident()?;
        match name.as_str() {
            "json" => stages.push(Stage::Json),
            "logfmt" => stages.push(Stage::Logfmt),
            "line_format" | "label_format" | "unwrap" | "drop" | "keep" | "pattern" | "regexp" | "unpack"
            | "decolorize" | "distinct" => return Err(format!("unsupported: | {name}")),
            _ => {
                parser.skip_space();
                stages.push(Stage::Label(parser.label_filter(name)?));
            }
        }
    }
    Ok(Query { matchers, stages })
}

fn string_test(op: &str, value: String) -> Result<Test, ParseError> {
    Ok(match op {
        "=" => Test::Equal(value),
        "!=" => Test::NotEqual(value),
        "=~" => Test::Matches(regex_of(&value, true)?),
        _ => Test::NotMatches(regex_of(&value, true)?),
    })
}

/// A regex of the query (`anchored` for label matchers, as Loki anchors them), with a bound on
/// its compiled size.
fn regex_of(text: &str, anchored: bool) -> Result<Regex, ParseError> {
    let pattern = if anchored {
        format!("^(?:{text})$")
    } else {
        text.to_owned()
    };
    regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("the regex {text:?} cannot be read: {e}"))
}

struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// Why a query cannot begin here: an unsupported function (`why_not` says more), or
    /// something else (`expected`).
    fn not_a_start(&self, why_not: &str, expected: &str) -> ParseError {
        let word: String = self
            .rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if self.rest[word.len()..].trim_start().starts_with('(') {
            format!("unsupported: {word} ({why_not})")
        } else {
            expected.to_owned()
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        let near: String = self.rest.chars().take(20).collect();
        format!("expected {what} at {near:?}")
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return Err(self.expected("a label name"));
        }
        let ident = self.rest[..end].to_owned();
        self.rest = &self.rest[end..];
        Ok(ident)
    }

    fn string_op(&mut self) -> Option<&'static str> {
        ["=~", "!~", "!=", "="].into_iter().find(|op| self.eat(op))
    }

    fn string(&mut self) -> Result<String, ParseError> {
        if let Some(raw) = self.rest.strip_prefix('`') {
            let end = raw.find('`').ok_or("a `string` has no closing backtick")?;
            self.rest = &raw[end + 1..];
            return Ok(raw[..end].to_owned());
        }
        let Some(quoted) = self.rest.strip_prefix('"') else {
            return Err(self.expected("a \"string\""));
        };
        let (value, used) = unquote(quoted);
        if used > quoted.len() || !quoted[..used].ends_with('"') {
            return Err("a \"string\" has no closing quote".to_owned());
        }
        self.rest = &quoted[used..];
        Ok(value)
    }

    fn label_filter(&mut self, name: String) -> Result<Matcher, ParseError> {
        if let Some(op) = ["==", ">=", "<=", ">", "<"].into_iter().find(|op| self.eat(op)) {
            self.skip_space();
            return Ok(Matcher {
                test: Test::Number(op, self.number()?),
                name,
            });
        }
        let op = self
            .string_op()
            .ok_or_else(|| self.expected("a label filter's operator (=, !=, =~, !~, ==, >, >=, <, <=)"))?;
        self.skip_space();
        if op == "!=" && !self.rest.starts_with(['"', '`']) {
            return Ok(Matcher {
                test: Test::Number("!=", self.number()?),
                name,
            });
        }
        if op == "=" && !self.rest.starts_with(['"', '`']) {
            return Err(format!(
                "unsupported: {name} = {} (compare a number with ==)",
                self.rest.split_whitespace().next().unwrap_or_default()
            ));
        }
        let value = self.string()?;
        Ok(Matcher {
            test: string_test(op, value)?,
            name,
        })
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(self.rest.len());
        let number = self.rest[..end].parse().map_err(|_| self.expected("a number"))?;
        self.rest = &self.rest[end..];
        Ok(number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(fields: &'a serde_json::Map<String, Value>, level: Level, message: &'a str) -> Record<'a> {
        Record {
            service: "GradingService",
            level,
            message,
            fields,
        }
    }

    fn fields(json: &str) -> serde_json::Map<String, Value> {
        serde_json::from_str(json).expect("an object")
    }

    #[test]
    fn a_selector_matches_service_level_and_fields() {
        let f = fields(r#"{"route":"/grades","status":503}"#);
        let error = record(&f, Level::Error, "grading answered 503");
        for query in [
            r#"{service="GradingService"}"#,
            r#"{service_name="GradingService", level=~"warn|error"}"#,
            r#"{service=~"Grad.*", route="/grades"}"#,
            r#"{service!="Portal"}"#,
        ] {
            assert!(parse(query).expect(query).matches(&error), "{query}");
        }
        for query in [
            r#"{service="Portal"}"#,
            r#"{level="warn"}"#,
            r#"{service=~"Grad"}"#,
            r#"{route!~"/gr.*"}"#,
        ] {
            assert!(!parse(query).expect(query).matches(&error), "{query}");
        }
    }

    #[test]
    fn line_filters_parsers_and_label_filters_run_in_order() {
        let none = fields("{}");
        let json = record(&none, Level::Info, r#"{"status":503,"path":"/students/7"}"#);
        let logfmt = record(&none, Level::Info, r#"status=200 path="/students 7" slow"#);
        let q = |text: &str| parse(text).expect(text);
        assert!(q(r#"{service="GradingService"} |= "503" != "health" | json | status >= 500"#).matches(&json));
        assert!(!q(r#"{service="GradingService"} | json | status < 500"#).matches(&json));
        assert!(q(r#"{service="GradingService"} | json | path =~ "/students/.*""#).matches(&json));
        assert!(q(r#"{service="GradingService"} | logfmt | status == 200 | path = "/students 7""#).matches(&logfmt));
        assert!(q(r#"{service="GradingService"} |~ "status=2\\d\\d" !~ "fast""#).matches(&logfmt));
        assert!(
            !q(r#"{service="GradingService"} | status >= 100"#).matches(&logfmt),
            "no parser: no status label"
        );
        assert_eq!(
            q(r#"{service="GradingService", level="error"} |= "disk""#).first_contains(),
            Some("disk")
        );
        assert_eq!(q(r#"{service="A", level="error"}"#).min_level(), Some(Level::Error));
        assert_eq!(q(r#"{level=~"warn|error"}"#).min_level(), Some(Level::Warn));
        assert_eq!(q(r#"{level!="warn"}"#).min_level(), None, "trace passes");
    }

    #[test]
    fn what_is_not_supported_is_named() {
        for (query, named) in [
            (r#"count_over_time({service="A"}[5m])"#, "count_over_time"),
            (r#"{service="A"} | line_format "{{.msg}}""#, "line_format"),
            (r#"{service="A"} | unwrap latency"#, "unwrap"),
            ("{}", "at least one matcher"),
            (r#"{service="A""#, "expected"),
            (r#"{service=~"("}"#, "regex"),
            (r#"{service="A"} |= "unclosed"#, "closing quote"),
        ] {
            let error = parse(query).expect_err(query);
            assert!(error.contains(named), "{query}: {error}");
        }
    }
}
