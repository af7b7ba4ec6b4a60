//! Plans: what a tenant pays for each meter, read from JSON and validated once, so a [`Plan`]
//! value is always priceable.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json::{
    self, FieldError, Fields, array, non_empty_string, non_negative_decimal, positive_decimal,
    string,
};
use super::{Arch, Currency, Meter};

/// A validated plan. It serializes back to the JSON it was read from, with every decimal as a
/// normalized string (`"0.0000150000"` becomes `"0.000015"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct Plan {
    name: String,
    currency: Currency,
    allowances: Vec<Allowance>,
    charges: Vec<Charge>,
    minimum_charge: Decimal,
}

/// A free quantity of one meter per billing period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowance {
    /// The meter it applies to.
    pub meter: Meter,
    /// The free quantity.
    pub quantity: Decimal,
}

/// One priced meter, optionally for one arch; it becomes one usage line of every invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Charge {
    key: String,
    meter: Meter,
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<Arch>,
    #[serde(flatten)]
    pricing: Pricing,
}

/// A pricing model and its prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum Pricing {
    /// Quantity × unit price.
    Unit { unit_price: Decimal },
    /// Each tier's slice of the quantity at that tier's price.
    Graduated { tiers: Vec<Tier> },
    /// The whole quantity at the price of the tier it falls in.
    Volume { tiers: Vec<Tier> },
    /// ceil(quantity / package size) × package price.
    Package {
        package_size: Decimal,
        package_price: Decimal,
    },
}

/// A price band; tiers are sorted by `up_to` and only the last one is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tier {
    /// The inclusive upper bound of the band; `None` for the last, unbounded one.
    pub up_to: Option<Decimal>,
    /// The price of one unit in this band.
    pub unit_price: Decimal,
}

impl Plan {
    /// Reads and validates a plan from JSON text.
    pub fn from_json(text: &str) -> Result<Self, FieldError> {
        Self::from_value(&json::parse_document(text)?)
    }

    /// Reads and validates a plan from a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, FieldError> {
        let plan = Fields::of(value, String::new())?;
        plan.deny_unknown(
            &[
                "name",
                "currency",
                "allowances",
                "charges",
                "minimum_charge",
            ],
            "a plan",
        )?;
        let name = plan.required("name", non_empty_string)?.to_owned();
        let currency: Currency = plan.required("currency", json::name)?;

        let mut allowances: Vec<Allowance> = Vec::new();
        for (path, item) in plan.items("allowances")? {
            let allowance = parse_allowance(&Fields::of(item, path)?, &allowances)?;
            allowances.push(allowance);
        }

        plan.required("charges", array)?;
        let mut charges: Vec<Charge> = Vec::new();
        for (path, item) in plan.items("charges")? {
            let charge = parse_charge(&Fields::of(item, path)?, &charges)?;
            charges.push(charge);
        }

        let minimum_charge = plan
            .optional("minimum_charge", non_negative_decimal)?
            .unwrap_or_default();
        if minimum_charge.scale() > currency.minor_units() {
            return Err(plan.error(
                "minimum_charge",
                format!(
                    "has more decimal places than {currency} has ({})",
                    currency.minor_units()
                ),
            ));
        }

        Ok(Self {
            name,
            currency,
            allowances,
            charges,
            minimum_charge,
        })
    }

    /// The plan's display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The currency every amount of the plan is in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Free quantities per meter, at most one per meter.
    pub fn allowances(&self) -> &[Allowance] {
        &self.allowances
    }

    /// The charges, in the order they consume allowances and appear on invoices.
    pub fn charges(&self) -> &[Charge] {
        &self.charges
    }

    /// The least a period's usage lines are topped up to; it has no digits below the minor unit.
    pub fn minimum_charge(&self) -> Decimal {
        self.minimum_charge
    }
}

impl TryFrom<Value> for Plan {
    type Error = FieldError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(&value)
    }
}

