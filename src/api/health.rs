use std::time::Duration;

use actix_web::{HttpResponse, http::StatusCode, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    AppState,
    error::{ApiError, ErrorEnvelope},
};

/// What `/healthz` and `/readyz` answer when all is well.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    #[schema(examples("ok", "ready"))]
    status: &'static str,
}

/// Liveness
///
/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`", body = Status))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// Readiness
///
/// Ready when the database answers and the broker is reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\"}`", body = Status),
        (status = 503, description = "The database or the broker is unreachable (`not_ready`)",
            body = ErrorEnvelope),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let broker = if state.runs_consumer {
        state.metrics.consumer_connected.get() == 1
    } else {
        broker_reachable(&state.settings.amqp.url).await
    };
    match (database, broker) {
        (true, true) => Ok(HttpResponse::Ok().json(Status { status: "ready" })),
        (db, _) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            if db {
                "the broker is unreachable"
            } else {
                "the database is unreachable"
            },
        )),
    }
}

/// A TCP connect to the broker's address (for processes that do not consume).
async fn broker_reachable(url: &str) -> bool {
    let Ok(uri) = url.parse::<lapin::uri::AMQPUri>() else {
        return false;
    };
    let addr = format!("{}:{}", uri.authority.host, uri.authority.port);
    tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Prometheus metrics
///
/// The process's metrics in the Prometheus text exposition format, among them
/// `meterd_events_accepted_total`, `meterd_events_duplicate_total` and
/// `meterd_messages_dead_lettered_total{code}`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text format, version 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such resource"))
}
