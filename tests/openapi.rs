//! The OpenAPI document: the committed `openapi.json` is what the code generates, the app serves
//! it, it is valid OpenAPI 3 and documents every route, and real responses match the schemas it
//! documents for them.

mod common;

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, Months, NaiveDate, Utc};
use common::{TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

const REGENERATE: &str = "run `cargo run -- openapi > openapi.json` and commit the result";

/// Every route `src/api/mod.rs` registers, as (method, OpenAPI path). A route added there must
/// be added here, and then the test fails until the document has it too.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/events"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("get", "/v1/api-keys/{id}"),
    ("delete", "/v1/api-keys/{id}"),
    ("get", "/v1/tenants/{tenant}/usage"),
    ("get", "/v1/tenants/{tenant}/invoices"),
    ("get", "/v1/tenants/{tenant}/invoices/upcoming"),
    ("get", "/v1/tenants/{tenant}/invoices/{number}"),
    ("post", "/v1/billing/finalize"),
    ("get", "/v1/exports/invoice-lines.csv"),
    ("get", "/v1/exports/usage.csv"),
    ("get", "/v1/exports/function-costs.csv"),
    ("get", "/v1/plans"),
    ("get", "/v1/plans/{plan}"),
    ("put", "/v1/plans/{plan}"),
    ("get", "/v1/tenants"),
    ("get", "/v1/tenants/{tenant}"),
    ("put", "/v1/tenants/{tenant}"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn generated() -> Value {
    serde_json::from_str(meterd::api::openapi::document()).expect("the generated document is JSON")
}

#[test]
fn the_committed_openapi_json_is_what_the_code_generates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path} ({e}): {REGENERATE}"));
    let committed: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("openapi.json is not JSON ({e}): {REGENERATE}"));
    if let Some(at) = first_difference(&committed, &generated(), String::new()) {
        panic!("openapi.json differs from what the code generates at {at}: {REGENERATE}");
    }
}

#[test]
fn the_document_is_valid_openapi_3_and_documents_every_route() {
    let doc = generated();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3."), "openapi is {version:?}");
    for field in ["title", "version"] {
        assert!(
            doc["info"][field].as_str().is_some_and(|s| !s.is_empty()),
            "info.{field} is missing"
        );
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");

    let mut operations = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("`paths` is an object") {
        assert!(path.starts_with('/'), "path {path:?} does not start with /");
        for (method, operation) in item.as_object().expect("a path item is an object") {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: {method:?} is not an operation"
            );
            let name = format!("{} {path}", method.to_uppercase());
            let responses = operation["responses"]
                .as_object()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| panic!("{name} has no responses"));
            for (status, response) in responses {
                assert!(
                    status.parse::<u16>().is_ok_and(|s| (100..600).contains(&s)),
                    "{name}: {status:?} is not a status code"
                );
                assert!(
                    resolve(&doc, response)["description"].is_string(),
                    "{name} {status} has no description"
                );
            }
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no operationId"));
            assert!(
                operation_ids.insert(id.to_owned()),
                "operationId {id} is used twice"
            );
            for parameter in template_parameters(path) {
                let declared = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| resolve(&doc, p))
                    .any(|p| p["in"] == "path" && p["name"] == parameter && p["required"] == true);
                assert!(
                    declared,
                    "{name}: path parameter {parameter} is not declared"
                );
            }
            let security = operation["security"].as_array();
            assert_eq!(
                security.is_some(),
                path.starts_with("/v1/"),
                "{name}: /v1 operations need a key, the others none"
            );
            for requirement in security.into_iter().flatten() {
                for scheme in requirement.as_object().expect("a requirement").keys() {
                    assert!(
                        schemes.contains_key(scheme),
                        "{name}: unknown security scheme {scheme}"
                    );
                }
            }
            operations.insert((method.clone(), path.clone()));
        }
    }

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty(), "the document has no $ref at all");
    for r in refs {
        assert!(
            r.starts_with("#/components/") && doc.pointer(&r[1..]).is_some(),
            "$ref {r} does not resolve to a component of the document"
        );
    }

    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    let missing: Vec<_> = routes.difference(&operations).collect();
    assert!(
        missing.is_empty(),
        "routes the document lacks (annotate the handler and list it in ApiDoc): {missing:?}"
    );
    let extra: Vec<_> = operations.difference(&routes).collect();
    assert!(
        extra.is_empty(),
        "documented operations that ROUTES lacks: {extra:?}"
    );
}