impl Charge {
    /// The charge's key, unique within its plan.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The meter it prices.
    pub fn meter(&self) -> Meter {
        self.meter
    }

    /// The arch it is limited to; `None` counts both.
    pub fn arch(&self) -> Option<Arch> {
        self.arch
    }

    /// The pricing model and its prices.
    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }
}

fn parse_allowance(item: &Fields, earlier: &[Allowance]) -> Result<Allowance, FieldError> {
    item.deny_unknown(&["meter", "quantity"], "an allowance")?;
    let meter = item.required("meter", json::name)?;
    if earlier.iter().any(|a| a.meter == meter) {
        return Err(item.error("meter", format!("duplicate allowance for meter {meter}")));
    }
    let quantity = item.required("quantity", non_negative_decimal)?;
    Ok(Allowance { meter, quantity })
}

fn parse_charge(item: &Fields, earlier: &[Charge]) -> Result<Charge, FieldError> {
    let key = item.required("key", non_empty_string)?.to_owned();
    if earlier.iter().any(|c| c.key == key) {
        return Err(item.error("key", format!("duplicate charge key {key:?}")));
    }
    let meter = item.required("meter", json::name)?;
    let arch = item.optional("arch", json::name)?;
    let model = item.required("model", string)?;
    let (pricing, model_fields): (_, &[&str]) = match model {
        "unit" => (
            Pricing::Unit {
                unit_price: item.required("unit_price", non_negative_decimal)?,
            },
            &["unit_price"],
        ),
        "graduated" => (
            Pricing::Graduated {
                tiers: parse_tiers(item)?,
            },
            &["tiers"],
        ),
        "volume" => (
            Pricing::Volume {
                tiers: parse_tiers(item)?,
            },
            &["tiers"],
        ),
        "package" => (
            Pricing::Package {
                package_size: item.required("package_size", positive_decimal)?,
                package_price: item.required("package_price", non_negative_decimal)?,
            },
            &["package_size", "package_price"],
        ),
        other => {
            return Err(item.error(
                "model",
                format!(
                    "unknown model {other:?} (expected one of: unit, graduated, volume, package)"
                ),
            ));
        }
    };
    let known = [&["key", "meter", "arch", "model"], model_fields].concat();
    item.deny_unknown(&known, &format!("a {model} charge"))?;
    Ok(Charge {
        key,
        meter,
        arch,
        pricing,
    })
}

