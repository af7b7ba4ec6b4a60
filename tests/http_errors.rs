//! Hostile HTTP input and storage outages: every error is the JSON envelope with a 4xx the
//! client can act on, or a 503 it may retry, never a 500 or a framework's bare text.

mod common;

use common::{TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

/// Asserts the JSON envelope and returns its message.
fn envelope(status: u16, body: &Value) -> String {
    let message = body["error"]["message"].as_str();
    assert!(
        body["error"]["code"].is_string() && message.is_some(),
        "{status}: not the error envelope: {body}"
    );
    message.unwrap().to_owned()
}

async fn raw(app: &TestApp, method: Method, path: &str, body: &str) -> reqwest::Response {
    app.http
        .request(method, format!("{}{path}", app.base_url))
        .bearer_auth(app.admin_key())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_nul_in_a_path_query_or_body_is_a_client_error() {
    let app = spawn_app().await;
    let admin = app.admin_key().to_owned();
    let tenant_key = app.issue_key("tenant", Some("x")).await;
    app.put_admin("/v1/tenants/x", &json!({"plan_id": "default"}))
        .await;
    let gets = [
        "/v1/tenants/a%00b",
        "/v1/tenants/a%00b/usage?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
        "/v1/tenants/a%00b/invoices",
        "/v1/tenants/a%00b/invoices/upcoming",
        "/v1/tenants/a%00b/invoices/INV-00000001",
        "/v1/tenants/x/invoices/INV%00",
        "/v1/plans/a%00b",
        "/v1/plans/a%00b?version=1",
        "/v1/tenants/x/usage?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&function=a%00",
        "/v1/tenants/x/usage?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&function=%01",
    ];
    for key in [&admin, &tenant_key] {
        for path in gets {
            let (status, body) = app.get(path, Some(key)).await;
            // Plans are not a tenant key's to read.
            let forbidden = key == &tenant_key && path.starts_with("/v1/plans");
            assert!(
                [400, 404, 422].contains(&status) || (forbidden && status == 403),
                "GET {path}: {status} {body}"
            );
            envelope(status, &body);
        }
    }
    let puts = [
        ("/v1/tenants/x", json!({"plan_id": "a\u{0}"})),
        ("/v1/tenants/x", json!({"plan_id": ""})),
        ("/v1/tenants/a%00b", json!({"plan_id": "default"})),
        (
            "/v1/plans/a%00b",
            json!({"name": "n", "currency": "USD", "charges": []}),
        ),
    ];
    for (path, body) in puts {
        let (status, res) = app.send(Method::PUT, path, Some(&admin), &body).await;
        assert!([400, 422].contains(&status), "PUT {path}: {status} {res}");
        let message = envelope(status, &res);
        let field = if path.contains("%00") {
            path.split('/').nth(2).unwrap().trim_end_matches('s')
        } else {
            "plan_id"
        };
        assert!(message.contains(field), "PUT {path} {body}: {message}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after_on_every_route() {
    let app = spawn_app().await;
    let tenant_key = app.issue_key("tenant", Some("x")).await;
    let name = app
        .settings
        .database
        .url
        .rsplit_once('/')
        .unwrap()
        .1
        .to_owned();
    // Refuse new connections and end the app's open ones: as good as a database down.
    let admin_pool = sqlx::PgPool::connect(&format!(
        "{}/postgres",
        app.settings.database.url.rsplit_once('/').unwrap().0
    ))
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    )))
    .execute(&admin_pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin_pool)
        .await
        .unwrap();

    let admin = app.admin_key().to_owned();
    let event = json!({"id": "e1", "tenant": "x", "function": "f",
        "timestamp": chrono::Utc::now().to_rfc3339(), "duration_ms": 1, "memory_mb": 128});
    let calls: Vec<(Method, &str, &str, Value)> = vec![
        (Method::GET, "/v1/tenants", &admin, Value::Null),
        (Method::GET, "/v1/tenants/x", &admin, Value::Null),
        (Method::GET, "/v1/tenants/x", &tenant_key, Value::Null),
        (Method::GET, "/v1/plans", &admin, Value::Null),
        (Method::GET, "/v1/plans/default", &admin, Value::Null),
        (Method::GET, "/v1/tenants/x/invoices", &admin, Value::Null),
        (
            Method::GET,
            "/v1/tenants/x/invoices/upcoming",
            &admin,
            Value::Null,
        ),
        (
            Method::GET,
            "/v1/tenants/x/invoices/INV-00000001",
            &admin,
            Value::Null,
        ),
        (
            Method::GET,
            "/v1/tenants/x/usage?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
            &admin,
            Value::Null,
        ),
        (
            Method::GET,
            "/v1/exports/invoice-lines.csv?period=2026-10",
            &admin,
            Value::Null,
        ),
        (
            Method::PUT,
            "/v1/tenants/x",
            &admin,
            json!({"plan_id": "default"}),
        ),
        (Method::POST, "/v1/events", &admin, event),
        (
            Method::POST,
            "/v1/api-keys",
            &admin,
            json!({"role": "finance"}),
        ),
        (
            Method::POST,
            "/v1/billing/finalize",
            &admin,
            json!({"period": "2020-01"}),
        ),
    ];
    for (method, path, key, body) in calls {
        let mut req = app
            .http
            .request(method.clone(), format!("{}{path}", app.base_url))
            .bearer_auth(key);
        if !body.is_null() {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let retry_after = res.headers().get("retry-after").cloned();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 503, "{method} {path}: {body}");
        assert_eq!(
            body["error"]["code"], "unavailable",
            "{method} {path}: {body}"
        );
        assert!(retry_after.is_some(), "{method} {path}: no Retry-After");
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"
    )))
    .execute(&admin_pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_frameworks_own_errors_are_the_envelope() {
    let app = spawn_app().await;

    let res = raw(&app, Method::GET, "/no/such/route", "").await;
    assert_eq!(res.status(), 404);
    envelope(404, &res.json().await.unwrap());

    for (method, path, allow) in [
        (Method::POST, "/v1/plans/p", "GET, PUT"),
        (Method::DELETE, "/v1/tenants", "GET"),
        (Method::GET, "/v1/events", "POST"),
        (Method::PUT, "/healthz", "GET"),
    ] {
        let res = raw(&app, method.clone(), path, "{}").await;
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(
            res.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    }

    // A JSON body over the limit.
    let big = format!("{{\"name\": \"{}\"}}", "n".repeat(2 * 1024 * 1024));
    let res = raw(&app, Method::PUT, "/v1/plans/p", &big).await;
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large", "{body}");

    // Not JSON, and JSON of the wrong shape: the field is named, never a Rust type.
    let res = raw(&app, Method::POST, "/v1/billing/finalize", "{\"period\": ").await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body", "{body}");
    for (path, body, field) in [
        ("/v1/billing/finalize", "{\"period\": 202610}", "period"),
        ("/v1/billing/finalize", "{}", "period"),
        ("/v1/billing/finalize", "[]", "object"),
        ("/v1/billing/finalize", "7", "object"),
        ("/v1/api-keys", "[1]", "object"),
        ("/v1/api-keys", "{\"role\": 3}", "role"),
        (
            "/v1/api-keys",
            "{\"role\": \"tenant\", \"tenant\": []}",
            "tenant",
        ),
    ] {
        let res = raw(&app, Method::POST, path, body).await;
        let status = res.status().as_u16();
        assert!([400, 422].contains(&status), "{path} {body}: {status}");
        let message = envelope(status, &res.json().await.unwrap());
        assert!(message.contains(field), "{path} {body}: {message}");
        for rust in ["struct", "NewKey", "FinalizeRequest", "enum", "String"] {
            assert!(!message.contains(rust), "{path} {body}: {message}");
        }
    }

    // A malformed query string.
    let (status, body) = app
        .get("/v1/tenants?limit=1&limit=2", Some(app.admin_key()))
        .await;
    assert_eq!(status, 400, "{body}");
    envelope(status, &body);
}