#[tokio::test]
async fn the_app_serves_the_document_and_every_documented_route() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(format!("{}/openapi.json", app.base_url))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(res.status(), 200);
    assert!(content_type(&res).starts_with("application/json"));
    let served: Value = res.json().await.expect("the served document is JSON");
    if let Some(at) = first_difference(&served, &generated(), String::new()) {
        panic!("GET /openapi.json differs from the generated document at {at}");
    }

    // Each route reaches a handler: neither the fallback's 404 nor a 405.
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{tenant}", "nobody")
            .replace("{plan}", "no-plan")
            .replace("{number}", "INV-0");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let res = app
            .http
            .request(method.clone(), format!("{}{concrete}", app.base_url))
            .bearer_auth(app.admin_key())
            .json(&json!({}))
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path} is not routed");
        assert!(
            !(status == 404 && body["error"]["message"] == "no such resource"),
            "{method} {path} is not routed"
        );
    }
}

#[tokio::test]
async fn responses_match_the_documented_schemas() {
    let app = spawn_app().await;
    let api = Api {
        app: &app,
        doc: generated(),
    };
    let admin = Some(app.admin_key());
    let this_period = Utc::now().date_naive().with_day(1).unwrap();
    let previous = this_period - Months::new(1);
    let label = |p: NaiveDate| p.format("%Y-%m").to_string();

    // Plans with every pricing model, an allowance and a minimum; a tenant on it.
    let plan = json!({
        "name": "conformance", "currency": "USD",
        "allowances": [{"meter": "requests", "quantity": "2"}],
        "charges": [
            {"key": "requests", "meter": "requests", "model": "unit", "unit_price": "0.01"},
            {"key": "compute-arm", "meter": "compute", "arch": "arm64", "model": "graduated",
             "tiers": [{"up_to": "1", "unit_price": "0.5"}, {"up_to": null, "unit_price": "0.25"}]},
            {"key": "compute-x86", "meter": "compute", "arch": "x86_64", "model": "volume",
             "tiers": [{"up_to": "1", "unit_price": "0.4"}, {"up_to": null, "unit_price": "0.2"}]},
            {"key": "duration", "meter": "duration", "model": "package",
             "package_size": "10", "package_price": "0.02"}
        ],
        "minimum_charge": "5.00"
    });
    let bad_plan = json!({"name": "x", "currency": "USD", "charges": [{"key": "k"}]});
    let assignment = json!({"plan_id": "conf", "effective_from": label(previous)});
    let unknown_plan = json!({"plan_id": "none"});
    let key_for = |role: &str, tenant: Option<&str>| json!({"role": role, "tenant": tenant});
    let (tenant_key, ingest_key, finance_key, admin_role) = (
        key_for("tenant", Some("acme")),
        key_for("ingest", None),
        key_for("finance", None),
        key_for("admin", None),
    );
    let mut issued = Vec::new();
    for (status, method, path, key, body) in [
        (200, "GET", "/healthz", None, None),
        (200, "GET", "/metrics", None, None),
        (201, "PUT", "/v1/plans/conf", admin, Some(&plan)),
        (201, "PUT", "/v1/plans/conf", admin, Some(&plan)),
        (422, "PUT", "/v1/plans/conf", admin, Some(&bad_plan)),
        (200, "GET", "/v1/plans", admin, None),
        (200, "GET", "/v1/plans/conf", admin, None),
        (200, "GET", "/v1/plans/conf?version=1", admin, None),
        (400, "GET", "/v1/plans/conf?version=x", admin, None),
        (404, "GET", "/v1/plans/none", admin, None),
        (201, "PUT", "/v1/tenants/acme", admin, Some(&assignment)),
        (422, "PUT", "/v1/tenants/acme", admin, Some(&unknown_plan)),
        (201, "POST", "/v1/api-keys", admin, Some(&tenant_key)),
        (201, "POST", "/v1/api-keys", admin, Some(&ingest_key)),
        (201, "POST", "/v1/api-keys", admin, Some(&finance_key)),
        (422, "POST", "/v1/api-keys", admin, Some(&admin_role)),
        (401, "POST", "/v1/api-keys", None, Some(&finance_key)),
        (200, "GET", "/v1/api-keys?limit=1", admin, None),
        (400, "GET", "/v1/api-keys?cursor=x", admin, None),
        (
            404,
            "GET",
            "/v1/api-keys/00000000-0000-0000-0000-000000000000",
            admin,
            None,
        ),
        (
            404,
            "DELETE",
            "/v1/api-keys/00000000-0000-0000-0000-000000000000",
            admin,
            None,
        ),
    ] {
        let body = api.expect(status, method, path, key, body).await;
        issued.extend(body["key"].as_str().map(str::to_owned));
    }
    api.call("GET", "/readyz", None, None).await;
    let [tenant, ingest, finance] = [0, 1, 2].map(|i| Some(issued[i].as_str()));

    // Usage in the previous period on both archs; a duplicate; late usage after finalizing,
    // which the draft shows as adjustments.
    let at = previous.and_hms_opt(12, 0, 0).unwrap().and_utc() + Duration::days(14);
    let events = |first: u32, n: u32| -> Value {
        (first..first + n)
            .map(|i| {
                json!({"id": format!("e{i}"), "tenant": "acme", "function": format!("f{}", i % 2),
                       "timestamp": at.to_rfc3339(), "duration_ms": 1000 + i, "memory_mb": 1024,
                       "arch": if i % 3 == 0 { "arm64" } else { "x86_64" }})
            })
            .collect()
    };
    let (usage, duplicate, late) = (events(0, 12), events(0, 1), events(100, 4));
    let day = at.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let hour = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:00:00Z").to_string();
    let range = format!("from={}&to={}", hour(day), hour(day + Duration::days(1)));
    let usage_path =
        |tenant: &str, query: &str| format!("/v1/tenants/{tenant}/usage?{range}{query}");
    let (own, grouped, daily, other) = (
        usage_path("acme", ""),
        usage_path("acme", "&group_by=function,arch"),
        usage_path("acme", "&granularity=day&group_by=arch&limit=1"),
        usage_path("other", ""),
    );
    let period = |p: NaiveDate| json!({"period": label(p)});
    let (ended, open) = (period(previous), period(this_period));
    let no_period = json!({"period": "2026"});
    for (status, method, path, key, body) in [
        (200, "POST", "/v1/events", ingest, Some(&usage)),
        (200, "POST", "/v1/events", ingest, Some(&duplicate)),
        (422, "POST", "/v1/events", ingest, Some(&json!({"id": "x"}))),
        (403, "POST", "/v1/events", tenant, Some(&duplicate)),
        (200, "GET", own.as_str(), tenant, None),
        (200, "GET", grouped.as_str(), tenant, None),
        (200, "GET", daily.as_str(), tenant, None),
        (400, "GET", "/v1/tenants/acme/usage?from=x", tenant, None),
        (404, "GET", other.as_str(), tenant, None),
        (409, "POST", "/v1/billing/finalize", admin, Some(&open)),
        (422, "POST", "/v1/billing/finalize", admin, Some(&no_period)),
        (422, "POST", "/v1/billing/finalize", admin, Some(&json!([]))),
    ] {
        api.expect(status, method, path, key, body).await;
    }
    let finalized = api
        .expect(200, "POST", "/v1/billing/finalize", admin, Some(&ended))
        .await;
    let number = finalized["created"][0].as_str().expect("an invoice");
    let invoice = format!("/v1/tenants/acme/invoices/{number}");
    let invoice_lines = format!("/v1/exports/invoice-lines.csv?period={}", label(previous));
    let function_costs = format!("/v1/exports/function-costs.csv?period={}", label(previous));
    let usage_csv = format!("/v1/exports/usage.csv?{range}");
    let next_period = json!({"plan_id": "conf"});
    let (bad_limit, upcoming, others) = (
        "/v1/tenants/acme/invoices?limit=0",
        "/v1/tenants/acme/invoices/upcoming",
        "/v1/tenants/other/invoices/upcoming",
    );
    for (status, method, path, key, body) in [
        (200, "POST", "/v1/events", ingest, Some(&late)),
        (200, "GET", "/v1/tenants/acme/invoices", tenant, None),
        (400, "GET", bad_limit, tenant, None),
        (200, "GET", invoice.as_str(), tenant, None),
        (404, "GET", "/v1/tenants/acme/invoices/INV-0", tenant, None),
        (200, "GET", upcoming, tenant, None),
        (404, "GET", others, tenant, None),
        (200, "GET", "/v1/tenants", finance, None),
        (200, "GET", "/v1/tenants/acme", tenant, None),
        (200, "PUT", "/v1/tenants/acme", admin, Some(&next_period)),
        (409, "PUT", "/v1/tenants/acme", admin, Some(&assignment)),
        (200, "GET", invoice_lines.as_str(), finance, None),
        (200, "GET", function_costs.as_str(), finance, None),
        (400, "GET", "/v1/exports/invoice-lines.csv", finance, None),
        (200, "GET", usage_csv.as_str(), finance, None),
        (403, "GET", usage_csv.as_str(), tenant, None),
    ] {
        let body = api.expect(status, method, path, key, body).await;
        // The invoice and the draft show the line kinds whose schema is worth checking.
        if path == invoice {
            assert!(has_line(&body, "minimum"), "{body:#}");
        } else if path == upcoming {
            assert!(has_line(&body, "adjustment"), "{body:#}");
        }
    }
}

