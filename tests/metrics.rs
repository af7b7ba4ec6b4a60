//! `GET /metrics`: Prometheus text whose counters and histograms move exactly as events,
//! duplicates, poison messages and HTTP requests go through.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{DEADLINE, TestApp, spawn_app};
use serde_json::{Value, json};

/// One sample: metric name and its labels.
type Series = (String, BTreeMap<String, String>);

/// Parses the text exposition format into sample values (comments skipped).
fn parse_exposition(text: &str) -> BTreeMap<Series, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .expect("a sample line ends in its value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let labels = rest.strip_suffix('}').expect("labels end with }");
                (name.to_owned(), parse_labels(labels))
            }
        };
        let previous = samples.insert((name, labels), value);
        assert!(previous.is_none(), "a series came twice: {line}");
    }
    samples
}

/// `a="x",b="y \"q\""` → {a: x, b: y "q"}; values may hold braces, commas and escapes.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a label value ends with a quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().unwrap().1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

struct Scrape(BTreeMap<Series, f64>);

impl Scrape {
    /// A sample's value; a labelled series not seen yet counts as 0.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }
}

/// `GET /metrics` without credentials.
async fn scrape(app: &TestApp) -> Scrape {
    let res = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape(parse_exposition(&res.text().await.unwrap()))
}

/// Polls the app's in-process metrics (not the endpoint, whose own counter would move).
async fn wait_until(app: &TestApp, what: &str, done: impl Fn(&meterd::metrics::Metrics) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done(app.metrics()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event(id: &str, duration_ms: u64, timestamp: chrono::DateTime<Utc>) -> Value {
    json!({"id": id, "tenant": "acme", "function": "f", "timestamp": timestamp.to_rfc3339(),
           "duration_ms": duration_ms, "memory_mb": 128})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_exactly_with_events_duplicates_poison_and_requests() {
    let app = spawn_app().await;
    let now = Utc::now();
    let before = scrape(&app).await;
    for code in meterd::ingest::ErrorCode::ALL {
        assert!(
            before.0.contains_key(&(
                "meterd_messages_dead_lettered_total".to_owned(),
                [("code".to_owned(), code.as_str().to_owned())].into()
            )),
            "every code is exposed from the start: {}",
            code.as_str()
        );
    }

    // AMQP: one batch of three new events, then one of a duplicate and a new event.
    app.publish_json(&json!([
        event("1", 10, now),
        event("2", 10, now),
        event("3", 10, now)
    ]))
    .await;
    wait_until(&app, "the first batch", |m| m.events_accepted.get() == 3).await;
    app.publish_json(&json!([event("2", 10, now), event("4", 10, now)]))
        .await;
    wait_until(&app, "the second batch", |m| {
        m.events_duplicate.get() == 1 && m.events_accepted.get() == 4
    })
    .await;
    // Poison: no events, so no batch is committed for them.
    app.publish(b"{not json").await;
    app.publish_json(&event("old", 10, now - chrono::Duration::days(91)))
        .await;
    app.publish_json(&event("long", 3_600_001, now)).await;
    wait_until(&app, "the dead letters", |m| {
        ["invalid_json", "too_old", "invalid_value"]
            .iter()
            .all(|c| m.messages_dead_lettered.with_label_values(&[c]).get() == 1)
    })
    .await;
    // HTTP: one duplicate and one new event, a rejected body, a request without a key.
    let (status, body) = app
        .post(
            "/v1/events",
            Some(app.admin_key()),
            &json!([event("4", 10, now), event("5", 10, now)]),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 1, "duplicates": 1}))
    );
    let (status, _) = app
        .post(
            "/v1/events",
            Some(app.admin_key()),
            &event("bad", 3_600_001, now),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = app.get("/v1/tenants", None).await;
    assert_eq!(status, 401);

    let after = scrape(&app).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(delta("meterd_events_accepted_total", &[]), 5.0);
    assert_eq!(delta("meterd_events_duplicate_total", &[]), 2.0);
    for code in meterd::ingest::ErrorCode::ALL {
        let code = code.as_str();
        let expected = match code {
            "invalid_json" | "too_old" | "invalid_value" => 1.0,
            _ => 0.0,
        };
        assert_eq!(
            delta("meterd_messages_dead_lettered_total", &[("code", code)]),
            expected,
            "{code}: an HTTP 422 is not a dead letter"
        );
    }
    // Two AMQP batches, of 3 and 2 events (duplicates included); HTTP ingest is not a batch.
    assert_eq!(delta("meterd_batch_events_count", &[]), 2.0);
    assert_eq!(delta("meterd_batch_events_sum", &[]), 5.0);
    assert_eq!(delta("meterd_batch_events_bucket", &[("le", "1")]), 0.0);
    assert_eq!(delta("meterd_batch_events_bucket", &[("le", "10")]), 2.0);
    assert_eq!(delta("meterd_batch_events_bucket", &[("le", "+Inf")]), 2.0);
    assert_eq!(delta("meterd_batch_commit_seconds_count", &[]), 2.0);
    assert!(delta("meterd_batch_commit_seconds_sum", &[]) > 0.0);
    assert_eq!(
        delta("meterd_batch_commit_seconds_bucket", &[("le", "+Inf")]),
        2.0
    );
    // The first scrape is counted once it has been answered, so the second one sees it.
    let http = |method: &str, route: &str, status: &str| {
        delta(
            "meterd_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(http("GET", "/metrics", "200"), 1.0);
    assert_eq!(http("POST", "/v1/events", "200"), 1.0);
    assert_eq!(http("POST", "/v1/events", "422"), 1.0);
    assert_eq!(http("GET", "/v1/tenants", "401"), 1.0);
    assert_eq!(app.counted_requests().await, 5);
}

#[test]
fn label_values_may_hold_braces_commas_and_escapes() {
    let samples = parse_exposition(
        "# HELP x y\nx_total{route=\"/v1/tenants/{tenant}\",status=\"a,\\\"b\\\"\"} 3\nx 1.5\n",
    );
    assert_eq!(
        samples[&(
            "x_total".to_owned(),
            [
                ("route".to_owned(), "/v1/tenants/{tenant}".to_owned()),
                ("status".to_owned(), "a,\"b\"".to_owned())
            ]
            .into()
        )],
        3.0
    );
    assert_eq!(samples[&("x".to_owned(), BTreeMap::new())], 1.5);
}
