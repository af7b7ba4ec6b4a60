//! Building an invoice: the period's usage priced by its plan, the minimum top-up, and
//! adjustment lines for late usage of earlier, finalized periods. Pure: the database reads
//! and writes are in `billing::store`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::period::{format_period, next_period, period_start_instant};
use crate::metering::usage::{count, gb_seconds, seconds};
use crate::rating::{
    self, Arch, Currency, FunctionAmount, FunctionBreakdown, InvoiceLine, LineKind, Plan, UsageRow,
    UsageTotals, minimum_line, rate_lines,
};

/// Exact usage of one function and arch in a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: i128,
    pub billed_ms: i128,
    pub mb_ms: i128,
}

/// A period's usage per (function, arch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodUsage(pub BTreeMap<(String, Arch), Counters>);

impl PeriodUsage {
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|c| *c == Counters::default())
    }

    /// What is in `self` but not yet in `billed`: the late usage. Buckets only grow, so a
    /// negative difference means the books are inconsistent, and that is an error.
    pub fn minus(&self, billed: &PeriodUsage) -> anyhow::Result<PeriodUsage> {
        let mut late = BTreeMap::new();
        for (key, now) in &self.0 {
            let before = billed.0.get(key).copied().unwrap_or_default();
            let diff = Counters {
                requests: now.requests - before.requests,
                billed_ms: now.billed_ms - before.billed_ms,
                mb_ms: now.mb_ms - before.mb_ms,
            };
            anyhow::ensure!(
                diff.requests >= 0 && diff.billed_ms >= 0 && diff.mb_ms >= 0,
                "billed usage exceeds recorded usage for {key:?}"
            );
            if diff != Counters::default() {
                late.insert(key.clone(), diff);
            }
        }
        anyhow::ensure!(
            billed.0.keys().all(|k| self.0.contains_key(k)),
            "billed usage names a function with no recorded usage"
        );
        Ok(PeriodUsage(late))
    }

    /// The usage as the rate engine's rows (requests, GB-s, seconds).
    pub fn rows(&self) -> anyhow::Result<Vec<UsageRow>> {
        self.0
            .iter()
            .map(|((function, arch), c)| {
                Ok(UsageRow {
                    function: function.clone(),
                    arch: *arch,
                    requests: count(c.requests)?,
                    compute: gb_seconds(c.mb_ms)?,
                    duration: seconds(c.billed_ms)?,
                })
            })
            .collect()
    }

    fn totals(&self) -> anyhow::Result<UsageTotals> {
        Ok(UsageTotals::new(&self.rows()?)?)
    }
}

/// An earlier period that was finalized, with what has been recorded and billed for it.
#[derive(Debug, Clone)]
pub struct ClosedPeriod {
    pub period: NaiveDate,
    /// The plan version that priced (or, if never billed, prices) the period.
    pub plan: Plan,
    pub usage_now: PeriodUsage,
    pub billed_usage: PeriodUsage,
    /// The amounts billed so far for the period, per charge key (`None`: the minimum).
    pub billed_amounts: BTreeMap<Option<String>, Decimal>,
}

