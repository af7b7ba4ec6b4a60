//! Pricing: a period's usage rows and a plan in, priced invoice lines out.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    Arch, Currency, Exact, FunctionAmount, FunctionBreakdown, Meter, Plan, Pricing, RatingError,
};

/// One function's usage on one arch in a billing period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The function's name.
    pub function: String,
    /// The arch it ran on.
    pub arch: Arch,
    /// Invocations.
    pub requests: Decimal,
    /// GB-seconds.
    pub compute: Decimal,
    /// Seconds.
    pub duration: Decimal,
}

impl UsageRow {
    /// The row's quantity of `meter`.
    pub fn quantity(&self, meter: Meter) -> Decimal {
        match meter {
            Meter::Requests => self.requests,
            Meter::Compute => self.compute,
            Meter::Duration => self.duration,
        }
    }
}

/// A period's usage summed exactly per function, arch and meter, so neither repeated rows nor
/// their order change anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    quantities: BTreeMap<(String, Arch, Meter), Exact>,
}

impl UsageTotals {
    /// Sums usage rows; a negative quantity is refused.
    pub fn new(rows: &[UsageRow]) -> Result<Self, RatingError> {
        let mut quantities = BTreeMap::new();
        for row in rows {
            for &meter in Meter::ALL {
                let quantity = Exact::from(row.quantity(meter));
                if quantity.is_negative() {
                    return Err(RatingError::NegativeUsage {
                        function: row.function.clone(),
                        meter,
                    });
                }
                let total = quantities
                    .entry((row.function.clone(), row.arch, meter))
                    .or_insert(Exact::ZERO);
                *total = total.try_add(quantity)?;
            }
        }
        Ok(Self { quantities })
    }

    /// The functions that have usage, sorted by name.
    pub fn functions(&self) -> Vec<String> {
        let mut functions: Vec<String> = self.quantities.keys().map(|k| k.0.clone()).collect();
        functions.dedup();
        functions
    }

    /// Every function's quantity of `meter` on `arch` (both archs for `None`), sorted by
    /// function; a function without such usage is listed with zero.
    pub fn by_function(
        &self,
        meter: Meter,
        arch: Option<Arch>,
    ) -> Result<Vec<(String, Exact)>, RatingError> {
        let mut totals: Vec<(String, Exact)> = Vec::new();
        for ((function, row_arch, row_meter), quantity) in &self.quantities {
            let counts = *row_meter == meter && arch.is_none_or(|arch| arch == *row_arch);
            let quantity = if counts { *quantity } else { Exact::ZERO };
            match totals.last_mut() {
                Some((last, total)) if last == function => *total = total.try_add(quantity)?,
                _ => totals.push((function.clone(), quantity)),
            }
        }
        Ok(totals)
    }

    /// The total quantity of `meter` on `arch` (both archs for `None`).
    pub fn quantity(&self, meter: Meter, arch: Option<Arch>) -> Result<Exact, RatingError> {
        self.by_function(meter, arch)?
            .into_iter()
            .try_fold(Exact::ZERO, |sum, (_, quantity)| sum.try_add(quantity))
    }
}

string_enum! {
    /// What an invoice line is for.
    pub enum LineKind ("line kind") {
        /// A charge of the plan, priced on the period's usage.
        Usage = "usage",
        /// A correction of an earlier, finalized period (late usage).
        Adjustment = "adjustment",
        /// The top-up to the plan's minimum charge.
        Minimum = "minimum",
    }
}

