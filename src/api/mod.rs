//! The REST API (SPEC §5): routes, auth, the error envelope, the OpenAPI document.

pub mod auth;
pub mod error;
mod events;
mod exports;
mod health;
mod invoices;
mod keys;
pub mod openapi;
mod plans;
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
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(health::metrics))
            .route("/openapi.json", web::get().to(openapi::openapi));
        if serve_v1 {
            app = app.service(
                web::scope("/v1")
                    .route("/events", web::post().to(events::ingest))
                    .route("/api-keys", web::post().to(keys::create))
                    .route("/tenants/{tenant}/usage", web::get().to(usage::get_usage))
                    .route("/tenants/{tenant}/invoices", web::get().to(invoices::list))
                    .route(
                        "/tenants/{tenant}/invoices/upcoming",
                        web::get().to(invoices::upcoming),
                    )
                    .route(
                        "/tenants/{tenant}/invoices/{number}",
                        web::get().to(invoices::get),
                    )
                    .route("/billing/finalize", web::post().to(invoices::finalize))
                    .route(
                        "/exports/invoice-lines.csv",
                        web::get().to(exports::invoice_lines),
                    )
                    .route("/exports/usage.csv", web::get().to(exports::usage))
                    .route(
                        "/exports/function-costs.csv",
                        web::get().to(exports::function_costs),
                    )
                    .route("/plans", web::get().to(plans::list_plans))
                    .service(
                        web::resource("/plans/{plan}")
                            .get(plans::get_plan)
                            .put(plans::put_plan),
                    )
                    .route("/tenants", web::get().to(tenants::list_tenants))
                    .service(
                        web::resource("/tenants/{tenant}")
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
