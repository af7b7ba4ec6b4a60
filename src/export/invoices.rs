//! `invoice-lines.csv` and `function-costs.csv`: the finalized invoices of a period, read from
//! their stored documents one invoice at a time, so every figure is the invoice's own text
//! (`"0.40"`, `"-1.20"`), exactly as the API serves it.

use std::borrow::Cow;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use serde::Deserialize;
use sqlx::PgConnection;

use super::{Cell, CsvOut, Stop};
use crate::billing::period::format_period;

pub const INVOICE_LINES_HEADER: &[&str] = &[
    "invoice_number",
    "tenant",
    "period",
    "currency",
    "line_kind",
    "charge",
    "meter",
    "arch",
    "for_period",
    "quantity",
    "unit",
    "amount",
    "invoice_total",
    "finalized_at",
];

pub const FUNCTION_COSTS_HEADER: &[&str] = &[
    "invoice_number",
    "tenant",
    "period",
    "function",
    "currency",
    "amount",
];

/// The parts of a stored invoice document the exports show, borrowed from its text.
#[derive(Deserialize)]
pub(super) struct StoredInvoice<'a> {
    #[serde(borrow)]
    currency: Cow<'a, str>,
    #[serde(borrow)]
    total: Cow<'a, str>,
    #[serde(deserialize_with = "whole_seconds")]
    finalized_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    lines: Vec<StoredLine<'a>>,
    #[serde(borrow)]
    functions: Vec<StoredFunctionAmount<'a>>,
}

/// An instant as RFC 3339 in whole seconds, UTC (`2026-11-01T00:05:00Z`), which spreadsheets
/// read as a time; invoices finalized before whole seconds were kept carry nanoseconds.
fn whole_seconds<'de, D>(deserializer: D) -> Result<Option<Cow<'static, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let at: Option<DateTime<Utc>> = Option::deserialize(deserializer)?;
    Ok(at.map(|at| Cow::Owned(at.to_rfc3339_opts(SecondsFormat::Secs, true))))
}

#[derive(Deserialize)]
struct StoredLine<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    charge: Option<Cow<'a, str>>,
    #[serde(borrow)]
    meter: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arch: Option<Cow<'a, str>>,
    #[serde(borrow)]
    for_period: Option<Cow<'a, str>>,
    #[serde(borrow)]
    quantity: Option<Cow<'a, str>>,
    #[serde(borrow)]
    unit: Option<Cow<'a, str>>,
    #[serde(borrow)]
    amount: Cow<'a, str>,
}

#[derive(Deserialize)]
struct StoredFunctionAmount<'a> {
    #[serde(borrow)]
    function: Option<Cow<'a, str>>,
    #[serde(borrow)]
    amount: Cow<'a, str>,
}

/// The invoices of `period` in export order: tenant by code point (the column's collation is
/// "C"), then invoice number (its sequence), each handed over with its parsed document.
pub(super) async fn write_invoices(
    conn: &mut PgConnection,
    period: NaiveDate,
    out: &mut CsvOut,
    rows_of: RowsOf,
) -> Result<(), Stop> {
    let label = format_period(period);
    let mut invoices = sqlx::query_as::<_, (String, String, String)>(
        "SELECT number, tenant, document FROM invoices WHERE period = $1 ORDER BY tenant, seq",
    )
    .bind(period)
    .fetch(conn);
    while let Some((number, tenant, document)) = invoices.try_next().await? {
        let parsed: StoredInvoice<'_> = serde_json::from_str(&document)
            .with_context(|| format!("invoice {number} holds a malformed document"))?;
        let head = InvoiceHead {
            number: &number,
            tenant: &tenant,
            period: &label,
        };
        for row in rows_of(&head, &parsed) {
            out.row(&row).await?;
        }
    }
    Ok(())
}

/// The rows one invoice contributes to an export.
type RowsOf = for<'d> fn(&'d InvoiceHead<'d>, &'d StoredInvoice<'d>) -> Vec<Vec<Cell<'d>>>;

pub(super) struct InvoiceHead<'a> {
    number: &'a str,
    tenant: &'a str,
    period: &'a str,
}

/// invoice-lines.csv: one row per line, the invoice's total and finalization repeated.
pub(super) fn line_rows<'d>(
    head: &'d InvoiceHead<'d>,
    invoice: &'d StoredInvoice<'d>,
) -> Vec<Vec<Cell<'d>>> {
    let rows = invoice.lines.iter().map(|line| {
        vec![
            Cell::Text(head.number),
            Cell::Text(head.tenant),
            Cell::Text(head.period),
            Cell::Text(&invoice.currency),
            Cell::Text(&line.kind),
            Cell::text_or_empty(line.charge.as_deref()),
            Cell::text_or_empty(line.meter.as_deref()),
            Cell::text_or_empty(line.arch.as_deref()),
            Cell::text_or_empty(line.for_period.as_deref()),
            Cell::number_or_empty(line.quantity.as_deref()),
            Cell::text_or_empty(line.unit.as_deref()),
            Cell::Number(&line.amount),
            Cell::Number(&invoice.total),
            Cell::text_or_empty(invoice.finalized_at.as_deref()),
        ]
    });
    rows.collect()
}

/// function-costs.csv: one row per function's share (an empty function for a share no
/// function caused).
pub(super) fn cost_rows<'d>(
    head: &'d InvoiceHead<'d>,
    invoice: &'d StoredInvoice<'d>,
) -> Vec<Vec<Cell<'d>>> {
    let rows = invoice.functions.iter().map(|share| {
        vec![
            Cell::Text(head.number),
            Cell::Text(head.tenant),
            Cell::Text(head.period),
            Cell::text_or_empty(share.function.as_deref()),
            Cell::Text(&invoice.currency),
            Cell::Number(&share.amount),
        ]
    });
    rows.collect()
}
