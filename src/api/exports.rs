//! The finance CSV exports (SPEC §6): `GET /v1/exports/invoice-lines.csv`, `usage.csv` and
//! `function-costs.csv`, for finance and admin keys.

use actix_web::{
    HttpResponse,
    http::header::{ContentDisposition, DispositionParam, DispositionType},
    web,
};
use chrono::{DateTime, Timelike, Utc};
use serde::Deserialize;

use super::{
    AppState,
    auth::{Caller, Role},
    error::ApiError,
};
use crate::billing::period::parse_period;
use crate::export::{self, Export, StartError, UsageRange};
use crate::metering::usage::Granularity;

/// Parameters arrive as text so that each problem is reported by its name.
#[derive(Deserialize)]
pub struct PeriodParams {
    period: Option<String>,
}

#[derive(Deserialize)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
}

pub async fn invoice_lines(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<PeriodParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Admin])?;
    let period = period(params.period.as_deref())?;
    respond(&state, Export::InvoiceLines { period }).await
}

pub async fn function_costs(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<PeriodParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Admin])?;
    let period = period(params.period.as_deref())?;
    respond(&state, Export::FunctionCosts { period }).await
}

pub async fn usage(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<UsageParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Admin])?;
    let from = hour_param("from", params.from.as_deref())?;
    let to = hour_param("to", params.to.as_deref())?;
    if to <= from {
        return Err(ApiError::bad_parameter("to", "must be later than from"));
    }
    let granularity = match params.granularity.as_deref() {
        None => Granularity::Hour,
        Some(g) => Granularity::parse(g)
            .ok_or_else(|| ApiError::bad_parameter("granularity", "must be hour, day or month"))?,
    };
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

fn period(text: Option<&str>) -> Result<chrono::NaiveDate, ApiError> {
    let text = text.ok_or_else(|| ApiError::bad_parameter("period", "is required (YYYY-MM)"))?;
    parse_period(text).ok_or_else(|| {
        ApiError::bad_parameter(
            "period",
            format!("must be a billing period YYYY-MM (got {text:?})"),
        )
    })
}

/// A range bound as the usage API takes it: RFC 3339 on a whole UTC hour.
fn hour_param(name: &str, value: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    let value = value.ok_or_else(|| {
        ApiError::bad_parameter(name, "is required (RFC 3339, e.g. 2026-11-01T00:00:00Z)")
    })?;
    let t = DateTime::parse_from_rfc3339(value)
        .map_err(|e| ApiError::bad_parameter(name, format!("must be RFC 3339 ({e})")))?
        .with_timezone(&Utc);
    if t.minute() != 0 || t.second() != 0 || t.nanosecond() != 0 {
        return Err(ApiError::bad_parameter(
            name,
            "must be on a whole UTC hour: usage is kept in hourly buckets",
        ));
    }
    Ok(t)
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
