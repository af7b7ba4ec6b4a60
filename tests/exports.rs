//! Finance CSV exports: columns, order, quoting, the formula guard, agreement with the API,
//! roles, parameter errors, streaming and what happens when a transfer breaks.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use common::{TestApp, inside, label, months_back, spawn_app};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const INVOICE_LINES: &[&str] = &[
    "invoice_number",
    "tenant",
    "period",
    "currency",
    "line_kind",
    "charge",
    "meter",
    "arch",
    "for_period",
    "quantity",
    "unit",
    "amount",
    "invoice_total",
    "finalized_at",
];
const USAGE: &[&str] = &[
    "tenant",
    "function",
    "arch",
    "bucket_start",
    "requests",
    "compute_gb_s",
    "duration_s",
];
const FUNCTION_COSTS: &[&str] = &[
    "invoice_number",
    "tenant",
    "period",
    "function",
    "currency",
    "amount",
];

/// Names a spreadsheet would run, and names that need quoting.
const HYPERLINK: &str = "=HYPERLINK(\"x\")";
const ARITHMETIC: &str = "-1+2";
const QUOTED: &str = "a,b \"c\"";
const NON_ASCII: &str = "grüße-函数";
/// A charge key with a comma, a quote and a newline (event function names may not hold
/// control characters; charge keys may).
const KEY_WITH_NEWLINE: &str = "per \"call\",\nnet";
const FORMULA_KEY: &str = "=SUM(A1)";

/// Requests priced by volume (5 cost 5.00, 15 cost 1.50: late usage makes an adjustment
/// negative), compute by unit.
fn hostile_plan() -> Value {
    json!({
        "name": "hostile, \"quoted\"\nplan", "currency": "USD",
        "charges": [
            {"key": KEY_WITH_NEWLINE, "meter": "requests", "model": "volume",
             "tiers": [{"up_to": "10", "unit_price": "1.00"}, {"up_to": null, "unit_price": "0.10"}]},
            {"key": FORMULA_KEY, "meter": "compute", "model": "unit", "unit_price": "0.05"}
        ],
        "minimum_charge": "0"
    })
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|_| panic!("not a decimal: {s:?}"))
}

/// What a guarded text cell holds.
fn guarded(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

#[derive(Default)]
struct Events(Vec<Value>);

impl Events {
    /// `n` events of 1024 MB for a function at `at`, on `arch`.
    fn add(&mut self, tenant: &str, function: &str, arch: &str, at: DateTime<Utc>, n: usize) {
        for _ in 0..n {
            let i = self.0.len();
            self.0.push(json!({
                "id": uuid::Uuid::new_v4().to_string(), "tenant": tenant, "function": function, "arch": arch,
                "timestamp": at.to_rfc3339(), "duration_ms": 100 + (i * 37) % 900,
                "init_duration_ms": (i % 3) as f64 * 0.5, "memory_mb": 128 + (i % 4) * 384,
            }));
        }
    }

    async fn send(self, app: &TestApp) {
        app.ingest(&self.0).await;
    }
}

async fn put(app: &TestApp, path: &str, body: &Value) {
    app.put_admin(path, body).await;
}

async fn finalize(app: &TestApp, p: NaiveDate) {
    app.finalize(p).await;
}

/// A downloaded CSV: the raw body and its records as parsed by a real CSV reader.
struct Csv {
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    records: Vec<Vec<String>>,
}

async fn download(app: &TestApp, path: &str, key: &str) -> Csv {
    let res = app
        .http
        .get(format!("{}{path}", app.base_url))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.bytes().await.expect("the whole body").to_vec();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    Csv {
        headers,
        records: parse(&body),
        body,
    }
}

/// Parses RFC 4180 CSV and checks that every record ends with CRLF.
fn parse(body: &[u8]) -> Vec<Vec<String>> {
    assert!(!body.starts_with(b"\xEF\xBB\xBF"), "no byte order mark");
    assert!(body.ends_with(b"\r\n"), "the last line ends with CRLF");
    // Outside quoted cells, every line break is CRLF (a doubled quote toggles twice).
    let mut quoted = false;
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => assert_eq!(body[i - 1], b'\r', "a bare LF at byte {i}"),
            b'\r' if !quoted => assert_eq!(body.get(i + 1), Some(&b'\n'), "a bare CR at byte {i}"),
            _ => {}
        }
    }
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body)
        .records()
        .map(|r| r.expect("valid CSV").iter().map(str::to_owned).collect())
        .collect()
}