/// One line of an invoice, shaped as SPEC §4's invoice JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    /// Usage, adjustment or minimum.
    pub kind: LineKind,
    /// The charge's key; `None` for a minimum line.
    pub charge: Option<String>,
    /// The meter priced; `None` for a minimum line.
    pub meter: Option<Meter>,
    /// The arch the charge is limited to, if any.
    pub arch: Option<Arch>,
    /// The period's usage of the meter (and arch), before allowance; `None` for a minimum line.
    pub quantity: Option<Decimal>,
    /// The free quantity applied to this line; `None` for a minimum line.
    pub allowance: Option<Decimal>,
    /// The unit of `quantity`; `None` for a minimum line.
    pub unit: Option<&'static str>,
    /// The amount, rounded once to the currency's minor unit.
    pub amount: Decimal,
    /// The period an adjustment corrects (`YYYY-MM`); `None` otherwise.
    pub for_period: Option<String>,
    /// How the tiers priced the quantity left after the allowance, unrounded.
    pub tiers: Vec<TierLine>,
}

/// The part of a line one tier priced. For `unit` there is one entry with `up_to: null`; for
/// `package` one entry with `up_to: null`, the number of packages as `quantity` and the package
/// price as `unit_price`. Only tiers that priced some quantity are listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLine {
    /// The tier's inclusive upper bound; `None` for the last tier.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub up_to: Option<Decimal>,
    /// The quantity (or packages) priced in this tier.
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// The tier's price per unit (or package).
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    /// `quantity × unit_price`, exact and unrounded.
    pub amount: Exact,
}

/// A priced period: SPEC §4's invoice fields `currency`, `lines`, `functions`, `total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PricedInvoice {
    /// The plan's currency.
    pub currency: Currency,
    /// Usage lines in charge order, then the minimum line if any.
    pub lines: Vec<InvoiceLine>,
    /// The per-function split, sorted by function, summing exactly to `total`.
    pub functions: Vec<FunctionAmount>,
    /// The sum of the rounded lines.
    pub total: Decimal,
}

/// Prices a period's usage: usage lines, the minimum top-up, the total and the function split.
pub fn price(plan: &Plan, usage: &[UsageRow]) -> Result<PricedInvoice, RatingError> {
    let currency = plan.currency();
    let usage = UsageTotals::new(usage)?;
    let mut lines = rate_lines(plan, &usage)?;
    let mut functions = FunctionBreakdown::new(currency, usage.functions());
    for (charge, line) in plan.charges().iter().zip(&lines) {
        // Split by usage before allowance: the allowance is the tenant's, not one function's.
        let weights = usage.by_function(charge.meter(), charge.arch())?;
        functions.add(line.amount, &weights)?;
    }
    if let Some(minimum) = minimum_line(plan, &lines)? {
        functions.add_in_proportion(minimum.amount)?;
        lines.push(minimum);
    }
    Ok(PricedInvoice {
        currency,
        total: total(currency, &lines)?,
        functions: functions.finish()?,
        lines,
    })
}

/// Prices every charge of the plan: one usage line per charge, in plan order, each charge taking
/// what is left of its meter's allowance first.
pub fn rate_lines(plan: &Plan, usage: &UsageTotals) -> Result<Vec<InvoiceLine>, RatingError> {
    let mut free: BTreeMap<Meter, Exact> = plan
        .allowances()
        .iter()
        .map(|a| (a.meter, a.quantity.into()))
        .collect();
    plan.charges()
        .iter()
        .map(|charge| {
            let quantity = usage.quantity(charge.meter(), charge.arch())?;
            let left = free.entry(charge.meter()).or_insert(Exact::ZERO);
            let allowance = quantity.min(*left);
            *left = left.try_sub(allowance)?;
            let (amount, tiers) = price_quantity(charge.pricing(), quantity.try_sub(allowance)?)?;
            Ok(InvoiceLine {
                kind: LineKind::Usage,
                charge: Some(charge.key().to_owned()),
                meter: Some(charge.meter()),
                arch: charge.arch(),
                quantity: Some(quantity.to_decimal()?),
                allowance: Some(allowance.to_decimal()?),
                unit: Some(charge.meter().unit()),
                amount: plan.currency().round(amount)?,
                for_period: None,
                tiers,
            })
        })
        .collect()
}

