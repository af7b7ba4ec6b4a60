//! Plans and tenants over HTTP: the seeded default plan, versioning, validation, plan
//! assignments, finalized periods and who may do what.

mod common;

use chrono::{Months, NaiveDate, Utc};
use common::{TestApp, spawn_app, test_settings};
use futures_util::future::join_all;
use meterd::billing::plans::plan_id_for_period;
use meterd::rating::Plan;
use reqwest::Method;
use serde_json::{Value, json};

/// SPEC §3's example plan, as the repository's example file holds it.
const SPEC_PLAN: &str = include_str!("../examples/plan.json");

/// A small valid plan whose charges break one field at a time in the validation test.
fn plan(name: &str) -> Value {
    json!({
        "name": name,
        "currency": "USD",
        "allowances": [{"meter": "requests", "quantity": "10"}],
        "charges": [
            {"key": "r", "meter": "requests", "model": "unit", "unit_price": "0.5"},
            {"key": "c", "meter": "compute", "arch": "x86_64", "model": "graduated", "tiers": [
                {"up_to": "10", "unit_price": "2"},
                {"up_to": "20", "unit_price": "1"},
                {"up_to": null, "unit_price": "0.5"}]},
            {"key": "p", "meter": "duration", "model": "package",
             "package_size": "100", "package_price": "1.50"}
        ],
        "minimum_charge": "5.00"
    })
}

/// A plan as the API returns it: parsed and serialized back.
fn canonical(plan: &Value) -> Value {
    serde_json::to_value(Plan::from_value(plan).unwrap()).unwrap()
}

fn period(date: NaiveDate) -> String {
    date.format("%Y-%m").to_string()
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").unwrap()
}

fn current_period() -> NaiveDate {
    let today = Utc::now().date_naive();
    today - chrono::Days::new(u64::from(chrono::Datelike::day(&today)) - 1)
}

async fn put(app: &TestApp, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    app.send(Method::PUT, path, key, body).await
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str, message: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let got = body["error"]["message"].as_str().unwrap();
    assert!(
        got.starts_with(message),
        "message {got:?} should start with {message:?}"
    );
}

