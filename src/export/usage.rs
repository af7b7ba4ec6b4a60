//! `usage.csv`: every tenant's usage in a range, per function, arch and bucket, with the same
//! buckets and exact conversions as the usage API.

use std::fmt::Write as _;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use sqlx::{PgConnection, Row, postgres::PgRow};

use super::{Cell, CsvOut, Stop};
use crate::metering::usage::{Granularity, count, gb_seconds, seconds};

pub const HEADER: &[&str] = &[
    "tenant",
    "function",
    "arch",
    "bucket_start",
    "requests",
    "compute_gb_s",
    "duration_s",
];

/// Hourly buckets starting in `[from, to)`, grouped by `granularity` (aligned in UTC).
#[derive(Debug, Clone)]
pub struct UsageRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
}

impl UsageRange {
    /// `usage-2026-10-01T00-2026-11-01T00.csv`: the range to the hour, with no `:` (which
    /// some file systems refuse).
    pub fn file_name(&self) -> String {
        let hour = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H").to_string();
        format!("usage-{}-{}.csv", hour(self.from), hour(self.to))
    }
}

pub(super) async fn write_rows(
    conn: &mut PgConnection,
    range: &UsageRange,
    out: &mut CsvOut,
) -> Result<(), Stop> {
    // Quantities come as text: NUMERIC(38, 0) sums can exceed what the driver decodes into a
    // Decimal. Hourly buckets are the table's own rows (its key is tenant, hour, function and
    // arch, and `hour` is a whole hour), so at that granularity there is nothing to group, and
    // PostgreSQL is spared a million one-row groups.
    let query = match range.granularity {
        Granularity::Hour => sqlx::query(
            "SELECT tenant, function, arch, hour, requests::text, billed_ms::text, mb_ms::text
             FROM usage_hourly
             WHERE hour >= $1 AND hour < $2
             ORDER BY tenant, function, arch, hour",
        )
        .bind(range.from)
        .bind(range.to),
        Granularity::Day | Granularity::Month => sqlx::query(
            "SELECT tenant, function, arch,
                    date_trunc($3, hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket_start,
                    sum(requests)::text, sum(billed_ms)::text, sum(mb_ms)::text
             FROM usage_hourly
             WHERE hour >= $1 AND hour < $2
             GROUP BY tenant, function, arch, bucket_start
             ORDER BY tenant, function, arch, bucket_start",
        )
        .bind(range.from)
        .bind(range.to)
        .bind(range.granularity.as_str()),
    };
    let mut rows = query.fetch(conn);
    // Reused for every row, so the loop does not allocate per cell.
    let (mut bucket, mut requests, mut compute, mut duration) =
        (String::new(), String::new(), String::new(), String::new());
    let mut types_checked = false;
    while let Some(row) = rows.try_next().await? {
        if !types_checked {
            // The driver's check of every value's type costs about a quarter of the export's
            // CPU; the query fixes the types, so they are checked on the first row only.
            check_types(&row)?;
            types_checked = true;
        }
        let tenant: &str = row.try_get_unchecked(0)?;
        let function: &str = row.try_get_unchecked(1)?;
        let arch: &str = row.try_get_unchecked(2)?;
        let bucket_start: DateTime<Utc> = row.try_get_unchecked(3)?;
        let sum = |i: usize, what: &str| -> anyhow::Result<i128> {
            let text: &str = row.try_get_unchecked(i)?;
            text.parse()
                .with_context(|| format!("the {what} sum {text:?} is not an integer"))
        };
        bucket.clear();
        bucket.push_str(&bucket_start.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        requests.clear();
        write!(requests, "{}", count(sum(4, "requests")?)?).context("format")?;
        compute.clear();
        write!(compute, "{}", gb_seconds(sum(6, "mb_ms")?)?).context("format")?;
        duration.clear();
        write!(duration, "{}", seconds(sum(5, "billed_ms")?)?).context("format")?;
        out.row(&[
            Cell::Text(tenant),
            Cell::Text(function),
            Cell::Text(arch),
            Cell::Text(&bucket),
            Cell::Number(&requests),
            Cell::Number(&compute),
            Cell::Number(&duration),
        ])
        .await?;
    }
    Ok(())
}

fn check_types(row: &PgRow) -> Result<(), sqlx::Error> {
    for i in [0, 1, 2, 4, 5, 6] {
        row.try_get::<&str, _>(i)?;
    }
    row.try_get::<DateTime<Utc>, _>(3)?;
    Ok(())
}
