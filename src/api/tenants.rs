//! `PUT /v1/tenants/{tenant}`, `GET /v1/tenants`, `GET /v1/tenants/{tenant}`: tenants and the
//! plans they are on.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ErrorEnvelope, KeyedErrors},
    openapi,
    plans::ListParams,
};
use crate::billing::period::period_start;
use crate::billing::period::{format_period, parse_period};
use crate::billing::plans::{self, AssignPlanError, PlanId, TenantSummary};
use crate::metering::TenantId;

/// The `{tenant}` of a path: parsed before anything else, so an id no tenant can have (a NUL,
/// a space, 65 characters) is a `400` naming `tenant`, never a query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The tenant id: 1–64 characters of `A-Za-z0-9._-`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    tenant: String,
}

impl TenantPath {
    pub fn parse(&self) -> Result<TenantId, ApiError> {
        Self::parse_str(&self.tenant)
    }

    pub fn parse_str(tenant: &str) -> Result<TenantId, ApiError> {
        TenantId::parse(tenant).map_err(|p| ApiError::bad_parameter("tenant", p))
    }
}

/// The body of `PUT /v1/tenants/{tenant}`, read field by field so that every problem names
/// its field. Unknown fields are refused: `#[serde(deny_unknown_fields)]` only tells the schema
/// so, since serde never reads this type.
#[derive(ToSchema)]
#[schema(
    as = PlanAssignmentRequest,
    description = "The plan a tenant is on from a billing period on. Unknown fields are refused.",
    examples(json!({"plan_id": "lambda", "effective_from": "2026-10"}))
)]
#[serde(deny_unknown_fields)]
struct AssignmentRequest {
    /// A stored plan's id.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    plan_id: PlanId,
    /// The billing period the plan takes effect from. Default: the current period for a new
    /// tenant, the next one otherwise. A period already finalized for the tenant is refused.
    #[schema(value_type = Option<openapi::Period>)]
    effective_from: Option<NaiveDate>,
}

/// A tenant and the plan in force for the current period.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantSummary)]
pub struct TenantEntry {
    id: String,
    created_at: DateTime<Utc>,
    /// The plan in force for the current period.
    plan_id: Option<String>,
}

impl From<TenantSummary> for TenantEntry {
    fn from(tenant: TenantSummary) -> Self {
        TenantEntry {
            id: tenant.id,
            created_at: tenant.created_at,
            plan_id: tenant.plan_id,
        }
    }
}

/// A tenant with its plan history.
#[derive(Serialize, ToSchema)]
#[schema(as = Tenant)]
pub struct TenantDocument {
    #[serde(flatten)]
    tenant: TenantEntry,
    /// The plan assignments, oldest first; each is in force until the next.
    plans: Vec<PlanAssignment>,
}

/// A plan in force from a billing period on.
#[derive(Serialize, ToSchema)]
pub struct PlanAssignment {
    #[schema(value_type = openapi::Period)]
    effective_from: String,
    plan_id: String,
}

/// A page of tenants, by id.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantList)]
pub struct TenantPage {
    data: Vec<TenantEntry>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
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
            Some(Value::String(id)) => {
                PlanId::parse(id).map_err(|problem| invalid(format!("plan_id: {problem}")))?
            }
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
            AssignPlanError::Unexpected(cause) => cause.into(),
        }
    }
}

/// Assign a tenant's plan
///
/// Puts the tenant on `plan_id` from `effective_from` on, creating the tenant if new. Role
/// `admin`.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    operation_id = "put_tenant",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = AssignmentRequest,
    responses(
        (status = 200, description = "The tenant existed; its plan history now",
            body = TenantDocument),
        (status = 201, description = "The tenant was created", body = TenantDocument),
        (status = 400, description = "The body is not JSON (`invalid_body`) or the tenant id is \
            invalid (`invalid_parameter`)", body = ErrorEnvelope),
        (status = 413, description = "The body is over 1 MiB (`too_large`)", body = ErrorEnvelope),
        (status = 409, description = "`effective_from` is a period already finalized for the \
            tenant (`period_finalized`)", body = ErrorEnvelope),
        (status = 422, description = "A field is missing, unknown or malformed \
            (`missing_field`, `invalid_value`), or no plan has that id (`unknown_plan`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn put_tenant(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<TenantPath>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let tenant = tenant.parse()?;
    let request = AssignmentRequest::try_from(&*body)?;
    let current = period_start(Utc::now());
    let assigned = plans::assign_plan(
        &state.pool,
        tenant.as_str(),
        request.plan_id.as_str(),
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

/// List tenants
///
/// Every tenant, by id, with the plan in force for the current period. Roles `admin`,
/// `finance`.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "list_tenants",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of tenants", body = TenantPage),
        (status = 400, description = "`limit` or `cursor` is malformed (`invalid_parameter`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn list_tenants(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin, Role::Finance])?;
    let page = params.page()?;
    let current = period_start(Utc::now());
    let mut rows = plans::list_tenants(&state.pool, current, page.limit + 1, page.offset).await?;
    let next_cursor = page.next_cursor(&mut rows);
    let data = rows.into_iter().map(TenantEntry::from).collect();
    Ok(HttpResponse::Ok().json(TenantPage { data, next_cursor }))
}

/// Get a tenant
///
/// The tenant, the plan in force for the current period, and its plan history. Roles `tenant`
/// (its own), `finance`, `admin`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    operation_id = "get_tenant",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant", body = TenantDocument),
        (status = 400, description = "The tenant id is invalid (`invalid_parameter`)",
            body = ErrorEnvelope),
        (status = 404, description = "No such tenant, or another tenant's key (`not_found`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn get_tenant(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<TenantPath>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant.parse()?;
    caller.require_tenant_reader(tenant.as_str())?;
    let document = tenant_document(&state, tenant.as_str(), period_start(Utc::now())).await?;
    Ok(HttpResponse::Ok().json(document))
}

/// The tenant, the plan in force for `current`, and the history oldest first.
async fn tenant_document(
    state: &AppState,
    tenant: &str,
    current: NaiveDate,
) -> Result<TenantDocument, ApiError> {
    let summary = plans::find_tenant(&state.pool, tenant, current)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {tenant:?}")))?;
    let history = plans::plan_history(&state.pool, tenant).await?;
    let plans = history
        .into_iter()
        .map(|a| PlanAssignment {
            effective_from: format_period(a.effective_from),
            plan_id: a.plan_id,
        })
        .collect();
    Ok(TenantDocument {
        tenant: summary.into(),
        plans,
    })
}
