//! `POST /v1/api-keys`: issues finance, ingest and tenant keys (admin keys come from config).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::{
    AppState,
    auth::{Caller, Role, generate_key, hash_key},
    error::{ApiError, ErrorEnvelope, JsonBody, KeyedErrors},
};
use crate::metering::TenantId;

/// A key to issue. Its schema is written by hand: only a tenant key names a tenant, and it
/// must, which the derive cannot say.
#[derive(Deserialize)]
pub struct NewKey {
    role: String,
    /// The tenant a `tenant` key reads; only tenant keys name one.
    #[serde(default)]
    tenant: Option<String>,
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
#[derive(Serialize, ToSchema)]
pub struct IssuedKey<'a> {
    id: uuid::Uuid,
    /// The secret to send as `Authorization: Bearer <key>`.
    key: &'a str,
    #[schema(value_type = IssuableRole)]
    role: &'static str,
    tenant: Option<&'a str>,
}

/// Issue an API key
///
/// Issues a `finance`, `ingest` or `tenant` key (a tenant key names its tenant, which is created
/// if new). Role `admin`.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    operation_id = "create_api_key",
    security(("bearer" = [])),
    request_body = NewKey,
    responses(
        (status = 201, description = "The key, shown once", body = IssuedKey),
        (status = 400, description = "The body is not JSON (`invalid_body`)",
            body = ErrorEnvelope),
        (status = 413, description = "The body is over 1 MiB (`too_large`)", body = ErrorEnvelope),
        (status = 422, description = "The body is not an object of this shape, an unknown or \
            admin role, or a tenant missing, invalid or not allowed for the role \
            (`invalid_value`, `missing_field`); the message names the field",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let role = match Role::parse(&body.role) {
        Some(role @ (Role::Finance | Role::Ingest | Role::Tenant)) => role,
        Some(Role::Admin) => {
            return Err(ApiError::unprocessable(
                "invalid_value",
                "role: admin keys come from configuration (auth.admin_key), not from this endpoint",
            ));
        }
        None => {
            return Err(ApiError::unprocessable(
                "invalid_value",
                format!(
                    "role: must be finance, ingest or tenant (got {:?})",
                    body.role
                ),
            ));
        }
    };
    let tenant = match (role, body.tenant.as_deref()) {
        (Role::Tenant, Some(t)) => Some(
            TenantId::parse(t)
                .map_err(|p| ApiError::unprocessable("invalid_value", format!("tenant: {p}")))?,
        ),
        (Role::Tenant, None) => {
            return Err(ApiError::unprocessable(
                "missing_field",
                "tenant: a tenant key must name its tenant",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::unprocessable(
                "invalid_value",
                "tenant: only tenant keys name a tenant",
            ));
        }
        (_, None) => None,
    };
    if let Some(tenant) = &tenant {
        // A key may be issued before the tenant's first usage: create it as usage would.
        state
            .store
            .ensure_tenants(&[tenant.as_str().to_owned()])
            .await?;
    }
    let id = uuid::Uuid::new_v4();
    let key = generate_key();
    sqlx::query("INSERT INTO api_keys (id, key_hash, role, tenant) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(hash_key(&key))
        .bind(role.as_str())
        .bind(tenant.as_ref().map(TenantId::as_str))
        .execute(&state.pool)
        .await?;
    Ok(HttpResponse::Created().json(IssuedKey {
        id,
        key: &key,
        role: role.as_str(),
        tenant: tenant.as_ref().map(TenantId::as_str),
    }))
}
