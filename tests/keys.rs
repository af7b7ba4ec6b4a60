//! API key lifecycle (issue 12, item 11): listing without secrets, revocation seen by every
//! process at once, expiry, keyset paging, last use, and `meterd keys`.

mod common;

use std::collections::HashSet;
use std::time::Instant;

use chrono::Utc;
use common::{DEADLINE, TestApp, spawn_app, spawn_app_role};
use meterd::app::ServeRole;
use serde_json::{Value, json};

async fn issue(app: &TestApp, body: Value) -> Value {
    let (status, issued) = app.post("/v1/api-keys", Some(app.admin_key()), &body).await;
    assert_eq!(status, 201, "{issued}");
    issued
}

/// Every page of `GET /v1/api-keys` with `limit`, as admin.
async fn list_all(app: &TestApp, limit: u32) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/api-keys?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = app.get(&path, Some(app.admin_key())).await;
        assert_eq!(status, 200, "{body}");
        rows.extend(body["data"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return rows,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_shows_what_is_known_of_keys_but_never_a_secret_and_only_to_admins() {
    let app = spawn_app().await;
    let tenant = issue(&app, json!({"role": "tenant", "tenant": "acme"})).await;
    let finance = issue(&app, json!({"role": "finance"})).await;
    let tenant_key = tenant["key"].as_str().unwrap();
    let finance_key = finance["key"].as_str().unwrap();

    let (status, body) = app.get("/v1/api-keys", Some(app.admin_key())).await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    for secret in [tenant_key, finance_key] {
        assert!(!text.contains(secret), "the list shows a key: {text}");
        let hash: String = meterd::api::auth::hash_key(secret)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!text.contains(&hash), "the list shows a key's hash: {text}");
    }
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{body}");
    let fields: HashSet<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let expected: HashSet<&str> = [
        "id",
        "role",
        "tenant",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked",
        "revoked_at",
    ]
    .into();
    assert_eq!(fields, expected, "{body}");
    assert_eq!(rows[0]["id"], tenant["id"]);
    assert_eq!(rows[0]["role"], "tenant");
    assert_eq!(rows[0]["tenant"], "acme");
    assert_eq!(rows[0]["revoked"], false);
    assert_eq!(rows[1]["role"], "finance");
    assert_eq!(body["next_cursor"], Value::Null);

    let one = format!("/v1/api-keys/{}", finance["id"].as_str().unwrap());
    let (status, got) = app.get(&one, Some(app.admin_key())).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, rows[1]);

    for key in [tenant_key, finance_key] {
        let (status, body) = app.get("/v1/api-keys", Some(key)).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = app.get(&one, Some(key)).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = app
            .send(reqwest::Method::DELETE, &one, Some(key), &Value::Null)
            .await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = app
        .get("/v1/api-keys/not-a-uuid", Some(app.admin_key()))
        .await;
    assert_eq!(status, 404, "{body}");
    let unknown = format!("/v1/api-keys/{}", uuid::Uuid::new_v4());
    let (status, body) = app.get(&unknown, Some(app.admin_key())).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_at_once_by_another_process_on_the_same_database() {
    let first = spawn_app().await;
    let second = spawn_app_role(first.settings.clone(), ServeRole::Api).await;
    let issued = issue(&first, json!({"role": "tenant", "tenant": "acme"})).await;
    let key = issued["key"].as_str().unwrap();
    let path = format!("/v1/api-keys/{}", issued["id"].as_str().unwrap());

    let (status, body) = second.get("/v1/tenants/acme", Some(key)).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = first
        .send(
            reqwest::Method::DELETE,
            &path,
            Some(first.admin_key()),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = second.get("/v1/tenants/acme", Some(key)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );

    // Revoking twice is the same as once; the record stays, marked revoked.
    let (status, body) = second
        .send(
            reqwest::Method::DELETE,
            &path,
            Some(first.admin_key()),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // The deleted key is gone from its own address, as a deleted resource is; the list keeps
    // its record, marked revoked, for the audit trail.
    let (status, body) = second.get(&path, Some(second.admin_key())).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    let (status, list) = second.get("/v1/api-keys", Some(second.admin_key())).await;
    assert_eq!(status, 200, "{list}");
    let got = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == issued["id"])
        .expect("the revoked key is still listed");
    assert_eq!(got["revoked"], true);
    assert!(got["revoked_at"].is_string(), "{got}");
    let unknown = format!("/v1/api-keys/{}", uuid::Uuid::new_v4());
    let (status, body) = first
        .send(
            reqwest::Method::DELETE,
            &unknown,
            Some(first.admin_key()),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_and_an_expiry_must_lie_in_the_future() {
    let app = spawn_app().await;
    let later = (Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let issued = issue(&app, json!({"role": "finance", "expires_at": later})).await;
    let key = issued["key"].as_str().unwrap();
    assert!(issued["expires_at"].is_string(), "{issued}");
    let (status, body) = app.get("/v1/tenants", Some(key)).await;
    assert_eq!(status, 200, "{body}");

    // Time passes: the key's expiry is now behind us.
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, body) = app.get("/v1/tenants", Some(key)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    let past = (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    for expires_at in [json!(past), json!("tomorrow"), json!("2027-01-01T00:00:00")] {
        let (status, body) = app
            .post(
                "/v1/api-keys",
                Some(app.admin_key()),
                &json!({"role": "finance", "expires_at": expires_at}),
            )
            .await;
        assert_eq!(status, 422, "{expires_at}: {body}");
        assert_eq!(body["error"]["code"], "invalid_value");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("expires_at"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_neither_skips_nor_repeats_a_key_created_between_pages() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(issue(&app, json!({"role": "ingest"})).await["id"].clone());
    }
    let (status, first) = app.get("/v1/api-keys?limit=2", Some(app.admin_key())).await;
    assert_eq!(status, 200, "{first}");
    ids.push(issue(&app, json!({"role": "ingest"})).await["id"].clone());

    let mut seen: Vec<Value> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    let mut cursor = first["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let (status, page) = app
            .get(
                &format!("/v1/api-keys?limit=2&cursor={c}"),
                Some(app.admin_key()),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].clone()),
        );
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ids, "every key once, in creation order");
    assert_eq!(list_all(&app, 1000).await.len(), 6);

    for bad in ["o2", "nonsense", "k12_nope"] {
        let (status, body) = app
            .get(&format!("/v1/api-keys?cursor={bad}"), Some(app.admin_key()))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cursor"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_last_use_is_recorded() {
    let app = spawn_app().await;
    let issued = issue(&app, json!({"role": "finance"})).await;
    let path = format!("/v1/api-keys/{}", issued["id"].as_str().unwrap());
    let (_, before) = app.get(&path, Some(app.admin_key())).await;
    assert_eq!(before["last_used_at"], Value::Null);
    let (status, body) = app
        .get("/v1/tenants", Some(issued["key"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, got) = app.get(&path, Some(app.admin_key())).await;
        if got["last_used_at"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "last use never recorded: {got}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs `meterd keys …` on the test's settings: (success, stdout, stderr).
async fn meterd_keys(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterd"));
    // Nothing from this environment may point the child elsewhere than the test.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("METERD") {
            command.env_remove(name);
        }
    }
    let output = command
        .arg("keys")
        .args(args)
        .envs(common::settings_env(&app.settings))
        .env("DATABASE_URL", &app.settings.database.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run meterd");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_issue_list_and_revoke_keys_from_the_command_line() {
    let app = spawn_app().await;
    let (ok, stdout, stderr) =
        meterd_keys(&app, &["issue", "--role", "tenant", "--tenant", "acme"]).await;
    assert!(ok, "{stderr}");
    let issued: Value = serde_json::from_str(stdout.trim()).unwrap();
    let key = issued["key"].as_str().unwrap();
    let id = issued["id"].as_str().unwrap();
    let (status, body) = app.get("/v1/tenants/acme", Some(key)).await;
    assert_eq!(status, 200, "{body}");

    let (ok, stdout, stderr) = meterd_keys(&app, &["list", "--json"]).await;
    assert!(ok, "{stderr}");
    assert!(!stdout.contains(key), "{stdout}");
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert_eq!(rows[0]["id"], id);
    let (ok, stdout, stderr) = meterd_keys(&app, &["list"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(id) && stdout.contains("active"), "{stdout}");

    let (ok, _, stderr) = meterd_keys(&app, &["revoke", id]).await;
    assert!(ok, "{stderr}");
    let (status, body) = app.get("/v1/tenants/acme", Some(key)).await;
    assert_eq!(status, 401, "{body}");
    let (ok, stdout, stderr) = meterd_keys(&app, &["list"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("revoked"), "{stdout}");

    let (ok, _, stderr) = meterd_keys(&app, &["issue", "--role", "admin"]).await;
    assert!(!ok);
    assert!(stderr.contains("role"), "{stderr}");
    let (ok, _, stderr) = meterd_keys(&app, &["revoke", &uuid::Uuid::new_v4().to_string()]).await;
    assert!(!ok);
    assert!(stderr.contains("no API key"), "{stderr}");
}
