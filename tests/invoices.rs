//! Invoices: drafts, finalization, numbering, late usage, immutability, the billing API.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use common::{TestApp, inside, label, months_back, spawn_app};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

/// A plan simple enough to price by hand: requests at 0.001 after 5 free; compute graduated
/// 0.05 up to 10 GB-s, then 0.02.
fn simple_plan(minimum: &str) -> Value {
    json!({
        "name": "simple", "currency": "USD",
        "allowances": [{"meter": "requests", "quantity": "5"}],
        "charges": [
            {"key": "requests", "meter": "requests", "model": "unit", "unit_price": "0.001"},
            {"key": "compute", "meter": "compute", "model": "graduated",
             "tiers": [{"up_to": "10", "unit_price": "0.05"}, {"up_to": null, "unit_price": "0.02"}]}
        ],
        "minimum_charge": minimum
    })
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn cents(x: Decimal) -> Decimal {
    x.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Independent pricing of `simple_plan`: (requests amount, compute amount) for `n` events of
/// 1024 MB whose durations sum to `ms` (so compute is ms / 1000 GB-s).
fn expected_amounts(n: u64, ms: u64) -> (Decimal, Decimal) {
    let requests = cents(Decimal::from(n.saturating_sub(5)) * d("0.001"));
    let q = Decimal::from(ms) / Decimal::from(1000);
    let compute = cents(q.min(d("10")) * d("0.05") + (q - d("10")).max(Decimal::ZERO) * d("0.02"));
    (requests, compute)
}

struct Usage {
    app_events: Vec<Value>,
}

impl Usage {
    fn new() -> Self {
        Usage {
            app_events: Vec::new(),
        }
    }

    /// Adds `n` events of 1024 MB at `at`, with durations 1..; returns the ms they sum to.
    fn add(
        &mut self,
        tenant: &str,
        function: &str,
        at: DateTime<Utc>,
        n: u64,
        first_id: u64,
    ) -> u64 {
        let mut ms = 0;
        for i in 0..n {
            let duration = 100 + (first_id + i) % 900;
            ms += duration;
            self.app_events.push(json!({
                "id": format!("{tenant}-{function}-{}", first_id + i), "tenant": tenant, "function": function,
                "timestamp": at.to_rfc3339(), "duration_ms": duration, "memory_mb": 1024,
            }));
        }
        ms
    }

    async fn send(self, app: &TestApp) {
        app.ingest(&self.app_events).await;
    }
}

async fn put_plan(app: &TestApp, id: &str, plan: &Value) {
    app.put_admin(&format!("/v1/plans/{id}"), plan).await;
}

async fn put_tenant(app: &TestApp, tenant: &str, plan: &str, from: NaiveDate) {
    let body = json!({"plan_id": plan, "effective_from": label(from)});
    app.put_admin(&format!("/v1/tenants/{tenant}"), &body).await;
}

async fn finalize(app: &TestApp, p: NaiveDate) -> Value {
    app.finalize(p).await
}

async fn invoices(app: &TestApp, tenant: &str) -> Vec<Value> {
    let (status, body) = app
        .get(
            &format!("/v1/tenants/{tenant}/invoices"),
            Some(app.admin_key()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

async fn invoice(app: &TestApp, tenant: &str, number: &str) -> Value {
    let (status, body) = app
        .get(
            &format!("/v1/tenants/{tenant}/invoices/{number}"),
            Some(app.admin_key()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn line<'a>(doc: &'a Value, kind: &str, charge: Option<&str>) -> Option<&'a Value> {
    doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == kind && l["charge"].as_str() == charge)
}

/// A period as invoices and the invoice list show it.
fn period_of(p: NaiveDate) -> Value {
    json!({"start": format!("{p}T00:00:00Z"), "end": format!("{}T00:00:00Z", meterd::billing::period::next_period(p))})
}

fn amount(v: &Value) -> Decimal {
    d(v.as_str()
        .unwrap_or_else(|| panic!("not a money string: {v}")))
}

/// The per-function split and the lines both sum exactly to the total.
fn assert_sums(doc: &Value) {
    let total = amount(&doc["total"]);
    let lines: Decimal = doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| amount(&l["amount"]))
        .sum();
    let functions: Decimal = doc["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| amount(&f["amount"]))
        .sum();
    assert_eq!(lines, total, "lines must sum to the total: {doc}");
    assert_eq!(functions, total, "functions must sum to the total: {doc}");
    assert_eq!(
        doc["total"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .map(str::len),
        Some(2),
        "USD has two minor digits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_and_finalized_invoices_match_an_independent_expectation() {
    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("0")).await;
    let (p2, p1, p0) = (months_back(2), months_back(1), months_back(0));
    put_tenant(&app, "acme", "simple", p2).await;
    let mut usage = Usage::new();
    let ms2 = usage.add("acme", "resize", inside(p2, 10, 12), 40, 0)
        + usage.add("acme", "thumb", inside(p2, 20, 12), 7, 100);
    let ms1 = usage.add("acme", "resize", inside(p1, 3, 12), 300, 200);
    let ms0 = usage.add("acme", "resize", inside(p0, 1, 12), 12, 1000);
    usage.send(&app).await;

    // The draft prices the open period only.
    let (status, draft) = app
        .get("/v1/tenants/acme/invoices/upcoming", Some(app.admin_key()))
        .await;
    assert_eq!(status, 200, "{draft}");
    assert_eq!(draft["status"], "draft");
    assert_eq!(draft["number"], Value::Null);
    let (req0, comp0) = expected_amounts(12, ms0);
    assert_eq!(amount(&draft["total"]), req0 + comp0, "{draft}");
    assert_sums(&draft);

    let first = finalize(&app, p2).await;
    assert_eq!(first["created"].as_array().unwrap().len(), 1, "{first}");
    let again = finalize(&app, p2).await;
    assert_eq!(
        again["created"],
        json!([]),
        "finalizing twice creates nothing"
    );
    assert_eq!(again["existing"], 1);
    finalize(&app, p1).await;

    let list = invoices(&app, "acme").await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["period"], period_of(p1), "newest first");
    assert_eq!(list[1]["period"], period_of(p2));
    for (summary, n, ms) in [(&list[1], 47, ms2), (&list[0], 300, ms1)] {
        let doc = invoice(&app, "acme", summary["number"].as_str().unwrap()).await;
        let (req, comp) = expected_amounts(n, ms);
        assert_eq!(
            amount(&line(&doc, "usage", Some("requests")).unwrap()["amount"]),
            req,
            "{doc}"
        );
        assert_eq!(
            amount(&line(&doc, "usage", Some("compute")).unwrap()["amount"]),
            comp,
            "{doc}"
        );
        assert_eq!(amount(&doc["total"]), req + comp);
        assert_eq!(doc["status"], "finalized");
        assert_eq!(doc["plan"], json!({"id": "simple", "version": 1}));
        assert_eq!(doc["total"], summary["total"]);
        assert_sums(&doc);
    }
    let p2_doc = invoice(&app, "acme", list[1]["number"].as_str().unwrap()).await;
    assert_eq!(
        line(&p2_doc, "usage", Some("requests")).unwrap()["quantity"],
        "47"
    );
    assert_eq!(
        line(&p2_doc, "usage", Some("requests")).unwrap()["allowance"],
        "5"
    );
    let fns: BTreeMap<String, Decimal> = p2_doc["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_owned(),
                amount(&f["amount"]),
            )
        })
        .collect();
    assert_eq!(fns.keys().collect::<Vec<_>>(), ["resize", "thumb"]);
    assert!(
        fns["resize"] > fns["thumb"],
        "resize used far more: {fns:?}"
    );
    // A period that has not ended cannot be finalized.
    let (status, body) = app
        .post(
            "/v1/billing/finalize",
            Some(app.admin_key()),
            &json!({"period": label(p0)}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = app
        .post(
            "/v1/billing/finalize",
            Some(app.admin_key()),
            &json!({"period": "2026-13"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("period"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_finalizations_number_each_invoice_once_without_gaps() {
    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("0")).await;
    let p1 = months_back(1);
    let mut usage = Usage::new();
    for t in 0..12 {
        put_tenant(&app, &format!("t{t:02}"), "simple", p1).await;
        usage.add(&format!("t{t:02}"), "f", inside(p1, 5, 12), 3, 0);
    }
    usage.send(&app).await;
    let calls = (0..8).map(|_| finalize(&app, p1));
    let outcomes = futures_util::future::join_all(calls).await;
    let created: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o["created"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        created.len(),
        12,
        "each tenant's invoice is created exactly once: {outcomes:?}"
    );
    let mut numbers: Vec<u64> = created
        .iter()
        .map(|n| n.strip_prefix("INV-").unwrap().parse().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        (1..=12).collect::<Vec<u64>>(),
        "gapless, no duplicates"
    );
    assert!(created.iter().all(|n| n.len() == "INV-00000001".len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_usage_is_billed_once_as_adjustments_and_never_changes_an_invoice() {
    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("0")).await;
    let (p2, p1) = (months_back(2), months_back(1));
    put_tenant(&app, "acme", "simple", p2).await;
    let mut usage = Usage::new();
    let ms2 = usage.add("acme", "resize", inside(p2, 10, 12), 20, 0);
    let ms1 = usage.add("acme", "resize", inside(p1, 10, 12), 10, 500);
    usage.send(&app).await;
    let created = finalize(&app, p2).await["created"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/v1/tenants/acme/invoices/{created}", app.base_url);
    let original = app
        .http
        .get(&url)
        .bearer_auth(app.admin_key())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    // Late usage for the finalized period, from a new function too.
    let mut late = Usage::new();
    let late_ms = late.add("acme", "resize", inside(p2, 11, 12), 30, 10_000)
        + late.add("acme", "late-fn", inside(p2, 12, 12), 4, 20_000);
    late.send(&app).await;
    let next = finalize(&app, p1).await["created"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = invoice(&app, "acme", &next).await;
    let (req_before, comp_before) = expected_amounts(20, ms2);
    let (req_after, comp_after) = expected_amounts(54, ms2 + late_ms);
    let adj_requests = line(&doc, "adjustment", Some("requests"))
        .unwrap_or_else(|| panic!("a requests adjustment: {doc}"));
    let adj_compute = line(&doc, "adjustment", Some("compute")).expect("a compute adjustment");
    assert_eq!(adj_requests["for_period"], label(p2));
    assert_eq!(amount(&adj_requests["amount"]), req_after - req_before);
    assert_eq!(amount(&adj_compute["amount"]), comp_after - comp_before);
    assert_eq!(adj_requests["quantity"], "34", "the late quantity");
    let (req1, comp1) = expected_amounts(10, ms1);
    assert_eq!(
        amount(&doc["total"]),
        req1 + comp1 + (req_after - req_before) + (comp_after - comp_before)
    );
    assert_sums(&doc);
    assert!(
        doc["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function"] == "late-fn")
    );

    let again = app
        .http
        .get(&url)
        .bearer_auth(app.admin_key())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(original, again, "the finalized invoice is byte-identical");

    // A second late batch shows up once, on the next (draft) invoice, and the first batch
    // is not billed again.
    let mut late2 = Usage::new();
    let late2_ms = late2.add("acme", "resize", inside(p2, 13, 12), 6, 30_000);
    late2.send(&app).await;
    let (_, draft) = app
        .get("/v1/tenants/acme/invoices/upcoming", Some(app.admin_key()))
        .await;
    let (req_final, comp_final) = expected_amounts(60, ms2 + late_ms + late2_ms);
    let draft_adjustments: Decimal = draft["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "adjustment")
        .map(|l| amount(&l["amount"]))
        .sum();
    assert_eq!(
        draft_adjustments,
        (req_final - req_after) + (comp_final - comp_after),
        "{draft}"
    );
    assert_sums(&draft);
    // Re-finalizing the earlier periods changes nothing.
    assert_eq!(finalize(&app, p2).await["created"], json!([]));
    assert_eq!(finalize(&app, p1).await["created"], json!([]));
    assert_eq!(invoices(&app, "acme").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_to_change_a_finalized_invoice() {
    let app = spawn_app().await;
    let p1 = months_back(1);
    let mut usage = Usage::new();
    usage.add("acme", "f", inside(p1, 2, 12), 3, 0);
    usage.send(&app).await;
    put_tenant(&app, "acme", "default", p1).await;
    finalize(&app, p1).await;
    for sql in [
        "UPDATE invoices SET total = 0",
        "UPDATE invoices SET document = '{}'",
        "DELETE FROM invoices",
        "UPDATE invoice_usage SET requests = 0",
        "DELETE FROM invoice_charges",
        "TRUNCATE invoices CASCADE",
    ] {
        let err = sqlx::query(sql).execute(&app.pool).await.expect_err(sql);
        assert!(
            err.to_string()
                .contains("finalized invoices cannot be changed"),
            "{sql}: {err}"
        );
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM invoices")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimum_charges_top_up_and_idle_tenants_get_no_invoice() {
    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("0")).await;
    put_plan(&app, "floor", &simple_plan("5.00")).await;
    let p1 = months_back(1);
    put_tenant(&app, "small", "floor", p1).await;
    put_tenant(&app, "idle-floor", "floor", p1).await;
    put_tenant(&app, "idle", "simple", p1).await;
    let mut usage = Usage::new();
    let ms = usage.add("small", "f", inside(p1, 2, 12), 8, 0);
    usage.send(&app).await;
    finalize(&app, p1).await;

    let small = invoices(&app, "small").await;
    let doc = invoice(&app, "small", small[0]["number"].as_str().unwrap()).await;
    let (req, comp) = expected_amounts(8, ms);
    let minimum = line(&doc, "minimum", None).expect("a minimum line");
    assert_eq!(amount(&minimum["amount"]), d("5.00") - req - comp);
    assert_eq!(doc["total"], "5.00");
    assert_sums(&doc);

    let idle_floor = invoices(&app, "idle-floor").await;
    assert_eq!(idle_floor.len(), 1);
    let doc = invoice(
        &app,
        "idle-floor",
        idle_floor[0]["number"].as_str().unwrap(),
    )
    .await;
    assert_eq!(doc["total"], "5.00");
    assert_eq!(
        doc["functions"],
        json!([{"function": null, "amount": "5.00"}])
    );
    assert!(
        invoices(&app, "idle").await.is_empty(),
        "no usage and no minimum: no invoice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_change_bills_each_period_with_its_own_plan() {
    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("0")).await;
    let mut doubled = simple_plan("0");
    doubled["charges"][0]["unit_price"] = json!("0.002");
    put_plan(&app, "doubled", &doubled).await;
    let (p2, p1) = (months_back(2), months_back(1));
    put_tenant(&app, "acme", "simple", p2).await;
    put_tenant(&app, "acme", "doubled", p1).await;
    let mut usage = Usage::new();
    usage.add("acme", "f", inside(p2, 2, 12), 105, 0);
    usage.add("acme", "f", inside(p1, 2, 12), 105, 1000);
    usage.send(&app).await;
    finalize(&app, p2).await;
    finalize(&app, p1).await;
    let list = invoices(&app, "acme").await;
    let newer = invoice(&app, "acme", list[0]["number"].as_str().unwrap()).await;
    let older = invoice(&app, "acme", list[1]["number"].as_str().unwrap()).await;
    assert_eq!(older["plan"]["id"], "simple");
    assert_eq!(newer["plan"]["id"], "doubled");
    assert_eq!(
        line(&older, "usage", Some("requests")).unwrap()["amount"],
        "0.10"
    );
    assert_eq!(
        line(&newer, "usage", Some("requests")).unwrap()["amount"],
        "0.20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_endpoints_enforce_roles_and_tenant_isolation() {
    let app = spawn_app().await;
    let p1 = months_back(1);
    let mut usage = Usage::new();
    usage.add("acme", "f", inside(p1, 2, 12), 3, 0);
    usage.add("globex", "f", inside(p1, 2, 12), 3, 0);
    usage.send(&app).await;
    let number = finalize(&app, p1).await["created"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let acme = app.issue_key("tenant", Some("acme")).await;
    let globex = app.issue_key("tenant", Some("globex")).await;
    let finance = app.issue_key("finance", None).await;
    let ingest = app.issue_key("ingest", None).await;
    let owner = if invoices(&app, "acme")
        .await
        .iter()
        .any(|i| i["number"] == number)
    {
        "acme"
    } else {
        "globex"
    };
    for path in [
        "/v1/tenants/acme/invoices",
        "/v1/tenants/acme/invoices/upcoming",
    ] {
        assert_eq!(app.get(path, None).await.0, 401, "{path}");
        assert_eq!(app.get(path, Some("mk_not_a_key")).await.0, 401, "{path}");
        assert_eq!(app.get(path, Some(&ingest)).await.0, 403, "{path}");
        assert_eq!(app.get(path, Some(&globex)).await.0, 404, "{path}");
        assert_eq!(app.get(path, Some(&acme)).await.0, 200, "{path}");
        assert_eq!(app.get(path, Some(&finance)).await.0, 200, "{path}");
    }
    let path = format!("/v1/tenants/{owner}/invoices/{number}");
    let (own, other) = if owner == "acme" {
        (&acme, &globex)
    } else {
        (&globex, &acme)
    };
    assert_eq!(app.get(&path, Some(own)).await.0, 200);
    assert_eq!(app.get(&path, Some(other)).await.0, 404);
    assert_eq!(app.get(&path, Some(&ingest)).await.0, 403);
    assert_eq!(
        app.get(
            &format!("/v1/tenants/{owner}/invoices/INV-99999999"),
            Some(own)
        )
        .await
        .0,
        404
    );
    let not_owner = if owner == "acme" { "globex" } else { "acme" };
    assert_eq!(
        app.get(
            &format!("/v1/tenants/{not_owner}/invoices/{number}"),
            Some(app.admin_key())
        )
        .await
        .0,
        404
    );
    for key in [&finance, &acme, &ingest] {
        let (status, body) = app
            .post(
                "/v1/billing/finalize",
                Some(key),
                &json!({"period": label(p1)}),
            )
            .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = app
        .get("/v1/tenants/acme/invoices?limit=0", Some(&finance))
        .await;
    assert_eq!(status, 400);
    let (status, body) = app
        .get(
            "/v1/tenants/nobody/invoices/upcoming",
            Some(app.admin_key()),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upcoming_draft_follows_usage_plans_and_finalizations_at_once() {
    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("0")).await;
    let (p1, p0) = (months_back(1), months_back(0));
    put_tenant(&app, "acme", "simple", p1).await;
    let draft = || async {
        let (status, body) = app
            .get("/v1/tenants/acme/invoices/upcoming", Some(app.admin_key()))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let mut usage = Usage::new();
    let ms = usage.add("acme", "f", inside(p0, 1, 12), 10, 0);
    usage.send(&app).await;
    let (req, comp) = expected_amounts(10, ms);
    assert_eq!(amount(&draft().await["total"]), req + comp);
    // Asked again with nothing changed: the same answer.
    assert_eq!(amount(&draft().await["total"]), req + comp);

    // New usage shows at once.
    let mut more = Usage::new();
    let ms2 = more.add("acme", "g", inside(p0, 1, 12), 20, 100);
    more.send(&app).await;
    let (req, comp) = expected_amounts(30, ms + ms2);
    assert_eq!(amount(&draft().await["total"]), req + comp);

    // A new version of the plan shows at once.
    let mut pricier = simple_plan("0");
    pricier["charges"][0]["unit_price"] = json!("0.01");
    put_plan(&app, "simple", &pricier).await;
    let doc = draft().await;
    assert_eq!(doc["plan"]["version"], 2);
    assert_eq!(
        line(&doc, "usage", Some("requests")).unwrap()["amount"],
        "0.25"
    );

    // Late usage of a period finalized meanwhile shows as an adjustment at once.
    finalize(&app, p1).await;
    let mut late = Usage::new();
    late.add("acme", "f", inside(p1, 3, 12), 8, 500);
    late.send(&app).await;
    let doc = draft().await;
    assert!(
        line(&doc, "adjustment", Some("requests")).is_some(),
        "{doc}"
    );
    assert_sums(&doc);
}

/// `serve` finalizes ended periods by itself: every period that ended, once, oldest first, and
/// never the open one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalizer_inside_serve_finalizes_every_ended_period_by_itself() {
    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("0")).await;
    let (p2, p1, p0) = (months_back(2), months_back(1), months_back(0));
    put_tenant(&app, "acme", "simple", p2).await;
    let mut usage = Usage::new();
    let ms2 = usage.add("acme", "f", inside(p2, 5, 3), 20, 0);
    let ms1 = usage.add("acme", "f", inside(p1, 9, 7), 30, 100);
    usage.add("acme", "f", inside(p0, 1, 1), 10, 200);
    usage.send(&app).await;
    assert!(invoices(&app, "acme").await.is_empty());

    // A second meterd on the same database with the finalizer on (the test app has it off, so
    // the usage above was in place before any finalizer pass).
    let mut settings = app.settings.clone();
    settings.billing.auto_finalize = true;
    settings.billing.finalize_interval_secs = 1;
    settings.billing.grace_period_secs = 0;
    let finalizer = meterd::app::start(
        settings,
        meterd::app::ServeRole::Api,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let list = loop {
        let list = invoices(&app, "acme").await;
        if list.len() >= 2 {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the finalizer did not finalize both ended periods within 30 s: {list:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    finalizer.stop().await;

    assert_eq!(list.len(), 2, "the open period is never finalized");
    let prefix = &app.settings.billing.invoice_prefix;
    for (summary, period, n, ms, number) in [(&list[1], p2, 20, ms2, 1), (&list[0], p1, 30, ms1, 2)]
    {
        assert_eq!(summary["period"], period_of(period));
        assert_eq!(summary["number"], format!("{prefix}-{number:08}"));
        let (req, comp) = expected_amounts(n, ms);
        assert_eq!(amount(&summary["total"]), req + comp, "{summary}");
    }
}

/// A finalizer pass leaves a period alone until `billing.grace_period_secs` after it ended,
/// then invoices it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_pass_waits_for_the_grace_period() {
    use meterd::billing::store::{BillingConfig, finalize_due};

    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("0")).await;
    let p1 = months_back(1);
    put_tenant(&app, "acme", "simple", p1).await;
    let mut usage = Usage::new();
    usage.add("acme", "f", inside(p1, 2, 12), 8, 0);
    usage.send(&app).await;

    let mut settings = app.settings.clone();
    settings.billing.grace_period_secs = 3600;
    let config = BillingConfig::from_settings(&settings);
    let ended = meterd::billing::period::period_start_instant(months_back(0));
    let pass = |now| finalize_due(&app.pool, &config, now);
    assert_eq!(
        pass(ended + chrono::Duration::seconds(3599)).await.unwrap(),
        0
    );
    assert!(invoices(&app, "acme").await.is_empty(), "still in grace");
    assert_eq!(
        pass(ended + chrono::Duration::seconds(3600)).await.unwrap(),
        1
    );
    assert_eq!(
        pass(ended + chrono::Duration::seconds(7200)).await.unwrap(),
        0
    );
    let list = invoices(&app, "acme").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["period"], period_of(p1));
}

/// Finalizing several ended periods at once, in any order, from several processes (API
/// servers, direct calls on their own connection pools as `meterd finalize` makes, and a
/// background finalizer) gives every tenant exactly one invoice per period, each period's
/// minimum on its own invoice, no adjustments (no usage arrived after any finalization),
/// and gapless numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finalizing_periods_concurrently_in_any_order_bills_each_period_on_its_own_invoice() {
    use rand::seq::SliceRandom;

    const TENANTS: usize = 100;
    let mut settings = common::test_settings();
    // Four ended periods reach back further than the default 90 days.
    settings.metering.max_event_age_days = 200;
    let app = common::spawn_app_with(settings).await;
    put_plan(&app, "floor", &simple_plan("10.00")).await;
    let periods = [
        months_back(4),
        months_back(3),
        months_back(2),
        months_back(1),
    ];
    let mut usage = Usage::new();
    for t in 0..TENANTS {
        let tenant = format!("t{t:03}");
        put_tenant(&app, &tenant, "floor", periods[0]).await;
        for (i, p) in periods.iter().enumerate() {
            usage.add(&tenant, "f", inside(*p, 3 + i as u32, 10), 1, i as u64);
        }
    }
    usage.send(&app).await;

    // More processes on the same database, each with its own pool; one runs the finalizer.
    let start = |finalizer: bool| {
        let mut s = app.settings.clone();
        s.billing.auto_finalize = finalizer;
        s.billing.finalize_interval_secs = 1;
        s.billing.grace_period_secs = 0;
        meterd::app::start(
            s,
            meterd::app::ServeRole::Api,
            tokio_util::sync::CancellationToken::new(),
        )
    };
    let (second, third) = (start(false).await.unwrap(), start(true).await.unwrap());
    let bases = [
        app.base_url.clone(),
        format!("http://{}", second.addr),
        format!("http://{}", third.addr),
    ];
    let config = meterd::billing::store::BillingConfig::from_settings(&app.settings);

    let mut calls: Vec<(usize, NaiveDate)> = (0..4)
        .flat_map(|via| periods.iter().map(move |p| (via, *p)))
        .collect();
    calls.shuffle(&mut rand::rng());
    let outcomes = futures_util::future::join_all(calls.iter().map(|&(via, p)| {
        let (http, key, config) = (app.http.clone(), app.admin_key().to_owned(), &config);
        let (url, db) = (
            bases.get(via).map(|b| format!("{b}/v1/billing/finalize")),
            app.settings.database.clone(),
        );
        async move {
            match url {
                Some(url) => {
                    let res = http
                        .post(url)
                        .bearer_auth(key)
                        .json(&json!({"period": label(p)}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    res.json::<Value>().await.unwrap()
                }
                None => {
                    let pool = meterd::db::pool(&db).unwrap();
                    let outcome =
                        meterd::billing::store::finalize_period(&pool, config, p, Utc::now())
                            .await
                            .unwrap();
                    pool.close().await;
                    serde_json::to_value(outcome).unwrap()
                }
            }
        }
    }))
    .await;
    third.stop().await;
    second.stop().await;

    let mut created: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o["created"].as_array().unwrap().clone())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let from_calls = created.len();
    created.sort();
    created.dedup();
    assert_eq!(created.len(), from_calls, "a number reported twice");
    let seqs: Vec<(i64,)> = sqlx::query_as("SELECT seq FROM invoices ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        seqs.into_iter().map(|(s,)| s).collect::<Vec<_>>(),
        (1..=(4 * TENANTS) as i64).collect::<Vec<_>>(),
        "one invoice per tenant and period, numbered without gaps"
    );
    for t in 0..TENANTS {
        let tenant = format!("t{t:03}");
        let list = invoices(&app, &tenant).await;
        assert_eq!(list.len(), 4, "{tenant}: {list:?}");
        for (summary, p) in list.iter().zip(periods.iter().rev()) {
            let doc = invoice(&app, &tenant, summary["number"].as_str().unwrap()).await;
            assert_eq!(doc["period"]["start"], format!("{p}T00:00:00Z"), "{doc}");
            assert!(line(&doc, "minimum", None).is_some(), "{doc}");
            assert!(
                doc["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|l| l["kind"] != "adjustment"),
                "{doc}"
            );
            assert_eq!(doc["total"], "10.00", "{doc}");
            assert_sums(&doc);
        }
    }
}

/// Finalizing a period first finalizes, for each tenant, the earlier periods whose
/// finalization has begun but not reached that tenant, in order: each gets its own invoice
/// and no later invoice bills their usage as an adjustment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizing_a_period_first_catches_up_the_tenants_earlier_periods_in_order() {
    let app = spawn_app().await;
    put_plan(&app, "floor", &simple_plan("10.00")).await;
    let (p3, p2, p1) = (months_back(3), months_back(2), months_back(1));
    put_tenant(&app, "acme", "floor", p3).await;
    let mut usage = Usage::new();
    let ms2 = usage.add("acme", "f", inside(p2, 4, 12), 2, 0);
    usage.add("acme", "f", inside(p1, 4, 12), 3, 10);
    usage.send(&app).await;
    // p2's finalization has begun (another process marked it) but not reached acme yet.
    sqlx::query("INSERT INTO finalized_periods (period) VALUES ($1)")
        .bind(p2)
        .execute(&app.pool)
        .await
        .unwrap();

    let prefix = &app.settings.billing.invoice_prefix;
    let number = |n: u32| format!("{prefix}-{n:08}");
    let outcome = finalize(&app, p1).await;
    assert_eq!(
        outcome["created"],
        json!([number(1), number(2)]),
        "{outcome}"
    );
    let first = invoice(&app, "acme", &number(1)).await;
    assert_eq!(first["period"]["start"], format!("{p2}T00:00:00Z"));
    let (req, comp) = expected_amounts(2, ms2);
    assert_eq!(
        amount(&line(&first, "minimum", None).unwrap()["amount"]),
        d("10.00") - req - comp
    );
    let second = invoice(&app, "acme", &number(2)).await;
    assert_eq!(second["period"]["start"], format!("{p1}T00:00:00Z"));
    for doc in [&first, &second] {
        assert_eq!(doc["total"], "10.00", "{doc}");
        assert!(line(doc, "adjustment", Some("requests")).is_none(), "{doc}");
        assert!(line(doc, "adjustment", None).is_none(), "{doc}");
    }

    // p2's own run then finds acme done; p3, never begun, was not caught up and gets its
    // own invoice when it is finalized.
    let again = finalize(&app, p2).await;
    assert_eq!(again["created"], json!([]), "{again}");
    assert_eq!(again["existing"], 1, "{again}");
    assert_eq!(finalize(&app, p3).await["created"], json!([number(3)]));
    assert_eq!(invoices(&app, "acme").await.len(), 3);

    // Only usage that arrives after p2 was finalized for acme is late: an adjustment of it.
    let mut late = Usage::new();
    let late_ms = late.add("acme", "f", inside(p2, 9, 12), 4, 50);
    late.send(&app).await;
    let (status, draft) = app
        .get("/v1/tenants/acme/invoices/upcoming", Some(app.admin_key()))
        .await;
    assert_eq!(status, 200, "{draft}");
    let adjustment = line(&draft, "adjustment", Some("compute")).expect("an adjustment");
    assert_eq!(adjustment["for_period"], label(p2), "{draft}");
    assert_eq!(
        amount(&adjustment["quantity"]),
        Decimal::from(late_ms) / Decimal::from(1000),
        "{draft}"
    );
}

/// The invoice list shows each invoice's `period` object and `finalized_at` exactly as the
/// invoice does (whole seconds), and finalized_at carries no fraction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoice_list_shows_period_and_finalized_at_as_the_invoice_does() {
    let app = spawn_app().await;
    put_plan(&app, "simple", &simple_plan("1.00")).await;
    let (p2, p1) = (months_back(2), months_back(1));
    put_tenant(&app, "acme", "simple", p2).await;
    finalize(&app, p2).await;
    finalize(&app, p1).await;
    let list = invoices(&app, "acme").await;
    assert_eq!(list.len(), 2, "{list:?}");
    for (summary, p) in list.iter().zip([p1, p2]) {
        let doc = invoice(&app, "acme", summary["number"].as_str().unwrap()).await;
        assert_eq!(summary["period"], doc["period"]);
        assert_eq!(summary["period"], period_of(p));
        assert_eq!(summary["finalized_at"], doc["finalized_at"]);
        let at = summary["finalized_at"].as_str().unwrap();
        assert!(
            DateTime::parse_from_rfc3339(at).is_ok() && at.len() == "2026-10-01T00:00:00Z".len(),
            "whole seconds in UTC: {at}"
        );
        for field in ["id", "number", "status", "currency", "total"] {
            assert_eq!(summary[field], doc[field], "{field}");
        }
    }
}