/// Calls the API and checks each answer against the document.
struct Api<'a> {
    app: &'a TestApp,
    doc: Value,
}

impl Api<'_> {
    /// Sends a request, finds the operation the document has for it, and checks that the status
    /// is documented for the operation and the body matches the documented media type and
    /// schema. Returns the status and the body (JSON, or the text as a string).
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let name = format!("{method} {path}");
        let operation = self.operation(method, path);
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self
            .app
            .http
            .request(method, format!("{}{path}", self.app.base_url));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let media = content_type(&res);
        let text = res.text().await.expect("body");
        let response = operation["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{name} answered {status}, which is not documented: {text}"));
        let content = resolve(&self.doc, response)["content"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} {status} documents no content"));
        let (documented, media_type) = content
            .iter()
            .find(|(m, _)| base_type(m) == base_type(&media))
            .unwrap_or_else(|| {
                panic!(
                    "{name} {status}: {media} is not documented ({:?})",
                    content.keys()
                )
            });
        let value = if base_type(documented) == "application/json" {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} {status}: not JSON ({e}): {text}"))
        } else {
            Value::String(text)
        };
        let mut errors = Vec::new();
        check(
            &self.doc,
            &value,
            &media_type["schema"],
            "body",
            true,
            &mut errors,
        );
        assert!(
            errors.is_empty(),
            "{name} {status} does not match its schema:\n{}\n{value:#}",
            errors.join("\n")
        );
        (status, value)
    }

    /// `call`, and the status must be `expected`; returns the body.
    async fn expect(
        &self,
        expected: u16,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Value {
        let (status, value) = self.call(method, path, key, body).await;
        assert_eq!(status, expected, "{method} {path}: {value}");
        value
    }

    /// The documented operation a request goes to: the path template that matches, preferring
    /// literal segments (`invoices/upcoming` over `invoices/{number}`), as the router does.
    fn operation(&self, method: &str, path: &str) -> &Value {
        let segments: Vec<&str> = path.split('?').next().unwrap().split('/').collect();
        let method = method.to_lowercase();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(template, item)| {
                let parts: Vec<&str> = template.split('/').collect();
                item.get(&method).is_some()
                    && parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t.starts_with('{') || t == s)
            })
            .min_by_key(|(template, _)| template.matches('{').count())
            .map(|(_, item)| &item[&method])
            .unwrap_or_else(|| panic!("{method} {path} is not documented"))
    }
}

