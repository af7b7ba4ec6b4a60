//! Invoice endpoints: the upcoming draft, finalized invoices, and finalizing a period.

use actix_web::{HttpResponse, http::StatusCode, web};
use chrono::Utc;
use serde::Deserialize;

use super::{
    AppState,
    auth::{Caller, Role},
    error::ApiError,
    usage::{Page, tenant_exists},
};
use crate::billing::period::period_param;
use crate::billing::store::{self, FinalizeError};

pub async fn upcoming(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_tenant_reader(&tenant)?;
    let draft = state
        .drafts
        .draft_json(&state.pool, &state.billing, &tenant, Utc::now())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {:?}", tenant.as_str())))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(draft))
}

#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<String>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require_tenant_reader(&tenant)?;
    let page = Page::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    tenant_exists(&state, &tenant).await?;
    let mut rows = store::list_invoices(&state.pool, &tenant, page.limit + 1, page.offset).await?;
    let next_cursor = page.next_cursor(&mut rows);
    Ok(HttpResponse::Ok().json(serde_json::json!({"data": rows, "next_cursor": next_cursor})))
}

pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, number) = path.into_inner();
    caller.require_tenant_reader(&tenant)?;
    // The stored document is served as it was written: a finalized invoice never changes.
    let document = store::invoice_document(&state.pool, &tenant, &number)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no invoice {number:?} for tenant {tenant:?}"))
        })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(document))
}

#[derive(Deserialize)]
pub struct FinalizeRequest {
    period: String,
}

pub async fn finalize(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<FinalizeRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let period = period_param("period", &body.period)
        .map_err(|e| ApiError::unprocessable("invalid_value", e.to_string()))?;
    match store::finalize_period(&state.pool, &state.billing, period, Utc::now()).await {
        Ok(outcome) => {
            state
                .metrics
                .invoices_finalized
                .inc_by(outcome.created.len() as u64);
            Ok(HttpResponse::Ok().json(outcome))
        }
        Err(FinalizeError::NotEnded(p)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "period_not_ended",
            format!("period {p} has not ended; only ended periods can be finalized"),
        )),
        Err(FinalizeError::Unexpected(e)) => Err(e.into()),
    }
}
