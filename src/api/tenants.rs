//! `PUT /v1/tenants/{tenant}`, `GET /v1/tenants`, `GET /v1/tenants/{tenant}`: tenants and the
//! plans they are on.

use actix_web::{HttpResponse, web};
use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};

use super::{
    AppState,
    auth::{Caller, Role},
    error::ApiError,
    plans::{ListParams, storage_error},
};
use crate::billing::period::{format_period, parse_period};
use crate::billing::plans::{self, AssignPlanError, TenantSummary};
use crate::metering::{TenantId, store::period_start};

/// The body of `PUT /v1/tenants/{tenant}`, read field by field so that every problem names
/// its field.
struct AssignmentRequest {
    plan_id: String,
    effective_from: Option<NaiveDate>,
}

impl TryFrom<&Value> for AssignmentRequest {
    type Error = ApiError;

    fn try_from(body: &Value) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::unprocessable("invalid_value", message);
        let fields = body
            .as_object()
            .ok_or_else(|| invalid("the body must be a JSON object".to_owned()))?;
        // A misspelt effective_from would otherwise silently default: refuse what is unknown.
        if let Some(key) = fields
            .keys()
            .find(|k| !["plan_id", "effective_from"].contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "{key}: is not a field of a plan assignment"
            )));
        }
        let plan_id = match fields.get("plan_id") {
            None | Some(Value::Null) => {
                return Err(ApiError::unprocessable(
                    "missing_field",
                    "plan_id: is required",
                ));
            }
            Some(Value::String(id)) => id.clone(),
            Some(_) => return Err(invalid("plan_id: must be a string".to_owned())),
        };
        let effective_from = match fields.get("effective_from") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_str().and_then(parse_period).ok_or_else(|| {
                invalid(
                    r#"effective_from: must be a billing period YYYY-MM, e.g. "2026-10""#
                        .to_owned(),
                )
            })?),
        };
        Ok(AssignmentRequest {
            plan_id,
            effective_from,
        })
    }
}

impl From<AssignPlanError> for ApiError {
    fn from(e: AssignPlanError) -> Self {
        match e {
            AssignPlanError::UnknownPlan(_) => {
                ApiError::unprocessable("unknown_plan", format!("plan_id: {e}"))
            }
            AssignPlanError::PeriodFinalized { .. } => ApiError::new(
                actix_web::http::StatusCode::CONFLICT,
                "period_finalized",
                format!(
                    "effective_from: {e}, and a finalized period's plan cannot be changed; \
                     choose a later period"
                ),
            ),
            AssignPlanError::Unexpected(cause) => storage_error(cause),
        }
    }
}

pub async fn put_tenant(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let tenant = TenantId::parse(&tenant).map_err(|p| ApiError::bad_parameter("tenant", p))?;
    let request = AssignmentRequest::try_from(&*body)?;
    let current = period_start(Utc::now());
    let assigned = plans::assign_plan(
        &state.pool,
        tenant.as_str(),
        &request.plan_id,
        request.effective_from,
        current,
    )
    .await?;
    let document = tenant_document(&state, tenant.as_str(), current).await?;
    Ok(if assigned.created {
        HttpResponse::Created().json(document)
    } else {
        HttpResponse::Ok().json(document)
    })
}

pub async fn list_tenants(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin, Role::Finance])?;
    let page = params.page()?;
    let current = period_start(Utc::now());
    let mut rows = plans::list_tenants(&state.pool, current, page.limit + 1, page.offset)
        .await
        .map_err(storage_error)?;
    let next_cursor = page.next_cursor(&mut rows);
    let data: Vec<Value> = rows.iter().map(summary_json).collect();
    Ok(HttpResponse::Ok().json(json!({"data": data, "next_cursor": next_cursor})))
}

pub async fn get_tenant(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_tenant_reader(&tenant)?;
    let document = tenant_document(&state, &tenant, period_start(Utc::now())).await?;
    Ok(HttpResponse::Ok().json(document))
}

/// `{"id", "created_at", "plan_id" (in force for `current`), "plans": [{"effective_from",
/// "plan_id"}]}`, the history oldest first.
async fn tenant_document(
    state: &AppState,
    tenant: &str,
    current: NaiveDate,
) -> Result<Value, ApiError> {
    let summary = plans::find_tenant(&state.pool, tenant, current)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {tenant:?}")))?;
    let history = plans::plan_history(&state.pool, tenant)
        .await
        .map_err(storage_error)?;
    let mut document = summary_json(&summary);
    document["plans"] = history
        .iter()
        .map(|a| json!({"effective_from": format_period(a.effective_from), "plan_id": a.plan_id}))
        .collect();
    Ok(document)
}

fn summary_json(tenant: &TenantSummary) -> Value {
    json!({"id": tenant.id, "created_at": tenant.created_at, "plan_id": tenant.plan_id})
}
