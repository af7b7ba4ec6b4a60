//! Property tests of the pricing models, allowances, the function split and row order.
//!
//! Quantities and prices are kept small enough that `Decimal` computes the expected values
//! exactly, so each property checks the engine against an independent computation.

use proptest::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use super::engine::tests::row;
use super::{Arch, Exact, FunctionBreakdown, InvoiceLine, Plan, UsageRow, allocate, price};

/// A non-negative decimal below `max` with up to `scale` decimals.
fn decimal(max: u64, scale: u32) -> impl Strategy<Value = Decimal> {
    (0..max, 0..=scale).prop_map(|(units, scale)| Decimal::new(units as i64, scale))
}

/// Tiers as `(up_to, unit_price)` with strictly increasing bounds; the last is unbounded.
fn tiers() -> impl Strategy<Value = Vec<(Option<Decimal>, Decimal)>> {
    prop::collection::vec((1u64..5_000, decimal(1_000_000, 6)), 1..5).prop_map(|steps| {
        let last = steps.len() - 1;
        let mut bound = 0;
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (step, price))| {
                bound += step;
                ((i < last).then(|| Decimal::from(bound)), price)
            })
            .collect()
    })
}

fn tiers_json(tiers: &[(Option<Decimal>, Decimal)]) -> Value {
    tiers
        .iter()
        .map(|(up_to, price)| json!({"up_to": up_to.map(|u| u.to_string()), "unit_price": price.to_string()}))
        .collect()
}

/// A pricing model that can never charge less for more (volume can).
fn monotone_model() -> impl Strategy<Value = Value> {
    prop_oneof![
        decimal(1_000_000, 6).prop_map(|p| json!({"model": "unit", "unit_price": p.to_string()})),
        tiers().prop_map(|t| json!({"model": "graduated", "tiers": tiers_json(&t)})),
        (1u64..10_000, decimal(1_000_000, 4)).prop_map(|(size, p)| json!({
            "model": "package", "package_size": size.to_string(), "package_price": p.to_string()
        })),
    ]
}

fn any_model() -> impl Strategy<Value = Value> {
    prop_oneof![
        monotone_model(),
        tiers().prop_map(|t| json!({"model": "volume", "tiers": tiers_json(&t)})),
    ]
}

/// A USD plan with one `requests` charge priced by `model` and a `requests` allowance.
fn plan(model: &Value, allowance: Decimal) -> Plan {
    let mut charge = model.clone();
    charge["key"] = json!("c");
    charge["meter"] = json!("requests");
    Plan::from_value(&json!({
        "name": "p", "currency": "USD",
        "allowances": [{"meter": "requests", "quantity": allowance.to_string()}],
        "charges": [charge]
    }))
    .unwrap()
}

/// The one usage line of a one-charge plan for `quantity` requests.
fn line(plan: &Plan, quantity: Decimal) -> InvoiceLine {
    let usage = [row("f", Arch::X86_64, [&quantity.to_string(), "0", "0"])];
    price(plan, &usage).unwrap().lines.remove(0)
}

fn cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Usage rows over a few functions and both archs.
fn usage_rows() -> impl Strategy<Value = Vec<UsageRow>> {
    let one = (
        prop::sample::select(vec!["a", "b", "c", "d"]),
        prop::bool::ANY,
        decimal(5_000_000, 0),
        decimal(2_000_000, 3),
        decimal(2_000_000, 3),
    )
        .prop_map(|(function, arm, requests, compute, duration)| UsageRow {
            function: function.to_owned(),
            arch: if arm { Arch::Arm64 } else { Arch::X86_64 },
            requests,
            compute,
            duration,
        });
    prop::collection::vec(one, 0..8)
}

/// The SPEC §3 plan with another minimum charge.
fn lambda_with_minimum(minimum: Decimal) -> Plan {
    let mut plan: Value = serde_json::from_str(super::plan::tests::LAMBDA_PLAN).unwrap();
    plan["minimum_charge"] = json!(minimum.to_string());
    Plan::from_value(&plan).unwrap()
}

