//! Offline pricing for `meterd price`: a plan file and a usage file in, the invoice JSON out.

use serde_json::Value;

use super::json::{
    self, FieldError, Fields, array, non_empty_string, non_negative_decimal, string,
};
use super::{Arch, Meter, Plan, RatingError, UsageRow, price};

/// Why `meterd price` could not price its files; the message says which file is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The plan file is not a valid plan.
    #[error("plan file: {0}")]
    Plan(FieldError),
    /// The usage file is not a valid usage file.
    #[error("usage file: {0}")]
    Usage(FieldError),
    /// Both files are valid but the usage cannot be priced exactly.
    #[error("pricing failed: {0}")]
    Rating(#[from] RatingError),
}

/// Prices a usage file against a plan file and returns the invoice as pretty JSON
/// `{"currency", "lines", "functions", "total"}`.
pub fn price_files(plan_json: &str, usage_json: &str) -> Result<String, PriceError> {
    let plan = Plan::from_json(plan_json).map_err(PriceError::Plan)?;
    let usage = parse_usage_file(usage_json).map_err(PriceError::Usage)?;
    let invoice = price(&plan, &usage)?;
    Ok(serde_json::to_string_pretty(&invoice).expect("an invoice has only string map keys"))
}

/// Reads `{"period": "YYYY-MM", "usage": [{"function", "arch"?, "requests"?, "compute"?,
/// "duration"?}]}`. The period is checked but changes no price; a missing quantity is zero.
fn parse_usage_file(text: &str) -> Result<Vec<UsageRow>, FieldError> {
    let document = json::parse_document(text)?;
    let file = Fields::of(&document, String::new())?;
    file.deny_unknown(&["period", "usage"], "a usage file")?;
    file.required("period", period)?;
    file.required("usage", array)?;
    file.items("usage")?
        .into_iter()
        .map(|(path, item)| {
            let row = Fields::of(item, path)?;
            row.deny_unknown(
                &["function", "arch", "requests", "compute", "duration"],
                "a usage row",
            )?;
            let quantity = |meter: Meter| {
                row.optional(meter.as_str(), non_negative_decimal)
                    .map(Option::unwrap_or_default)
            };
            Ok(UsageRow {
                function: row.required("function", non_empty_string)?.to_owned(),
                arch: row.optional("arch", json::name)?.unwrap_or(Arch::X86_64),
                requests: quantity(Meter::Requests)?,
                compute: quantity(Meter::Compute)?,
                duration: quantity(Meter::Duration)?,
            })
        })
        .collect()
}

