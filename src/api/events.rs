//! `POST /v1/events`: the same body, decoder and store as the AMQP consumer.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Ref, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ErrorEnvelope, KeyedErrors},
    openapi,
};
use crate::ingest::decode::{ErrorCode, MAX_BODY_BYTES, MAX_EVENTS, decode_message};
use crate::metering::store::DataRefusal;

/// What an ingest call recorded.
#[derive(Serialize, ToSchema)]
pub struct IngestOutcome {
    /// Events counted by this call.
    accepted: u64,
    /// Events whose `(tenant, id)` was accepted before: not counted again.
    duplicates: u64,
}

/// Schema only: the body of `POST /v1/events`, one event or an array of them. Written by hand
/// because the array's size limits belong on the `oneOf` branch, where the derive cannot put
/// them.
pub struct UsageEvents;

impl PartialSchema for UsageEvents {
    fn schema() -> RefOr<Schema> {
        let event = || Ref::from_schema_name(UsageEvent::name());
        OneOfBuilder::new()
            .description(Some(
                "One event, or an array of 1 to 10,000 events; the body is at most 4 MiB.",
            ))
            .item(event())
            .item(
                ArrayBuilder::new()
                    .items(event())
                    .min_items(Some(1))
                    .max_items(Some(MAX_EVENTS)),
            )
            .into()
    }
}

impl ToSchema for UsageEvents {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((UsageEvent::name().into_owned(), UsageEvent::schema()));
        UsageEvent::schemas(schemas);
    }
}

/// One function invocation. Unknown fields are ignored.
#[derive(ToSchema)]
#[allow(dead_code)] // schema only: `ingest::decode` reads the body
pub struct UsageEvent {
    /// The idempotency key, unique per tenant.
    #[schema(min_length = 1, max_length = 128)]
    id: String,
    /// The tenant; created on first use with the default plan.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    tenant: String,
    /// The function's name; no control characters.
    #[schema(min_length = 1, max_length = 256)]
    function: String,
    /// When the invocation started: RFC 3339 with an offset, within
    /// `[now − metering.max_event_age_days, now + 5 minutes]`.
    #[schema(examples("2026-11-21T10:15:30.123Z"))]
    timestamp: DateTime<Utc>,
    /// Milliseconds, fractions allowed; at most `metering.max_duration_ms` (default 3,600,000).
    #[schema(minimum = 0)]
    duration_ms: f64,
    /// Initialization milliseconds, billed together with `duration_ms`; default 0.
    #[schema(minimum = 0)]
    init_duration_ms: Option<f64>,
    /// Configured memory in MB.
    #[schema(minimum = 1, maximum = 65536)]
    memory_mb: u32,
    /// Default `x86_64`.
    #[schema(value_type = Option<openapi::Arch>)]
    arch: Option<String>,
}

/// Ingest usage events
///
/// The same body, validation, idempotency and aggregation as an AMQP message: a body
/// that would be dead-lettered gets `422` with the dead-letter code (`invalid_json`,
/// `invalid_shape`, `missing_field`, `invalid_value`, `too_old`, `in_future`,
/// `too_many_events`, `rejected_by_database`) and reason. Role `ingest` or `admin`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    operation_id = "ingest_events",
    security(("bearer" = [])),
    request_body(content = UsageEvents, content_type = "application/json"),
    responses(
        (status = 200, description = "Every event is recorded: counted, or a duplicate",
            body = IngestOutcome),
        (status = 400, description = "The body could not be read (`invalid_body`)",
            body = ErrorEnvelope),
        (status = 408, description = "The body did not arrive within `http.body_read_timeout_secs` \
            (`request_timeout`)", body = ErrorEnvelope),
        (status = 413, description = "The body is over 4 MiB (`too_large`)", body = ErrorEnvelope),
        (status = 422, description = "The body would be dead-lettered over AMQP; `code` is the \
            dead-letter code and `message` the reason", body = ErrorEnvelope),
        KeyedErrors,
        (status = 503, description = "Too many bodies are being received at once (`busy`, with \
            `Retry-After`), or storage is unreachable (`unavailable`)", body = ErrorEnvelope),
    )
)]
pub async fn ingest(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Ingest, Role::Admin])?;
    let timeout = Duration::from_secs(state.settings.http.body_read_timeout_secs);
    let (body, permit) = tokio::time::timeout(
        timeout,
        read_body(payload, declared_length(&req)?, &state.ingest_budget),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s (http.body_read_timeout_secs)",
                timeout.as_secs()
            ),
        )
    })??;
    let events = decode_message(&body, state.store.rules(), chrono::Utc::now())
        .map_err(|r| ApiError::unprocessable(r.code.as_str(), r.reason))?;
    drop(body);
    let outcome = state.store.record_events(&events).await.map_err(|error| {
        match DataRefusal::of(&error) {
            // The same data would fail on every retry: the client's to fix, named as a dead
            // letter would name it.
            Some(refusal) => {
                ApiError::unprocessable(ErrorCode::RejectedByDatabase.as_str(), refusal.to_string())
            }
            None => ApiError::from(error),
        }
    })?;
    // The decoded events take about as much memory as the body did: the budget covers them
    // until they are recorded.
    drop((events, permit));
    state.metrics.events_accepted.inc_by(outcome.accepted);
    state.metrics.events_duplicate.inc_by(outcome.duplicates);
    Ok(HttpResponse::Ok().json(IngestOutcome {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
    }))
}

/// The bytes of ingest bodies held in memory at once, over all requests (`http.ingest_buffer_bytes`).
pub struct IngestBudget {
    bytes: Arc<Semaphore>,
}

impl IngestBudget {
    pub fn new(bytes: usize) -> Self {
        IngestBudget {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Takes `bytes` more from the budget into `held`, or says the service is busy: waiting
    /// would let a burst of bodies pile up unbounded in connections and buffers.
    fn take(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| self.bytes.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many event bodies are being received at once; retry later",
                )
                .retry_after(1)
            })?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge.as_str(),
        format!("the body exceeds {MAX_BODY_BYTES} bytes (4 MiB)"),
    )
}

/// The body's `Content-Length`, refused at once when over the limit.
fn declared_length(req: &HttpRequest) -> Result<Option<usize>, ApiError> {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match length {
        Some(n) if n > MAX_BODY_BYTES => Err(too_large()),
        other => Ok(other),
    }
}

/// Reads the body into one buffer of its declared size (no doubling), holding its bytes in
/// the budget; a body without a length takes budget chunk by chunk.
async fn read_body(
    mut payload: web::Payload,
    declared: Option<usize>,
    budget: &IngestBudget,
) -> Result<(web::BytesMut, Option<OwnedSemaphorePermit>), ApiError> {
    let mut held = None;
    budget.take(&mut held, declared.unwrap_or(0))?;
    let mut reserved = declared.unwrap_or(0);
    let mut body = web::BytesMut::with_capacity(reserved);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        let length = body.len() + chunk.len();
        if length > MAX_BODY_BYTES {
            return Err(too_large());
        }
        if length > reserved {
            budget.take(&mut held, length - reserved)?;
            reserved = length;
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, held))
}