/// The line that tops the usage lines up to the plan's minimum charge, if they fall short.
/// Only `usage` lines count: adjustments correct other periods.
pub fn minimum_line(
    plan: &Plan,
    lines: &[InvoiceLine],
) -> Result<Option<InvoiceLine>, RatingError> {
    let currency = plan.currency();
    let usage = lines.iter().filter(|line| line.kind == LineKind::Usage);
    let shortfall = currency
        .to_minor(plan.minimum_charge())?
        .checked_sub(sum_minor(currency, usage)?)
        .ok_or(RatingError::Overflow)?;
    if shortfall <= 0 {
        return Ok(None);
    }
    Ok(Some(InvoiceLine {
        kind: LineKind::Minimum,
        charge: None,
        meter: None,
        arch: None,
        quantity: None,
        allowance: None,
        unit: None,
        amount: currency.from_minor(shortfall)?,
        for_period: None,
        tiers: Vec::new(),
    }))
}

/// An invoice total: the exact sum of its rounded lines.
pub fn total(currency: Currency, lines: &[InvoiceLine]) -> Result<Decimal, RatingError> {
    currency.from_minor(sum_minor(currency, lines)?)
}

fn sum_minor<'a>(
    currency: Currency,
    lines: impl IntoIterator<Item = &'a InvoiceLine>,
) -> Result<i128, RatingError> {
    lines.into_iter().try_fold(0i128, |sum, line| {
        sum.checked_add(currency.to_minor(line.amount)?)
            .ok_or(RatingError::Overflow)
    })
}

/// The exact amount for `quantity` (net of allowance) and the tiers that priced it.
fn price_quantity(
    pricing: &Pricing,
    quantity: Exact,
) -> Result<(Exact, Vec<TierLine>), RatingError> {
    let tiers = match pricing {
        Pricing::Unit { unit_price } => vec![tier_line(None, quantity, *unit_price)?],
        Pricing::Package {
            package_size,
            package_price,
        } => {
            let packages = quantity.div_ceil((*package_size).into())?;
            vec![tier_line(None, packages, *package_price)?]
        }
        Pricing::Volume { tiers } => {
            // up_to is inclusive: a quantity on a boundary stays in the lower tier.
            let tier = tiers
                .iter()
                .find(|t| t.up_to.is_none_or(|up_to| quantity <= up_to.into()))
                .expect("a plan's last tier is unbounded");
            vec![tier_line(tier.up_to, quantity, tier.unit_price)?]
        }
        Pricing::Graduated { tiers } => {
            let mut lines = Vec::new();
            let mut below = Exact::ZERO;
            for tier in tiers {
                if quantity <= below {
                    break;
                }
                let top = tier
                    .up_to
                    .map_or(quantity, |up_to| quantity.min(up_to.into()));
                lines.push(tier_line(tier.up_to, top.try_sub(below)?, tier.unit_price)?);
                below = top;
            }
            lines
        }
    };
    let tiers: Vec<TierLine> = tiers
        .into_iter()
        .filter(|t| !t.quantity.is_zero())
        .collect();
    let amount = tiers
        .iter()
        .try_fold(Exact::ZERO, |sum, tier| sum.try_add(tier.amount))?;
    Ok((amount, tiers))
}

