//! Invoices in the database: drafts computed on demand, finalization (by hand or by the
//! finalizer task), and reading finalized invoices back.
//!
//! Finalizing a tenant's period is one transaction that first locks the tenant's row, so
//! two finalizers (of the same or different periods) never bill the same late usage twice,
//! and that takes the next invoice number from a single locked counter row just before it
//! commits, so numbers have no gaps. What an invoice billed (usage per period, function and
//! arch; amounts per period and charge) is stored beside it; late usage is what the
//! buckets hold beyond that.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use super::invoice::{
    BuiltInvoice, ClosedPeriod, Counters, InvoiceDocument, PeriodRange, PeriodUsage, PlanRef,
    build_invoice,
};
use super::period::{format_period, next_period, period_start, period_start_instant};
use super::plans::{load_plan, plan_id_for_period};
use crate::rating::{Arch, Plan};

/// How the billing code is configured.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    pub invoice_prefix: String,
    pub grace_period: chrono::Duration,
    /// How many periods back late usage can reach (from `metering.max_event_age_days`).
    pub lookback_periods: u32,
}

impl BillingConfig {
    pub fn from_settings(s: &crate::config::Settings) -> BillingConfig {
        BillingConfig {
            invoice_prefix: s.billing.invoice_prefix.clone(),
            grace_period: chrono::Duration::seconds(s.billing.grace_period_secs as i64),
            // An event may be max_event_age_days old, so a period can receive late usage until
            // that long after it ends: months of 28 days, rounded up, plus the period itself.
            lookback_periods: s.metering.max_event_age_days.div_ceil(28) + 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    #[error("the period {0} has not ended yet")]
    NotEnded(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The result of finalizing a period.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FinalizeOutcome {
    pub period: String,
    /// Invoice numbers created by this call (also of tenants' earlier periods it caught up).
    pub created: Vec<String>,
    /// Invoices of the period that existed before this call.
    pub existing: u64,
}

/// The open period's invoice as it stands now.
pub async fn draft(
    pool: &PgPool,
    config: &BillingConfig,
    tenant: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<InvoiceDocument> {
    let period = period_start(now);
    let mut conn = pool.acquire().await?;
    let (plan_id, version, plan) = plan_for(&mut conn, tenant, period).await?;
    let usage = period_usage(&mut conn, tenant, period).await?;
    let closed = closed_periods(&mut conn, config, tenant, period).await?;
    let built = build_invoice(&plan, &usage, period, &closed, true)?;
    Ok(document(
        None,
        None,
        tenant,
        period,
        PlanRef {
            id: plan_id,
            version,
        },
        built,
        None,
    ))
}

/// Drafts already computed, each with the stamp of the data it was computed from.
///
/// A draft depends on the tenant's usage (every transaction that adds usage bumps the
/// tenant's `usage_versions`, so their sum changes whenever any of its usage does; a few
/// rows to read, where summing the monthly buckets meant ~2,000 for a tenant with 1,000
/// functions), on what was billed for closed periods, on which
/// periods are finalized, and on plans and plan assignments. The stamp reads all of these in
/// one query; a cached draft is served only while its stamp is unchanged, so it is always
/// the draft "as the buckets are now".
#[derive(Default)]
pub struct DraftCache {
    drafts: std::sync::Mutex<std::collections::HashMap<String, (String, bytes::Bytes)>>,
}

/// Most tenants whose drafts are kept; past this the cache starts over.
const DRAFT_CACHE_TENANTS: usize = 10_000;

impl DraftCache {
    /// The tenant's draft as JSON, computed or from the cache; `None` for an unknown tenant.
    pub async fn draft_json(
        &self,
        pool: &PgPool,
        config: &BillingConfig,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<bytes::Bytes>> {
        let period = period_start(now);
        let earliest = period
            .checked_sub_months(chrono::Months::new(config.lookback_periods))
            .context("period out of range")?;
        let stamp: Option<(String,)> = sqlx::query_as(
            "SELECT concat_ws('|', $2::date,
                 (SELECT sum(version) FROM usage_versions WHERE tenant = $1),
                 (SELECT sum(requests) FROM invoice_usage WHERE tenant = $1 AND for_period >= $3),
                 (SELECT count(*) || '/' || count(completed_at) || '/' || max(period)
                  FROM finalized_periods WHERE period >= $3),
                 (SELECT count(*) FROM tenant_finalizations WHERE tenant = $1 AND period >= $3),
                 (SELECT count(*) || '/' || max(created_at) FROM tenant_plans WHERE tenant = $1),
                 (SELECT count(*) || '/' || max(created_at) FROM plans))
             FROM tenants WHERE id = $1",
        )
        .bind(tenant)
        .bind(period)
        .bind(earliest)
        .fetch_optional(pool)
        .await
        .context("read the draft's stamp")?;
        let Some((stamp,)) = stamp else {
            return Ok(None);
        };
        if let Some((cached, json)) = self.drafts.lock().expect("draft cache").get(tenant)
            && *cached == stamp
        {
            return Ok(Some(json.clone()));
        }
        let json = bytes::Bytes::from(serde_json::to_vec(
            &draft(pool, config, tenant, now).await?,
        )?);
        let mut drafts = self.drafts.lock().expect("draft cache");
        if drafts.len() >= DRAFT_CACHE_TENANTS {
            drafts.clear();
        }
        drafts.insert(tenant.to_owned(), (stamp, json.clone()));
        Ok(Some(json))
    }
}

/// Finalizes `period` for every tenant that has something to bill; idempotent.
///
/// Each tenant is finalized under its row lock, and first catches up its earlier periods
/// whose finalization has begun (by any process) but not reached it yet, oldest first (see
/// `finalize_tenant`): however many periods are finalized at once, in whatever order, each
/// gets its own invoice.
#[tracing::instrument(skip_all, fields(period = %format_period(period)))]
pub async fn finalize_period(
    pool: &PgPool,
    config: &BillingConfig,
    period: NaiveDate,
    now: DateTime<Utc>,
) -> Result<FinalizeOutcome, FinalizeError> {
    let end = period_start_instant(next_period(period));
    if end > now {
        return Err(FinalizeError::NotEnded(format_period(period)));
    }
    sqlx::query("INSERT INTO finalized_periods (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(period)
        .execute(pool)
        .await
        .context("mark the period")?;
    let tenants: Vec<(String,)> = sqlx::query_as("SELECT id FROM tenants ORDER BY id")
        .fetch_all(pool)
        .await
        .context("list tenants")?;
    let mut outcome = FinalizeOutcome {
        period: format_period(period),
        ..FinalizeOutcome::default()
    };
    for (tenant,) in tenants {
        let done = finalize_tenant(pool, config, &tenant, period, now).await?;
        outcome.created.extend(done.created);
        outcome.existing += u64::from(done.existed);
    }
    sqlx::query(
        "UPDATE finalized_periods SET completed_at = $2 WHERE period = $1 AND completed_at IS NULL",
    )
    .bind(period)
    .bind(now)
    .execute(pool)
    .await
    .context("mark the period complete")?;
    if !outcome.created.is_empty() {
        tracing::info!(created = outcome.created.len(), "finalized invoices");
    }
    Ok(outcome)
}

/// What finalizing one tenant's period did.
struct TenantFinalized {
    /// Invoice numbers created, the caught-up earlier periods' first.
    created: Vec<String>,
    /// The period's invoice existed before.
    existed: bool,
}

/// A period is closed for a tenant once the tenant's own finalization of it is recorded, or
/// once the period's finalization has completed (it went through every tenant that existed;
/// one created since had nothing to bill then). `$1` is the tenant, `f` the period's
/// `finalized_periods` row.
macro_rules! closed_for_tenant {
    () => {
        "(f.completed_at IS NOT NULL OR EXISTS (
          SELECT 1 FROM tenant_finalizations tf WHERE tf.tenant = $1 AND tf.period = f.period))"
    };
}

/// Finalizes the tenant's `period`, after the tenant's earlier periods whose finalization has
/// begun but not reached it, oldest first: one transaction per period, each under the
/// tenant's row lock. So when an invoice treats an earlier period as closed (and bills its
/// later usage as adjustments), that period was finalized for the tenant first, on its own
/// invoice if it had something to bill, and an adjustment bills only usage that arrived
/// after that.
async fn finalize_tenant(
    pool: &PgPool,
    config: &BillingConfig,
    tenant: &str,
    period: NaiveDate,
    now: DateTime<Utc>,
) -> anyhow::Result<TenantFinalized> {
    let earliest = period
        .checked_sub_months(chrono::Months::new(config.lookback_periods))
        .context("period out of range")?;
    let mut created = Vec::new();
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .context("lock the tenant")?;
        let pending: Option<(NaiveDate,)> = sqlx::query_as(concat!(
            "SELECT f.period FROM finalized_periods f
             WHERE f.period >= $2 AND f.period <= $3 AND NOT ",
            closed_for_tenant!(),
            " ORDER BY f.period LIMIT 1"
        ))
        .bind(tenant)
        .bind(earliest)
        .bind(period)
        .fetch_optional(&mut *tx)
        .await
        .context("find the tenant's next period to finalize")?;
        let Some((next,)) = pending else {
            // Done before: by another process, or as a period that completed before the
            // tenant existed.
            let existed = sqlx::query_as::<_, (i32,)>(
                "SELECT 1 FROM invoices WHERE tenant = $1 AND period = $2",
            )
            .bind(tenant)
            .bind(period)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            return Ok(TenantFinalized { created, existed });
        };
        let number = finalize_tenant_period(&mut tx, config, tenant, next, now).await?;
        tx.commit().await.context("commit the finalization")?;
        created.extend(number);
        if next == period {
            return Ok(TenantFinalized {
                created,
                existed: false,
            });
        }
    }
}

/// Finalizes one period of a tenant whose row the transaction holds locked, and whose earlier
/// begun periods are finalized: records the finalization, and the invoice if there is
/// something to bill (returning its number).
async fn finalize_tenant_period(
    tx: &mut PgConnection,
    config: &BillingConfig,
    tenant: &str,
    period: NaiveDate,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    // Seconds are what the invoice, its list and the CSV exports show.
    let finalized_at = now.max(Utc::now()).trunc_subsecs(0);
    sqlx::query(
        "INSERT INTO tenant_finalizations (tenant, period, finalized_at) VALUES ($1, $2, $3)",
    )
    .bind(tenant)
    .bind(period)
    .bind(finalized_at)
    .execute(&mut *tx)
    .await
    .context("record the finalization")?;
    // Any tenant may owe something: usage (also late usage that created it), adjustments,
    // or a minimum if it was on a plan for the period (assigned from the period or earlier;
    // a tenant created on first use is assigned from its first period); those with nothing
    // to bill get no invoice.
    let (on_plan,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM tenant_plans WHERE tenant = $1 AND effective_from <= $2)",
    )
    .bind(tenant)
    .bind(period)
    .fetch_one(&mut *tx)
    .await
    .context("read the tenant's plan assignments")?;
    let (plan_id, version, plan) = plan_for(&mut *tx, tenant, period).await?;
    let usage = period_usage(&mut *tx, tenant, period).await?;
    let closed = closed_periods(&mut *tx, config, tenant, period).await?;
    let owes_minimum = on_plan || !usage.is_empty();
    let built = build_invoice(&plan, &usage, period, &closed, owes_minimum)?;
    if !built.bills_anything(&usage) {
        return Ok(None);
    }

    let (seq,): (i64,) =
        sqlx::query_as("UPDATE invoice_counter SET last = last + 1 RETURNING last")
            .fetch_one(&mut *tx)
            .await
            .context("take an invoice number")?;
    let number = format!("{}-{seq:08}", config.invoice_prefix);
    let id = uuid::Uuid::new_v4();
    let doc = document(
        Some(id),
        Some(number.clone()),
        tenant,
        period,
        PlanRef {
            id: plan_id.clone(),
            version,
        },
        built.clone(),
        Some(finalized_at),
    );
    let text = serde_json::to_string(&doc).context("serialize the invoice")?;
    sqlx::query(
        "INSERT INTO invoices (id, seq, number, tenant, period, currency, plan_id, plan_version,
                               total, document, finalized_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(seq)
    .bind(&number)
    .bind(tenant)
    .bind(period)
    .bind(built.currency.as_str())
    .bind(&plan_id)
    .bind(version)
    .bind(built.total)
    .bind(&text)
    .bind(finalized_at)
    .execute(&mut *tx)
    .await
    .context("insert the invoice")?;
    insert_billed(&mut *tx, id, tenant, &built).await?;
    Ok(Some(number))
}

async fn insert_billed(
    tx: &mut PgConnection,
    invoice: uuid::Uuid,
    tenant: &str,
    built: &BuiltInvoice,
) -> anyhow::Result<()> {
    let (mut periods, mut functions, mut archs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut requests, mut billed_ms, mut mb_ms) = (Vec::new(), Vec::new(), Vec::new());
    for (period, usage) in &built.billed_usage {
        for ((function, arch), c) in &usage.0 {
            periods.push(*period);
            functions.push(function.as_str());
            archs.push(arch.as_str());
            requests.push(i64::try_from(c.requests).context("requests overflow")?);
            billed_ms.push(c.billed_ms.to_string());
            mb_ms.push(c.mb_ms.to_string());
        }
    }
    sqlx::query(
        "INSERT INTO invoice_usage (invoice_id, tenant, for_period, function, arch, requests, billed_ms, mb_ms)
         SELECT $1, $2, * FROM unnest($3::date[], $4::text[], $5::text[], $6::int8[], $7::numeric[], $8::numeric[])",
    )
    .bind(invoice)
    .bind(tenant)
    .bind(&periods)
    .bind(&functions)
    .bind(&archs)
    .bind(&requests)
    .bind(&billed_ms)
    .bind(&mb_ms)
    .execute(&mut *tx)
    .await
    .context("record the billed usage")?;
    let charges = &built.billed_charges;
    sqlx::query(
        "INSERT INTO invoice_charges (invoice_id, tenant, for_period, line_no, kind, charge, amount)
         SELECT $1, $2, * FROM unnest($3::date[], $4::int4[], $5::text[], $6::text[], $7::numeric[])",
    )
    .bind(invoice)
    .bind(tenant)
    .bind(charges.iter().map(|c| c.for_period).collect::<Vec<_>>())
    .bind((1..=charges.len() as i32).collect::<Vec<_>>())
    .bind(charges.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>())
    .bind(charges.iter().map(|c| c.charge.clone()).collect::<Vec<_>>())
    .bind(charges.iter().map(|c| c.amount).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .context("record the billed amounts")?;
    Ok(())
}

fn document(
    id: Option<uuid::Uuid>,
    number: Option<String>,
    tenant: &str,
    period: NaiveDate,
    plan: PlanRef,
    built: BuiltInvoice,
    finalized_at: Option<DateTime<Utc>>,
) -> InvoiceDocument {
    InvoiceDocument {
        status: if number.is_some() {
            "finalized"
        } else {
            "draft"
        },
        id,
        number,
        tenant: tenant.to_owned(),
        period: PeriodRange::of(period),
        currency: built.currency,
        plan,
        lines: built.lines,
        functions: built.functions,
        total: built.total,
        finalized_at,
    }
}

/// The plan in force for a tenant's period, at its latest version.
async fn plan_for(
    conn: &mut PgConnection,
    tenant: &str,
    period: NaiveDate,
) -> anyhow::Result<(String, i32, Plan)> {
    let plan_id = plan_id_for_period(&mut *conn, tenant, period)
        .await?
        .with_context(|| format!("tenant {tenant} has no plan"))?;
    let (version, plan) = load_plan(&mut *conn, &plan_id, None)
        .await?
        .with_context(|| format!("plan {plan_id} does not exist"))?;
    Ok((plan_id, version, plan))
}

type UsageRowText = (String, String, i64, String, String);

fn usage_from_rows(rows: Vec<UsageRowText>) -> anyhow::Result<PeriodUsage> {
    let mut usage = BTreeMap::new();
    for (function, arch, requests, billed_ms, mb_ms) in rows {
        let arch: Arch = arch.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        usage.insert(
            (function, arch),
            Counters {
                requests: i128::from(requests),
                billed_ms: billed_ms.parse().context("billed_ms")?,
                mb_ms: mb_ms.parse().context("mb_ms")?,
            },
        );
    }
    Ok(PeriodUsage(usage))
}

async fn period_usage(
    conn: &mut PgConnection,
    tenant: &str,
    period: NaiveDate,
) -> anyhow::Result<PeriodUsage> {
    let rows: Vec<UsageRowText> = sqlx::query_as(crate::metering::rollup::PERIOD_USAGE)
        .bind(tenant)
        .bind(period)
        .bind(period_start_instant(period))
        .bind(period_start_instant(next_period(period)))
        .fetch_all(&mut *conn)
        .await
        .context("read the period's usage")?;
    usage_from_rows(rows)
}

/// Earlier periods closed for the tenant that late usage can still reach, with what was
/// billed.
async fn closed_periods(
    conn: &mut PgConnection,
    config: &BillingConfig,
    tenant: &str,
    period: NaiveDate,
) -> anyhow::Result<Vec<ClosedPeriod>> {
    let earliest = period
        .checked_sub_months(chrono::Months::new(config.lookback_periods))
        .context("period out of range")?;
    let periods: Vec<(NaiveDate,)> = sqlx::query_as(concat!(
        "SELECT f.period FROM finalized_periods f WHERE f.period < $2 AND f.period >= $3 AND ",
        closed_for_tenant!(),
        " ORDER BY f.period"
    ))
    .bind(tenant)
    .bind(period)
    .bind(earliest)
    .fetch_all(&mut *conn)
    .await?;
    let mut closed = Vec::new();
    for (p,) in periods {
        let usage_now = period_usage(conn, tenant, p).await?;
        if usage_now.is_empty() {
            continue;
        }
        let billed: Vec<UsageRowText> = sqlx::query_as(
            "SELECT function, arch, sum(requests)::int8, sum(billed_ms)::text, sum(mb_ms)::text
             FROM invoice_usage WHERE tenant = $1 AND for_period = $2 GROUP BY 1, 2",
        )
        .bind(tenant)
        .bind(p)
        .fetch_all(&mut *conn)
        .await?;
        let billed_usage = usage_from_rows(billed)?;
        if billed_usage == usage_now {
            continue;
        }
        let amounts: Vec<(Option<String>, Decimal)> = sqlx::query_as(
            "SELECT charge, sum(amount) FROM invoice_charges
             WHERE tenant = $1 AND for_period = $2 GROUP BY charge",
        )
        .bind(tenant)
        .bind(p)
        .fetch_all(&mut *conn)
        .await?;
        // Re-rate with the plan version the period was invoiced with; never invoiced, with
        // the plan in force for it now.
        let invoiced: Option<(String, i32)> = sqlx::query_as(
            "SELECT plan_id, plan_version FROM invoices WHERE tenant = $1 AND period = $2",
        )
        .bind(tenant)
        .bind(p)
        .fetch_optional(&mut *conn)
        .await?;
        let plan = match invoiced {
            Some((id, version)) => {
                load_plan(&mut *conn, &id, Some(version))
                    .await?
                    .with_context(|| format!("plan {id} v{version} vanished"))?
                    .1
            }
            None => plan_for(conn, tenant, p).await?.2,
        };
        closed.push(ClosedPeriod {
            period: p,
            plan,
            usage_now,
            billed_usage,
            billed_amounts: amounts.into_iter().collect(),
        });
    }
    Ok(closed)
}

/// A finalized invoice's stored JSON, if the tenant has one with that number.
pub async fn invoice_document(
    pool: &PgPool,
    tenant: &str,
    number: &str,
) -> anyhow::Result<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT document FROM invoices WHERE tenant = $1 AND number = $2")
            .bind(tenant)
            .bind(number)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(d,)| d))
}

/// A summary row of the invoice list: the invoice's own `period` object and
/// `finalized_at` (whole seconds, as the invoice shows it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InvoiceSummary {
    pub id: uuid::Uuid,
    pub number: String,
    pub status: &'static str,
    pub period: PeriodRange,
    pub currency: String,
    pub total: Decimal,
    pub finalized_at: DateTime<Utc>,
}