/// Checks `value` against `schema`, for the part of JSON Schema the document uses: `$ref`,
/// `allOf`, `oneOf`, `type`, `enum`, `required`, `properties`, `items`, `minItems`, `maxItems`
/// (not `pattern` or `format`). `strict` refuses properties the schema does not declare, so a
/// field the code adds to a response but not to its schema fails; it is off for the parts of an
/// `allOf`, whose declared properties are checked together.
fn check(
    doc: &Value,
    value: &Value,
    schema: &Value,
    at: &str,
    strict: bool,
    errors: &mut Vec<String>,
) {
    let schema = resolve(doc, schema);
    if let Some(parts) = schema["allOf"].as_array() {
        for part in parts {
            check(doc, value, part, at, false, errors);
        }
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let matching = branches
            .iter()
            .filter(|branch| {
                let mut branch_errors = Vec::new();
                check(doc, value, branch, at, strict, &mut branch_errors);
                branch_errors.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!(
                "{at}: matches {matching} branches of a oneOf: {value}"
            ));
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = json_type(value);
        let fits = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !fits {
            errors.push(format!("{at}: is {actual}, not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    match value {
        Value::Object(fields) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().unwrap();
                if !fields.contains_key(required) {
                    errors.push(format!("{at}: lacks the required {required}"));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, field) in fields {
                if let Some(property) = properties.and_then(|p| p.get(key)) {
                    check(doc, field, property, &format!("{at}.{key}"), true, errors);
                }
            }
            let mut declared = BTreeSet::new();
            declared_properties(doc, schema, &mut declared);
            let closed = properties.is_some() || schema.get("allOf").is_some();
            if strict && closed {
                for key in fields.keys().filter(|k| !declared.contains(k.as_str())) {
                    errors.push(format!("{at}: {key} is not in the schema"));
                }
            }
        }
        Value::Array(items) => {
            let count = items.len() as u64;
            if schema["minItems"].as_u64().is_some_and(|min| count < min)
                || schema["maxItems"].as_u64().is_some_and(|max| count > max)
            {
                errors.push(format!("{at}: {count} items is out of bounds"));
            }
            if schema.get("items").is_some() {
                for (i, item) in items.iter().enumerate() {
                    check(
                        doc,
                        item,
                        &schema["items"],
                        &format!("{at}[{i}]"),
                        true,
                        errors,
                    );
                }
            }
        }
        _ => {}
    }
}

/// The property names a schema declares, through `$ref`, `allOf` and `oneOf`.
fn declared_properties<'a>(doc: &'a Value, schema: &'a Value, into: &mut BTreeSet<&'a str>) {
    let schema = resolve(doc, schema);
    into.extend(
        schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str()),
    );
    for combined in ["allOf", "oneOf"] {
        for part in schema[combined].as_array().into_iter().flatten() {
            declared_properties(doc, part, into);
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Follows `$ref`s to the component they name.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(r) = value["$ref"].as_str() {
        value = r
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
    }
    value
}

fn collect_refs<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("$ref", Value::String(r)) => into.push(r),
                    _ => collect_refs(field, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, into)),
        _ => {}
    }
}

/// The `{name}`s of a path template.
fn template_parameters(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

/// The JSON pointer of the first place two documents differ.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.keys().chain(y.keys()).find_map(|key| {
            let at = format!("{at}/{key}");
            match (x.get(key), y.get(key)) {
                (Some(u), Some(v)) => first_difference(u, v, at),
                _ => Some(at),
            }
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, format!("{at}/{i}"))),
        _ => (a != b).then(|| if at.is_empty() { "/".to_owned() } else { at }),
    }
}

fn content_type(res: &reqwest::Response) -> String {
    res.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn base_type(media: &str) -> &str {
    media.split(';').next().unwrap_or("").trim()
}

fn has_line(invoice: &Value, kind: &str) -> bool {
    invoice["lines"]
        .as_array()
        .is_some_and(|lines| lines.iter().any(|l| l["kind"] == kind))
}
