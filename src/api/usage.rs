//! `GET /v1/tenants/{tenant}/usage`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ErrorEnvelope, KeyedErrors},
    openapi,
    tenants::TenantPath,
};
use crate::metering::usage::{Granularity, UsageQuery, query_usage};

/// Every parameter arrives as text so that each problem is reported by its name.
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
    /// Only this function's usage: 1 to 256 characters, no control characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
    )]
    function: Option<String>,
    /// Comma-separated fields to group by, from `function` and `arch`; without it, one row per
    /// bucket sums all functions and archs.
    #[param(example = "function,arch")]
    group_by: Option<String>,
    /// Rows per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^(o[0-9]{1,18})?$")]
    cursor: Option<String>,
}

/// One bucket of usage. Quantities are exact decimal strings.
#[derive(Serialize, ToSchema)]
pub struct UsageRow {
    /// The start of the bucket, aligned to the granularity in UTC.
    bucket_start: DateTime<Utc>,
    /// Present only when grouped by function.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    function: Option<String>,
    /// Present only when grouped by arch.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = openapi::Arch)]
    arch: Option<String>,
    /// Invocations.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = openapi::Decimal)]
    requests: rust_decimal::Decimal,
    /// GB-seconds.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = openapi::Decimal)]
    compute: rust_decimal::Decimal,
    /// Billed seconds.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = openapi::Decimal)]
    duration: rust_decimal::Decimal,
}

/// A page of usage rows, in bucket order.
#[derive(Serialize, ToSchema)]
pub struct UsagePage {
    data: Vec<UsageRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// A tenant's usage
///
/// Usage in the half-open range `[from, to)`, in buckets of the granularity. Roles `tenant` (its
/// own), `finance`, `admin`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/usage",
    tag = "usage",
    operation_id = "get_usage",
    security(("bearer" = [])),
    params(TenantPath, UsageParams),
    responses(
        (status = 200, description = "A page of usage rows", body = UsagePage),
        (status = 400, description = "A parameter is missing or malformed; the message names \
            it (`invalid_parameter`)", body = ErrorEnvelope),
        (status = 404, description = "No such tenant, or another tenant's key (`not_found`)",
            body = ErrorEnvelope),
        KeyedErrors,
    )
)]
pub async fn get_usage(
    caller: Caller,
    state: web::Data<AppState>,
    tenant: web::Path<TenantPath>,
    params: web::Query<UsageParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant.parse()?;
    caller.require_tenant_reader(tenant.as_str())?;
    let page = Page::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    let (from, to, granularity) = bucket_range(
        params.from.as_deref(),
        params.to.as_deref(),
        params.granularity.as_deref(),
    )?;
    let (mut by_function, mut by_arch) = (false, false);
    for field in params.group_by.as_deref().unwrap_or("").split(',') {
        match field.trim() {
            "" => {}
            "function" => by_function = true,
            "arch" => by_arch = true,
            other => {
                return Err(ApiError::bad_parameter(
                    "group_by",
                    format!("may list function and arch (got {other:?})"),
                ));
            }
        }
    }
    if let Some(function) = &params.function
        && (!(1..=256).contains(&function.chars().count())
            || function.chars().any(char::is_control))
    {
        // No event's function could match (see ingest::decode).
        return Err(ApiError::bad_parameter(
            "function",
            "must be 1 to 256 characters without control characters",
        ));
    }
    tenant_exists(&state, tenant.as_str()).await?;
    let query = UsageQuery {
        tenant: tenant.to_string(),
        from,
        to,
        granularity,
        function: params.function.clone(),
        by_function,
        by_arch,
        limit: page.limit + 1,
        offset: page.offset,
    };
    let mut rows = query_usage(&state.pool, &query).await?;
    let next_cursor = page.next_cursor(&mut rows);
    let data = rows
        .into_iter()
        .map(|r| {
            Ok(UsageRow {
                requests: r.requests_decimal()?,
                compute: r.compute_gb_s()?,
                duration: r.duration_s()?,
                bucket_start: r.bucket_start,
                function: r.function,
                arch: r.arch,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(HttpResponse::Ok().json(UsagePage { data, next_cursor }))
}

pub async fn tenant_exists(state: &AppState, tenant: &str) -> Result<(), ApiError> {
    let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&state.pool)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found(format!("no tenant {tenant:?}")))
}

/// `from`, `to` and `granularity` of a usage range (the usage API and usage.csv): whole UTC
/// hours, `to` after `from`, granularity `hour` by default.
pub(super) fn bucket_range(
    from: Option<&str>,
    to: Option<&str>,
    granularity: Option<&str>,
) -> Result<(DateTime<Utc>, DateTime<Utc>, Granularity), ApiError> {
    let from = hour_param("from", from)?;
    let to = hour_param("to", to)?;
    if to <= from {
        return Err(ApiError::bad_parameter("to", "must be later than from"));
    }
    let granularity = match granularity {
        None => Granularity::Hour,
        Some(g) => Granularity::parse(g)
            .ok_or_else(|| ApiError::bad_parameter("granularity", "must be hour, day or month"))?,
    };
    Ok((from, to, granularity))
}

fn hour_param(name: &str, value: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    let value = value.ok_or_else(|| {
        ApiError::bad_parameter(name, "is required (RFC 3339, e.g. 2026-11-01T00:00:00Z)")
    })?;
    if !is_whole_hour_text(value) {
        return Err(ApiError::bad_parameter(
            name,
            "must be RFC 3339 on a whole UTC hour, YYYY-MM-DDTHH:00:00 with Z or an offset of \
             whole hours, e.g. 2026-11-01T00:00:00Z: usage is kept in hourly buckets",
        ));
    }
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

/// The text form `from` and `to` must have (their `pattern` in the OpenAPI document narrows
/// the digits to valid dates and hours): `YYYY-MM-DDTHH:00:00`
/// then `Z` or `±HH:00`.
fn is_whole_hour_text(value: &str) -> bool {
    let b = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let head = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && &b[13..19] == b":00:00";
    head && match &b[19..] {
        b"Z" => true,
        [sign, h1, h2, b':', b'0', b'0'] => {
            matches!(sign, b'+' | b'-') && h1.is_ascii_digit() && h2.is_ascii_digit()
        }
        _ => false,
    }
}

/// `limit` and `cursor` of a list. The cursor is opaque to clients; inside it is the offset
/// of the next row in the list's stable order.
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Page, ApiError> {
        let limit = match limit {
            None => 100,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| {
                    ApiError::bad_parameter("limit", "must be an integer from 1 to 1000")
                })?,
        };
        let offset = match cursor {
            None | Some("") => 0,
            Some(c) => c
                .strip_prefix("o")
                .filter(|n| (1..=18).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_parameter("cursor", "is not a cursor this API returned")
                })?,
        };
        Ok(Page { limit, offset })
    }

    /// Given up to `limit + 1` rows, drops the extra one and says where the next page starts.
    pub fn next_cursor<T>(&self, rows: &mut Vec<T>) -> Option<String> {
        if rows.len() as i64 > self.limit {
            rows.truncate(self.limit as usize);
            Some(format!("o{}", self.offset + self.limit))
        } else {
            None
        }
    }
}