/// A billing period `YYYY-MM`.
fn period(value: &Value) -> Result<(), String> {
    let valid = match string(value)?.as_bytes() {
        [year @ .., b'-', m1, m2] if year.len() == 4 => {
            year.iter().chain([m1, m2]).all(u8::is_ascii_digit)
                && (1..=12).contains(&((m1 - b'0') * 10 + (m2 - b'0')))
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(r#"must be a billing period YYYY-MM, e.g. "2026-10""#.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rating::plan::tests::LAMBDA_PLAN;
    use serde_json::json;

    fn priced(usage: Value) -> Value {
        serde_json::from_str(&price_files(LAMBDA_PLAN, &usage.to_string()).unwrap()).unwrap()
    }

    fn usage_error(usage: Value) -> String {
        price_files(LAMBDA_PLAN, &usage.to_string())
            .unwrap_err()
            .to_string()
    }

    fn with_row(row: Value) -> Value {
        json!({"period": "2026-10", "usage": [
            {"function": "a", "requests": "1"}, {"function": "b"}, row]})
    }

    #[test]
    fn spec_reference_cases() {
        let invoice = priced(json!({"period": "2026-10", "usage": [{"function": "api",
            "arch": "x86_64", "requests": "3000000", "compute": "540000", "duration": "360000"}]}));
        let amounts: Vec<_> = invoice["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["amount"])
            .collect();
        assert_eq!(amounts, [&json!("0.40"), &json!("2.33"), &json!("0.00")]);
        assert_eq!(invoice["total"], json!("2.73"));

        let invoice = priced(json!({"period": "2026-10", "usage": [{"function": "f",
            "requests": "3000000", "compute": "1500000", "duration": "3000000"}]}));
        assert_eq!(invoice["lines"][0]["amount"], json!("0.40"));
        assert_eq!(invoice["lines"][1]["amount"], json!("18.33"));
        assert_eq!(invoice["total"], json!("18.73"));
        assert_eq!(invoice["currency"], json!("USD"));
        assert_eq!(
            invoice["functions"],
            json!([{"function": "f", "amount": "18.73"}])
        );
        let mut fields: Vec<_> = invoice.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(fields, ["currency", "functions", "lines", "total"]);
    }

    #[test]
    fn arch_defaults_to_x86_64_and_missing_quantities_to_zero() {
        let invoice =
            priced(json!({"period": "2026-10", "usage": [{"function": "f", "compute": "400001"}]}));
        assert_eq!(invoice["lines"][0]["quantity"], json!("0"));
        assert_eq!(invoice["lines"][1]["quantity"], json!("400001"));
        assert_eq!(invoice["lines"][2]["quantity"], json!("0"));
    }

    #[test]
    fn usage_file_errors_name_the_field() {
        assert_eq!(
            usage_error(with_row(json!({"function": "c", "compute": 1500000}))),
            r#"usage file: usage[2].compute: must be a decimal string, e.g. "0.0000002""#
        );
        assert_eq!(
            usage_error(with_row(json!({"function": "c", "duration": "-1"}))),
            "usage file: usage[2].duration: must not be negative"
        );
        assert_eq!(
            usage_error(with_row(json!({"function": "c", "arch": "amd64"}))),
            r#"usage file: usage[2].arch: unknown arch "amd64" (expected one of: x86_64, arm64)"#
        );
        assert_eq!(
            usage_error(with_row(json!({"requests": "1"}))),
            "usage file: usage[2].function: is required"
        );
        assert_eq!(
            usage_error(with_row(json!({"function": "c", "memory": "1"}))),
            "usage file: usage[2].memory: is not a field of a usage row"
        );
        assert_eq!(
            usage_error(json!({"period": "2026-10"})),
            "usage file: usage: is required"
        );
        assert!(usage_error(json!("x")).starts_with("usage file: must be a JSON object"));
        assert!(
            price_files(LAMBDA_PLAN, "[")
                .unwrap_err()
                .to_string()
                .starts_with("usage file: invalid JSON")
        );
    }

    #[test]
    fn the_period_must_be_a_month() {
        for period in [
            json!("2026-13"),
            json!("2026-00"),
            json!("2026-1"),
            json!("26-10"),
            json!("2026/10"),
            json!("2026-1é"),
            json!(202610),
        ] {
            let error = usage_error(json!({"period": period, "usage": []}));
            assert!(
                error.starts_with("usage file: period: must be"),
                "{period}: {error}"
            );
        }
        assert_eq!(
            priced(json!({"period": "2026-12", "usage": []}))["total"],
            json!("0.00")
        );
    }

    #[test]
    fn plan_problems_are_told_apart_from_usage_problems() {
        let usage = json!({"period": "2026-10", "usage": []}).to_string();
        let error = price_files(r#"{"name": "x", "currency": "USD", "charges": 1}"#, &usage);
        assert_eq!(
            error.unwrap_err().to_string(),
            "plan file: charges: must be an array"
        );
        let huge = json!({"period": "2026-10", "usage": [{"function": "f", "requests": "79228162514264337593543950335"}, {"function": "f", "requests": "1"}]});
        assert_eq!(
            price_files(LAMBDA_PLAN, &huge.to_string()),
            Err(PriceError::Rating(RatingError::Overflow))
        );
    }
}
