//! The REST API (SPEC §5): routes, auth, the error envelope, the OpenAPI document.

pub mod auth;
mod docs_page;
pub mod error;
mod events;
mod exports;
mod health;
mod invoices;
mod keys;
pub mod openapi;
mod plans;
mod request_id;
mod tenants;
mod usage;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{
    App, HttpServer,
    body::MessageBody,
    dev::{Server, ServiceRequest, ServiceResponse},
    middleware::{ErrorHandlers, Next, from_fn},
    web,
};
use sqlx::PgPool;

pub use events::IngestBudget;

use crate::config::Settings;
use crate::metering::MeterStore;
use crate::metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub pool: PgPool,
    pub store: Arc<MeterStore>,
    pub metrics: Arc<Metrics>,
    pub admin_key_hash: Vec<u8>,
    pub billing: crate::billing::store::BillingConfig,
    pub drafts: crate::billing::store::DraftCache,
    /// Whether this process runs the consumer (readiness then asks it about the broker).
    pub runs_consumer: bool,
    /// Set once the database is reachable and migrated; until then `/v1` answers `503`.
    pub database_ready: std::sync::atomic::AtomicBool,
    /// Bytes of ingest bodies held at once (`http.ingest_buffer_bytes`).
    pub ingest_budget: IngestBudget,
}

/// Builds the HTTP server on an already bound listener. `serve_v1` is false for the
/// consumer-only role, which serves only health, readiness and metrics.
pub fn server(
    listener: TcpListener,
    state: web::Data<AppState>,
    serve_v1: bool,
) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(error::json_config())
            .app_data(error::query_config())
            .app_data(error::path_config())
            .wrap(ErrorHandlers::new().default_handler(error::wrap_bare_errors))
            .wrap(from_fn(record_http_metrics))
            // Outermost, so the id also reaches the envelope-wrapped framework errors.
            .wrap(from_fn(request_id::with_request_id))
            .service(resource("/healthz", "GET").get(health::healthz))
            .service(resource("/readyz", "GET").get(health::readyz))
            .service(resource("/metrics", "GET").get(health::metrics))
            .service(resource("/openapi.json", "GET").get(openapi::openapi))
            .service(resource("/docs", "GET").get(docs_page::index))
            .service(resource("/docs/docs.js", "GET").get(docs_page::script))
            .service(resource("/docs/docs.css", "GET").get(docs_page::style));
        if serve_v1 {
            app = app.service(
                web::scope("/v1")
                    .wrap(from_fn(require_database))
                    .service(resource("/events", "POST").post(events::ingest))
                    .service(
                        resource("/api-keys", "GET, POST")
                            .get(keys::list)
                            .post(keys::create),
                    )
                    .service(
                        resource("/api-keys/{id}", "GET, DELETE")
                            .get(keys::get)
                            .delete(keys::revoke),
                    )
                    .service(resource("/tenants/{tenant}/usage", "GET").get(usage::get_usage))
                    .service(resource("/tenants/{tenant}/invoices", "GET").get(invoices::list))
                    .service(
                        resource("/tenants/{tenant}/invoices/upcoming", "GET")
                            .get(invoices::upcoming),
                    )
                    .service(
                        resource("/tenants/{tenant}/invoices/{number}", "GET").get(invoices::get),
                    )
                    .service(resource("/billing/finalize", "POST").post(invoices::finalize))
                    .service(
                        resource("/exports/invoice-lines.csv", "GET").get(exports::invoice_lines),
                    )
                    .service(resource("/exports/usage.csv", "GET").get(exports::usage))
                    .service(
                        resource("/exports/function-costs.csv", "GET").get(exports::function_costs),
                    )
                    .service(resource("/plans", "GET").get(plans::list_plans))
                    .service(
                        resource("/plans/{plan}", "GET, PUT")
                            .get(plans::get_plan)
                            .put(plans::put_plan),
                    )
                    .service(resource("/tenants", "GET").get(tenants::list_tenants))
                    .service(
                        resource("/tenants/{tenant}", "GET, PUT")
                            .get(tenants::get_tenant)
                            .put(tenants::put_tenant),
                    ),
            );
        }
        app.default_service(web::to(health::not_found))
    })
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(5)
    .run();
    Ok(server)
}

/// A resource whose other methods answer `405` with the envelope and an `Allow` header
/// listing `allow`, the methods its routes serve.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut response = error::envelope(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("this resource allows {allow}"),
        );
        response.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    }))
}

/// While the database is awaited at start, `/v1` answers `503` (retry), not a failed query.
async fn require_database(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let ready = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.database_ready.load(std::sync::atomic::Ordering::Acquire));
    if !ready {
        return Err(error::ApiError::unavailable(anyhow::anyhow!(
            "the database is not reachable yet"
        ))
        .into());
    }
    next.call(req).await
}

async fn record_http_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        // The route pattern, not the path, keeps label cardinality bounded.
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        metrics
            .http_requests
            .with_label_values(&[&method, &route, res.status().as_str()])
            .inc();
        metrics
            .http_seconds
            .with_label_values(&[&method, &route])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}
