//! `PUT /v1/plans/{plan}`, `GET /v1/plans`, `GET /v1/plans/{plan}`: versioned plans.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    auth::{Caller, Role},
    error::ApiError,
    usage::Page,
};
use crate::billing::plans::{self, PlanId, StoredPlan};
use crate::rating::Plan;

/// List parameters arrive as text so that each problem is reported by its name.
#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

impl ListParams {
    pub(super) fn page(&self) -> Result<Page, ApiError> {
        Page::parse(self.limit.as_deref(), self.cursor.as_deref())
    }
}

#[derive(Deserialize)]
pub struct PlanParams {
    version: Option<String>,
}

pub async fn put_plan(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let id = PlanId::parse(&id).map_err(|problem| ApiError::bad_parameter("plan", problem))?;
    let plan = Plan::from_value(&body)
        .map_err(|e| ApiError::unprocessable("invalid_plan", e.to_string()))?;
    let stored = plans::store_plan(&state.pool, id.as_str(), &plan)
        .await
        .map_err(storage_error)?;
    Ok(HttpResponse::Created().json(plan_document(&stored)))
}

pub async fn list_plans(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin, Role::Finance])?;
    let page = params.page()?;
    let mut rows = plans::list_plans(&state.pool, page.limit + 1, page.offset)
        .await
        .map_err(storage_error)?;
    let next_cursor = page.next_cursor(&mut rows);
    Ok(HttpResponse::Ok().json(json!({"data": rows, "next_cursor": next_cursor})))
}

pub async fn get_plan(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: web::Query<PlanParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin, Role::Finance])?;
    let version = match params.version.as_deref() {
        None => None,
        Some(v) => Some(
            v.parse::<i32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::bad_parameter("version", "must be a positive integer"))?,
        ),
    };
    let stored = plans::find_plan(&state.pool, &id, version)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| match version {
            Some(v) => ApiError::not_found(format!("plan {:?} has no version {v}", id.as_str())),
            None => ApiError::not_found(format!("no plan {:?}", id.as_str())),
        })?;
    let versions = plans::plan_versions(&state.pool, &id)
        .await
        .map_err(storage_error)?;
    let mut document = plan_document(&stored);
    document["versions"] = json!(versions);
    Ok(HttpResponse::Ok().json(document))
}

fn plan_document(stored: &StoredPlan) -> Value {
    json!({
        "id": stored.id,
        "version": stored.version,
        "created_at": stored.created_at,
        "plan": stored.plan,
    })
}

/// A storage failure: `503` when the database cannot be reached (the client may retry),
/// otherwise an opaque `500`.
pub(super) fn storage_error(cause: anyhow::Error) -> ApiError {
    match cause.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
            ApiError::unavailable(cause)
        }
        _ => cause.into(),
    }
}
