//! `/v1/api-keys`: issues, lists and revokes finance, ingest and tenant keys (admin keys come
//! from config). The lifecycle itself lives in `crate::keys`, shared with `meterd keys`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ErrorEnvelope, JsonBody, KeyedErrors},
    usage::Page,
};
use crate::keys::{self, KeyCursor, KeySpec};

/// A key to issue. Its schema is written by hand: only a tenant key names a tenant, and it
/// must, which the derive cannot say.
#[derive(Deserialize)]
pub struct NewKey {
    role: String,
    /// The tenant a `tenant` key reads; only tenant keys name one.
    #[serde(default)]
    tenant: Option<String>,
    /// When the key stops working (RFC 3339 with an offset, in the future); never if absent.
    #[serde(default)]
    expires_at: Option<String>,
}

impl PartialSchema for NewKey {
    fn schema() -> RefOr<Schema> {
        let role = |roles: &[&str], description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(roles.iter().copied()))
                .description(Some(description))
        };
        let others = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("A finance or ingest key: names no tenant."))
            .property(
                "role",
                role(
                    &["finance", "ingest"],
                    "Finance reads all and exports; ingest posts events.",
                ),
            )
            .property(
                "tenant",
                ObjectBuilder::new()
                    .schema_type(Type::Null)
                    .description(Some("Absent or null.")),
            )
            .required("role");
        let tenant = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("A tenant key: reads its own tenant, created if new."))
            .property(
                "role",
                role(&["tenant"], "Reads its own tenant's usage and invoices."),
            )
            .property(
                "tenant",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The tenant id: 1–64 characters of `A-Za-z0-9._-`."))
                    .pattern(Some("^[A-Za-z0-9._-]{1,64}$")),
            )
            .required("role")
            .required("tenant");
        let expires_at = || {
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::DateTime,
                )))
                .description(Some(
                    "When the key stops working (RFC 3339, in the future); never if absent or null.",
                ))
        };
        let others = others.property("expires_at", expires_at());
        let tenant = tenant.property("expires_at", expires_at());
        OneOfBuilder::new()
            .description(Some(
                "A key to issue: `tenant` keys name their tenant, other roles name none.",
            ))
            .item(others)
            .item(tenant)
            .examples([json!({"role": "tenant", "tenant": "acme"})])
            .into()
    }
}

impl ToSchema for NewKey {}

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
        (status = 400, description = "The body is not JSON (`invalid_body`)",
            body = ErrorEnvelope),
        (status = 413, description = "The body is over 1 MiB (`too_large`)", body = ErrorEnvelope),
        (status = 422, description = "The body is not an object of this shape, an unknown or \
            admin role, a tenant missing, invalid or not allowed for the role, or an \
            `expires_at` that is malformed or not in the future (`invalid_value`, \
            `missing_field`); the message names the field", body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let spec = KeySpec::parse(
        &body.role,
        body.tenant.as_deref(),
        body.expires_at.as_deref(),
        Utc::now(),
    )
    .map_err(|e| ApiError::unprocessable(e.code, e.message))?;
    let issued = keys::issue(&state.store, &state.pool, spec).await?;
    Ok(HttpResponse::Created().json(issued))
}

/// Paging of the key list: its cursor is a keyset position, not an offset.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListParams {
    /// Items per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^(k[0-9]{1,16}_[0-9a-f]{32})?$")]
    cursor: Option<String>,
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
    params(KeyListParams),
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
    params: web::Query<KeyListParams>,
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
        (status = 404, description = "No such key, or it was revoked (`not_found`)",
            body = ErrorEnvelope),
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
    // Deleted is deleted at the key's own address; `GET /v1/api-keys` keeps the record,
    // marked revoked, for the audit trail.
    if key.revoked {
        return Err(ApiError::not_found(format!(
            "API key {id} was revoked; GET /v1/api-keys still lists it"
        )));
    }
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
