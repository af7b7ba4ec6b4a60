//! `POST /v1/api-keys`: issues finance, ingest and tenant keys (admin keys come from config).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{
    AppState,
    auth::{Caller, Role, generate_key, hash_key},
    error::ApiError,
};
use crate::metering::TenantId;

#[derive(Deserialize)]
pub struct NewKey {
    role: String,
    #[serde(default)]
    tenant: Option<String>,
}

pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<NewKey>,
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
            .await
            .map_err(ApiError::unavailable)?;
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
    Ok(HttpResponse::Created().json(json!({
        "id": id,
        "key": key,
        "role": role.as_str(),
        "tenant": tenant.as_ref().map(TenantId::as_str),
    })))
}