/// A priced invoice and what it bills, ready to be shown as a draft or stored.
#[derive(Debug, Clone)]
pub struct BuiltInvoice {
    pub currency: Currency,
    pub lines: Vec<InvoiceLine>,
    pub functions: Vec<FunctionAmount>,
    pub total: Decimal,
    /// The usage this invoice bills, per period it bills (its own in full, earlier ones' late
    /// parts).
    pub billed_usage: Vec<(NaiveDate, PeriodUsage)>,
    /// The amount each line bills, with the period it is for and its charge key.
    pub billed_charges: Vec<BilledCharge>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledCharge {
    pub for_period: NaiveDate,
    pub kind: LineKind,
    pub charge: Option<String>,
    pub amount: Decimal,
}

impl BuiltInvoice {
    /// A finalized invoice is only made when it bills something: usage of its own period, a
    /// minimum, or an adjustment.
    pub fn bills_anything(&self, own_usage: &PeriodUsage) -> bool {
        !own_usage.is_empty() || self.lines.iter().any(|l| l.kind != LineKind::Usage)
    }
}

/// Prices `period` for a tenant: its usage under `plan`, the minimum (when `owes_minimum`:
/// the tenant existed during the period), and adjustments for each closed period whose usage
/// grew since it was billed.
pub fn build_invoice(
    plan: &Plan,
    usage: &PeriodUsage,
    period: NaiveDate,
    closed: &[ClosedPeriod],
    owes_minimum: bool,
) -> anyhow::Result<BuiltInvoice> {
    let currency = plan.currency();
    let totals = usage.totals()?;
    let mut lines = rate_lines(plan, &totals)?;

    let mut late_by_period = Vec::new();
    let mut functions: BTreeSet<String> = totals.functions().into_iter().collect();
    for c in closed {
        if c.plan.currency() != currency {
            // Amounts in two currencies cannot share an invoice: the adjustment waits for
            // the tenant's next invoice in the period's currency.
            tracing::warn!(period = %format_period(c.period), "late usage priced in another currency is deferred");
            continue;
        }
        let late = c.usage_now.minus(&c.billed_usage)?;
        if !late.is_empty() {
            functions.extend(late.0.keys().map(|(f, _)| f.clone()));
            late_by_period.push((c, late));
        }
    }

    let mut breakdown = FunctionBreakdown::new(currency, functions);
    let mut billed_charges = Vec::new();
    for (charge, line) in plan.charges().iter().zip(&lines) {
        breakdown.add(
            line.amount,
            &totals.by_function(charge.meter(), charge.arch())?,
        )?;
        billed_charges.push(BilledCharge {
            for_period: period,
            kind: LineKind::Usage,
            charge: Some(charge.key().to_owned()),
            amount: line.amount,
        });
    }
    if let Some(minimum) = minimum_line(plan, &lines)?.filter(|_| owes_minimum) {
        breakdown.add_in_proportion(minimum.amount)?;
        billed_charges.push(BilledCharge {
            for_period: period,
            kind: LineKind::Minimum,
            charge: None,
            amount: minimum.amount,
        });
        lines.push(minimum);
    }

    let mut billed_usage = vec![(period, usage.clone())];
    for (closed, late) in late_by_period {
        let label = format_period(closed.period);
        let rerated = rate_lines(&closed.plan, &closed.usage_now.totals()?)?;
        let late_totals = late.totals()?;
        let billed = |key: Option<&str>| {
            closed
                .billed_amounts
                .get(&key.map(str::to_owned))
                .copied()
                .unwrap_or_default()
        };
        for (charge, line) in closed.plan.charges().iter().zip(&rerated) {
            let amount = line.amount - billed(Some(charge.key()));
            if amount.is_zero() {
                continue;
            }
            let quantity = late_totals
                .quantity(charge.meter(), charge.arch())?
                .to_decimal()?;
            breakdown.add(
                amount,
                &late_totals.by_function(charge.meter(), charge.arch())?,
            )?;
            billed_charges.push(BilledCharge {
                for_period: closed.period,
                kind: LineKind::Adjustment,
                charge: Some(charge.key().to_owned()),
                amount,
            });
            lines.push(InvoiceLine {
                kind: LineKind::Adjustment,
                quantity: Some(quantity),
                allowance: None,
                amount,
                for_period: Some(label.clone()),
                tiers: Vec::new(),
                ..line.clone()
            });
        }
        let minimum_now = minimum_line(&closed.plan, &rerated)?.map_or(Decimal::ZERO, |l| l.amount);
        let minimum = currency_amount(currency, minimum_now - billed(None))?;
        if !minimum.is_zero() {
            breakdown.add_in_proportion(minimum)?;
            billed_charges.push(BilledCharge {
                for_period: closed.period,
                kind: LineKind::Adjustment,
                charge: None,
                amount: minimum,
            });
            lines.push(InvoiceLine {
                kind: LineKind::Adjustment,
                charge: None,
                meter: None,
                arch: None,
                quantity: None,
                allowance: None,
                unit: None,
                amount: minimum,
                for_period: Some(label.clone()),
                tiers: Vec::new(),
            });
        }
        billed_usage.push((closed.period, late));
    }

    Ok(BuiltInvoice {
        currency,
        total: rating::total(currency, &lines)?,
        functions: breakdown.finish()?,
        lines,
        billed_usage,
        billed_charges,
    })
}

/// An amount with exactly the currency's minor digits.
fn currency_amount(currency: Currency, amount: Decimal) -> anyhow::Result<Decimal> {
    Ok(currency.from_minor(currency.to_minor(amount)?)?)
}

/// An invoice as the API serves it (SPEC §4).
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceDocument {
    pub id: Option<uuid::Uuid>,
    pub number: Option<String>,
    pub tenant: String,
    pub status: &'static str,
    pub period: PeriodRange,
    pub currency: Currency,
    pub plan: PlanRef,
    pub lines: Vec<InvoiceLine>,
    pub functions: Vec<FunctionAmount>,
    pub total: Decimal,
    pub finalized_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl PeriodRange {
    pub fn of(period: NaiveDate) -> PeriodRange {
        PeriodRange {
            start: period_start_instant(period),
            end: period_start_instant(next_period(period)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanRef {
    pub id: String,
    pub version: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_usage_is_the_difference_and_never_negative() {
        let key = ("f".to_owned(), Arch::X86_64);
        let now = PeriodUsage(
            [(
                key.clone(),
                Counters {
                    requests: 5,
                    billed_ms: 50,
                    mb_ms: 500,
                },
            )]
            .into(),
        );
        let billed = PeriodUsage(
            [(
                key.clone(),
                Counters {
                    requests: 3,
                    billed_ms: 30,
                    mb_ms: 300,
                },
            )]
            .into(),
        );
        let late = now.minus(&billed).unwrap();
        assert_eq!(
            late.0[&key],
            Counters {
                requests: 2,
                billed_ms: 20,
                mb_ms: 200
            }
        );
        assert!(billed.minus(&now).is_err());
        assert!(now.minus(&now).unwrap().is_empty());
    }
}
