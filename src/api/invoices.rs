//! Invoice endpoints: the upcoming draft, finalized invoices, and finalizing a period.

use super::plans::ListParams;
use actix_web::{HttpResponse, http::StatusCode, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ErrorEnvelope, JsonBody, KeyedErrors},
    openapi,
    tenants::TenantPath,
    usage::{Page, tenant_exists},
};
use crate::billing::period::period_param;
use crate::billing::store::{self, FinalizeError};

/// The upcoming invoice
///
/// The open period's invoice as the usage stands now (`status: "draft"`, `number: null`),
/// including adjustments for late usage of finalized periods. Roles `tenant` (its own),
/// `finance`, `admin`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/invoices/upcoming",
    tag = "invoices",
    operation_id = "get_upcoming_invoice",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The draft invoice", body = InvoiceSchema),
        (status = 400, description = "The tenant id is invalid (`invalid_parameter`)",
            body = ErrorEnvelope),
        (status = 404, description = "No such tenant, or another tenant's key (`not_found`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn upcoming(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<TenantPath>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant.parse()?;
    caller.require_tenant_reader(tenant.as_str())?;
    let draft = state
        .drafts
        .draft_json(&state.pool, &state.billing, tenant.as_str(), Utc::now())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {:?}", tenant.as_str())))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(draft))
}

/// List a tenant's invoices
///
/// The tenant's finalized invoices, newest first. Roles `tenant` (its own), `finance`, `admin`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/invoices",
    tag = "invoices",
    operation_id = "list_invoices",
    security(("bearer" = [])),
    params(TenantPath, ListParams),
    responses(
        (status = 200, description = "A page of invoice summaries", body = InvoiceListSchema),
        (status = 400, description = "The tenant id, `limit` or `cursor` is malformed \
            (`invalid_parameter`)",
            body = ErrorEnvelope),
        (status = 404, description = "No such tenant, or another tenant's key (`not_found`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<TenantPath>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant.parse()?;
    caller.require_tenant_reader(tenant.as_str())?;
    let page = Page::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    tenant_exists(&state, tenant.as_str()).await?;
    let mut rows =
        store::list_invoices(&state.pool, tenant.as_str(), page.limit + 1, page.offset).await?;
    let next_cursor = page.next_cursor(&mut rows);
    Ok(HttpResponse::Ok().json(serde_json::json!({"data": rows, "next_cursor": next_cursor})))
}

/// Get an invoice
///
/// A finalized invoice, exactly as it was finalized: it never changes. Roles `tenant` (its
/// own), `finance`, `admin`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/invoices/{number}",
    tag = "invoices",
    operation_id = "get_invoice",
    security(("bearer" = [])),
    params(InvoicePath),
    responses(
        (status = 200, description = "The finalized invoice", body = InvoiceSchema),
        (status = 400, description = "The tenant id is invalid (`invalid_parameter`)",
            body = ErrorEnvelope),
        (status = 404, description = "No such invoice for the tenant, or another tenant's key \
            (`not_found`)", body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<InvoicePath>,
) -> Result<HttpResponse, ApiError> {
    let tenant = TenantPath::parse_str(&path.tenant)?;
    caller.require_tenant_reader(tenant.as_str())?;
    let number = &path.number;
    let not_found = || ApiError::not_found(format!("no invoice {number:?} for tenant {tenant}"));
    // No invoice number holds a control character (a NUL would not even reach the database).
    if number.chars().any(char::is_control) {
        return Err(not_found());
    }
    // The stored document is served as it was written: a finalized invoice never changes.
    let document = store::invoice_document(&state.pool, tenant.as_str(), number)
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(document))
}

/// The path of one invoice.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InvoicePath {
    /// The tenant id: 1–64 characters of `A-Za-z0-9._-`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    tenant: String,
    /// The invoice number.
    #[param(example = "INV-00000042")]
    number: String,
}