fn parse_tiers(charge: &Fields) -> Result<Vec<Tier>, FieldError> {
    charge.required("tiers", array)?;
    let items = charge.items("tiers")?;
    if items.is_empty() {
        return Err(charge.error("tiers", "must have at least one tier"));
    }
    let last = items.len() - 1;
    let mut tiers: Vec<Tier> = Vec::with_capacity(items.len());
    for (i, (path, item)) in items.into_iter().enumerate() {
        let tier = Fields::of(item, path)?;
        tier.deny_unknown(&["up_to", "unit_price"], "a tier")?;
        let up_to = tier.optional("up_to", positive_decimal)?;
        // Every earlier tier is bounded: an unbounded one before the last is refused below.
        let previous = tiers.last().and_then(|t| t.up_to);
        let problem = match (up_to, previous) {
            (None, _) if i < last => Some("only the last tier may have up_to null"),
            (Some(_), _) if i == last => Some("the last tier must have up_to null"),
            (Some(up_to), Some(previous)) if up_to == previous => {
                Some("tiers must not overlap: up_to equals the previous tier's")
            }
            (Some(up_to), Some(previous)) if up_to < previous => {
                Some("tiers must be sorted by up_to")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(tier.error("up_to", problem));
        }
        let unit_price = tier.required("unit_price", non_negative_decimal)?;
        tiers.push(Tier { up_to, unit_price });
    }
    Ok(tiers)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// The AWS Lambda us-east-1 plan of SPEC §3, verbatim.
    pub(crate) const LAMBDA_PLAN: &str = r#"{
  "name": "Lambda-style, us-east-1",
  "currency": "USD",
  "allowances": [
    {"meter": "requests", "quantity": "1000000"},
    {"meter": "compute",  "quantity": "400000"}
  ],
  "charges": [
    {"key": "requests", "meter": "requests", "model": "unit", "unit_price": "0.0000002"},
    {"key": "compute-x86", "meter": "compute", "arch": "x86_64", "model": "graduated",
     "tiers": [{"up_to": "6000000000",  "unit_price": "0.0000166667"},
               {"up_to": "15000000000", "unit_price": "0.0000150000"},
               {"up_to": null,          "unit_price": "0.0000133334"}]},
    {"key": "compute-arm", "meter": "compute", "arch": "arm64", "model": "graduated",
     "tiers": [{"up_to": "7500000000",  "unit_price": "0.0000133334"},
               {"up_to": "18750000000", "unit_price": "0.0000120001"},
               {"up_to": null,          "unit_price": "0.0000106667"}]}
  ],
  "minimum_charge": "0.00"
}"#;

    /// A valid plan to break one field of at a time.
    fn valid() -> Value {
        json!({
            "name": "test",
            "currency": "USD",
            "allowances": [{"meter": "requests", "quantity": "10"}],
            "charges": [
                {"key": "r", "meter": "requests", "model": "unit", "unit_price": "0.5"},
                {"key": "c", "meter": "compute", "model": "graduated", "tiers": [
                    {"up_to": "10", "unit_price": "2"},
                    {"up_to": "20", "unit_price": "1"},
                    {"up_to": null, "unit_price": "0.5"}]},
                {"key": "p", "meter": "duration", "model": "package",
                 "package_size": "100", "package_price": "3"}
            ],
            "minimum_charge": "5.00"
        })
    }

    fn error_of(plan: Value) -> String {
        Plan::from_value(&plan).unwrap_err().to_string()
    }

    /// Sets `pointer` (a JSON pointer, added if absent) of the valid plan to `value` and
    /// returns the error message.
    fn error_with(pointer: &str, value: Value) -> String {
        let mut plan = valid();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match plan.pointer_mut(parent).unwrap() {
            Value::Object(fields) => drop(fields.insert(key.to_owned(), value)),
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            _ => unreachable!("{pointer} is not in an object or array"),
        }
        error_of(plan)
    }

    #[test]
    fn reads_the_spec_plan() {
        let plan = Plan::from_json(LAMBDA_PLAN).unwrap();
        assert_eq!(plan.name(), "Lambda-style, us-east-1");
        assert_eq!(plan.currency(), Currency::USD);
        assert_eq!(plan.allowances().len(), 2);
        let keys: Vec<_> = plan.charges().iter().map(Charge::key).collect();
        assert_eq!(keys, ["requests", "compute-x86", "compute-arm"]);
        assert_eq!(plan.charges()[1].arch(), Some(Arch::X86_64));
        assert_eq!(plan.charges()[0].arch(), None);
        assert!(plan.minimum_charge().is_zero());
    }

    #[test]
    fn serializes_back_to_the_same_shape_in_canonical_form() {
        let plan = Plan::from_json(LAMBDA_PLAN).unwrap();
        let value = serde_json::to_value(&plan).unwrap();
        let mut expected: Value = serde_json::from_str(LAMBDA_PLAN).unwrap();
        expected["charges"][1]["tiers"][1]["unit_price"] = json!("0.000015");
        expected["minimum_charge"] = json!("0");
        assert_eq!(value, expected);
        assert_eq!(Plan::from_value(&value).unwrap(), plan);
        let via_serde: Plan = serde_json::from_value(value).unwrap();
        assert_eq!(via_serde, plan);
    }

    #[test]
    fn optional_fields_have_defaults() {
        let plan = Plan::from_value(&json!({"name": "flat", "currency": "JPY", "charges": []}));
        let plan = plan.unwrap();
        assert!(plan.allowances().is_empty() && plan.minimum_charge().is_zero());
    }

    #[test]
    fn rejects_malformed_documents() {
        assert!(
            Plan::from_json("{")
                .unwrap_err()
                .to_string()
                .starts_with("invalid JSON")
        );
        assert_eq!(error_of(json!([])), "must be a JSON object");
        assert_eq!(error_with("/name", json!(7)), "name: must be a string");
        assert_eq!(
            error_with("/charges", json!({})),
            "charges: must be an array"
        );
        assert_eq!(
            error_with("/charges/0", json!("r")),
            "charges[0]: must be a JSON object"
        );
        let serde_error = serde_json::from_value::<Plan>(json!({"name": ""})).unwrap_err();
        assert_eq!(serde_error.to_string(), "name: must not be empty");
    }

    #[test]
    fn rejects_a_missing_or_empty_name() {
        let mut plan = valid();
        plan.as_object_mut().unwrap().remove("name");
        assert_eq!(error_of(plan), "name: is required");
        assert_eq!(error_with("/name", json!("")), "name: must not be empty");
    }

    #[test]
    fn rejects_unknown_names() {
        assert_eq!(
            error_with("/currency", json!("XYZ")),
            format!(
                "currency: unknown currency \"XYZ\" (expected one of: {})",
                Currency::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        );
        assert_eq!(
            error_with("/charges/1/meter", json!("memory")),
            r#"charges[1].meter: unknown meter "memory" (expected one of: requests, compute, duration)"#
        );
        assert_eq!(
            error_with("/charges/0/arch", json!("x86")),
            r#"charges[0].arch: unknown arch "x86" (expected one of: x86_64, arm64)"#
        );
        assert_eq!(
            error_with("/charges/0/model", json!("flat")),
            r#"charges[0].model: unknown model "flat" (expected one of: unit, graduated, volume, package)"#
        );
        assert_eq!(
            error_with("/allowances/0/meter", json!("cpu")),
            r#"allowances[0].meter: unknown meter "cpu" (expected one of: requests, compute, duration)"#
        );
    }

    #[test]
    fn rejects_unknown_fields() {
        let mut plan = valid();
        plan["minimum_charg"] = json!("1");
        assert_eq!(error_of(plan), "minimum_charg: is not a field of a plan");
        let mut plan = valid();
        plan["charges"][0]["tiers"] = json!([]);
        assert_eq!(
            error_of(plan),
            "charges[0].tiers: is not a field of a unit charge"
        );
    }

    #[test]
    fn rejects_badly_ordered_tiers() {
        let tier = |up_to: Value| json!({"up_to": up_to, "unit_price": "1"});
        assert_eq!(
            error_with("/charges/1/tiers/1", tier(json!("5"))),
            "charges[1].tiers[1].up_to: tiers must be sorted by up_to"
        );
        assert_eq!(
            error_with("/charges/1/tiers/1", tier(json!("10.0"))),
            "charges[1].tiers[1].up_to: tiers must not overlap: up_to equals the previous tier's"
        );
        assert_eq!(
            error_with("/charges/1/tiers", json!([])),
            "charges[1].tiers: must have at least one tier"
        );
        assert_eq!(
            error_with("/charges/1/tiers/2", tier(json!("30"))),
            "charges[1].tiers[2].up_to: the last tier must have up_to null"
        );
        assert_eq!(
            error_with("/charges/1/tiers/1", tier(Value::Null)),
            "charges[1].tiers[1].up_to: only the last tier may have up_to null"
        );
        assert_eq!(
            error_with("/charges/1/tiers/0", tier(json!("0"))),
            "charges[1].tiers[0].up_to: must be greater than 0"
        );
    }

    #[test]
    fn rejects_negative_prices_and_quantities() {
        for (pointer, field) in [
            ("/charges/0/unit_price", "charges[0].unit_price"),
            (
                "/charges/1/tiers/2/unit_price",
                "charges[1].tiers[2].unit_price",
            ),
            ("/charges/2/package_price", "charges[2].package_price"),
            ("/allowances/0/quantity", "allowances[0].quantity"),
            ("/minimum_charge", "minimum_charge"),
        ] {
            let error = error_with(pointer, json!("-0.01"));
            assert_eq!(error, format!("{field}: must not be negative"));
        }
    }

    #[test]
    fn rejects_a_package_size_that_is_not_positive() {
        for size in ["0", "-100"] {
            assert_eq!(
                error_with("/charges/2/package_size", json!(size)),
                "charges[2].package_size: must be greater than 0"
            );
        }
    }

    #[test]
    fn rejects_duplicates() {
        assert_eq!(
            error_with("/charges/1/key", json!("r")),
            r#"charges[1].key: duplicate charge key "r""#
        );
        let mut plan = valid();
        plan["allowances"] = json!([
            {"meter": "compute", "quantity": "1"},
            {"meter": "compute", "quantity": "2"}
        ]);
        assert_eq!(
            error_of(plan),
            "allowances[1].meter: duplicate allowance for meter compute"
        );
    }

    #[test]
    fn rejects_json_numbers_where_a_decimal_string_is_expected() {
        let message = r#"must be a decimal string, e.g. "0.0000002""#;
        for (pointer, field) in [
            ("/charges/0/unit_price", "charges[0].unit_price"),
            ("/charges/1/tiers/0/up_to", "charges[1].tiers[0].up_to"),
            (
                "/charges/1/tiers/0/unit_price",
                "charges[1].tiers[0].unit_price",
            ),
            ("/charges/2/package_size", "charges[2].package_size"),
            ("/allowances/0/quantity", "allowances[0].quantity"),
            ("/minimum_charge", "minimum_charge"),
        ] {
            assert_eq!(error_with(pointer, json!(1)), format!("{field}: {message}"));
        }
        assert_eq!(
            error_with("/charges/0/unit_price", json!("2e-7")),
            r#"charges[0].unit_price: not a decimal number: "2e-7" (expected digits with an optional - and .)"#
        );
    }

    #[test]
    fn rejects_missing_fields_per_model() {
        let charge = |fields: Value| {
            let mut plan = valid();
            plan["charges"][0] = fields;
            error_of(plan)
        };
        let base = |model: &str| json!({"key": "k", "meter": "requests", "model": model});
        assert_eq!(charge(base("unit")), "charges[0].unit_price: is required");
        assert_eq!(charge(base("graduated")), "charges[0].tiers: is required");
        assert_eq!(charge(base("volume")), "charges[0].tiers: is required");
        assert_eq!(
            charge(base("package")),
            "charges[0].package_size: is required"
        );
        let mut package = base("package");
        package["package_size"] = json!("10");
        assert_eq!(charge(package), "charges[0].package_price: is required");
        assert_eq!(
            charge(json!({"meter": "requests", "model": "unit", "unit_price": "1"})),
            "charges[0].key: is required"
        );
        assert_eq!(
            charge(json!({"key": "k", "model": "unit", "unit_price": "1"})),
            "charges[0].meter: is required"
        );
        let mut plan = valid();
        plan.as_object_mut().unwrap().remove("charges");
        assert_eq!(error_of(plan), "charges: is required");
    }

    #[test]
    fn rejects_a_minimum_charge_finer_than_the_currency() {
        assert_eq!(
            error_with("/minimum_charge", json!("5.001")),
            "minimum_charge: has more decimal places than USD has (2)"
        );
        let mut plan = valid();
        plan["currency"] = json!("JPY");
        plan["minimum_charge"] = json!("500.00");
        assert_eq!(
            Plan::from_value(&plan)
                .unwrap()
                .minimum_charge()
                .to_string(),
            "500"
        );
    }
}
