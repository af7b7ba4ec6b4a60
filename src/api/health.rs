use std::sync::atomic::Ordering;
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
/// Ready when the database is reachable and migrated and, in a process that consumes, the
/// broker session is up. A process serving only the API does not depend on the broker.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\"}`", body = Status),
        (status = 503, description = "Waiting for the database, or the consumer's broker \
            (`not_ready`)", body = ErrorEnvelope),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let not_ready = |message: String| -> Result<HttpResponse, ApiError> {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            message,
        ))
    };
    let database = crate::db::address(&state.settings.database.url);
    if !state.database_ready.load(Ordering::Acquire) {
        return not_ready(format!("waiting for the database at {database}"));
    }
    let reachable = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !reachable {
        return not_ready(format!("the database at {database} is unreachable"));
    }
    if state.runs_consumer && state.metrics.consumer_connected.get() != 1 {
        return not_ready("the consumer is not connected to the broker".to_owned());
    }
    Ok(HttpResponse::Ok().json(Status { status: "ready" }))
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