/// The tenant's finalized invoices, newest first.
pub async fn list_invoices(
    pool: &PgPool,
    tenant: &str,
    limit: i64,
    offset: i64,
) -> anyhow::Result<Vec<InvoiceSummary>> {
    let rows: Vec<(
        uuid::Uuid,
        String,
        NaiveDate,
        String,
        Decimal,
        DateTime<Utc>,
    )> = sqlx::query_as(
        "SELECT id, number, period, currency, total, finalized_at
             FROM invoices WHERE tenant = $1 ORDER BY period DESC, seq DESC LIMIT $2 OFFSET $3",
    )
    .bind(tenant)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, number, period, currency, total, finalized_at)| InvoiceSummary {
                id,
                number,
                status: "finalized",
                period: PeriodRange::of(period),
                currency,
                total,
                // Invoices finalized before whole seconds were kept carry a fraction.
                finalized_at: finalized_at.trunc_subsecs(0),
            },
        )
        .collect())
}

/// One finalizer pass: returns how many invoices it created.
pub async fn finalize_due(
    pool: &PgPool,
    config: &BillingConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let mut period = period_start(now - config.grace_period)
        .checked_sub_months(chrono::Months::new(config.lookback_periods))
        .context("period out of range")?;
    let mut created = 0;
    loop {
        let end = period_start_instant(next_period(period));
        if end + config.grace_period > now {
            return Ok(created);
        }
        let done: Option<(i32,)> = sqlx::query_as(
            "SELECT 1 FROM finalized_periods WHERE period = $1 AND completed_at IS NOT NULL",
        )
        .bind(period)
        .fetch_optional(pool)
        .await?;
        if done.is_none() {
            let outcome = finalize_period(pool, config, period, now)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            created += outcome.created.len() as u64;
        }
        period = next_period(period);
    }
}
