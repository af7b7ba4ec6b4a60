//! `/v1/api-keys`: issues, lists and revokes finance, ingest and tenant keys (admin keys come
//! from config). The lifecycle itself lives in `crate::keys`, shared with `meterd keys`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ErrorEnvelope, KeyedErrors},
    plans::ListParams,
    usage::Page,
};
use crate::keys::{self, KeyCursor, KeySpec};

/// A key to issue.
#[derive(Deserialize, ToSchema)]
#[schema(examples(json!({"role": "tenant", "tenant": "acme"})))]
pub struct NewKey {
    #[schema(value_type = IssuableRole)]
    role: String,
    /// The tenant a `tenant` key reads; only tenant keys name one.
    #[serde(default)]
    tenant: Option<String>,
    /// When the key stops working (RFC 3339 with an offset, in the future); never if absent.
    #[serde(default)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    expires_at: Option<String>,
}

/// The roles `POST /v1/api-keys` issues keys for; admin keys come from configuration.
#[derive(ToSchema)]
#[allow(dead_code)] // schema only: `auth::Role` is the domain type
pub enum IssuableRole {
    /// Reads everything, runs exports.
    #[schema(rename = "finance")]
    Finance,
    /// Posts usage events.
    #[schema(rename = "ingest")]
    Ingest,
    /// Reads its own tenant's usage and invoices.
    #[schema(rename = "tenant")]
    Tenant,
}

/// An issued key. `key` is shown only here: the service stores its hash.
#[derive(ToSchema)]
#[schema(as = IssuedKey)]
#[allow(dead_code)] // schema only: the JSON is `keys::IssuedKey`
pub struct IssuedKeySchema {
    id: uuid::Uuid,
    /// The secret to send as `Authorization: Bearer <key>`.
    key: String,
    #[schema(value_type = IssuableRole)]
    role: String,
    tenant: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

/// What is known of an issued key; never the key itself nor its hash.
#[derive(ToSchema)]
#[schema(as = ApiKey)]
#[allow(dead_code)] // schema only: the JSON is `keys::KeyInfo`
pub struct KeyInfoSchema {
    id: uuid::Uuid,
    #[schema(value_type = IssuableRole)]
    role: String,
    /// The tenant of a `tenant` key.
    tenant: Option<String>,
    created_at: DateTime<Utc>,
    /// When the key stops working; null: never.
    expires_at: Option<DateTime<Utc>>,
    /// When the key was last used, to within a minute; null: never used.
    last_used_at: Option<DateTime<Utc>>,
    /// A revoked key is refused; its record stays.
    revoked: bool,
    revoked_at: Option<DateTime<Utc>>,
}

/// A page of issued keys, oldest first.
#[derive(ToSchema)]
#[schema(as = ApiKeyList)]
#[allow(dead_code)] // schema only
pub struct KeyListSchema {
    data: Vec<KeyInfoSchema>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Issue an API key
///
/// Issues a `finance`, `ingest` or `tenant` key (a tenant key names its tenant, which is created
/// if new), optionally expiring at `expires_at`. Role `admin`.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    operation_id = "create_api_key",
    security(("bearer" = [])),
    request_body = NewKey,
    responses(
        (status = 201, description = "The key, shown once", body = IssuedKeySchema),
        (status = 400, description = "The body is not JSON of this shape (`invalid_body`)",
            body = ErrorEnvelope),
        (status = 422, description = "An unknown or admin role, a tenant missing, invalid or \
            not allowed for the role, or an `expires_at` that is malformed or not in the future \
            (`invalid_value`, `missing_field`)", body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<NewKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let spec = KeySpec::parse(
        &body.role,
        body.tenant.as_deref(),
        body.expires_at.as_deref(),
        Utc::now(),
    )
    .map_err(|e| ApiError::unprocessable(e.code, e.message))?;
    let issued = keys::issue(&state.store, &state.pool, spec)
        .await
        // A database error decides its own status (an outage is 503), anything else is a bug.
        .map_err(|e| match e.downcast::<sqlx::Error>() {
            Ok(db) => ApiError::from(db),
            Err(other) => ApiError::from(other),
        })?;
    Ok(HttpResponse::Created().json(issued))
}

/// List API keys
///
/// Every issued key, revoked and expired ones included, oldest first; never the key itself.
/// Role `admin`.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    operation_id = "list_api_keys",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of keys", body = KeyListSchema),
        (status = 400, description = "`limit` or `cursor` is malformed (`invalid_parameter`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let limit = Page::parse(params.limit.as_deref(), None)?.limit;
    let after = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(KeyCursor::decode(c).ok_or_else(|| {
            ApiError::bad_parameter("cursor", "is not a cursor this API returned")
        })?),
    };
    let (rows, next) = keys::list(&state.pool, after, limit).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "data": rows,
        "next_cursor": next.map(|c| c.encode()),
    })))
}

/// Get an API key
///
/// What is known of one issued key; never the key itself. Role `admin`.
#[utoipa::path(
    get,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    operation_id = "get_api_key",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = KeyInfoSchema),
        (status = 404, description = "No such key (`not_found`)", body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let id = key_id(&id)?;
    let key = keys::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no API key {id}")))?;
    Ok(HttpResponse::Ok().json(key))
}

/// Revoke an API key
///
/// Every meterd process refuses the key from its next request on (`401`). The key's record
/// stays, marked revoked. Revoking a revoked key again is `204` too. Role `admin`.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    operation_id = "revoke_api_key",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 404, description = "No such key (`not_found`)", body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn revoke(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let id = key_id(&id)?;
    if keys::revoke(&state.pool, id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(format!("no API key {id}")))
    }
}

/// A key id from the path: anything that is not a UUID names no key.
fn key_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(raw).map_err(|_| ApiError::not_found("no such API key"))
}
