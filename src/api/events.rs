//! `POST /v1/events`: the same body, decoder and store as the AMQP consumer.

use actix_web::{HttpResponse, http::StatusCode, web};
use futures_util::StreamExt;
use serde_json::json;

use super::{
    AppState,
    auth::{Caller, Role},
    error::ApiError,
};
use crate::ingest::decode::{ErrorCode, MAX_BODY_BYTES, decode_message};

pub async fn ingest(
    caller: Caller,
    state: web::Data<AppState>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Ingest, Role::Admin])?;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge.as_str(),
                format!("the body exceeds {MAX_BODY_BYTES} bytes (4 MiB)"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let events = decode_message(&body, state.store.rules(), chrono::Utc::now())
        .map_err(|r| ApiError::unprocessable(r.code.as_str(), r.reason))?;
    let outcome = state
        .store
        .record_events(&events)
        .await
        .map_err(ApiError::unavailable)?;
    state.metrics.events_accepted.inc_by(outcome.accepted);
    state.metrics.events_duplicate.inc_by(outcome.duplicates);
    Ok(HttpResponse::Ok().json(json!({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
    })))
}