proptest! {
    #[test]
    fn graduated_is_the_sum_of_its_tiers(tiers in tiers(), quantity in decimal(30_000, 2)) {
        let model = json!({"model": "graduated", "tiers": tiers_json(&tiers)});
        let line = line(&plan(&model, Decimal::ZERO), quantity);
        let mut expected = Decimal::ZERO;
        let mut below = Decimal::ZERO;
        for (up_to, price) in &tiers {
            let top = up_to.map_or(quantity, |u| u.min(quantity));
            expected += (top - below).max(Decimal::ZERO) * price;
            below = below.max(top);
        }
        let detail = line.tiers.iter().try_fold(Exact::ZERO, |sum, t| sum.try_add(t.amount)).unwrap();
        prop_assert_eq!(detail, Exact::from(expected));
        prop_assert_eq!(line.amount, cents(expected));
    }

    #[test]
    fn volume_uses_exactly_one_tier(tiers in tiers(), quantity in decimal(30_000, 2)) {
        prop_assume!(!quantity.is_zero());
        let model = json!({"model": "volume", "tiers": tiers_json(&tiers)});
        let line = line(&plan(&model, Decimal::ZERO), quantity);
        let (up_to, price) = tiers.iter().find(|(u, _)| u.is_none_or(|u| quantity <= u)).unwrap();
        prop_assert_eq!(line.tiers.len(), 1);
        prop_assert_eq!(line.tiers[0].up_to, *up_to);
        prop_assert_eq!(line.tiers[0].unit_price, *price);
        prop_assert_eq!(line.amount, cents(quantity * price));
    }

    #[test]
    fn more_usage_never_costs_less(
        model in monotone_model(),
        allowance in decimal(20_000, 1),
        quantity in decimal(30_000, 2),
        more in decimal(30_000, 2),
    ) {
        let plan = plan(&model, allowance);
        prop_assert!(line(&plan, quantity).amount <= line(&plan, quantity + more).amount);
    }

    #[test]
    fn an_allowance_never_makes_a_line_negative(
        model in any_model(),
        allowance in decimal(40_000, 2),
        quantity in decimal(30_000, 2),
    ) {
        let line = line(&plan(&model, allowance), quantity);
        let applied = line.allowance.unwrap();
        prop_assert!(line.amount >= Decimal::ZERO);
        prop_assert_eq!(applied, allowance.min(quantity));
        prop_assert!(line.tiers.iter().all(|t| t.quantity > Decimal::ZERO && !t.amount.is_negative()));
    }

    #[test]
    fn the_function_split_sums_to_each_line_and_to_the_total(
        usage in usage_rows(),
        minimum in decimal(10_000, 2),
    ) {
        let invoice = price(&lambda_with_minimum(minimum), &usage).unwrap();
        let split: Decimal = invoice.functions.iter().map(|f| f.amount).sum();
        prop_assert_eq!(split, invoice.total);
        prop_assert_eq!(invoice.total, invoice.lines.iter().map(|l| l.amount).sum::<Decimal>());
        prop_assert!(invoice.total >= minimum);

        let totals = super::UsageTotals::new(&usage).unwrap();
        for line in &invoice.lines[..3] {
            let mut one = FunctionBreakdown::new(invoice.currency, totals.functions());
            one.add(line.amount, &totals.by_function(line.meter.unwrap(), line.arch).unwrap()).unwrap();
            let sum: Decimal = one.finish().unwrap().iter().map(|f| f.amount).sum();
            prop_assert_eq!(sum, line.amount);
        }
    }

    #[test]
    fn shares_are_within_one_unit_of_their_exact_proportion(
        amount in -1_000_000i64..1_000_000,
        weights in prop::collection::vec(decimal(1_000_000, 3), 1..6),
    ) {
        let total: Decimal = weights.iter().sum();
        prop_assume!(!total.is_zero());
        let keyed: Vec<(usize, Exact)> = weights.iter().map(|w| Exact::from(*w)).enumerate().collect();
        let shares = allocate(i128::from(amount), &keyed).unwrap();
        prop_assert_eq!(shares.iter().sum::<i128>(), i128::from(amount));
        for (share, weight) in shares.iter().zip(&weights) {
            let exact = Decimal::from(amount) * weight / total;
            prop_assert!((Decimal::from(*share) - exact).abs() < Decimal::ONE);
        }
    }

    #[test]
    fn row_order_does_not_matter(
        (usage, shuffled) in usage_rows().prop_flat_map(|rows| (Just(rows.clone()), Just(rows).prop_shuffle())),
        minimum in decimal(10_000, 2),
    ) {
        let plan = lambda_with_minimum(minimum);
        prop_assert_eq!(price(&plan, &usage), price(&plan, &shuffled));
    }
}
