//! `PUT /v1/plans/{plan}`, `GET /v1/plans`, `GET /v1/plans/{plan}`: versioned plans.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ErrorEnvelope, KeyedErrors},
    openapi,
    usage::Page,
};
use crate::billing::plans::{self, PlanId, StoredPlan};
use crate::rating::Plan;

/// List parameters arrive as text so that each problem is reported by its name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(super) limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^(o[0-9]{1,18})?$")]
    pub(super) cursor: Option<String>,
}

impl ListParams {
    pub(super) fn page(&self) -> Result<Page, ApiError> {
        Page::parse(self.limit.as_deref(), self.cursor.as_deref())
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanParams {
    /// One version of the plan instead of the latest.
    #[param(value_type = Option<u32>, minimum = 1)]
    version: Option<String>,
}

/// Store a plan version
///
/// Stores the plan as the next version of `plan` (version 1 for a new id); earlier versions
/// stay readable. Role `admin`.
#[utoipa::path(
    put,
    path = "/v1/plans/{plan}",
    tag = "plans",
    operation_id = "put_plan",
    security(("bearer" = [])),
    params(("plan" = String, Path, description = "The plan id: 1–64 characters of \
        `A-Za-z0-9._-`", pattern = "^[A-Za-z0-9._-]{1,64}$")),
    request_body = PlanSchema,
    responses(
        (status = 201, description = "The stored version (without `versions`)",
            body = PlanDocumentSchema),
        (status = 400, description = "The body is not JSON (`invalid_body`) or the plan id is \
            invalid (`invalid_parameter`)", body = ErrorEnvelope),
        (status = 413, description = "The body is over 1 MiB (`too_large`)", body = ErrorEnvelope),
        (status = 422, description = "The plan is malformed: unsorted or overlapping tiers, an \
            unknown meter, currency or model, a negative price, …; the message names the field \
            (`invalid_plan`)", body = ErrorEnvelope),
        KeyedErrors,
    )
)]
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
    let stored = plans::store_plan(&state.pool, id.as_str(), &plan).await?;
    Ok(HttpResponse::Created().json(plan_document(&stored)))
}

/// List plans
///
/// Every plan at its latest version, by id. Roles `admin`, `finance`.
#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "plans",
    operation_id = "list_plans",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of plans", body = PlanListSchema),
        (status = 400, description = "`limit` or `cursor` is malformed (`invalid_parameter`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn list_plans(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin, Role::Finance])?;
    let page = params.page()?;
    let mut rows = plans::list_plans(&state.pool, page.limit + 1, page.offset).await?;
    let next_cursor = page.next_cursor(&mut rows);
    Ok(HttpResponse::Ok().json(json!({"data": rows, "next_cursor": next_cursor})))
}