fn tier_line(
    up_to: Option<Decimal>,
    quantity: Exact,
    unit_price: Decimal,
) -> Result<TierLine, RatingError> {
    Ok(TierLine {
        up_to,
        quantity: quantity.to_decimal()?,
        unit_price,
        amount: quantity.try_mul(unit_price.into())?,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::rating::plan::tests::LAMBDA_PLAN;
    use serde_json::{Value, json};

    pub(crate) fn row(function: &str, arch: Arch, quantities: [&str; 3]) -> UsageRow {
        let [requests, compute, duration] = quantities.map(|q| q.parse().unwrap());
        UsageRow {
            function: function.to_owned(),
            arch,
            requests,
            compute,
            duration,
        }
    }

    fn lambda() -> Plan {
        Plan::from_json(LAMBDA_PLAN).unwrap()
    }

    /// A plan with one charge (`charge` fills in key and meter) and an optional allowance.
    fn one_charge(currency: &str, charge: Value, allowance: Option<&str>) -> Plan {
        let mut charge = charge;
        charge["key"] = json!("c");
        charge["meter"] = json!("requests");
        let allowances: Vec<Value> = allowance
            .map(|q| json!({"meter": "requests", "quantity": q}))
            .into_iter()
            .collect();
        Plan::from_value(&json!({
            "name": "t", "currency": currency, "allowances": allowances, "charges": [charge]
        }))
        .unwrap()
    }

    fn tiered(model: &str) -> Value {
        json!({"model": model, "tiers": [
            {"up_to": "10", "unit_price": "2"},
            {"up_to": "20", "unit_price": "1"},
            {"up_to": null, "unit_price": "0.5"}]})
    }

    fn requests(quantity: &str) -> Vec<UsageRow> {
        vec![row("f", Arch::X86_64, [quantity, "0", "0"])]
    }

    fn amounts(invoice: &PricedInvoice) -> Vec<String> {
        invoice.lines.iter().map(|l| l.amount.to_string()).collect()
    }

    fn tiers(line: &InvoiceLine) -> Value {
        serde_json::to_value(&line.tiers).unwrap()
    }

    #[test]
    fn spec_reference_mobile_backend() {
        // 3,000,000 × 120 ms at 1536 MB: 540000 GB-s, 360000 s.
        let usage = [row("api", Arch::X86_64, ["3000000", "540000", "360000"])];
        let invoice = price(&lambda(), &usage).unwrap();
        assert_eq!(amounts(&invoice), ["0.40", "2.33", "0.00"]);
        assert_eq!(invoice.total.to_string(), "2.73");
    }

    #[test]
    fn spec_reference_512_mb_for_one_second() {
        let usage = [row(
            "resize",
            Arch::X86_64,
            ["3000000", "1500000", "3000000"],
        )];
        let invoice = price(&lambda(), &usage).unwrap();
        assert_eq!(amounts(&invoice), ["0.40", "18.33", "0.00"]);
        assert_eq!(invoice.total.to_string(), "18.73");
        // The line exactly as SPEC §4's example shows it.
        assert_eq!(
            serde_json::to_value(&invoice.lines[1]).unwrap(),
            json!({"kind": "usage", "charge": "compute-x86", "meter": "compute", "arch": "x86_64",
                   "quantity": "1500000", "allowance": "400000", "unit": "GB-s", "amount": "18.33",
                   "for_period": null,
                   "tiers": [{"up_to": "6000000000", "quantity": "1100000",
                              "unit_price": "0.0000166667", "amount": "18.33337"}]})
        );
        assert_eq!(
            serde_json::to_value(&invoice.functions).unwrap(),
            json!([{"function": "resize", "amount": "18.73"}])
        );
    }

    #[test]
    fn zero_usage_prices_zero_lines() {
        let invoice = price(&lambda(), &[]).unwrap();
        assert_eq!(amounts(&invoice), ["0.00", "0.00", "0.00"]);
        let line = &invoice.lines[0];
        assert_eq!(
            (line.quantity, line.allowance),
            (Some(Decimal::ZERO), Some(Decimal::ZERO))
        );
        assert!(line.tiers.is_empty());
        assert_eq!(invoice.total.to_string(), "0.00");
        assert_eq!(
            serde_json::to_value(&invoice.functions).unwrap(),
            json!([{"function": null, "amount": "0.00"}])
        );
    }

    #[test]
    fn graduated_quantity_on_a_boundary_stays_in_the_lower_tier() {
        let plan = one_charge("USD", tiered("graduated"), None);
        let line = &price(&plan, &requests("10")).unwrap().lines[0];
        assert_eq!(
            tiers(line),
            json!([{"up_to": "10", "quantity": "10", "unit_price": "2", "amount": "20"}])
        );
        let line = &price(&plan, &requests("25")).unwrap().lines[0];
        assert_eq!(line.amount.to_string(), "32.50");
        assert_eq!(
            tiers(line),
            json!([{"up_to": "10", "quantity": "10", "unit_price": "2", "amount": "20"},
                   {"up_to": "20", "quantity": "10", "unit_price": "1", "amount": "10"},
                   {"up_to": null, "quantity": "5", "unit_price": "0.5", "amount": "2.5"}])
        );
    }

    #[test]
    fn volume_prices_everything_at_the_tier_the_quantity_falls_in() {
        let plan = one_charge("USD", tiered("volume"), None);
        let amount = |q: &str| {
            price(&plan, &requests(q)).unwrap().lines[0]
                .amount
                .to_string()
        };
        assert_eq!(amount("10"), "20.00");
        assert_eq!(amount("10.5"), "10.50");
        assert_eq!(amount("20"), "20.00");
        assert_eq!(amount("21"), "10.50");
        let line = &price(&plan, &requests("21")).unwrap().lines[0];
        assert_eq!(
            tiers(line),
            json!([{"up_to": null, "quantity": "21", "unit_price": "0.5", "amount": "10.5"}])
        );
    }

    #[test]
    fn an_allowance_larger_than_usage_leaves_nothing_to_pay() {
        let plan = one_charge(
            "USD",
            json!({"model": "unit", "unit_price": "1"}),
            Some("100"),
        );
        let line = &price(&plan, &requests("40")).unwrap().lines[0];
        assert_eq!(line.quantity.unwrap().to_string(), "40");
        assert_eq!(line.allowance.unwrap().to_string(), "40");
        assert_eq!(line.amount.to_string(), "0.00");
        assert!(line.tiers.is_empty());
    }

    #[test]
    fn allowances_are_shared_by_a_meters_charges_in_plan_order() {
        let plan = Plan::from_value(&json!({
            "name": "t", "currency": "USD",
            "allowances": [{"meter": "compute", "quantity": "100"}],
            "charges": [
                {"key": "arm", "meter": "compute", "arch": "arm64", "model": "unit", "unit_price": "1"},
                {"key": "x86", "meter": "compute", "arch": "x86_64", "model": "unit", "unit_price": "1"},
                {"key": "all", "meter": "compute", "model": "unit", "unit_price": "0.01"}
            ]
        }))
        .unwrap();
        let usage = [
            row("f", Arch::X86_64, ["0", "70", "0"]),
            row("g", Arch::Arm64, ["0", "60", "0"]),
        ];
        let invoice = price(&plan, &usage).unwrap();
        let shown: Vec<_> = invoice
            .lines
            .iter()
            .map(|l| {
                (
                    l.quantity.unwrap().to_string(),
                    l.allowance.unwrap().to_string(),
                    l.amount.to_string(),
                )
            })
            .collect();
        let expect = |q: &str, a: &str, m: &str| (q.to_owned(), a.to_owned(), m.to_owned());
        assert_eq!(
            shown,
            [
                expect("60", "60", "0.00"),
                expect("70", "40", "30.00"),
                expect("130", "0", "1.30")
            ]
        );
    }

    #[test]
    fn a_half_cent_rounds_away_from_zero_once_per_line() {
        let plan = one_charge("USD", json!({"model": "unit", "unit_price": "0.125"}), None);
        assert_eq!(
            price(&plan, &requests("1")).unwrap().total.to_string(),
            "0.13"
        );
        // Two lines of 0.0625 would each round to 0.06; one line of 0.125 rounds once.
        let plan = one_charge(
            "USD",
            json!({"model": "unit", "unit_price": "0.0625"}),
            None,
        );
        let invoice = price(
            &plan,
            &[
                row("a", Arch::X86_64, ["1", "0", "0"]),
                row("b", Arch::Arm64, ["1", "0", "0"]),
            ],
        );
        assert_eq!(invoice.unwrap().total.to_string(), "0.13");
    }

    #[test]
    fn jpy_has_no_minor_digits() {
        let plan = one_charge("JPY", json!({"model": "unit", "unit_price": "0.5"}), None);
        let invoice = price(&plan, &requests("5")).unwrap();
        assert_eq!(amounts(&invoice), ["3"]);
        let json = serde_json::to_value(&invoice).unwrap();
        assert_eq!(
            (&json["currency"], &json["total"]),
            (&json!("JPY"), &json!("3"))
        );
        assert_eq!(json["functions"], json!([{"function": "f", "amount": "3"}]));
    }

    #[test]
    fn huge_quantities_at_ten_decimal_prices_stay_exact() {
        let plan = Plan::from_value(&json!({"name": "t", "currency": "USD", "charges": [
            {"key": "c", "meter": "compute", "model": "unit", "unit_price": "0.0000166667"}]}))
        .unwrap();
        let compute = |q: &str| vec![row("f", Arch::X86_64, ["0", q, "0"])];
        let line = &price(&plan, &compute("100000000000.0000000000001"))
            .unwrap()
            .lines[0];
        assert_eq!(line.amount.to_string(), "1666670.00");
        assert_eq!(
            tiers(line)[0]["amount"],
            json!("1666670.00000000000000000166667")
        );

        // Just under a half cent: Decimal's own `*` rounds the product up to the tie first and so
        // bills a cent too much.
        let quantity = "100000037499.9250001499997";
        let line = &price(&plan, &compute(quantity)).unwrap().lines[0];
        assert_eq!(
            tiers(line)[0]["amount"],
            json!("1666670.62499999999999999999999")
        );
        assert_eq!(line.amount.to_string(), "1666670.62");
        let naive =
            quantity.parse::<Decimal>().unwrap() * "0.0000166667".parse::<Decimal>().unwrap();
        assert_eq!(
            plan.currency().round(naive.into()).unwrap().to_string(),
            "1666670.63"
        );
    }

    #[test]
    fn what_cannot_be_computed_exactly_is_an_error() {
        let plan = one_charge(
            "USD",
            json!({"model": "unit", "unit_price": "10.00000000001"}),
            None,
        );
        let usage = requests("79228162514264337593543950335");
        assert_eq!(price(&plan, &usage), Err(RatingError::Overflow));
    }

    #[test]
    fn negative_usage_is_refused() {
        assert_eq!(
            price(&lambda(), &[row("f", Arch::Arm64, ["1", "-0.5", "0"])]),
            Err(RatingError::NegativeUsage {
                function: "f".into(),
                meter: Meter::Compute
            })
        );
    }

    #[test]
    fn packages_round_up() {
        let plan = one_charge(
            "USD",
            json!({"model": "package", "package_size": "1000000", "package_price": "0.20"}),
            None,
        );
        let amount = |q: &str| price(&plan, &requests(q)).unwrap().total.to_string();
        assert_eq!(amount("0"), "0.00");
        assert_eq!(amount("1"), "0.20");
        assert_eq!(amount("1000000"), "0.20");
        assert_eq!(amount("1000000.5"), "0.40");
        let line = &price(&plan, &requests("2500000")).unwrap().lines[0];
        assert_eq!(
            tiers(line),
            json!([{"up_to": null, "quantity": "3", "unit_price": "0.2", "amount": "0.6"}])
        );
    }

    #[test]
    fn the_minimum_tops_up_usage_lines() {
        let mut plan: Value = serde_json::from_str(LAMBDA_PLAN).unwrap();
        plan["minimum_charge"] = json!("5");
        let plan = Plan::from_value(&plan).unwrap();
        let usage = [
            row("a", Arch::X86_64, ["3000000", "540000", "360000"]),
            row("b", Arch::X86_64, ["0", "0", "0"]),
        ];
        let invoice = price(&plan, &usage).unwrap();
        assert_eq!(amounts(&invoice), ["0.40", "2.33", "0.00", "2.27"]);
        let minimum = json!({"kind": "minimum", "charge": null, "meter": null, "arch": null,
            "quantity": null, "allowance": null, "unit": null, "amount": "2.27",
            "for_period": null, "tiers": []});
        assert_eq!(serde_json::to_value(&invoice.lines[3]).unwrap(), minimum);
        assert_eq!(invoice.total.to_string(), "5.00");
        assert_eq!(
            serde_json::to_value(&invoice.functions).unwrap(),
            json!([{"function": "a", "amount": "5.00"}, {"function": "b", "amount": "0.00"}])
        );

        let invoice = price(&plan, &[]).unwrap();
        assert_eq!(amounts(&invoice), ["0.00", "0.00", "0.00", "5.00"]);
        assert_eq!(
            serde_json::to_value(&invoice.functions).unwrap(),
            json!([{"function": null, "amount": "5.00"}])
        );

        let big = [row("a", Arch::X86_64, ["30000000", "0", "0"])];
        assert_eq!(
            amounts(&price(&plan, &big).unwrap()),
            ["5.80", "0.00", "0.00"]
        );
    }

    #[test]
    fn the_minimum_ignores_adjustment_lines() {
        let plan = one_charge("USD", json!({"model": "unit", "unit_price": "1"}), None);
        let plan = Plan::from_value(&{
            let mut v = serde_json::to_value(&plan).unwrap();
            v["minimum_charge"] = json!("10");
            v
        })
        .unwrap();
        let mut lines = rate_lines(&plan, &UsageTotals::new(&requests("4")).unwrap()).unwrap();
        lines.push(InvoiceLine {
            kind: LineKind::Adjustment,
            for_period: Some("2026-09".into()),
            ..lines[0].clone()
        });
        let minimum = minimum_line(&plan, &lines).unwrap().unwrap();
        assert_eq!(minimum.amount.to_string(), "6.00");
        lines.push(minimum);
        assert_eq!(total(plan.currency(), &lines).unwrap().to_string(), "14.00");
    }

    #[test]
    fn lines_count_their_arch_and_functions_share_by_quantity() {
        let plan = Plan::from_value(&json!({"name": "t", "currency": "USD", "charges": [
            {"key": "r", "meter": "requests", "model": "unit", "unit_price": "1"},
            {"key": "arm", "meter": "requests", "arch": "arm64", "model": "unit", "unit_price": "0.01"}]}))
        .unwrap();
        let usage = [
            row("b", Arch::X86_64, ["1", "0", "0"]),
            row("a", Arch::Arm64, ["1", "0", "0"]),
            row("a", Arch::X86_64, ["1", "0", "0"]),
        ];
        let invoice = price(&plan, &usage).unwrap();
        assert_eq!(invoice.lines[0].quantity.unwrap().to_string(), "3");
        assert_eq!(invoice.lines[1].quantity.unwrap().to_string(), "1");
        // r: 3.00 as 2:1; arm: 0.01 all to a.
        assert_eq!(
            serde_json::to_value(&invoice.functions).unwrap(),
            json!([{"function": "a", "amount": "2.01"}, {"function": "b", "amount": "1.00"}])
        );
    }

    #[test]
    fn tier_lines_read_back_only_from_strings() {
        let tier = json!({"up_to": null, "quantity": "3", "unit_price": "0.2", "amount": "0.6"});
        let read: TierLine = serde_json::from_value(tier.clone()).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), tier);
        let float = json!({"up_to": null, "quantity": 3, "unit_price": "0.2", "amount": "0.6"});
        assert!(serde_json::from_value::<TierLine>(float).is_err());
    }

    #[test]
    fn repeated_rows_add_up() {
        let once = price(
            &lambda(),
            &[row("f", Arch::X86_64, ["3000000", "1500000", "3000000"])],
        );
        let split = price(
            &lambda(),
            &[
                row("f", Arch::X86_64, ["1000000", "500000.5", "0"]),
                row("f", Arch::X86_64, ["2000000", "999999.5", "3000000"]),
            ],
        );
        assert_eq!(once, split);
    }
}
