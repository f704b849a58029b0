//! Grafana's and logcli's reads: Loki's query API with LogQL over a store with known records.

use rollcall_wire::ErrorBody;
use serde_json::{Value, json};

use crate::TestLogs;

/// Six records: two services, three levels, fields, a JSON and a logfmt message.
async fn known(logs: &TestLogs) {
    let records = json!([
        {"time": "2026-12-03T20:00:01Z", "service": "GradingService", "level": "info", "message": "grade added", "fields": {"route": "/grades"}},
        {"time": "2026-12-03T20:00:02Z", "service": "GradingService", "level": "error", "message": "{\"status\":503,\"path\":\"/students/7\"}", "fields": {"route": "/students"}},
        {"time": "2026-12-03T20:00:03Z", "service": "GradingService", "level": "warn", "message": "status=429 path=/grades slow"},
        {"time": "2026-12-03T20:00:04Z", "service": "Portal", "level": "error", "message": "grading answered 503"},
        {"time": "2026-12-03T20:00:05Z", "service": "Portal", "level": "info", "message": "page served"},
        {"time": "2026-12-03T20:00:06Z", "service": "GradingService", "level": "error", "message": "disk full"},
    ]);
    let result: rollcall_wire::BatchResult = logs.post_records(&records).await.json().await.expect("a result");
    assert_eq!(result.accepted, 6);
}

/// `GET /loki/api/v1/query_range` of `query` over the known records' minute: each stream's
/// labels and its lines.
async fn query_range(logs: &TestLogs, query: &str) -> Vec<(Value, Vec<String>)> {
    let answer = logs
        .http
        .get(format!("{}/loki/api/v1/query_range", logs.url))
        .query(&[
            ("query", query),
            ("start", "2026-12-03T20:00:00Z"),
            ("end", "1796328060000000000"),
        ])
        .send()
        .await
        .expect("GET");
    assert_eq!(answer.status(), 200, "{query}");
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "streams");
    body["data"]["result"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|stream| {
            let lines = stream["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| {
                    assert!(
                        v[0].as_str().is_some_and(|ns| ns.parse::<i64>().is_ok()),
                        "nanosecond strings: {v}"
                    );
                    v[1].as_str().expect("a line").to_owned()
                })
                .collect();
            (stream["stream"].clone(), lines)
        })
        .collect()
}