/// Get a plan
///
/// The latest version of the plan (or `?version=N`), with the list of its versions. Roles
/// `admin`, `finance`.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan}",
    tag = "plans",
    operation_id = "get_plan",
    security(("bearer" = [])),
    params(("plan" = String, Path, description = "The plan id: 1–64 characters of \
        `A-Za-z0-9._-`", pattern = "^[A-Za-z0-9._-]{1,64}$"), PlanParams),
    responses(
        (status = 200, description = "The plan version, with `versions`",
            body = PlanDocumentSchema),
        (status = 400, description = "The plan id is invalid, or `version` is not a positive \
            integer (`invalid_parameter`)", body = ErrorEnvelope),
        (status = 404, description = "No such plan or version (`not_found`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn get_plan(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: web::Query<PlanParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin, Role::Finance])?;
    let id = PlanId::parse(&id).map_err(|problem| ApiError::bad_parameter("plan", problem))?;
    let version = match params.version.as_deref() {
        None => None,
        Some(v) => Some(
            v.parse::<i32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::bad_parameter("version", "must be a positive integer"))?,
        ),
    };
    let stored = plans::find_plan(&state.pool, id.as_str(), version)
        .await?
        .ok_or_else(|| match version {
            Some(v) => ApiError::not_found(format!("plan {:?} has no version {v}", id.as_str())),
            None => ApiError::not_found(format!("no plan {:?}", id.as_str())),
        })?;
    let versions = plans::plan_versions(&state.pool, id.as_str()).await?;
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

/// One stored version of a plan.
#[derive(ToSchema)]
#[schema(as = PlanDocument)]
#[allow(dead_code)] // schema only: `plan_document` builds the JSON
pub struct PlanDocumentSchema {
    id: String,
    /// 1, 2, …: each PUT stores the next.
    version: i32,
    created_at: DateTime<Utc>,
    /// The plan as stored, with every decimal normalized (`"0.0000150000"` reads back as
    /// `"0.000015"`).
    plan: PlanSchema,
    /// Every version of the plan, oldest first; only from `GET /v1/plans/{plan}`.
    #[schema(required = false)]
    versions: Vec<PlanVersionSchema>,
}

/// When one version of a plan was stored.
#[derive(ToSchema)]
#[schema(as = PlanVersion)]
#[allow(dead_code)] // schema only: the JSON is `billing::plans::PlanVersion`
pub struct PlanVersionSchema {
    version: i32,
    created_at: DateTime<Utc>,
}

/// A plan at its latest version, as `GET /v1/plans` lists it.
#[derive(ToSchema)]
#[schema(as = PlanSummary)]
#[allow(dead_code)] // schema only: the JSON is `billing::plans::PlanSummary`
pub struct PlanSummarySchema {
    id: String,
    version: i32,
    name: String,
    #[schema(value_type = openapi::Currency)]
    currency: String,
    created_at: DateTime<Utc>,
}

/// A page of plans, by id.
#[derive(ToSchema)]
#[schema(as = PlanList)]
#[allow(dead_code)] // schema only: `list_plans` builds the JSON
pub struct PlanListSchema {
    data: Vec<PlanSummarySchema>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// A price plan. Unknown fields are refused.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Plan)]
#[allow(dead_code)] // schema only: `rating::Plan` reads and validates the JSON
pub struct PlanSchema {
    #[schema(min_length = 1, examples("Lambda-style, us-east-1"))]
    name: String,
    #[schema(value_type = openapi::Currency)]
    currency: String,
    /// Free quantities per meter per billing period, at most one per meter, shared by that
    /// meter's charges in the order they are listed. Default (and null): none.
    #[schema(required = false)]
    allowances: Option<Vec<AllowanceSchema>>,
    /// The charges; each becomes one usage line of every invoice. `key`s are unique.
    charges: Vec<ChargeSchema>,
    /// If the usage lines sum to less, a `minimum` line tops the invoice up to it; not
    /// negative, no digits below the currency's minor unit. Default (and null): 0.
    #[schema(required = false, value_type = Option<openapi::NonNegativeDecimal>)]
    minimum_charge: Option<String>,
}

/// A free quantity of one meter per billing period.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Allowance)]
#[allow(dead_code)] // schema only
pub struct AllowanceSchema {
    meter: openapi::Meter,
    /// Not negative.
    #[schema(value_type = openapi::NonNegativeDecimal)]
    quantity: String,
}

/// One priced meter, optionally for one arch, with its pricing model.
#[derive(ToSchema)]
#[schema(as = Charge)]
#[allow(dead_code)] // schema only
pub struct ChargeSchema {
    /// Unique within the plan; names the invoice line.
    #[schema(min_length = 1)]
    key: String,
    meter: openapi::Meter,
    /// Only this arch's usage; absent or null prices both.
    #[schema(value_type = Option<openapi::Arch>)]
    arch: Option<String>,
    #[serde(flatten)]
    pricing: PricingSchema,
}

/// A pricing model and its prices. Prices are not negative.
#[derive(ToSchema)]
#[schema(as = Pricing)]
#[serde(tag = "model", rename_all = "lowercase")]
#[allow(dead_code)] // schema only
pub enum PricingSchema {
    /// Quantity × unit price.
    Unit {
        #[schema(value_type = openapi::NonNegativeDecimal)]
        unit_price: String,
    },
    /// Each tier's slice of the quantity at that tier's price.
    Graduated { tiers: Vec<TierSchema> },
    /// The whole quantity at the price of the tier it falls in.
    Volume { tiers: Vec<TierSchema> },
    /// ceil(quantity / package size) × package price.
    Package {
        /// Greater than 0.
        #[schema(value_type = openapi::NonNegativeDecimal)]
        package_size: String,
        #[schema(value_type = openapi::NonNegativeDecimal)]
        package_price: String,
    },
}

/// A price band. Tiers are sorted by `up_to`; only the last is unbounded.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Tier)]
#[allow(dead_code)] // schema only
pub struct TierSchema {
    /// The inclusive upper bound of the band, counted after the allowance; null for the last
    /// tier.
    #[schema(value_type = Option<openapi::NonNegativeDecimal>)]
    up_to: Option<String>,
    /// The price of one unit in this band.
    #[schema(value_type = openapi::NonNegativeDecimal)]
    unit_price: String,
}
