//! Billing periods: calendar months in UTC, named `YYYY-MM`, held as their first day.

use anyhow::Context;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};

/// The billing period (first day of the UTC month) an instant falls in.
pub fn period_start(t: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(t.year(), t.month(), 1).expect("first of a month is valid")
}

/// Parses `YYYY-MM` into the first day of that month.
pub fn parse_period(text: &str) -> Option<NaiveDate> {
    let (year, month) = text.split_once('-')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(year, 4) || !digits(month, 2) {
        return None;
    }
    let year: i32 = year.parse().ok().filter(|y| *y > 0)?;
    NaiveDate::from_ymd_opt(year, month.parse().ok()?, 1)
}

/// Parses a period given in a request, naming the parameter in the error.
pub fn period_param(name: &str, text: &str) -> anyhow::Result<NaiveDate> {
    parse_period(text)
        .with_context(|| format!("{name}: must be a billing period YYYY-MM (got {text:?})"))
}

/// A billing period as `YYYY-MM`.
pub fn format_period(period: NaiveDate) -> String {
    format!("{:04}-{:02}", period.year(), period.month())
}

/// The billing period after `period`.
pub fn next_period(period: NaiveDate) -> NaiveDate {
    period
        .checked_add_months(Months::new(1))
        .expect("a billing period far from the end of time")
}

/// The instant a period starts (UTC midnight of its first day).
pub fn period_start_instant(period: NaiveDate) -> DateTime<Utc> {
    period
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_year_and_month() {
        let date = |y, m| NaiveDate::from_ymd_opt(y, m, 1).unwrap();
        assert_eq!(parse_period("2026-10"), Some(date(2026, 10)));
        assert_eq!(parse_period("0999-01"), Some(date(999, 1)));
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-10",
            "2026-10-01",
            "",
            "abcd-ef",
            "+026-10",
            "2026-+1",
        ] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
        assert_eq!(format_period(date(2026, 3)), "2026-03");
        assert_eq!(next_period(date(2026, 12)), date(2027, 1));
        assert_eq!(
            period_start_instant(date(2026, 10)).to_rfc3339(),
            "2026-10-01T00:00:00+00:00"
        );
        assert!(
            period_param("period", "2026-13")
                .unwrap_err()
                .to_string()
                .starts_with("period:")
        );
    }
}