/// The period to finalize.
#[derive(Deserialize, ToSchema)]
pub struct FinalizeRequest {
    /// An ended billing period.
    #[schema(value_type = openapi::Period)]
    period: String,
}

/// Finalize a period now
///
/// Finalizes the period for every tenant with usage or a minimum charge, as the scheduler does
/// once the grace period has passed; idempotent, and safe to call for several periods at once
/// in any order: each tenant's period gets its own invoice, never an earlier period's usage as
/// adjustments. Role `admin`.
#[utoipa::path(
    post,
    path = "/v1/billing/finalize",
    tag = "invoices",
    operation_id = "finalize_period",
    security(("bearer" = [])),
    request_body = FinalizeRequest,
    responses(
        (status = 200, description = "The invoices this call created and those that existed",
            body = FinalizeOutcomeSchema),
        (status = 400, description = "The body is not JSON (`invalid_body`)",
            body = ErrorEnvelope),
        (status = 413, description = "The body is over 1 MiB (`too_large`)", body = ErrorEnvelope),
        (status = 409, description = "The period has not ended (`period_not_ended`)",
            body = ErrorEnvelope),
        (status = 422, description = "The body is not an object with a `period`, or `period` \
            is not a billing period YYYY-MM (`invalid_value`, `missing_field`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn finalize(
    caller: Caller,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<FinalizeRequest>,
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

/// An invoice: a draft, or a finalized invoice that never changes. Its per-function
/// amounts sum exactly to `total`.
#[derive(ToSchema)]
#[schema(as = Invoice)]
#[allow(dead_code)] // schema only: the JSON is `billing::invoice::InvoiceDocument`
pub struct InvoiceSchema {
    /// Null for a draft.
    id: Option<uuid::Uuid>,
    /// From one gapless sequence (`INV-00000042`); null for a draft.
    number: Option<String>,
    tenant: String,
    status: InvoiceStatus,
    period: PeriodRangeSchema,
    #[schema(value_type = openapi::Currency)]
    currency: String,
    plan: PlanRefSchema,
    /// Usage lines in the plan's charge order, then adjustments, then the minimum line.
    lines: Vec<InvoiceLineSchema>,
    /// The split of `total` over functions, by function name.
    functions: Vec<FunctionAmountSchema>,
    /// The sum of the rounded lines.
    #[schema(value_type = openapi::Money)]
    total: String,
    /// Null for a draft.
    finalized_at: Option<DateTime<Utc>>,
}

#[derive(ToSchema)]
#[allow(dead_code)] // schema only
pub enum InvoiceStatus {
    #[schema(rename = "draft")]
    Draft,
    #[schema(rename = "finalized")]
    Finalized,
}

/// The billing period: a calendar month, UTC, half-open.
#[derive(ToSchema)]
#[schema(as = PeriodRange)]
#[allow(dead_code)] // schema only
pub struct PeriodRangeSchema {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// The plan version the invoice was priced with.
#[derive(ToSchema)]
#[schema(as = PlanRef)]
#[allow(dead_code)] // schema only
pub struct PlanRefSchema {
    id: String,
    version: i32,
}

/// `usage`: a charge of the plan; `adjustment`: a correction of a finalized period for late
/// usage; `minimum`: the top-up to the plan's minimum charge.
#[derive(ToSchema)]
#[allow(dead_code)] // schema only: the domain type is `rating::LineKind`
pub enum LineKind {
    #[schema(rename = "usage")]
    Usage,
    #[schema(rename = "adjustment")]
    Adjustment,
    #[schema(rename = "minimum")]
    Minimum,
}

/// One line of an invoice, rounded once to the currency's minor unit.
#[derive(ToSchema)]
#[schema(as = InvoiceLine)]
#[allow(dead_code)] // schema only: the JSON is `rating::InvoiceLine`
pub struct InvoiceLineSchema {
    kind: LineKind,
    /// The charge's key; null for a minimum line (and a minimum adjustment).
    charge: Option<String>,
    /// Null for a minimum line.
    #[schema(value_type = Option<openapi::Meter>)]
    meter: Option<String>,
    /// The arch the charge is limited to, if any.
    #[schema(value_type = Option<openapi::Arch>)]
    arch: Option<String>,
    /// The period's usage of the meter (and arch), before the allowance; for an adjustment, the
    /// late usage. Null for a minimum line.
    #[schema(value_type = Option<openapi::Decimal>)]
    quantity: Option<String>,
    /// The free quantity applied to this line; null for minimum and adjustment lines.
    #[schema(value_type = Option<openapi::Decimal>)]
    allowance: Option<String>,
    /// The unit of `quantity` (`requests`, `GB-s`, `s`); null for a minimum line.
    unit: Option<String>,
    /// May be negative for an adjustment.
    #[schema(value_type = openapi::Money)]
    amount: String,
    /// The period an adjustment corrects; null otherwise.
    #[schema(value_type = Option<openapi::Period>)]
    for_period: Option<String>,
    /// How the tiers priced the quantity left after the allowance, unrounded.
    tiers: Vec<TierLineSchema>,
}

/// The part of a line one tier priced. `unit` pricing has one entry with `up_to: null`;
/// `package` one with the number of packages as `quantity` and the package price as
/// `unit_price`.
#[derive(ToSchema)]
#[schema(as = TierLine)]
#[allow(dead_code)] // schema only: the JSON is `rating::TierLine`
pub struct TierLineSchema {
    /// The tier's inclusive upper bound; null for the last tier.
    #[schema(value_type = Option<openapi::Decimal>)]
    up_to: Option<String>,
    #[schema(value_type = openapi::Decimal)]
    quantity: String,
    #[schema(value_type = openapi::Decimal)]
    unit_price: String,
    /// `quantity × unit_price`, exact and unrounded.
    #[schema(value_type = openapi::Decimal)]
    amount: String,
}

/// A function's share of the invoice total.
#[derive(ToSchema)]
#[schema(as = FunctionAmount)]
#[allow(dead_code)] // schema only: the JSON is `rating::FunctionAmount`
pub struct FunctionAmountSchema {
    /// Null for a share no function's usage carries (a minimum with no usage at all).
    function: Option<String>,
    #[schema(value_type = openapi::Money)]
    amount: String,
}

/// A finalized invoice as the list shows it.
#[derive(ToSchema)]
#[schema(as = InvoiceSummary)]
#[allow(dead_code)] // schema only: the JSON is `billing::store::InvoiceSummary`
pub struct InvoiceSummarySchema {
    id: uuid::Uuid,
    number: String,
    status: InvoiceStatus,
    /// The invoice's period, as the invoice shows it.
    period: PeriodRangeSchema,
    #[schema(value_type = openapi::Currency)]
    currency: String,
    #[schema(value_type = openapi::Money)]
    total: String,
    /// Whole seconds, as the invoice shows it.
    finalized_at: DateTime<Utc>,
}

/// A page of a tenant's finalized invoices, newest first.
#[derive(ToSchema)]
#[schema(as = InvoiceList)]
#[allow(dead_code)] // schema only: `list` builds the JSON
pub struct InvoiceListSchema {
    data: Vec<InvoiceSummarySchema>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The outcome of finalizing a period.
#[derive(ToSchema)]
#[schema(as = FinalizeOutcome)]
#[allow(dead_code)] // schema only: the JSON is `billing::store::FinalizeOutcome`
pub struct FinalizeOutcomeSchema {
    #[schema(value_type = openapi::Period)]
    period: String,
    /// The invoice numbers this call created, including those of a tenant's earlier periods
    /// whose finalization had begun elsewhere and that it finalized first, oldest first.
    created: Vec<String>,
    /// Invoices of the period that existed before this call.
    existing: u64,
}