/// Stores a finalized invoice directly, as finalization would.
async fn insert_invoice(app: &TestApp, seq: i64, tenant: &str, period: &str) {
    sqlx::query(
        "INSERT INTO invoices (id, seq, number, tenant, period, currency, plan_id, plan_version,
                               total, document, finalized_at)
         VALUES ($1, $2, $3, $4, $5, 'USD', 'default', 1, 0, '{}', now())",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(seq)
    .bind(format!("INV-{seq:08}"))
    .bind(tenant)
    .bind(date(period))
    .execute(&app.pool)
    .await
    .expect("insert an invoice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_plan_is_seeded_once_and_never_overwritten() {
    let app = spawn_app().await;
    let admin = Some(app.admin_key());
    let spec_plan: Value = serde_json::from_str(SPEC_PLAN).unwrap();

    let (status, body) = app.get("/v1/plans/default", admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "default");
    assert_eq!(body["version"], 1);
    assert_eq!(body["plan"], canonical(&spec_plan));
    assert_eq!(body["plan"]["name"], "Lambda-style, us-east-1");
    assert_eq!(
        body["plan"]["charges"][1]["tiers"][1]["unit_price"], "0.000015",
        "decimals come back normalized"
    );
    assert_eq!(body["versions"].as_array().unwrap().len(), 1);

    // The operator's own default plan stands when migrate runs again.
    let (status, body) = put(&app, "/v1/plans/default", admin, &plan("ours")).await;
    assert_eq!((status, body["version"].clone()), (201, json!(2)), "{body}");
    meterd::db::migrate(&app.settings.database).await.unwrap();
    let (_, body) = app.get("/v1/plans/default", admin).await;
    assert_eq!(body["version"], 2);
    assert_eq!(body["plan"]["name"], "ours");
    assert_eq!(body["versions"].as_array().unwrap().len(), 2);
    let (_, body) = app.get("/v1/plans/default?version=1", admin).await;
    assert_eq!(body["plan"], canonical(&spec_plan));

    // A default plan stored before the first seeding is kept as it is.
    sqlx::query("DELETE FROM plans WHERE id = 'default'")
        .execute(&app.pool)
        .await
        .unwrap();
    let ours = serde_json::to_string(&canonical(&plan("stored before"))).unwrap();
    sqlx::query("INSERT INTO plans (id, version, document) VALUES ('default', 3, $1::jsonb)")
        .bind(ours)
        .execute(&app.pool)
        .await
        .unwrap();
    meterd::db::migrate(&app.settings.database).await.unwrap();
    let (_, body) = app.get("/v1/plans/default", admin).await;
    assert_eq!(
        (body["version"].clone(), body["plan"]["name"].clone()),
        (json!(3), json!("stored before"))
    );
    assert_eq!(body["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_seed_the_default_plan_once() {
    let settings = test_settings();
    meterd::db::create_database_if_missing(&settings.database.url)
        .await
        .unwrap();
    let pools = join_all((0..4).map(|_| meterd::db::migrate(&settings.database))).await;
    let pools: Vec<sqlx::PgPool> = pools.into_iter().map(Result::unwrap).collect();
    let pool = &pools[0];
    let (versions,): (i64,) = sqlx::query_as("SELECT count(*) FROM plans WHERE id = 'default'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(versions, 1);
    for pool in pools {
        pool.close().await;
    }
    common::cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_versioned_and_every_version_stays_readable() {
    let app = spawn_app().await;
    let admin = Some(app.admin_key());

    let (status, first) = put(&app, "/v1/plans/lambda", admin, &plan("first")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["id"], "lambda");
    assert_eq!(first["version"], 1);
    assert_eq!(first["plan"], canonical(&plan("first")));
    assert_eq!(first["plan"]["minimum_charge"], "5");
    assert!(
        first["created_at"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );
    let (status, second) = put(&app, "/v1/plans/lambda", admin, &plan("second")).await;
    assert_eq!((status, second["version"].clone()), (201, json!(2)));

    let (status, latest) = app.get("/v1/plans/lambda", admin).await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["plan"]["name"], "second");
    assert_eq!(latest["created_at"], second["created_at"]);
    assert_eq!(
        latest["versions"],
        json!([
            {"version": 1, "created_at": first["created_at"]},
            {"version": 2, "created_at": second["created_at"]}
        ])
    );
    let (status, v1) = app.get("/v1/plans/lambda?version=1", admin).await;
    assert_eq!(status, 200, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["plan"]["name"], "first");
    assert_eq!(v1["versions"], latest["versions"]);

    let (status, body) = app.get("/v1/plans/lambda?version=3", admin).await;
    assert_error(
        status,
        &body,
        404,
        "not_found",
        "plan \"lambda\" has no version 3",
    );
    let (status, body) = app.get("/v1/plans/nope", admin).await;
    assert_error(status, &body, 404, "not_found", "no plan");
    for bad in ["0", "-1", "two", "1.5", ""] {
        let (status, body) = app
            .get(&format!("/v1/plans/lambda?version={bad}"), admin)
            .await;
        assert_error(status, &body, 400, "invalid_parameter", "version:");
    }

    // The list: one row per plan, its latest version, sorted by id, page by page.
    put(&app, "/v1/plans/basic", admin, &plan("basic")).await;
    let (status, page) = app.get("/v1/plans?limit=2", admin).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["basic", "default"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = app
        .get(&format!("/v1/plans?limit=2&cursor={cursor}"), admin)
        .await;
    assert_eq!(
        page["data"],
        json!([{"id": "lambda", "version": 2, "name": "second", "currency": "USD",
                "created_at": second["created_at"]}])
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let (status, body) = app.get("/v1/plans?limit=0", admin).await;
    assert_error(status, &body, 400, "invalid_parameter", "limit:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_get_consecutive_versions() {
    let app = spawn_app().await;
    let bodies: Vec<Value> = (0..10).map(|i| plan(&format!("p{i}"))).collect();
    let responses = join_all(
        bodies
            .iter()
            .map(|body| put(&app, "/v1/plans/busy", Some(app.admin_key()), body)),
    )
    .await;
    let mut versions: Vec<i64> = responses
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["version"].as_i64().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=10).collect::<Vec<i64>>());
    let (_, body) = app.get("/v1/plans/busy", Some(app.admin_key())).await;
    assert_eq!(body["version"], 10);
    assert_eq!(body["versions"].as_array().unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_plans_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let admin = Some(app.admin_key());
    let cases: &[(&str, Value, &str)] = &[
        (
            "/charges/0/meter",
            json!("cpu"),
            "charges[0].meter: unknown meter",
        ),
        (
            "/charges/0/model",
            json!("flat"),
            "charges[0].model: unknown model",
        ),
        (
            "/charges/1/arch",
            json!("riscv"),
            "charges[1].arch: unknown arch",
        ),
        ("/currency", json!("XYZ"), "currency: unknown currency"),
        (
            "/charges/1/tiers/1/up_to",
            json!("5"),
            "charges[1].tiers[1].up_to: tiers must be sorted",
        ),
        (
            "/charges/1/tiers/1/up_to",
            json!("10"),
            "charges[1].tiers[1].up_to: tiers must not overlap",
        ),
        (
            "/charges/1/tiers",
            json!([]),
            "charges[1].tiers: must have at least one tier",
        ),
        (
            "/charges/1/tiers/2/up_to",
            json!("30"),
            "charges[1].tiers[2].up_to: the last tier must have up_to null",
        ),
        (
            "/charges/0/unit_price",
            json!("-0.01"),
            "charges[0].unit_price: must not be negative",
        ),
        (
            "/charges/1/tiers/2/unit_price",
            json!("-1"),
            "charges[1].tiers[2].unit_price: must not be negative",
        ),
        (
            "/charges/1/tiers/0/unit_price",
            json!(2),
            "charges[1].tiers[0].unit_price: must be a decimal string",
        ),
        (
            "/charges/0/unit_price",
            json!(0.0000002),
            "charges[0].unit_price: must be a decimal string",
        ),
        (
            "/charges/2/key",
            json!("r"),
            "charges[2].key: duplicate charge key",
        ),
        (
            "/charges/2/package_size",
            json!("0"),
            "charges[2].package_size: must be greater than 0",
        ),
        (
            "/charges/2/package_size",
            json!("-100"),
            "charges[2].package_size: must be greater than 0",
        ),
        (
            "/minimum_charge",
            json!("1.005"),
            "minimum_charge: has more decimal places",
        ),
    ];
    for (pointer, value, message) in cases {
        let mut body = plan("broken");
        *body.pointer_mut(pointer).unwrap() = value.clone();
        let (status, response) = put(&app, "/v1/plans/broken", admin, &body).await;
        assert_error(status, &response, 422, "invalid_plan", message);
    }
    let (status, body) = put(&app, "/v1/plans/broken", admin, &json!([1])).await;
    assert_error(status, &body, 422, "invalid_plan", "must be a JSON object");
    let mut misspelt = plan("broken");
    misspelt["minimum_charg"] = json!("1");
    let (status, body) = put(&app, "/v1/plans/broken", admin, &misspelt).await;
    assert_error(
        status,
        &body,
        422,
        "invalid_plan",
        "minimum_charg: is not a field",
    );

    // A body that is not JSON at all, and plan ids outside the alphabet.
    let res = app
        .http
        .put(format!("{}/v1/plans/broken", app.base_url))
        .bearer_auth(app.admin_key())
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body", "{body}");
    let long = "p".repeat(65);
    for id in ["bad%20id", "caf%C3%A9", long.as_str()] {
        let (status, body) = put(&app, &format!("/v1/plans/{id}"), admin, &plan("p")).await;
        assert_error(status, &body, 400, "invalid_parameter", "plan:");
    }

    let (status, _) = app.get("/v1/plans/broken", admin).await;
    assert_eq!(status, 404, "nothing invalid was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_get_plans_from_the_current_or_the_next_period() {
    let app = spawn_app().await;
    let admin = Some(app.admin_key());
    put(&app, "/v1/plans/pro", admin, &plan("pro")).await;
    let current = period(current_period());
    let next = period(current_period() + Months::new(1));

    // A new tenant: the plan is in force from the current period, and it is the only one.
    let (status, created) = put(&app, "/v1/tenants/acme", admin, &json!({"plan_id": "pro"})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "acme");
    assert_eq!(created["plan_id"], "pro");
    assert_eq!(
        created["plans"],
        json!([{"effective_from": current, "plan_id": "pro"}])
    );
    assert!(created["created_at"].is_string(), "{created}");

    // An existing tenant: from the next period; the current one keeps its plan.
    let (status, body) = put(
        &app,
        "/v1/tenants/acme",
        admin,
        &json!({"plan_id": "default"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan_id"], "pro");
    assert_eq!(
        body["plans"],
        json!([{"effective_from": current, "plan_id": "pro"},
               {"effective_from": next, "plan_id": "default"}])
    );
    // A later PUT for the same period replaces the plan for it.
    let (status, body) = put(
        &app,
        "/v1/tenants/acme",
        admin,
        &json!({"plan_id": "pro", "effective_from": next}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let expected = json!({
        "id": "acme", "created_at": created["created_at"], "plan_id": "pro",
        "plans": [{"effective_from": current, "plan_id": "pro"},
                  {"effective_from": next, "plan_id": "pro"}]
    });
    assert_eq!(body, expected);
    let (status, body) = app.get("/v1/tenants/acme", admin).await;
    assert_eq!((status, body), (200, expected));

    // A tenant created by first use is on the default plan and listed with it.
    app.issue_key("tenant", Some("beta")).await;
    let (status, page) = app.get("/v1/tenants?limit=1", admin).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["data"],
        json!([{"id": "acme", "created_at": created["created_at"], "plan_id": "pro"}])
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = app
        .get(&format!("/v1/tenants?limit=1&cursor={cursor}"), admin)
        .await;
    assert_eq!(page["data"][0]["id"], "beta");
    assert_eq!(page["data"][0]["plan_id"], "default");
    assert_eq!(page["next_cursor"], Value::Null);

    let (status, body) = app.get("/v1/tenants/nobody", admin).await;
    assert_error(status, &body, 404, "not_found", "no tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_assignments_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let admin = Some(app.admin_key());
    let cases = [
        (
            json!({"plan_id": "nope"}),
            "unknown_plan",
            "plan_id: no plan \"nope\"",
        ),
        (json!({}), "missing_field", "plan_id: is required"),
        (
            json!({"plan_id": 5}),
            "invalid_value",
            "plan_id: must be a string",
        ),
        (
            json!({"plan_id": "default", "effective_from": "2026-13"}),
            "invalid_value",
            "effective_from: must be a billing period",
        ),
        (
            json!({"plan_id": "default", "effective_from": "2026-10-01"}),
            "invalid_value",
            "effective_from:",
        ),
        (
            json!({"plan_id": "default", "effective_from": 202610}),
            "invalid_value",
            "effective_from:",
        ),
        (
            json!({"plan_id": "default", "effective_frm": "2026-10"}),
            "invalid_value",
            "effective_frm: is not a field",
        ),
        (
            json!(["default"]),
            "invalid_value",
            "the body must be a JSON object",
        ),
    ];
    for (body, code, message) in cases {
        let (status, response) = put(&app, "/v1/tenants/acme", admin, &body).await;
        assert_error(status, &response, 422, code, message);
    }
    let (status, _) = app.get("/v1/tenants/acme", admin).await;
    assert_eq!(status, 404, "a refused PUT creates no tenant");

    let (status, body) = put(
        &app,
        "/v1/tenants/bad%20tenant",
        admin,
        &json!({"plan_id": "default"}),
    )
    .await;
    assert_error(status, &body, 400, "invalid_parameter", "tenant:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalized_period_keeps_its_plan() {
    let app = spawn_app().await;
    let admin = Some(app.admin_key());
    let assign = |tenant: &'static str, from: &'static str| {
        let app = &app;
        async move {
            put(
                app,
                &format!("/v1/tenants/{tenant}"),
                admin,
                &json!({"plan_id": "default", "effective_from": from}),
            )
            .await
        }
    };
    assert_eq!(assign("acme", "2026-01").await.0, 201);
    insert_invoice(&app, 1, "acme", "2026-02").await;
    for from in ["2026-02", "2026-01", "2025-06"] {
        let (status, body) = assign("acme", from).await;
        assert_error(status, &body, 409, "period_finalized", "effective_from:");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("2026-02"),
            "{body}"
        );
    }
    let (status, body) = assign("acme", "2026-03").await;
    assert_eq!(status, 200, "{body}");

    // The first assignment also prices the periods before it (late usage), so it cannot be
    // replaced or preceded once such a period is finalized.
    assert_eq!(assign("late", "2026-05").await.0, 201);
    insert_invoice(&app, 2, "late", "2026-03").await;
    for from in ["2026-05", "2026-04"] {
        let (status, body) = assign("late", from).await;
        assert_error(status, &body, 409, "period_finalized", "effective_from:");
    }
    let (status, body) = assign("late", "2026-06").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["plans"],
        json!([{"effective_from": "2026-05", "plan_id": "default"},
               {"effective_from": "2026-06", "plan_id": "default"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_plan_extends_backwards() {
    let app = spawn_app().await;
    let admin = Some(app.admin_key());
    put(&app, "/v1/plans/pro", admin, &plan("pro")).await;
    for (plan_id, from) in [("pro", "2026-03"), ("default", "2026-06")] {
        let (status, body) = put(
            &app,
            "/v1/tenants/acme",
            admin,
            &json!({"plan_id": plan_id, "effective_from": from}),
        )
        .await;
        assert!(status == 200 || status == 201, "{body}");
    }
    for (period, expected) in [
        ("2025-12", "pro"),
        ("2026-03", "pro"),
        ("2026-05", "pro"),
        ("2026-06", "default"),
        ("2030-01", "default"),
    ] {
        let plan = plan_id_for_period(&app.pool, "acme", date(period))
            .await
            .unwrap();
        assert_eq!(plan.as_deref(), Some(expected), "{period}");
    }
    // A day inside a period counts as that period.
    let mid_may = NaiveDate::from_ymd_opt(2026, 5, 31).unwrap();
    let plan = plan_id_for_period(&app.pool, "acme", mid_may)
        .await
        .unwrap();
    assert_eq!(plan.as_deref(), Some("pro"));
    let none = plan_id_for_period(&app.pool, "nobody", date("2026-06"))
        .await
        .unwrap();
    assert_eq!(none, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_read_and_write_plans_and_tenants() {
    let app = spawn_app().await;
    let admin = app.admin_key().to_owned();
    let finance = app.issue_key("finance", None).await;
    let ingest = app.issue_key("ingest", None).await;
    let tenant = app.issue_key("tenant", Some("acme")).await;
    let (status, _) = put(
        &app,
        "/v1/tenants/globex",
        Some(&admin),
        &json!({"plan_id": "default"}),
    )
    .await;
    assert_eq!(status, 201);

    let reads = [
        "/v1/plans",
        "/v1/plans/default",
        "/v1/tenants",
        "/v1/tenants/acme",
    ];
    let writes: [(&str, Value); 2] = [
        ("/v1/plans/default", plan("p")),
        ("/v1/tenants/acme", json!({"plan_id": "default"})),
    ];
    let check = |who: &'static str, status: u16, body: &Value, expected: u16| {
        assert_eq!(status, expected, "{who}: {body}");
        if expected >= 400 {
            assert!(body["error"]["code"].is_string(), "{who}: {body}");
        }
    };

    for path in reads {
        let (status, body) = app.get(path, None).await;
        check("no key", status, &body, 401);
        let (status, body) = app.get(path, Some("not-a-key")).await;
        check("unknown key", status, &body, 401);
        let (status, body) = app.get(path, Some(&ingest)).await;
        check("ingest", status, &body, 403);
        let (status, body) = app.get(path, Some(&finance)).await;
        check("finance", status, &body, 200);
        let (status, body) = app.get(path, Some(&admin)).await;
        check("admin", status, &body, 200);
    }
    for (path, body) in &writes {
        for (who, key, expected) in [
            ("no key", None, 401),
            ("ingest", Some(ingest.as_str()), 403),
            ("finance", Some(finance.as_str()), 403),
            ("tenant", Some(tenant.as_str()), 403),
        ] {
            let (status, response) = put(&app, path, key, body).await;
            check(who, status, &response, expected);
        }
    }

    // A tenant key: no plans, no list, its own tenant only.
    for path in ["/v1/plans", "/v1/plans/default", "/v1/tenants"] {
        let (status, body) = app.get(path, Some(&tenant)).await;
        check("tenant", status, &body, 403);
    }
    let (status, body) = app.get("/v1/tenants/acme", Some(&tenant)).await;
    check("tenant", status, &body, 200);
    assert_eq!(body["plan_id"], "default");
    for other in ["globex", "nobody"] {
        let (status, body) = app
            .get(&format!("/v1/tenants/{other}"), Some(&tenant))
            .await;
        check("tenant", status, &body, 404);
    }
}