#[tokio::test]
async fn query_range_answers_logql_in_streams_by_service_and_level() {
    let logs = TestLogs::spawn().await;
    known(&logs).await;

    // Streams are keyed by service, level and the records' text fields.
    let errors = query_range(&logs, r#"{service="GradingService", level=~"warn|error"}"#).await;
    let mut keys: Vec<(String, String)> = errors
        .iter()
        .map(|(labels, _)| {
            assert_eq!(labels["service_name"], "GradingService");
            let label = |name: &str| labels[name].as_str().unwrap_or("-").to_owned();
            (label("level"), label("route"))
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("error".to_owned(), "-".to_owned()),
            ("error".to_owned(), "/students".to_owned()),
            ("warn".to_owned(), "-".to_owned())
        ]
    );
    let lines: Vec<&String> = errors.iter().flat_map(|(_, lines)| lines).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");

    let cases: [(&str, &[&str]); 6] = [
        (
            r#"{service=~".+"} |= "503""#,
            &["grading answered 503", r#"{"status":503,"path":"/students/7"}"#],
        ),
        (
            r#"{service="GradingService"} | json | status >= 500"#,
            &[r#"{"status":503,"path":"/students/7"}"#],
        ),
        (
            r#"{service="GradingService"} | logfmt | status == 429 | path = "/grades""#,
            &["status=429 path=/grades slow"],
        ),
        (r#"{route="/grades"}"#, &["grade added"]),
        (r#"{level="info"} != "grade" |~ "pa.e""#, &["page served"]),
        (r#"{service="Portal"} !~ "503|served""#, &[]),
    ];
    for (query, expected) in cases {
        let mut lines: Vec<String> = query_range(&logs, query)
            .await
            .into_iter()
            .flat_map(|(_, l)| l)
            .collect();
        lines.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(lines, expected, "{query}");
    }

    // The same LogQL through the native API.
    let page = logs
        .query("query=%7Bservice%3D%22Portal%22%7D%20%7C%3D%20%22503%22")
        .await;
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].message, "grading answered 503");
}

#[tokio::test]
async fn unsupported_logql_is_a_400_naming_the_part() {
    let logs = TestLogs::spawn().await;
    for (query, named) in [
        (r#"avg_over_time({service="A"}[5m])"#, "avg_over_time"),
        (r#"sum without (level) (rate({service="A"}[5m]))"#, "without"),
        (r#"{service="A"} | line_format "{{.x}}""#, "line_format"),
        ("service=A", "stream selector"),
    ] {
        let answer = logs
            .http
            .get(format!("{}/loki/api/v1/query_range", logs.url))
            .query(&[("query", query)])
            .send()
            .await
            .expect("GET");
        assert_eq!(answer.status(), 400, "{query}");
        let error: ErrorBody = answer.json().await.expect("a JSON error");
        assert_eq!(error.error, "invalid_logql");
        assert!(error.message.contains(named), "{query}: {}", error.message);
    }
}

#[tokio::test]
async fn labels_and_their_values_list_what_the_records_carry() {
    let logs = TestLogs::spawn().await;
    known(&logs).await;
    let range = "start=2026-12-03T20:00:00Z&end=2026-12-03T20:01:00Z";
    let get = |path: String| {
        let http = logs.http.clone();
        async move {
            let body: Value = http.get(path).send().await.expect("GET").json().await.expect("JSON");
            assert_eq!(body["status"], "success");
            body["data"].clone()
        }
    };
    let names = get(format!("{}/loki/api/v1/labels?{range}", logs.url)).await;
    assert_eq!(names, json!(["level", "route", "service", "service_name"]));
    let services = get(format!("{}/loki/api/v1/label/service_name/values?{range}", logs.url)).await;
    assert_eq!(services, json!(["GradingService", "Portal"]));
    let routes = get(format!("{}/loki/api/v1/label/route/values?{range}", logs.url)).await;
    assert_eq!(routes, json!(["/grades", "/students"]));
    // Series: the streams of the records any match[] selects.
    let series = get(format!(
        "{}/loki/api/v1/series?{range}&match[]=%7Blevel%3D%22error%22%7D&match[]=%7Broute%3D%22%2Fgrades%22%7D",
        logs.url
    ))
    .await;
    let mut streams: Vec<(String, String, String)> = series
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            let label = |name: &str| s[name].as_str().unwrap_or("-").to_owned();
            (label("service"), label("level"), label("route"))
        })
        .collect();
    streams.sort();
    let expected = [
        ("GradingService", "error", "-"),
        ("GradingService", "error", "/students"),
        ("GradingService", "info", "/grades"),
        ("Portal", "error", "-"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(streams, expected);
}

#[tokio::test]
async fn the_websocket_tail_sends_the_last_matches_then_each_new_one() {
    use futures_util::StreamExt;
    let logs = TestLogs::spawn().await;
    known(&logs).await;
    let ws = logs.url.replacen("http://", "ws://", 1);
    let query = r#"{service="Portal"}"#;
    let url = reqwest::Url::parse_with_params(
        &format!("{ws}/loki/api/v1/tail"),
        [("query", query), ("limit", "10"), ("start", "2026-12-03T20:00:00Z")],
    )
    .expect("a URL");
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the WebSocket opens");
    let mut next_line = async || {
        let message = tokio::time::timeout(rollcall_testkit::DEADLINE, socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a message");
        let body: Value = serde_json::from_str(message.to_text().expect("text")).expect("JSON");
        let stream = &body["streams"][0];
        assert_eq!(stream["stream"]["service_name"], "Portal");
        stream["values"][0][1].as_str().expect("a line").to_owned()
    };
    assert_eq!(
        next_line().await,
        "grading answered 503",
        "the past matches, oldest first"
    );
    assert_eq!(next_line().await, "page served");
    logs.post_records(&json!([
        {"service": "GradingService", "message": "not this one"},
        {"service": "Portal", "message": "a new page"},
    ]))
    .await;
    assert_eq!(next_line().await, "a new page", "then each new match");

    // A query that cannot be read is refused before the upgrade.
    let bad = format!("{ws}/loki/api/v1/tail?query=count_over_time(x)");
    let refused = tokio_tungstenite::connect_async(bad.as_str())
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("400"), "{refused}");
}

/// `GET /loki/api/v1/{path}` with `pairs`: the answer's `data`.
async fn loki_data(logs: &TestLogs, path: &str, pairs: &[(&str, &str)]) -> Value {
    let answer = logs
        .http
        .get(format!("{}/loki/api/v1/{path}", logs.url))
        .query(pairs)
        .send()
        .await
        .expect("GET");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    body["data"].clone()
}

#[tokio::test]
async fn metric_queries_count_records_per_step_and_sum_them_by_label() {
    let logs = TestLogs::spawn().await;
    known(&logs).await;
    let data = loki_data(
        &logs,
        "query_range",
        &[
            ("query", r#"sum by (level) (count_over_time({service=~".+"}[10s]))"#),
            ("start", "2026-12-03T20:00:00Z"),
            ("end", "2026-12-03T20:00:10Z"),
            ("step", "5s"),
        ],
    )
    .await;
    assert_eq!(data["resultType"], "matrix");
    let mut series: Vec<(String, Vec<(f64, String)>)> = data["result"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|p| {
                    (
                        p[0].as_f64().expect("seconds"),
                        p[1].as_str().expect("a value").to_owned(),
                    )
                })
                .collect();
            (s["metric"]["level"].as_str().expect("level").to_owned(), points)
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let at = |offset: f64| 1_796_328_000.0 + offset;
    let two = |a: &str, b: &str| vec![(at(5.0), a.to_owned()), (at(10.0), b.to_owned())];
    assert_eq!(
        series,
        [
            ("error".to_owned(), two("2", "3")),
            ("info".to_owned(), two("2", "2")),
            ("warn".to_owned(), two("1", "1")),
        ],
        "no point where nothing came (20:00:00)"
    );

    let instant = loki_data(
        &logs,
        "query",
        &[
            ("query", r#"sum(rate({service="Portal"}[1m]))"#),
            ("time", "2026-12-03T20:00:06Z"),
        ],
    )
    .await;
    assert_eq!(instant["resultType"], "vector");
    let value = &instant["result"][0]["value"];
    assert_eq!(value[1], json!((2.0_f64 / 60.0).to_string()), "two records a minute");
}
