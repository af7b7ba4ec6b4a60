use std::time::Duration;

use actix_web::{HttpResponse, http::StatusCode, web};
use serde_json::json;

use super::{AppState, error::ApiError};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers and the broker is reachable.
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
        (true, true) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
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

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such resource"))
}