impl Csv {
    fn header(&self) -> Vec<&str> {
        self.records[0].iter().map(String::as_str).collect()
    }

    fn rows(&self) -> &[Vec<String>] {
        &self.records[1..]
    }

    fn assert_served_as(&self, file_name: &str) {
        assert_eq!(self.headers["content-type"], "text/csv; charset=utf-8");
        assert_eq!(
            self.headers["content-disposition"],
            format!("attachment; filename=\"{file_name}\"").as_str()
        );
    }
}

async fn api_invoice(app: &TestApp, tenant: &str, period: NaiveDate) -> Option<Value> {
    let (status, list) = app
        .get(
            &format!("/v1/tenants/{tenant}/invoices"),
            Some(app.admin_key()),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let summary = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["period"]["start"] == format!("{period}T00:00:00Z"))?;
    let number = summary["number"].as_str().unwrap();
    let (status, doc) = app
        .get(
            &format!("/v1/tenants/{tenant}/invoices/{number}"),
            Some(app.admin_key()),
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    Some(doc)
}

fn text(v: &Value) -> String {
    v.as_str().map(guarded).unwrap_or_default()
}

fn number(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

/// Two months of usage on the hostile plan for tenants whose ids sort differently by code
/// point than by any locale (`-neg` < `Zeta` < `acme`), with late usage that makes a negative
/// adjustment on acme's later invoice.
async fn hostile_invoices(app: &TestApp) -> (NaiveDate, NaiveDate) {
    let (p2, p1) = (months_back(2), months_back(1));
    put(app, "/v1/plans/hostile", &hostile_plan()).await;
    for tenant in ["acme", "-neg", "Zeta"] {
        put(
            app,
            &format!("/v1/tenants/{tenant}"),
            &json!({"plan_id": "hostile", "effective_from": label(p2)}),
        )
        .await;
    }
    let mut events = Events::default();
    events.add("acme", HYPERLINK, "x86_64", inside(p2, 12, 9), 5);
    events.send(app).await;
    finalize(app, p2).await;

    let mut events = Events::default();
    // Late usage for p2: 15 requests now cost 1.50 instead of 5.00.
    events.add("acme", ARITHMETIC, "arm64", inside(p2, 13, 10), 10);
    events.add("acme", HYPERLINK, "x86_64", inside(p1, 2, 8), 3);
    events.add("acme", ARITHMETIC, "x86_64", inside(p1, 3, 8), 4);
    events.add("acme", QUOTED, "arm64", inside(p1, 4, 8), 2);
    events.add("acme", NON_ASCII, "x86_64", inside(p1, 5, 8), 6);
    events.add("-neg", "f", "x86_64", inside(p1, 6, 8), 3);
    events.add("Zeta", "@at", "arm64", inside(p1, 7, 8), 12);
    events.send(app).await;
    finalize(app, p1).await;
    (p2, p1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_exports_match_the_invoices_line_for_line() {
    let app = spawn_app().await;
    let finance = app.issue_key("finance", None).await;
    let (p2, p1) = hostile_invoices(&app).await;

    for period in [p2, p1] {
        let lines = download(
            &app,
            &format!("/v1/exports/invoice-lines.csv?period={}", label(period)),
            &finance,
        )
        .await;
        lines.assert_served_as(&format!("invoice-lines-{}.csv", label(period)));
        assert_eq!(lines.header(), INVOICE_LINES);
        assert!(lines.body.starts_with(b"invoice_number,tenant,"));
        let costs = download(
            &app,
            &format!("/v1/exports/function-costs.csv?period={}", label(period)),
            &finance,
        )
        .await;
        costs.assert_served_as(&format!("function-costs-{}.csv", label(period)));
        assert_eq!(costs.header(), FUNCTION_COSTS);

        // The expected rows, from the API, in the stated order: tenant by code point, then
        // invoice number, then line.
        let (mut expected_lines, mut expected_costs) = (Vec::new(), Vec::new());
        let mut totals = BTreeMap::new();
        for tenant in ["-neg", "Zeta", "acme"] {
            let Some(doc) = api_invoice(&app, tenant, period).await else {
                continue;
            };
            let invoice_number = doc["number"].as_str().unwrap().to_owned();
            totals.insert(invoice_number.clone(), d(doc["total"].as_str().unwrap()));
            for line in doc["lines"].as_array().unwrap() {
                expected_lines.push(vec![
                    invoice_number.clone(),
                    guarded(tenant),
                    label(period),
                    text(&doc["currency"]),
                    text(&line["kind"]),
                    text(&line["charge"]),
                    text(&line["meter"]),
                    text(&line["arch"]),
                    text(&line["for_period"]),
                    number(&line["quantity"]),
                    text(&line["unit"]),
                    number(&line["amount"]),
                    number(&doc["total"]),
                    text(&doc["finalized_at"]),
                ]);
            }
            for share in doc["functions"].as_array().unwrap() {
                expected_costs.push(vec![
                    invoice_number.clone(),
                    guarded(tenant),
                    label(period),
                    text(&share["function"]),
                    text(&doc["currency"]),
                    number(&share["amount"]),
                ]);
            }
        }
        assert!(!expected_lines.is_empty());
        assert_eq!(lines.rows(), expected_lines.as_slice());
        assert_eq!(costs.rows(), expected_costs.as_slice());

        // Amounts per invoice sum to the invoice totals, in both exports.
        for (rows, amount_column) in [(lines.rows(), 11), (costs.rows(), 5)] {
            let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
            for row in rows {
                *sums.entry(row[0].clone()).or_default() += d(&row[amount_column]);
            }
            assert_eq!(sums, totals);
        }
        for row in lines.rows() {
            assert_eq!(
                d(&row[12]),
                totals[&row[0]],
                "invoice_total repeats the total"
            );
        }
    }

    // The hostile names, as a spreadsheet user will see them.
    let lines = download(
        &app,
        &format!("/v1/exports/invoice-lines.csv?period={}", label(p1)),
        &finance,
    )
    .await;
    let acme_adjustment = lines
        .rows()
        .iter()
        .find(|r| r[1] == "acme" && r[4] == "adjustment" && r[5] == KEY_WITH_NEWLINE)
        .expect("acme's requests adjustment, its key with comma, quote and newline intact");
    assert_eq!(
        acme_adjustment[11], "-3.50",
        "a negative amount is not altered"
    );
    assert_eq!(acme_adjustment[8], label(p2), "for_period");
    assert_eq!(acme_adjustment[9], "10", "the late quantity");
    assert!(lines.rows().iter().any(|r| r[5] == "'=SUM(A1)"));
    assert!(lines.rows().iter().any(|r| r[1] == "'-neg"));
    let costs = download(
        &app,
        &format!("/v1/exports/function-costs.csv?period={}", label(p1)),
        &finance,
    )
    .await;
    let functions: Vec<&str> = costs.rows().iter().map(|r| r[3].as_str()).collect();
    for name in [
        "'=HYPERLINK(\"x\")",
        "'-1+2",
        "a,b \"c\"",
        "grüße-函数",
        "'@at",
        "f",
    ] {
        assert!(functions.contains(&name), "{name} in {functions:?}");
    }
    let body = String::from_utf8(costs.body.clone()).unwrap();
    assert!(
        body.contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "quotes are doubled inside a quoted cell: {body}"
    );

    // A period with no invoices is a header alone.
    let empty = download(
        &app,
        "/v1/exports/invoice-lines.csv?period=2001-01",
        app.admin_key(),
    )
    .await;
    assert_eq!(empty.records.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_export_equals_the_usage_api_for_every_tenant() {
    let app = spawn_app().await;
    let finance = app.issue_key("finance", None).await;
    let (p2, p1, p0) = (months_back(2), months_back(1), months_back(0));
    let mut events = Events::default();
    for (tenant, function, arch, at, n) in [
        ("acme", HYPERLINK, "x86_64", inside(p2, 12, 9), 4),
        ("acme", HYPERLINK, "x86_64", inside(p2, 12, 10), 3),
        ("acme", HYPERLINK, "arm64", inside(p2, 12, 10), 2),
        ("acme", ARITHMETIC, "x86_64", inside(p2, 14, 0), 5),
        ("acme", QUOTED, "arm64", inside(p1, 1, 23), 2),
        ("acme", NON_ASCII, "x86_64", inside(p1, 2, 0), 6),
        ("acme", "resize", "x86_64", inside(p1, 2, 1), 7),
        ("-neg", "f", "x86_64", inside(p1, 20, 5), 3),
        ("Zeta", "@at", "arm64", inside(p1, 28, 23), 12),
        ("Zeta", "+plus", "x86_64", inside(p0, 1, 0), 1),
    ] {
        events.add(tenant, function, arch, at, n);
    }
    events.send(&app).await;
    let from = p2.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let now = Utc::now();
    let to = now
        .with_minute(0)
        .unwrap()
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap()
        + chrono::Duration::hours(1);
    let range = format!(
        "from={}&to={}",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    for granularity in ["hour", "day", "month"] {
        let csv = download(
            &app,
            &format!("/v1/exports/usage.csv?{range}&granularity={granularity}"),
            &finance,
        )
        .await;
        csv.assert_served_as(&format!(
            "usage-{}-{}.csv",
            from.format("%Y-%m-%dT%H"),
            to.format("%Y-%m-%dT%H")
        ));
        assert_eq!(csv.header(), USAGE);
        let mut expected = Vec::new();
        for tenant in ["acme", "-neg", "Zeta"] {
            let rows = app
                .usage(
                    tenant,
                    &format!("{range}&granularity={granularity}&group_by=function,arch"),
                    &finance,
                )
                .await;
            for ((bucket, function, arch), [requests, compute, duration]) in rows {
                expected.push((
                    tenant.to_owned(),
                    function,
                    arch,
                    bucket,
                    [requests, compute, duration],
                ));
            }
        }
        // Tenant, function, arch by code point, then bucket_start.
        expected.sort();
        let expected: Vec<Vec<String>> = expected
            .into_iter()
            .map(|(tenant, function, arch, bucket, [r, c, t])| {
                vec![guarded(&tenant), guarded(&function), arch, bucket, r, c, t]
            })
            .collect();
        assert!(expected.len() >= 9, "{granularity}: {expected:?}");
        assert_eq!(csv.rows(), expected.as_slice(), "{granularity}");
    }

    // Without a granularity, hours, as the usage API.
    let hourly = download(&app, &format!("/v1/exports/usage.csv?{range}"), &finance).await;
    assert_eq!(hourly.rows().len(), 10);
    assert_eq!(hourly.rows()[0][0], "'-neg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_finance_and_admin_may_export() {
    let app = spawn_app().await;
    put(
        &app,
        "/v1/tenants/acme",
        &json!({"plan_id": "default", "effective_from": label(months_back(0))}),
    )
    .await;
    let tenant = app.issue_key("tenant", Some("acme")).await;
    let ingest = app.issue_key("ingest", None).await;
    let finance = app.issue_key("finance", None).await;
    for path in [
        "/v1/exports/invoice-lines.csv?period=2026-10",
        "/v1/exports/function-costs.csv?period=2026-10",
        "/v1/exports/usage.csv?from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z",
    ] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        assert_eq!(app.get(path, Some("mk_not_a_key")).await.0, 401, "{path}");
        for key in [&tenant, &ingest] {
            let (status, body) = app.get(path, Some(key)).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
        for key in [finance.as_str(), app.admin_key()] {
            let (status, body) = app.get(path, Some(key)).await;
            assert_eq!(status, 200, "{path}: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let finance = app.issue_key("finance", None).await;
    let usage = "/v1/exports/usage.csv";
    for (path, parameter) in [
        ("/v1/exports/invoice-lines.csv?period=2026-13", "period"),
        ("/v1/exports/invoice-lines.csv", "period"),
        ("/v1/exports/invoice-lines.csv?period=2026-1", "period"),
        ("/v1/exports/function-costs.csv?period=", "period"),
        ("/v1/exports/function-costs.csv?period=October", "period"),
        (
            &format!("{usage}?from=2026-11-01T00:00:00Z&to=2026-10-01T00:00:00Z"),
            "to",
        ),
        (
            &format!("{usage}?from=2026-10-01T00:00:00Z&to=2026-10-01T00:00:00Z"),
            "to",
        ),
        (
            &format!("{usage}?from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z&granularity=week"),
            "granularity",
        ),
        (
            &format!("{usage}?from=2026-10-01&to=2026-11-01T00:00:00Z"),
            "from",
        ),
        (
            &format!("{usage}?from=2026-10-01T00:00:00Z&to=yesterday"),
            "to",
        ),
        (
            &format!("{usage}?from=2026-10-01T00:30:00Z&to=2026-11-01T00:00:00Z"),
            "from",
        ),
        (&format!("{usage}?to=2026-11-01T00:00:00Z"), "from"),
        (&format!("{usage}?from=2026-10-01T00:00:00Z"), "to"),
    ] {
        let (status, body) = app.get(path, Some(&finance)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{path}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{parameter}:")),
            "{path}: {message}"
        );
    }
}

/// Puts `n` hourly buckets in the database directly: far quicker than ingesting them.
async fn seed_buckets(app: &TestApp, n: i64) {
    sqlx::query(
        "INSERT INTO usage_hourly (tenant, hour, function, arch, requests, billed_ms, mb_ms)
         SELECT 't' || (i % 7), timestamptz '2025-01-01 00:00Z' + (i / 700) * interval '1 hour',
                'fn-' || (i % 700 / 7), 'x86_64', 1 + i % 13, 100 * (1 + i % 13),
                100 * (1 + i % 13) * 128
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(n)
    .execute(&app.pool)
    .await
    .expect("seed buckets");
}

/// Backends serving exports in this test's database: with `include_workers`, also the
/// parallel workers of their queries.
async fn export_backends(app: &TestApp, include_workers: bool) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'meterd-export' AND datname = current_database()
           AND ($1 OR backend_type = 'client backend')",
    )
    .bind(include_workers)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_streams_and_a_client_that_leaves_stops_the_query() {
    let app = spawn_app().await;
    let finance = app.issue_key("finance", None).await;
    let rows = 300_000;
    seed_buckets(&app, rows).await;
    let url = format!(
        "{}/v1/exports/usage.csv?from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        app.base_url
    );

    // All of it, in order.
    let csv = download(&app, &url[app.base_url.len()..], &finance).await;
    assert_eq!(csv.rows().len(), rows as usize);
    let keys: Vec<(&str, &str, &str)> = csv
        .rows()
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[3].as_str()))
        .collect();
    assert!(keys.is_sorted(), "rows by tenant, function, arch, bucket");
    wait_until_no_export_connection(&app, "the export's connection is closed after it").await;

    // A client that reads a little and goes away.
    let mut res = app
        .http
        .get(&url)
        .bearer_auth(&finance)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.unwrap().expect("a first chunk");
    assert!(first.starts_with(b"tenant,function,arch,bucket_start,"));
    assert_eq!(
        export_backends(&app, false).await,
        1,
        "the export waits for the slow client on its own connection"
    );
    // Back-pressure reaches PostgreSQL: with the client not reading, meterd stops reading
    // rows and the query waits to write, rather than meterd buffering the export.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waits: Vec<(Option<String>,)> = sqlx::query_as(
            "SELECT wait_event FROM pg_stat_activity
             WHERE application_name = 'meterd-export' AND datname = current_database()
               AND backend_type = 'client backend'",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        if waits == [(Some("ClientWrite".to_owned()),)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the export's query should wait for the client: {waits:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(res);
    wait_until_no_export_connection(&app, "the export's query stops when the client leaves").await;
}

async fn wait_until_no_export_connection(app: &TestApp, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while export_backends(app, true).await > 0 {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_an_error_response_or_a_broken_transfer_never_a_short_file() {
    let app = spawn_app().await;
    let finance = app.issue_key("finance", None).await;
    let good = json!({
        "currency": "USD", "total": "1.00", "finalized_at": "2025-02-01T01:00:00Z",
        "lines": [{"kind": "usage", "charge": "requests", "meter": "requests", "arch": null,
                   "quantity": "100", "unit": "requests", "amount": "1.00", "for_period": null,
                   "tiers": []}],
        "functions": [{"function": "f", "amount": "1.00"}]
    })
    .to_string();
    // Before any byte is sent: an ordinary error response, saying nothing of the inside.
    store_invoices(&app, "2025-01", &[("broken".to_owned(), "{".to_owned())], 1).await;
    let (status, body) = app
        .get(
            "/v1/exports/invoice-lines.csv?period=2025-01",
            Some(&finance),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body,
        json!({"error": {"code": "internal", "message": "internal error"}})
    );

    // After the first chunks went out: the transfer breaks; it does not end cleanly.
    let mut documents: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("t{i:05}"), good.clone()))
        .collect();
    // The last tenant's document is malformed.
    documents.push(("zzz".to_owned(), "{\"lines\": 1}".to_owned()));
    store_invoices(&app, "2025-02", &documents, 10).await;
    let res = app
        .http
        .get(format!(
            "{}/v1/exports/invoice-lines.csv?period=2025-02",
            app.base_url
        ))
        .bearer_auth(&finance)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let read = res.bytes().await;
    assert!(
        read.is_err(),
        "a failed export must not look complete: got {} bytes",
        read.map(|b| b.len()).unwrap_or_default()
    );
}

/// Stores invoices as finalization does, numbered from `first_seq`, but with documents chosen
/// by the test.
async fn store_invoices(
    app: &TestApp,
    period: &str,
    documents: &[(String, String)],
    first_seq: i64,
) {
    let tenants: Vec<&str> = documents.iter().map(|(t, _)| t.as_str()).collect();
    let docs: Vec<&str> = documents.iter().map(|(_, d)| d.as_str()).collect();
    sqlx::query("INSERT INTO tenants (id) SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING")
        .bind(&tenants)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO invoices (id, seq, number, tenant, period, currency, plan_id, plan_version,
                               total, document, finalized_at)
         SELECT gen_random_uuid(), $1 + o, 'INV-' || lpad(($1 + o)::text, 8, '0'), t, $2::date,
                'USD', 'default', 1, 1, d, now()
         FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS x(t, d, o)",
    )
    .bind(first_seq)
    .bind(format!("{period}-01"))
    .bind(&tenants)
    .bind(&docs)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// `finalized_at` in invoice-lines.csv is whole seconds in UTC (`…T01:02:03Z`), which
/// spreadsheets read as a time, also for invoices stored with a fraction of a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_lines_give_finalized_at_in_whole_seconds() {
    let app = spawn_app().await;
    let finance = app.issue_key("finance", None).await;
    let document = |finalized_at: &str| {
        json!({
            "currency": "USD", "total": "1.00", "finalized_at": finalized_at,
            "lines": [{"kind": "usage", "charge": "requests", "meter": "requests", "arch": null,
                       "quantity": "100", "unit": "requests", "amount": "1.00", "for_period": null,
                       "tiers": []}],
            "functions": [{"function": "f", "amount": "1.00"}]
        })
        .to_string()
    };
    store_invoices(
        &app,
        "2025-03",
        &[
            ("a".to_owned(), document("2025-04-01T01:02:03.123456789Z")),
            ("b".to_owned(), document("2025-04-01T03:02:03.999+02:00")),
            ("c".to_owned(), document("2025-04-01T01:02:04Z")),
        ],
        1,
    )
    .await;
    let lines = download(
        &app,
        "/v1/exports/invoice-lines.csv?period=2025-03",
        &finance,
    )
    .await;
    let column = INVOICE_LINES
        .iter()
        .position(|c| *c == "finalized_at")
        .unwrap();
    let cells: Vec<&str> = lines.rows().iter().map(|r| r[column].as_str()).collect();
    assert_eq!(
        cells,
        [
            "2025-04-01T01:02:03Z",
            "2025-04-01T01:02:03Z",
            "2025-04-01T01:02:04Z"
        ]
    );
}
