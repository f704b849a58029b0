//! LogQL's metric queries, the part the log service answers: `count_over_time` and `rate` of a
//! log query over a range, alone or under `sum` (with `by (labels)` before or after):
//!
//! ```text
//! sum by (level) (rate({service="Portal"} |= "503" [5m]))
//! ```
//!
//! Evaluated at steps from `start` to `end`: at each step `t`, a series' value is the number of
//! its records in `(t - range, t]` (`rate`: that number divided by the range in seconds). A
//! series is a stream (its labels, as the query API shows them); `sum` adds the series that
//! agree on the `by` labels (all of them without `by`). Steps without a record give no point.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ParseError, Parser, Query, log_query};

/// A query: log lines, or numbers over time.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Log(Query),
    Metric(Metric),
}

/// A metric query.
#[derive(Debug, Clone)]
pub(crate) struct Metric {
    /// The log query counted.
    pub query: Query,
    /// The window each point counts over.
    pub range: Duration,
    /// `rate` (per second) rather than `count_over_time`.
    pub rate: bool,
    /// Under `sum`: the labels its series keep (empty: one series).
    pub sum_by: Option<Vec<String>>,
}

/// Reads `text` as a log query or a supported metric query.
pub(crate) fn parse_expr(text: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser { rest: text.trim() };
    if parser.rest.starts_with('{') {
        return super::parse(text).map(Expr::Log);
    }
    let metric = if parser.eat("sum") {
        let mut by = by_clause(&mut parser)?;
        parser.skip_space();
        if !parser.eat("(") {
            return Err(parser.expected("( after sum"));
        }
        let (query, range, rate) = range_function(&mut parser)?;
        parser.skip_space();
        if !parser.eat(")") {
            return Err(parser.expected(") closing sum"));
        }
        if by.is_none() {
            by = by_clause(&mut parser)?;
        }
        Metric {
            query,
            range,
            rate,
            sum_by: Some(by.unwrap_or_default()),
        }
    } else {
        let (query, range, rate) = range_function(&mut parser)?;
        Metric {
            query,
            range,
            rate,
            sum_by: None,
        }
    };
    parser.skip_space();
    if !parser.rest.is_empty() {
        return Err(format!(
            "unsupported: {:?} (the metric queries supported are count_over_time and rate, under sum)",
            parser.rest.chars().take(20).collect::<String>()
        ));
    }
    Ok(Expr::Metric(metric))
}

/// `by (a, b)`, if it comes next.
fn by_clause(parser: &mut Parser<'_>) -> Result<Option<Vec<String>>, ParseError> {
    parser.skip_space();
    if parser.rest.starts_with("without") {
        return Err("unsupported: without (use by)".to_owned());
    }
    if !parser.eat("by") {
        return Ok(None);
    }
    parser.skip_space();
    if !parser.eat("(") {
        return Err(parser.expected("( after by"));
    }
    let mut labels = Vec::new();
    loop {
        parser.skip_space();
        if parser.eat(")") {
            return Ok(Some(labels));
        }
        if !labels.is_empty() && !parser.eat(",") {
            return Err(parser.expected(", or ) in by (...)"));
        }
        parser.skip_space();
        labels.push(parser.ident()?);
    }
}

/// `count_over_time(<log query> [<range>])` or `rate(...)`.
fn range_function(parser: &mut Parser<'_>) -> Result<(Query, Duration, bool), ParseError> {
    parser.skip_space();
    let rate = if parser.eat("count_over_time") {
        false
    } else if parser.eat("rate") {
        true
    } else {
        return Err(parser.not_a_start(
            "the metric queries supported are count_over_time and rate, under sum",
            "a query begins with a stream selector, {service=\"...\"}, or count_over_time( or rate(",
        ));
    };
    parser.skip_space();
    if !parser.eat("(") {
        return Err(parser.expected("("));
    }
    parser.skip_space();
    let query = log_query(parser)?;
    parser.skip_space();
    if !parser.eat("[") {
        return Err(parser.expected("a range, [5m]"));
    }
    let end = parser.rest.find(']').ok_or("a range has no closing ]")?;
    let range = humantime::parse_duration(parser.rest[..end].trim())
        .map_err(|e| format!("the range [{}] is not a duration: {e}", &parser.rest[..end]))?;
    if range.is_zero() {
        return Err("a range is longer than zero".to_owned());
    }
    parser.rest = &parser.rest[end + 1..];
    parser.skip_space();
    if !parser.eat(")") {
        return Err(parser.expected(")"));
    }
    Ok((query, range, rate))
}

