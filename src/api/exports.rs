//! The finance CSV exports (SPEC §6): `GET /v1/exports/invoice-lines.csv`, `usage.csv` and
//! `function-costs.csv`, for finance and admin keys.

use super::usage::bucket_range;
use actix_web::{
    HttpResponse,
    http::header::{ContentDisposition, DispositionParam, DispositionType},
    web,
};
use chrono::NaiveDate;
use serde::Deserialize;
use utoipa::{IntoParams, IntoResponses};

use super::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ErrorEnvelope, KeyedErrors},
    openapi,
};
use crate::billing::period::parse_period;
use crate::export::{self, Export, StartError, UsageRange};

/// Parameters arrive as text so that each problem is reported by its name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodParams {
    /// The billing period, `YYYY-MM`.
    #[param(required = true, value_type = openapi::Period)]
    period: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// The start of the range, inclusive: RFC 3339 on a whole UTC hour
    /// (`YYYY-MM-DDTHH:00:00` then `Z` or an offset of whole hours).
    #[param(
        required = true,
        value_type = String,
        pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):00:00(Z|[+-]([01][0-9]|2[0-3]):00)$",
        example = "2026-11-01T00:00:00Z"
    )]
    from: Option<String>,
    /// The end of the range, exclusive: RFC 3339 on a whole UTC hour
    /// (`YYYY-MM-DDTHH:00:00` then `Z` or an offset of whole hours), later than `from`.
    #[param(
        required = true,
        value_type = String,
        pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):00:00(Z|[+-]([01][0-9]|2[0-3]):00)$",
        example = "2026-12-01T00:00:00Z"
    )]
    to: Option<String>,
    /// The bucket size, aligned in UTC; default `hour`.
    #[param(value_type = Option<openapi::Granularity>)]
    granularity: Option<String>,
}

/// RFC 4180 CSV (UTF-8, CRLF) with a header row, streamed as an attachment.
#[derive(IntoResponses)]
#[response(
    status = 200,
    content_type = "text/csv; charset=utf-8",
    headers(("Content-Disposition" = String, description = "`attachment; filename=…`"))
)]
#[allow(dead_code)] // schema only: `respond` streams the CSV
pub struct CsvExport(String);

/// Export invoice lines
///
/// One row per line of every invoice finalized for the period, all tenants: `invoice_number,
/// tenant, period, currency, line_kind, charge, meter, arch, for_period, quantity, unit, amount,
/// invoice_total, finalized_at`. Rows by tenant (code point order), invoice number, line.
/// Roles `finance`, `admin`.
#[utoipa::path(
    get,
    path = "/v1/exports/invoice-lines.csv",
    tag = "exports",
    operation_id = "export_invoice_lines",
    security(("bearer" = [])),
    params(PeriodParams),
    responses(
        CsvExport,
        (status = 400, description = "`period` is missing or malformed (`invalid_parameter`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn invoice_lines(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<PeriodParams>,
) -> Result<HttpResponse, ApiError> {
    let period = finance_period(&caller, &params)?;
    respond(&state, Export::InvoiceLines { period }).await
}

/// Export per-function costs
///
/// Each finalized invoice of the period split over functions: `invoice_number, tenant, period,
/// function, currency, amount`. Roles `finance`, `admin`.
#[utoipa::path(
    get,
    path = "/v1/exports/function-costs.csv",
    tag = "exports",
    operation_id = "export_function_costs",
    security(("bearer" = [])),
    params(PeriodParams),
    responses(
        CsvExport,
        (status = 400, description = "`period` is missing or malformed (`invalid_parameter`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn function_costs(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<PeriodParams>,
) -> Result<HttpResponse, ApiError> {
    let period = finance_period(&caller, &params)?;
    respond(&state, Export::FunctionCosts { period }).await
}

/// Export usage
///
/// Usage of all tenants in `[from, to)`, one row per tenant, function, arch and bucket:
/// `tenant, function, arch, bucket_start, requests, compute_gb_s, duration_s`. Roles `finance`,
/// `admin`.
#[utoipa::path(
    get,
    path = "/v1/exports/usage.csv",
    tag = "exports",
    operation_id = "export_usage",
    security(("bearer" = [])),
    params(UsageParams),
    responses(
        CsvExport,
        (status = 400, description = "A parameter is missing or malformed; the message names \
            it (`invalid_parameter`)", body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn usage(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<UsageParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Admin])?;
    let (from, to, granularity) = bucket_range(
        params.from.as_deref(),
        params.to.as_deref(),
        params.granularity.as_deref(),
    )?;
    respond(
        &state,
        Export::Usage(UsageRange {
            from,
            to,
            granularity,
        }),
    )
    .await
}

/// The role check, then the period of an invoice export.
fn finance_period(caller: &Caller, params: &PeriodParams) -> Result<NaiveDate, ApiError> {
    caller.require(&[Role::Finance, Role::Admin])?;
    let text = params
        .period
        .as_deref()
        .ok_or_else(|| ApiError::bad_parameter("period", "is required (YYYY-MM)"))?;
    parse_period(text).ok_or_else(|| {
        ApiError::bad_parameter(
            "period",
            format!("must be a billing period YYYY-MM (got {text:?})"),
        )
    })
}

async fn respond(state: &AppState, export: Export) -> Result<HttpResponse, ApiError> {
    let disposition = ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![DispositionParam::Filename(export.file_name())],
    };
    let started = export::start(&state.settings.database.url, export)
        .await
        .map_err(|e| match e {
            StartError::Unavailable(cause) => ApiError::unavailable(cause),
            StartError::Unexpected(cause) => ApiError::from(cause),
        })?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(disposition)
        .streaming(started.into_stream()))
}
