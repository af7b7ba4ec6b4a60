//! Reads usage back out of the hourly buckets, grouped by UTC hour, day or month.

use anyhow::Context;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;

/// How wide the returned buckets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            "month" => Some(Granularity::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }
}

/// A validated usage query: hourly buckets starting in `[from, to)`.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub tenant: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
    pub function: Option<String>,
    pub by_function: bool,
    pub by_arch: bool,
    pub limit: i64,
    pub offset: i64,
}

/// Usage of one bucket, as exact quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotals {
    pub bucket_start: DateTime<Utc>,
    pub function: Option<String>,
    pub arch: Option<String>,
    pub requests: i128,
    pub billed_ms: i128,
    pub mb_ms: i128,
}

impl UsageTotals {
    pub fn compute_gb_s(&self) -> anyhow::Result<Decimal> {
        gb_seconds(self.mb_ms)
    }

    pub fn duration_s(&self) -> anyhow::Result<Decimal> {
        seconds(self.billed_ms)
    }

    pub fn requests_decimal(&self) -> anyhow::Result<Decimal> {
        count(self.requests)
    }
}

/// GB-s from MB·ms: / 1,024,000. 1,024,000 = 2¹³·5³, so the quotient has at most 13
/// decimals: mb_ms × 9,765,625 at scale 13 is exact.
pub fn gb_seconds(mb_ms: i128) -> anyhow::Result<Decimal> {
    scaled(mb_ms, 9_765_625, 13)
}

/// Seconds from billed milliseconds.
pub fn seconds(billed_ms: i128) -> anyhow::Result<Decimal> {
    scaled(billed_ms, 1, 3)
}

/// A count as a decimal.
pub fn count(n: i128) -> anyhow::Result<Decimal> {
    scaled(n, 1, 0)
}

fn scaled(value: i128, factor: i128, scale: u32) -> anyhow::Result<Decimal> {
    let mantissa = value
        .checked_mul(factor)
        .context("usage quantity overflows")?;
    Decimal::try_from_i128_with_scale(mantissa, scale)
        .map(|d| d.normalize())
        .context("usage quantity exceeds 28 significant digits")
}

/// Runs the query; rows come ordered by bucket, then function, then arch.
pub async fn query_usage(
    db: impl PgExecutor<'_>,
    q: &UsageQuery,
) -> anyhow::Result<Vec<UsageTotals>> {
    type Row = (
        DateTime<Utc>,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT date_trunc($2, hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket_start,
                    CASE WHEN $6 THEN function END AS function,
                    CASE WHEN $7 THEN arch END AS arch,
                    sum(requests)::text, sum(billed_ms)::text, sum(mb_ms)::text
             FROM usage_hourly
             WHERE tenant = $1 AND hour >= $3 AND hour < $4
               AND ($5::text IS NULL OR function = $5)
             GROUP BY 1, 2, 3
             ORDER BY 1, 2, 3
             LIMIT $8 OFFSET $9",
    )
    .bind(&q.tenant)
    .bind(q.granularity.as_str())
    .bind(q.from)
    .bind(q.to)
    .bind(q.function.as_deref())
    .bind(q.by_function)
    .bind(q.by_arch)
    .bind(q.limit)
    .bind(q.offset)
    .fetch_all(db)
    .await
    .context("query usage buckets")?;
    rows.into_iter()
        .map(
            |(bucket_start, function, arch, requests, billed_ms, mb_ms)| {
                Ok(UsageTotals {
                    bucket_start,
                    function,
                    arch,
                    requests: requests.parse().context("requests sum")?,
                    billed_ms: billed_ms.parse().context("billed_ms sum")?,
                    mb_ms: mb_ms.parse().context("mb_ms sum")?,
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: i128, billed_ms: i128, mb_ms: i128) -> UsageTotals {
        UsageTotals {
            bucket_start: DateTime::UNIX_EPOCH,
            function: None,
            arch: None,
            requests,
            billed_ms,
            mb_ms,
        }
    }

    #[test]
    fn quantities_convert_exactly() {
        // 3,000,000 × 120 ms × 1536 MB = 540,000 GB-s and 360,000 s.
        let t = totals(3_000_000, 360_000_000, 552_960_000_000);
        assert_eq!(t.compute_gb_s().unwrap().to_string(), "540000");
        assert_eq!(t.duration_s().unwrap().to_string(), "360000");
        // One MB for one ms is 1/1,024,000 GB-s, exactly.
        assert_eq!(
            totals(1, 1, 1).compute_gb_s().unwrap().to_string(),
            "0.0000009765625"
        );
        assert_eq!(totals(1, 1, 1).duration_s().unwrap().to_string(), "0.001");
    }

    #[test]
    fn unrepresentable_quantities_are_errors_not_rounding() {
        assert!(totals(0, 0, i128::MAX / 2).compute_gb_s().is_err());
    }
}