impl Metric {
    /// The series key of a record's `stream` labels: all of them, or under `sum` the `by` ones.
    pub fn series_of(&self, stream: BTreeMap<String, String>) -> BTreeMap<String, String> {
        match &self.sum_by {
            None => stream,
            Some(by) => stream.into_iter().filter(|(name, _)| by.contains(name)).collect(),
        }
    }

    /// Each step's value for one series whose records came at `times` (sorted, nanoseconds):
    /// `(step, value)` for the steps with a record in their window.
    pub fn points(&self, times: &[i64], steps: impl Iterator<Item = i64>) -> Vec<(i64, f64)> {
        let range = i64::try_from(self.range.as_nanos()).unwrap_or(i64::MAX);
        steps
            .filter_map(|t| {
                // Records in (t - range, t].
                let first = times.partition_point(|at| *at <= t.saturating_sub(range));
                let last = times.partition_point(|at| *at <= t);
                let count = last.saturating_sub(first);
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                let count = count as f64;
                (count > 0.0).then(|| {
                    (
                        t,
                        if self.rate {
                            count / self.range.as_secs_f64()
                        } else {
                            count
                        },
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(text: &str) -> Metric {
        match parse_expr(text).expect(text) {
            Expr::Metric(metric) => metric,
            Expr::Log(_) => panic!("{text} is a metric query"),
        }
    }

    #[test]
    fn count_over_time_and_rate_read_alone_or_under_sum_by() {
        let plain = metric(r#"count_over_time({service="A"} |= "503" [5m])"#);
        assert_eq!(
            (plain.range, plain.rate, plain.sum_by.clone()),
            (Duration::from_secs(300), false, None)
        );
        let summed = metric(r#"sum by (level) (rate({service="A"}[1m]))"#);
        assert_eq!(
            (summed.rate, summed.sum_by.clone()),
            (true, Some(vec!["level".to_owned()]))
        );
        let after = metric(r#"sum(count_over_time({service="A"}[30s])) by (service, level)"#);
        assert_eq!(after.sum_by, Some(vec!["service".to_owned(), "level".to_owned()]));
        assert!(matches!(parse_expr(r#"{service="A"} |= "x""#), Ok(Expr::Log(_))));
        for (bad, named) in [
            (r#"avg_over_time({service="A"}[5m])"#, "avg_over_time"),
            (r#"sum without (level) (rate({service="A"}[1m]))"#, "without"),
            (r#"rate({service="A"}[often])"#, "duration"),
            (r#"rate({service="A"})"#, "range"),
            (r#"rate({service="A"}[1m]) > 2"#, "unsupported"),
        ] {
            let error = parse_expr(bad).expect_err(bad);
            assert!(error.contains(named), "{bad}: {error}");
        }
    }

    #[test]
    fn a_point_counts_the_records_of_its_window_and_a_rate_divides_by_it() {
        let s = 1_000_000_000_i64;
        let times = [s, 2 * s, 3 * s, 10 * s];
        let count = metric(r#"count_over_time({service="A"}[2s])"#);
        let points = count.points(&times, [2 * s, 3 * s, 6 * s, 10 * s].into_iter());
        // (0, 2] holds 1 and 2; (1, 3] holds 2 and 3; (4, 6] nothing; (8, 10] holds 10.
        assert_eq!(points, [(2 * s, 2.0), (3 * s, 2.0), (10 * s, 1.0)]);
        let rate = metric(r#"rate({service="A"}[2s])"#);
        assert_eq!(rate.points(&times, std::iter::once(3 * s)), [(3 * s, 1.0)]);
    }
}
